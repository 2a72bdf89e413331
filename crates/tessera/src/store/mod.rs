//! Store traits: exactly what a backend must guarantee, nothing more.
//!
//! The core talks only to these traits; every guarantee a backend keeps is
//! written on the trait method it belongs to, and `tests/store_conformance.rs`
//! checks each of them against every backend. [`open`] picks the backend from
//! the URL's scheme; each backend lives in a folder of its own (`sqlite/`,
//! `postgres/`, and `redis/` for sessions and the push beside either), and
//! adding one means a folder, an arm in [`open`], and a line in the
//! conformance suite. The bounded in-process caches in `cache` wrap the hot
//! reads of any backend; they are composed where the app is wired
//! (`app.rs`), not here and not in the core.
//!
//! Times are kept at millisecond precision: a record reads back exactly as
//! written when its times are whole milliseconds (see `core::time`).

pub mod cache;
pub mod forget;
mod guard;
pub mod migrate;
pub mod postgres;
mod push_task;
pub mod redis;
pub mod rekey;
pub mod sqlite;
mod write_queue;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{oneshot, watch};

use crate::core::accounts::{User, UserQuery, UserStatus};
use crate::core::audit::{AuditEvent, AuditExportQuery, AuditQuery};
use crate::core::clients::ServiceClient;
use crate::core::events::Change;
use crate::core::keys::StoredKey;
use crate::core::refresh::{LiveFamily, NewRefreshToken, RefreshFamily, Rotation};
use crate::core::revocation::Revocation;
use crate::core::secret::SecretHash;
use crate::core::sessions::SessionRecord;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint refused the write.
    #[error("conflict")]
    Conflict,
    /// The backend failed (down, corrupt, timed out). Never shown to clients.
    #[error("{0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Users and their credentials.
