//! Request extractors whose every rejection is a contract error: bodies as
//! JSON (and, where the contract allows, form-encoded), and who is calling
//! from where.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tessera_wire::forwarded::{self, ProxyHeader};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;
use crate::core::sessions::ClientInfo;

/// Largest request body accepted (the contract's 64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_USER_AGENT_CHARS: usize = 256;

/// A JSON body.
pub struct Json<T>(pub T);

/// A JSON or `application/x-www-form-urlencoded` body.
pub struct JsonOrForm<T>(pub T);

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(req: &Request) -> Option<BodyKind> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mime = ct.split(';').next()?.trim().to_ascii_lowercase();
    if mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")) {
        Some(BodyKind::Json)
    } else if mime == "application/x-www-form-urlencoded" {
        Some(BodyKind::Form)
    } else {
        None
    }
}

async fn read_body<T: DeserializeOwned, S: Send + Sync>(
    req: Request,
    state: &S,
    allow_form: bool,
) -> Result<T, ApiError> {
    let kind = match body_kind(&req) {
        Some(BodyKind::Form) if !allow_form => None,
        other => other,
    };
    let Some(kind) = kind else {
        return Err(ApiError::unsupported_media_type(if allow_form {
            "send the body as application/json or application/x-www-form-urlencoded"
        } else {
            "send the body as application/json"
        }));
    };
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large()
        } else {
            ApiError::invalid_request("the request body could not be read")
        }
    })?;
    match kind {
        // Syntax first, then shape: `[1,2` is malformed (400) even though a
        // direct typed parse would stumble on the shape (422) before the end.
        BodyKind::Json => {
            // Every body in the contract is an object with distinct keys:
            // an array (which serde maps onto a struct by position) or a
            // repeated key (which serde resolves as "last wins", where a
            // proxy or log may keep the first) is refused.
            let value = tessera_wire::json::parse_object(&bytes).map_err(|e| match e {
                tessera_wire::json::BodyError::Syntax => ApiError::invalid_request(e.to_string()),
                _ => ApiError::validation(e.to_string()),
            })?;
            T::deserialize(value)
                .map_err(|e| ApiError::validation(format!("the JSON body does not fit: {e}")))
        }
        BodyKind::Form => serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ApiError::validation(format!("the form body does not fit: {e}"))),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state, false).await.map(Json)
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_body(req, state, true).await.map(JsonOrForm)
    }
}

/// The caller's address and user agent, as recorded on sessions and used by
/// the rate limits. The address is the socket peer's, unless the peer is a
/// configured trusted proxy: then the forwarding header is read from the
/// right (see [`tessera_wire::forwarded`]).
pub struct Client(pub ClientInfo);

/// The client address for a request from `peer` with these headers.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ProxyHeader,
) -> Option<IpAddr> {
    let values = headers
        .get_all(header.name())
        .iter()
        .filter_map(|v| v.to_str().ok());
    Some(forwarded::client_ip(peer?, values, header, |ip| {
        trusted.iter().any(|net| net.contains(&ip))
    }))
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let settings = &state.settings;
        let ip = client_ip(
            peer,
            &parts.headers,
            &settings.trusted_proxies,
            settings.trusted_proxy_header,
        )
        .map(|ip| ip.to_canonical().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect::<String>()
            })
            .filter(|ua| !ua.is_empty());
        Ok(Client(ClientInfo { ip, user_agent }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const XFF: ProxyHeader = ProxyHeader::XForwardedFor;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.5, 10.0.0.2"),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        // Through the trusted proxies: the first untrusted hop from the right.
        assert_eq!(
            client_ip(Some(proxy), &h, &trusted, XFF),
            Some("203.0.113.5".parse().unwrap())
        );
        // From anyone else the header is ignored (no rate-limit evasion).
        assert_eq!(client_ip(Some(stranger), &h, &trusted, XFF), Some(stranger));
        assert_eq!(client_ip(Some(proxy), &h, &[], XFF), Some(proxy));
        assert_eq!(
            client_ip(Some(proxy), &HeaderMap::new(), &trusted, XFF),
            Some(proxy)
        );
        assert_eq!(client_ip(None, &h, &trusted, XFF), None);
        // The other header is never read: the proxy did not write it.
        assert_eq!(
            client_ip(Some(proxy), &h, &trusted, ProxyHeader::Forwarded),
            Some(proxy)
        );
    }
}
