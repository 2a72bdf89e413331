//! Tessera's policy: accounts, sessions, tokens, keys, revocation, audit. No
//! HTTP and no SQL here; time comes from a [`clock::Clock`] and state from the
//! store traits.

pub mod accounts;
mod argon2_kept;
pub mod audit;
mod browser_refresh;
pub mod clients;
pub mod clock;
pub mod devices;
pub mod ed25519_batch;
pub mod error;
pub mod events;
pub mod feed;
pub mod freshness;
pub mod introspect;
pub mod keys;
pub mod latency;
pub mod limits;
pub mod links;
pub mod password_strength;
pub mod passwords;
pub mod refresh;
pub mod registration;
pub mod revocation;
pub mod secret;
pub mod sessions;
pub mod signing;
pub mod telemetry;
pub mod time;
pub mod tokens;
pub mod verification;

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use arc_swap::ArcSwap;
use zeroize::Zeroizing;

use self::clock::Clock;
use self::error::CoreResult;
use self::events::ChangeListener;
use self::keys::{KeyPolicy, KeyRing, TokenAlg};
use self::passwords::{HashParams, PasswordHasher, PoolSize};
use self::revocation::RevocationSet;
use self::sessions::SessionPolicy;
use self::tokens::{TokenPolicy, VerifiedCache};
use crate::store::Stores;

/// Everything the core needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct CoreOptions {
    pub sessions: SessionPolicy,
    pub tokens: TokenPolicy,
    pub token_alg: TokenAlg,
    pub hs256_secret: Option<Zeroizing<Vec<u8>>>,
    pub hash_params: HashParams,
    pub hash_pool: PoolSize,
    pub token_cache_entries: usize,
    pub limits: limits::LimitPolicy,
    /// How long audit events are kept.
    pub audit_retention: ::time::Duration,
    /// How long the token path trusts the node's view of the logs without
    /// a read (see [`freshness`]).
    pub revocation_max_staleness: std::time::Duration,
    /// Who may sign up, and email verification.
    pub accounts: registration::AccountPolicy,
}

/// The policy the core enforces.
#[derive(Debug, Clone)]
pub struct Policy {
    pub sessions: SessionPolicy,
    pub accounts: registration::AccountPolicy,
}

/// The authentication service: one per process, shared by HTTP, pages and CLI.
pub struct Tessera {
    pub(crate) stores: Stores,
    pub(crate) listeners: Vec<Arc<dyn ChangeListener>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) passwords: PasswordHasher,
    pub policy: Policy,
    pub tokens: TokenPolicy,
    pub(crate) key_policy: KeyPolicy,
    pub(crate) keys: ArcSwap<KeyRing>,
    pub(crate) revocations: RevocationSet,
    pub(crate) revocation_cursor: AtomicI64,
    /// The change log's entries up to here are applied (or predate the
    /// state this process loaded).
    pub(crate) change_cursor: AtomicI64,
    pub(crate) freshness: freshness::Freshness,
    pub(crate) verified: VerifiedCache,
    /// Where EdDSA signature checks of new tokens wait to be batched.
    pub(crate) signatures: Arc<ed25519_batch::BatchVerifier>,
    /// HMAC key binding CSRF tokens to refresh families (jwt-cookie mode).
    pub(crate) csrf_key: ArcSwap<Option<aws_lc_rs::hmac::Key>>,
    pub(crate) limits: limits::Limits,
    pub(crate) audit_retention: ::time::Duration,
    pub telemetry: telemetry::Telemetry,
    /// Cancelled when the server starts shutting down, so that long-lived
    /// responses (the revocation event stream) end and the drain completes.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The outbox and what links are built from (see [`links`]); set once
    /// where the app is wired.
    pub(crate) mail: std::sync::OnceLock<links::MailSetup>,
    /// Browser refreshes shared for a moment (see [`browser_refresh`]).
    pub(crate) browser_rotations: browser_refresh::BrowserRotations,
}

