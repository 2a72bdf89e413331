//! Sessions in Redis.
//!
//! Layout (names and value in [`super::layout`]), for a session whose hash
//! begins with the byte `t` (two hex digits; the core makes it its user's
//! tag, `core::secret::session_tag`):
//!
//! - `<prefix>{t}s:<hash>`: the session, one string (times, ids, address,
//!   user agent), `<hash>` the cookie's SHA-256 in base64url. Its time to
//!   live is the earlier of idle and absolute expiry, from the record's own
//!   last-seen time, plus [`EXPIRY_GRACE`]; activity moves it, never past
//!   the absolute deadline.
//! - `<prefix>{t}u:<user id>`: the user's index, a sorted set of their
//!   sessions' hashes scored by absolute expiry. Entries past it are
//!   dropped by every insert, entries whose session idled out are dropped
//!   whenever the index is read, and the set itself expires with its
//!   longest-lived session: it cannot grow stale entries for ever.
//!
//! `{t}` is the cluster hash tag: a user's sessions and their index share a
//! slot, so every step that touches several keys is one Lua script, atomic
//! on one node, in a cluster too (256 tags spread over the cluster's
//! slots). Lookups need only the hash: its first byte names the slot.

use std::sync::Arc;

use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;
use time::OffsetDateTime;

use super::layout::{self, LUA_HELPERS, TIMES_END};
use super::{RedisStore, backend};
use crate::core::audit::AuditEvent;
use crate::core::secret::{SecretHash, session_tag};
use crate::core::sessions::SessionRecord;
use crate::core::time::{from_millis, to_millis};
use crate::store::{
    AuditStore, EXPIRY_GRACE, QueuedTouch, SessionStore, StoreError, StoreResult, UserStore,
};

/// Stores a session and indexes it; drops index entries past their
/// absolute expiry, and (when the index has grown) entries whose session is
/// gone.
/// KEYS: session, index. ARGV: value, ttl ms, expires ms, now ms, member,
/// session key base. The index lives as long as its longest-lived session,
/// plus the grace.
const INSERT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
if redis.call('ZCARD', KEYS[2]) > 16 then
  for _, m in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    if redis.call('EXISTS', ARGV[6] .. m) == 0 then
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
local ttl = redis.call('PTTL', KEYS[2])
local want = tonumber(ARGV[3]) - tonumber(ARGV[4]) + 1000
if ttl < want then
  redis.call('PEXPIRE', KEYS[2], want)
end
return 1
";

/// Records activity: the last-seen time moves forward only, rewritten in
/// place, and the time to live with it.
/// KEYS: session. ARGV: last seen (13 digits), idle ms, grace ms.
const TOUCH: &str = r"
local v = redis.call('GETRANGE', KEYS[1], 0, 28)
if string.sub(v, 1, 2) ~= '1 ' or #v < 29 then return 0 end
local seen = tonumber(ARGV[1])
if seen > seen_of(v) then
  redis.call('SETRANGE', KEYS[1], 2, ARGV[1])
  local deadline = math.min(seen + tonumber(ARGV[2]), expires_of(v))
  local ttl = deadline - seen + tonumber(ARGV[3])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  else
    redis.call('DEL', KEYS[1])
  end
end
return 1
";

/// Deletes one session by hash and unindexes it; returns its value.
/// KEYS: session. ARGV: index key base, member.
const DELETE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('DEL', KEYS[1])
local user = field(v, 2)
if user then redis.call('ZREM', ARGV[1] .. user, ARGV[2]) end
return v
";

/// Deletes the session of the index's user with this public id; returns
/// its member and value (nothing if the user has no such session).
/// KEYS: index. ARGV: session key base, session id.
const DELETE_ONE_OF_USER: &str = r"
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local k = ARGV[1] .. m
  local v = redis.call('GET', k)
  if not v then
    redis.call('ZREM', KEYS[1], m)
  elseif field(v, 1) == ARGV[2] then
    redis.call('DEL', k)
    redis.call('ZREM', KEYS[1], m)
    return {m, v}
  end
end
return {}
";

/// Deletes every session of the index's user, and the index; returns how
/// many sessions there were. KEYS: index. ARGV: session key base.
const DELETE_ALL_OF_USER: &str = r"
local n = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  n = n + redis.call('DEL', ARGV[1] .. m)
end
redis.call('DEL', KEYS[1])
return n
";

/// Every live session of the index's user, as member and value; drops
/// entries whose session is gone. KEYS: index. ARGV: session key base.
const LIST: &str = r"
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('GET', ARGV[1] .. m)
  if not v then
    redis.call('ZREM', KEYS[1], m)
  else
    table.insert(out, m)
    table.insert(out, v)
  end
end
return out
";

