//! One handle for commands, whichever way Redis is run.
//!
//! - One server: redis-rs's `ConnectionManager`, one multiplexed connection
//!   that reconnects by itself (with backoff) when it drops.
//! - A cluster: redis-rs's cluster connection, which routes each command by
//!   its key's slot and follows `MOVED`/`ASK` and failovers.
//! - Sentinel: a `ConnectionManager` to the primary the sentinels name,
//!   asked again whenever a command fails on the connection (the primary
//!   died, or was demoted and now answers `READONLY`); the failing command
//!   fails (the request gets 503), and the next ones go to the new primary.
//!
//! Every command has a deadline (the store's statement timeout), so a
//! Redis that stops answering fails requests quickly instead of holding
//! them: fail closed, never hang.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsMode, Value,
};
use arc_swap::ArcSwap;

use super::target::{SentinelTarget, Target};
use super::tls::{self, Certificates};

/// How long connecting may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Least time between two look-ups of the primary (Sentinel).
const RESOLVE_EVERY: Duration = Duration::from_millis(200);

/// A cheap-to-clone command handle.
#[derive(Clone)]
pub(super) enum Link {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelLink>),
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
}

impl Link {
    /// Connects to `target` (failing when it does not answer within
    /// [`CONNECT_TIMEOUT`]), with `certs` for TLS when given.
    pub(super) async fn connect(
        target: &Target,
        certs: &Certificates,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        let connect = async {
            match target {
                Target::Single(url) => {
                    let client = tls::client(url.as_str(), certs)?;
                    let manager = client
                        .get_connection_manager_with_config(manager_config(response_timeout))
                        .await?;
                    Ok(Link::Single(manager))
                }
                Target::Cluster(seeds) => {
                    let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(response_timeout)
                        .retries(2)
                        .min_retry_wait(20)
                        .max_retry_wait(500);
                    if let Some(certs) = certs {
                        builder = builder.certs(certs.clone());
                    }
                    let client = builder.build()?;
                    Ok(Link::Cluster(client.get_async_connection().await?))
                }
                Target::Sentinel(s) => Ok(Link::Sentinel(Arc::new(
                    SentinelLink::connect(s, certs, response_timeout).await?,
                ))),
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT * 3, connect)
            .await
            .map_err(|_| {
                RedisError::from((ErrorKind::Io, "no answer within the connect timeout"))
            })?
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(c) => Box::pin(async move {
                let answer = c.req_packed_command(cmd).await;
                match answer {
                    // The connection broke since the last command (Redis
                    // restarted): the manager reconnects, and the command
                    // runs once more on the new connection (every command
                    // Tessera sends is idempotent, see the Sentinel arm).
                    Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                        c.req_packed_command(cmd).await
                    }
                    answer => answer,
                }
            }),
            Link::Cluster(c) => c.req_packed_command(cmd),
            Link::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move {
                    let mut c = s.current();
                    let answer = c.req_packed_command(cmd).await;
                    if s.after(&answer).await {
                        // The primary moved: once more, there. Every command
                        // Tessera sends is idempotent (scripts that set,
                        // delete or move a time forward; PUBLISH of a
                        // wake-up), so a command that did reach the old
                        // primary may run twice.
                        return s.current().req_packed_command(cmd).await;
                    }
                    answer
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(c) => Box::pin(async move {
                match c.req_packed_commands(pipeline, offset, count).await {
                    Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                        c.req_packed_commands(pipeline, offset, count).await
                    }
                    answer => answer,
                }
            }),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(s) => {
                let s = Arc::clone(s);
                Box::pin(async move {
                    let mut c = s.current();
                    let answer = c.req_packed_commands(pipeline, offset, count).await;
                    if s.after(&answer).await {
                        return s
                            .current()
                            .req_packed_commands(pipeline, offset, count)
                            .await;
                    }
                    answer
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
            Link::Sentinel(s) => s.current().get_db(),
        }
    }
}

/// Whether an error means the connection (or the server behind it) is not
/// the primary any more, rather than a command's own failure.
pub(super) fn lost_primary(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// A connection to the primary the sentinels name, replaced when it fails.
pub(super) struct SentinelLink {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: ArcSwap<ConnectionManager>,
    resolved_at: std::sync::Mutex<Instant>,
    response_timeout: Duration,
}

impl SentinelLink {
    async fn connect(
        target: &SentinelTarget,
        certs: &Certificates,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        let mut sentinel = sentinel_client(target, certs)?;
        let client = sentinel.async_get_client().await?;
        let manager = client
            .get_connection_manager_with_config(manager_config(response_timeout))
            .await?;
        Ok(Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: ArcSwap::from_pointee(manager),
            resolved_at: std::sync::Mutex::new(Instant::now()),
            response_timeout,
        })
    }

    fn current(&self) -> ConnectionManager {
        ConnectionManager::clone(&self.current.load())
    }

    /// After a command: if it failed on the connection, asks the sentinels
    /// where the primary is now (at most every [`RESOLVE_EVERY`]) and
    /// connects there. True when a new connection is in place (the caller
    /// may try once more).
    async fn after<T>(&self, answer: &RedisResult<T>) -> bool {
        let Err(e) = answer else { return false };
        if !lost_primary(e) {
            return false;
        }
        {
            let Ok(mut at) = self.resolved_at.lock() else {
                return false;
            };
            if at.elapsed() < RESOLVE_EVERY {
                return false;
            }
            *at = Instant::now();
        }
        let mut sentinel = self.sentinel.lock().await;
        let resolved = async {
            let client = sentinel.async_get_client().await?;
            client
                .get_connection_manager_with_config(manager_config(self.response_timeout))
                .await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, resolved).await {
            Ok(Ok(manager)) => {
                self.current.store(Arc::new(manager));
                tracing::info!("Redis primary looked up again through Sentinel");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Sentinel names no reachable primary yet");
                false
            }
            Err(_) => {
                tracing::warn!("Sentinel did not answer in time");
                false
            }
        }
    }

    /// A client for the primary as the sentinels name it now (the push
    /// subscriber connects there).
    pub(super) async fn primary_client(&self) -> RedisResult<Client> {
        self.sentinel.lock().await.async_get_client().await
    }
}

/// A Sentinel client for `target` (addresses, the primary's credentials,
/// TLS to the sentinels and the primary with `certs` when given).
fn sentinel_client(target: &SentinelTarget, certs: &Certificates) -> RedisResult<SentinelClient> {
    let sentinels = target.sentinels.iter().map(|(host, port)| {
        if target.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder =
        SentinelClientBuilder::new(sentinels, &target.master, SentinelServerType::Master)?
            .set_client_to_redis_db(target.db);
    if let Some(user) = &target.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &target.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if target.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            builder = builder
                .set_client_to_redis_certificates(certs.clone())
                .set_client_to_sentinel_certificates(certs.clone());
        }
    }
    builder.build()
}
