//! `/login?return_to=URL` (issue #21 item 8): the login page carries a
//! return URL this server accepts as a hidden field, checks it again on
//! POST, and sends the browser there after sign-in (at once if already
//! signed in); anything else leads to the default page. The checker's
//! evil inputs are unit tests in `http::pages::auth`.

mod common;

use axum::http::StatusCode;
use common::{COOKIE, ORIGIN, PASSWORD, Req, Resp, TestApp};

fn location(r: &Resp) -> &str {
    r.header("location").expect("a Location header")
}

/// The `value` of the hidden `return_to` field, if the page has one.
fn return_field(html: &str) -> Option<String> {
    let needle = "name=\"return_to\" value=\"";
    let start = html.find(needle)? + needle.len();
    let end = html[start..].find('"').expect("closing quote") + start;
    let mut value = html[start..end].to_owned();
    for (entity, c) in [
        ("&#38;", "&"),
        ("&amp;", "&"),
        ("&#x2f;", "/"),
        ("&#47;", "/"),
    ] {
        value = value.replace(entity, c);
    }
    Some(value)
}

async fn post_login(t: &TestApp, extra: &[(&str, &str)]) -> Resp {
    let mut form = vec![("email", "alice@example.com"), ("password", PASSWORD)];
    form.extend_from_slice(extra);
    t.send(
        Req::post("/login")
            .header("origin", ORIGIN)
            .header("sec-fetch-site", "same-origin")
            .form(&form),
    )
    .await
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn login_returns_to_a_path_or_an_allowed_origin_and_nowhere_else() {
    let t = TestApp::with(&[("return_origins", "https://app.example.com")]).await;
    t.register("alice@example.com").await;

    for (asked, kept) in [
        ("/app/page?a=1&b=2", Some("/app/page?a=1&b=2")),
        (
            "http://localhost:8080/app/?x=1",
            Some("http://localhost:8080/app/?x=1"),
        ),
        (
            "https://app.example.com/wiki",
            Some("https://app.example.com/wiki"),
        ),
        ("https://evil.example/", None),
        ("//evil.example/", None),
        ("/\\evil.example", None),
        ("https://localhost:8080@evil.example/", None),
        ("https://app.example.com:444/", None),
        ("javascript:alert(1)", None),
    ] {
        // The page carries an accepted return URL, and only that.
        let page = t
            .send(Req::get(&format!("/login?return_to={}", encode(asked))))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        let html = page.text();
        assert_eq!(return_field(&html).as_deref(), kept, "{asked}");
        assert!(!html.contains("evil.example"), "{asked}: {html}");

        // POST checks it again, whatever the form says.
        let r = post_login(&t, &[("return_to", asked)]).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
        assert_eq!(location(&r), kept.unwrap_or("/account"), "{asked}");
        assert!(r.set_cookie(COOKIE).is_some());

        // Already signed in: straight there.
        let cookie = format!("{COOKIE}={}", r.set_cookie(COOKIE).unwrap().value);
        let again = t
            .send(
                Req::get(&format!("/login?return_to={}", encode(asked))).header("cookie", &cookie),
            )
            .await;
        assert_eq!(again.status, StatusCode::SEE_OTHER);
        assert_eq!(location(&again), kept.unwrap_or("/account"), "{asked}");
    }

    // `next=/admin` keeps working, and a good return_to wins over it.
    let r = post_login(&t, &[("next", "/admin")]).await;
    assert_eq!(location(&r), "/admin");
    let r = post_login(&t, &[("next", "/admin"), ("return_to", "/app/")]).await;
    assert_eq!(location(&r), "/app/");
    let r = post_login(&t, &[("next", "/admin"), ("return_to", "//evil.example")]).await;
    assert_eq!(location(&r), "/admin");

    // A failed sign-in shows the form again with the return URL.
    let r = t
        .send(
            Req::post("/login")
                .header("origin", ORIGIN)
                .header("sec-fetch-site", "same-origin")
                .form(&[
                    ("email", "alice@example.com"),
                    ("password", "wrong password!"),
                    ("return_to", "/app/x"),
                ]),
        )
        .await;
    assert_ne!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(return_field(&r.text()).as_deref(), Some("/app/x"));
}

#[tokio::test]
async fn return_origins_is_checked_at_start() {
    for bad in ["https://app.example.com/path", "https://*.example.com"] {
        let e = tessera::config::Settings::from_pairs(&[("return_origins", bad)]).unwrap_err();
        assert!(e.0.contains("TESSERA_RETURN_ORIGINS"), "{}", e.0);
    }
}