/// A script with the layout's Lua helpers in front.
fn script(body: &str) -> Script {
    Script::new(&format!("{LUA_HELPERS}{body}"))
}

/// The session store on Redis; users and audit events stay in the
/// database (see [`SessionStore::insert_session`] for what holds between
/// the two).
pub(super) struct RedisSessions {
    redis: Arc<RedisStore>,
    users: Arc<dyn UserStore>,
    audit: Arc<dyn AuditStore>,
    scripts: Scripts,
}

struct Scripts {
    insert: Script,
    touch: Script,
    delete: Script,
    delete_one_of_user: Script,
    delete_all_of_user: Script,
    list: Script,
}

impl RedisSessions {
    pub(super) fn new(
        redis: Arc<RedisStore>,
        users: Arc<dyn UserStore>,
        audit: Arc<dyn AuditStore>,
    ) -> Self {
        Self {
            redis,
            users,
            audit,
            scripts: Scripts {
                insert: script(INSERT),
                touch: script(TOUCH),
                delete: script(DELETE),
                delete_one_of_user: script(DELETE_ONE_OF_USER),
                delete_all_of_user: script(DELETE_ALL_OF_USER),
                list: script(LIST),
            },
        }
    }

    fn session_base(&self, tag: u8) -> String {
        layout::session_base(&self.redis.prefix, tag)
    }

    fn index_base(&self, tag: u8) -> String {
        layout::index_base(&self.redis.prefix, tag)
    }

    fn session_key(&self, hash: &SecretHash) -> String {
        layout::session_key(&self.redis.prefix, hash)
    }

    fn index_key(&self, user_id: &str) -> String {
        layout::index_key(&self.redis.prefix, user_id)
    }

    /// A session's time to live from its own times: the earlier deadline,
    /// counted from `last_seen_at` (the moment of the write), plus grace.
    fn ttl_ms(&self, s: &SessionRecord) -> i64 {
        let idle = i64::try_from(self.redis.idle.as_millis()).unwrap_or(i64::MAX);
        let seen = to_millis(s.last_seen_at);
        let deadline = to_millis(s.expires_at).min(seen.saturating_add(idle));
        deadline - seen + grace_ms()
    }
}

fn grace_ms() -> i64 {
    i64::try_from(EXPIRY_GRACE.as_millis()).unwrap_or(1000)
}

/// A store error for a reply of an unexpected shape.
fn malformed(what: &str) -> StoreError {
    StoreError::Backend(format!("Redis: unexpected reply to {what}"))
}

/// `[member, value]` pairs from the list scripts.
fn members_and_values(reply: Vec<::redis::Value>) -> StoreResult<Vec<SessionRecord>> {
    let mut out = Vec::with_capacity(reply.len() / 2);
    let mut it = reply.into_iter();
    while let (Some(m), Some(v)) = (it.next(), it.next()) {
        let m: String = ::redis::from_redis_value(m).map_err(|_| malformed("a list"))?;
        let v: Vec<u8> = ::redis::from_redis_value(v).map_err(|_| malformed("a list"))?;
        if let Some(r) = layout::hash_of(&m).and_then(|hash| layout::decode(hash, &v)) {
            out.push(r);
        }
    }
    Ok(out)
}

#[async_trait]
impl SessionStore for RedisSessions {
    fn tags_sessions(&self) -> bool {
        true
    }

    fn expires_by_itself(&self) -> bool {
        true
    }

    async fn insert_session(
        &self,
        session: &SessionRecord,
        audit: Option<AuditEvent>,
    ) -> StoreResult<bool> {
        if session.token_hash.0[0] != session_tag(&session.user_id) {
            return Err(StoreError::Backend(
                "a session hash without its user's tag (see SessionStore::tags_sessions)".into(),
            ));
        }
        if self.users.user_by_id(&session.user_id).await?.is_none() {
            return Ok(false);
        }
        // The event first, the session once it is durable: never a session
        // without its event (what holds instead of one commit).
        if let Some(event) = audit {
            self.audit.record(&event).await?;
        }
        let ttl = self.ttl_ms(session);
        if ttl <= 0 {
            return Ok(true);
        }
        let tag = session.token_hash.0[0];
        let key = self.session_key(&session.token_hash);
        let mut call = self.scripts.insert.key(&key);
        call.key(self.index_key(&session.user_id))
            .arg(layout::encode(session)?)
            .arg(ttl)
            .arg(to_millis(session.expires_at))
            .arg(to_millis(session.last_seen_at))
            .arg(layout::member(&session.token_hash))
            .arg(self.session_base(tag));
        let _: i64 = self.redis.write_acked(&call, &key).await?;
        Ok(true)
    }

