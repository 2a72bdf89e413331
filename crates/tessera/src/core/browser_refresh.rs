//! Refreshing a browser's tokens for its pages (jwt-cookie mode), with a
//! short grace for the browser's own concurrent requests.
//!
//! A browser in jwt-cookie mode holds one refresh token, and several of its
//! page requests can present it at once (tabs restored together, an app's
//! requests sent to `/login` by a proxy when the access cookie expired).
//! Strict rotation would call the second one reuse and revoke the family,
//! signing the browser out for doing nothing wrong. So on one node,
//! requests presenting the same refresh token within [`GRACE`] share the
//! rotation the first one started: they get the same new pair. Only a
//! success is shared; after a failure the next request tries again (and a
//! spent token then fails as reuse). A replay after the grace, or on
//! another node, is reuse as ever. OAuth servers commonly allow such a
//! "reuse interval" for exactly this; it widens the window in which a
//! thief replaying a stolen refresh token goes unnoticed by those seconds,
//! only on the node that served the rotation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::Tessera;
use super::error::{CoreError, CoreResult};
use super::refresh::TokenPair;
use super::secret::{BearerSecret, SecretHash};
use super::sessions::ClientInfo;

/// How long requests presenting one refresh token share its rotation.
pub const GRACE: Duration = Duration::from_secs(10);

/// Entries kept at most (each a few hundred bytes); beyond, the oldest go
/// first, and a late duplicate of theirs is treated as reuse.
const MAX_ENTRIES: usize = 10_000;

/// One rotation, shared: empty until it succeeds.
type SharedRotation = Arc<OnceCell<Arc<TokenPair>>>;

/// Recent browser rotations on this node, by the SHA-256 of the refresh
/// token presented, with when each was started.
#[derive(Default)]
pub(crate) struct BrowserRotations {
    recent: Mutex<HashMap<SecretHash, (Instant, SharedRotation)>>,
}

impl BrowserRotations {
    /// The cell every request presenting this token within the grace shares.
    fn cell(&self, key: SecretHash) -> SharedRotation {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.retain(|_, (at, _)| now.saturating_duration_since(*at) < GRACE);
        if recent.len() >= MAX_ENTRIES
            && let Some(oldest) = recent
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| *k)
        {
            recent.remove(&oldest);
        }
        let (_, cell) = recent
            .entry(key)
            .or_insert_with(|| (now, Arc::new(OnceCell::new())));
        Arc::clone(cell)
    }
}

impl Tessera {
    /// `grant_type=refresh_token` for a browser's page request, shared by
    /// the requests presenting the same token within [`GRACE`] (see the
    /// module docs).
    pub async fn refresh_browser(
        &self,
        presented: &str,
        client: &ClientInfo,
    ) -> CoreResult<Arc<TokenPair>> {
        let Some(secret) = BearerSecret::parse(presented) else {
            return Err(CoreError::InvalidGrant(
                "the refresh token is invalid, expired or revoked",
            ));
        };
        let cell = self.browser_rotations.cell(secret.hash());
        cell.get_or_try_init(|| async {
            self.refresh_grant(presented, None, client)
                .await
                .map(Arc::new)
        })
        .await
        .cloned()
    }
}
