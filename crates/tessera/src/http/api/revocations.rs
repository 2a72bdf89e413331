//! `GET /v1/revocations`: the revocation feed for service clients, as JSON
//! pages or, with `Accept: text/event-stream`, as a stream that stays open
//! and pushes each new revocation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;

use super::super::AppState;
use super::super::error::{ApiError, ApiResult};
use super::tokens::basic_credentials;
use crate::core::clients::CLIENT_RECHECK;
use crate::core::error::CoreError;
use crate::core::events::FOLLOW_INTERVAL;
use crate::core::feed::{FeedPage, parse_cursor};
use crate::core::revocation::Revocation;
use crate::core::secret::SecretHash;
use crate::http::api::responses::FailClosed;
use crate::http::openapi as doc;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `cursor` of the last page seen; without it the feed starts at the
    /// oldest event still kept.
    #[param(pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
}

/// Revocations for services that verify access tokens themselves: a revoked
/// `jti` (until `exp`), a revoked session or refresh family (`sid`, until
/// `exp`), or a user's cut-off (`not_before`: every token of `sub` with an
/// earlier `iat` is dead). Times are Unix seconds.
#[utoipa::path(
    get,
    path = "/v1/revocations",
    tag = "tokens",
    security(("basicAuth" = [])),
    params(FeedQuery),
    responses(
        (status = 200, description = "Up to 500 events after the cursor, oldest first; with `Accept: text/event-stream`, the same events and then every new one as SSE `data:` lines (each with its cursor as the event `id`)",
            content((FeedPage = "application/json"), (String = "text/event-stream"))),
        (status = 401, description = "`invalid_client`: missing or wrong service client credentials", body = doc::Error,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"tessera\"`"))),
        (status = 422, description = "`validation_failed`: `after` is not a cursor from this feed", body = doc::Error),
        FailClosed,
    ),
)]
pub async fn feed(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let (id, secret) = basic_credentials(&headers).ok_or(CoreError::InvalidClient)?;
    // The stream keeps the hash to check its client again, not the secret.
    let presented = SecretHash::of(secret.as_bytes());
    state.core.authenticate_client_hash(&id, &presented).await?;
    let Query(query) =
        query.map_err(|_| ApiError::invalid_request("the query string cannot be read"))?;
    let cursor = parse_cursor(query.after.as_deref())?;
    if wants_event_stream(&headers) {
        let (backlog, read_to) = state.core.revocations_since(cursor).await?;
        let client = (id, presented);
        return Ok(Sse::new(follow(state, client, read_to, backlog.into()))
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    Ok(axum::Json(state.core.revocation_feed(cursor).await?).into_response())
}

fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The backlog, then every revocation as it lands in the log (read every
/// follow interval, like the other processes' caches do). The stream ends if
/// the store cannot be read or the server shuts down; the client reconnects
/// with the last event id. It also ends, within [`CLIENT_RECHECK`], once
/// its client (id and the hash of the secret it presented) no longer
/// authenticates: disabled, deleted, or given a new secret. `read_to` is
/// where the log was read to (past the backlog, and past entries the feed
/// leaves out).
fn follow(
    state: AppState,
    client: (String, SecretHash),
    read_to: i64,
    backlog: VecDeque<(i64, Revocation)>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let checked = Instant::now();
    futures_util::stream::unfold(
        (state, client, checked, read_to, backlog),
        |(state, client, mut checked, mut read_to, mut queue)| async move {
            loop {
                if let Some((seq, revocation)) = queue.pop_front() {
                    let event = Event::default()
                        .id(seq.to_string())
                        .json_data(&revocation)
                        .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                    return Some((Ok(event), (state, client, checked, read_to, queue)));
                }
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                    () = state.core.shutdown.cancelled() => return None,
                }
                if checked.elapsed() >= CLIENT_RECHECK {
                    match state
                        .core
                        .authenticate_client_hash(&client.0, &client.1)
                        .await
                    {
                        Ok(_) => checked = Instant::now(),
                        Err(CoreError::InvalidClient) => {
                            tracing::info!(client_id = %client.0, "revocation feed: the client no longer authenticates, ending the stream");
                            return None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "revocation feed: store unreadable, ending the stream");
                            return None;
                        }
                    }
                }
                match state.core.revocations_since(read_to).await {
                    Ok((next, to)) => {
                        queue.extend(next);
                        read_to = to;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation feed: store unreadable, ending the stream");
                        return None;
                    }
                }
            }
        },
    )
}
