//! `GET /v1/revocations`: the revocation feed for services that verify
//! tokens themselves, as JSON pages and as a server-sent event stream.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{Req, TestApp, basic_auth as basic};
use futures_util::StreamExt;
use serde_json::Value;

fn claims(token: &str) -> Value {
    common::jwt::decode_part(token, 1)
}

#[tokio::test]
async fn the_feed_pages_every_kind_of_revocation_by_cursor() {
    let t = TestApp::new().await;
    let client = t.app.core.create_client("edge-verifier").await.unwrap();
    let auth = basic(&client.client.id, client.secret.expose());
    let feed = |after: Option<&str>| {
        let path = after.map_or("/v1/revocations".to_owned(), |a| {
            format!("/v1/revocations?after={a}")
        });
        Req::get(&path).header("authorization", &auth)
    };

    for bad in [
        None,
        Some(basic(&client.client.id, "wrong")),
        Some("Bearer x".into()),
    ] {
        let mut req = Req::get("/v1/revocations");
        if let Some(h) = &bad {
            req = req.header("authorization", h);
        }
        let r = t.send(req).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }

    let empty = t.send(feed(None)).await;
    assert_eq!(empty.status, StatusCode::OK, "{}", empty.text());
    let start = empty.json()["cursor"].as_str().unwrap().to_owned();

    // A revoked access token, then everything of another user.
    let a = t.tokens_for("ana@example.com").await;
    let access = a["access_token"].as_str().unwrap();
    t.send(Req::post("/v1/token/revoke").form(&[("token", access)]))
        .await;
    let a_refresh = a["refresh_token"].as_str().unwrap();
    t.send(Req::post("/v1/token/revoke").form(&[("token", a_refresh)]))
        .await;
    let b = t.tokens_for("ben@example.com").await;
    let b_access = b["access_token"].as_str().unwrap();
    let r = t
        .send(Req::post("/v1/logout-all").header("authorization", &format!("Bearer {b_access}")))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    let page = t.send(feed(Some(&start))).await.json();
    let events = page["events"].as_array().unwrap();
    let a_claims = claims(access);
    // `exp` is how long the entry matters: the token's own `exp` plus the
    // server's clock leeway (a verifier with leeway accepts it that long).
    let token = events
        .iter()
        .find(|e| e["type"] == "token" && e["jti"] == a_claims["jti"])
        .expect("the revoked token");
    let leeway = token["exp"].as_i64().unwrap() - a_claims["exp"].as_i64().unwrap();
    assert!((0..=60).contains(&leeway), "{token}");
    let b_claims = claims(b_access);
    let user = events
        .iter()
        .find(|e| e["type"] == "user" && e["sub"] == b_claims["sub"])
        .expect("the user's cut-off");
    assert!(user["not_before"].as_i64().unwrap() > b_claims["iat"].as_i64().unwrap());
    // A revoked refresh token ends its family.
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "family" && e["sid"] == a_claims["sid"]),
        "{events:?}"
    );

    // A logout everywhere also ends the user's sessions through an entry
    // of the log that is internal: the feed leaves it out, and its cursor
    // moves past it all the same.
    assert!(
        events
            .iter()
            .all(|e| ["token", "family", "user"].contains(&e["type"].as_str().unwrap_or(""))),
        "{events:?}"
    );
    let c = t.signed_in("cai@example.com").await;
    let before_all = page["cursor"].as_str().unwrap().to_owned();
    let r = t.send(Req::post("/v1/logout-all").session(&c)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let after_all = t.send(feed(Some(&before_all))).await.json();
    let kinds: Vec<&str> = after_all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["user"], "{after_all}");
    let page = after_all;

    // Nothing new after the cursor; the cursor stays put.
    let cursor = page["cursor"].as_str().unwrap();
    let next = t.send(feed(Some(cursor))).await.json();
    assert_eq!(next["events"], serde_json::json!([]));
    assert_eq!(next["cursor"], cursor);
    // Without `after`, from the oldest event kept.
    assert!(
        t.send(feed(None)).await.json()["events"]
            .as_array()
            .unwrap()
            .len()
            >= events.len()
    );
    for bad in ["x", "-1", "1.5"] {
        t.send(feed(Some(bad)))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test]
async fn the_event_stream_pushes_new_revocations() {
    let t = TestApp::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(tessera::listener::serve(
        listener,
        t.app.router(),
        Duration::from_secs(5),
        async move { stopped.cancelled().await },
    ));

    let response = common::revocation_stream(&t, addr).await;
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();

    // Revoked after the stream opened: pushed within a follow interval.
    let pair = t.tokens_for("cy@example.com").await;
    let access = pair["access_token"].as_str().unwrap();
    t.send(Req::post("/v1/token/revoke").form(&[("token", access)]))
        .await;
    let jti = claims(access)["jti"].as_str().unwrap().to_owned();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(&jti) {
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("the revocation was pushed in time")
            .expect("the stream is open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let line = seen
        .lines()
        .find(|l| l.starts_with("data:") && l.contains(&jti))
        .unwrap();
    let event: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(event["type"], "token");
    assert!(seen.lines().any(|l| l.starts_with("id:")), "{seen}");

    // Shutting down ends the stream, so the server's drain can finish.
    t.app.core.shutdown.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived the shutdown");
    stop.cancel();
}