///
/// Every write is durable when it returns, and visible to every later read,
/// on this node and any other sharing the backend. Here and in every store
/// trait, text holding a NUL character (which no id, email or name does, and
/// PostgreSQL cannot store) matches nothing: a lookup by it finds nothing
/// and changes nothing, and is never an error.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts a user; `Conflict` (and nothing written) if the email key or
    /// the id is taken. Two racing inserts of one email key: exactly one
    /// succeeds.
    async fn insert_user(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> StoreResult<()>;
    async fn user_by_id(&self, id: &str) -> StoreResult<Option<Arc<User>>>;
    /// For a caching store: a number that moves whenever a cached user
    /// changes (before and after the entry is dropped), so a user read at
    /// one generation may be reused while the generation stays the same.
    /// `None` (every backend): no such guarantee, read the user every time.
    fn generation(&self) -> Option<u64> {
        None
    }
    /// The user and their password hash, by case-folded email.
    async fn credentials_by_email(&self, email_key: &str) -> StoreResult<Option<(User, String)>>;
    /// Users ordered by id, after `after_id`, whose email key contains
    /// `email_contains` literally (`%` and `_` are not wildcards), at most
    /// `limit`.
    async fn list_users(&self, query: &UserQuery) -> StoreResult<Vec<User>>;
    async fn password_hash(&self, id: &str) -> StoreResult<Option<String>>;
    /// Returns false when there is no such user.
    async fn set_password_hash(
        &self,
        id: &str,
        hash: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Marks the user's current email verified (at `at`, or at the time it
    /// was first marked); false when there is no such user.
    async fn set_email_verified(&self, id: &str, at: OffsetDateTime) -> StoreResult<bool>;
    /// Gives the user a new email (`email` as shown, `email_key` its key),
    /// not verified; `Conflict` (and nothing written) when another user
    /// has the key. False when there is no such user.
    async fn set_email(
        &self,
        id: &str,
        email: &str,
        email_key: &str,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Replaces the user's roles, guarded by `keep` (see
    /// [`UserWrite::LastHolder`]).
    async fn set_roles(
        &self,
        id: &str,
        roles: &[String],
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite>;
    /// Sets the user's status, guarded by `keep` (see
    /// [`UserWrite::LastHolder`]).
    async fn set_status(
        &self,
        id: &str,
        status: UserStatus,
        keep: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<UserWrite>;
    /// Deletes the user for good, guarded by `keep` (see
    /// [`UserWrite::LastHolder`]), in one transaction with:
    ///
    /// - what hangs off the user in the database: its sessions where they
    ///   live there, its refresh families and their tokens (sessions kept
    ///   elsewhere, in Redis, are the core's to end, as are the
    ///   revocations that make its access tokens die);
    /// - its audit events (`user_id` = `id`) losing the email while keeping
    ///   the id: every string in their `detail` (keys and values, at any
    ///   depth) and their `user_agent` that mentions the user's email
    ///   ([`forget::mentions`]: its key, or the key of the stored address,
    ///   found in the text's key, so any case or Unicode spelling of it)
    ///   becomes [`forget::REDACTED`]. Events recorded after this returns
    ///   are the caller's to keep free of it.
    ///
    /// The email key is free at once: a new user may register it. Durable
    /// when it returns; a later read by the id finds nothing on any node.
    async fn delete_user(&self, id: &str, keep: Option<&str>) -> StoreResult<UserWrite>;
    /// Gives users the email keys `key_of` makes from their emails: the
    /// data step named `step` (see `rekey`), after the key's definition
    /// changed.
    ///
    /// Only users whose email holds a non-ASCII character are looked at
    /// (`key_of` must give an ASCII email the key it has). For those, in
    /// one transaction that no write to users on any node interleaves
    /// with: a user whose `key_of` differs from its key gets that key,
    /// unless two or more users would then share a key (whether theirs
    /// changes or not): none of those changes, and they are returned as one
    /// collision. A user whose `key_of` is `None` keeps its key and is
    /// returned as refused. Nothing else is written: no user is merged,
    /// deleted or otherwise changed (not even `updated_at`).
    ///
    /// When nothing is left unresolved (no collision, nothing refused), the
    /// step is recorded as done at `at`, and every later call with the same
    /// `step` answers `already_done` at the cost of one read. With `apply`
    /// false nothing is written (a dry run: what a call would do now, for
    /// `tessera doctor`). Racing calls are serialised: one does the work;
    /// the others find it recorded, or nothing left to change.
    async fn rekey_emails(
        &self,
        step: &str,
        key_of: &rekey::KeyFn<'_>,
        apply: bool,
        at: OffsetDateTime,
    ) -> StoreResult<rekey::RekeyOutcome>;
}

/// What a guarded write to a user did ([`UserStore::set_roles`],
/// [`UserStore::set_status`], [`UserStore::delete_user`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserWrite {
    /// Written.
    Done,
    /// There is no such user; nothing was written.
    NoSuchUser,
    /// Refused, nothing written: `keep` names a role that must keep an
    /// active holder (the core passes `admin`), the user is active and
    /// holds it, would not be both after the write, and no other active
    /// user holds it. The check and the write are one step that no other
    /// guarded write interleaves with, in this process or on any other
    /// node: of racing writes that each take the role away from one of the
    /// last two active holders, exactly one succeeds. A write that adds a
    /// holder is not serialised with them; it can only make a refusal too
    /// cautious, never let the last holder go. With `keep` `None`, never
    /// returned.
    LastHolder,
}

/// Browser sessions, stored by the SHA-256 of their cookie value.
///
/// A store keeps records as given; it never decides freshness. The core
/// checks idle and absolute expiry against its own clock on every read, and
/// [`SessionStore::count_live`] / [`SessionStore::delete_expired`] apply the
/// same two rules with the times they are given. Deletes are durable when
/// they return: a deleted session is never returned again by any read on
/// any node (a cache in front is kept coherent by the change log, not by
/// the store).
///
/// Two stores in one: where sessions live in the database, a session and
/// its audit event commit together; where they live apart from it (Redis,
/// `redis/`), see [`SessionStore::insert_session`] for what holds instead.
/// There, "durable" means acknowledged by Redis, and by one replica where
/// the primary has replicas (`WAIT`): a write Redis then loses (a restart
/// without persistence, a replica promoted before it had the write) can
/// only sign people out, never in, because the core refuses every session
/// whose ending the revocation log holds, whatever a store gives back.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Whether the store keeps each user's sessions together, found by the
    /// first byte of their hash (Redis Cluster: one slot for a user's
    /// sessions and their index, so every multi-key step is one script).
    /// Then a new session's cookie value must come from
    /// [`crate::core::secret::BearerSecret::generate_tagged`] with
    /// [`crate::core::secret::session_tag`] of its user; a session hash
    /// without its user's tag is refused (an error, nothing written).
    fn tags_sessions(&self) -> bool {
        false
    }
    /// Whether records leave by themselves at their deadlines (Redis: a
    /// key's time to live is the earlier of idle and absolute expiry,
    /// counted from the record's own `last_seen_at`, plus
    /// [`EXPIRY_GRACE`]). Counting and sweeping then read every session, so
    /// the core skips the periodic sweep and counts seldom; reads are
    /// unchanged (the core still checks expiry on every one).
    fn expires_by_itself(&self) -> bool {
        false
    }
    /// Stores a new session, and `audit` (the event that describes it):
    /// the two are never apart. Where sessions live in the database, they
    /// commit together: a login is never recorded without its session, nor
    /// the other way round. Where they live apart (Redis), the event is
    /// written first and the session only once it is durable: a session is
    /// never without its event, but an event may remain for a session that
    /// was never stored (the session write failed, or the process died
    /// between the two; the caller then got an error, never a session).
    /// Returns false, having written neither, when the session's user does
    /// not exist (where sessions live apart from users, a user deleted
    /// after that check leaves a session the core refuses, as it refuses
    /// any session whose user is gone). Durable when it returns.
    async fn insert_session(
        &self,
        session: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool>;
    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>>;
    /// Queues a write of the session's activity (`touched.last_seen_at`) and
    /// returns once it is queued, before it is committed: no request waits
    /// for it. "Queued" means: [`SessionStore::sessions_of_user`] and
    /// [`SessionStore::delete_expired`] called after this returns see it (a
    /// backend that writes behind lands its queue first), a later read by
    /// hash sees it once the returned [`QueuedTouch`] resolves, and
    /// `last_seen_at` never moves back (an older touch arriving late leaves
    /// the newer time). A write lost in a crash only makes the session idle
    /// out sooner, never later. The handle answers whether the session still
    /// existed when the write landed.
    async fn queue_touch(&self, touched: &Arc<SessionRecord>) -> StoreResult<QueuedTouch>;
    /// Deletes one session; returns what was deleted (None if nothing was).
    async fn delete_session_by_hash(&self, hash: &SecretHash)
    -> StoreResult<Option<SessionRecord>>;
    /// Deletes the session with this public id if it belongs to `user_id`;
    /// returns what was deleted. Another user's session id deletes nothing.
    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Deletes every session of a user in one step; returns how many. A
    /// session inserted before this call started is gone when it returns.
    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64>;
    /// The user's sessions, newest first, showing every activity write
    /// queued before the call.
    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>>;
    /// How many sessions are neither past absolute expiry (`expires_at <=
    /// now`) nor idle since before `idle_cutoff` (`last_seen_at <=
    /// idle_cutoff`).
    async fn count_live(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64>;
    /// Deletes the sessions [`SessionStore::count_live`] does not count,
    /// after landing queued activity (a session used just before its idle
    /// cut-off is not swept on its old time); returns how many.
    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64>;
}

/// How long past its deadline a self-expiring session record may linger
/// ([`SessionStore::expires_by_itself`]): the store's clock and the core's
/// may differ a little, and the core's check on every read is the one that
/// decides; this only bounds how long a dead record takes space.
pub const EXPIRY_GRACE: Duration = Duration::from_secs(1);

/// An activity write that was queued (see [`SessionStore::queue_touch`]).
pub struct QueuedTouch(oneshot::Receiver<StoreResult<bool>>);

impl QueuedTouch {
    pub fn new(outcome: oneshot::Receiver<StoreResult<bool>>) -> Self {
        Self(outcome)
    }

    /// Waits for the commit: whether the session still existed then.
    pub async fn still_there(self) -> StoreResult<bool> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("the activity write was dropped".into())))
    }
}

/// What a backend's push side says (see [`EventStore::subscribe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Not connected (yet, or any more): appends made now are not pushed,
    /// so the follower must read the log from its cursor and may not trust
    /// its caches until it has.
    Disconnected,
    /// Listening; the number moves with every push received (an append by
    /// any node, this one included). Pushes may be coalesced.
    Listening(u64),
}

