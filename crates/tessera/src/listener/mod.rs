//! The HTTP/1.1 accept loop. `axum::serve` sets no limit on how long a client
//! may take to send a request, nor on how many connections it may hold, so a
//! client trickling bytes, or opening connections and sending nothing, holds
//! them (and their file descriptors) for ever (slowloris; issue #19). This
//! loop serves each connection with hyper directly and
//!
//! - closes a connection that takes too long to send a request's headers or
//!   its body (a late body is answered 408 first);
//! - caps the connections open at once, per client address and overall;
//! - answers the requests hyper refuses itself (400, 414, 431) in the
//!   contract's JSON error shape instead of hyper's empty bodies;
//! - drains connections on shutdown.
//!
//! **Deadlines.** A connection with no request in progress (none yet, or
//! the last response fully sent) must deliver the next request's headers
//! within the read timeout, and a request's body must have fully arrived
//! within the read timeout of its headers; otherwise the connection is
//! closed. They are kept by one watchdog per connection rather than by
//! hyper's `header_read_timeout`, which arms and cancels a timer (a boxed
//! sleep in tokio's timer wheel) for every request: a cost a forward-auth
//! check answered in microseconds notices (bench/README.md). A request
//! without a body (the forward-auth `GET`) costs nothing more than before;
//! one with a body costs a few atomic operations, when its headers arrive
//! and when its body has, and no timer. A body is timed from its headers
//! to its end, not from byte to byte: the contract's bodies are at most
//! 64 KiB, so 10 s asks 6.4 KB/s of a client, and a trickle of a byte a
//! second cannot keep one alive.
//! Once a response is being sent (the revocation event stream sends one for
//! hours) no deadline applies.
//!
//! **Connection caps** ([`Limits`]). Past `max_connections` the loop stops
//! accepting: new connections wait in the kernel's listen queue and are
//! served as soon as a connection closes (the deadlines close idle and slow
//! ones within seconds), instead of `accept` failing with EMFILE and the
//! database's files with it; the cap is sized below the open-file limit
//! ([`crate::fd_limit`]). Past `max_connections_per_ip` open connections
//! from one address (IPv6: one /64, which one subscriber holds whole), a new
//! connection from it is closed at once, unanswered: an answer would need
//! its request read first (closing a socket with unread bytes resets it,
//! and the client loses the answer), which would keep the very descriptor
//! the cap saves for up to a deadline. The per-address cap keeps one
//! address from filling the overall cap, so `/healthz` and everyone else
//! are still served during a flood from one address. Peers in
//! `trusted_proxies` are exempt from it: one proxy carries many clients'
//! connections, and any cap on it would cut all of them off at once; the
//! proxy limits its clients, and it counts towards the overall cap.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

mod caps;
mod refusal;
mod watchdog;

use caps::{Admission, PeerCounts};
use refusal::Socket;
pub use watchdog::RequestBody;
use watchdog::{Activity, Tracked};

/// How long a client may take to send a request's headers (from the
/// connection's opening, or the end of its previous response), and then
/// its body (from the end of its headers).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections the separate `/metrics` listener serves at once: a scraper
/// or two; its descriptors come out of [`crate::fd_limit::RESERVED`].
const METRICS_MAX_CONNECTIONS: usize = 64;
/// At most one warning a minute about refused or waiting connections: a
/// flood must not flood the log too.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// What the accept loop enforces.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Headers within this of the connection going idle; a body within
    /// this of its headers.
    pub read_timeout: Duration,
    /// Most connections open at once (`None`: no cap).
    pub max_connections: Option<usize>,
    /// Most connections open at once from one address, or one IPv6 /64
    /// (`None`: no cap).
    pub max_connections_per_ip: Option<usize>,
    /// Peers the per-address cap does not apply to: the trusted proxies.
    pub exempt: Vec<IpNet>,
}

impl Limits {
    /// The read deadline alone, no connection caps (tests, embedding).
    pub fn read_timeout(read_timeout: Duration) -> Self {
        Self {
            read_timeout,
            max_connections: None,
            max_connections_per_ip: None,
            exempt: Vec::new(),
        }
    }

