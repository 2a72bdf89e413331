//! The store conformance suite: every guarantee written on the store traits
//! (`tessera::store`), checked against every backend.
//!
//! Each check is a plain async function taking a [`Backend`] factory; the
//! `conformance!` macro at the end turns every check into one test per
//! backend. A new backend adds a [`Backend`] variant and one macro line.
//! Where a guarantee is about several nodes, the check opens the same
//! database twice: two independent store handles (pools, batchers,
//! listeners), exactly as two `tessera` processes would have.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::json;
use tempfile::TempDir;
use tessera::core::accounts::{User, UserQuery, UserStatus};
use tessera::core::audit::{AuditEvent, AuditExportQuery, AuditQuery};
use tessera::core::clients::ServiceClient;
use tessera::core::events::{Change, ChangeListener};
use tessera::core::keys::{StoredKey, TokenAlg};
use tessera::core::refresh::{NewRefreshToken, RefreshFamily, Rotation};
use tessera::core::revocation::Revocation;
use tessera::core::secret::SecretHash;
use tessera::core::sessions::SessionRecord;
use tessera::store::cache::CachingUserStore;
use tessera::store::{
    DeviceSighting, Invitation, LinkToken, Push, StoreError, StoreOptions, Stores, UserStore,
    UserWrite,
};
use time::{Duration, OffsetDateTime};
use tokio::sync::Barrier;

/// The store configurations under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL with sessions and the push in Redis.
    PostgresRedis,
}

impl Backend {
    /// Whether the backend pushes change-log appends (`subscribe`).
    fn pushes(self) -> bool {
        match self {
            Backend::Sqlite => false,
            Backend::Postgres | Backend::PostgresRedis => true,
        }
    }
}

/// A fresh, empty database of one backend (and, with Redis, a key prefix
/// of its own on the shared Redis), and handles ("nodes") on it.
struct Fixture {
    url: String,
    options: StoreOptions,
    _dir: TempDir,
    /// The first node, opened with the fixture.
    a: Stores,
}

impl Fixture {
    async fn new(backend: Backend) -> Self {
        Self::with(backend, StoreOptions::default()).await
    }

    async fn with(backend: Backend, mut options: StoreOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("t.db").display()),
            Backend::Postgres | Backend::PostgresRedis => {
                common::postgres::fresh_postgres_url().await
            }
        };
        if backend == Backend::PostgresRedis {
            options.redis = Some(tessera::store::redis::RedisOptions {
                url: common::redis::shared_redis_url().await,
                key_prefix: common::redis::fresh_prefix(),
                tls: Default::default(),
                timeout: std::time::Duration::from_secs(1),
            });
        }
        let a = open(&url, &options).await;
        Self {
            url,
            options,
            _dir: dir,
            a,
        }
    }

    /// Another node on the same database (and Redis).
    async fn node(&self) -> Stores {
        open(&self.url, &self.options).await
    }
}

async fn open(url: &str, options: &StoreOptions) -> Stores {
    tessera::store::open(url, options)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn ms(n: i64) -> Duration {
    Duration::milliseconds(n)
}

fn user(id: &str) -> User {
    User {
        id: id.into(),
        email: format!("{id}@example.com"),
        roles: vec![],
        status: UserStatus::Active,
        email_verified: false,
        created_at: t0(),
    }
}

async fn add_user(s: &Stores, id: &str) {
    let u = user(id);
    s.users
        .insert_user(&u, &u.email, "$argon2id$stub")
        .await
        .unwrap();
}

/// A hash nobody else in the test uses.
fn fresh_hash() -> SecretHash {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).unwrap();
    SecretHash(bytes)
}

/// A session hash for `user_id`, with the user's tag (which every store
/// accepts, and a store that groups sessions by user requires).
fn session_hash(user_id: &str) -> SecretHash {
    let tag = tessera::core::secret::session_tag(user_id);
    loop {
        let h = fresh_hash();
        if h.0[0] == tag {
            return h;
        }
    }
}

fn session(user_id: &str, id: &str, at: OffsetDateTime) -> SessionRecord {
    SessionRecord {
        token_hash: session_hash(user_id),
        id: id.into(),
        user_id: user_id.into(),
        created_at: at,
        last_seen_at: at,
        expires_at: at + Duration::days(1),
        ip: Some("192.0.2.1".into()),
        user_agent: Some("conformance".into()),
        user_memo: Default::default(),
    }
}

fn event(id: &str, event_type: &str, user_id: Option<&str>, at: OffsetDateTime) -> AuditEvent {
    AuditEvent {
        id: id.into(),
        at,
        event_type: event_type.into(),
        user_id: user_id.map(str::to_owned),
        ip: Some("192.0.2.1".into()),
        user_agent: None,
        detail: json!({"k": id}),
    }
}

/// A family of `user_id` and its first token (valid for a day from t0).
async fn add_family(s: &Stores, id: &str, user_id: &str) -> SecretHash {
    let family = RefreshFamily {
        id: id.into(),
        user_id: user_id.into(),
        client_id: "tessera".into(),
        scope: Some("read".into()),
        created_at: t0(),
        revoked_at: None,
    };
    let first = NewRefreshToken {
        hash: fresh_hash(),
        family_id: id.into(),
        created_at: t0(),
        expires_at: t0() + Duration::days(1),
    };
    s.refresh.create_family(&family, &first).await.unwrap();
    first.hash
}

async fn rotate(s: &Stores, presented: &SecretHash, next: &SecretHash, now_ms: i64) -> Rotation {
    let now = t0() + ms(now_ms);
    s.refresh
        .rotate_refresh(
            presented,
            next,
            now + Duration::days(1),
            now,
            event(
                &format!("evt_rot_{}", hex(next)),
                "refresh_rotated",
                None,
                now,
            ),
        )
        .await
        .unwrap()
}

fn hex(h: &SecretHash) -> String {
    h.0.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn key(kid: &str, created_at: OffsetDateTime) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: TokenAlg::EdDSA,
        private_pkcs8: Some(zeroize::Zeroizing::new(vec![7; 48])),
        public_jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": kid, "kid": kid}),
        created_at,
        rotated_out_at: None,
    }
}

async fn audit_all(s: &Stores) -> Vec<AuditEvent> {
    s.audit
        .audit_events(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

// --- users ---------------------------------------------------------------

/// An email key is taken once: a duplicate is `Conflict`, and of racing
/// inserts on two nodes exactly one succeeds.
async fn users_are_unique_by_email_key(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    let mut dup = user("usr_other");
    dup.email = "usr_a@example.com".into();
    assert!(matches!(
        f.a.users.insert_user(&dup, &dup.email, "h").await,
        Err(StoreError::Conflict)
    ));

    let barrier = Arc::new(Barrier::new(8));
    let mut racers = Vec::new();
    for i in 0..8 {
        let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            let mut u = user(&format!("usr_race{i}"));
            u.email = "race@example.com".into();
            barrier.wait().await;
            node.users.insert_user(&u, "race@example.com", "h").await
        }));
    }
    let mut ok = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict) => {}
            Err(e) => panic!("racing insert failed otherwise: {e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one racing insert wins");
    let found = b
        .users
        .credentials_by_email("race@example.com")
        .await
        .unwrap();
    assert!(found.is_some());
}

