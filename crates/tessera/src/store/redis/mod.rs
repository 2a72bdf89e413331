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
mod link;
mod push;
mod sessions;
pub mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::AsyncCommands;
use async_trait::async_trait;

use self::link::Link;
use self::push::{Source, Subscriber};
use self::target::Target;
use super::{Backend, StoreError, StoreOptions, StoreResult, Stores};

/// Where Redis is and how its keys are named.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `TESSERA_REDIS_URL` (see [`Target`]).
    pub url: String,
    /// Put before every key and the channel (`TESSERA_REDIS_KEY_PREFIX`),
    /// so that several deployments can share one Redis. No `{` or `}`:
    /// those would move the cluster hash tag.
    pub key_prefix: String,
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

/// Counters of this process's Redis health, for `/metrics`.
static RECONNECTS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_reconnect() {
    RECONNECTS.fetch_add(1, Ordering::Relaxed);
}

/// Times this process's subscription was lost and made again, and Redis
/// commands that failed (since the process started).
pub fn health_counters() -> (u64, u64) {
    (
        RECONNECTS.load(Ordering::Relaxed),
        ERRORS.load(Ordering::Relaxed),
    )
}

/// A failed Redis command as the stores report it: counted, and without
/// anything from the URL.
fn backend(e: &::redis::RedisError) -> StoreError {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    StoreError::Backend(format!("Redis: {e}"))
}

/// A connection to Redis, with the deployment's key prefix and its push.
pub struct RedisStore {
    link: Link,
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
        let link = Link::connect(&target, options.statement_timeout)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot connect to Redis: {e}")))?;
        let source = match (&target, &link) {
            (_, Link::Sentinel(s)) => Source::Sentinel(Arc::clone(s)),
            (Target::Cluster(seeds), _) => Source::Seeds(seeds.clone()),
            (Target::Single(url), _) => Source::Url(url.clone()),
            (Target::Sentinel(_), _) => {
                return Err(StoreError::Backend("Sentinel without its link".into()));
            }
        };
        let channel = format!("{}log", redis.key_prefix);
        let store = Self {
            link,
            prefix: redis.key_prefix.clone(),
            push: Subscriber::start(source, channel),
            idle: options.session_idle,
            closed: std::sync::atomic::AtomicBool::new(false),
        };
        store.ping().await?;
        Ok(store)
    }

    /// The database's stores with sessions in Redis and the logs announced
    /// on it.
    pub fn over(self, database: Stores) -> Stores {
        let this = Arc::new(self);
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

    fn link(&self) -> Link {
        self.link.clone()
    }

    /// A command handle; an error once the store is closed.
    fn conn(&self) -> StoreResult<Link> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Backend("Redis: the store is closed".into()));
        }
        Ok(self.link())
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
        let published: ::redis::RedisResult<i64> = self
            .link()
            .publish(format!("{}log", self.prefix), kind)
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
