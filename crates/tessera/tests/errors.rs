//! Bad input of every kind gets the contract's JSON error, never a panic or 500.

mod common;

use axum::http::{Method, StatusCode};
use common::{COOKIE, PASSWORD, Req, TestApp};
use serde_json::json;

#[tokio::test]
async fn routing_errors_are_contract_json() {
    let t = TestApp::new().await;
    let r = t.send(Req::get("/no/such/path")).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    t.send(Req::get("/v1/accounts"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    let r = t.send(Req::new(Method::PUT, "/v1/me")).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_request");
    assert!(r.header("allow").is_some_and(|a| a.contains("GET")));
}

#[tokio::test]
async fn malformed_bodies_get_400_415_422() {
    let t = TestApp::new().await;
    for path in ["/v1/accounts", "/v1/sessions"] {
        for broken in [
            "{",
            "{\"email\":",
            "nul",
            "\u{0}",
            "[1,2",
            "{\"email\": \"a\" \"password\": 1}",
        ] {
            t.send(Req::post(path).raw("application/json", broken))
                .await
                .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        }
        for wrong_shape in [
            json!({}),
            json!([]),
            json!({"email": 5, "password": true}),
            json!("x"),
            // An array must not be mapped onto the struct by position.
            json!(["a@example.com", PASSWORD]),
        ] {
            t.send(Req::post(path).json(wrong_shape))
                .await
                .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        }
        t.send(Req::post(path).raw("text/plain", "email=a&password=b"))
            .await
            .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
        t.send(Req::post(path))
            .await
            .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
    // A repeated key, which serde would resolve as "last wins" while a
    // proxy or log keeps the first, is refused in JSON and in forms.
    t.send(Req::post("/v1/accounts").raw(
        "application/json",
        format!(
            r#"{{"email":"dup@example.com","password":"{PASSWORD}","email":"other@example.com"}}"#
        ),
    ))
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    t.send(Req::post("/v1/sessions").raw(
        "application/x-www-form-urlencoded",
        format!("email=dup%40example.com&password={PASSWORD}&password=x"),
    ))
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // The array bodies above created nothing: the address is still free.
    let r = t
        .send(
            Req::post("/v1/accounts").json(json!({"email": "a@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // /v1/accounts takes JSON only; /v1/sessions also takes forms.
    t.send(Req::post("/v1/accounts").form(&[("email", "a@example.com"), ("password", PASSWORD)]))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    t.send(Req::post("/v1/sessions").form(&[("email", "a@example.com")]))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn bodies_over_64_kib_get_413() {
    let t = TestApp::new().await;
    let huge = json!({"email": "x@example.com", "password": "p".repeat(70 * 1024)}).to_string();
    for path in ["/v1/accounts", "/v1/sessions", "/v1/logout-all"] {
        t.send(Req::post(path).raw("application/json", huge.clone()))
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }
    // Without a Content-Length (streamed), the extractor's limit catches it.
    let stream = futures_body(huge.into_bytes());
    t.send(Req::post("/v1/sessions").raw("application/json", stream))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

/// A body with no declared length.
fn futures_body(bytes: Vec<u8>) -> axum::body::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(4096).map(|c| Ok(c.to_vec())).collect();
    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn oversized_credential_headers_are_refused_unparsed() {
    let t = TestApp::new().await;
    let big_cookie = format!("{COOKIE}={}", "a".repeat(9 * 1024));
    t.send(Req::get("/v1/me").header("cookie", &big_cookie))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let big_auth = format!("Bearer {}", "a".repeat(9 * 1024));
    let r = t
        .send(Req::get("/v1/me").header("authorization", &big_auth))
        .await;
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
}

#[tokio::test]
async fn garbage_cookies_and_ids_never_cause_5xx() {
    let t = TestApp::new().await;
    let login = t.signed_in("xavier@example.com").await;
    let cookies = [
        format!("{COOKIE}="),
        format!("{COOKIE}=%00%00"),
        format!("{COOKIE}={}", "é".repeat(20)),
        format!("{COOKIE}=\"{}\"", "a".repeat(43)),
        format!("{COOKIE}={}; {COOKIE}=x", "b".repeat(43)),
        ";;;==;".to_owned(),
        format!("{COOKIE}={}", "' OR 1=1 --".repeat(4)),
    ];
    for cookie in &cookies {
        for path in [
            "/v1/me",
            "/v1/session",
            "/v1/sessions",
            "/v1/verify?role=%00",
        ] {
            let r = t.send(Req::get(path).header("cookie", cookie)).await;
            assert!(r.status.is_client_error(), "{path} {cookie}: {}", r.status);
            r.error_code();
        }
    }
    for id in [
        "x",
        "ses_",
        "ses_%27%20OR%201%3D1",
        "..%2F..%2Fetc",
        &"s".repeat(5000),
    ] {
        let r = t
            .send(Req::delete(&format!("/v1/sessions/{id}")).session(&login))
            .await;
        r.assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let r = t
        .send(Req::get("/v1/verify?role=a&role=b").session(&login))
        .await;
    assert!(r.status.is_client_error(), "{}", r.status);
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let t = TestApp::new().await;
    let r = t.send(Req::get("/healthz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ok");
    let r = t.send(Req::get("/readyz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["status"], "ready");
}

#[tokio::test]
async fn a_flood_of_logins_is_shed_with_503_not_queued_without_bound() {
    let t = TestApp::with(&[("hash_threads", "1"), ("hash_queue", "1")]).await;
    t.register("yara@example.com").await;
    let t = std::sync::Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let t = std::sync::Arc::clone(&t);
        tasks.push(tokio::spawn(async move {
            t.send(
                Req::post("/v1/sessions")
                    .json(json!({"email": "yara@example.com", "password": PASSWORD})),
            )
            .await
        }));
    }
    let mut created = 0;
    let mut shed = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
                assert!(r.header("retry-after").is_some());
                shed += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(created >= 1, "the pool still serves");
    assert!(
        shed >= 1,
        "beyond thread + queue, requests are refused at once"
    );
    assert_eq!(created + shed, 12);
}

#[tokio::test]
async fn a_store_that_goes_down_fails_closed() {
    let t = TestApp::new().await;
    let login = t.signed_in("zed@example.com").await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());
    assert_eq!(
        t.send(Req::get("/v1/me").session(&login)).await.status,
        StatusCode::OK
    );

    t.app.close().await;
    let r = t.send(Req::get("/readyz")).await;
    r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(
        r.json()["error_description"],
        "the database does not answer",
        "/readyz names the store that is down"
    );
    t.send(
        Req::post("/v1/sessions").json(json!({"email": "zed@example.com", "password": PASSWORD})),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    // The session was cached; once the change log is unreadable the caches
    // are dropped and the check fails closed instead of trusting stale state.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = t.send(Req::get("/v1/me").session(&login)).await;
        if r.status == StatusCode::SERVICE_UNAVAILABLE {
            r.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            std::time::Instant::now() < deadline,
            "still served from cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    cancel.cancel();
    follower.await.unwrap();
}