/// Listing matches the email literally (`%`, `_` and `\` are not
/// wildcards), in id order, a page at a time.
async fn users_are_listed_literally_in_pages(backend: Backend) {
    let f = Fixture::new(backend).await;
    for (id, email) in [
        ("usr_1", "a%b@example.com"),
        ("usr_2", "a_b@example.com"),
        ("usr_3", "axb@example.com"),
        ("usr_4", "back\\slash@example.com"),
    ] {
        let mut u = user(id);
        u.email = email.into();
        f.a.users.insert_user(&u, email, "h").await.unwrap();
    }
    let list = |contains: Option<&str>, after: Option<&str>, limit: u32| {
        let q = UserQuery {
            email_contains: contains.map(str::to_owned),
            limit,
            after_id: after.map(str::to_owned),
        };
        let users = f.a.users.clone();
        async move {
            users
                .list_users(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some("%"), None, 10).await, ["usr_1"]);
    assert_eq!(list(Some("_"), None, 10).await, ["usr_2"]);
    assert_eq!(list(Some("\\"), None, 10).await, ["usr_4"]);
    assert_eq!(list(Some("A%B"), None, 10).await, ["usr_1"], "case-folded");
    assert_eq!(list(None, None, 2).await, ["usr_1", "usr_2"]);
    assert_eq!(list(None, Some("usr_2"), 2).await, ["usr_3", "usr_4"]);
    assert!(list(None, Some("usr_4"), 2).await.is_empty());
}

/// Updates are visible to every node at once; an unknown user is `false`
/// (`NoSuchUser` for the guarded writes).
async fn user_updates_reach_every_node(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    let at = t0() + ms(5);
    assert_eq!(
        f.a.users
            .set_roles("usr_a", &["admin".into()], None, at)
            .await
            .unwrap(),
        UserWrite::Done
    );
    assert_eq!(
        f.a.users
            .set_status("usr_a", UserStatus::Suspended, None, at)
            .await
            .unwrap(),
        UserWrite::Done
    );
    assert!(
        f.a.users
            .set_password_hash("usr_a", "$new", at)
            .await
            .unwrap()
    );
    let seen = b.users.user_by_id("usr_a").await.unwrap().unwrap();
    assert_eq!(seen.roles, ["admin"]);
    assert_eq!(seen.status, UserStatus::Suspended);
    assert_eq!(seen.created_at, t0());
    assert_eq!(
        b.users.password_hash("usr_a").await.unwrap().as_deref(),
        Some("$new")
    );
    for unknown in [
        f.a.users
            .set_roles("usr_x", &[], Some("admin"), at)
            .await
            .unwrap(),
        f.a.users
            .set_status("usr_x", UserStatus::Active, Some("admin"), at)
            .await
            .unwrap(),
        f.a.users.delete_user("usr_x", Some("admin")).await.unwrap(),
    ] {
        assert_eq!(unknown, UserWrite::NoSuchUser);
    }
    assert!(!f.a.users.set_password_hash("usr_x", "h", at).await.unwrap());
    assert!(b.users.user_by_id("usr_x").await.unwrap().is_none());
}

/// A backend makes no generation promise (`None`); the cache in front of
/// any backend moves its generation on every invalidation and only then.
async fn generation_moves_on_invalidation_only(backend: Backend) {
    let f = Fixture::new(backend).await;
    add_user(&f.a, "usr_a").await;
    assert_eq!(f.a.users.generation(), None);
    let cached = CachingUserStore::new(Arc::clone(&f.a.users), 100);
    let g0 = cached.generation().unwrap();
    cached.user_by_id("usr_a").await.unwrap();
    cached.user_by_id("usr_a").await.unwrap();
    assert_eq!(cached.generation(), Some(g0), "reads leave it alone");
    cached
        .set_roles("usr_a", &["admin".into()], None, t0())
        .await
        .unwrap();
    let g1 = cached.generation().unwrap();
    assert!(g1 > g0);
    assert_eq!(
        cached.user_by_id("usr_a").await.unwrap().unwrap().roles,
        ["admin"]
    );
    // A change made through another node reaches the cache as an event.
    let b = f.node().await;
    b.users
        .set_status("usr_a", UserStatus::Suspended, None, t0())
        .await
        .unwrap();
    cached.on_change(&Change::UserChanged {
        user_id: "usr_a".into(),
    });
    assert!(cached.generation().unwrap() > g1);
    assert_eq!(
        cached.user_by_id("usr_a").await.unwrap().unwrap().status,
        UserStatus::Suspended
    );
}

/// A user with roles and a status (and the email `<id>@example.com`).
async fn add_holder(s: &Stores, id: &str, roles: &[&str], status: UserStatus) {
    let mut u = user(id);
    u.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    u.status = status;
    s.users
        .insert_user(&u, &u.email, "$argon2id$stub")
        .await
        .unwrap();
}

async fn roles_of(s: &Stores, id: &str) -> Option<(Vec<String>, UserStatus)> {
    let u = s.users.user_by_id(id).await.unwrap()?;
    Some((u.roles.clone(), u.status))
}

/// The last active holder of the kept role cannot lose it by any write
/// (roles, status, deletion), and a refused write changes nothing; a
/// suspended holder does not count, a second active one lets the first
/// go, and without `keep` nothing is guarded.
async fn the_last_active_holder_of_a_kept_role_stays(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let keep = Some("admin");
    add_holder(&f.a, "usr_a", &["admin", "ops"], UserStatus::Active).await;
    add_holder(&f.a, "usr_s", &["admin"], UserStatus::Suspended).await;
    add_holder(&f.a, "usr_p", &["ops"], UserStatus::Active).await;
    let at = t0() + ms(1);
    let users = &b.users;
    assert_eq!(
        users
            .set_roles("usr_a", &["ops".into()], keep, at)
            .await
            .unwrap(),
        UserWrite::LastHolder
    );
    assert_eq!(
        users
            .set_status("usr_a", UserStatus::Suspended, keep, at)
            .await
            .unwrap(),
        UserWrite::LastHolder
    );
    assert_eq!(
        users.delete_user("usr_a", keep).await.unwrap(),
        UserWrite::LastHolder
    );
    assert_eq!(
        roles_of(&f.a, "usr_a").await,
        Some((vec!["admin".into(), "ops".into()], UserStatus::Active)),
        "a refused write changes nothing"
    );
    // Writes that keep the holding, or concern others, go through.
    for write in [
        users
            .set_roles("usr_a", &["ops".into(), "admin".into()], keep, at)
            .await
            .unwrap(),
        users
            .set_status("usr_a", UserStatus::Active, keep, at)
            .await
            .unwrap(),
        users.set_roles("usr_s", &[], keep, at).await.unwrap(),
        users
            .set_status("usr_p", UserStatus::Suspended, keep, at)
            .await
            .unwrap(),
        users.delete_user("usr_p", keep).await.unwrap(),
        // Another role is not guarded by this one.
        users
            .set_roles("usr_a", &["admin".into()], keep, at)
            .await
            .unwrap(),
    ] {
        assert_eq!(write, UserWrite::Done);
    }
    // A suspended holder is no holder: reactivating one is a second.
    users
        .set_roles("usr_s", &["admin".into()], keep, at)
        .await
        .unwrap();
    assert_eq!(
        users.delete_user("usr_a", keep).await.unwrap(),
        UserWrite::LastHolder
    );
    assert_eq!(
        users
            .set_status("usr_s", UserStatus::Active, keep, at)
            .await
            .unwrap(),
        UserWrite::Done
    );
    assert_eq!(
        users.set_roles("usr_a", &[], keep, at).await.unwrap(),
        UserWrite::Done
    );
    assert_eq!(
        f.a.users.delete_user("usr_s", keep).await.unwrap(),
        UserWrite::LastHolder,
        "now usr_s is the last one"
    );
    assert_eq!(
        f.a.users.delete_user("usr_s", None).await.unwrap(),
        UserWrite::Done,
        "without keep, nothing is guarded"
    );
    assert!(b.users.user_by_id("usr_s").await.unwrap().is_none());
}

/// Racing writes that each take the role from one of the last two active
/// holders, on two nodes: exactly one succeeds, every round, whatever the
/// mix of writes.
async fn racing_removals_of_the_last_two_holders_leave_one(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let keep = Some("admin");
    for round in 0..12 {
        let (x, y) = (format!("usr_x{round}"), format!("usr_y{round}"));
        add_holder(&f.a, &x, &["admin"], UserStatus::Active).await;
        add_holder(&f.a, &y, &["admin"], UserStatus::Active).await;
        // Earlier rounds' survivors stop holding it (without a guard).
        if round > 0 {
            for id in [format!("usr_x{}", round - 1), format!("usr_y{}", round - 1)] {
                f.a.users.set_roles(&id, &[], None, t0()).await.unwrap();
            }
        }
        let barrier = Arc::new(Barrier::new(2));
        let racers = [(f.a.clone(), x.clone()), (b.clone(), y.clone())].map(|(node, id)| {
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                match round % 3 {
                    0 => node.users.set_roles(&id, &[], keep, t0()).await,
                    1 => {
                        node.users
                            .set_status(&id, UserStatus::Suspended, keep, t0())
                            .await
                    }
                    _ => node.users.delete_user(&id, keep).await,
                }
            })
        });
        let mut outcomes = Vec::new();
        for r in racers {
            outcomes.push(r.await.unwrap().unwrap());
        }
        outcomes.sort_by_key(|o| *o == UserWrite::Done);
        assert_eq!(
            outcomes,
            [UserWrite::LastHolder, UserWrite::Done],
            "round {round}"
        );
    }
}

