//! Redis beside the database: sessions shared by every node, and the push
//! that fans every revocation out to them.
//!
//! With `TESSERA_REDIS_URL` set, [`RedisStore::over`] puts three things in
//! front of the database's stores:
//!
//! - the session store (`sessions`): records under their hash, a time to
//!   live that honours idle and absolute expiry, a per-user index, every
//!   multi-key step one script on one slot;
//! - the fan-out (`fanout`): appends to the change and revocation logs stay
//!   in the database (the truth, read by cursor) and are then announced on
//!   the channel `<prefix>log`;
//! - the push (`push`): a subscription to that channel wakes this node's
//!   follower, and says when it dropped (then the node distrusts its caches
//!   and its revocation view until it has read the logs again).
//!
//! Durable state (users, refresh families, keys, clients, audit, both
//! logs) stays in the database. Redis holds nothing the logs cannot
//! rebuild except sessions, whose loss signs people out, never in.

mod fanout;
mod health;
pub mod layout;
mod link;
mod push;
mod sessions;
pub mod target;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::AsyncCommands;
use async_trait::async_trait;

pub(crate) use self::health::{RedisHealth, count_reconnect, health_counters, record_fanout};
use self::health::{WAIT_SHORTFALLS, backend};
use self::link::Link;
use self::push::{Source, Subscriber};
use self::target::Target;
use super::{Backend, StoreError, StoreOptions, StoreResult, Stores};

/// Where Redis is and how its keys are named.
#[derive(Clone)]
pub struct RedisOptions {
    /// `TESSERA_REDIS_URL` (see [`Target`]).
    pub url: String,
    /// Put before every key and the channel (`TESSERA_REDIS_KEY_PREFIX`),
    /// so that several deployments can share one Redis. No `{` or `}`:
    /// those would move the cluster hash tag.
    pub key_prefix: String,
    /// Certificates for TLS beyond the system's trust store.
    pub tls: tls::TlsFiles,
    /// Longest a command may wait for its answer (`TESSERA_REDIS_TIMEOUT`):
    /// past it the request that needed it fails closed (503).
    pub timeout: Duration,
}

/// The URL without its passwords: options end up in `Debug` output.
impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &crate::config::shown_redis_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "tessera:";

/// Checks a key prefix: printable ASCII without braces or spaces.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > 64 {
        return Err("at most 64 characters".into());
    }
    match prefix
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '{' | '}'))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed (printable ASCII without braces or spaces)"
        )),
        None => Ok(()),
    }
}

/// Longest a session write waits for a replica.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// How often the replicas are counted again.
const REPLICAS_EVERY: Duration = Duration::from_secs(5);

/// `connected_slaves` of an `INFO replication` reply.
fn connected_replicas(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether every primary in a `CLUSTER NODES` reply has a replica that is
/// connected and not failed.
fn every_primary_has_a_replica(nodes: &str) -> bool {
    let primaries: Vec<&str> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            (flags.split(',').any(|f| f == "master") && !flags.contains("fail")).then(|| fields[0])
        })
        .collect();
    !primaries.is_empty()
        && primaries.iter().all(|id| {
            nodes.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(3) == Some(id)
                    && fields
                        .get(2)
                        .is_some_and(|f| f.split(',').any(|x| x == "slave") && !f.contains("fail"))
                    && fields.get(7) == Some(&"connected")
            })
        })
}

/// A connection to Redis, with the deployment's key prefix and its push.
pub struct RedisStore {
    link: Link,
    /// A second connection for the writes that wait for replicas (`WAIT`
    /// blocks the connection it runs on, so it never holds up reads).
    acked: Link,
    /// How many replicas a session write waits for (0: none; see
    /// [`RedisStore::watch_replicas`]).
    wait_for: std::sync::atomic::AtomicU32,
    /// How long it waits for them.
    wait_timeout: Duration,
    prefix: String,
    push: Subscriber,
    /// The session idle timeout (keys live no longer unused).
    idle: Duration,
    closed: std::sync::atomic::AtomicBool,
}

