//! `POST /v1/accounts` and input validation, through the real router.

mod common;

use axum::http::StatusCode;
use common::{PASSWORD, Req, TestApp};
use serde_json::json;

fn register(email: &str, password: &str) -> Req {
    Req::post("/v1/accounts").json(json!({"email": email, "password": password}))
}

#[tokio::test]
async fn registration_returns_the_user_object() {
    let t = TestApp::new().await;
    let r = t.send(register("Uma@Example.com", PASSWORD)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let user = &r.json()["user"];
    let id = user["id"].as_str().unwrap();
    assert!(id.starts_with("usr_") && id.len() == 26, "{id}");
    assert_eq!(user["email"], "Uma@Example.com");
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["status"], "active");
    assert!(user["created_at"].as_str().unwrap().ends_with('Z'));
    let text = r.text();
    assert!(
        !text.contains("password") && !text.contains("argon2"),
        "{text}"
    );
}

#[tokio::test]
async fn emails_are_unique_case_insensitively() {
    let t = TestApp::new().await;
    t.register("victor@example.com").await;
    for dup in [
        "victor@example.com",
        "VICTOR@EXAMPLE.COM",
        "  Victor@Example.com ",
    ] {
        t.send(register(dup, PASSWORD))
            .await
            .assert_error(StatusCode::CONFLICT, "conflict");
    }
}