/// Deleting a user: gone on every node with its refresh families (and the
/// sessions the database holds), its email key free again, and its audit
/// events keeping their id while losing every spelling of the email, in
/// detail (keys and values, at any depth) and user agent; other users'
/// events are untouched.
async fn deleting_a_user_forgets_its_email_and_frees_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let mut alice = user("usr_a");
    alice.email = "Alice.Ünal@Example.com".into();
    let key = "alice.ünal@example.com";
    f.a.users
        .insert_user(&alice, key, "$argon2id$a")
        .await
        .unwrap();
    add_user(&f.a, "usr_b").await;
    let session = session("usr_a", "ses_a", t0());
    f.a.sessions.insert_session(&session, None).await.unwrap();
    let refresh = add_family(&f.a, "fam_a", "usr_a").await;

    let mut mine = event("evt_1", "user_created", Some("usr_a"), t0());
    mine.detail = json!({"email": "Alice.Ünal@Example.com", "roles": [], "actor": "usr_b"});
    let mut shouting = event("evt_2", "invited", Some("usr_a"), t0() + ms(1));
    shouting.detail = json!({"to": {"list": ["x", "sent to ALICE.ÜNAL@EXAMPLE.COM today"]},
                             "alice.ünal@example.com": true, "n": 1});
    shouting.user_agent = Some("mailer (alice.ünal@example.com)".into());
    let mut plain = event("evt_3", "login_succeeded", Some("usr_a"), t0() + ms(2));
    plain.detail = json!({"via": "session", "contact": "bob@example.com"});
    plain.user_agent = Some("curl/8".into());
    let mut theirs = event("evt_4", "user_created", Some("usr_b"), t0() + ms(3));
    theirs.detail = json!({"email": "usr_b@example.com", "note": "alice.ünal@example.com"});
    // An address the user had before an email change, recorded when the
    // account was made, and mentioned since.
    let mut former = event("evt_5", "user_created", Some("usr_a"), t0() + ms(4));
    former.detail = json!({"email": "Former.Name@Example.net", "roles": []});
    let mut mention = event("evt_6", "login_failed", Some("usr_a"), t0() + ms(5));
    mention.detail = json!({"note": "typed FORMER.NAME@example.net"});
    for e in [&mine, &shouting, &plain, &theirs, &former, &mention] {
        f.a.audit.record(e).await.unwrap();
    }

    assert_eq!(
        b.users.delete_user("usr_a", Some("admin")).await.unwrap(),
        UserWrite::Done
    );
    for node in [&f.a, &b] {
        assert!(node.users.user_by_id("usr_a").await.unwrap().is_none());
        assert!(
            node.users
                .credentials_by_email(key)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            node.refresh
                .refresh_family(&refresh)
                .await
                .unwrap()
                .is_none()
        );
    }
    if backend != Backend::PostgresRedis {
        // Sessions in the database go with the row (in Redis they are the
        // core's to end).
        assert!(
            f.a.sessions
                .session_by_hash(&session.token_hash)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            b.sessions
                .sessions_of_user("usr_a")
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(
        b.users.delete_user("usr_a", None).await.unwrap(),
        UserWrite::NoSuchUser
    );

    let events = audit_all(&b).await;
    let by_id = |id: &str| events.iter().find(|e| e.id == id).unwrap().clone();
    assert_eq!(events.len(), 6, "events are kept");
    let mine = by_id("evt_1");
    assert_eq!(mine.user_id.as_deref(), Some("usr_a"), "the id stays");
    assert_eq!(
        mine.detail,
        json!({"email": "[deleted]", "roles": [], "actor": "usr_b"})
    );
    let shouting = by_id("evt_2");
    assert_eq!(
        shouting.detail,
        json!({"to": {"list": ["x", "[deleted]"]}, "[deleted]": true, "n": 1})
    );
    assert_eq!(shouting.user_agent.as_deref(), Some("[deleted]"));
    assert_eq!(by_id("evt_3").detail, plain.detail, "nothing to forget");
    assert_eq!(by_id("evt_3").user_agent, plain.user_agent);
    assert_eq!(by_id("evt_4").detail, theirs.detail, "another user's event");
    assert_eq!(
        by_id("evt_5").detail,
        json!({"email": "[deleted]", "roles": []}),
        "an earlier address of theirs"
    );
    assert_eq!(by_id("evt_6").detail, json!({"note": "[deleted]"}));
    for e in events
        .iter()
        .filter(|e| e.user_id.as_deref() == Some("usr_a"))
    {
        let text = format!("{} {:?}", e.detail, e.user_agent).to_lowercase();
        assert!(!text.contains("ünal@example.com"), "{text}");
    }

    // The email key is free at once.
    let mut again = user("usr_a2");
    again.email = "alice.ünal@example.com".into();
    f.a.users
        .insert_user(&again, key, "$argon2id$b")
        .await
        .unwrap();
    assert_eq!(
        b.users
            .credentials_by_email(key)
            .await
            .unwrap()
            .map(|(u, _)| u.id)
            .as_deref(),
        Some("usr_a2")
    );
}

// --- sessions ------------------------------------------------------------

/// A session and its audit event are committed together, or neither is.
async fn a_session_and_its_audit_event_commit_together(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    let s = session("usr_a", "ses_1", t0());
    let stored =
        f.a.sessions
            .insert_session(
                &s,
                Some(event("evt_login", "login_succeeded", Some("usr_a"), t0())),
            )
            .await
            .unwrap();
    assert!(stored);
    let read = b.sessions.session_by_hash(&s.token_hash).await.unwrap();
    assert_eq!(read.as_deref(), Some(&s), "read back exactly as written");
    assert!(
        audit_all(&b).await.iter().any(|e| e.id == "evt_login"),
        "the login event is there with its session"
    );

    // The user is gone: neither the session nor its event is written.
    let orphan = session("usr_gone", "ses_2", t0());
    let stored =
        f.a.sessions
            .insert_session(
                &orphan,
                Some(event(
                    "evt_orphan",
                    "login_succeeded",
                    Some("usr_gone"),
                    t0(),
                )),
            )
            .await
            .unwrap();
    assert!(!stored);
    assert!(
        b.sessions
            .session_by_hash(&orphan.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!audit_all(&b).await.iter().any(|e| e.id == "evt_orphan"));
}

/// Idle and absolute expiry, at their exact edges, for counting and
/// sweeping alike.
async fn idle_and_absolute_expiry(backend: Backend) {
    let f = Fixture::new(backend).await;
    add_user(&f.a, "usr_a").await;
    let now = t0() + Duration::hours(3);
    let idle_cutoff = now - Duration::hours(2);
    let mut live = session("usr_a", "ses_live", t0());
    live.last_seen_at = now - ms(1);
    let mut at_absolute = session("usr_a", "ses_abs", t0());
    at_absolute.last_seen_at = now;
    at_absolute.expires_at = now;
    let mut at_idle = session("usr_a", "ses_idle", t0());
    at_idle.last_seen_at = idle_cutoff;
    let mut just_active = session("usr_a", "ses_just", t0());
    just_active.last_seen_at = idle_cutoff + ms(1);
    for s in [&live, &at_absolute, &at_idle, &just_active] {
        assert!(f.a.sessions.insert_session(s, None).await.unwrap());
    }
    assert_eq!(f.a.sessions.count_live(now, idle_cutoff).await.unwrap(), 2);
    assert_eq!(
        f.a.sessions.delete_expired(now, idle_cutoff).await.unwrap(),
        2
    );
    let left: BTreeSet<String> =
        f.a.sessions
            .sessions_of_user("usr_a")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
    assert_eq!(
        left,
        BTreeSet::from(["ses_live".to_owned(), "ses_just".to_owned()])
    );
}

/// A session past its deadline is gone from the store after its
/// housekeeping: the periodic sweep (`delete_expired`) where the store
/// keeps records as given, nothing at all where records expire by
/// themselves (their time to live, counted from `last_seen_at` with the
/// store's idle timeout, plus the grace). Activity moves the deadline.
async fn sessions_leave_at_their_deadline(backend: Backend) {
    let idle = StdDuration::from_millis(400);
    let f = Fixture::with(
        backend,
        StoreOptions {
            session_idle: idle,
            ..StoreOptions::default()
        },
    )
    .await;
    add_user(&f.a, "usr_a").await;
    let now = OffsetDateTime::now_utc();
    let idle_out = session("usr_a", "ses_idle", now);
    let mut kept_busy = session("usr_a", "ses_busy", now);
    let mut short = session("usr_a", "ses_short", now);
    short.expires_at = now + ms(200);
    for s in [&idle_out, &kept_busy, &short] {
        assert!(f.a.sessions.insert_session(s, None).await.unwrap());
    }
    let wait = idle + tessera::store::EXPIRY_GRACE + StdDuration::from_millis(300);
    let step = wait / 3;
    for _ in 0..3 {
        tokio::time::sleep(step).await;
        kept_busy.last_seen_at = OffsetDateTime::now_utc();
        let touched = Arc::new(kept_busy.clone());
        assert!(
            f.a.sessions
                .queue_touch(&touched)
                .await
                .unwrap()
                .still_there()
                .await
                .unwrap()
        );
    }
    // The sweep runs "as of" the last touch: on a loaded machine the touch
    // itself can take longer than the idle timeout, and the busy session
    // must not be idle merely because the test was descheduled.
    let after = kept_busy.last_seen_at;
    if f.a.sessions.expires_by_itself() {
        assert_eq!(
            backend,
            Backend::PostgresRedis,
            "only Redis expires by itself"
        );
    } else {
        let idle = Duration::try_from(idle).unwrap();
        assert_eq!(
            f.a.sessions
                .delete_expired(after, after - idle)
                .await
                .unwrap(),
            2
        );
    }
    for gone in [&idle_out, &short] {
        assert!(
            f.a.sessions
                .session_by_hash(&gone.token_hash)
                .await
                .unwrap()
                .is_none(),
            "{} is past its deadline",
            gone.id
        );
    }
    let busy =
        f.a.sessions
            .session_by_hash(&kept_busy.token_hash)
            .await
            .unwrap();
    assert_eq!(busy.map(|s| s.id.clone()).as_deref(), Some("ses_busy"));
    let listed: Vec<String> =
        f.a.sessions
            .sessions_of_user("usr_a")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
    assert_eq!(listed, ["ses_busy"]);
}

/// A queued touch: seen by the list and the sweep as soon as it is queued,
/// never moves `last_seen_at` back, and tells whether the session existed.
async fn queued_touches(backend: Backend) {
    let f = Fixture::new(backend).await;
    add_user(&f.a, "usr_a").await;
    let s = session("usr_a", "ses_1", t0());
    f.a.sessions.insert_session(&s, None).await.unwrap();

    let later = Arc::new(SessionRecord {
        last_seen_at: t0() + Duration::minutes(90),
        ..s.clone()
    });
    let handle = f.a.sessions.queue_touch(&later).await.unwrap();
    // Not awaited: the list must show it all the same.
    let listed = f.a.sessions.sessions_of_user("usr_a").await.unwrap();
    assert_eq!(listed[0].last_seen_at, later.last_seen_at);
    assert!(handle.still_there().await.unwrap());

    let older = Arc::new(SessionRecord {
        last_seen_at: t0() + Duration::minutes(30),
        ..s.clone()
    });
    assert!(
        f.a.sessions
            .queue_touch(&older)
            .await
            .unwrap()
            .still_there()
            .await
            .unwrap()
    );
    let read = f.a.sessions.session_by_hash(&s.token_hash).await.unwrap();
    assert_eq!(read.unwrap().last_seen_at, later.last_seen_at, "never back");

    // Used just before its idle cut-off: the sweep sees the queued touch.
    let now = t0() + Duration::minutes(90) + Duration::hours(2);
    let fresher = Arc::new(SessionRecord {
        last_seen_at: now - ms(10),
        ..s.clone()
    });
    let _pending = f.a.sessions.queue_touch(&fresher).await.unwrap();
    assert_eq!(
        f.a.sessions
            .delete_expired(now, now - Duration::hours(2))
            .await
            .unwrap(),
        0
    );

    f.a.sessions
        .delete_session_by_hash(&s.token_hash)
        .await
        .unwrap();
    let gone = Arc::new(SessionRecord {
        last_seen_at: now,
        ..s.clone()
    });
    assert!(
        !f.a.sessions
            .queue_touch(&gone)
            .await
            .unwrap()
            .still_there()
            .await
            .unwrap()
    );
    assert!(
        f.a.sessions
            .session_by_hash(&s.token_hash)
            .await
            .unwrap()
            .is_none(),
        "a touch never brings a session back"
    );
}

/// Listing (newest first), single deletes (by hash, by owner and id) and
/// bulk revocation; deleted sessions are gone on every node.
async fn listing_and_bulk_revocation(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    add_user(&f.a, "usr_b").await;
    let mine: Vec<SessionRecord> = (0..4)
        .map(|i| session("usr_a", &format!("ses_a{i}"), t0() + ms(i)))
        .collect();
    for s in &mine {
        f.a.sessions.insert_session(s, None).await.unwrap();
    }
    let theirs = session("usr_b", "ses_b", t0());
    f.a.sessions.insert_session(&theirs, None).await.unwrap();

    let ids: Vec<String> = b
        .sessions
        .sessions_of_user("usr_a")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["ses_a3", "ses_a2", "ses_a1", "ses_a0"]);

    assert!(
        b.sessions
            .delete_user_session("usr_b", "ses_a0")
            .await
            .unwrap()
            .is_none(),
        "another user's session id deletes nothing"
    );
    let deleted = b
        .sessions
        .delete_user_session("usr_a", "ses_a0")
        .await
        .unwrap();
    assert_eq!(deleted.as_ref(), Some(&mine[0]));
    let deleted = b
        .sessions
        .delete_session_by_hash(&mine[1].token_hash)
        .await
        .unwrap();
    assert_eq!(deleted.map(|s| s.id).as_deref(), Some("ses_a1"));
    assert!(
        b.sessions
            .delete_session_by_hash(&mine[1].token_hash)
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(b.sessions.delete_user_sessions("usr_a").await.unwrap(), 2);
    for s in &mine {
        assert!(
            f.a.sessions
                .session_by_hash(&s.token_hash)
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        f.a.sessions
            .session_by_hash(&theirs.token_hash)
            .await
            .unwrap()
            .is_some(),
        "other users' sessions stay"
    );
}

// --- refresh tokens ------------------------------------------------------

/// Rotation, reuse, expiry, unknown tokens and revoked families, with the
/// rotation's audit event in the same commit.
async fn refresh_rotation_and_reuse(backend: Backend) {
    let f = Fixture::new(backend).await;
    add_user(&f.a, "usr_a").await;
    let first = add_family(&f.a, "fam_1", "usr_a").await;
    let second = fresh_hash();
    let Rotation::Rotated(family) = rotate(&f.a, &first, &second, 10).await else {
        panic!("a fresh token rotates");
    };
    assert_eq!(
        (family.id.as_str(), family.user_id.as_str()),
        ("fam_1", "usr_a")
    );
    let audit = audit_all(&f.a).await;
    let rotated = audit
        .iter()
        .find(|e| e.id == format!("evt_rot_{}", hex(&second)))
        .expect("the rotation's event is committed with it");
    assert_eq!(rotated.user_id.as_deref(), Some("usr_a"));
    assert_eq!(rotated.detail["family"], "fam_1");
    let (_, _, used) = f.a.refresh.refresh_family(&first).await.unwrap().unwrap();
    assert!(used);

    // The spent token comes back: reuse, the family is revoked and its live
    // token dies with it.
    assert!(matches!(
        rotate(&f.a, &first, &fresh_hash(), 20).await,
        Rotation::Reused(fam) if fam.id == "fam_1"
    ));
    assert_eq!(
        rotate(&f.a, &second, &fresh_hash(), 30).await,
        Rotation::Invalid
    );
    let audits_before = audit_all(&f.a).await.len();
    assert_eq!(
        rotate(&f.a, &fresh_hash(), &fresh_hash(), 40).await,
        Rotation::Invalid,
        "unknown"
    );

    // Expired (expires_at <= now): invalid, and left unused.
    let expiring = add_family(&f.a, "fam_2", "usr_a").await;
    let at_expiry = Duration::days(1).whole_milliseconds() as i64;
    assert_eq!(
        rotate(&f.a, &expiring, &fresh_hash(), at_expiry).await,
        Rotation::Invalid
    );
    let (_, expires_at, used) =
        f.a.refresh
            .refresh_family(&expiring)
            .await
            .unwrap()
            .unwrap();
    assert_eq!(expires_at, t0() + Duration::days(1));
    assert!(!used);
    assert_eq!(
        audit_all(&f.a).await.len(),
        audits_before,
        "no audit when nothing rotated"
    );

    // Revoked families: once only, and their tokens no longer rotate.
    let third = add_family(&f.a, "fam_3", "usr_a").await;
    assert!(f.a.refresh.revoke_family("fam_3", t0()).await.unwrap());
    assert!(!f.a.refresh.revoke_family("fam_3", t0()).await.unwrap());
    assert!(
        !f.a.refresh
            .revoke_family("fam_unknown", t0())
            .await
            .unwrap()
    );
    assert_eq!(
        rotate(&f.a, &third, &fresh_hash(), 50).await,
        Rotation::Invalid
    );

    // Every live family of a user at once (fam_1 and fam_3 already revoked).
    add_family(&f.a, "fam_4", "usr_a").await;
    let mut revoked =
        f.a.refresh
            .revoke_user_families("usr_a", t0())
            .await
            .unwrap();
    revoked.sort();
    assert_eq!(revoked, ["fam_2", "fam_4"]);
    assert!(
        f.a.refresh
            .revoke_user_families("usr_a", t0())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A user's live families: revoked, spent-only and expired ones are left
/// out, the rest come with their live token's times, most recently
/// rotated first, bounded, and seen from another node.
async fn live_families_are_listed_by_last_rotation(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    add_user(&f.a, "usr_b").await;
    let first = add_family(&f.a, "fam_old", "usr_a").await;
    add_family(&f.a, "fam_new", "usr_a").await;
    add_family(&f.a, "fam_gone", "usr_a").await;
    add_family(&f.a, "fam_other", "usr_b").await;
    assert!(f.a.refresh.revoke_family("fam_gone", t0()).await.unwrap());
    // fam_old rotates an hour in: its live token is the successor.
    let next = fresh_hash();
    assert!(matches!(
        rotate(&f.a, &first, &next, 3_600_000).await,
        Rotation::Rotated(_)
    ));
    let listed = |now: OffsetDateTime, limit: u32| {
        let b = b.refresh.clone();
        async move { b.live_families("usr_a", now, limit).await.unwrap() }
    };
    let live = listed(t0() + ms(3_600_001), 10).await;
    let ids: Vec<&str> = live.iter().map(|l| l.family.id.as_str()).collect();
    assert_eq!(ids, ["fam_old", "fam_new"], "most recently rotated first");
    assert_eq!(live[0].last_used_at, t0() + ms(3_600_000));
    assert_eq!(live[0].expires_at, t0() + ms(3_600_000) + Duration::days(1));
    assert_eq!(live[1].last_used_at, t0());
    assert_eq!(live[1].expires_at, t0() + Duration::days(1));
    assert_eq!(live[1].family.user_id, "usr_a");
    assert_eq!(live[1].family.client_id, "tessera");
    assert_eq!(listed(t0() + ms(3_600_001), 1).await.len(), 1, "bounded");
    // A day after t0 fam_new's only token has expired; fam_old's successor
    // lives on.
    let later = listed(t0() + Duration::days(1), 10).await;
    let ids: Vec<&str> = later.iter().map(|l| l.family.id.as_str()).collect();
    assert_eq!(ids, ["fam_old"]);
    assert!(
        b.refresh
            .live_families("usr_nobody", t0(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Racing rotations of one token, on two nodes at once: exactly one
/// rotates, the others are reuse (or, once a reuse has revoked the family,
/// invalid), and the winner's successor dies with the family. Repeated, for
/// real interleavings.
async fn racing_rotations_exactly_one_wins(backend: Backend) {
    const ROUNDS: usize = 40;
    const RACERS: usize = 6;
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    for round in 0..ROUNDS {
        let presented = add_family(&f.a, &format!("fam_{round}"), "usr_a").await;
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = Vec::new();
        for i in 0..RACERS {
            let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
            let barrier = Arc::clone(&barrier);
            racers.push(tokio::spawn(async move {
                let next = fresh_hash();
                barrier.wait().await;
                (rotate(&node, &presented, &next, 100).await, next)
            }));
        }
        let mut winners = Vec::new();
        let mut reused = 0;
        for r in racers {
            match r.await.unwrap() {
                (Rotation::Rotated(_), next) => winners.push(next),
                (Rotation::Reused(_), _) => reused += 1,
                (Rotation::Invalid, _) => {}
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one rotates");
        assert!(reused >= 1, "round {round}: the replay is seen as reuse");
        assert_eq!(
            rotate(&b, &winners[0], &fresh_hash(), 200).await,
            Rotation::Invalid,
            "round {round}: the reuse revoked the winner's family"
        );
    }
}

// --- the change log and the revocation log ------------------------------

/// Appends from several nodes at once, read concurrently by cursor in
/// small pages: numbers strictly increase, and the reader misses nothing
/// (an entry numbered below one already read never appears later).
async fn the_change_log_is_read_in_commit_order(backend: Backend) {
    const WRITERS: usize = 6;
    const EACH: usize = 25;
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let start = f.a.events.latest_cursor().await.unwrap();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let node = if w % 2 == 0 { f.a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                let change = Change::UserChanged {
                    user_id: format!("usr_{w}_{i}"),
                };
                node.events.append(&change, t0()).await.unwrap();
            }
        }));
    }
    let reader = f.node().await;
    let mut cursor = start;
    let mut seen = Vec::new();
    let read_page = |cursor: i64| {
        let events = Arc::clone(&reader.events);
        async move { events.after(cursor, 7).await.unwrap() }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        for (seq, change) in read_page(cursor).await {
            assert!(seq > cursor, "numbers strictly increase");
            cursor = seq;
            seen.push(change.user_id().to_owned());
        }
        tokio::task::yield_now().await;
    }
    for w in writers {
        w.await.unwrap();
    }
    loop {
        let page = read_page(cursor).await;
        if page.is_empty() {
            break;
        }
        for (seq, change) in page {
            assert!(seq > cursor);
            cursor = seq;
            seen.push(change.user_id().to_owned());
        }
    }
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "each entry read once");
    assert_eq!(
        seen.len(),
        WRITERS * EACH,
        "the reader missed none of the appends"
    );
    assert_eq!(f.a.events.latest_cursor().await.unwrap(), cursor);

    // From the latest cursor, a follower sees exactly what comes later.
    b.events.append(&Change::KeysChanged, t0()).await.unwrap();
    let later = f.a.events.after(cursor, 100).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].1, Change::KeysChanged);

    // Pruning deletes old entries; the numbering goes on.
    let last = later[0].0;
    assert!(f.a.events.prune(t0() + ms(1)).await.unwrap() >= (WRITERS * EACH) as u64);
    assert!(f.a.events.after(start, 1000).await.unwrap().is_empty());
    f.a.events
        .append(
            &Change::UserSessionsRevoked {
                user_id: "usr_z".into(),
            },
            t0() + Duration::days(1),
        )
        .await
        .unwrap();
    let next = f.a.events.after(last, 10).await.unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].0 > last);
}

/// Every kind of change reads back as it was appended.
async fn changes_round_trip(backend: Backend) {
    let f = Fixture::new(backend).await;
    let start = f.a.events.latest_cursor().await.unwrap();
    let changes = [
        Change::SessionRevoked {
            user_id: "usr_a".into(),
            session_id: "ses_1".into(),
            token_hash: fresh_hash(),
        },
        Change::UserSessionsRevoked {
            user_id: "usr_a".into(),
        },
        Change::UserChanged {
            user_id: "usr_b".into(),
        },
        Change::KeysChanged,
    ];
    for c in &changes {
        f.a.events.append(c, t0()).await.unwrap();
    }
    let back: Vec<Change> =
        f.a.events
            .after(start, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
    assert_eq!(back, changes);
}

/// The revocation log: numbers in commit order from several nodes, every
/// entry read back with its `forget_at`, pruning by `forget_at`.
async fn the_revocation_log_is_read_in_commit_order(backend: Backend) {
    const WRITERS: usize = 4;
    const EACH: usize = 20;
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let node = if w % 2 == 0 { f.a.clone() } else { b.clone() };
        writers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..EACH {
                let r = Revocation::Token {
                    jti: format!("jti_{w}_{i}"),
                    exp: 2_000_000_000 + i as i64,
                };
                let seq = node
                    .revocations
                    .insert_revocation(&r, 1_900_000_000 + i as i64, t0())
                    .await
                    .unwrap();
                seqs.push(seq);
            }
            seqs
        }));
    }
    let mut cursor = 0;
    let mut seen = Vec::new();
    while !writers.iter().all(|w| w.is_finished()) {
        for (seq, r, _) in f.a.revocations.revocations_after(cursor, 5).await.unwrap() {
            assert!(seq > cursor);
            cursor = seq;
            seen.push(r.subject().to_owned());
        }
        tokio::task::yield_now().await;
    }
    let mut returned = Vec::new();
    for w in writers {
        let seqs = w.await.unwrap();
        assert!(
            seqs.windows(2).all(|p| p[0] < p[1]),
            "one writer's numbers increase"
        );
        returned.extend(seqs);
    }
    for (seq, r, forget_at) in
        f.a.revocations
            .revocations_after(cursor, 1000)
            .await
            .unwrap()
    {
        assert!(seq > cursor);
        assert!(forget_at >= 1_900_000_000);
        cursor = seq;
        seen.push(r.subject().to_owned());
    }
    assert_eq!(seen.len(), WRITERS * EACH, "the reader missed none");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), seen.len());
    assert_eq!(returned.iter().max(), Some(&cursor));

    let kinds = [
        Revocation::Family {
            sid: "fam_1".into(),
            exp: 2_000_000_000,
        },
        Revocation::User {
            sub: "usr_a".into(),
            not_before: 1_800_000_000,
        },
    ];
    for r in &kinds {
        b.revocations
            .insert_revocation(r, 2_100_000_000, t0())
            .await
            .unwrap();
    }
    let tail: Vec<Revocation> =
        f.a.revocations
            .revocations_after(cursor, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
    assert_eq!(tail, kinds);

    // Entries whose forget_at passed go; the two kept ones stay.
    let pruned =
        f.a.revocations
            .prune_revocations(2_000_000_000)
            .await
            .unwrap();
    assert_eq!(pruned, (WRITERS * EACH) as u64);
    assert_eq!(
        f.a.revocations
            .revocations_after(0, 1000)
            .await
            .unwrap()
            .len(),
        2
    );
}

