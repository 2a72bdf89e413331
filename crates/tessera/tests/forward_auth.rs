//! `GET /v1/verify` is answered before the router (`http::Endpoint`); these
//! tests hold that path to exactly what the router answers (metrics are
//! checked through it in `metrics.rs`).

mod common;

use axum::http::{HeaderMap, Method, StatusCode, header};
use common::{Req, Resp, TestApp};
use tower::ServiceExt;

/// The request sent through the router alone, bypassing the direct path.
async fn via_router(t: &TestApp, req: Req) -> Resp {
    let response = t
        .router
        .router()
        .clone()
        .oneshot(req.build())
        .await
        .expect("router is infallible");
    Resp::read(response).await
}

/// Builds one case's request (again for each path).
type MakeReq<'a> = Box<dyn Fn() -> Req + 'a>;

/// Headers without the two a response may differ in: the date, and the
/// content length the router adds and hyper adds anyway from the body's size.
fn comparable(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    headers.remove(header::DATE);
    headers.remove(header::CONTENT_LENGTH);
    headers
}

#[tokio::test]
async fn the_direct_verify_path_answers_as_the_router_does() {
    let t = TestApp::new().await;
    let login = t.signed_in("ann@example.com").await;
    t.app
        .core
        .set_roles(&login.user_id, &["editor".into()])
        .await
        .unwrap();
    let tokens = t.tokens_for("bob@example.com").await;
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let huge_cookie = format!("{}; x={}", login.cookie, "a".repeat(9 * 1024));

    let cases: Vec<(&str, MakeReq)> = vec![
        ("no credential", Box::new(|| Req::get("/v1/verify"))),
        (
            "session",
            Box::new(|| Req::get("/v1/verify").session(&login)),
        ),
        (
            "session with a held role",
            Box::new(|| Req::get("/v1/verify?role=editor").session(&login)),
        ),
        (
            "session without the role",
            Box::new(|| Req::get("/v1/verify?role=admin").session(&login)),
        ),
        (
            "a malformed query",
            Box::new(|| Req::get("/v1/verify?role=a&role=b").session(&login)),
        ),
        (
            "an unknown cookie value",
            Box::new(|| {
                Req::get("/v1/verify").header(
                    "cookie",
                    "__Host-tessera_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                )
            }),
        ),
        (
            "a bearer token",
            Box::new(|| Req::get("/v1/verify").header("authorization", &bearer)),
        ),
        (
            "a bearer token with a role it lacks",
            Box::new(|| Req::get("/v1/verify?role=editor").header("authorization", &bearer)),
        ),
        (
            "a forged bearer token",
            Box::new(|| Req::get("/v1/verify").header("authorization", "Bearer a.b.c")),
        ),
        (
            "another scheme",
            Box::new(|| Req::get("/v1/verify").header("authorization", "Basic YTpi")),
        ),
        (
            "an oversized cookie header",
            Box::new(|| Req::get("/v1/verify").header("cookie", &huge_cookie)),
        ),
        (
            "a declared oversized body",
            Box::new(|| {
                Req::get("/v1/verify")
                    .session(&login)
                    .header("content-length", "10000000")
            }),
        ),
        (
            "HEAD (routed)",
            Box::new(|| Req::new(Method::HEAD, "/v1/verify").session(&login)),
        ),
    ];
    let mut statuses = Vec::new();
    for (name, req) in &cases {
        let direct = t.send(req()).await;
        let routed = via_router(&t, req()).await;
        assert_eq!(direct.status, routed.status, "{name}: status");
        assert_eq!(direct.body, routed.body, "{name}: body");
        assert_eq!(
            comparable(&direct.headers),
            comparable(&routed.headers),
            "{name}: headers"
        );
        statuses.push((*name, direct.status));
    }
    // The cases cover what they claim to.
    let status_of = |name: &str| statuses.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(status_of("session"), StatusCode::OK);
    assert_eq!(status_of("session with a held role"), StatusCode::OK);
    assert_eq!(status_of("session without the role"), StatusCode::FORBIDDEN);
    assert_eq!(status_of("a malformed query"), StatusCode::BAD_REQUEST);
    assert_eq!(status_of("a bearer token"), StatusCode::OK);
    assert_eq!(
        status_of("a bearer token with a role it lacks"),
        StatusCode::FORBIDDEN
    );
    assert_eq!(status_of("a forged bearer token"), StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_of("an oversized cookie header"),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        status_of("a declared oversized body"),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(status_of("HEAD (routed)"), StatusCode::OK);
}
