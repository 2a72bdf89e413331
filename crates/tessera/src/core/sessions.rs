//! Stateful browser sessions.
//!
//! What this module guarantees:
//! - **Opaque, unguessable ids.** The cookie holds 256 random bits; the store
//!   keeps only their SHA-256, and the public `ses_…` id shown in lists is a
//!   different random value, so listing sessions reveals no cookie.
//! - **No fixation.** A login always creates a new session, and a session the
//!   login request already carried is destroyed first.
//! - **Two expiries.** A session dies after `idle` without use or after
//!   `absolute` since login, whichever comes first; both are decided from the
//!   injected clock. `last_seen_at` is written at most once per `touch_every`,
//!   so a plain check is a read (usually a cache hit), not a write, and that
//!   write is queued, never waited for (losing it can only shorten a session).
//! - **Fresh authority.** The user's roles and status are read (through the
//!   user cache, which change events keep coherent) on every request, so a role
//!   change or suspension shows at the next request.
//! - **Same answer for unknown emails and wrong passwords**, in about the same
//!   time: an unknown email is checked against a dummy hash.

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::Tessera;
use super::accounts::{Password, User, UserStatus, parse_email};
use super::error::{CoreError, CoreResult};
use super::events::Change;
use super::passwords::Principals;
use super::revocation::Revocation;
use super::secret::{BearerSecret, SecretHash, is_id, new_id};

/// Session lifetimes, validated by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub idle: Duration,
    pub absolute: Duration,
    /// Minimum time between two `last_seen_at` writes for one session.
    pub touch_every: Duration,
    /// Most sessions one user keeps; a login beyond it ends the oldest.
    pub max_per_user: u32,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            idle: Duration::hours(2),
            absolute: Duration::days(30),
            touch_every: Duration::minutes(1),
            max_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
        }
    }
}

/// A session as stored. `token_hash` is the SHA-256 of the cookie value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: SecretHash,
    pub id: String,
    pub user_id: String,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// Absolute expiry.
    pub expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Not stored: the session's user as last read through the user cache,
    /// so a cached session reaches its user without a second lookup.
    pub user_memo: UserMemo,
}

/// A session's user remembered with the user cache's generation at the time
/// it was read; any change to any cached user bumps the generation, which
/// makes every memo stale at once (see [`crate::store::UserStore::generation`]).
///
/// A mutex rather than an atomic pointer: it sits beside the record's other
/// fields, so reading it costs no further cache miss, and it is held for a
/// compare and a reference count only.
#[derive(Default)]
pub struct UserMemo(std::sync::Mutex<Option<(u64, Arc<User>)>>);

impl UserMemo {
    /// The remembered user if nothing changed since `generation`.
    pub fn get(&self, generation: u64) -> Option<Arc<User>> {
        let memo = self.0.lock().ok()?;
        memo.as_ref()
            .filter(|(g, _)| *g == generation)
            .map(|(_, user)| Arc::clone(user))
    }

    pub fn set(&self, generation: u64, user: Arc<User>) {
        if let Ok(mut memo) = self.0.lock() {
            *memo = Some((generation, user));
        }
    }
}

/// A memo is a shortcut, not data: a record's copy starts empty and records
/// compare equal whatever they remember.
impl Clone for UserMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for UserMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for UserMemo {}

impl std::fmt::Debug for UserMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserMemo")
    }
}

impl SessionRecord {
    /// This session as it reads after use at `at` (`last_seen_at` never
    /// moves back).
    pub fn touched(&self, at: OffsetDateTime) -> Self {
        Self {
            last_seen_at: self.last_seen_at.max(at),
            ..self.clone()
        }
    }
}

/// Whether a session may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Usable; `touch` says `last_seen_at` is old enough to be written again.
    Live {
        touch: bool,
    },
    Expired,
}

impl SessionPolicy {
    pub fn idle_expires_at(&self, s: &SessionRecord) -> OffsetDateTime {
        (s.last_seen_at + self.idle).min(s.expires_at)
    }

