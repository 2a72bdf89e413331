//! Key lifecycle on the service: the first key, rotation (by hand, by
//! interval, or when the configured algorithm changes), reloading after
//! another process rotated, and wiping private keys that sign no more.
//!
//! A key rotated out keeps verifying until its tokens expired, but that
//! needs only its public half: its private half is wiped from the store by
//! the rotation itself, before it returns, and the store is asked to scrub
//! older copies from its files ([`crate::store::Backend::scrub`]). The
//! minute-by-minute sweep wipes again as a backstop (a rotation by an older
//! version, or a wipe that failed).

use std::sync::Arc;

use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;

use super::Tessera;
use super::error::{CoreError, CoreResult};
use super::keys::{self, KeyRing, KeyStatus, TokenAlg};
use super::time::serde_rfc3339;

/// A key as the admin API and CLI show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    #[schema(example = "key_4mR0fD2pXc8")]
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: &'static str,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    pub status: KeyStatus,
}

/// How often an explicit rotation tries again after losing its
/// compare-and-set to another process's rotation.
const EXPLICIT_ROTATION_ATTEMPTS: usize = 3;

impl Tessera {
    /// Loads the key ring, creating the first key if there is none. With
    /// `switch_alg` (the server starting) a newly configured algorithm also
    /// gets its key, which becomes the active one. Without it (CLI commands)
    /// an active key of another algorithm is left alone: a command run with
    /// a stray `TESSERA_TOKEN_ALG` must not change what the server signs with.
    pub async fn prepare_keys(&self, switch_alg: bool) -> CoreResult<()> {
        if self.key_policy.alg == TokenAlg::HS256 {
            return Ok(());
        }
        self.reload_keys().await?;
        if self.keys.load().signing.is_some() {
            return Ok(());
        }
        let rotate = match self.active_key_id().await? {
            // Another process made our key since the ring was loaded.
            Some((_, alg)) if alg == self.key_policy.alg => {
                return self.reload_keys().await;
            }
            Some((kid, _)) => switch_alg.then_some(Some(kid)),
            None => Some(None),
        };
        if let Some(current) = rotate {
            // From the view just read: of nodes starting at once, one makes
            // the first key and the others take it (not rotate it out).
            self.rotate_from(current, None, false).await?;
        }
        Ok(())
    }

    /// The active key's id and algorithm, as stored now.
    async fn active_key_id(&self) -> CoreResult<Option<(String, TokenAlg)>> {
        Ok(self
            .stores
            .keys
            .signing_keys()
            .await?
            .into_iter()
            .find(|k| k.rotated_out_at.is_none())
            .map(|k| (k.kid, k.alg)))
    }

    /// Rebuilds the ring from the store (after any process rotated).
    pub async fn reload_keys(&self) -> CoreResult<()> {
        if self.key_policy.alg == TokenAlg::HS256 {
            return Ok(());
        }
        let stored = self.stores.keys.signing_keys().await?;
        let ring = KeyRing::from_stored(&stored, &self.key_policy, self.now())?;
        self.keys.store(Arc::new(ring));
        Ok(())
    }

    /// Makes a new key active at once; earlier keys keep verifying until
    /// their tokens expired.
    pub async fn rotate_keys(&self, actor: Option<&str>) -> CoreResult<KeyInfo> {
        self.rotate_keys_with(actor, false).await
    }

    /// Rotates; with `retire_previous` the earlier keys are retired at once
    /// (key compromise): every token they signed is refused from now on.
    pub async fn rotate_keys_with(
        &self,
        actor: Option<&str>,
        retire_previous: bool,
    ) -> CoreResult<KeyInfo> {
        if self.key_policy.alg == TokenAlg::HS256 {
            return Err(CoreError::Validation(
                "HS256 keys come from TESSERA_HS256_SECRET; change the secret to rotate".into(),
            ));
        }
        // Asked for by an operator (or a compromise): if another process
        // rotated in between, rotate again from its key, so the key active
        // when this was asked for is rotated out (and retired, if asked).
        for _ in 0..EXPLICIT_ROTATION_ATTEMPTS {
            let current = self.active_key_id().await?.map(|(kid, _)| kid);
            if let Some(rotated) = self.rotate_from(current, actor, retire_previous).await? {
                return Ok(rotated);
            }
        }
        Err(CoreError::Busy)
    }