/// The change log that keeps caches in every process coherent.
///
/// The log is the truth, a push is a hint: followers read it by cursor, and
/// [`EventStore::subscribe`] only wakes them sooner.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Appends a change; durable when it returns. Sequence numbers are
    /// assigned in commit order: once a follower has read an entry, no entry
    /// with a lower number can appear later (so reading "after my cursor"
    /// never skips one), whichever node appends.
    async fn append(&self, change: &Change, at: OffsetDateTime) -> StoreResult<()>;
    /// Changes with a sequence number above `cursor`, oldest first, at most
    /// `limit`; numbers strictly increase.
    async fn after(&self, cursor: i64, limit: u32) -> StoreResult<Vec<(i64, Change)>>;
    /// The highest sequence number appended so far (0 when none): a
    /// follower starting here sees every later append.
    async fn latest_cursor(&self) -> StoreResult<i64>;
    /// Deletes entries appended before `before`; the numbering goes on.
    async fn prune(&self, before: OffsetDateTime) -> StoreResult<u64>;
    /// Where the backend can push (PostgreSQL's LISTEN/NOTIFY), a watch
    /// that moves when any node appends, and says when the push connection
    /// is down; `None` where it cannot (the follower polls). A missed push
    /// only delays a follower, never loses a change.
    fn subscribe(&self) -> Option<watch::Receiver<Push>> {
        None
    }
}