/// The primaries (`host`, `port`) in a `CLUSTER NODES` reply that are not
/// marked failed.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let addr = fields.nth(1)?;
            let flags = fields.next()?;
            let primary = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !primary {
                return None;
            }
            let addr = addr.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

impl RedisStore {
    /// Connects (failing if Redis does not answer) and starts the
    /// subscription.
    pub async fn open(redis: &RedisOptions, options: &StoreOptions) -> StoreResult<Self> {
        let target = Target::parse(&redis.url)
            .map_err(|e| StoreError::Backend(format!("TESSERA_REDIS_URL: {e}")))?;
        check_prefix(&redis.key_prefix)
            .map_err(|e| StoreError::Backend(format!("TESSERA_REDIS_KEY_PREFIX: {e}")))?;
        let certs = redis
            .tls
            .load()
            .map_err(|e| StoreError::Backend(format!("Redis TLS: {e}")))?;
        let connect = || async {
            Link::connect(&target, &certs, redis.timeout)
                .await
                .map_err(|e| StoreError::Backend(format!("cannot connect to Redis: {e}")))
        };
        let link = connect().await?;
        let acked = connect().await?;
        let source = match (&target, &link) {
            (_, Link::Sentinel(s)) => Source::Sentinel(Arc::clone(s)),
            (Target::Cluster(seeds), _) => Source::Seeds(seeds.clone(), certs.clone()),
            (Target::Single(url), _) => Source::Url(url.clone(), certs.clone()),
            (Target::Sentinel(_), _) => {
                return Err(StoreError::Backend("Sentinel without its link".into()));
            }
        };
        let channel = format!("{}log", redis.key_prefix);
        let store = Self {
            link,
            acked,
            wait_for: std::sync::atomic::AtomicU32::new(0),
            wait_timeout: redis.timeout.min(MAX_WAIT),
            prefix: redis.key_prefix.clone(),
            push: Subscriber::start(source, channel),
            idle: options.session_idle,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        store.ping().await?;
        store.count_replicas().await;
        Ok(store)
    }

    /// Keeps [`RedisStore::wait_for`] current (replicas come and go) until
    /// the store is closed or dropped.
    fn watch_replicas(this: &Arc<Self>) {
        let weak = Arc::downgrade(this);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REPLICAS_EVERY).await;
                let Some(store) = weak.upgrade() else { return };
                if store.closed.load(Ordering::Acquire) {
                    return;
                }
                store.count_replicas().await;
            }
        });
    }

    /// Whether the primaries have replicas to wait for: one server or
    /// Sentinel's primary by `INFO replication`, a cluster when every
    /// primary has one (`CLUSTER NODES`). Wait for one: the replica a
    /// failover promotes is the most up to date.
    async fn count_replicas(&self) {
        let Ok(mut conn) = self.conn() else { return };
        let replicated = match &mut conn {
            Link::Cluster(cluster) => {
                let nodes: ::redis::RedisResult<String> = ::redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(cluster)
                    .await;
                nodes.ok().map(|n| every_primary_has_a_replica(&n))
            }
            other => {
                let info: ::redis::RedisResult<String> = ::redis::cmd("INFO")
                    .arg("replication")
                    .query_async(other)
                    .await;
                info.ok().map(|i| connected_replicas(&i) > 0)
            }
        };
        if let Some(replicated) = replicated {
            let want = u32::from(replicated);
            if self.wait_for.swap(want, Ordering::AcqRel) != want {
                tracing::info!(
                    wait_for = want,
                    "Redis replicas: session writes now wait for {want}"
                );
            }
        }
    }

    /// Runs a session write on the acknowledged-writes connection and, where
    /// the primary has replicas, waits until one has it (`WAIT`), so that a
    /// failover keeps what a caller was told was written, and does not
    /// bring back what was deleted. A replica that does not answer in time
    /// is counted and logged; the write stands (Redis is asynchronous: this
    /// narrows the window, it cannot close it; an ended session stays
    /// refused through the revocation log whatever Redis gives back).
    async fn write_acked<T: ::redis::FromRedisValue>(
        &self,
        call: &::redis::ScriptInvocation<'_>,
        key: &str,
    ) -> StoreResult<T> {
        let mut conn = self.handle(&self.acked)?;
        let out: T = call
            .invoke_async(&mut conn)
            .await
            .map_err(|e| backend(&e))?;
        let want = self.wait_for.load(Ordering::Acquire);
        if want > 0 {
            let ms = u64::try_from(self.wait_timeout.as_millis()).unwrap_or(u64::MAX);
            let mut wait = ::redis::cmd("WAIT");
            wait.arg(want).arg(ms);
            let acked: ::redis::RedisResult<i64> = match &mut conn {
                Link::Cluster(cluster) => {
                    let route = ::redis::cluster_routing::RoutingInfo::SingleNode(
                        ::redis::cluster_routing::SingleNodeRoutingInfo::SpecificNode(
                            ::redis::cluster_routing::Route::with_key(
                                key,
                                ::redis::cluster_routing::SlotAddr::Master,
                            ),
                        ),
                    );
                    cluster
                        .route_command(wait, route)
                        .await
                        .and_then(|v| ::redis::from_redis_value(v).map_err(Into::into))
                }
                other => wait.query_async(other).await,
            };
            match acked {
                Ok(n) if n >= i64::from(want) => {}
                Ok(_) => {
                    WAIT_SHORTFALLS.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("a session write was not acknowledged by a replica in time");
                }
                Err(e) => {
                    let _ = backend(&e);
                    tracing::debug!(error = %e, "WAIT for a replica failed");
                }
            }
        }
        Ok(out)
    }

    /// The database's stores with sessions in Redis and the logs announced
    /// on it.
    pub fn over(self, database: Stores) -> Stores {
        let this = Arc::new(self);
        Self::watch_replicas(&this);
        Stores {
            sessions: Arc::new(sessions::RedisSessions::new(
                Arc::clone(&this),
                Arc::clone(&database.users),
                Arc::clone(&database.audit),
            )),
            events: Arc::new(fanout::FannedEvents {
                inner: database.events,
                redis: Arc::clone(&this),
            }),
            revocations: Arc::new(fanout::FannedRevocations {
                inner: database.revocations,
                redis: Arc::clone(&this),
            }),
            backend: Arc::new(Both {
                database: database.backend,
                redis: this,
            }),
            ..database
        }
    }

    /// A command handle; an error once the store is closed.
    fn conn(&self) -> StoreResult<Link> {
        self.handle(&self.link)
    }

    /// `link`, cloned, unless the store is closed.
    fn handle(&self, link: &Link) -> StoreResult<Link> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Backend("Redis: the store is closed".into()));
        }
        Ok(link.clone())
    }

    /// Every key matching `pattern` (SCAN on every primary of a cluster).
    async fn scan_keys(&self, pattern: &str) -> StoreResult<Vec<String>> {
        let mut conn = self.conn()?;
        let mut keys = Vec::new();
        match &mut conn {
            Link::Cluster(cluster) => {
                let nodes: String = ::redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(cluster)
                    .await
                    .map_err(|e| backend(&e))?;
                for (host, port) in cluster_primaries(&nodes) {
                    let route = ::redis::cluster_routing::RoutingInfo::SingleNode(
                        ::redis::cluster_routing::SingleNodeRoutingInfo::ByAddress { host, port },
                    );
                    let mut cursor: u64 = 0;
                    loop {
                        let mut scan = ::redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let reply = cluster
                            .route_command(scan, route.clone())
                            .await
                            .map_err(|e| backend(&e))?;
                        let (next, batch): (u64, Vec<String>) =
                            ::redis::from_redis_value(reply).map_err(|e| backend(&e.into()))?;
                        keys.extend(batch);
                        cursor = next;
                        if cursor == 0 {
                            break;
                        }
                    }
                }
            }
            other => {
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(other)
                        .await
                        .map_err(|e| backend(&e))?;
                    keys.extend(batch);
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(keys)
    }

    /// Wakes every node's follower (best effort: see `fanout`).
    async fn announce(&self, kind: &str) {
        // The kind and the time it was sent (Unix ms): only for the fan-out
        // lag metric of the receiving nodes.
        let sent = crate::core::time::to_millis(time::OffsetDateTime::now_utc());
        let Ok(mut conn) = self.conn() else { return };
        let published: ::redis::RedisResult<i64> = conn
            .publish(format!("{}log", self.prefix), format!("{kind} {sent}"))
            .await;
        if let Err(e) = published {
            let _ = backend(&e);
            tracing::warn!(error = %e, "announcing a log append on Redis failed; other nodes will find it by polling");
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        let answer: ::redis::RedisResult<String> =
            ::redis::cmd("PING").query_async(&mut self.conn()?).await;
        answer.map(|_| ()).map_err(|e| backend(&e))
    }
}

/// The database and Redis, as one backend for `/readyz` and shutdown.
struct Both {
    database: Arc<dyn Backend>,
    redis: Arc<RedisStore>,
}

/// What `/readyz` calls Redis when it does not answer.
const REDIS_NAME: &str = "session store (Redis)";

#[async_trait]
impl Backend for Both {
    fn name(&self) -> &'static str {
        self.database.name()
    }

    async fn ping(&self) -> StoreResult<()> {
        self.database.ping().await?;
        self.redis.ping().await
    }

    async fn unanswering(&self) -> Option<(&'static str, StoreError)> {
        if let Some(down) = self.database.unanswering().await {
            return Some(down);
        }
        self.redis.ping().await.err().map(|e| (REDIS_NAME, e))
    }

    async fn close(&self) {
        self.redis.closed.store(true, Ordering::Release);
        self.redis.push.stop().await;
        self.database.close().await;
    }

    async fn scrub(&self) -> StoreResult<()> {
        self.database.scrub().await
    }
}

#[cfg(test)]
mod tests {
    use super::check_prefix;

    #[test]
    fn replicas_are_counted_from_info_and_cluster_nodes() {
        assert_eq!(
            super::connected_replicas("# Replication\r\nrole:master\r\nconnected_slaves:2\r\n"),
            2
        );
        assert_eq!(super::connected_replicas("role:master\r\n"), 0);
        let with = "\
a1 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-8000
b1 127.0.0.1:3@4 master - 0 0 2 connected 8001-16383
a2 127.0.0.1:5@6 slave a1 0 0 1 connected
b2 127.0.0.1:7@8 slave b1 0 0 2 connected
";
        assert!(super::every_primary_has_a_replica(with));
        let failed = with.replace(
            "slave b1 0 0 2 connected",
            "slave,fail b1 0 0 2 disconnected",
        );
        assert!(!super::every_primary_has_a_replica(&failed));
        let none = "a1 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-16383\n";
        assert!(!super::every_primary_has_a_replica(none));
    }

    #[test]
    fn cluster_primaries_are_read_from_cluster_nodes() {
        let nodes = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1 3 disconnected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            super::cluster_primaries(nodes),
            [
                ("127.0.0.1".to_owned(), 30002),
                ("127.0.0.1".to_owned(), 30001)
            ]
        );
    }

    #[test]
    fn prefixes_cannot_move_the_hash_tag() {
        assert!(check_prefix("tessera:").is_ok());
        assert!(check_prefix("").is_ok());
        assert!(check_prefix("prod-eu:tessera:").is_ok());
        for bad in ["a{b", "a}b", "has space", "tab\t", "é"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix(&"x".repeat(65)).is_err());
    }
}
