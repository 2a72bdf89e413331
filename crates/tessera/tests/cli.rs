//! The `tessera` binary: user administration against a live server's
//! database, configuration errors, and `serve` with graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::cli::{run, tessera};
use common::{PASSWORD, Req, TestApp};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn cli_administration_reaches_a_running_server_at_once() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());

    let (code, out, err) = run(
        tessera(&t.db_url).args([
            "user",
            "create",
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
            "--role",
            "ops",
            "--password-stdin",
            "--json",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let user: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON user");
    let id = user["id"].as_str().unwrap().to_owned();
    assert_eq!(user["roles"], serde_json::json!(["admin", "ops"]));
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));

    // The server logs in the user the CLI created.
    let login = t.login("root@example.com").await;
    let r = t
        .send(Req::get("/v1/verify?role=admin").session(&login))
        .await;
    assert_eq!(r.status, StatusCode::OK);

    let (code, out, _) = run(tessera(&t.db_url).args(["user", "list"]), "");
    assert_eq!(code, 0);
    assert!(out.contains(&id) && out.contains("Root@Example.com") && out.contains("admin,ops"));

    // Another process changes roles: the server's caches hear of it. (A
    // second admin first: the last active one cannot lose the role.)
    let (code, _, err) = run(tessera(&t.db_url).args(["user", "roles", &id, "ops"]), "");
    assert_ne!(code, 0);
    assert!(err.contains("last active admin"), "{err}");
    let second = t.register("second@example.com").await;
    t.app
        .core
        .set_roles(second["id"].as_str().unwrap(), &["admin".into()])
        .await
        .unwrap();
    let (code, out, err) = run(tessera(&t.db_url).args(["user", "roles", &id, "ops"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops"));
    wait_for(&t, &login, "/v1/verify?role=admin", StatusCode::FORBIDDEN).await;

    let (code, _, err) = run(tessera(&t.db_url).args(["user", "suspend", &id]), "");
    assert_eq!(code, 0, "{err}");
    wait_for(&t, &login, "/v1/me", StatusCode::UNAUTHORIZED).await;

    let (code, _, err) = run(tessera(&t.db_url).args(["user", "suspend", "usr_nope"]), "");
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");

    let (code, _, err) = run(
        tessera(&t.db_url).args([
            "user",
            "create",
            "--email",
            "root@example.com",
            "--password-stdin",
        ]),
        &format!("{PASSWORD}\n"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    let (code, _, err) = run(
        tessera(&t.db_url).args([
            "user",
            "create",
            "--email",
            "short@example.com",
            "--password-stdin",
        ]),
        "short\n",
    );
    assert_ne!(code, 0);
    assert!(err.contains("at least 8"), "{err}");

    cancel.cancel();
    follower.await.unwrap();
}

/// Polls until `path` answers `want` (the change log is polled every 250 ms).
async fn wait_for(t: &TestApp, login: &common::Login, path: &str, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = t.send(Req::get(path).session(login)).await.status;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until `req()` answers `want` (the running server hears of a CLI
/// command through the change and revocation logs).
async fn wait_for_answer(t: &TestApp, req: impl Fn() -> Req, want: StatusCode) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = t.send(req()).await.status;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, wanted {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `user set-password` and `user delete` against a running server, users
/// named by email in any case, and the last admin kept through this door
/// too.
#[tokio::test]
async fn cli_sets_passwords_deletes_users_and_takes_emails() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());
    let user = |args: &[&str], stdin: &str| {
        let mut cmd = tessera(&t.db_url);
        cmd.env("USER", "opal").env_remove("LOGNAME");
        cmd.arg("user").args(args);
        run(&mut cmd, stdin)
    };
    let root = t.register("root@example.com").await;
    let root_id = root["id"].as_str().unwrap().to_owned();
    t.app
        .core
        .set_roles(&root_id, &["admin".into()])
        .await
        .unwrap();
    let ann = t.register("Ann@Example.com").await;
    let ann_id = ann["id"].as_str().unwrap().to_owned();
    let session = t.login("ann@example.com").await;
    let pair = t
        .send(common::password_grant("ann@example.com"))
        .await
        .json();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let refresh = pair["refresh_token"].as_str().unwrap().to_owned();
    let bearer = || Req::get("/v1/me").header("authorization", &format!("Bearer {access}"));

    // Any command takes an email, in any case.
    let (code, out, err) = user(&["roles", "ANN@example.COM", "ops"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ann_id) && out.contains("ops"), "{out}");
    let (code, _, err) = user(&["suspend", "nobody@example.com"], "");
    assert_ne!(code, 0);
    assert!(
        err.contains("nobody@example.com") && err.contains("no user has this email"),
        "{err}"
    );

    // set-password: the new password works, the old one and everything
    // issued before do not.
    let new_password = "a brand new password";
    let (code, out, err) = user(
        &["set-password", "ann@EXAMPLE.com", "--password-stdin"],
        &format!("{new_password}\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ann_id), "{out}");
    assert!(!out.contains(new_password) && !err.contains(new_password));
    wait_for(&t, &session, "/v1/me", StatusCode::UNAUTHORIZED).await;
    wait_for_answer(&t, bearer, StatusCode::UNAUTHORIZED).await;
    t.send(
        Req::post("/v1/token")
            .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_grant");
    t.send(
        Req::post("/v1/sessions")
            .json(serde_json::json!({"email": "ann@example.com", "password": PASSWORD})),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "invalid_credentials");
    let again = t
        .login_with(
            Req::post("/v1/sessions")
                .json(serde_json::json!({"email": "ann@example.com", "password": new_password})),
        )
        .await;
    let (code, _, err) = user(&["set-password", &ann_id, "--password-stdin"], "short\n");
    assert_ne!(code, 0);
    assert!(err.contains("at least 8"), "{err}");

    // The last active admin cannot be deleted (nor suspended) from here.
    let (code, _, err) = user(&["delete", "root@example.com", "--yes"], "");
    assert_ne!(code, 0);
    assert!(err.contains("last active admin"), "{err}");
    let (code, _, err) = user(&["suspend", &root_id], "");
    assert_ne!(code, 0);
    assert!(err.contains("last active admin"), "{err}");

    // delete asks first; without a terminal it wants --yes.
    let (code, _, err) = user(&["delete", "ann@example.com"], "yes\n");
    assert_ne!(code, 0);
    assert!(err.contains("pass --yes"), "{err}");
    assert!(
        t.app.core.user(&ann_id).await.is_ok(),
        "nothing was deleted"
    );
    let (code, out, err) = user(&["delete", "ANN@example.com", "--yes"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&ann_id), "{out}");
    wait_for(&t, &again, "/v1/me", StatusCode::UNAUTHORIZED).await;
    let (code, _, err) = user(&["delete", &ann_id, "--yes"], "");
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");
    let deleted = t
        .app
        .core
        .audit_events(Some("user_deleted"), Some(&ann_id), 10)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].detail["actor"], "cli:opal");
    let reset = t
        .app
        .core
        .audit_events(Some("password_reset"), Some(&ann_id), 10)
        .await
        .unwrap();
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0].detail["actor"], "cli:opal");
    // The email can be registered again.
    t.register("ann@example.com").await;

    cancel.cancel();
    follower.await.unwrap();
}

/// `user create` (the operator vouches: verified), `user set-email` (the
/// new address is the login, verified) and `user invite` (a one-time link
/// that registers only its address, with its roles), with `user list`
/// showing who is verified.
#[tokio::test]
async fn cli_creates_verified_users_changes_emails_and_invites() {
    let t = TestApp::with(&[("registration", "invite")]).await;
    let user = |args: &[&str], stdin: &str| {
        let mut cmd = tessera(&t.db_url);
        cmd.env("USER", "opal").env_remove("LOGNAME");
        cmd.arg("user").args(args);
        run(&mut cmd, stdin)
    };
    let (code, out, err) = user(
        &[
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
            "--json",
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(created["email_verified"], true, "{out}");

    // (Self-registration needs an invitation here: the core makes Bea.)
    let bea_id = t
        .app
        .core
        .register(tessera::core::accounts::NewAccount {
            email: "bea@example.com".into(),
            password: tessera::core::accounts::Password::new(PASSWORD.into()),
            roles: vec![],
        })
        .await
        .unwrap()
        .id;
    let (code, out, err) = user(&["set-email", "BEA@example.com", "Bea.New@Example.com"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&bea_id) && out.contains("Bea.New@Example.com"),
        "{out}"
    );
    let changed = t.app.core.user(&bea_id).await.unwrap();
    assert_eq!(changed.email, "Bea.New@Example.com");
    assert!(changed.email_verified);
    let r = t
        .send(
            Req::post("/v1/sessions")
                .json(serde_json::json!({"email": "bea.new@example.com", "password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let events = t
        .app
        .core
        .audit_events(Some("email_changed"), Some(&bea_id), 10)
        .await
        .unwrap();
    assert_eq!(events[0].detail["actor"], "cli:opal");
    let (code, _, err) = user(&["set-email", &bea_id, "ops@EXAMPLE.com"], "");
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    let (code, out, err) = user(&["list"], "");
    assert_eq!(code, 0, "{err}");
    let row = |email: &str| {
        out.lines()
            .find(|l| l.contains(email))
            .unwrap_or_else(|| panic!("{email} in {out}"))
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_owned()
    };
    assert_eq!(row("ops@example.com"), "yes");
    assert_eq!(row("Bea.New@Example.com"), "yes");

    // An invitation: printed, never mailed, for its address only, once.
    let (code, out, err) = user(
        &["invite", "guest@example.com", "--role", "editor", "--json"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let invited: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    let url = invited["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/register?invitation=", common::ORIGIN)),
        "{url}"
    );
    assert!(invited["expires_at"].as_str().unwrap().ends_with('Z'));
    let token = url.split_once("invitation=").unwrap().1;
    let register = |email: &str| {
        Req::post("/v1/accounts")
            .json(serde_json::json!({"email": email, "password": PASSWORD, "invitation": token}))
    };
    t.send(register("other@example.com"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    let r = t.send(register("Guest@example.com")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.json()["user"]["roles"], serde_json::json!(["editor"]));
    // Handed over, not mailed: the address is not proved by it.
    assert_eq!(r.json()["user"]["email_verified"], false);
    t.send(register("guest@example.com"))
        .await
        .assert_error(StatusCode::FORBIDDEN, "registration_closed");
    let (code, out, err) = user(&["invite", "guest@example.com"], "");
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_bad_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    for (name, value, expect) in [
        (
            "TESSERA_SESSION_IDLE_TIMEOUT",
            "soon",
            "TESSERA_SESSION_IDLE_TIMEOUT",
        ),
        (
            "TESSERA_COOKIE_SAMESITE",
            "sometimes",
            "Lax, Strict or None",
        ),
        ("TESSERA_ADDR", "not-an-address", "TESSERA_ADDR"),
        (
            "TESSERA_SESION_IDLE_TIMEOUT",
            "1h",
            "unknown setting TESSERA_SESION_IDLE_TIMEOUT",
        ),
    ] {
        let (code, _, err) = run(tessera(&db).env(name, value).args(["serve"]), "");
        assert_eq!(code, 2, "{name}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(expect), "{err}");
    }
    assert!(
        !dir.path().join("t.db").exists(),
        "nothing is created on a bad config"
    );
}

#[test]
fn serve_answers_over_tcp_and_stops_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("serve.db").display());
    let mut child = tessera(&db)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let mut buf = [0u8; 256];
        let n = stderr.read(&mut buf).unwrap();
        banner.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&banner);
        // Wait for the whole banner line: reads may split it anywhere.
        if let Some(rest) = text.split("listening on http://").nth(1)
            && let Some((line, _)) = rest.split_once('\n')
            && let Some(addr) = line.split_whitespace().next()
        {
            break addr.to_owned();
        }
        assert!(n > 0 && Instant::now() < deadline, "no banner: {text}");
    };
    let text = String::from_utf8_lossy(&banner).into_owned();
    assert!(text.contains("sqlite://"), "{text}");

    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        dir.path().join("serve.db").exists(),
        "database created on first run"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("tessera stopped"), "{rest}");
}

#[tokio::test]
async fn clients_keys_and_token_inspection_from_the_command_line() {
    let t = TestApp::new().await;
    let cancel = CancellationToken::new();
    let follower = t.app.spawn_background(cancel.clone());

    // A service client made by the CLI authenticates to the running server.
    let (code, out, err) = run(
        tessera(&t.db_url).args(["client", "create", "billing", "--json"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    let client: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = client["client_id"].as_str().unwrap();
    let secret = client["client_secret"].as_str().unwrap();
    assert!(id.starts_with("cli_") && secret.len() == 43);
    t.register("nat@example.com").await;
    let pair = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "nat@example.com"),
            ("password", PASSWORD),
        ]))
        .await
        .json();
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}")
        )
    );
    let r = t
        .send(
            Req::post("/v1/token/introspect")
                .header("authorization", &basic)
                .form(&[("token", &access)]),
        )
        .await;
    assert_eq!(r.json()["active"], true);
    // The secret is stored hashed: the database never contains it.
    let db = common::db::at_rest(&t.db_url);
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()));

    // Keys rotated by the CLI: the server signs with the new key at once.
    let (code, before, _) = run(tessera(&t.db_url).args(["keys", "list"]), "");
    assert_eq!(code, 0);
    assert_eq!(before.lines().count(), 1);
    assert!(before.contains("active"));
    let (code, out, err) = run(tessera(&t.db_url).args(["keys", "rotate"]), "");
    assert_eq!(code, 0, "{err}");
    let new_kid = out.split_whitespace().nth(3).unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pair = t
            .send(Req::post("/v1/token").form(&[
                ("grant_type", "password"),
                ("username", "nat@example.com"),
                ("password", PASSWORD),
            ]))
            .await
            .json();
        let token = pair["access_token"].as_str().unwrap();
        if common::jwt::decode_part(token, 0)["kid"] == new_kid.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server still signs with the old key"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The token signed before the rotation still works.
    let me = t
        .send(Req::get("/v1/me").header("authorization", &format!("Bearer {access}")))
        .await;
    assert_eq!(me.status, StatusCode::OK);
    let (_, after, _) = run(tessera(&t.db_url).args(["keys", "list", "--json"]), "");
    let keys: serde_json::Value = serde_json::from_str(after.trim()).unwrap();
    let statuses: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["active", "retiring"]);

    // Inspection decodes without trusting and lints.
    let (code, out, _) = run(tessera(&t.db_url).args(["token", "inspect", &access]), "");
    assert_eq!(code, 0);
    assert!(out.contains("NOT VERIFIED"));
    assert!(out.contains("EdDSA"));
    assert!(out.contains(&format!("{} bytes", access.len())));
    assert!(out.contains("lifetime 10m"));
    assert!(out.contains("exp: 20"), "{out}");
    assert!(
        out.contains("(expires in 9m") || out.contains("(expires in 10m"),
        "{out}"
    );
    assert!(out.contains("(issued "), "{out}");
    // A danger finding (here: no exp, alg none) makes the exit status fail.
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(br#"{"sub":"usr_1"}"#)
    );
    let (code, out, err) = run(tessera(&t.db_url).args(["token", "inspect", &unsigned]), "");
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("alg is none"), "{out}");
    assert!(err.contains("2 danger finding(s)"), "{err}");
    let (code, _, err) = run(
        tessera(&t.db_url).args(["token", "inspect", "not-a-token"]),
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("not a JWT"), "{err}");

    cancel.cancel();
    follower.await.unwrap();
}

/// The lifecycle of a service client from the command line: listed,
/// disabled and enabled, given a new secret (printed once), deleted; each
/// honoured by the running server at its next request, and audited with
/// the operator as the actor.
#[tokio::test]
async fn service_clients_are_listed_disabled_rotated_and_deleted_from_the_command_line() {
    let t = TestApp::new().await;
    let operator = |cmd: &mut Command| {
        cmd.env("USER", "opal").env_remove("LOGNAME");
    };
    let client = |args: &[&str]| {
        let mut cmd = tessera(&t.db_url);
        operator(&mut cmd);
        cmd.arg("client").args(args);
        run(&mut cmd, "")
    };
    let (code, out, err) = client(&["create", "billing", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let access = t.tokens_for("nat@example.com").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let introspect = |secret: &str| {
        Req::post("/v1/token/introspect")
            .header("authorization", &common::basic_auth(&id, secret))
            .form(&[("token", &access)])
    };
    assert_eq!(t.send(introspect(&secret)).await.json()["active"], true);

    // Listed: one line per client, or the API's JSON shape.
    let (code, out, err) = client(&["list"]);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(
        line.contains("enabled") && line.ends_with("billing"),
        "{line}"
    );
    assert!(!out.contains(&secret));
    let (_, out, _) = client(&["list", "--json"]);
    let listed: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["clients"][0]["client_id"], id.as_str());
    assert_eq!(listed["clients"][0]["name"], "billing");
    assert_eq!(listed["clients"][0]["disabled"], false);
    assert!(listed["clients"][0]["created_at"].is_string());

    // Disabled: the server refuses it at its next request; enabled again.
    let (code, out, err) = client(&["disable", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("disabled {id} (billing)")), "{out}");
    t.send(introspect(&secret))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    let (_, out, _) = client(&["list", "--json"]);
    assert!(out.contains("\"disabled\":true"), "{out}");
    let (code, _, err) = client(&["enable", &id]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(t.send(introspect(&secret)).await.json()["active"], true);

    // A new secret, printed once: the old one is refused at once.
    let (code, out, err) = client(&["rotate-secret", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rotated["client_id"], id.as_str());
    let new_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(new_secret.len(), 43);
    t.send(introspect(&secret))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    assert_eq!(t.send(introspect(&new_secret)).await.json()["active"], true);
    let (code, out, err) = client(&["rotate-secret", &id]);
    assert_eq!(code, 0, "{err}");
    let third = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret:"))
        .expect("the secret printed")
        .trim()
        .to_owned();
    assert_eq!(third.len(), 43);
    assert!(!err.contains(&third), "the secret only on standard output");
    assert_eq!(t.send(introspect(&third)).await.json()["active"], true);

    // Deleted: refused; a second delete, or any change, says there is none.
    let (code, out, err) = client(&["delete", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("deleted {id} (billing)")), "{out}");
    t.send(introspect(&third))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid_client");
    for args in [
        vec!["delete", id.as_str()],
        vec!["disable", id.as_str()],
        vec!["enable", "cli_nope"],
        vec!["rotate-secret", "cli_nope"],
    ] {
        let (code, out, err) = client(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains("no such client"), "{args:?}: {err}");
        assert!(!out.contains("client_secret"), "{args:?}");
    }
    let (code, out, err) = client(&["list"]);
    assert_eq!(code, 0);
    assert!(out.trim().is_empty(), "{out}");
    assert!(err.contains("no service clients"), "{err}");

    // Audited with the operator as the actor, never with a secret.
    let events = t.app.core.audit_events(None, None, 50).await.unwrap();
    let mine: Vec<_> = events
        .iter()
        .filter(|e| e.event_type.starts_with("client_"))
        .collect();
    let mut changes: Vec<&str> = mine
        .iter()
        .map(|e| e.detail["change"].as_str().unwrap_or(e.event_type.as_str()))
        .collect();
    changes.sort_unstable();
    assert_eq!(
        changes,
        [
            "client_created",
            "deleted",
            "disabled",
            "enabled",
            "secret_rotated",
            "secret_rotated"
        ]
    );
    for e in &mine {
        assert_eq!(e.detail["actor"], "cli:opal", "{e:?}");
        assert_eq!(e.detail["client_id"], id.as_str());
        assert_eq!(e.user_id, None);
        let text = e.detail.to_string();
        for s in [&secret, &new_secret, &third] {
            assert!(!text.contains(s.as_str()));
        }
    }
    // A user name the environment makes up is not taken as one.
    let (code, out, _) = run(
        tessera(&t.db_url)
            .env("USER", "opal\nforged")
            .env_remove("LOGNAME")
            .args(["client", "create", "other", "--json"]),
        "",
    );
    assert_eq!(code, 0);
    let other: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let events = t
        .app
        .core
        .audit_events(Some("client_created"), None, 10)
        .await
        .unwrap();
    let event = events
        .iter()
        .find(|e| e.detail["client_id"] == other["client_id"])
        .unwrap();
    assert_eq!(event.detail["actor"], "cli");

    // Every argument is explained.
    let (code, help, _) = run(tessera(&t.db_url).args(["client", "--help"]), "");
    assert_eq!(code, 0);
    for command in [
        "create",
        "list",
        "disable",
        "enable",
        "delete",
        "rotate-secret",
    ] {
        assert!(help.contains(command), "{help}");
    }
    for (command, words) in [
        ("create", &["<NAME>", "--json"][..]),
        ("list", &["--json"][..]),
        ("disable", &["<ID>", "cli_"][..]),
        ("enable", &["<ID>", "cli_"][..]),
        ("delete", &["<ID>", "cli_"][..]),
        ("rotate-secret", &["<ID>", "cli_", "--json"][..]),
    ] {
        let (code, help, _) = run(tessera(&t.db_url).args(["client", command, "--help"]), "");
        assert_eq!(code, 0, "{command}");
        for line in help
            .lines()
            .filter(|l| l.trim_start().starts_with(['<', '-']))
        {
            let described = line.split_whitespace().count() > 1;
            assert!(
                described,
                "client {command}: an argument without help: {line}\n{help}"
            );
        }
        for word in words {
            assert!(help.contains(word), "client {command}: {word}\n{help}");
        }
    }
}

/// A CLI command run with a different `TESSERA_TOKEN_ALG` than the server's
/// must not replace the server's signing key.
#[tokio::test]
async fn a_stray_token_alg_on_a_cli_command_leaves_the_signing_key_alone() {
    let t = TestApp::new().await;
    let before = t.app.core.key_list().await.unwrap();
    let (code, _, err) = run(
        tessera(&t.db_url)
            .env("TESSERA_TOKEN_ALG", "ES256")
            .args(["user", "list"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(t.app.core.key_list().await.unwrap().len(), before.len());
    t.app.core.reload_keys().await.unwrap();
    t.register("ivy@example.com").await;
    let r = t
        .send(Req::post("/v1/token").form(&[
            ("grant_type", "password"),
            ("username", "ivy@example.com"),
            ("password", PASSWORD),
        ]))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[test]
fn config_show_names_every_source_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let config = dir.path().join("tessera.toml");
    std::fs::write(&config, "session_idle_timeout = \"1h\"\n").unwrap();
    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    let (code, out, err) = run(
        tessera(&db)
            .env("TESSERA_TOKEN_ALG", "HS256")
            .env("TESSERA_HS256_SECRET", secret)
            .args(["--config", config.to_str().unwrap(), "config", "show"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(secret), "secret printed");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .to_owned()
    };
    assert!(
        line("session_idle_timeout").contains("1h")
            && line("session_idle_timeout").contains("TOML file")
    );
    assert!(line("token_alg").contains("HS256") && line("token_alg").contains("environment"));
    assert!(line("hs256_secret").contains("[redacted]"));
    assert!(
        line("access_token_ttl").contains("10m") && line("access_token_ttl").contains("default")
    );
    assert!(line("database_url").contains("environment"));
}

#[test]
fn doctor_exits_non_zero_on_danger_and_explains_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let (code, out, err) = run(tessera(&db).args(["doctor"]), "");
    assert_eq!(code, 0, "defaults on localhost are fine: {out}{err}");
    assert!(out.contains("0 dangerous"));
    let (code, out, _) = run(
        tessera(&db)
            .env("TESSERA_PUBLIC_URL", "http://auth.example.com")
            .env("TESSERA_COOKIE_SECURE", "false")
            .env("TESSERA_ACCESS_TOKEN_TTL", "2h")
            .args(["doctor"]),
        "",
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("danger") && out.contains("fix:"), "{out}");
    assert!(out.contains("COOKIE_SECURE=false"));
    assert!(out.contains("access tokens live 2h"));
}

#[test]
fn the_annotated_example_config_documents_every_setting_and_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tessera.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    for (key, _, _) in tessera::config::SETTINGS {
        assert!(
            text.lines().any(
                |l| l.trim_start_matches("# ").starts_with(&format!("{key} ="))
                    || l.contains(&format!("{key} is"))
            ),
            "tessera.example.toml does not document {key}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("x.db").display());
    let (code, out, err) = run(tessera(&db).args(["--config", path, "config", "show"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TOML file"));
}

/// A setting's error names where to fix it: the file (whole path) for a
/// file key, the flag for a flag's value; one line, exit status 2, and
/// nothing created.
#[test]
fn config_errors_name_the_file_or_the_flag_that_gave_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.db");
    let db = format!("sqlite://{}", path.display());
    let config = dir.path().join("tessera.toml");
    let refused = |cmd: &mut Command, expect: &[&str]| {
        let (code, _, err) = run(cmd, "");
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for needle in expect {
            assert!(err.contains(needle), "{needle:?} not in: {err}");
        }
    };
    let file = format!("TOML file {}", config.display());

    std::fs::write(&config, "session_idle_timeout = \"soon\"\n").unwrap();
    refused(
        tessera(&db).args(["--config", config.to_str().unwrap(), "serve"]),
        &[
            "TESSERA_SESSION_IDLE_TIMEOUT",
            &format!("(from {file})"),
            "\"soon\"",
        ],
    );
    std::fs::write(&config, "sesion_idle_timeout = \"1h\"\n").unwrap();
    refused(
        tessera(&db).args(["--config", config.to_str().unwrap(), "serve"]),
        &[&format!("unknown key sesion_idle_timeout ({file})")],
    );
    // The file found in the working directory is named by its whole path.
    std::fs::write(&config, "addr = \"nowhere\"\n").unwrap();
    refused(
        tessera(&db).current_dir(dir.path()).args(["serve"]),
        &[
            "TESSERA_ADDR",
            &format!(
                "(from TOML file {}",
                dir.path()
                    .canonicalize()
                    .unwrap()
                    .join("tessera.toml")
                    .display()
            ),
        ],
    );
    refused(
        tessera(&db).args(["serve", "--addr", "nowhere"]),
        &[
            "TESSERA_ADDR (from command-line flag --addr)",
            "\"nowhere\"",
        ],
    );
    refused(
        tessera(&db).args(["serve", "--public-url", "ftp://example.com"]),
        &["(from command-line flag --public-url)"],
    );
    refused(
        tessera(&db).args(["--database-url", "mysql://example.com/db", "user", "list"]),
        &["(from command-line flag --database-url)"],
    );
    assert!(!path.exists(), "nothing is created on a bad setting");
}

#[test]
fn config_show_shows_an_unset_secret_as_unset() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("u.db").display());
    let (code, out, err) = run(tessera(&db).args(["config", "show"]), "");
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("hs256_secret "))
        .unwrap_or_else(|| panic!("no hs256_secret in {out}"));
    assert!(
        line.contains("(unset)") && line.contains("default") && !line.contains("redacted"),
        "{line}"
    );
    assert!(!out.contains("[redacted]"), "nothing secret is set: {out}");
}

/// An HS256 secret configured while tokens are signed with another
/// algorithm signs nothing: reported as a warning (what runs is safe, only
/// not what the operator seems to expect), by `config show`, the doctor
/// and `serve`'s start-up log.
#[test]
fn an_hs256_secret_with_another_algorithm_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let db = format!("sqlite://{}", path.display());
    let secret = "an-hs256-secret-of-at-least-32-bytes!";
    // ES256 signs; the HS256 secret is left over.
    let with = || {
        let mut cmd = tessera(&db);
        cmd.env("TESSERA_TOKEN_ALG", "ES256")
            .env("TESSERA_HS256_SECRET", secret);
        cmd
    };
    let warning = "TESSERA_HS256_SECRET is set";
    let (code, out, err) = run(with().args(["config", "show"]), "");
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(warning)
            && err.contains("TESSERA_TOKEN_ALG is ES256")
            && err.contains("not used"),
        "{err}"
    );
    assert!(!out.contains(secret) && !err.contains(secret));

    let (code, out, err) = run(with().args(["doctor"]), "");
    assert_eq!(code, 0, "a warning, not a danger: {out}{err}");
    assert!(out.contains(&format!("warning: {warning}")), "{out}");
    assert!(out.contains("unset TESSERA_HS256_SECRET"), "{out}");

    let mut child = with()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut text = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut buf = [0u8; 256];
        let n = stderr.read(&mut buf).unwrap();
        text.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&text).contains("listening on") {
            break;
        }
        assert!(
            n > 0 && Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&text)
        );
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    stderr.read_to_end(&mut text).unwrap();
    assert!(child.wait().unwrap().success());
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find(|l| l.contains(warning))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(!text.contains(secret));

    // HS256 itself, with its secret: nothing to report.
    let (code, _, err) = run(
        tessera(&db)
            .env("TESSERA_TOKEN_ALG", "HS256")
            .env("TESSERA_HS256_SECRET", secret)
            .args(["config", "show"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(warning), "{err}");
}

/// Splits CSV text (RFC 4180: quoted fields, doubled quotes, line breaks
/// inside quotes) into rows of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "an unterminated quoted field");
    assert!(
        field.is_empty() && row.is_empty(),
        "the last row ends with a newline"
    );
    rows
}

/// `audit export` output as JSON lines.
fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn audit_export_writes_every_matching_event_oldest_first_as_jsonl_or_csv() {
    let t = TestApp::new().await;
    let start = t.app.core.now();
    let pat = t.signed_in("pat@example.com").await;
    // Events ten days and two hours ago (the server's clock, then back).
    t.clock.set(start - time::Duration::days(10));
    t.app.core.logout_all(&pat.user_id).await.unwrap();
    t.clock.set(start - time::Duration::hours(2));
    t.app.core.logout_all(&pat.user_id).await.unwrap();
    t.clock.set(start);
    // An event of 2020 whose user agent and detail need CSV quoting (and a
    // user agent a spreadsheet would take for a formula), and 1200 events
    // of 2020: more than two pages of the export.
    common::db::execute(
        &t.db_url,
        r#"INSERT INTO audit_events (id, at, type, user_id, ip, user_agent, detail)
           VALUES ('evt_csv', 1577836800000, 'login_failed', NULL, '192.0.2.9',
                   '=HYPERLINK("http://x.example")', '{"note": "a, \"quoted\"\nline"}')"#,
    )
    .await;
    common::db::execute(
        &t.db_url,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200)
         INSERT INTO audit_events (id, at, type, user_id, ip, user_agent, detail)
         SELECT 'evt_bulk' || (100000 + i), 1577836800000 + i, 'token_revoked', NULL, NULL, NULL, '{}'
         FROM n",
    )
    .await;
    let stored = t.app.core.audit_events(None, None, 5000).await.unwrap();

    // Everything, oldest first, as JSON lines (the API's event shape).
    let (code, out, err) = run(tessera(&t.db_url).args(["audit", "export"]), "");
    assert_eq!(code, 0, "{err}");
    let events = json_lines(&out);
    assert_eq!(events.len(), stored.len());
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut newest_first: Vec<&str> = stored.iter().map(|e| e.id.as_str()).collect();
    newest_first.reverse();
    assert_eq!(ids, newest_first, "the reverse of the API's order");
    assert_eq!(ids[0], "evt_csv");
    assert_eq!(ids[1], "evt_bulk100001");
    assert_eq!(ids[1200], "evt_bulk101200");
    assert_eq!(events[0]["at"], "2020-01-01T00:00:00Z");
    assert_eq!(events[0]["type"], "login_failed");
    assert_eq!(events[0]["detail"]["note"], "a, \"quoted\"\nline");
    assert_eq!(events[1201]["type"], "logout_all");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "no event twice");

    // --type and a relative --since: the logout two hours ago, not the one
    // ten days ago.
    let (code, out, err) = run(
        tessera(&t.db_url).args(["audit", "export", "--since", "7d", "--type", "logout_all"]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    let events = json_lines(&out);
    assert_eq!(events.len(), 1, "{out}");
    assert_eq!(events[0]["user_id"], pat.user_id.as_str());
    let (code, out, _) = run(
        tessera(&t.db_url).args(["audit", "export", "--since", "30d", "--type", "logout_all"]),
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out).len(), 2);
    // Every page of a type that spans several.
    let (code, out, _) = run(
        tessera(&t.db_url).args(["audit", "export", "--type", "token_revoked"]),
        "",
    );
    assert_eq!(code, 0);
    let bulk = json_lines(&out);
    assert_eq!(bulk.len(), 1200);
    assert!(
        bulk.windows(2)
            .all(|w| w[0]["id"].as_str() < w[1]["id"].as_str())
    );

    // CSV with an RFC 3339 --since: a header row, then quoted fields that
    // read back to the event.
    let (code, out, err) = run(
        tessera(&t.db_url).args([
            "audit",
            "export",
            "--format",
            "csv",
            "--since",
            "2019-12-31T23:00:00Z",
            "--type",
            "login_failed",
        ]),
        "",
    );
    assert_eq!(code, 0, "{err}");
    let rows = parse_csv(&out);
    assert_eq!(
        rows[0],
        ["id", "at", "type", "user_id", "ip", "user_agent", "detail"]
    );
    assert_eq!(rows.len(), 2, "{out}");
    let row = &rows[1];
    assert_eq!(row[0], "evt_csv");
    assert_eq!(row[1], "2020-01-01T00:00:00Z");
    assert_eq!(row[2], "login_failed");
    assert_eq!(row[3], "");
    assert_eq!(row[4], "192.0.2.9");
    assert_eq!(row[5], "'=HYPERLINK(\"http://x.example\")", "not a formula");
    let detail: serde_json::Value = serde_json::from_str(&row[6]).unwrap();
    assert_eq!(detail, serde_json::json!({"note": "a, \"quoted\"\nline"}));
    // A --since after everything: nothing (CSV: the header only).
    let (code, out, _) = run(
        tessera(&t.db_url).args(["audit", "export", "--since", "2999-01-01T00:00:00Z"]),
        "",
    );
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = run(
        tessera(&t.db_url).args([
            "audit",
            "export",
            "--since",
            "2999-01-01T00:00:00Z",
            "--format",
            "csv",
        ]),
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(out, "id,at,type,user_id,ip,user_agent,detail\n");

    // Usage mistakes: exit 2, saying what is accepted.
    let (code, _, err) = run(
        tessera(&t.db_url).args(["audit", "export", "--type", "login_success"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("login_succeeded"), "{err}");
    let (code, _, err) = run(
        tessera(&t.db_url).args(["audit", "export", "--since", "yesterday"]),
        "",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RFC 3339") && err.contains("24h"), "{err}");
}

#[tokio::test]
async fn cli_actions_are_audited_with_the_operator_and_user_list_has_a_header() {
    let t = TestApp::new().await;
    let pat = t.signed_in("pat@example.com").await;
    let cli = || {
        let mut cmd = tessera(&t.db_url);
        cmd.env("USER", "opsbot").env_remove("LOGNAME");
        cmd
    };
    let (code, _, err) = run(cli().args(["user", "revoke", "pat@example.com"]), "");
    assert_eq!(code, 0, "{err}");
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&pat.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["actor"], "cli:opsbot");

    let (code, _, err) = run(cli().args(["keys", "rotate", "--retire-previous"]), "");
    assert_eq!(code, 0, "{err}");
    let events = t
        .app
        .core
        .audit_events(Some("key_rotated"), None, 10)
        .await
        .unwrap();
    let rotated = events
        .iter()
        .find(|e| e.detail["actor"] == "cli:opsbot")
        .unwrap_or_else(|| panic!("no rotation by the operator: {events:?}"));
    assert_eq!(rotated.user_id, None);
    assert_eq!(rotated.detail["previous_retired_now"], true);

    let (code, _, err) = run(cli().args(["sessions", "revoke-all", "--yes"]), "");
    assert_eq!(code, 0, "{err}");
    let events = t
        .app
        .core
        .audit_events(Some("logout_all"), Some(&pat.user_id), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.detail["actor"] == "cli:opsbot"));

    // `user list`: a header row, then a user a line; --json stays JSON.
    let (code, out, err) = run(cli().args(["user", "list"]), "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["ID", "EMAIL", "STATUS", "VERIFIED", "ROLES"]);
    assert!(lines[1].starts_with(&pat.user_id) && lines[1].contains("pat@example.com"));
    assert_eq!(
        lines[1].find("pat@example.com"),
        lines[0].find("EMAIL"),
        "columns line up: {out}"
    );
    let (code, out, _) = run(cli().args(["user", "list", "--json"]), "");
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(list["users"][0]["id"], pat.user_id.as_str());
}

/// Every argument and flag of every command says what it is for in
/// `--help` (clap's own `--help` and `--version` aside).
#[test]
fn every_argument_of_every_command_has_help_text() {
    use clap::CommandFactory;
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        if cmd.get_about().is_none() && !path.is_empty() {
            missing.push(format!("{path} (the command itself)"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut cli = tessera::cli::Cli::command();
    cli.build();
    let mut missing = Vec::new();
    walk(&cli, "", &mut missing);
    assert!(missing.is_empty(), "without help text: {missing:#?}");
    // The walk reaches the commands (it is not vacuous).
    let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
    assert!(
        names.contains(&"user") && names.contains(&"audit"),
        "{names:?}"
    );
    let user = cli.find_subcommand("user").unwrap();
    assert!(
        user.find_subcommand("list")
            .unwrap()
            .get_arguments()
            .any(|a| a.get_id() == "json")
    );
}