/// Signing keys (private halves included) and server-wide secrets.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Makes `key` the active key, rotating out the current one at `at`, as
    /// a compare-and-set: `expected_active` is the caller's view of the
    /// current active key; if it is not the active key any more (another
    /// process or node rotated first), nothing changes and `false` is
    /// returned. There is never more than one active key; of two racing
    /// rotations from the same view, exactly one succeeds.
    async fn rotate_in(
        &self,
        key: &StoredKey,
        expected_active: Option<&str>,
        at: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Drops the private half of keys rotated out at or before `before`;
    /// returns how many. The active key is never wiped. Older copies in
    /// the backend's files are [`Backend::scrub`]'s business.
    async fn wipe_retired(&self, before: OffsetDateTime) -> StoreResult<u64>;
    /// The server-wide secret `name`, stored as `fresh` if it does not exist
    /// yet (the first process to get there wins; all see the same value).
    async fn server_secret(&self, name: &str, fresh: &[u8]) -> StoreResult<Vec<u8>>;
    /// A fact about how the deployment runs (`serve` records where sessions
    /// live; other commands check they run the same way), if recorded.
    async fn deployment_fact(&self, name: &str) -> StoreResult<Option<String>>;
    /// Records a fact (the last writer wins); returns the value it replaced.
    async fn set_deployment_fact(
        &self,
        name: &str,
        value: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Option<String>>;
}

/// Refresh tokens: single use, in families, rotation atomic.
#[async_trait]
pub trait RefreshStore: Send + Sync {
    /// Stores a family and its first token together; durable when it
    /// returns.
    async fn create_family(
        &self,
        family: &RefreshFamily,
        first: &NewRefreshToken,
    ) -> StoreResult<()>;
    /// In one atomic step: marks `presented` used and stores its successor
    /// (`next_hash`, valid until `next_expires_at`) in the same family; or,
    /// when `presented` was already used, revokes its family (reuse) and
    /// deletes the family's unused token. Unknown, expired (`expires_at <=
    /// now`) or revoked-family tokens are `Invalid` and change nothing.
    /// Racing calls with the same token, on one node or several: exactly
    /// one rotates; the next to land is `Reused` (revoking the family), and
    /// any later one `Reused` or, the family being revoked, `Invalid`.
    /// A rotation also records `audit` in the same commit (never one
    /// without the other), completed with the family's user and
    /// `{"family": id}`. Durable when it returns.
    async fn rotate_refresh(
        &self,
        presented: &SecretHash,
        next_hash: &SecretHash,
        next_expires_at: OffsetDateTime,
        now: OffsetDateTime,
        audit: AuditEvent,
    ) -> StoreResult<Rotation>;
    /// The family a refresh token belongs to, with the token's expiry and
    /// whether it was used already (whatever its state).
    async fn refresh_family(
        &self,
        presented: &SecretHash,
    ) -> StoreResult<Option<(RefreshFamily, OffsetDateTime, bool)>>;
    /// The user's live families: not revoked, holding an unused token that
    /// has not expired at `now`. Each comes with that token's issue time
    /// (the family's last rotation, or its start) and expiry; most
    /// recently rotated first. At most `limit`.
    async fn live_families(
        &self,
        user_id: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<LiveFamily>>;
    /// Revokes a family (its tokens can no longer rotate); returns false if
    /// it was already revoked or unknown.
    async fn revoke_family(&self, family_id: &str, at: OffsetDateTime) -> StoreResult<bool>;
    /// Revokes every live family of a user in one step; returns their ids.
    async fn revoke_user_families(
        &self,
        user_id: &str,
        at: OffsetDateTime,
    ) -> StoreResult<Vec<String>>;
    /// Deletes tokens past expiry, and families left without a token.
    async fn delete_expired_refresh(&self, now: OffsetDateTime) -> StoreResult<u64>;
}

/// Revocations of access tokens: a durable, ordered log every node follows
/// (and the revocation feed serves).
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Appends a revocation; returns its sequence number. Durable when it
    /// returns; numbers are assigned in commit order, as for
    /// [`EventStore::append`].
    async fn insert_revocation(
        &self,
        r: &Revocation,
        forget_at: i64,
        at: OffsetDateTime,
    ) -> StoreResult<i64>;
    /// Revocations after `cursor`, oldest first, with their `forget_at`.
    async fn revocations_after(
        &self,
        cursor: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Revocation, i64)>>;
    /// Deletes revocations whose `forget_at` is before `now_unix`.
    async fn prune_revocations(&self, now_unix: i64) -> StoreResult<u64>;
}

/// Service clients (their secrets stored hashed).
///
/// Every write is durable when it returns and seen by every later read, on
/// this node and any other sharing the backend: nothing caches clients, so
/// a client disabled, deleted or given a new secret fails its very next
/// authentication everywhere. Writes to an id that is not there (never
/// was, deleted, or text no backend can hold) change nothing and answer
/// `false`, never an error.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Stores a client as given (its `disabled_at` included); `Conflict`
    /// (and nothing written) if the id is taken.
    async fn insert_client(&self, client: &ServiceClient) -> StoreResult<()>;
    /// The client with this id, enabled or disabled; `None` once deleted.
    async fn client_by_id(&self, id: &str) -> StoreResult<Option<ServiceClient>>;
    /// Every client, oldest first (by `created_at`, then id), disabled ones
    /// included, deleted ones not.
    async fn list_clients(&self) -> StoreResult<Vec<ServiceClient>>;
    /// Disables the client (`disabled_at` becomes `at`, unless it was
    /// disabled already: then the first time is kept) or, with `None`,
    /// enables it again (`disabled_at` cleared). Nothing else changes (the
    /// secret stays). Returns false when there is no such client.
    async fn set_client_disabled(&self, id: &str, at: Option<OffsetDateTime>) -> StoreResult<bool>;
    /// Replaces the client's secret hash in one step: once this returns,
    /// the old hash matches on no read on any node, and the new one does.
    /// Whether the client is disabled does not change. Returns false when
    /// there is no such client.
    async fn set_client_secret(&self, id: &str, secret_hash: &SecretHash) -> StoreResult<bool>;
    /// Deletes the client for good; returns false when there was none.
    /// Every later read by its id finds nothing.
    async fn delete_client(&self, id: &str) -> StoreResult<bool>;
}