    pub fn liveness(&self, s: &SessionRecord, now: OffsetDateTime) -> Liveness {
        if now >= self.idle_expires_at(s) {
            return Liveness::Expired;
        }
        Liveness::Live {
            touch: now - s.last_seen_at >= self.touch_every,
        }
    }
}

/// Where a request came from, recorded on the session for the user's own list.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn ip_addr(&self) -> Option<std::net::IpAddr> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }
}

/// A verified session and its user, as read for this request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: Arc<User>,
    pub session: Arc<SessionRecord>,
}

/// Sessions one user keeps at most by default: more devices than anyone
/// has, few enough that a script logging in for ever cannot grow the
/// device list (and every logout-everywhere) without bound.
pub const DEFAULT_MAX_SESSIONS_PER_USER: u32 = 100;

/// The contract's longest email (RFC 5321's path limit less the brackets).
const EMAIL_MAX_BYTES: usize = 254;

/// A session just created: the secret goes into the cookie and nowhere else.
#[derive(Debug)]
pub struct NewSession {
    pub secret: BearerSecret,
    pub auth: Authenticated,
}

/// The CSRF token of a session, derived from its cookie value.
pub fn csrf_token_for(secret: &BearerSecret) -> String {
    secret.derive("csrf")
}

impl Tessera {
    /// A new session's cookie value, in the shape the session store asks
    /// for (grouped by user where it keeps a user's sessions together).
    fn new_session_secret(&self, user_id: &str) -> BearerSecret {
        if self.stores.sessions.tags_sessions() {
            BearerSecret::generate_tagged(super::secret::session_tag(user_id))
        } else {
            BearerSecret::generate()
        }
    }

    /// Checks credentials and starts a session. `replacing` is the session the
    /// request already carried: it is destroyed before anything else happens.
    pub async fn login(
        &self,
        email: &str,
        password: Password,
        replacing: Option<&BearerSecret>,
        client: ClientInfo,
    ) -> CoreResult<NewSession> {
        if let Some(old) = replacing {
            self.end_session_by_secret(old).await?;
        }
        let user = self
            .check_credentials(email, password, &client, "session")
            .await?;
        let now = self.now();
        let secret = self.new_session_secret(&user.id);
        let record = SessionRecord {
            token_hash: secret.hash(),
            id: new_id("ses"),
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.policy.sessions.absolute,
            ip: client.ip.clone(),
            user_agent: client.user_agent.clone(),
            user_memo: UserMemo::default(),
        };
        let audit = self.audit_event(
            "login_succeeded",
            Some(&user.id),
            Some(&client),
            json!({"via": "session", "session": record.id}),
        );
        if !self
            .stores
            .sessions
            .insert_session(&record, Some(audit))
            .await?
        {
            // The account was deleted while its password was checked.
            return Err(CoreError::InvalidCredentials);
        }
        tracing::info!(user_id = %user.id, session = %record.id, "session started");
        self.end_sessions_over_cap(&user.id, &record.id).await?;
        Ok(NewSession {
            secret,
            auth: Authenticated {
                user: Arc::new(user),
                session: Arc::new(record),
            },
        })
    }