#[tokio::test]
async fn bad_emails_and_passwords_are_refused_before_hashing() {
    let t = TestApp::new().await;
    for email in [
        "",
        "no-at-sign",
        "two@@example.com",
        "spaces in@example.com",
        "x'; DROP TABLE users;--@example.com",
        "' OR '1'='1' --@example.com",
        "\"quoted\"@example.com",
        "rtl\u{202e}moc.elpmaxe@example.com",
        "zero\u{200b}width@example.com",
        "nul\u{0}@example.com",
        "a@localhost",
    ] {
        t.send(register(email, PASSWORD))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let long_email = format!("{}@example.com", "a".repeat(250));
    t.send(register(&long_email, PASSWORD))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    for password in ["", "short", "1234567", &"p".repeat(1025)] {
        t.send(register("wendy@example.com", password))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    // 1024 characters (multi-byte) is the maximum and is accepted (a
    // passphrase, then filler: the strength rule reads the first 100, and
    // 1024 times "é" alone would be refused as a repeat).
    let phrase = "ünïcødé pässwörds wörk fïne ";
    let longest = format!("{phrase}{}", "é".repeat(1024 - phrase.chars().count()));
    assert_eq!(longest.chars().count(), 1024);
    let r = t.send(register("wendy@example.com", &longest)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    // Login checks the same policy before hashing.
    t.send(
        Req::post("/v1/sessions")
            .json(json!({"email": "wendy@example.com", "password": "p".repeat(1025)})),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn sql_looking_but_valid_emails_are_stored_verbatim() {
    let t = TestApp::new().await;
    for email in [
        "o'brien@example.com",
        "robert'--@example.com",
        "100%_off@example.com",
    ] {
        t.register(email).await;
        let login = t.login(email).await;
        assert_eq!(login.body["user"]["email"], email);
    }
    // LIKE wildcards in the email do not match other accounts.
    let users = t
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("%_off".into()),
            limit: 10,
            after_id: None,
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    let none = t
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("_".into()),
            limit: 10,
            after_id: None,
        })
        .await
        .unwrap();
    assert_eq!(none.len(), 1, "only the address with a literal underscore");
}

#[tokio::test]
async fn unicode_emails_are_accepted_and_fold_case() {
    let t = TestApp::new().await;
    t.register("Zoë@Exämple.org").await;
    let login = t.login("zoë@exämple.org").await;
    assert_eq!(login.body["user"]["email"], "Zoë@Exämple.org");
    t.send(register("ZOË@EXÄMPLE.ORG", PASSWORD))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}

/// `POST /v1/sessions` for `email` with the test password.
fn login(email: &str) -> Req {
    Req::post("/v1/sessions").json(json!({"email": email, "password": PASSWORD}))
}

#[tokio::test]
async fn nfc_and_nfd_spellings_are_one_account() {
    let t = TestApp::new().await;
    // Typed decomposed (e + U+0301), shown and stored composed.
    let user = t.register("Rene\u{301}@example.org").await;
    assert_eq!(user["email"], "René@example.org");
    for dup in [
        "René@example.org",
        "rene\u{301}@example.org",
        "RENÉ@example.org",
    ] {
        t.send(register(dup, PASSWORD))
            .await
            .assert_error(StatusCode::CONFLICT, "conflict");
    }
    // Typed composed, then decomposed: the same.
    let nfc = t.register("Zoë@example.org").await;
    t.send(register("Zoe\u{308}@example.org", PASSWORD))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    // A login with the decomposed spelling finds the composed account.
    let login = t.login("zoe\u{308}@EXAMPLE.org").await;
    assert_eq!(login.user_id, nfc["id"].as_str().unwrap());
    assert_eq!(login.body["user"]["email"], "Zoë@example.org");
    let login = t.login("RENÉ@example.org").await;
    assert_eq!(login.user_id, user["id"].as_str().unwrap());
}

#[tokio::test]
async fn case_and_compatibility_look_alikes_are_one_account() {
    let t = TestApp::new().await;
    // Full case folding: ß is ss, as STRASSE is the capital of straße.
    let strasse = t.register("straße@example.de").await;
    // Compatibility forms: fullwidth letters and a ligature draw as the
    // plain letters do.
    let paypal = t.register("paypal@example.com").await;
    let office = t.register("office@example.com").await;
    for (dup, _) in [
        ("STRASSE@example.de", &strasse),
        ("strasse@example.de", &strasse),
        ("ｐａｙｐａｌ@example.com", &paypal),
        ("ＰａｙＰａｌ@example.com", &paypal),
        ("o\u{FB03}ce@example.com", &office),
    ] {
        t.send(register(dup, PASSWORD))
            .await
            .assert_error(StatusCode::CONFLICT, "conflict");
    }
    let login = t.login("STRASSE@EXAMPLE.DE").await;
    assert_eq!(login.user_id, strasse["id"].as_str().unwrap());
    assert_eq!(login.body["user"]["email"], "straße@example.de");
    let login = t.login("ｐａｙｐａｌ@example.com").await;
    assert_eq!(login.user_id, paypal["id"].as_str().unwrap());
    // The admin search finds a key by any spelling of it.
    let found = t
        .app
        .core
        .list_users(&tessera::core::accounts::UserQuery {
            email_contains: Some("STRAẞE".into()),
            limit: 10,
            after_id: None,
        })
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, strasse["id"].as_str().unwrap());
}

#[tokio::test]
async fn every_kind_of_invisible_character_is_refused() {
    let t = TestApp::new().await;
    for c in [
        '\u{200B}',  // ZERO WIDTH SPACE
        '\u{200D}',  // ZERO WIDTH JOINER
        '\u{2060}',  // WORD JOINER
        '\u{2066}',  // LEFT-TO-RIGHT ISOLATE
        '\u{FE0F}',  // VARIATION SELECTOR-16
        '\u{00AD}',  // SOFT HYPHEN
        '\u{180E}',  // MONGOLIAN VOWEL SEPARATOR
        '\u{034F}',  // COMBINING GRAPHEME JOINER
        '\u{061C}',  // ARABIC LETTER MARK
        '\u{3164}',  // HANGUL FILLER
        '\u{FEFF}',  // ZERO WIDTH NO-BREAK SPACE
        '\u{1D173}', // MUSICAL SYMBOL BEGIN BEAM
        '\u{E0001}', // LANGUAGE TAG
        '\u{E0100}', // VARIATION SELECTOR-17
    ] {
        for email in [
            format!("vic{c}tor@example.com"),
            format!("victor@exam{c}ple.com"),
            format!("victor{c}@example.com"),
        ] {
            let r = t.send(register(&email, PASSWORD)).await;
            r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
            let why = r.json()["error_description"].as_str().unwrap().to_owned();
            assert!(
                why.contains(&format!("invisible character (U+{:04X})", u32::from(c))),
                "{why}"
            );
        }
    }
    t.register("victor@example.com").await;
}

/// Writes behind the server's back, as an older release would have left a
/// user: its email and its key made by lowercasing alone.
async fn store_old_style(t: &TestApp, sql: &'static str) {
    common::db::execute(&t.db_url, sql).await;
}

async fn key_of_user(t: &TestApp, sql: &'static str) -> String {
    let rows = common::db::text_rows(&t.db_url, sql).await;
    assert_eq!(rows.len(), 1, "{sql}");
    rows[0][0].clone().unwrap()
}

#[tokio::test]
async fn keys_stored_before_normalisation_are_remade_and_collisions_reported() {
    let t = TestApp::new().await;
    // A decomposed spelling, alone: its key gets remade.
    let zoe = t.register("zoe-old@example.org").await;
    store_old_style(
        &t,
        "UPDATE users SET email = 'Zoe\u{308}@example.org', email_key = 'zoe\u{308}@example.org'
         WHERE email_key = 'zoe-old@example.org'",
    )
    .await;
    // straße next to an (ASCII) strasse: one address now.
    let strasse = t.register("strasse@example.de").await;
    let strasse_2 = t.register("strasse-old@example.de").await;
    store_old_style(
        &t,
        "UPDATE users SET email = 'straße@example.de', email_key = 'straße@example.de'
         WHERE email_key = 'strasse-old@example.de'",
    )
    .await;
    // Composed and decomposed Ève, both stored before: one address now.
    let eve = t.register("eve-1@example.org").await;
    let eve_2 = t.register("eve-2@example.org").await;
    store_old_style(
        &t,
        "UPDATE users SET email = 'Ève@example.org', email_key = 'ève@example.org'
         WHERE email_key = 'eve-1@example.org'",
    )
    .await;
    store_old_style(
        &t,
        "UPDATE users SET email = 'E\u{300}ve@example.org', email_key = 'e\u{300}ve@example.org'
         WHERE email_key = 'eve-2@example.org'",
    )
    .await;
    let id = |user: &serde_json::Value| user["id"].as_str().unwrap().to_owned();

    // Before the step, the old key is out of reach and its look-alike free.
    t.send(login("Zoe\u{308}@example.org"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");

    // What `serve` and every command do first: the schema migrations, then
    // the step. The real binary, so its log and the doctor are seen too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("doctor")
        .envs(common::cli::store_env(&t.db_url))
        .env("TESSERA_HASH_THREADS", "1")
        .env_remove("RUST_LOG")
        .env_remove("TESSERA_PUBLIC_URL")
        .output()
        .expect("run tessera doctor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let (s1, s2, e1, e2) = (id(&strasse), id(&strasse_2), id(&eve), id(&eve_2));
    for pair in [[&s1, &s2], [&e1, &e2]] {
        let mut ids = pair.map(String::as_str);
        ids.sort();
        assert!(
            stderr.contains("WARN") && stderr.contains(&ids.join(",")),
            "a WARN line names {ids:?}: {stderr}"
        );
        assert!(
            stdout.contains(&ids.join(", ")),
            "the doctor names {ids:?}: {stdout}"
        );
    }
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("straße") && !text.contains("ve@example.org"),
            "ids only, never emails: {text}"
        );
    }

    // The lone one has its new key: its decomposed spelling signs in, and
    // its composed look-alike cannot register any more.
    let login_zoe = t.login("Zoe\u{308}@example.org").await;
    assert_eq!(login_zoe.user_id, id(&zoe));
    t.send(register("zoë@example.org", PASSWORD))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
    // The colliding ones keep their keys; nothing was merged or deleted.
    assert_eq!(
        key_of_user(
            &t,
            "SELECT email_key FROM users WHERE email = 'straße@example.de'"
        )
        .await,
        "straße@example.de"
    );
    assert_eq!(
        key_of_user(
            &t,
            "SELECT email_key FROM users WHERE email = 'E\u{300}ve@example.org'"
        )
        .await,
        "e\u{300}ve@example.org"
    );
    assert_eq!(
        common::db::scalar(&t.db_url, "SELECT COUNT(*) FROM users").await,
        5
    );
    // Either spelling of straße now reaches the one holding the key.
    assert_eq!(t.login("straße@example.de").await.user_id, s1);

    // Run again: nothing more to change, the same to report.
    let again = tessera::store::rekey::run(&t.db_url).await.unwrap();
    assert!(again.changed.is_empty() && !again.done, "{again:?}");
    let mut want = vec![vec![s1.clone(), s2.clone()], vec![e1.clone(), e2.clone()]];
    for group in &mut want {
        group.sort();
    }
    want.sort();
    assert_eq!(again.collisions, want);

    // The operator gives the others another address; the next start
    // re-keys what is left and records the step, after which it is free.
    store_old_style(
        &t,
        "UPDATE users SET email = 'Strasse.Zwei@example.de', email_key = lower('Strasse.Zwei@example.de')
         WHERE email = 'straße@example.de'",
    )
    .await;
    store_old_style(
        &t,
        "UPDATE users SET email = 'E\u{300}va@example.org', email_key = 'e\u{300}va-old'
         WHERE email = 'E\u{300}ve@example.org'",
    )
    .await;
    tessera::store::migrate_reporting(&t.db_url).await.unwrap();
    let last = tessera::store::rekey::run(&t.db_url).await.unwrap();
    assert!(last.already_done, "{last:?}");
    assert_eq!(t.login("ÈVA@example.org").await.user_id, e2);
    assert_eq!(t.login("strasse.zwei@example.de").await.user_id, s2);
}
