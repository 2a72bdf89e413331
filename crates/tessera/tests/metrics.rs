//! `GET /metrics`, read with the reference Prometheus text parser.

mod common;

use std::process::Command;

use axum::http::StatusCode;
use common::{PASSWORD, Req, TestApp};
use serde_json::{Value, json};

fn parse(text: &str) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/parse_metrics.py"
    );
    let (code, stdout, stderr) = common::cli::run(Command::new("python3").arg(script), text);
    assert!(
        !stderr.contains("No module named"),
        "prometheus_client is missing: pip install prometheus-client (scripts/test does this)"
    );
    assert_eq!(code, 0, "metrics do not parse: {stderr}\n{text}");
    serde_json::from_str(&stdout).unwrap()
}

fn sample(families: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = families[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no family {family}"));
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_cover_requests_logins_verifications_tokens_and_limits() {
    let t = TestApp::with(&[("ip_rate_limit", "3")]).await;
    let login = t.signed_in("mo@example.com").await;
    t.send(
        Req::post("/v1/sessions")
            .json(json!({"email": "mo@example.com", "password": "wrong password"})),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            t.send(Req::get("/v1/verify").session(&login)).await.status,
            StatusCode::OK
        );
    }
    t.send(Req::get("/v1/verify")).await;
    t.send(Req::get("/v1/verify?role=admin").session(&login))
        .await;
    let pair = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "mo@example.com"),
            ("password", PASSWORD),
        ]))
        .await
        .json();
    let rt = pair["refresh_token"].as_str().unwrap();
    let bearer = format!("Bearer {}", pair["access_token"].as_str().unwrap());
    t.send(Req::get("/v1/verify").header("authorization", &bearer))
        .await;
    t.send(Req::get("/v1/verify").header("authorization", "Bearer not.a.token"))
        .await;
    t.send(Req::post("/v1/token").form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]))
        .await;
    t.send(Req::post("/v1/token").form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]))
        .await;
    for _ in 0..4 {
        t.send(
            Req::post("/v1/sessions")
                .peer_ip("192.0.2.7")
                .json(json!({"email": "mo@example.com", "password": "wrong password"})),
        )
        .await;
    }
    t.send(Req::get("/no/such/path/12345")).await;
    let brew = axum::http::Method::from_bytes(b"BREW").unwrap();
    t.send(Req::new(brew, "/no/such/pot")).await;

    let r = t.send(Req::get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let f = parse(&r.text());

    assert_eq!(
        f["tessera_http_request_duration_seconds"]["type"],
        "histogram"
    );
    let verify_count = sample(
        &f,
        "tessera_http_request_duration_seconds",
        "tessera_http_request_duration_seconds_count",
        &[
            ("route", "/v1/verify"),
            ("method", "GET"),
            ("status", "2xx"),
        ],
    );
    assert_eq!(verify_count, 4.0);
    // Raw paths never become labels (bounded cardinality).
    assert!(!r.text().contains("/no/such/path"));
    assert!(r.text().contains("route=\"unmatched\""));
    // Nor do extension methods: they count as "other".
    assert!(!r.text().contains("BREW"));
    assert!(r.text().contains("method=\"other\""));

    assert_eq!(f["tessera_logins"]["type"], "counter");
    assert_eq!(
        sample(
            &f,
            "tessera_logins",
            "tessera_logins_total",
            &[("outcome", "success")]
        ),
        2.0
    );
    assert!(
        sample(
            &f,
            "tessera_logins",
            "tessera_logins_total",
            &[("outcome", "invalid_credentials")]
        ) >= 4.0
    );
    let v = |method, outcome| {
        sample(
            &f,
            "tessera_verifications",
            "tessera_verifications_total",
            &[("method", method), ("outcome", outcome)],
        )
    };
    assert_eq!(v("session", "ok"), 3.0);
    assert_eq!(v("none", "unauthenticated"), 1.0);
    assert_eq!(v("session", "forbidden"), 1.0);
    assert_eq!(v("jwt", "ok"), 1.0);
    assert_eq!(v("jwt", "unauthenticated"), 1.0);
    assert_eq!(v("jwt", "ok"), 1.0);
    assert_eq!(
        sample(
            &f,
            "tessera_refresh_rotations",
            "tessera_refresh_rotations_total",
            &[]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &f,
            "tessera_refresh_reuse_detected",
            "tessera_refresh_reuse_detected_total",
            &[]
        ),
        1.0
    );
    assert!(
        sample(
            &f,
            "tessera_revocations",
            "tessera_revocations_total",
            &[("kind", "family")]
        ) >= 1.0
    );
    assert!(
        sample(
            &f,
            "tessera_rate_limited",
            "tessera_rate_limited_total",
            &[("limit", "address")]
        ) >= 1.0
    );
    assert_eq!(f["tessera_active_sessions"]["type"], "gauge");
    assert_eq!(
        sample(
            &f,
            "tessera_active_sessions",
            "tessera_active_sessions",
            &[]
        ),
        1.0
    );
    assert_eq!(f["tessera_hash_queue_depth"]["type"], "gauge");
    // Sign-up, sign-in, the wrong password, the password grant and the
    // attempts below the address limit all hashed on the pool.
    let hashes = sample(
        &f,
        "tessera_password_hash_seconds",
        "tessera_password_hash_seconds_count",
        &[],
    );
    assert!(hashes >= 4.0, "{hashes} password hashes counted");
    assert!(
        sample(
            &f,
            "tessera_password_hash_seconds",
            "tessera_password_hash_seconds_sum",
            &[]
        ) > 0.0
    );
    assert_eq!(
        sample(
            &f,
            "tessera_password_hash_wait_seconds",
            "tessera_password_hash_wait_seconds_count",
            &[]
        ),
        hashes,
        "every hash waited, if only for an instant"
    );
    assert_eq!(f["tessera_store_errors"]["type"], "counter");
    assert!(
        f["tessera_revocation_entries"]["samples"][0]["value"]
            .as_f64()
            .unwrap()
            >= 1.0
    );
}

#[tokio::test]
async fn metrics_can_move_to_their_own_listener() {
    let t = TestApp::with(&[("metrics_addr", "127.0.0.1:0")]).await;
    t.send(Req::get("/metrics"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let state = tessera::http::AppState {
        core: std::sync::Arc::clone(&t.app.core),
        settings: std::sync::Arc::clone(&t.app.settings),
    };
    let response = tower::ServiceExt::oneshot(
        tessera::http::metrics_router(state),
        Req::get("/metrics").build(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