    /// The API listener's limits.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            read_timeout: HEADER_READ_TIMEOUT,
            max_connections: Some(settings.max_connections),
            max_connections_per_ip: Some(settings.max_connections_per_ip),
            exempt: settings.trusted_proxies.clone(),
        }
    }

    /// The separate `/metrics` listener's limits.
    pub fn metrics() -> Self {
        Self {
            max_connections: Some(METRICS_MAX_CONNECTIONS),
            ..Self::read_timeout(HEADER_READ_TIMEOUT)
        }
    }

    /// One line for the start banner.
    pub fn describe(&self) -> String {
        let total = self
            .max_connections
            .map_or_else(|| "no cap".to_owned(), |n| format!("at most {n} open"));
        let per_ip = match self.max_connections_per_ip {
            None => "no per-address cap".to_owned(),
            Some(n) if self.exempt.is_empty() => format!("{n} per client address"),
            Some(n) => format!("{n} per client address (trusted proxies exempt)"),
        };
        format!("connections: {total}, {per_ip}")
    }
}

/// A service that answers the requests of one connection, built knowing the
/// peer's address (handlers see it as `ConnectInfo<SocketAddr>`).
pub trait ConnectionService: Clone + Send + 'static {
    type Service: Service<
            Request<RequestBody>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static;

    fn for_peer(&self, peer: SocketAddr) -> Self::Service;
}

/// A plain router: every request gets the peer address as an extension.
impl ConnectionService for Router {
    type Service = WithPeer<Router>;

    fn for_peer(&self, peer: SocketAddr) -> WithPeer<Router> {
        WithPeer {
            inner: self.clone(),
            peer,
        }
    }
}

/// Adds `ConnectInfo` to each request before `inner` sees it.
#[derive(Clone)]
pub struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(ConnectInfo(self.peer));
        self.inner.call(req)
    }
}

/// Serves `service` (the API's [`crate::http::Endpoint`], or a plain
/// router) on `listener` with a read deadline and no connection caps until
/// `shutdown` completes; see [`serve_with`].
pub async fn serve<S: ConnectionService>(
    listener: TcpListener,
    service: S,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(
        listener,
        service,
        Limits::read_timeout(read_timeout),
        shutdown,
    )
    .await;
}

/// Serves `service` on `listener` within `limits` until `shutdown`
/// completes, then stops accepting and waits (up to 30 s) for the
/// connections' requests in flight.
pub async fn serve_with<S: ConnectionService>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog below keeps the deadlines; hyper's own would default to
    // 30 s per request.
    http.header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    let slots = limits
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS))));
    let peers = limits
        .max_connections_per_ip
        .map(|cap| Arc::new(PeerCounts::new(cap, limits.exempt.clone())));
    let read_timeout = limits.read_timeout;
    let mut full_warning = Throttled::default();
    let mut refused_warning = Throttled::default();
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the cap, connections wait in the listen queue.
        let slot = match &slots {
            None => None,
            Some(slots) => {
                if slots.available_permits() == 0 && full_warning.due() {
                    tracing::warn!(
                        max_connections = limits.max_connections.unwrap_or_default(),
                        "connection cap reached: new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = Arc::clone(slots).acquire_owned() => permit.ok(),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead
                    // of spinning, then keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let peer_slot = match &peers {
            None => None,
            Some(peers) => match peers.admit(peer.ip()) {
                Admission::Exempt => None,
                Admission::Admitted(slot) => Some(slot),
                Admission::Refused => {
                    drop(stream);
                    refused_warning.count += 1;
                    if refused_warning.due() {
                        tracing::warn!(
                            refused = refused_warning.count,
                            most_recent = %peer.ip(),
                            max_connections_per_ip = peers.cap,
                            "closed new connections from addresses already holding the most allowed"
                        );
                        refused_warning.count = 0;
                    }
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new(read_timeout));
        let service = Tracked {
            inner: service.for_peer(peer),
            activity: Arc::clone(&activity),
        };
        let connection = http.serve_connection(
            TokioIo::new(Socket::new(stream)),
            TowerToHyperService::new(service),
        );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Held until the connection is gone.
            let _slots = (slot, peer_slot);
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = activity.watch() => {
                    tracing::debug!("closed a connection whose request headers or body did not arrive in time");
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
    }
}

/// A warning given at most once per [`WARN_EVERY`], with a count of what
/// happened in between.
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARN_EVERY) {
            return false;
        }
        self.last = Some(now);
        true
    }
}