impl Tessera {
    /// Builds the service on `stores`. `listeners` are whatever holds state
    /// the change log must keep coherent (the caches the app put in front of
    /// the stores). Call [`Tessera::load_state`] before serving.
    pub fn new(
        stores: Stores,
        listeners: Vec<Arc<dyn ChangeListener>>,
        clock: Arc<dyn Clock>,
        options: CoreOptions,
    ) -> anyhow::Result<Self> {
        let key_policy = KeyPolicy {
            alg: options.token_alg,
            grace: options.tokens.access_ttl + options.tokens.leeway,
        };
        let ring = match (options.token_alg, &options.hs256_secret) {
            (TokenAlg::HS256, Some(secret)) => KeyRing::hs256(secret),
            (TokenAlg::HS256, None) => anyhow::bail!("HS256 needs TESSERA_HS256_SECRET"),
            (alg, _) => KeyRing::empty(alg),
        };
        Ok(Self {
            stores,
            listeners,
            clock,
            passwords: PasswordHasher::new(options.hash_params, options.hash_pool)?,
            policy: Policy {
                sessions: options.sessions,
                accounts: options.accounts,
            },
            tokens: options.tokens,
            key_policy,
            keys: ArcSwap::from_pointee(ring),
            revocations: RevocationSet::default(),
            revocation_cursor: AtomicI64::new(0),
            change_cursor: AtomicI64::new(0),
            freshness: freshness::Freshness::new(options.revocation_max_staleness),
            verified: VerifiedCache::new(options.token_cache_entries.max(1)),
            signatures: Arc::new(ed25519_batch::BatchVerifier::new()),
            csrf_key: ArcSwap::from_pointee(None),
            limits: limits::Limits::new(options.limits),
            audit_retention: options.audit_retention,
            telemetry: telemetry::Telemetry::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            mail: std::sync::OnceLock::new(),
            browser_rotations: browser_refresh::BrowserRotations::default(),
        })
    }

    /// Loads what verification needs in memory (signing keys, revocations),
    /// creating the first signing key if there is none (see
    /// [`Tessera::prepare_keys`] for `switch_alg`).
    pub async fn load_state(&self, switch_alg: bool) -> CoreResult<()> {
        // The change log's cursor first: a change appended while the keys
        // load (another node rotating) is then read by the follower, not
        // skipped.
        let cursor = self.stores.events.latest_cursor().await?;
        self.change_cursor
            .store(cursor, std::sync::atomic::Ordering::SeqCst);
        self.prepare_keys(switch_alg).await?;
        self.follow_revocations().await?;
        let fresh = Zeroizing::new(
            secret::BearerSecret::generate()
                .expose()
                .as_bytes()
                .to_vec(),
        );
        let key = Zeroizing::new(self.stores.keys.server_secret("csrf", &fresh).await?);
        self.csrf_key.store(Arc::new(Some(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &key,
        ))));
        Ok(())
    }

    /// The CSRF token of a refresh family (jwt-cookie mode): an HMAC of its
    /// id under a server key, so it is checked without any lookup.
    pub fn family_csrf_token(&self, family_id: &str) -> Option<String> {
        use base64::Engine;
        let key = self.csrf_key.load();
        let key = key.as_ref().as_ref()?;
        let tag = aws_lc_rs::hmac::sign(key, format!("tessera/csrf\0{family_id}").as_bytes());
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// The current time at the precision the stores keep (milliseconds), so
    /// a record reads back exactly as it was written.
    pub fn now(&self) -> ::time::OffsetDateTime {
        self::time::from_millis(self::time::to_millis(self.clock.now()))
    }

    /// Takes one unit of the caller's per-address budget on the credential
    /// endpoints (login, registration, token).
    pub async fn check_ip_rate(&self, client: &sessions::ClientInfo) -> CoreResult<()> {
        let ip = client.ip_addr();
        let now = self.now();
        if let Err(limits::RetryAfter(secs)) = self.limits.check_ip(ip, now) {
            if self.limits.should_audit(ip, now) {
                self.audit(
                    "rate_limited",
                    None,
                    Some(client),
                    serde_json::json!({"limit": "address", "retry_after": secs}),
                )
                .await;
            }
            self.telemetry
                .count("tessera_rate_limited_total", &[("limit", "address")]);
            return Err(error::CoreError::RateLimited(secs));
        }
        Ok(())
    }

    /// Whether every backing store answers; if not, the name of the one
    /// that does not (`/readyz` says which).
    pub async fn ready(&self) -> Result<(), &'static str> {
        match self.stores.backend.unanswering().await {
            None => Ok(()),
            Some((name, e)) => {
                tracing::warn!(store = name, error = %e, "a store does not answer");
                Err(name)
            }
        }
    }

    /// Password hashing jobs accepted and not yet finished.
    pub fn hash_queue_depth(&self) -> usize {
        self.passwords.pool().depth()
    }
}
