//! The service the listener serves: the router, with `GET /v1/verify`
//! answered before it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::future::{BoxFuture, Either};
use tower::Service;

use super::AppState;
use super::api::identity::{VERIFY_ROUTE, verify_direct};

/// The whole HTTP API as one service. Forward-auth (`GET /v1/verify`) is
/// what a proxy calls on every request it passes on, so it skips routing and
/// the middleware stack and runs [`verify_direct`], which applies the same
/// rules; every other request goes to the router.
///
/// The listener clones the service for every request, hence one shared
/// allocation rather than three reference counts.
#[derive(Clone)]
pub struct Endpoint {
    shared: Arc<Shared>,
    /// The connection's peer, given to routed requests as `ConnectInfo`
    /// (rate limits key on it); `/v1/verify` does not use it.
    peer: Option<SocketAddr>,
}

struct Shared {
    router: Router,
    state: AppState,
}

impl Endpoint {
    pub fn new(router: Router, state: AppState) -> Self {
        Self {
            shared: Arc::new(Shared { router, state }),
            peer: None,
        }
    }

    /// The router alone, without the direct verify path (tests hold the two
    /// to the same answers).
    pub fn router(&self) -> &Router {
        &self.shared.router
    }
}

impl crate::listener::ConnectionService for Endpoint {
    type Service = Endpoint;

    fn for_peer(&self, peer: SocketAddr) -> Endpoint {
        Endpoint {
            shared: Arc::clone(&self.shared),
            peer: Some(peer),
        }
    }
}

impl<B> Service<Request<B>> for Endpoint
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, BoxFuture<'static, Result<Response, Infallible>>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if req.method() == Method::GET && req.uri().path() == VERIFY_ROUTE {
            let shared = Arc::clone(&self.shared);
            return Either::Right(Box::pin(async move {
                Ok(verify_direct(&shared.state, req).await)
            }));
        }
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        Either::Left(Service::<Request<B>>::call(
            &mut self.shared.router.clone(),
            req,
        ))
    }
}