/// Where the backend pushes, an append on one node wakes another node's
/// subscription promptly; where it does not, there is no subscription.
async fn appends_are_pushed_to_other_nodes(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let Some(mut push) = f.a.events.subscribe() else {
        assert!(!backend.pushes(), "{backend:?} should push");
        return;
    };
    assert!(backend.pushes(), "{backend:?} pushes unexpectedly");
    tokio::time::timeout(StdDuration::from_secs(10), async {
        while !matches!(*push.borrow_and_update(), Push::Listening(_)) {
            push.changed().await.unwrap();
        }
    })
    .await
    .expect("the subscription starts listening");
    b.events.append(&Change::KeysChanged, t0()).await.unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), push.changed())
        .await
        .expect("another node's append is pushed")
        .unwrap();
    assert!(matches!(*push.borrow(), Push::Listening(_)));
    b.revocations
        .insert_revocation(
            &Revocation::Token {
                jti: "jti_push".into(),
                exp: 2_000_000_000,
            },
            2_000_000_000,
            t0(),
        )
        .await
        .unwrap();
    tokio::time::timeout(StdDuration::from_secs(5), push.changed())
        .await
        .expect("a revocation is pushed too")
        .unwrap();
}

// --- keys, secrets, clients, audit --------------------------------------

/// Rotation is a compare-and-set: of racing rotations from the same view,
/// on two nodes, exactly one wins; a stale view changes nothing; there is
/// never more than one active key; wiping spares the active key.
async fn key_rotation_is_a_compare_and_set(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let race = |expected: Option<&'static str>, kids: [&'static str; 4], base: i64| {
        let (a, b) = (f.a.clone(), b.clone());
        async move {
            let barrier = Arc::new(Barrier::new(kids.len()));
            let mut racers = Vec::new();
            for (i, kid) in kids.into_iter().enumerate() {
                let node = if i % 2 == 0 { a.clone() } else { b.clone() };
                let barrier = Arc::clone(&barrier);
                racers.push(tokio::spawn(async move {
                    barrier.wait().await;
                    let at = t0() + ms(base + i as i64);
                    let won = node
                        .keys
                        .rotate_in(&key(kid, at), expected, at)
                        .await
                        .unwrap();
                    won.then_some(kid)
                }));
            }
            let mut winners = Vec::new();
            for r in racers {
                winners.extend(r.await.unwrap());
            }
            winners
        }
    };
    let first = race(None, ["k1", "k2", "k3", "k4"], 0).await;
    assert_eq!(first.len(), 1, "exactly one first key: {first:?}");
    let second = race(Some(first[0]), ["k5", "k6", "k7", "k8"], 100).await;
    assert_eq!(second.len(), 1, "exactly one rotation: {second:?}");
    assert!(
        !f.a.keys
            .rotate_in(
                &key("k9", t0() + Duration::hours(1)),
                Some(first[0]),
                t0() + Duration::hours(1)
            )
            .await
            .unwrap(),
        "a stale view changes nothing"
    );
    let keys = b.keys.signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    let active: Vec<&StoredKey> = keys.iter().filter(|k| k.rotated_out_at.is_none()).collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].kid, second[0]);
    assert_eq!(keys[0].kid, first[0], "oldest first");

    assert_eq!(
        f.a.keys
            .wipe_retired(t0() + Duration::days(1))
            .await
            .unwrap(),
        1
    );
    for k in b.keys.signing_keys().await.unwrap() {
        assert_eq!(
            k.private_pkcs8.is_some(),
            k.rotated_out_at.is_none(),
            "{}: only the active key keeps its private half",
            k.kid
        );
    }
}