    async fn session_by_hash(&self, hash: &SecretHash) -> StoreResult<Option<Arc<SessionRecord>>> {
        let value: Option<Vec<u8>> = self
            .redis
            .conn()?
            .get(self.session_key(hash))
            .await
            .map_err(|e| backend(&e))?;
        Ok(value.and_then(|v| layout::decode(*hash, &v)).map(Arc::new))
    }

    /// Written at once (one round trip, at most once per touch interval per
    /// session): once this returns, every read sees it.
    async fn queue_touch(&self, touched: &Arc<SessionRecord>) -> StoreResult<QueuedTouch> {
        let idle = i64::try_from(self.redis.idle.as_millis()).unwrap_or(i64::MAX);
        let existed: i64 = self
            .scripts
            .touch
            .key(self.session_key(&touched.token_hash))
            .arg(layout::stamp(to_millis(touched.last_seen_at))?)
            .arg(idle)
            .arg(grace_ms())
            .invoke_async(&mut self.redis.conn()?)
            .await
            .map_err(|e| backend(&e))?;
        let (tell, told) = tokio::sync::oneshot::channel();
        let _ = tell.send(Ok(existed == 1));
        Ok(QueuedTouch::new(told))
    }

    async fn delete_session_by_hash(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<SessionRecord>> {
        let key = self.session_key(hash);
        let mut call = self.scripts.delete.key(&key);
        call.arg(self.index_base(hash.0[0]))
            .arg(layout::member(hash));
        let value: Option<Vec<u8>> = self.redis.write_acked(&call, &key).await?;
        Ok(value.and_then(|v| layout::decode(*hash, &v)))
    }

    async fn delete_user_session(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>> {
        let key = self.index_key(user_id);
        let mut call = self.scripts.delete_one_of_user.key(&key);
        call.arg(self.session_base(session_tag(user_id)))
            .arg(session_id);
        let reply: Vec<::redis::Value> = self.redis.write_acked(&call, &key).await?;
        Ok(members_and_values(reply)?.into_iter().next())
    }

    async fn delete_user_sessions(&self, user_id: &str) -> StoreResult<u64> {
        let key = self.index_key(user_id);
        let mut call = self.scripts.delete_all_of_user.key(&key);
        call.arg(self.session_base(session_tag(user_id)));
        let n: u64 = self.redis.write_acked(&call, &key).await?;
        Ok(n)
    }

    async fn sessions_of_user(&self, user_id: &str) -> StoreResult<Vec<SessionRecord>> {
        let reply: Vec<::redis::Value> = self
            .scripts
            .list
            .key(self.index_key(user_id))
            .arg(self.session_base(session_tag(user_id)))
            .invoke_async(&mut self.redis.conn()?)
            .await
            .map_err(|e| backend(&e))?;
        let mut sessions = members_and_values(reply)?;
        sessions.retain(|s| s.user_id == user_id);
        sessions.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(sessions)
    }

    /// Reads every session (a scan of the deployment's keys): for
    /// `/metrics` now and then, never per request.
    async fn count_live(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        let (live, _) = self.scan(now, idle_cutoff).await?;
        Ok(live.len() as u64)
    }

    /// Reads every session as [`SessionStore::count_live`] does, and deletes
    /// the ones it does not count (the keys' times to live drop them anyway:
    /// the core does not call this periodically on this store).
    async fn delete_expired(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<u64> {
        let (_, dead) = self.scan(now, idle_cutoff).await?;
        let mut n = 0;
        for hash in dead {
            if self.delete_session_by_hash(&hash).await?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl RedisSessions {
    /// Every session of the deployment, split by the rules of
    /// [`SessionStore::count_live`]: (live, dead) hashes.
    async fn scan(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<(Vec<SecretHash>, Vec<SecretHash>)> {
        let pattern = format!("{}{{??}}s:*", self.redis.prefix);
        let keys = self.redis.scan_keys(&pattern).await?;
        let prefix_len = self.redis.prefix.len() + "{xx}s:".len();
        let (mut live, mut dead) = (Vec::new(), Vec::new());
        let mut conn = self.redis.conn()?;
        for chunk in keys.chunks(500) {
            let mut pipe = ::redis::pipe();
            for key in chunk {
                pipe.cmd("GETRANGE").arg(key).arg(0).arg(TIMES_END);
            }
            let heads: Vec<Vec<u8>> = pipe.query_async(&mut conn).await.map_err(|e| backend(&e))?;
            for (key, head) in chunk.iter().zip(heads) {
                let Some(hash) = key.get(prefix_len..).and_then(layout::hash_of) else {
                    continue;
                };
                let Some((seen, expires)) = layout::times(&head) else {
                    continue;
                };
                let alive = from_millis(expires) > now && from_millis(seen) > idle_cutoff;
                if alive {
                    live.push(hash);
                } else {
                    dead.push(hash);
                }
            }
        }
        Ok((live, dead))
    }
}