    /// Makes a new key active if `current` is still the active key (a
    /// compare-and-set: of two processes rotating from the same view, one
    /// rotates). Returns the new key, or `None` (and nothing changed here)
    /// when another process rotated first: its key is then in the ring.
    async fn rotate_from(
        &self,
        current: Option<String>,
        actor: Option<&str>,
        retire_previous: bool,
    ) -> CoreResult<Option<KeyInfo>> {
        let now = self.now();
        let key = keys::generate(self.key_policy.alg, now)?;
        // Rotated out "one grace period ago" means retired now.
        let rotated_out_at = if retire_previous {
            now - self.key_policy.grace - time::Duration::seconds(1)
        } else {
            now
        };
        if !self
            .stores
            .keys
            .rotate_in(&key, current.as_deref(), rotated_out_at)
            .await?
        {
            // Another process rotated first: its key stands, ours is
            // dropped unused.
            tracing::info!("another process rotated the signing key first; using its key");
            self.reload_keys().await?;
            return Ok(None);
        }
        self.publish(super::events::Change::KeysChanged).await?;
        self.reload_keys().await?;
        match &current {
            None => {
                tracing::info!(kid = %key.kid, alg = key.alg.as_str(), "first signing key created")
            }
            Some(previous) => tracing::info!(
                kid = %key.kid,
                alg = key.alg.as_str(),
                previous = %previous,
                "signing key rotated"
            ),
        }
        // The rotation stands whatever happens to the wipe (the sweep tries
        // again); its failure is logged, not returned.
        if let Err(e) = self.wipe_private_halves(now).await {
            tracing::warn!(error = %e, "wiping the rotated-out key's private half failed; the sweep tries again");
        }
        // `actor` is an admin's user id (the event is filed under it) or
        // the command line (`cli`, `cli:NAME`); either way `detail.actor`
        // (null for a rotation of the server's own: first key, interval,
        // algorithm change).
        let admin = actor.filter(|a| super::secret::is_id("usr", a));
        // The first key of a deployment rotates nothing out.
        let event = if current.is_none() {
            "key_created"
        } else {
            "key_rotated"
        };
        self.audit(
            event,
            admin,
            None,
            json!({
                "actor": actor,
                "kid": key.kid,
                "alg": key.alg.as_str(),
                "previous": current,
                "previous_retired_now": retire_previous,
            }),
        )
        .await;
        Ok(Some(KeyInfo {
            kid: key.kid,
            alg: key.alg.as_str(),
            created_at: key.created_at,
            status: KeyStatus::Active,
        }))
    }

    /// Rotates when the active key is older than the configured interval.
    pub async fn rotate_if_due(&self) -> CoreResult<bool> {
        let Some(interval) = self.tokens.rotation_interval else {
            return Ok(false);
        };
        if self.key_policy.alg == TokenAlg::HS256 {
            return Ok(false);
        }
        let now = self.now();
        let active = self
            .stores
            .keys
            .signing_keys()
            .await?
            .into_iter()
            .find(|k| k.rotated_out_at.is_none());
        let due = active
            .as_ref()
            .is_none_or(|k| now - k.created_at >= interval);
        if due {
            // From the key judged due: nodes sweeping at once rotate once.
            self.rotate_from(active.map(|k| k.kid), None, false).await?;
        }
        Ok(due)
    }

    /// Every key with its status now. HS256 shows its one configured key.
    pub async fn key_list(&self) -> CoreResult<Vec<KeyInfo>> {
        let now = self.now();
        if self.key_policy.alg == TokenAlg::HS256 {
            let ring = self.keys.load();
            return Ok(ring
                .signing
                .iter()
                .map(|k| KeyInfo {
                    kid: k.kid.clone(),
                    alg: TokenAlg::HS256.as_str(),
                    created_at: OffsetDateTime::UNIX_EPOCH,
                    status: KeyStatus::Active,
                })
                .collect());
        }
        let mut keys: Vec<KeyInfo> = self
            .stores
            .keys
            .signing_keys()
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                status: self.key_policy.status(&k, now),
                kid: k.kid,
                alg: k.alg.as_str(),
                created_at: k.created_at,
            })
            .collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
        Ok(keys)
    }

    /// Wipes the private half of every key rotated out by `now` (they sign
    /// nothing any more; verifying needs only the public half) and, when
    /// one was wiped, has the store scrub older copies from its files.
    async fn wipe_private_halves(&self, now: OffsetDateTime) -> CoreResult<()> {
        let wiped = self.stores.keys.wipe_retired(now).await?;
        if wiped > 0 {
            tracing::info!(
                count = wiped,
                "private halves of rotated-out signing keys wiped"
            );
            // Not a failed request: the store keeps trying by itself.
            if let Err(e) = self.stores.backend.scrub().await {
                tracing::warn!(error = %e, "older copies of the wiped keys are still in the database files");
            }
        }
        Ok(())
    }

    /// Sweep: wipes private halves a rotation left (see the module doc) and
    /// drops retired keys from the ring.
    pub(crate) async fn retire_keys(&self) -> CoreResult<()> {
        if self.key_policy.alg == TokenAlg::HS256 {
            return Ok(());
        }
        let wiped = self.wipe_private_halves(self.now()).await;
        self.reload_keys().await?;
        wiped
    }
}