/// A server-wide secret: the first writer wins, everyone reads its value.
async fn server_secrets_first_writer_wins(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let barrier = Arc::new(Barrier::new(6));
    let mut racers = Vec::new();
    for i in 0..6u8 {
        let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            node.keys.server_secret("csrf", &[i; 32]).await.unwrap()
        }));
    }
    let mut values = BTreeSet::new();
    for r in racers {
        values.insert(r.await.unwrap());
    }
    assert_eq!(values.len(), 1, "everyone sees the same value");
    let value = values.into_iter().next().unwrap();
    assert_eq!(value.len(), 32);
    assert_eq!(
        f.a.keys.server_secret("csrf", &[99; 32]).await.unwrap(),
        value
    );
    assert_ne!(
        f.a.keys.server_secret("other", &[5; 16]).await.unwrap(),
        value
    );
}

async fn clients_are_stored_by_id(backend: Backend) {
    let f = Fixture::new(backend).await;
    let client = ServiceClient {
        id: "cli_1".into(),
        name: "edge".into(),
        secret_hash: fresh_hash(),
        created_at: t0(),
        disabled_at: None,
    };
    f.a.clients.insert_client(&client).await.unwrap();
    assert!(matches!(
        f.a.clients.insert_client(&client).await,
        Err(StoreError::Conflict)
    ));
    let back = f.node().await.clients.client_by_id("cli_1").await.unwrap();
    let back = back.expect("stored");
    assert_eq!(
        (back.id, back.name, back.secret_hash, back.created_at),
        ("cli_1".into(), "edge".into(), client.secret_hash, t0())
    );
    assert!(f.a.clients.client_by_id("cli_2").await.unwrap().is_none());
}

fn client(id: &str, created_at: OffsetDateTime) -> ServiceClient {
    ServiceClient {
        id: id.into(),
        name: format!("{id} service"),
        secret_hash: fresh_hash(),
        created_at,
        disabled_at: None,
    }
}

/// A client's state and secret as every node reads it: (disabled_at, hash).
async fn client_state(s: &Stores, id: &str) -> Option<(Option<OffsetDateTime>, SecretHash)> {
    let c = s.clients.client_by_id(id).await.unwrap()?;
    Some((c.disabled_at, c.secret_hash))
}

/// The client lifecycle: listed oldest first (then by id), disabled and
/// enabled again (the first disable time kept, the secret untouched), a
/// secret replaced in one step (the state untouched), deleted for good;
/// each write seen at once by another node, and a write to an id that is
/// not there (or cannot be) answering false without an error.
async fn clients_are_listed_disabled_rotated_and_deleted(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    assert!(f.a.clients.list_clients().await.unwrap().is_empty());
    let later = client("cli_b", t0());
    let first = client("cli_c", t0() - ms(1));
    let tie = client("cli_a", t0());
    let mut off = client("cli_d", t0() + ms(5));
    off.disabled_at = Some(t0() + ms(6));
    for c in [&later, &first, &tie, &off] {
        f.a.clients.insert_client(c).await.unwrap();
    }
    let listed = b.clients.list_clients().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cli_c", "cli_a", "cli_b", "cli_d"]);
    let d = &listed[3];
    assert_eq!(
        (d.name.as_str(), d.secret_hash, d.created_at, d.disabled_at),
        (
            "cli_d service",
            off.secret_hash,
            t0() + ms(5),
            Some(t0() + ms(6))
        ),
        "a client reads back as stored, its disabled time included"
    );

    // Disable: seen by the other node at once; a second disable keeps the
    // first time; enabling clears it. The secret never moves.
    let a_hash = tie.secret_hash;
    assert!(
        f.a.clients
            .set_client_disabled("cli_a", Some(t0() + ms(10)))
            .await
            .unwrap()
    );
    assert_eq!(
        client_state(&b, "cli_a").await,
        Some((Some(t0() + ms(10)), a_hash))
    );
    assert!(
        b.clients
            .set_client_disabled("cli_a", Some(t0() + ms(20)))
            .await
            .unwrap()
    );
    assert_eq!(
        client_state(&f.a, "cli_a").await,
        Some((Some(t0() + ms(10)), a_hash))
    );
    assert!(
        f.a.clients
            .set_client_disabled("cli_a", None)
            .await
            .unwrap()
    );
    assert_eq!(client_state(&b, "cli_a").await, Some((None, a_hash)));
    assert!(
        f.a.clients
            .set_client_disabled("cli_a", None)
            .await
            .unwrap()
    );
    assert_eq!(client_state(&b, "cli_a").await, Some((None, a_hash)));
    // Only that client changed.
    assert_eq!(
        client_state(&b, "cli_b").await,
        Some((None, later.secret_hash))
    );

    // A new secret replaces the old one at once, whatever the state.
    let fresh = fresh_hash();
    assert!(b.clients.set_client_secret("cli_d", &fresh).await.unwrap());
    assert_eq!(
        client_state(&f.a, "cli_d").await,
        Some((Some(t0() + ms(6)), fresh)),
        "a disabled client stays disabled with its new secret"
    );
    let again = fresh_hash();
    assert!(
        f.a.clients
            .set_client_secret("cli_a", &again)
            .await
            .unwrap()
    );
    assert_eq!(client_state(&b, "cli_a").await, Some((None, again)));

    // Deleted for good, on every node; the others stay.
    assert!(f.a.clients.delete_client("cli_a").await.unwrap());
    assert!(client_state(&b, "cli_a").await.is_none());
    assert!(!b.clients.delete_client("cli_a").await.unwrap());
    let ids: Vec<String> = b
        .clients
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["cli_c", "cli_b", "cli_d"]);

    // Ids that are not there, or that no backend can hold: false, no error,
    // nothing written.
    for id in ["cli_a", "cli_nobody", "cli_b\0", ""] {
        assert!(
            !f.a.clients
                .set_client_disabled(id, Some(t0()))
                .await
                .unwrap(),
            "{id:?}"
        );
        assert!(
            !f.a.clients
                .set_client_secret(id, &fresh_hash())
                .await
                .unwrap(),
            "{id:?}"
        );
        assert!(!f.a.clients.delete_client(id).await.unwrap(), "{id:?}");
        assert!(client_state(&f.a, id).await.is_none(), "{id:?}");
    }
    assert_eq!(
        client_state(&b, "cli_b").await,
        Some((None, later.secret_hash))
    );
    assert_eq!(b.clients.list_clients().await.unwrap().len(), 3);
}

