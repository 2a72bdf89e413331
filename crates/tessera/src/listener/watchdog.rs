//! The per-connection watchdog: the read deadlines for headers and bodies,
//! kept without a timer per request, and the 408 for a late body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tower::Service;

use super::HEADER_READ_TIMEOUT;
use crate::http::error::ApiError;

/// How long a connection whose body is late gets to send its 408 before it
/// is closed regardless (the client may not be reading either).
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// What a connection's watchdog knows: how many requests are in progress
/// (headers received, response not yet fully sent), when the last one
/// ended, and whether a request's body is still arriving, since when.
pub(super) struct Activity {
    opened: Instant,
    read_timeout: Duration,
    in_progress: AtomicU32,
    /// When the connection last became idle, in milliseconds after `opened`.
    idle_since_ms: AtomicU64,
    /// Request bodies still arriving (HTTP/1.1 reads one request at a
    /// time, so 0 or 1).
    bodies: AtomicU32,
    /// When the latest body's headers arrived, in milliseconds after
    /// `opened`.
    body_since_ms: AtomicU64,
    /// Set by the watchdog when a body missed its deadline: the request
    /// then answers 408 (and the connection closes).
    body_late: AtomicBool,
}

impl Activity {
    pub(super) fn new(read_timeout: Duration) -> Self {
        Self {
            opened: Instant::now(),
            read_timeout,
            in_progress: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            bodies: AtomicU32::new(0),
            body_since_ms: AtomicU64::new(0),
            body_late: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at_ms(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Marks a request as in progress until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(Arc::clone(self))
    }

    /// Marks a request's body as arriving until the returned guard is
    /// dropped (the body ended, or was dropped unread).
    fn body_begins(self: &Arc<Self>) -> BodyArriving {
        self.body_since_ms.store(self.now_ms(), Ordering::Relaxed);
        self.bodies.fetch_add(1, Ordering::Release);
        BodyArriving(Arc::clone(self))
    }

    /// Resolves when the connection should be closed: idle for the read
    /// timeout, or a body still arriving that long after its headers (then
    /// after letting the request answer 408). Sleeps until the earliest
    /// moment either could be true, so it wakes about once per timeout
    /// however many requests the connection carries; a deadline begun
    /// while it sleeps is never later than its wake-up.
    pub(super) async fn watch(&self) {
        let limit = self.read_timeout;
        loop {
            let now = Instant::now();
            let wake = if self.bodies.load(Ordering::Acquire) > 0 {
                let deadline = self.at_ms(self.body_since_ms.load(Ordering::Relaxed)) + limit;
                if deadline <= now {
                    self.body_late.store(true, Ordering::Release);
                    // Returns to the connection's task once, which polls
                    // the request: it sees the flag and answers 408.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(REFUSAL_GRACE.min(limit)).await;
                    return;
                }
                deadline
            } else if self.in_progress.load(Ordering::Acquire) > 0 {
                now + limit
            } else {
                let idle_since = self.idle_since_ms.load(Ordering::Relaxed);
                let deadline = self.at_ms(idle_since) + limit;
                if deadline <= now {
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
pub(super) struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.in_progress.fetch_sub(1, Ordering::Release);
    }
}

/// A request body still arriving; dropped when it has arrived.
pub(super) struct BodyArriving(Arc<Activity>);

impl Drop for BodyArriving {
    fn drop(&mut self) {
        self.0.bodies.fetch_sub(1, Ordering::Release);
    }
}

/// A request's body as the service sees it: hyper's, telling the
/// connection's watchdog when it has fully arrived.
pub struct RequestBody {
    inner: Incoming,
    arriving: Option<BodyArriving>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if this.arriving.is_some() && (!matches!(frame, Some(Ok(_))) || this.inner.is_end_stream())
        {
            this.arriving = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's service, counting its requests in progress for the
/// watchdog (from the call until the response body is dropped: sent, or
/// the connection gone) and answering 408 for a request whose body the
/// watchdog found late.
#[derive(Clone)]
pub(super) struct Tracked<S> {
    pub(super) inner: S,
    pub(super) activity: Arc<Activity>,
}

impl<S> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<RequestBody>, Response = axum::response::Response>,
{
    type Response = Response<TrackedBody<axum::body::Body>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let in_progress = self.activity.begin();
        let has_body = !req.body().is_end_stream();
        let req = req.map(|inner| RequestBody {
            inner,
            arriving: has_body.then(|| self.activity.body_begins()),
        });
        TrackedFuture {
            inner: Some(self.inner.call(req)),
            in_progress: Some(in_progress),
            has_body,
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; hands its request's guard on to the
    /// response body.
    pub(super) struct TrackedFuture<F> {
        #[pin]
        inner: Option<F>,
        in_progress: Option<InProgress>,
        has_body: bool,
    }
}

impl<F, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<axum::response::Response, E>>,
{
    type Output = Result<Response<TrackedBody<axum::body::Body>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Answered already; hyper does not poll a finished future.
            return Poll::Pending;
        };
        let response = match inner.poll(cx) {
            Poll::Ready(response) => response?,
            Poll::Pending => {
                let late = *this.has_body
                    && this
                        .in_progress
                        .as_ref()
                        .is_some_and(|p| p.0.body_late.load(Ordering::Acquire));
                if !late {
                    return Poll::Pending;
                }
                // The handler is waiting for a body that did not come in
                // time: it is dropped (as if the client had gone) and the
                // client told why.
                this.inner.set(None);
                let limit = this
                    .in_progress
                    .as_ref()
                    .map_or(HEADER_READ_TIMEOUT, |p| p.0.read_timeout);
                late_body(limit)
            }
        };
        let in_progress = this.in_progress.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _in_progress: in_progress,
        })))
    }
}

/// 408 for a body that did not arrive within `limit` of its headers; the
/// connection closes after it (RFC 9110 §15.5.9).
pub(super) fn late_body(limit: Duration) -> axum::response::Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request",
        format!(
            "the request body did not arrive within {} of its headers",
            humantime::format_duration(limit)
        ),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in progress until dropped.
    pub(super) struct TrackedBody<B> {
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