/// The audit log.
/// A single-use link token as stored: only its hash (see
/// `core::links`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkToken {
    pub hash: SecretHash,
    /// What the link does (`password_reset`, …): a token consumed for
    /// another purpose is refused.
    pub purpose: String,
    pub user_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// An invitation to register, as stored: only its token's hash (see
/// `core::invitations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub hash: SecretHash,
    /// The address as the administrator typed it.
    pub email: String,
    /// Its key: only a registration with this key may use the invitation.
    pub email_key: String,
    /// Granted to the account the invitation creates.
    pub roles: Vec<String>,
    /// Who invited (`usr_…`, or `cli`).
    pub created_by: String,
    /// It was mailed to `email` (so using it proves that mailbox).
    pub mailed: bool,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Single-use link tokens (password reset links, …) and invitations.
#[async_trait]
pub trait LinkTokenStore: Send + Sync {
    /// Stores a new, unused token. A hash already stored is a
    /// [`StoreError::Conflict`]; a user that does not exist is refused
    /// (the token goes with its user).
    async fn insert_link_token(&self, token: &LinkToken) -> StoreResult<()>;

    /// Uses the token whose hash is `hash`, if it exists, was made for
    /// `purpose`, was never used and expires after `now`: marks it used
    /// at `now` and returns its user id; otherwise `None` and nothing
    /// changes. Atomic: of any number of racing consumes of one token
    /// (on one node or several), exactly one gets the user id. A used
    /// token stays used across restarts.
    async fn consume_link_token(
        &self,
        hash: &SecretHash,
        purpose: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<String>>;

    /// The user of the token whose hash is `hash` if it was made for
    /// `purpose`, was never used and expires after `now`, as
    /// [`LinkTokenStore::consume_link_token`] would find it; a look only:
    /// nothing changes (a reset checks the new password against its
    /// account before it uses the link, so a refused one does not burn it).
    async fn link_token_user(
        &self,
        hash: &SecretHash,
        purpose: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<String>>;

    /// Marks every unused token of `user_id` for `purpose` used at `at`
    /// (the earlier links die once one of them did its work); returns how
    /// many.
    async fn void_link_tokens(
        &self,
        user_id: &str,
        purpose: &str,
        at: OffsetDateTime,
    ) -> StoreResult<u64>;

    /// Deletes the tokens and invitations (used or not) that expired
    /// before `before`.
    async fn delete_expired_link_tokens(&self, before: OffsetDateTime) -> StoreResult<u64>;

    /// Stores a new, unused invitation; a hash already stored is a
    /// [`StoreError::Conflict`].
    async fn insert_invitation(&self, invitation: &Invitation) -> StoreResult<()>;

    /// The invitation whose hash is `hash` if it was never used and
    /// expires after `now` (a look, for the registration form: nothing
    /// changes).
    async fn invitation(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Invitation>>;

    /// Uses the invitation whose hash is `hash` if it was never used,
    /// expires after `now` and is for `email_key`: marks it used at `now`
    /// and returns it; otherwise `None` and nothing changes. Atomic as
    /// [`LinkTokenStore::consume_link_token`] is.
    async fn consume_invitation(
        &self,
        hash: &SecretHash,
        email_key: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<Invitation>>;
}

/// What [`DeviceStore::remember_device`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSighting {
    /// The account had signed in from this device before.
    Known,
    /// A device the account had not signed in from, while it had others.
    New,
    /// The account's first device: it had none recorded.
    First,
    /// There is no such user; nothing was written.
    NoSuchUser,
}

/// The devices each account signed in from, each by a hash of what
/// identifies it (the core: the SHA-256 of its `User-Agent`), for the
/// new-device notice (`notify_new_device`).
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Records that `user_id` signed in from `device` at `at` and says
    /// whether the account knew it, in one step that no other call for
    /// the same user interleaves with, on this node or any other: of racing
    /// sightings of one new device exactly one is `New` (or `First`), and of
    /// racing sightings on an account without devices exactly one is
    /// `First`. A known device's `last_seen_at` becomes `at` (never moving
    /// back); a new one is added with `first_seen_at` and `last_seen_at`
    /// `at`, and then the account keeps at most `keep` devices (at least
    /// this one): the least recently seen others go (the oldest first seen
    /// among equals), so an account's list cannot grow for ever. Durable
    /// when it returns; a deleted user's devices go with it.
    async fn remember_device(
        &self,
        user_id: &str,
        device: &SecretHash,
        at: OffsetDateTime,
        keep: u32,
    ) -> StoreResult<DeviceSighting>;
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Durable when it returns.
    async fn record(&self, event: &AuditEvent) -> StoreResult<()>;
    /// Newest first (by time, then id), filtered; `before` is the id of the
    /// last event of the previous page.
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// Oldest first (by time, then id: the reverse of [`Self::audit_events`]),
    /// at most `limit`: events of `event_type` (when set) with `at` at or
    /// after `since` (when set) and `(at, id)` strictly after `after` (when
    /// set). `after` is a position, not an id to look up, so paging goes on
    /// even when that event has since been pruned; paging from the last
    /// event of each page visits every matching event once.
    async fn audit_events_oldest_first(
        &self,
        query: &AuditExportQuery,
    ) -> StoreResult<Vec<AuditEvent>>;
    /// Deletes events older than `before` (retention).
    async fn prune_audit(&self, before: OffsetDateTime) -> StoreResult<u64>;
}

/// A backend as a whole: its liveness for `/readyz`, and an orderly close.
#[async_trait]
pub trait Backend: Send + Sync {
    /// What `/readyz` calls it when it does not answer.
    fn name(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;
    /// Pings every part; the name of the first that does not answer (a
    /// backend of several parts, such as the database with Redis beside
    /// it, names the part: `/readyz` says which).
    async fn unanswering(&self) -> Option<(&'static str, StoreError)> {
        self.ping().await.err().map(|e| (self.name(), e))
    }
    /// Lands what was written behind, then closes the connections; later
    /// calls fail.
    async fn close(&self);
    /// After a secret was wiped (a rotated-out key's private half), removes
    /// the older copies the backend's files still hold, as far as the
    /// backend can. SQLite zeroes freed space as it writes
    /// (`secure_delete`), and this empties its write-ahead log, whose older
    /// page images still hold what was wiped. PostgreSQL cannot do that on
    /// demand (a dead row version stays in its page until VACUUM and reuse,
    /// and in the WAL and its archives: `docs/security-model.md`), so there
    /// it does nothing. It may hold writes up for a moment: call it after
    /// rare events, never per request.
    async fn scrub(&self) -> StoreResult<()>;
}

/// The stores the core works with.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub events: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
    pub refresh: Arc<dyn RefreshStore>,
    pub revocations: Arc<dyn RevocationStore>,
    pub clients: Arc<dyn ClientStore>,
    pub links: Arc<dyn LinkTokenStore>,
    pub devices: Arc<dyn DeviceStore>,
    pub audit: Arc<dyn AuditStore>,
    pub backend: Arc<dyn Backend>,
}

/// How a networked backend sizes and bounds its connections (the embedded
/// one ignores these), and where sessions live.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections this process opens.
    pub pool_size: u32,
    /// Longest a statement may run before the backend cancels it.
    pub statement_timeout: Duration,
    /// Sessions (and the push of the logs) in Redis rather than the
    /// database: see `redis/`.
    pub redis: Option<redis::RedisOptions>,
    /// The session idle timeout: how long a store that expires records by
    /// itself keeps an unused one.
    pub session_idle: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
            redis: None,
            session_idle: Duration::from_secs(2 * 3600),
        }
    }
}

