//! Access and refresh tokens through the real router: issuing, strict
//! verification against forged tokens, refresh rotation and reuse, revocation
//! of every kind, introspection, key rotation, and interoperability.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::jwt::{active_key, decode_part, hmac_sha256, sign_ed25519, with_signature};
use common::{PASSWORD, Req, Resp, TestApp, password_grant};
use serde_json::{Value, json};

fn bearer(path: &str, token: &str) -> Req {
    Req::get(path).header("authorization", &format!("Bearer {token}"))
}

fn assert_invalid_token(r: &Resp) {
    r.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="tessera", error="invalid_token""#)
    );
}

async fn refresh(t: &TestApp, refresh_token: &str) -> Resp {
    t.send(Req::post("/v1/token").form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ]))
    .await
}

#[tokio::test]
async fn every_algorithm_round_trips_with_the_contract_claims_only() {
    for (alg, extra) in [
        ("EdDSA", vec![]),
        ("ES256", vec![]),
        ("RS256", vec![]),
        (
            "HS256",
            vec![("hs256_secret", "a-test-secret-that-is-32-bytes-or-more")],
        ),
    ] {
        let mut settings = vec![("token_alg", alg)];
        settings.extend(extra);
        let t = TestApp::with(&settings).await;
        let pair = t.tokens_for("amy@example.com").await;
        let token = pair["access_token"].as_str().unwrap();
        assert_eq!(pair["token_type"], "Bearer");
        assert_eq!(pair["expires_in"], 600);
        assert_eq!(pair["refresh_token"].as_str().unwrap().len(), 43);

        let header = decode_part(token, 0);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        assert!(header["kid"].as_str().unwrap().starts_with("key_"));
        assert_eq!(header.as_object().unwrap().len(), 3, "{header}");
        let claims = decode_part(token, 1);
        let mut names: Vec<&str> = claims
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "aud",
                "client_id",
                "exp",
                "iat",
                "iss",
                "jti",
                "roles",
                "sid",
                "sub"
            ],
            "{alg}: exactly the contract's claims"
        );
        assert_eq!(claims["iss"], "http://localhost:8080");
        assert_eq!(claims["aud"], "http://localhost:8080");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            600
        );
        assert!(!token.contains("amy"), "no email anywhere");

        let me = t.send(bearer("/v1/me", token)).await;
        assert_eq!(me.status, StatusCode::OK, "{alg}: {}", me.text());
        let me = me.json();
        assert_eq!(me["user"]["email"], "amy@example.com");
        assert_eq!(me["auth"]["method"], "jwt");
        let v = t.send(bearer("/v1/verify", token)).await;
        assert_eq!(v.status, StatusCode::OK);
        assert_eq!(v.header("x-auth-method"), Some("jwt"));
        assert_eq!(v.header("x-auth-user"), claims["sub"].as_str());

        let jwks = t.send(Req::get("/.well-known/jwks.json")).await;
        assert!(jwks.header("cache-control").unwrap().contains("max-age"));
        let keys = jwks.json()["keys"].as_array().unwrap().clone();
        if alg == "HS256" {
            assert!(keys.is_empty(), "HS256 publishes nothing");
        } else {
            assert_eq!(keys.len(), 1);
            assert_eq!(keys[0]["kid"], header["kid"]);
            assert_eq!(keys[0]["alg"], alg);
            assert_eq!(keys[0]["use"], "sig");
            assert!(keys[0].get("d").is_none() && keys[0].get("p").is_none());
        }
        assert_independent_check_passes(alg, token, &keys);
    }
}

/// Our tokens are signed by our own JWS code; jsonwebtoken (an independent
/// implementation) must accept them with the published key.
fn assert_independent_check_passes(alg: &str, token: &str, keys: &[serde_json::Value]) {
    let algorithm: jsonwebtoken::Algorithm = alg.parse().unwrap();
    let key = match keys.first() {
        Some(jwk) => {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
            jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap()
        }
        None => jsonwebtoken::DecodingKey::from_secret(b"a-test-secret-that-is-32-bytes-or-more"),
    };
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.set_issuer(&["http://localhost:8080"]);
    validation.set_audience(&["http://localhost:8080"]);
    let checked = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation);
    assert!(checked.is_ok(), "{alg}: {checked:?}");
    let mut tampered = token.to_owned();
    tampered.insert_str(token.find('.').unwrap() + 1, "eyJ4IjoxfQ");
    assert!(jsonwebtoken::decode::<serde_json::Value>(&tampered, &key, &validation).is_err());
}

#[tokio::test]
async fn the_default_eddsa_token_is_small() {
    let t = TestApp::with(&[("public_url", "https://auth.example.com")]).await;
    let login = t.signed_in("bo@example.com").await;
    t.app
        .core
        .set_roles(&login.user_id, &["admin".into()])
        .await
        .unwrap();
    t.advance(Duration::from_secs(2));
    let r = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "bo@example.com"),
            ("password", PASSWORD),
        ]))
        .await;
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    println!(
        "default EdDSA access token with role admin: {} bytes",
        token.len()
    );
    assert!(token.len() < 500, "{} bytes", token.len());
}

