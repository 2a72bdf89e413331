//! Abuse limits through the real router: per-account backoff, the per-address
//! bucket, and trusted proxies.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{PASSWORD, Req, TestApp};
use serde_json::json;

fn login(email: &str, password: &str, ip: &str) -> Req {
    Req::post("/v1/sessions")
        .peer_ip(ip)
        .json(json!({"email": email, "password": password}))
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_address_and_success_resets() {
    let t = TestApp::with(&[("ip_rate_limit", "0")]).await;
    t.register("vic@example.com").await;
    let attacker = "203.0.113.66";
    for _ in 0..5 {
        t.send(login("vic@example.com", "wrong guess!", attacker))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let mut waits = Vec::new();
    for _ in 0..12 {
        let r = t
            .send(login("vic@example.com", "wrong guess!", attacker))
            .await;
        r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        waits.push(wait);
        // Even the right password is refused while backing off, unhashed.
        t.send(login("vic@example.com", PASSWORD, attacker))
            .await
            .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        t.advance(Duration::from_secs(wait));
        t.send(login("vic@example.com", "wrong guess!", attacker))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    assert!(waits.windows(2).all(|w| w[1] >= w[0]), "growing: {waits:?}");
    assert_eq!(waits[0], 1);
    assert_eq!(
        *waits.last().unwrap(),
        900,
        "capped at 15 minutes: {waits:?}"
    );

    // The owner, from their own address, is not locked out by the attacker.
    let r = t
        .send(login("vic@example.com", PASSWORD, "198.51.100.20"))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // The token endpoint shares the same backoff.
    let r = t
        .send(Req::post("/v1/token").peer_ip(attacker).form(&[
            ("grant_type", "password"),
            ("username", "vic@example.com"),
            ("password", PASSWORD),
        ]))
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // After waiting, success resets the count: five more failures are allowed.
    t.advance(Duration::from_secs(901));
    assert_eq!(
        t.send(login("vic@example.com", PASSWORD, attacker))
            .await
            .status,
        StatusCode::CREATED
    );
    for _ in 0..5 {
        t.send(login("vic@example.com", "wrong guess!", attacker))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let limited = t
        .app
        .core
        .audit_events(Some("rate_limited"), None, 100)
        .await
        .unwrap();
    assert!(!limited.is_empty());
    assert!(limited.iter().all(|e| e.ip.as_deref() == Some(attacker)));
}

#[tokio::test]
async fn each_address_has_a_bucket_on_credential_endpoints() {
    let t = TestApp::with(&[("ip_rate_limit", "10")]).await;
    t.register("wes@example.com").await;
    let ip = "192.0.2.44";
    let endpoints: [&dyn Fn() -> Req; 3] = [
        &|| login("wes@example.com", "wrong guess!", ip),
        &|| {
            Req::post("/v1/token")
                .peer_ip(ip)
                .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        },
        &|| {
            Req::post("/v1/accounts")
                .peer_ip(ip)
                .json(json!({"email": "new@example.com", "password": "short"}))
        },
    ];
    let mut allowed = 0;
    for make in endpoints.iter().cycle().take(3 * 4) {
        let r = t.send(make()).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
        } else {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10, "the bucket holds 10");
    // Another address is unaffected; the first refills with time.
    assert_eq!(
        t.send(login("wes@example.com", PASSWORD, "192.0.2.45"))
            .await
            .status,
        StatusCode::CREATED
    );
    t.advance(Duration::from_secs(6));
    assert_eq!(
        t.send(login("wes@example.com", PASSWORD, ip)).await.status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let t = TestApp::with(&[("ip_rate_limit", "2"), ("trusted_proxies", "10.0.0.0/8")]).await;
    t.register("xia@example.com").await;
    let via_proxy = |client: &str| {
        login("xia@example.com", PASSWORD, "10.1.2.3").header("x-forwarded-for", client)
    };
    for _ in 0..2 {
        assert_eq!(
            t.send(via_proxy("198.51.100.1")).await.status,
            StatusCode::CREATED
        );
    }
    t.send(via_proxy("198.51.100.1"))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another client behind the same proxy has its own bucket.
    assert_eq!(
        t.send(via_proxy("198.51.100.2")).await.status,
        StatusCode::CREATED
    );
    // An untrusted peer cannot dodge its bucket by inventing the header.
    let direct = |fake: &str| {
        login("xia@example.com", PASSWORD, "203.0.113.9").header("x-forwarded-for", fake)
    };
    assert_eq!(t.send(direct("1.1.1.1")).await.status, StatusCode::CREATED);
    assert_eq!(t.send(direct("2.2.2.2")).await.status, StatusCode::CREATED);
    t.send(direct("3.3.3.3"))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Sessions record the client's address, not the proxy's.
    let login = t.login_with(via_proxy("198.51.100.3")).await;
    let list = t
        .send(Req::get("/v1/sessions").session(&login))
        .await
        .json();
    let ips: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["ip"].as_str())
        .collect();
    assert!(ips.contains(&"198.51.100.3"), "{ips:?}");
}

/// Issue #19 finding 5: a hop the proxy wrote that is not a bare address
/// (`ip:port`, `unknown`) was skipped, so the client's own left-most entry
/// became its address and each invented value got a fresh bucket.
#[tokio::test]
async fn a_forwarded_hop_that_is_not_an_address_does_not_let_the_client_choose() {
    let t = TestApp::with(&[("ip_rate_limit", "2"), ("trusted_proxies", "10.0.0.0/8")]).await;
    t.register("yan@example.com").await;
    let via_proxy = |xff: String| {
        login("yan@example.com", PASSWORD, "10.1.2.3").header("x-forwarded-for", &xff)
    };
    // The proxy appends `unknown`: every request counts against the last
    // trusted address, whatever the client put on the left.
    for n in 0..2 {
        assert_eq!(
            t.send(via_proxy(format!("198.51.100.{n}, unknown")))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    t.send(via_proxy("198.51.100.9, unknown".into()))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // `ip:port` is the client's address, not something to skip.
    for _ in 0..2 {
        assert_eq!(
            t.send(via_proxy("6.6.6.1, 203.0.113.7:4711".into()))
                .await
                .status,
            StatusCode::CREATED
        );
    }
    t.send(via_proxy("6.6.6.2, 203.0.113.7:4711".into()))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn rfc_7239_forwarded_is_read_when_configured_and_ignored_otherwise() {
    let t = TestApp::with(&[
        ("ip_rate_limit", "1"),
        ("trusted_proxies", "10.0.0.0/8"),
        ("trusted_proxy_header", "Forwarded"),
    ])
    .await;
    t.register("zed@example.com").await;
    let via_proxy = |fwd: &str| {
        login("zed@example.com", PASSWORD, "10.1.2.3")
            .header("forwarded", fwd)
            // Passed through from the client; never read in this mode.
            .header("x-forwarded-for", "1.2.3.4")
    };
    assert_eq!(
        t.send(via_proxy(
            r#"for=6.6.6.6, for="[2001:db8::5]:443";proto=https"#
        ))
        .await
        .status,
        StatusCode::CREATED
    );
    t.send(via_proxy(r#"for=7.7.7.7, for="[2001:db8::5]:8443""#))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        t.send(via_proxy("for=2001:db8:1::6")).await.status,
        StatusCode::CREATED,
        "quoted or not, another client"
    );
}

fn change_password(login: &common::Login, current: &str, ip: &str) -> Req {
    Req::post("/v1/account/password")
        .peer_ip(ip)
        .session(login)
        .json(json!({"current_password": current, "new_password": "a new password!!"}))
}

/// Issue #19 finding 2: anyone holding a session could guess the current
/// password at `/v1/account/password` without limit, unaudited. It is now
/// checked like a login: per-account backoff from each address, the
/// address's bucket, and every failure audited.
#[tokio::test]
async fn password_change_guesses_back_off_and_are_audited() {
    let t = TestApp::with(&[("ip_rate_limit", "0")]).await;
    t.register("pat@example.com").await;
    let thief = t.login("pat@example.com").await;
    let thief_ip = "203.0.113.77";
    for _ in 0..5 {
        t.send(change_password(&thief, "a wrong guess", thief_ip))
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let r = t
        .send(change_password(&thief, "a wrong guess", thief_ip))
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // Even the right password waits while the pair backs off.
    t.send(change_password(&thief, PASSWORD, thief_ip))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let failed = t
        .app
        .core
        .audit_events(Some("password_change_failed"), None, 100)
        .await
        .unwrap();
    assert_eq!(failed.len(), 5, "each guess checked is audited once");
    assert!(failed.iter().all(|e| e.ip.as_deref() == Some(thief_ip)));
    let locks = t
        .app
        .core
        .audit_events(Some("rate_limited"), None, 100)
        .await
        .unwrap();
    assert_eq!(locks.len(), 1, "the lock that started is audited");
    // The owner, from another address, is not locked out.
    let r = t
        .send(change_password(&thief, PASSWORD, "198.51.100.20"))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
}

#[tokio::test]
async fn password_change_shares_the_login_bucket_of_its_address() {
    let t = TestApp::with(&[("ip_rate_limit", "2")]).await;
    t.register("quin@example.com").await;
    let user = t.login("quin@example.com").await;
    let ip = "192.0.2.77";
    t.send(login("quin@example.com", "wrong guess!", ip))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    t.send(change_password(&user, "another guess", ip))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    t.send(change_password(&user, "a third guess", ip))
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

/// Issue #19 finding 1: one account changing its password from many
/// addresses at once filled the shared hashing pool, and other people's
/// logins got 503. One principal now holds at most a quarter of the pool.
#[tokio::test]
async fn a_password_change_flood_from_one_account_leaves_room_for_other_logins() {
    let t = TestApp::with(&[
        ("ip_rate_limit", "0"),
        ("hash_threads", "1"),
        ("hash_queue", "7"),
        ("trusted_proxies", "10.0.0.0/8"),
    ])
    .await;
    t.register("mallory@example.com").await;
    t.register("alice@example.com").await;
    let mallory = t.login("mallory@example.com").await;
    let flood = (0..40).map(|n| {
        let req = change_password(&mallory, "not the password", "10.0.0.1")
            .header("x-forwarded-for", &format!("198.51.100.{n}"));
        t.send(req)
    });
    let alice = t.send(login("alice@example.com", PASSWORD, "192.0.2.1"));
    let (flooded, alice) = tokio::join!(futures_util::future::join_all(flood), alice);
    assert_eq!(alice.status, StatusCode::CREATED, "{}", alice.text());
    let statuses: Vec<u16> = flooded.iter().map(|r| r.status.as_u16()).collect();
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "the flood is refused as wrong or over its share, never 503: {statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
}