/// The audit log: newest first (time, then id), filters, pages, retention.
async fn the_audit_log_pages_newest_first(backend: Backend) {
    let f = Fixture::new(backend).await;
    let events = [
        event("evt_1", "login_succeeded", Some("usr_a"), t0()),
        event("evt_2", "login_failed", None, t0() + ms(1)),
        event("evt_3", "login_succeeded", Some("usr_b"), t0() + ms(1)),
        event("evt_4", "logout", Some("usr_a"), t0() + ms(2)),
    ];
    for e in &events {
        f.a.audit.record(e).await.unwrap();
    }
    let page = |event_type: Option<&str>, user_id: Option<&str>, before: Option<&str>, limit| {
        let q = AuditQuery {
            event_type: event_type.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
            limit,
            before: before.map(str::to_owned),
        };
        let audit = Arc::clone(&f.a.audit);
        async move {
            audit
                .audit_events(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(None, None, None, 10).await,
        ["evt_4", "evt_3", "evt_2", "evt_1"]
    );
    assert_eq!(page(None, None, None, 2).await, ["evt_4", "evt_3"]);
    assert_eq!(page(None, None, Some("evt_3"), 2).await, ["evt_2", "evt_1"]);
    assert_eq!(
        page(Some("login_succeeded"), None, None, 10).await,
        ["evt_3", "evt_1"]
    );
    assert_eq!(
        page(None, Some("usr_a"), None, 10).await,
        ["evt_4", "evt_1"]
    );
    let stored = audit_all(&f.a).await;
    let first = stored.iter().find(|e| e.id == "evt_1").unwrap();
    assert_eq!(first.detail, events[0].detail);
    assert_eq!(first.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(first.at, t0());

    assert_eq!(f.a.audit.prune_audit(t0() + ms(1)).await.unwrap(), 1);
    assert_eq!(
        page(None, None, None, 10).await,
        ["evt_4", "evt_3", "evt_2"]
    );
}

/// The audit log oldest first (for exports): time then id, filtered by
/// type and a lower bound on time, paged from a position that need not be
/// an event still stored.
async fn the_audit_log_pages_oldest_first_for_export(backend: Backend) {
    let f = Fixture::new(backend).await;
    let events = [
        event("evt_3", "login_succeeded", Some("usr_b"), t0() + ms(1)),
        event("evt_1", "login_succeeded", Some("usr_a"), t0()),
        event("evt_5", "login_succeeded", None, t0() + ms(3)),
        event("evt_2", "login_failed", None, t0() + ms(1)),
        event("evt_4", "logout", Some("usr_a"), t0() + ms(2)),
    ];
    for e in &events {
        f.a.audit.record(e).await.unwrap();
    }
    let page = |event_type: Option<&str>,
                since: Option<OffsetDateTime>,
                after: Option<(OffsetDateTime, &str)>,
                limit| {
        let q = AuditExportQuery {
            event_type: event_type.map(str::to_owned),
            since,
            after: after.map(|(at, id)| (at, id.to_owned())),
            limit,
        };
        let audit = Arc::clone(&f.a.audit);
        async move {
            audit
                .audit_events_oldest_first(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(None, None, None, 10).await,
        ["evt_1", "evt_2", "evt_3", "evt_4", "evt_5"]
    );
    // Paging from the last event of each page visits each event once, in
    // order, even between events of the same millisecond.
    assert_eq!(page(None, None, None, 2).await, ["evt_1", "evt_2"]);
    assert_eq!(
        page(None, None, Some((t0() + ms(1), "evt_2")), 2).await,
        ["evt_3", "evt_4"]
    );
    assert_eq!(
        page(None, None, Some((t0() + ms(2), "evt_4")), 2).await,
        ["evt_5"]
    );
    assert!(
        page(None, None, Some((t0() + ms(3), "evt_5")), 2)
            .await
            .is_empty()
    );
    // `since` is inclusive; filters combine.
    assert_eq!(
        page(None, Some(t0() + ms(1)), None, 10).await,
        ["evt_2", "evt_3", "evt_4", "evt_5"]
    );
    assert_eq!(
        page(Some("login_succeeded"), None, None, 10).await,
        ["evt_1", "evt_3", "evt_5"]
    );
    assert_eq!(
        page(
            Some("login_succeeded"),
            Some(t0() + ms(1)),
            Some((t0() + ms(1), "evt_3")),
            10
        )
        .await,
        ["evt_5"]
    );
    assert!(page(Some("login\0"), None, None, 10).await.is_empty());
    // Events come back whole.
    let q = AuditExportQuery {
        limit: 10,
        ..AuditExportQuery::default()
    };
    let stored = f.a.audit.audit_events_oldest_first(&q).await.unwrap();
    let first = &stored[0];
    assert_eq!(first.detail, events[1].detail);
    assert_eq!(first.user_id.as_deref(), Some("usr_a"));
    assert_eq!(first.ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(first.at, t0());
    // A position whose event was pruned still pages on.
    assert_eq!(f.a.audit.prune_audit(t0() + ms(1)).await.unwrap(), 1);
    assert_eq!(
        page(None, None, Some((t0(), "evt_1")), 10).await,
        ["evt_2", "evt_3", "evt_4", "evt_5"]
    );
}

/// Lookups by text no backend can hold (a NUL, which a client can send as
/// `%00`) find nothing and change nothing; they are never an error, which
/// the core would have to answer with a 503 for a client's mistake.
async fn lookups_by_unstorable_text_find_nothing(backend: Backend) {
    let f = Fixture::new(backend).await;
    add_user(&f.a, "usr_a").await;
    let s = &f.a;
    let nul = "usr_a\0";
    assert!(s.users.user_by_id(nul).await.unwrap().is_none());
    assert!(
        s.users
            .credentials_by_email("a\0@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.users.password_hash(nul).await.unwrap().is_none());
    assert_eq!(
        s.users
            .set_roles(nul, &[], Some("admin"), t0())
            .await
            .unwrap(),
        UserWrite::NoSuchUser
    );
    assert_eq!(
        s.users
            .set_status(nul, UserStatus::Active, Some("admin"), t0())
            .await
            .unwrap(),
        UserWrite::NoSuchUser
    );
    assert_eq!(
        s.users.delete_user(nul, Some("admin")).await.unwrap(),
        UserWrite::NoSuchUser
    );
    assert!(!s.users.set_password_hash(nul, "h", t0()).await.unwrap());
    for (contains, after) in [(Some("\0"), None), (None, Some("\0"))] {
        let q = UserQuery {
            email_contains: contains.map(str::to_owned),
            limit: 10,
            after_id: after.map(str::to_owned),
        };
        assert!(s.users.list_users(&q).await.unwrap().is_empty());
    }
    assert!(s.sessions.sessions_of_user(nul).await.unwrap().is_empty());
    assert_eq!(s.sessions.delete_user_sessions(nul).await.unwrap(), 0);
    assert!(
        s.sessions
            .delete_user_session("usr_a", "ses_\0")
            .await
            .unwrap()
            .is_none()
    );
    assert!(!s.refresh.revoke_family("fam_\0", t0()).await.unwrap());
    assert!(
        s.refresh
            .revoke_user_families(nul, t0())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.refresh
            .live_families(nul, t0(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.clients.client_by_id("cli_\0").await.unwrap().is_none());
    for q in [
        AuditQuery {
            event_type: Some("login\0".into()),
            ..AuditQuery::default()
        },
        AuditQuery {
            user_id: Some(nul.into()),
            ..AuditQuery::default()
        },
        AuditQuery {
            before: Some("evt_\0".into()),
            ..AuditQuery::default()
        },
    ] {
        let q = AuditQuery { limit: 10, ..q };
        assert!(s.audit.audit_events(&q).await.unwrap().is_empty());
    }
    assert!(
        s.users.user_by_id("usr_a").await.unwrap().is_some(),
        "nothing changed"
    );
}

// --- re-keying emails (the data step after the schema migrations) -------

/// A user with an email and a key as an older release would have stored.
async fn add_keyed_user(s: &Stores, id: &str, email: &str, key: &str) {
    let mut u = user(id);
    u.email = email.into();
    s.users
        .insert_user(&u, key, "$argon2id$stub")
        .await
        .unwrap();
}

async fn id_by_key(s: &Stores, key: &str) -> Option<String> {
    s.users
        .credentials_by_email(key)
        .await
        .unwrap()
        .map(|(u, _)| u.id)
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Only non-ASCII emails are looked at; a key changes (or changes hands)
/// unless users would then share one: none of those changes, and they are
/// reported; a refused email is reported and kept; nothing is merged or
/// deleted; a dry run writes nothing; a run that leaves something
/// unresolved is not recorded, so the next one reports it again.
async fn rekeying_emails_never_merges_and_reports_collisions(backend: Backend) {
    let f = Fixture::new(backend).await;
    // (id, email, key stored, key the current rules give; None: refused)
    let rows: [(&str, &str, &str, Option<&str>); 10] = [
        (
            "usr_1",
            "Zoe\u{308}@example.org",
            "zoe\u{308}@example.org",
            Some("zoë@example.org"),
        ),
        ("usr_2", "ä-swap-1", "k-a", Some("k-b")),
        ("usr_3", "ä-swap-2", "k-b", Some("k-a")),
        (
            "usr_4",
            "straße@example.de",
            "straße@example.de",
            Some("strasse@example.de"),
        ),
        ("usr_5", "STRASSE@example.de", "strasse@example.de", None),
        (
            "usr_6",
            "E\u{301}@example.org",
            "e\u{301}@example.org",
            Some("é@example.org"),
        ),
        ("usr_7", "É@example.org", "é-old", Some("é@example.org")),
        (
            "usr_8",
            "zero\u{200b}width@example.org",
            "zero\u{200b}width@example.org",
            None,
        ),
        (
            "usr_9",
            "ö@example.org",
            "ö@example.org",
            Some("ö@example.org"),
        ),
        ("usr_10", "plain@example.org", "plain@example.org", None),
    ];
    for (id, email, key, _) in rows {
        add_keyed_user(&f.a, id, email, key).await;
    }
    let asked = std::sync::Mutex::new(Vec::new());
    let key_of = |email: &str| {
        asked.lock().unwrap().push(email.to_owned());
        rows.iter()
            .find(|r| r.1 == email)
            .and_then(|r| r.3.map(str::to_owned))
    };
    let expected = tessera::store::rekey::RekeyOutcome {
        already_done: false,
        scanned: 8,
        changed: ids(&["usr_1", "usr_2", "usr_3"]),
        collisions: vec![ids(&["usr_4", "usr_5"]), ids(&["usr_6", "usr_7"])],
        refused: ids(&["usr_8"]),
        done: false,
    };

    let dry =
        f.a.users
            .rekey_emails("step", &key_of, false, t0())
            .await
            .unwrap();
    assert_eq!(dry, expected);
    assert_eq!(
        id_by_key(&f.a, "zoe\u{308}@example.org").await.as_deref(),
        Some("usr_1")
    );
    assert_eq!(
        id_by_key(&f.a, "zoë@example.org").await,
        None,
        "a dry run writes nothing"
    );

    let run =
        f.a.users
            .rekey_emails("step", &key_of, true, t0())
            .await
            .unwrap();
    assert_eq!(run, expected);
    assert!(
        asked.lock().unwrap().iter().all(|e| !e.is_ascii()),
        "ASCII emails are never looked at: {:?}",
        asked.lock().unwrap()
    );
    let node = f.node().await;
    for (key, id) in [
        ("zoë@example.org", Some("usr_1")),
        ("zoe\u{308}@example.org", None),
        ("k-b", Some("usr_2")),
        ("k-a", Some("usr_3")),
        // The collisions: every member keeps its key.
        ("straße@example.de", Some("usr_4")),
        ("strasse@example.de", Some("usr_5")),
        ("e\u{301}@example.org", Some("usr_6")),
        ("é-old", Some("usr_7")),
        ("é@example.org", None),
        ("zero\u{200b}width@example.org", Some("usr_8")),
        ("ö@example.org", Some("usr_9")),
        ("plain@example.org", Some("usr_10")),
    ] {
        assert_eq!(id_by_key(&node, key).await.as_deref(), id, "{key}");
    }
    let all = UserQuery {
        limit: 100,
        ..UserQuery::default()
    };
    let users = node.users.list_users(&all).await.unwrap();
    assert_eq!(users.len(), rows.len(), "nothing merged or deleted");
    for (id, email, _, _) in rows {
        let u = users.iter().find(|u| u.id == id).unwrap();
        assert_eq!(u.email, email, "the email itself is never changed");
    }

    // Not recorded while unresolved: the next run reports the same again.
    let again = node
        .users
        .rekey_emails("step", &key_of, true, t0())
        .await
        .unwrap();
    assert_eq!(
        again,
        tessera::store::rekey::RekeyOutcome {
            changed: vec![],
            ..expected
        }
    );
}

/// Once nothing is left unresolved the step is recorded: later calls read
/// nothing (a user stored since with an old key is not even looked at),
/// whichever node asks; another step name runs anew. Two nodes running the
/// step at once: one changes the keys, the other finds nothing to do.
async fn a_resolved_rekeying_is_recorded_and_racing_runs_serialise(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_keyed_user(&f.a, "usr_a", "Ä@example.org", "ä-old").await;
    add_keyed_user(&f.a, "usr_b", "b@example.org", "b@example.org").await;
    let key_of = |email: &str| Some(email.to_lowercase().replace("-old", ""));
    let barrier = Arc::new(Barrier::new(2));
    let mut racers = Vec::new();
    for node in [f.a.clone(), b.clone()] {
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            node.users
                .rekey_emails("step", &key_of, true, t0())
                .await
                .unwrap()
        }));
    }
    let mut changed = Vec::new();
    for r in racers {
        let outcome = r.await.unwrap();
        assert!(outcome.done && !outcome.unresolved(), "{outcome:?}");
        changed.extend(outcome.changed);
    }
    assert_eq!(changed, ["usr_a"], "exactly one run changes the key");
    assert_eq!(
        id_by_key(&b, "ä@example.org").await.as_deref(),
        Some("usr_a")
    );

    add_keyed_user(&f.a, "usr_c", "Ö@example.org", "Ö-stale").await;
    let later = b
        .users
        .rekey_emails("step", &key_of, true, t0())
        .await
        .unwrap();
    assert!(
        later.already_done && later.done && later.scanned == 0,
        "{later:?}"
    );
    assert_eq!(id_by_key(&f.a, "Ö-stale").await.as_deref(), Some("usr_c"));
    let dry = b
        .users
        .rekey_emails("step", &key_of, false, t0())
        .await
        .unwrap();
    assert!(dry.already_done, "{dry:?}");

    let next =
        f.a.users
            .rekey_emails("step-2", &key_of, true, t0())
            .await
            .unwrap();
    assert_eq!(next.changed, ["usr_c"]);
    assert_eq!(next.scanned, 2);
    assert_eq!(
        id_by_key(&b, "ö@example.org").await.as_deref(),
        Some("usr_c")
    );
}

/// A closed backend fails its calls (with an error, at once); it neither
/// panics nor hangs. Liveness answers while open.
async fn a_closed_backend_fails_closed(backend: Backend) {
    let f = Fixture::new(backend).await;
    f.a.backend.ping().await.unwrap();
    assert_eq!(f.a.backend.name(), "database");
    f.a.backend.close().await;
    let read = tokio::time::timeout(StdDuration::from_secs(10), f.a.users.user_by_id("usr_a"))
        .await
        .expect("a closed backend answers at once");
    assert!(matches!(read, Err(StoreError::Backend(_))));
    assert!(f.a.backend.ping().await.is_err());
}

/// Deployment facts: unknown until recorded, then the last value written,
/// on every node; each write returns the value it replaced.
async fn deployment_facts_are_the_last_written(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    assert_eq!(
        f.a.keys.deployment_fact("sessions_store").await.unwrap(),
        None
    );
    let before =
        f.a.keys
            .set_deployment_fact("sessions_store", "database", t0())
            .await
            .unwrap();
    assert_eq!(before, None);
    let before = b
        .keys
        .set_deployment_fact("sessions_store", "redis tessera:", t0() + ms(1))
        .await
        .unwrap();
    assert_eq!(before.as_deref(), Some("database"));
    assert_eq!(
        f.a.keys
            .deployment_fact("sessions_store")
            .await
            .unwrap()
            .as_deref(),
        Some("redis tessera:")
    );
    assert_eq!(f.a.keys.deployment_fact("other").await.unwrap(), None);
}

// --- single-use link tokens ---------------------------------------------

fn link(hash: &SecretHash, purpose: &str, user_id: &str, expires_ms: i64) -> LinkToken {
    LinkToken {
        hash: *hash,
        purpose: purpose.into(),
        user_id: user_id.into(),
        created_at: t0(),
        expires_at: t0() + ms(expires_ms),
    }
}

/// A token is consumed once, by its purpose, before its expiry; a used
/// one stays used on every node; voiding ends a user's other tokens of a
/// purpose; a hash is stored once; expired tokens are deleted by the sweep;
/// a deleted user's tokens go with it.
async fn link_tokens_are_single_use_and_expire(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    add_user(&f.a, "usr_b").await;
    let reset = "password_reset";
    let h1 = fresh_hash();
    f.a.links
        .insert_link_token(&link(&h1, reset, "usr_a", 1000))
        .await
        .unwrap();
    // A hash is stored once.
    assert!(matches!(
        f.a.links
            .insert_link_token(&link(&h1, reset, "usr_b", 1000))
            .await,
        Err(StoreError::Conflict)
    ));
    // Another purpose, an unknown hash: nothing, and the token stays.
    let links = &f.a.links;
    assert_eq!(
        links
            .consume_link_token(&h1, "email_verification", t0())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        links
            .consume_link_token(&fresh_hash(), reset, t0())
            .await
            .unwrap(),
        None
    );
    // Used once, on whichever node.
    assert_eq!(
        b.links
            .consume_link_token(&h1, reset, t0() + ms(10))
            .await
            .unwrap()
            .as_deref(),
        Some("usr_a")
    );
    assert_eq!(
        links
            .consume_link_token(&h1, reset, t0() + ms(20))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        b.links
            .consume_link_token(&h1, reset, t0() + ms(20))
            .await
            .unwrap(),
        None
    );
    // Expiry: usable until just before `expires_at`, not at it.
    let h2 = fresh_hash();
    links
        .insert_link_token(&link(&h2, reset, "usr_a", 1000))
        .await
        .unwrap();
    assert_eq!(
        links
            .consume_link_token(&h2, reset, t0() + ms(1000))
            .await
            .unwrap(),
        None
    );
    let h3 = fresh_hash();
    links
        .insert_link_token(&link(&h3, reset, "usr_a", 1000))
        .await
        .unwrap();
    assert_eq!(
        links
            .consume_link_token(&h3, reset, t0() + ms(999))
            .await
            .unwrap()
            .as_deref(),
        Some("usr_a")
    );
    // Voiding: the user's unused tokens of that purpose, no one else's.
    let (a1, a2, a_other, b1) = (fresh_hash(), fresh_hash(), fresh_hash(), fresh_hash());
    for (h, purpose, user) in [
        (&a1, reset, "usr_a"),
        (&a2, reset, "usr_a"),
        (&a_other, "email_verification", "usr_a"),
        (&b1, reset, "usr_b"),
    ] {
        links
            .insert_link_token(&link(h, purpose, user, 5000))
            .await
            .unwrap();
    }
    // (h2, never used, counts too.)
    assert_eq!(
        links
            .void_link_tokens("usr_a", reset, t0() + ms(30))
            .await
            .unwrap(),
        3
    );
    for h in [&a1, &a2] {
        assert_eq!(
            b.links
                .consume_link_token(h, reset, t0() + ms(40))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        b.links
            .consume_link_token(&a_other, "email_verification", t0() + ms(40))
            .await
            .unwrap()
            .as_deref(),
        Some("usr_a")
    );
    // The sweep deletes what expired before the cut, used or not.
    let late = fresh_hash();
    links
        .insert_link_token(&link(&late, reset, "usr_b", 10_000))
        .await
        .unwrap();
    assert_eq!(
        links
            .delete_expired_link_tokens(t0() + ms(5001))
            .await
            .unwrap(),
        // h1, h2, h3 (1000) and a1, a2, a_other, b1 (5000).
        7
    );
    assert_eq!(
        links
            .delete_expired_link_tokens(t0() + ms(5001))
            .await
            .unwrap(),
        0
    );
    // A deleted user's tokens go with it.
    assert_eq!(
        f.a.users.delete_user("usr_b", None).await.unwrap(),
        UserWrite::Done
    );
    assert_eq!(
        links
            .consume_link_token(&late, reset, t0() + ms(50))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        links
            .delete_expired_link_tokens(t0() + ms(20_000))
            .await
            .unwrap(),
        0
    );
}

/// Of many consumes of one token racing on two nodes, exactly one wins.
async fn racing_consumes_of_a_link_token_exactly_one_wins(backend: Backend) {
    const ROUNDS: usize = 30;
    const RACERS: usize = 6;
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    for round in 0..ROUNDS {
        let hash = fresh_hash();
        f.a.links
            .insert_link_token(&link(&hash, "password_reset", "usr_a", 60_000))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = Vec::new();
        for i in 0..RACERS {
            let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
            let barrier = Arc::clone(&barrier);
            racers.push(tokio::spawn(async move {
                barrier.wait().await;
                node.links
                    .consume_link_token(&hash, "password_reset", t0() + ms(1))
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for r in racers {
            if r.await.unwrap().is_some() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one consume wins");
    }
}

/// A look at a link token finds its user only while a consume would, on
/// every node, and changes nothing: the token still works afterwards.
async fn a_link_token_is_looked_at_without_being_used(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    let reset = "password_reset";
    let h = fresh_hash();
    f.a.links
        .insert_link_token(&link(&h, reset, "usr_a", 1000))
        .await
        .unwrap();
    for node in [&f.a, &b] {
        for _ in 0..2 {
            assert_eq!(
                node.links
                    .link_token_user(&h, reset, t0() + ms(10))
                    .await
                    .unwrap()
                    .as_deref(),
                Some("usr_a")
            );
        }
    }
    // Another purpose, an unknown hash, at or past the expiry: nothing.
    let peek = |hash: SecretHash, purpose: &'static str, at: i64| {
        let links = f.a.links.clone();
        async move {
            links
                .link_token_user(&hash, purpose, t0() + ms(at))
                .await
                .unwrap()
        }
    };
    assert_eq!(peek(h, "email_verification", 10).await, None);
    assert_eq!(peek(fresh_hash(), reset, 10).await, None);
    assert_eq!(peek(h, reset, 1000).await, None);
    // Looking used nothing: the token is consumed once, then seen no more.
    assert_eq!(
        b.links
            .consume_link_token(&h, reset, t0() + ms(20))
            .await
            .unwrap()
            .as_deref(),
        Some("usr_a")
    );
    assert_eq!(peek(h, reset, 30).await, None);
    // Voided tokens are not seen either.
    let v = fresh_hash();
    f.a.links
        .insert_link_token(&link(&v, reset, "usr_a", 1000))
        .await
        .unwrap();
    f.a.links
        .void_link_tokens("usr_a", reset, t0() + ms(40))
        .await
        .unwrap();
    assert_eq!(peek(v, reset, 50).await, None);
}

fn device(n: u8) -> SecretHash {
    SecretHash([n; 32])
}

/// The first device of an account is `First`, another one `New`, a seen
/// one `Known` (on every node); an account keeps at most `keep` devices,
/// the least recently seen going first; accounts do not share devices; a
/// missing user records nothing; a deleted user's devices go with it.
async fn known_devices_are_remembered_capped_and_go_with_their_user(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    add_user(&f.a, "usr_b").await;
    let devices = &f.a.devices;
    let at = |n: i64| t0() + ms(n);
    assert_eq!(
        devices
            .remember_device("usr_a", &device(1), at(0), 3)
            .await
            .unwrap(),
        DeviceSighting::First
    );
    assert_eq!(
        b.devices
            .remember_device("usr_a", &device(1), at(10), 3)
            .await
            .unwrap(),
        DeviceSighting::Known
    );
    assert_eq!(
        b.devices
            .remember_device("usr_a", &device(2), at(20), 3)
            .await
            .unwrap(),
        DeviceSighting::New
    );
    assert_eq!(
        devices
            .remember_device("usr_a", &device(2), at(30), 3)
            .await
            .unwrap(),
        DeviceSighting::Known
    );
    // Another account's devices are its own.
    assert_eq!(
        devices
            .remember_device("usr_b", &device(1), at(40), 3)
            .await
            .unwrap(),
        DeviceSighting::First
    );
    // The cap: usr_a has 1 (seen at 10) and 2 (at 30); 3 fits, 4 pushes
    // out the least recently seen, 1.
    for (d, t) in [(3, 50), (4, 60)] {
        assert_eq!(
            devices
                .remember_device("usr_a", &device(d), at(t), 3)
                .await
                .unwrap(),
            DeviceSighting::New
        );
    }
    for d in [2, 3, 4] {
        assert_eq!(
            devices
                .remember_device("usr_a", &device(d), at(70), 3)
                .await
                .unwrap(),
            DeviceSighting::Known,
            "device {d}"
        );
    }
    // A sighting never moves `last_seen_at` back (2's at 5 leaves it at
    // 70); then 2 is seen at 90 and 4 at 80, so when 1 comes back it
    // pushes out 3, the least recently seen (70).
    devices
        .remember_device("usr_a", &device(2), at(5), 3)
        .await
        .unwrap();
    devices
        .remember_device("usr_a", &device(2), at(90), 3)
        .await
        .unwrap();
    devices
        .remember_device("usr_a", &device(4), at(80), 3)
        .await
        .unwrap();
    assert_eq!(
        devices
            .remember_device("usr_a", &device(1), at(100), 3)
            .await
            .unwrap(),
        DeviceSighting::New
    );
    for d in [1, 2, 4] {
        assert_eq!(
            b.devices
                .remember_device("usr_a", &device(d), at(110), 3)
                .await
                .unwrap(),
            DeviceSighting::Known,
            "device {d}"
        );
    }
    assert_eq!(
        devices
            .remember_device("usr_a", &device(3), at(120), 3)
            .await
            .unwrap(),
        DeviceSighting::New,
        "3 was pushed out"
    );
    // No such user (or text no backend can hold): nothing recorded.
    for missing in ["usr_nobody", "usr_\0"] {
        assert_eq!(
            devices
                .remember_device(missing, &device(1), at(130), 3)
                .await
                .unwrap(),
            DeviceSighting::NoSuchUser
        );
    }
    // A deleted user's devices go with it: the id, were it ever used
    // again, would start afresh.
    assert_eq!(
        f.a.users.delete_user("usr_b", None).await.unwrap(),
        UserWrite::Done
    );
    assert_eq!(
        devices
            .remember_device("usr_b", &device(1), at(140), 3)
            .await
            .unwrap(),
        DeviceSighting::NoSuchUser
    );
    add_user(&f.a, "usr_b").await;
    assert_eq!(
        devices
            .remember_device("usr_b", &device(1), at(150), 3)
            .await
            .unwrap(),
        DeviceSighting::First
    );
}

/// Racing sightings on two nodes: of many of one new device exactly one
/// reports it (`First` on a new account), and of sightings of different
/// devices on an account without any, exactly one is `First`.
async fn racing_sightings_report_a_new_device_once(backend: Backend) {
    const RACERS: usize = 6;
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    for round in 0..10u8 {
        let user = format!("usr_r{round}");
        add_user(&f.a, &user).await;
        let barrier = Arc::new(Barrier::new(RACERS));
        let mut racers = Vec::new();
        for i in 0..RACERS {
            let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
            let (barrier, user) = (Arc::clone(&barrier), user.clone());
            // Half the racers bring device 1, half a device of their own.
            let d = if i < RACERS / 2 { 1 } else { 100 + i as u8 };
            racers.push(tokio::spawn(async move {
                barrier.wait().await;
                (
                    d,
                    node.devices
                        .remember_device(&user, &device(d), t0() + ms(1), 50)
                        .await
                        .unwrap(),
                )
            }));
        }
        let mut firsts = 0;
        let mut device_one_reported = 0;
        for r in racers {
            let (d, seen) = r.await.unwrap();
            if seen == DeviceSighting::First {
                firsts += 1;
            }
            if d == 1 && seen != DeviceSighting::Known {
                device_one_reported += 1;
            }
            if d != 1 {
                assert_ne!(seen, DeviceSighting::Known, "round {round}: {d} is new");
            }
        }
        assert_eq!(firsts, 1, "round {round}: exactly one first device");
        assert_eq!(
            device_one_reported, 1,
            "round {round}: device 1 is new once"
        );
    }
}

/// An email is verified once (the first time is kept), and a new email
/// starts unverified; both are seen by every node; a taken key conflicts
/// and changes nothing.
async fn email_verification_and_email_changes(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    add_user(&f.a, "usr_a").await;
    add_user(&f.a, "usr_b").await;
    assert!(
        !b.users
            .user_by_id("usr_a")
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
    assert!(
        f.a.users
            .set_email_verified("usr_a", t0() + ms(5))
            .await
            .unwrap()
    );
    assert!(
        f.a.users
            .set_email_verified("usr_a", t0() + ms(9))
            .await
            .unwrap()
    );
    assert!(
        b.users
            .user_by_id("usr_a")
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
    let (found, _) = b
        .users
        .credentials_by_email("usr_a@example.com")
        .await
        .unwrap()
        .unwrap();
    assert!(found.email_verified);

    // A new email: shown form and key replaced, unverified again.
    assert!(
        f.a.users
            .set_email("usr_a", "New@Example.com", "new@example.com", t0() + ms(10))
            .await
            .unwrap()
    );
    let seen = b.users.user_by_id("usr_a").await.unwrap().unwrap();
    assert_eq!(seen.email, "New@Example.com");
    assert!(!seen.email_verified);
    assert!(
        b.users
            .credentials_by_email("usr_a@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        b.users
            .credentials_by_email("new@example.com")
            .await
            .unwrap()
            .unwrap()
            .0
            .id,
        "usr_a"
    );
    // Another user's key: a conflict, and nothing changed.
    let taken =
        f.a.users
            .set_email("usr_b", "NEW@example.com", "new@example.com", t0() + ms(11))
            .await;
    assert!(matches!(taken, Err(StoreError::Conflict)), "{taken:?}");
    assert_eq!(
        b.users.user_by_id("usr_b").await.unwrap().unwrap().email,
        "usr_b@example.com"
    );
    // Unknown users: false, never an error.
    assert!(!f.a.users.set_email_verified("usr_x", t0()).await.unwrap());
    assert!(
        !f.a.users
            .set_email("usr_x", "x@example.com", "x@example.com", t0())
            .await
            .unwrap()
    );
    // Inserted verified: verified.
    let mut verified = user("usr_v");
    verified.email_verified = true;
    f.a.users
        .insert_user(&verified, &verified.email, "$argon2id$stub")
        .await
        .unwrap();
    assert!(
        b.users
            .user_by_id("usr_v")
            .await
            .unwrap()
            .unwrap()
            .email_verified
    );
}

fn invitation(hash: &SecretHash, email_key: &str, expires_ms: i64) -> Invitation {
    Invitation {
        hash: *hash,
        email: email_key.to_uppercase(),
        email_key: email_key.to_owned(),
        roles: vec!["editor".to_owned(), "viewer".to_owned()],
        created_by: "usr_admin".to_owned(),
        mailed: true,
        created_at: t0(),
        expires_at: t0() + ms(expires_ms),
    }
}

/// An invitation is looked at without being used, used once, only for its
/// address, only before it expires, on any node, and swept once expired.
async fn invitations_are_single_use_bound_and_expire(backend: Backend) {
    let f = Fixture::new(backend).await;
    let b = f.node().await;
    let h = fresh_hash();
    f.a.links
        .insert_invitation(&invitation(&h, "guest@example.com", 1000))
        .await
        .unwrap();
    let again =
        f.a.links
            .insert_invitation(&invitation(&h, "other@example.com", 1000))
            .await;
    assert!(matches!(again, Err(StoreError::Conflict)), "{again:?}");

    let looked = b.links.invitation(&h, t0() + ms(5)).await.unwrap().unwrap();
    assert_eq!(looked, invitation(&h, "guest@example.com", 1000));
    assert!(
        b.links
            .invitation(&h, t0() + ms(1000))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        b.links
            .invitation(&fresh_hash(), t0())
            .await
            .unwrap()
            .is_none()
    );
    // Another address: nothing happens.
    assert!(
        b.links
            .consume_invitation(&h, "other@example.com", t0() + ms(10))
            .await
            .unwrap()
            .is_none()
    );
    // Its address: once.
    let used = b
        .links
        .consume_invitation(&h, "guest@example.com", t0() + ms(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.roles, ["editor", "viewer"]);
    assert!(used.mailed);
    assert!(
        f.a.links
            .consume_invitation(&h, "guest@example.com", t0() + ms(11))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.a.links
            .invitation(&h, t0() + ms(11))
            .await
            .unwrap()
            .is_none()
    );

    // Expired: refused, then swept.
    let late = fresh_hash();
    f.a.links
        .insert_invitation(&invitation(&late, "late@example.com", 100))
        .await
        .unwrap();
    assert!(
        b.links
            .consume_invitation(&late, "late@example.com", t0() + ms(100))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        f.a.links
            .delete_expired_link_tokens(t0() + ms(1001))
            .await
            .unwrap(),
        2
    );
    // Racing uses: exactly one wins.
    let raced = fresh_hash();
    f.a.links
        .insert_invitation(&invitation(&raced, "race@example.com", 60_000))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(6));
    let mut racers = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { f.a.clone() } else { b.clone() };
        let barrier = Arc::clone(&barrier);
        racers.push(tokio::spawn(async move {
            barrier.wait().await;
            node.links
                .consume_invitation(&raced, "race@example.com", t0() + ms(2000))
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for r in racers {
        if r.await.unwrap().is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one use of an invitation wins");
}

/// One test per check and backend.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::Backend::Postgres).await;
                }
            )*
        }
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $check() {
                    super::$check(super::Backend::PostgresRedis).await;
                }
            )*
        }
    };
}

conformance!(
    users_are_unique_by_email_key,
    users_are_listed_literally_in_pages,
    user_updates_reach_every_node,
    generation_moves_on_invalidation_only,
    the_last_active_holder_of_a_kept_role_stays,
    racing_removals_of_the_last_two_holders_leave_one,
    deleting_a_user_forgets_its_email_and_frees_it,
    a_session_and_its_audit_event_commit_together,
    idle_and_absolute_expiry,
    sessions_leave_at_their_deadline,
    queued_touches,
    listing_and_bulk_revocation,
    refresh_rotation_and_reuse,
    live_families_are_listed_by_last_rotation,
    racing_rotations_exactly_one_wins,
    the_change_log_is_read_in_commit_order,
    changes_round_trip,
    the_revocation_log_is_read_in_commit_order,
    appends_are_pushed_to_other_nodes,
    key_rotation_is_a_compare_and_set,
    server_secrets_first_writer_wins,
    deployment_facts_are_the_last_written,
    clients_are_stored_by_id,
    clients_are_listed_disabled_rotated_and_deleted,
    the_audit_log_pages_newest_first,
    the_audit_log_pages_oldest_first_for_export,
    lookups_by_unstorable_text_find_nothing,
    rekeying_emails_never_merges_and_reports_collisions,
    a_resolved_rekeying_is_recorded_and_racing_runs_serialise,
    a_closed_backend_fails_closed,
    link_tokens_are_single_use_and_expire,
    racing_consumes_of_a_link_token_exactly_one_wins,
    a_link_token_is_looked_at_without_being_used,
    email_verification_and_email_changes,
    invitations_are_single_use_bound_and_expire,
    known_devices_are_remembered_capped_and_go_with_their_user,
    racing_sightings_report_a_new_device_once,
);
