//! The revocation feed: the durable revocation log, paged by cursor, for
//! services that verify access tokens themselves and must also refuse the
//! revoked ones.

use serde::Serialize;

use super::Tessera;
use super::error::{CoreError, CoreResult};
use super::revocation::Revocation;

/// Most events in one page.
pub const FEED_PAGE: u32 = 500;

/// `GET /v1/revocations`: events after a cursor, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedPage {
    pub events: Vec<Revocation>,
    /// Pass as `after` to get the events that follow; unchanged when there
    /// were none.
    #[schema(example = "42")]
    pub cursor: String,
}

/// A cursor as the client sent it: the sequence number of the last event it
/// has seen.
pub fn parse_cursor(after: Option<&str>) -> CoreResult<i64> {
    match after {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| CoreError::Validation("after is not a cursor from this feed".into())),
    }
}

impl Tessera {
    /// The public revocations after `cursor` (0: from the oldest still
    /// kept), each with its own cursor, and the cursor the page was read to
    /// (past internal entries too, which outside verifiers do not get: see
    /// [`Revocation::is_public`]).
    pub async fn revocations_since(
        &self,
        cursor: i64,
    ) -> CoreResult<(Vec<(i64, Revocation)>, i64)> {
        let page = self
            .stores
            .revocations
            .revocations_after(cursor, FEED_PAGE)
            .await?;
        let read_to = page.last().map_or(cursor, |(seq, _, _)| *seq);
        let public = page
            .into_iter()
            .filter(|(_, revocation, _)| revocation.is_public())
            .map(|(seq, revocation, _)| (seq, revocation))
            .collect();
        Ok((public, read_to))
    }

    pub async fn revocation_feed(&self, cursor: i64) -> CoreResult<FeedPage> {
        let (events, read_to) = self.revocations_since(cursor).await?;
        Ok(FeedPage {
            events: events.into_iter().map(|(_, r)| r).collect(),
            cursor: read_to.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_sequence_numbers() {
        assert_eq!(parse_cursor(None).unwrap(), 0);
        assert_eq!(parse_cursor(Some("42")).unwrap(), 42);
        for bad in ["", "-1", "x", "1.5", "99999999999999999999"] {
            assert!(parse_cursor(Some(bad)).is_err(), "{bad}");
        }
    }
}