#[tokio::test]
async fn forged_and_malformed_tokens_are_refused() {
    let t = TestApp::new().await;
    let pair = t.tokens_for("cy@example.com").await;
    let good = pair["access_token"].as_str().unwrap().to_owned();
    let header = decode_part(&good, 0);
    let claims = decode_part(&good, 1);
    let (kid, pkcs8) = active_key(&t.db_url).await;
    assert_eq!(header["kid"], kid.as_str());
    // Sanity: the forging tool makes tokens Tessera accepts.
    let resigned = sign_ed25519(&header, &claims, &pkcs8);
    assert_eq!(
        t.send(bearer("/v1/me", &resigned)).await.status,
        StatusCode::OK
    );

    let jwk = t.send(Req::get("/.well-known/jwks.json")).await.json()["keys"][0].clone();
    let public_x = jwk["x"].as_str().unwrap().to_owned();
    let now = claims["iat"].as_i64().unwrap();
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let header_with = |k: &str, v: Value| {
        let mut h = header.clone();
        h[k] = v;
        h
    };
    let hs_header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let hs_input = format!(
        "{}.{}",
        common::jwt::b64(hs_header.to_string().as_bytes()),
        common::jwt::b64(claims.to_string().as_bytes())
    );
    let tampered = flip_signature_char(&good);
    let payload_swapped = {
        let parts: Vec<&str> = good.split('.').collect();
        let other = with("roles", json!(["admin"]));
        format!(
            "{}.{}.{}",
            parts[0],
            common::jwt::b64(other.to_string().as_bytes()),
            parts[2]
        )
    };

    let forged: Vec<(&str, String)> = vec![
        (
            "alg none, no signature",
            with_signature(
                &json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
                &claims,
                b"",
            ),
        ),
        (
            "alg none with a signature",
            with_signature(
                &json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
                &claims,
                b"x",
            ),
        ),
        (
            "alg NONE",
            sign_ed25519(&header_with("alg", json!("NONE")), &claims, &pkcs8),
        ),
        // Algorithm confusion: HMAC keyed with the public key.
        (
            "HS256 keyed with the public key (raw)",
            format!(
                "{hs_input}.{}",
                common::jwt::b64(&hmac_sha256(&common::jwt::b64_decode(&public_x), &hs_input))
            ),
        ),
        (
            "HS256 keyed with the public JWK text",
            format!(
                "{hs_input}.{}",
                common::jwt::b64(&hmac_sha256(jwk.to_string().as_bytes(), &hs_input))
            ),
        ),
        (
            "ES256 header on an Ed25519 signature",
            sign_ed25519(&header_with("alg", json!("ES256")), &claims, &pkcs8),
        ),
        (
            "jku header",
            sign_ed25519(
                &header_with("jku", json!("https://evil.example/jwks.json")),
                &claims,
                &pkcs8,
            ),
        ),
        (
            "x5u header",
            sign_ed25519(
                &header_with("x5u", json!("https://evil.example/cert.pem")),
                &claims,
                &pkcs8,
            ),
        ),
        (
            "embedded jwk header",
            sign_ed25519(&header_with("jwk", jwk.clone()), &claims, &pkcs8),
        ),
        (
            "x5c header",
            sign_ed25519(&header_with("x5c", json!(["MIIB"])), &claims, &pkcs8),
        ),
        (
            "crit header",
            sign_ed25519(&header_with("crit", json!(["exp"])), &claims, &pkcs8),
        ),
        (
            "typ JWT",
            sign_ed25519(&header_with("typ", json!("JWT")), &claims, &pkcs8),
        ),
        (
            "no typ",
            sign_ed25519(&json!({"alg": "EdDSA", "kid": kid}), &claims, &pkcs8),
        ),
        (
            "no kid",
            sign_ed25519(&json!({"alg": "EdDSA", "typ": "at+jwt"}), &claims, &pkcs8),
        ),
        (
            "unknown kid",
            sign_ed25519(
                &header_with("kid", json!("key_notourkey00")),
                &claims,
                &pkcs8,
            ),
        ),
        (
            "wrong iss",
            sign_ed25519(&header, &with("iss", json!("https://evil.example")), &pkcs8),
        ),
        (
            "wrong aud",
            sign_ed25519(
                &header,
                &with("aud", json!("https://other.example")),
                &pkcs8,
            ),
        ),
        (
            "aud as a foreign list",
            sign_ed25519(
                &header,
                &with("aud", json!(["https://other.example"])),
                &pkcs8,
            ),
        ),
        (
            "no iss",
            sign_ed25519(
                &header,
                &{
                    let mut c = claims.clone();
                    c.as_object_mut().unwrap().remove("iss");
                    c
                },
                &pkcs8,
            ),
        ),
        (
            "no exp",
            sign_ed25519(
                &header,
                &{
                    let mut c = claims.clone();
                    c.as_object_mut().unwrap().remove("exp");
                    c
                },
                &pkcs8,
            ),
        ),
        (
            "expired beyond leeway",
            sign_ed25519(&header, &with("exp", json!(now - 61)), &pkcs8),
        ),
        (
            "string exp (CVE-2026-25537 class)",
            sign_ed25519(
                &header,
                &with("exp", json!((now + 600).to_string())),
                &pkcs8,
            ),
        ),
        // Correctly signed, but times no clock can reach: refused as
        // malformed, never a 500 (an exp past year 9999 used to be one at
        // /v1/me, and an exp near i64::MAX overflows `exp + leeway`).
        (
            "exp past year 9999",
            sign_ed25519(&header, &with("exp", json!(253_402_300_800_i64)), &pkcs8),
        ),
        (
            "exp at i64::MAX",
            sign_ed25519(&header, &with("exp", json!(i64::MAX)), &pkcs8),
        ),
        (
            "iat before 1970",
            sign_ed25519(&header, &with("iat", json!(-1)), &pkcs8),
        ),
        (
            "nbf at i64::MIN",
            sign_ed25519(&header, &with("nbf", json!(i64::MIN)), &pkcs8),
        ),
        (
            "nbf in the future beyond leeway",
            sign_ed25519(&header, &with("nbf", json!(now + 120)), &pkcs8),
        ),
        (
            "iat in the future beyond leeway",
            sign_ed25519(&header, &with("iat", json!(now + 120)), &pkcs8),
        ),
        ("tampered signature", tampered),
        (
            "Ed25519 s + L (non-canonical s, same point arithmetic)",
            with_non_canonical_s(&good),
        ),
        (
            "Ed25519 all-zero signature",
            with_signature(&header, &claims, &[0u8; 64]),
        ),
        ("Ed25519 signature one byte short", {
            let mut signature = common::jwt::b64_decode(good.rsplit('.').next().unwrap());
            signature.pop();
            with_signature(&header, &claims, &signature)
        }),
        ("payload swapped", payload_swapped),
        ("two segments", good.rsplit_once('.').unwrap().0.to_owned()),
        ("four segments", format!("{good}.AAAA")),
        ("padding in base64", format!("{}=", good)),
        ("not base64", "!!!.???.***".to_owned()),
        ("empty", String::new()),
        ("oversized", format!("{good}{}", "A".repeat(5000))),
    ];
    for (what, token) in &forged {
        for path in ["/v1/me", "/v1/verify", "/v1/sessions"] {
            let r = t.send(bearer(path, token)).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{what} on {path}: {}",
                r.text()
            );
            assert_invalid_token(&r);
        }
    }
    // Within the leeway, exp and nbf are tolerated (clock skew).
    let skewed = sign_ed25519(&header, &with("exp", json!(now - 30)), &pkcs8);
    assert_eq!(
        t.send(bearer("/v1/me", &skewed)).await.status,
        StatusCode::OK
    );
    let skewed = sign_ed25519(&header, &with("nbf", json!(now + 30)), &pkcs8);
    assert_eq!(
        t.send(bearer("/v1/me", &skewed)).await.status,
        StatusCode::OK
    );
    for header_value in ["Bearer", "Bearer ", "Basic abc", "bearer", "Token x"] {
        let r = t
            .send(Req::get("/v1/me").header("authorization", header_value))
            .await;
        assert_invalid_token(&r);
    }
}