/// Which backend a database URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    /// The backend for `url`'s scheme, or why there is none.
    pub fn of(url: &str) -> Result<Self, String> {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        match scheme {
            "sqlite" => Ok(Kind::Sqlite),
            "postgres" | "postgresql" => Ok(Kind::Postgres),
            _ => Err(format!(
                "unsupported database URL scheme `{scheme}` (expected sqlite:, postgres: or postgresql:)"
            )),
        }
    }
}

/// Opens (creating and migrating if needed) the backend `url` names, with
/// sessions in Redis when `options` name one.
pub async fn open(url: &str, options: &StoreOptions) -> StoreResult<Stores> {
    let database = match Kind::of(url).map_err(StoreError::Backend)? {
        Kind::Sqlite => sqlite::SqliteStore::open(url).await?.stores(),
        Kind::Postgres => postgres::PostgresStore::open(url, options).await?.stores(),
    };
    match &options.redis {
        None => Ok(database),
        Some(redis) => {
            let store = redis::RedisStore::open(redis, options).await?;
            Ok(store.over(database))
        }
    }
}

/// Applies pending schema migrations of the database at `url`, one line per
/// migration on standard error, then the data steps (`rekey`) that follow
/// them (`serve` and the CLI run this first).
pub async fn migrate_reporting(url: &str) -> anyhow::Result<usize> {
    let mut report = migrate::stderr_reporter(url);
    let applied = match Kind::of(url).map_err(anyhow::Error::msg)? {
        Kind::Sqlite => sqlite::migrate::apply_migrations(url, &mut report).await,
        Kind::Postgres => postgres::migrate::apply_migrations(url, &mut report).await,
    }?;
    // Then the data steps over existing rows: emails re-keyed when the
    // key's definition changed (logged; never merged, see `rekey`).
    rekey::run(url).await?;
    Ok(applied)
}

