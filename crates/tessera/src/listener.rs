//! The HTTP/1.1 accept loop. `axum::serve` sets no limit on how long a client
//! may take to send its request headers, so a client trickling one header
//! byte at a time holds a connection (and its memory) for ever (slowloris).
//! This loop serves each connection with hyper directly, closes connections
//! that take too long to send a request's headers, and drains connections
//! on shutdown.
//!
//! The header deadline is kept by one watchdog per connection rather than
//! by hyper's `header_read_timeout`, which arms and cancels a timer (a boxed
//! sleep in tokio's timer wheel) for every request: a cost a forward-auth
//! check answered in microseconds notices (bench/README.md). The rule is the
//! same: a connection with no request in progress (none yet, or the last
//! response fully sent) must deliver the next request's headers within the
//! timeout, or it is closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::Service;

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A service that answers the requests of one connection, built knowing the
/// peer's address (handlers see it as `ConnectInfo<SocketAddr>`).
pub trait ConnectionService: Clone + Send + 'static {
    type Service: Service<
            Request<Incoming>,
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
/// router) on `listener` until `shutdown` completes, then stops
/// accepting and waits (up to 30 s) for the connections' requests in flight.
pub async fn serve<S: ConnectionService>(
    listener: TcpListener,
    service: S,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // The watchdog below keeps the header deadline; hyper's own would
    // default to 30 s per request.
    http.header_read_timeout(None);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
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
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: service.for_peer(peer),
            activity: Arc::clone(&activity),
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                () = activity.idle_too_long(header_read_timeout) => {
                    tracing::debug!("closed a connection that sent no complete request headers in time");
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

/// What a connection's watchdog knows: how many requests are in progress
/// (headers received, response not yet fully sent) and when the last one
/// ended.
struct Activity {
    opened: Instant,
    in_progress: AtomicU32,
    /// When the connection last became idle, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_progress: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request as in progress until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(Arc::clone(self))
    }

    /// Resolves once the connection has been idle for `limit`. Sleeps until
    /// the earliest moment that could be true, so it wakes about once per
    /// `limit` however many requests the connection carries.
    async fn idle_too_long(&self, limit: Duration) {
        loop {
            let wake = if self.in_progress.load(Ordering::Acquire) > 0 {
                Instant::now() + limit
            } else {
                let idle_since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
                let deadline = self.opened + idle_since + limit;
                if deadline <= Instant::now() {
                    return;
                }
                deadline
            };
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}

/// A request in progress on its connection; dropping it (when the response
/// body was sent, or the request abandoned) makes the connection idle.
struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        let now_ms = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(now_ms, Ordering::Relaxed);
        activity.in_progress.fetch_sub(1, Ordering::Release);
    }
}

/// The connection's service, counting its requests in progress for the
/// watchdog: from the call until the response body is dropped (sent, or
/// the connection gone).
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B, ResBody> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let in_progress = self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(req),
            in_progress: Some(in_progress),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; hands its request's guard on to the
    /// response body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_progress: Option<InProgress>,
    }
}

impl<F, ResBody, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TrackedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let in_progress = this.in_progress.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _in_progress: in_progress,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until dropped.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_progress: Option<InProgress>,
    }
}

impl<B: Body<Data = Bytes>> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