#[tokio::test]
async fn ecdsa_psychic_signatures_are_refused() {
    let t = TestApp::with(&[("token_alg", "ES256")]).await;
    let pair = t.tokens_for("di@example.com").await;
    let good = pair["access_token"].as_str().unwrap();
    let header = decode_part(good, 0);
    let claims = decode_part(good, 1);
    let order = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let mut r_eq_s_eq_n = order.clone();
    r_eq_s_eq_n.extend_from_slice(&order);
    for (what, sig) in [
        ("r = s = 0", vec![0u8; 64]),
        ("r = s = n", r_eq_s_eq_n),
        ("r = 0, s = 1", {
            let mut v = vec![0u8; 64];
            v[63] = 1;
            v
        }),
        (
            "DER-encoded zero signature",
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
        ),
        ("truncated", vec![1u8; 63]),
    ] {
        let token = with_signature(&header, &claims, &sig);
        let r = t.send(bearer("/v1/me", &token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_invalid_token(&r);
    }
    assert_eq!(t.send(bearer("/v1/me", good)).await.status, StatusCode::OK);
}

/// Changes one character in the middle of the signature (every bit there is
/// significant; the last character of base64url carries unused bits).
fn flip_signature_char(token: &str) -> String {
    let at = token.len() - 10;
    let new = if &token[at..=at] == "A" { "B" } else { "A" };
    let mut out = token.to_owned();
    out.replace_range(at..=at, new);
    out
}

/// The token with its Ed25519 signature's `s` replaced by `s + L` (L the
/// group order): every equation still holds, only the rule that `s` be
/// below L refuses it (RFC 8032 §5.1.7).
fn with_non_canonical_s(token: &str) -> String {
    const ORDER: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let mut signature = common::jwt::b64_decode(signature);
    let mut carry = 0u16;
    for (byte, add) in signature[32..].iter_mut().zip(ORDER) {
        let sum = u16::from(*byte) + u16::from(add) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    format!("{signed}.{}", common::jwt::b64(&signature))
}

/// New tokens arriving together have their Ed25519 signatures checked in
/// batches; each request still gets its own token's answer, a bad signature
/// in a batch refuses only its own request.
#[tokio::test]
async fn a_burst_of_new_tokens_gets_an_answer_per_token() {
    let t = TestApp::new().await;
    let pair = t.tokens_for("bo@example.com").await;
    let good = pair["access_token"].as_str().unwrap();
    let header = decode_part(good, 0);
    let claims = decode_part(good, 1);
    let (_, pkcs8) = active_key(&t.db_url).await;
    let burst: Vec<(String, bool)> = (0..60)
        .map(|i| {
            let mut c = claims.clone();
            c["jti"] = json!(format!("burst-{i}"));
            let token = sign_ed25519(&header, &c, &pkcs8);
            match i % 10 {
                3 => (flip_signature_char(&token), false),
                7 => (with_non_canonical_s(&token), false),
                _ => (token, true),
            }
        })
        .collect();
    let answers = futures_util::future::join_all(
        burst
            .iter()
            .map(|(token, _)| t.send(bearer("/v1/verify", token))),
    )
    .await;
    for (i, ((_, valid), r)) in burst.iter().zip(&answers).enumerate() {
        let expected = if *valid {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(r.status, expected, "token {i}: {}", r.text());
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let t = TestApp::new().await;
    let first = t.tokens_for("ed@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    t.advance(Duration::from_secs(5));
    let second = refresh(&t, r1).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second = second.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    assert_ne!(r1, r2, "rotated");
    // The contract's response lists `scope`: empty when none was granted.
    assert_eq!(
        (&first["scope"], &second["scope"]),
        (&json!(""), &json!(""))
    );
    let a2 = second["access_token"].as_str().unwrap();
    assert_eq!(
        decode_part(a2, 1)["sid"],
        decode_part(first["access_token"].as_str().unwrap(), 1)["sid"],
        "same family"
    );
    assert_eq!(t.send(bearer("/v1/me", a2)).await.status, StatusCode::OK);

    // Replaying the used token: refused, and the whole family dies.
    let replay = refresh(&t, r1).await;
    replay.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    refresh(&t, r2)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_invalid_token(&t.send(bearer("/v1/me", a2)).await);
    assert_invalid_token(
        &t.send(bearer("/v1/me", first["access_token"].as_str().unwrap()))
            .await,
    );
    let events = t
        .app
        .core
        .audit_events(Some("refresh_reuse_detected"), None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(r1) && !text.contains(r2),
        "no token in the audit log"
    );

    for junk in ["", "x", &"A".repeat(43), "' OR 1=1 --"] {
        let r = refresh(&t, junk).await;
        assert!(r.status == StatusCode::BAD_REQUEST, "{junk}: {}", r.text());
    }
}

/// A used refresh token is reuse whatever scope it asks for: a scope the
/// family never held must not turn the replay into a plain `invalid_scope`
/// that leaves the family (and the thief's copy) alive.
#[tokio::test]
async fn a_replay_asking_for_an_unheld_scope_is_still_reuse() {
    let t = TestApp::new().await;
    let first = t.tokens_for("eli@example.com").await;
    let r1 = first["refresh_token"].as_str().unwrap();
    let second = refresh(&t, r1).await.json();
    let r2 = second["refresh_token"].as_str().unwrap();
    let replay = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r1),
            ("scope", "admin:everything"),
        ]))
        .await;
    replay.assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    refresh(&t, r2)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    let events = t
        .app
        .core
        .audit_events(Some("refresh_reuse_detected"), None, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refreshes_with_the_same_token_have_exactly_one_winner() {
    let t = std::sync::Arc::new(TestApp::new().await);
    for round in 0..5 {
        let email = format!("race{round}@example.com");
        let pair = t.tokens_for(&email).await;
        let token = pair["refresh_token"].as_str().unwrap().to_owned();
        let mut racers = Vec::new();
        for _ in 0..8 {
            let t = std::sync::Arc::clone(&t);
            let token = token.clone();
            racers.push(tokio::spawn(
                async move { refresh(&t, &token).await.status },
            ));
        }
        let mut won = 0;
        for racer in racers {
            match racer.await.unwrap() {
                StatusCode::OK => won += 1,
                StatusCode::BAD_REQUEST => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(won, 1, "round {round}: exactly one refresh wins");
    }
}

/// Concurrent rotations are group-committed (several in one transaction);
/// each still gets its own outcome and a working successor token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_of_different_families_all_rotate() {
    let t = std::sync::Arc::new(TestApp::new().await);
    let mut tokens = Vec::new();
    for i in 0..12 {
        let pair = t.tokens_for(&format!("batch{i}@example.com")).await;
        tokens.push(pair["refresh_token"].as_str().unwrap().to_owned());
    }
    for generation in 0..3 {
        let racers: Vec<_> = tokens
            .iter()
            .map(|token| {
                let t = std::sync::Arc::clone(&t);
                let token = token.clone();
                tokio::spawn(async move { refresh(&t, &token).await })
            })
            .collect();
        let mut next = Vec::new();
        for racer in racers {
            let r = racer.await.unwrap();
            assert_eq!(
                r.status,
                StatusCode::OK,
                "generation {generation}: {}",
                r.text()
            );
            next.push(r.json()["refresh_token"].as_str().unwrap().to_owned());
        }
        // The tokens just used are spent: presenting one again is reuse.
        assert_eq!(
            refresh(&t, &tokens[0]).await.status,
            StatusCode::BAD_REQUEST
        );
        tokens = next;
        tokens.remove(0);
    }
}

#[tokio::test]
async fn revocation_of_every_kind_is_seen_at_once_everywhere() {
    let t = TestApp::new().await;
    let client = t.app.core.create_client("billing-service").await.unwrap();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{}:{}", client.client.id, client.secret.expose())
        )
    );
    let introspect = |token: &str| {
        Req::post("/v1/token/introspect")
            .header("authorization", &basic)
            .form(&[("token", token)])
    };
    let check_dead = |token: String| {
        let t = &t;
        let introspect = &introspect;
        async move {
            assert_invalid_token(&t.send(bearer("/v1/me", &token)).await);
            assert_invalid_token(&t.send(bearer("/v1/verify", &token)).await);
            let r = t.send(introspect(&token)).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.json(), json!({"active": false}));
        }
    };

    // 1. One access token, by RFC 7009 revocation (its cache entry too).
    let pair = t.tokens_for("fay@example.com").await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.send(bearer("/v1/me", &access)).await.status,
        StatusCode::OK
    );
    let live = t.send(introspect(&access)).await.json();
    assert_eq!(live["active"], true);
    assert_eq!(live["token_type"], "Bearer");
    assert_eq!(live["sub"], decode_part(&access, 1)["sub"]);
    let r = t
        .send(Req::post("/v1/token/revoke").form(&[("token", &access)]))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    check_dead(access).await;
    // The refresh token still works: only that access token was revoked.
    let next = refresh(&t, pair["refresh_token"].as_str().unwrap())
        .await
        .json();

    // 1b. The hint only orders the search (RFC 7009 §2.1): an access token
    // sent as a refresh token is revoked all the same.
    let mistaken = t.send(password_grant("fay@example.com")).await.json();
    let mistaken = mistaken["access_token"].as_str().unwrap().to_owned();
    let r = t
        .send(
            Req::post("/v1/token/revoke")
                .form(&[("token", &mistaken), ("token_type_hint", "refresh_token")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    check_dead(mistaken).await;

    // 2. A refresh token: its family and its access tokens.
    let access = next["access_token"].as_str().unwrap().to_owned();
    let rt = next["refresh_token"].as_str().unwrap().to_owned();
    let live = t.send(introspect(&rt)).await.json();
    assert_eq!(live["active"], true);
    assert_eq!(live["token_type"], "refresh_token");
    // Hinted as an access token: still found, as a refresh token.
    let r = t
        .send(
            Req::post("/v1/token/revoke")
                .form(&[("token", &rt), ("token_type_hint", "access_token")]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    check_dead(access).await;
    refresh(&t, &rt)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(
        t.send(introspect(&rt)).await.json(),
        json!({"active": false})
    );

    // 3. Per user: logout-all, password change, suspension, role change.
    let user = t.login("fay@example.com").await;
    for (what, kill) in [
        ("logout-all", 0),
        ("password", 1),
        ("roles", 2),
        ("suspension", 3),
    ] {
        t.advance(Duration::from_secs(2));
        let pair = t.send(password_grant("fay@example.com")).await.json();
        let access = pair["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            t.send(bearer("/v1/me", &access)).await.status,
            StatusCode::OK,
            "{what}"
        );
        match kill {
            0 => {
                let r = t
                    .send(
                        Req::post("/v1/logout-all")
                            .header("authorization", &format!("Bearer {access}")),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::NO_CONTENT);
            }
            1 => {
                let r = t
                    .send(
                        Req::post("/v1/account/password")
                            .header("authorization", &format!("Bearer {access}"))
                            .json(json!({"current_password": PASSWORD, "new_password": PASSWORD})),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
            }
            2 => {
                t.app
                    .core
                    .set_roles(&user.user_id, &["auditor".into()])
                    .await
                    .unwrap();
            }
            _ => {
                t.app
                    .core
                    .set_status(
                        &user.user_id,
                        tessera::core::accounts::UserStatus::Suspended,
                    )
                    .await
                    .unwrap();
            }
        }
        check_dead(access).await;
        if kill < 2 {
            refresh(&t, pair["refresh_token"].as_str().unwrap())
                .await
                .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        if kill == 2 {
            // Refresh families survive a role change and mint the new roles.
            t.advance(Duration::from_secs(2));
            let r = refresh(&t, pair["refresh_token"].as_str().unwrap())
                .await
                .json();
            let claims = decode_part(r["access_token"].as_str().unwrap(), 1);
            assert_eq!(claims["roles"], json!(["auditor"]));
        }
    }
    t.send(password_grant("fay@example.com"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_cached_token_dies_the_moment_it_expires_or_is_revoked() {
    let t = TestApp::new().await;
    let pair = t.tokens_for("gus@example.com").await;
    let access = pair["access_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(
            t.send(bearer("/v1/verify", &access)).await.status,
            StatusCode::OK
        );
    }
    // 10 minutes of life plus 60 s of leeway.
    t.advance(Duration::from_secs(600 + 59));
    assert_eq!(
        t.send(bearer("/v1/verify", &access)).await.status,
        StatusCode::OK
    );
    t.advance(Duration::from_secs(1));
    assert_invalid_token(&t.send(bearer("/v1/verify", &access)).await);

    let fresh = refresh(&t, pair["refresh_token"].as_str().unwrap())
        .await
        .json();
    let access = fresh["access_token"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(
            t.send(bearer("/v1/verify", &access)).await.status,
            StatusCode::OK
        );
    }
    t.send(Req::post("/v1/token/revoke").form(&[("token", &access)]))
        .await;
    assert_invalid_token(&t.send(bearer("/v1/verify", &access)).await);
}

#[tokio::test]
async fn rotated_keys_verify_until_their_tokens_expired_then_retire() {
    let t = TestApp::new().await;
    let admin = t.signed_in("hal@example.com").await;
    t.app
        .core
        .set_roles(&admin.user_id, &["admin".into()])
        .await
        .unwrap();
    let admin = t.login("hal@example.com").await;
    t.advance(Duration::from_secs(2));
    let old = t.send(password_grant("hal@example.com")).await.json();
    let old_token = old["access_token"].as_str().unwrap().to_owned();
    let old_kid = decode_part(&old_token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Not without the admin role, and not without CSRF.
    let plain = t.signed_in("ivy@example.com").await;
    t.send(Req::post("/v1/admin/keys/rotate").session(&plain))
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    t.send(Req::post("/v1/admin/keys/rotate").header("cookie", &admin.cookie))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");

    let r = t
        .send(Req::post("/v1/admin/keys/rotate").session(&admin))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let keys = r.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0]["status"], "active");
    assert_eq!(keys[1]["kid"], old_kid.as_str());
    assert_eq!(keys[1]["status"], "retiring");

    let new = t.send(password_grant("hal@example.com")).await.json();
    let new_token = new["access_token"].as_str().unwrap().to_owned();
    assert_ne!(decode_part(&new_token, 0)["kid"], old_kid.as_str());
    let jwks = t.send(Req::get("/.well-known/jwks.json")).await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        t.send(bearer("/v1/me", &old_token)).await.status,
        StatusCode::OK
    );

    // After the access TTL and leeway the old key is retired.
    t.advance(Duration::from_secs(600 + 60));
    assert_invalid_token(&t.send(bearer("/v1/me", &old_token)).await);
    let jwks = t.send(Req::get("/.well-known/jwks.json")).await.json();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(!kids.contains(&old_kid.as_str()));
    let keys = t
        .send(Req::get("/v1/admin/keys").header("authorization", &format!("Bearer {new_token}")))
        .await;
    // The new token was issued before the clock moved: refresh for a live one.
    let _ = keys;
    let live = refresh(&t, new["refresh_token"].as_str().unwrap())
        .await
        .json();
    let r = t
        .send(bearer(
            "/v1/admin/keys",
            live["access_token"].as_str().unwrap(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let statuses: Vec<String> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["active", "retired"]);
    // A restart loads the same ring.
    let kid_now = decode_part(live["access_token"].as_str().unwrap(), 0)["kid"].clone();
    let t = t.restart(&[]).await;
    let jwks = t.send(Req::get("/.well-known/jwks.json")).await.json();
    assert_eq!(jwks["keys"][0]["kid"], kid_now);
}

#[tokio::test]
async fn token_endpoint_speaks_rfc_6749() {
    let t = TestApp::with(&[("public_clients", "mobile-app desk.app")]).await;
    t.register("jo@example.com").await;
    let bad = |pairs: &[(&str, &str)]| Req::post("/v1/token").form(pairs);
    t.send(bad(&[
        ("grant_type", "password"),
        ("username", "jo@example.com"),
        ("password", "wrong password"),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    t.send(bad(&[
        ("grant_type", "password"),
        ("username", "nobody@example.com"),
        ("password", "wrong password"),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    t.send(bad(&[("grant_type", "client_credentials")]))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    t.send(bad(&[("username", "jo@example.com")]))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    t.send(bad(&[
        ("grant_type", "password"),
        ("username", "jo@example.com"),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    t.send(bad(&[
        ("grant_type", "password"),
        ("username", "jo@example.com"),
        ("password", PASSWORD),
        ("scope", "admin:all"),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    t.send(Req::post("/v1/token").raw("text/plain", "grant_type=password"))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // JSON bodies work too, and a public client_id is carried in the token.
    let r = t
        .send(Req::post("/v1/token").json(json!({
            "grant_type": "password", "username": "jo@example.com", "password": PASSWORD, "client_id": "mobile-app"
        })))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        decode_part(r.json()["access_token"].as_str().unwrap(), 1)["client_id"],
        "mobile-app"
    );
    // Only registered public ids are carried (issue #19, 12): not any text,
    // and never a service client's id, which would make a token look as
    // if that service had asked for it.
    let service = t.app.core.create_client("billing").await.unwrap();
    for unregistered in ["mobile-app2", "someone-else", service.client.id.as_str()] {
        t.send(bad(&[
            ("grant_type", "password"),
            ("username", "jo@example.com"),
            ("password", PASSWORD),
            ("client_id", unregistered),
        ]))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }

    let t = TestApp::with(&[("allowed_scopes", "read write")]).await;
    t.register("jo@example.com").await;
    let r = t
        .send(bad(&[
            ("grant_type", "password"),
            ("username", "jo@example.com"),
            ("password", PASSWORD),
            ("scope", "read"),
        ]))
        .await
        .json();
    assert_eq!(r["scope"], "read");
    assert_eq!(
        decode_part(r["access_token"].as_str().unwrap(), 1)["scope"],
        "read"
    );
    // A refresh may narrow the scope but never widen it.
    let rt = r["refresh_token"].as_str().unwrap();
    t.send(bad(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("scope", "read write"),
    ]))
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_scope");
    // The refused request did not use the token up, and a repeated scope
    // is granted once.
    let r = t
        .send(bad(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "read  read"),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = r.json();
    assert_eq!(r["scope"], "read");
    assert_eq!(
        decode_part(r["access_token"].as_str().unwrap(), 1)["scope"],
        "read"
    );
}

#[tokio::test]
async fn introspection_requires_a_service_client() {
    let t = TestApp::new().await;
    let pair = t.tokens_for("kai@example.com").await;
    let access = pair["access_token"].as_str().unwrap();
    let client = t.app.core.create_client("api-gateway").await.unwrap();
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{id}:{secret}")
            )
        )
    };
    for auth in [
        None,
        Some(basic(&client.client.id, "wrong-secret")),
        Some(basic("cli_unknownclient00000000", client.secret.expose())),
        Some(format!("Bearer {access}")),
        Some("Basic !!!".to_owned()),
    ] {
        let mut req = Req::post("/v1/token/introspect").form(&[("token", access)]);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let r = t.send(req).await;
        r.assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    let r = t
        .send(
            Req::post("/v1/token/introspect")
                .header(
                    "authorization",
                    &basic(&client.client.id, client.secret.expose()),
                )
                .form(&[("token", access)]),
        )
        .await;
    let body = r.json();
    assert_eq!(body["active"], true);
    for field in ["sub", "client_id", "exp", "iat", "jti", "token_type"] {
        assert!(body.get(field).is_some(), "{field}");
    }
    for junk in ["", "junk", "a.b.c"] {
        let r = t
            .send(
                Req::post("/v1/token/introspect")
                    .header(
                        "authorization",
                        &basic(&client.client.id, client.secret.expose()),
                    )
                    .form(&[("token", junk)]),
            )
            .await;
        if junk.is_empty() {
            r.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
        } else {
            assert_eq!(r.json(), json!({"active": false}));
        }
    }
}

#[tokio::test]
async fn metadata_document_follows_rfc_8414() {
    let t = TestApp::new().await;
    let r = t
        .send(Req::get("/.well-known/oauth-authorization-server"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let m = r.json();
    assert_eq!(m["issuer"], "http://localhost:8080");
    assert_eq!(m["jwks_uri"], "http://localhost:8080/.well-known/jwks.json");
    assert_eq!(m["token_endpoint"], "http://localhost:8080/v1/token");
    assert_eq!(
        m["revocation_endpoint"],
        "http://localhost:8080/v1/token/revoke"
    );
    assert_eq!(
        m["introspection_endpoint"],
        "http://localhost:8080/v1/token/introspect"
    );
    assert_eq!(
        m["grant_types_supported"],
        json!(["password", "refresh_token"])
    );
    assert_eq!(m["response_types_supported"], json!([]));
    assert!(m["token_endpoint_auth_methods_supported"].is_array());
    assert_eq!(
        m["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic"])
    );
}

#[tokio::test]
async fn a_session_token_is_tied_to_its_session() {
    let t = TestApp::new().await;
    let login = t.signed_in("lea@example.com").await;
    t.send(Req::post("/v1/session/token").header("cookie", &login.cookie))
        .await
        .assert_error(StatusCode::FORBIDDEN, "csrf_failed");
    t.send(Req::post("/v1/session/token"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = t.send(Req::post("/v1/session/token").session(&login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(decode_part(&token, 1)["sid"], login.session_id.as_str());
    let me = t.send(bearer("/v1/me", &token)).await.json();
    assert_eq!(me["auth"]["method"], "jwt");
    // Listing sessions with the token marks the session it came from.
    let list = t.send(bearer("/v1/sessions", &token)).await.json();
    assert_eq!(list["sessions"][0]["current"], true);
    t.send(Req::delete("/v1/session").session(&login)).await;
    assert_invalid_token(&t.send(bearer("/v1/me", &token)).await);
}

#[tokio::test]
async fn tokens_verify_with_an_independent_jose_library() {
    for (alg, extra) in [("EdDSA", None), ("ES256", None), ("RS256", None)] {
        let _: Option<()> = extra;
        let t = TestApp::with(&[
            ("token_alg", alg),
            ("public_url", "https://auth.example.com"),
        ])
        .await;
        let pair = t.tokens_for("max@example.com").await;
        let token = pair["access_token"].as_str().unwrap();
        let jwks = t.send(Req::get("/.well-known/jwks.json")).await.text();
        let file = t.dir.path().join("jwks.json");
        std::fs::write(&file, jwks).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/interop_verify.py"
        );
        let run = |token: &str| {
            std::process::Command::new("python3")
                .args([script, file.to_str().unwrap(), token, "https://auth.example.com", "https://auth.example.com"])
                .output()
                .expect("python3 runs (scripts/test installs it and PyJWT: pip install 'pyjwt[crypto]')")
        };
        let out = run(token);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("No module named"),
            "PyJWT is missing: pip install 'pyjwt[crypto]' (scripts/test does this): {stderr}"
        );
        assert!(
            out.status.success(),
            "{alg}: PyJWT refused Tessera's token: {stderr}"
        );
        let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(claims["sub"], decode_part(token, 1)["sub"]);
        // And PyJWT refuses a tampered one, so the check above means something.
        let tampered = flip_signature_char(token);
        assert!(
            !run(&tampered).status.success(),
            "{alg}: tampered token accepted"
        );
    }
}

#[tokio::test]
async fn keys_rotate_on_the_configured_interval() {
    let t = TestApp::with(&[("key_rotation_interval", "24h")]).await;
    let first = t.app.core.key_list().await.unwrap();
    assert_eq!(first.len(), 1);
    t.app.core.sweep().await;
    assert_eq!(t.app.core.key_list().await.unwrap().len(), 1, "not due yet");
    t.advance(Duration::from_secs(24 * 3600));
    t.app.core.sweep().await;
    let keys = t.app.core.key_list().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1].kid, first[0].kid);
    // Sweeping later retires the old key and wipes its private half.
    t.advance(Duration::from_secs(11 * 60));
    t.app.core.sweep().await;
    let keys = t.app.core.key_list().await.unwrap();
    assert_eq!(keys[1].status, tessera::core::keys::KeyStatus::Retired);
    let wiped = common::db::scalar(
        &t.db_url,
        "SELECT count(*) FROM signing_keys WHERE private_pkcs8 IS NULL",
    )
    .await;
    assert_eq!(wiped, 1);
}

#[tokio::test]
async fn a_compromised_key_can_be_retired_at_once() {
    let t = TestApp::new().await;
    let pair = t.tokens_for("zoe@example.com").await;
    let old = pair["access_token"].as_str().unwrap().to_owned();
    assert_eq!(t.send(bearer("/v1/me", &old)).await.status, StatusCode::OK);
    t.app.core.rotate_keys(None).await.unwrap();
    let middle = t.send(password_grant("zoe@example.com")).await.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.send(bearer("/v1/me", &old)).await.status,
        StatusCode::OK,
        "graceful rotation"
    );
    t.app.core.rotate_keys_with(None, true).await.unwrap();
    // Both earlier keys are retired now, cached verifications included.
    assert_invalid_token(&t.send(bearer("/v1/me", &old)).await);
    assert_invalid_token(&t.send(bearer("/v1/me", &middle)).await);
    let jwks = t.send(Req::get("/.well-known/jwks.json")).await.json();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let fresh = t.send(password_grant("zoe@example.com")).await.json();
    assert_eq!(
        t.send(bearer("/v1/me", fresh["access_token"].as_str().unwrap()))
            .await
            .status,
        StatusCode::OK
    );
}

/// A user-wide cut-off kills every token issued before it and none issued
/// after it, even when cut-offs and issuance share a second (`iat` counts
/// whole seconds): a token asked for in the second of a cut-off is issued
/// once that second has passed, and its `iat` is never in the future.
#[tokio::test]
async fn cut_offs_and_tokens_are_strictly_ordered() {
    let t = TestApp::new().await;
    let user_id = t.tokens_for("ida@example.com").await["access_token"]
        .as_str()
        .map(|a| decode_part(a, 1)["sub"].as_str().unwrap().to_owned())
        .unwrap();
    // Into the second at .200.
    let into_second = (1200 - t.app.core.now().millisecond() as u64 % 1000) % 1000;
    t.advance(Duration::from_millis(into_second));
    let second = t.app.core.now().unix_timestamp();

    t.app.core.set_roles(&user_id, &["a".into()]).await.unwrap();
    let router = t.router.clone();
    let mint = tokio::spawn(async move {
        let response =
            tower::ServiceExt::oneshot(router, password_grant("ida@example.com").build())
                .await
                .unwrap();
        common::Resp::read(response).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let minted_before_second_cut_off = mint.is_finished();
    t.advance(Duration::from_millis(200));
    t.app.core.set_roles(&user_id, &["b".into()]).await.unwrap();
    t.advance(Duration::from_secs(1));
    let r = mint.await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let access = r.json()["access_token"].as_str().unwrap().to_owned();
    let claims = decode_part(&access, 1);
    let now = t.app.core.now().unix_timestamp();
    assert!(
        claims["iat"].as_i64().unwrap() <= now,
        "iat is never in the future: {claims}"
    );
    if minted_before_second_cut_off {
        assert_eq!(
            t.send(bearer("/v1/me", &access)).await.status,
            StatusCode::UNAUTHORIZED,
            "a token issued between two cut-offs in one second dies with the second"
        );
    } else {
        assert_eq!(claims["iat"], second + 1, "issued once the second turned");
        assert_eq!(claims["roles"], json!(["b"]));
        assert_eq!(
            t.send(bearer("/v1/me", &access)).await.status,
            StatusCode::OK,
            "issued after both cut-offs"
        );
    }
    // A third cut-off in the very second the token was issued kills it.
    t.app.core.set_roles(&user_id, &["c".into()]).await.unwrap();
    assert_eq!(
        t.send(bearer("/v1/me", &access)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// The user's status is checked on the token path too (`/v1/me`,
/// `/v1/verify`, introspection), not only through the cut-off a suspension
/// makes: here the account was suspended behind the server's back, so no
/// cut-off exists at all.
#[tokio::test]
async fn a_suspended_users_token_is_refused_even_without_a_cut_off() {
    let t = TestApp::new().await;
    let access = t.tokens_for("jo@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        t.send(bearer("/v1/verify", &access)).await.status,
        StatusCode::OK
    );
    common::db::execute(&t.db_url, "UPDATE users SET status = 'suspended'").await;
    let t = t.restart(&[]).await;
    for path in ["/v1/me", "/v1/verify"] {
        let r = t.send(bearer(path, &access)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}: {}", r.text());
    }
    let client = t.app.core.create_client("resource-server").await.unwrap();
    let r = t
        .send(
            Req::post("/v1/token/introspect")
                .header(
                    "authorization",
                    &common::basic_auth(&client.client.id, client.secret.expose()),
                )
                .form(&[("token", &access)]),
        )
        .await;
    assert_eq!(r.json(), json!({"active": false}));
}

/// Nodes starting at once on a fresh database: one makes the first signing
/// key and every other takes it (none rotates it out as a second "first"
/// key); all publish the same JWKS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_at_once_share_one_first_key() {
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let url = common::fresh_store_url(dir.path()).await;
        let clock = tessera::core::clock::ManualClock::starting_now();
        let nodes =
            futures_util::future::join_all((0..3).map(|_| common::open_app(&url, &[], &clock)))
                .await;
        let keys = nodes[0].core.key_list().await.unwrap();
        assert_eq!(keys.len(), 1, "round {round}: {keys:?}");
        for node in &nodes {
            assert_eq!(node.core.jwks(), nodes[0].core.jwks(), "round {round}");
            node.close().await;
        }
    }
}

/// `keys rotate --retire-previous` racing another node's rotation still
/// retires the key that was active when it was asked for: losing the
/// compare-and-set, it rotates again from the winner's key (before, it took
/// the winner's key and left the compromised one verifying).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_key_is_retired_even_when_another_node_rotates_at_once() {
    use tessera::core::keys::KeyStatus;
    let dir = tempfile::tempdir().unwrap();
    let url = common::fresh_store_url(dir.path()).await;
    let clock = tessera::core::clock::ManualClock::starting_now();
    let a = common::open_app(&url, &[], &clock).await;
    let b = common::open_app(&url, &[], &clock).await;
    for round in 0..10 {
        let compromised = a
            .core
            .key_list()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.status == KeyStatus::Active)
            .unwrap()
            .kid;
        clock.advance(Duration::from_millis(10));
        let (retired, rotated) = tokio::join!(
            a.core.rotate_keys_with(Some("usr_op"), true),
            b.core.rotate_keys(None)
        );
        retired.unwrap();
        rotated.unwrap();
        let keys = b.core.key_list().await.unwrap();
        let old = keys.iter().find(|k| k.kid == compromised).unwrap();
        assert_eq!(old.status, KeyStatus::Retired, "round {round}: {keys:?}");
        assert_eq!(
            keys.iter()
                .filter(|k| k.status == KeyStatus::Active)
                .count(),
            1
        );
    }
    a.close().await;
    b.close().await;
}