    /// Changes the password after checking the current one, then ends every
    /// session, refresh family and earlier access token of the user. A caller
    /// on a session gets a fresh one in its place (rotation on a privilege
    /// change), returned here.
    pub async fn change_password(
        &self,
        user_id: &str,
        current: Password,
        new: Password,
        session: Option<&SessionRecord>,
        client: &ClientInfo,
    ) -> CoreResult<Option<NewSession>> {
        // Checked like a login (issue #19 findings 1 and 2): the same
        // per-address bucket, per-account backoff, fair share of the hashing
        // pool and audit of failures, so a session or token is not a licence
        // to guess the password, nor to starve everyone else's logins.
        current
            .check_policy()
            .map_err(|_| CoreError::InvalidCredentials)?;
        new.check_policy()?;
        self.check_ip_rate(client).await?;
        let user = self.active_user(user_id).await?;
        let account = parse_email(&user.email).map_or_else(|_| user.id.clone(), |e| e.key);
        let who = self.admit_password_check(&account, Some(&user.id), client)?;
        self.check_new_password(&who, &new, &user.email).await?;
        let stored = self.stores.users.password_hash(user_id).await?;
        if !self.passwords.verify(&who, current, stored).await? {
            self.telemetry.count(
                "tessera_password_changes_total",
                &[("outcome", "invalid_credentials")],
            );
            self.record_password_failure(&account, Some(user_id), client)
                .await;
            self.audit(
                "password_change_failed",
                Some(user_id),
                Some(client),
                json!({"reason": "invalid_credentials"}),
            )
            .await;
            return Err(CoreError::InvalidCredentials);
        }
        self.limits.record_success(&account, client.ip_addr());
        let hash = self.passwords.hash(&who, new).await?;
        if !self
            .stores
            .users
            .set_password_hash(user_id, &hash, self.now())
            .await?
        {
            return Err(CoreError::Unauthenticated);
        }
        self.end_all_sessions(user_id).await?;
        self.revoke_user_tokens(user_id).await?;
        self.publish(Change::UserSessionsRevoked {
            user_id: user_id.to_owned(),
        })
        .await?;
        self.audit("password_changed", Some(user_id), Some(client), json!({}))
            .await;
        let Some(old) = session else {
            return Ok(None);
        };
        self.revoke_sid(&old.id).await?;
        let user = self.active_user(user_id).await?;
        let now = self.now();
        let secret = self.new_session_secret(user_id);
        let record = SessionRecord {
            token_hash: secret.hash(),
            id: new_id("ses"),
            user_id: user_id.to_owned(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.policy.sessions.absolute,
            ip: client.ip.clone().or_else(|| old.ip.clone()),
            user_agent: client.user_agent.clone().or_else(|| old.user_agent.clone()),
            user_memo: UserMemo::default(),
        };
        if !self.stores.sessions.insert_session(&record, None).await? {
            return Err(CoreError::Unauthenticated);
        }
        Ok(Some(NewSession {
            secret,
            auth: Authenticated {
                user,
                session: Arc::new(record),
            },
        }))
    }

    /// Verifies email and password; the shared first step of every password
    /// login (`via` says which: `session`, `token`, `jwt-cookie`). Unknown
    /// emails cost the same hash as known ones. Applies the per-address rate
    /// and the per-account backoff (see `limits`). A wrong password or a
    /// suspended account is audited as `login_failed`, naming the account
    /// when the email is one (never the password or the email typed).
    pub async fn check_credentials(
        &self,
        email: &str,
        password: Password,
        client: &ClientInfo,
        via: &'static str,
    ) -> CoreResult<User> {
        // Malformed input is refused before any limiter state is touched:
        // no email longer than the contract allows is ever a key.
        password.check_policy()?;
        if email.len() > EMAIL_MAX_BYTES {
            return Err(CoreError::Validation(format!(
                "email: it is longer than {EMAIL_MAX_BYTES} bytes"
            )));
        }
        self.check_ip_rate(client).await?;
        let parsed = parse_email(email);
        let account = parsed
            .as_ref()
            .map_or_else(|_| email.trim().to_lowercase(), |e| e.key.clone());
        let who = self.admit_password_check(&account, None, client)?;
        let found = match parsed {
            Ok(email) => self.stores.users.credentials_by_email(&email.key).await?,
            Err(_) => None,
        };
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let matches = self.passwords.verify(&who, password, hash).await?;
        match user {
            Some(user) if matches => {
                self.limits.record_success(&account, client.ip_addr());
                if user.status == UserStatus::Suspended {
                    self.telemetry
                        .count("tessera_logins_total", &[("outcome", "suspended")]);
                    self.audit(
                        "login_failed",
                        Some(&user.id),
                        Some(client),
                        json!({"via": via, "reason": "suspended"}),
                    )
                    .await;
                    return Err(CoreError::AccountSuspended);
                }
                self.require_verified_email(&user, Some(client), via)
                    .await?;
                self.telemetry
                    .count("tessera_logins_total", &[("outcome", "success")]);
                self.note_device(&user, client).await;
                Ok(user)
            }
            found => {
                self.telemetry.count(
                    "tessera_logins_total",
                    &[("outcome", "invalid_credentials")],
                );
                self.record_password_failure(
                    &account,
                    found.as_ref().map(|u| u.id.as_str()),
                    client,
                )
                .await;
                self.audit(
                    "login_failed",
                    found.as_ref().map(|u| u.id.as_str()),
                    Some(client),
                    json!({"via": via, "reason": "invalid_credentials"}),
                )
                .await;
                Err(CoreError::InvalidCredentials)
            }
        }
    }

    /// Admits one password check for `account` from `client`, or refuses
    /// it without hashing: while the (account, address) pair backs off
    /// (429), or when the hashing pool is full (503). Returns who the hash
    /// is for, so the pool can share itself fairly: the address, and the
    /// `caller`'s own account when it is authenticated. (A login's target
    /// account is not its principal: strangers flooding it must not use up
    /// the owner's share.)
    fn admit_password_check(
        &self,
        account: &str,
        caller: Option<&str>,
        client: &ClientInfo,
    ) -> CoreResult<Principals> {
        let ip = client.ip_addr();
        if let Err(super::limits::RetryAfter(secs)) =
            self.limits.check_account(account, ip, self.now())
        {
            self.telemetry
                .count("tessera_rate_limited_total", &[("limit", "login_backoff")]);
            self.telemetry
                .count("tessera_logins_total", &[("outcome", "rate_limited")]);
            return Err(CoreError::RateLimited(secs));
        }
        // Refused before the account is read: a flood beyond the hashing
        // queue then costs a counter read per attempt, not a database read,
        // and the core stays with the hashes it accepted.
        if self.passwords.pool().is_full() {
            return Err(CoreError::Busy);
        }
        Ok(Principals::new(
            ip.filter(|_| self.limits.per_address()),
            caller,
        ))
    }

    /// Counts a wrong password against the (account, address) backoff and
    /// audits the lock when one starts.
    async fn record_password_failure(
        &self,
        account: &str,
        user_id: Option<&str>,
        client: &ClientInfo,
    ) {
        if let Some(super::limits::RetryAfter(secs)) =
            self.limits
                .record_failure(account, client.ip_addr(), self.now())
        {
            self.audit(
                "rate_limited",
                user_id,
                Some(client),
                json!({"limit": "login_backoff", "retry_after": secs}),
            )
            .await;
        }
    }

    /// The per-request check: is this cookie a live session, and whose?
    pub async fn authenticate_session(&self, secret: &BearerSecret) -> CoreResult<Authenticated> {
        let hash = secret.hash();
        let Some(mut session) = self.stores.sessions.session_by_hash(&hash).await? else {
            return Err(CoreError::Unauthenticated);
        };
        if self.revocations.is_session_ended(
            &session.id,
            &session.user_id,
            super::time::to_millis(session.created_at),
        ) {
            // Ended, yet the store gave it back: the durable log wins.
            if let Err(e) = self.stores.sessions.delete_session_by_hash(&hash).await {
                tracing::warn!(error = %e, "could not delete a revoked session");
            }
            return Err(CoreError::Unauthenticated);
        }
        let now = self.now();
        match self.policy.sessions.liveness(&session, now) {
            Liveness::Expired => {
                if let Err(e) = self.stores.sessions.delete_session_by_hash(&hash).await {
                    tracing::warn!(error = %e, "could not delete an expired session");
                }
                return Err(CoreError::Unauthenticated);
            }
            Liveness::Live { touch: true } => {
                // Written behind: this request does not wait for the commit.
                let touched = Arc::new(session.touched(now));
                match self.stores.sessions.queue_touch(&touched).await {
                    Ok(_queued) => session = touched,
                    Err(e) => tracing::warn!(error = %e, "could not record session activity"),
                }
            }
            Liveness::Live { touch: false } => {}
        }
        let generation = self.stores.users.generation();
        let user = match generation.and_then(|g| session.user_memo.get(g)) {
            Some(user) => user,
            None => {
                let user = self
                    .stores
                    .users
                    .user_by_id(&session.user_id)
                    .await?
                    .ok_or(CoreError::Unauthenticated)?;
                if let Some(g) = generation {
                    session.user_memo.set(g, Arc::clone(&user));
                }
                user
            }
        };
        if user.status != UserStatus::Active {
            return Err(CoreError::Unauthenticated);
        }
        Ok(Authenticated { user, session })
    }

    /// An access token for a signed-in browser, tied to its session: its
    /// `sid` is the session id (revoked when the session ends) and it never
    /// outlives the session's idle or absolute expiry.
    pub async fn session_access_token(
        &self,
        auth: &Authenticated,
    ) -> CoreResult<super::tokens::IssuedToken> {
        let cap = self.policy.sessions.idle_expires_at(&auth.session);
        self.issue_access_token(
            &auth.user,
            &auth.session.id,
            super::tokens::FIRST_PARTY_CLIENT,
            None,
            Some(cap),
        )
        .await
    }

    /// Ends the session the caller is using (logout).
    pub async fn logout(&self, auth: &Authenticated) -> CoreResult<()> {
        self.stores
            .sessions
            .delete_session_by_hash(&auth.session.token_hash)
            .await?;
        self.publish(Change::SessionRevoked {
            user_id: auth.user.id.clone(),
            session_id: auth.session.id.clone(),
            token_hash: auth.session.token_hash,
        })
        .await?;
        self.revoke_sid(&auth.session.id).await?;
        self.audit(
            "logout",
            Some(&auth.user.id),
            None,
            json!({"session": auth.session.id}),
        )
        .await;
        Ok(())
    }

    pub(crate) async fn end_session_by_secret(&self, secret: &BearerSecret) -> CoreResult<()> {
        if let Some(old) = self
            .stores
            .sessions
            .delete_session_by_hash(&secret.hash())
            .await?
        {
            self.revoke_sid(&old.id).await?;
            self.publish(Change::SessionRevoked {
                user_id: old.user_id,
                session_id: old.id,
                token_hash: old.token_hash,
            })
            .await?;
        }
        Ok(())
    }

    /// Ends every session of a user: deleted from the store, and a cut-off
    /// in the revocation log (sessions created before now), which the
    /// session path checks, so none of them comes back whatever the store
    /// gives back later. Returns how many the store deleted.
    pub(crate) async fn end_all_sessions(&self, user_id: &str) -> CoreResult<u64> {
        // The moment first: a login that lands while the sessions are being
        // deleted is after it, and stays.
        let before = super::time::to_millis(self.now());
        let n = self.stores.sessions.delete_user_sessions(user_id).await?;
        self.revoke(Revocation::Sessions {
            sub: user_id.to_owned(),
            before,
        })
        .await?;
        Ok(n)
    }

    /// The user's live sessions, newest first.
    pub async fn sessions_of(&self, user_id: &str) -> CoreResult<Vec<SessionRecord>> {
        let now = self.now();
        let mut sessions = self.stores.sessions.sessions_of_user(user_id).await?;
        sessions.retain(|s| matches!(self.policy.sessions.liveness(s, now), Liveness::Live { .. }));
        sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(sessions)
    }

    /// Revokes one of the user's own sessions; `NotFound` if it is not theirs.
    pub async fn revoke_session(&self, user_id: &str, session_id: &str) -> CoreResult<()> {
        let not_found = CoreError::NotFound("no such session");
        if !is_id("ses", session_id) {
            return Err(not_found);
        }
        let Some(deleted) = self
            .stores
            .sessions
            .delete_user_session(user_id, session_id)
            .await?
        else {
            return Err(not_found);
        };
        tracing::info!(user_id = %user_id, session = %session_id, "session revoked");
        self.revoke_sid(&deleted.id).await?;
        self.publish(Change::SessionRevoked {
            user_id: deleted.user_id,
            session_id: deleted.id,
            token_hash: deleted.token_hash,
        })
        .await?;
        self.audit(
            "session_revoked",
            Some(user_id),
            None,
            json!({"session": session_id}),
        )
        .await;
        Ok(())
    }

    /// Ends the user's oldest sessions beyond `max_per_user`, never `kept`
    /// (the one just started). Each is revoked as an explicit revocation
    /// would be, and audited as `session_revoked` with reason `session_cap`.
    async fn end_sessions_over_cap(&self, user_id: &str, kept: &str) -> CoreResult<()> {
        let cap = usize::try_from(self.policy.sessions.max_per_user).unwrap_or(usize::MAX);
        let sessions = self.stores.sessions.sessions_of_user(user_id).await?;
        if sessions.len() <= cap {
            return Ok(());
        }
        // Newest first: everything past the first `cap - 1` others goes.
        let others = sessions.iter().filter(|s| s.id != kept);
        for old in others.skip(cap.saturating_sub(1)) {
            let Some(deleted) = self
                .stores
                .sessions
                .delete_user_session(user_id, &old.id)
                .await?
            else {
                continue;
            };
            self.revoke_sid(&deleted.id).await?;
            self.publish(Change::SessionRevoked {
                user_id: deleted.user_id,
                session_id: deleted.id.clone(),
                token_hash: deleted.token_hash,
            })
            .await?;
            tracing::info!(user_id = %user_id, session = %deleted.id, "session ended: over the per-user cap");
            self.audit(
                "session_revoked",
                Some(user_id),
                None,
                json!({"session": deleted.id, "reason": "session_cap"}),
            )
            .await;
        }
        Ok(())
    }

    /// Ends every session, refresh family and earlier access token of the
    /// user (the user's own doing: the event names no actor).
    pub async fn logout_all(&self, user_id: &str) -> CoreResult<()> {
        self.logout_all_by(None, user_id).await
    }

    /// An administrator's "sign this user out everywhere": `NotFound` for
    /// an id that names no user (a typo is an error, not a silent success),
    /// else [`Tessera::logout_all_by`].
    pub async fn revoke_user_by(&self, actor: &str, user_id: &str) -> CoreResult<()> {
        self.user(user_id).await?;
        self.logout_all_by(Some(actor), user_id).await
    }

    /// [`Tessera::logout_all`] done to the user by `actor` (an admin's user
    /// id, or `cli`/`cli:NAME`), named in the event's `detail.actor`.
    pub async fn logout_all_by(&self, actor: Option<&str>, user_id: &str) -> CoreResult<()> {
        let n = self.end_all_sessions(user_id).await?;
        self.revoke_user_tokens(user_id).await?;
        tracing::info!(user_id = %user_id, sessions = n, "all sessions revoked");
        self.publish(Change::UserSessionsRevoked {
            user_id: user_id.to_owned(),
        })
        .await?;
        let detail = match actor {
            Some(actor) => json!({"sessions": n, "actor": actor}),
            None => json!({"sessions": n}),
        };
        self.audit("logout_all", Some(user_id), None, detail).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(now: OffsetDateTime) -> SessionRecord {
        SessionRecord {
            token_hash: SecretHash([0; 32]),
            id: "ses_x".into(),
            user_id: "usr_x".into(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + Duration::days(30),
            ip: None,
            user_agent: None,
            user_memo: UserMemo::default(),
        }
    }

    #[test]
    fn idle_expiry_counts_from_last_use() {
        let p = SessionPolicy::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(10_000);
        let mut s = record(t0);
        assert_eq!(p.liveness(&s, t0), Liveness::Live { touch: false });
        assert_eq!(
            p.liveness(&s, t0 + Duration::minutes(1)),
            Liveness::Live { touch: true }
        );
        assert_eq!(p.liveness(&s, t0 + Duration::hours(2)), Liveness::Expired);
        s.last_seen_at = t0 + Duration::hours(1);
        assert_eq!(
            p.liveness(&s, t0 + Duration::hours(2)),
            Liveness::Live { touch: true }
        );
    }

    #[test]
    fn absolute_expiry_wins_over_activity() {
        let p = SessionPolicy::default();
        let t0 = OffsetDateTime::UNIX_EPOCH + Duration::days(10_000);
        let mut s = record(t0);
        s.last_seen_at = t0 + Duration::days(30) - Duration::minutes(1);
        assert_eq!(p.idle_expires_at(&s), s.expires_at);
        assert_eq!(p.liveness(&s, t0 + Duration::days(30)), Liveness::Expired);
    }
}