/// What is at a database URL, found without creating or changing anything
/// (only `serve` and `migrate` create a database or its schema; every
/// other command asks this first and stops on anything but `Ready`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// A Tessera database (migrations may be pending: commands apply them).
    Ready,
    /// No SQLite file at this (absolute) path.
    Missing(std::path::PathBuf),
    /// The PostgreSQL server has no database of that name (its message,
    /// e.g. `database "tessera" does not exist`). Nothing creates one.
    NoDatabase(String),
    /// A database without Tessera's schema: a new empty PostgreSQL
    /// database, an empty file, or another program's database.
    NoSchema,
}

/// Looks at the database `url` names. A server that cannot be reached is
/// an error.
pub async fn presence(url: &str) -> anyhow::Result<Presence> {
    let has_schema = match Kind::of(url).map_err(anyhow::Error::msg)? {
        Kind::Sqlite => {
            if sqlite::migrate::file_missing(url) {
                let path = sqlite::migrate::file_path(url).unwrap_or_default();
                return Ok(Presence::Missing(path));
            }
            sqlite::migrate::has_schema(url).await?
        }
        Kind::Postgres => match postgres::migrate::has_schema(url).await? {
            Ok(has_schema) => has_schema,
            Err(message) => return Ok(Presence::NoDatabase(message)),
        },
    };
    Ok(if has_schema {
        Presence::Ready
    } else {
        Presence::NoSchema
    })
}

/// How far the database's clock is from this process's, in seconds
/// (positive when the database is ahead), and a word on how it was read.
pub async fn clock_skew(url: &str) -> anyhow::Result<(f64, &'static str)> {
    match Kind::of(url).map_err(anyhow::Error::msg)? {
        Kind::Sqlite => Ok((
            sqlite::migrate::clock_skew(url).await?,
            "the database's clock (SQLite, read through SQLite's own time functions)",
        )),
        Kind::Postgres => Ok((
            postgres::migrate::clock_skew(url).await?,
            "the database server's clock (PostgreSQL clock_timestamp())",
        )),
    }
}
