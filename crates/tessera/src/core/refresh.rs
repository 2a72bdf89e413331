//! Refresh tokens and the token endpoint's grants.
//!
//! A password login through `/v1/token` starts a *family*; each refresh token
//! is opaque (256 random bits, stored as SHA-256), single-use, and rotated in
//! one atomic store step that also issues its successor. Presenting a token
//! that was already used means two parties hold the family (a thief and the
//! owner, or a client racing itself, which looks the same): the whole family
//! is revoked, with every access token it produced, and the event is audited
//! as `refresh_reuse_detected` (RFC 9700 §4.14.2).

use serde_json::json;
use time::OffsetDateTime;

use super::Tessera;
use super::accounts::{Password, User, UserStatus};
use super::error::{CoreError, CoreResult};
use super::revocation::Revocation;
use super::secret::{BearerSecret, SecretHash, new_id};
use super::sessions::ClientInfo;
use super::tokens::{FIRST_PARTY_CLIENT, IssuedToken};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFamily {
    pub id: String,
    pub user_id: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// Families a device list shows at most.
pub const MAX_LISTED_FAMILIES: u32 = 200;

/// A family that can still rotate, as a device list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFamily {
    pub family: RefreshFamily,
    /// When its live token was issued: the last rotation (or the start).
    pub last_used_at: OffsetDateTime,
    /// When its live token expires.
    pub expires_at: OffsetDateTime,
}

/// A refresh token about to be stored (only its hash).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub hash: SecretHash,
    pub family_id: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What the store did with a presented refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    Rotated(RefreshFamily),
    /// It had been used before: the family is now revoked.
    Reused(RefreshFamily),
    /// Unknown, expired, or its family was revoked.
    Invalid,
}

/// An access token and the refresh token that renews it.
#[derive(Debug)]
pub struct TokenPair {
    pub access: IssuedToken,
    pub refresh: BearerSecret,
    pub refresh_expires_at: OffsetDateTime,
    pub family_id: String,
    pub scope: Option<String>,
    pub user: User,
}

/// The form of a public client's id: short and plain, and never a service
/// client's `cli_` id (a service client authenticates; a public one cannot).
pub fn is_public_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with("cli_")
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Tessera {
    /// The `client_id` a password grant names: none (or `tessera`) for
    /// Tessera's own, else one of the configured `public_clients`. Any
    /// other text, a service client's id included, is refused: a token
    /// must not claim to be for a client that never asked for it.
    fn public_client_id(&self, client_id: Option<&str>) -> CoreResult<String> {
        match client_id.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(FIRST_PARTY_CLIENT.to_owned()),
            Some(FIRST_PARTY_CLIENT) => Ok(FIRST_PARTY_CLIENT.to_owned()),
            Some(id) if self.tokens.public_clients.iter().any(|c| c == id) => Ok(id.to_owned()),
            Some(_) => Err(CoreError::InvalidGrant(
                "client_id is not a registered public client",
            )),
        }
    }

    fn new_refresh(&self, family_id: &str, now: OffsetDateTime) -> (BearerSecret, NewRefreshToken) {
        let secret = BearerSecret::generate();
        let record = NewRefreshToken {
            hash: secret.hash(),
            family_id: family_id.to_owned(),
            created_at: now,
            expires_at: now + self.tokens.refresh_ttl,
        };
        (secret, record)
    }

    /// `grant_type=password`: checks credentials and starts a refresh family.
    pub async fn password_grant(
        &self,
        email: &str,
        password: Password,
        client_id: Option<&str>,
        scope: Option<&str>,
        client: &ClientInfo,
    ) -> CoreResult<TokenPair> {
        let client_id = self.public_client_id(client_id)?;
        let scope = self.grant_scope(scope)?;
        let user = self
            .check_credentials(email, password, client, "token")
            .await?;
        let pair = self.start_family(user, &client_id, scope).await?;
        self.audit(
            "login_succeeded",
            Some(&pair.user.id),
            Some(client),
            json!({"via": "token", "family": pair.family_id, "client_id": client_id}),
        )
        .await;
        Ok(pair)
    }

    /// jwt-cookie browser login: checks credentials (ending the session the
    /// request carried, if any) and starts a refresh family.
    pub async fn login_with_tokens(
        &self,
        email: &str,
        password: Password,
        carried_session: Option<&BearerSecret>,
        client: &ClientInfo,
    ) -> CoreResult<TokenPair> {
        if let Some(old) = carried_session {
            self.end_session_by_secret(old).await?;
        }
        let user = self
            .check_credentials(email, password, client, "jwt-cookie")
            .await?;
        let pair = self.start_browser_family(user).await?;
        self.audit(
            "login_succeeded",
            Some(&pair.user.id),
            Some(client),
            json!({"via": "jwt-cookie", "family": pair.family_id}),
        )
        .await;
        Ok(pair)
    }

    /// Ends what a token came from: its session (`ses_…`) or refresh family.
    pub async fn end_sid(&self, user_id: &str, sid: &str) -> CoreResult<()> {
        if sid.starts_with("ses_") {
            return match self.revoke_session(user_id, sid).await {
                Err(CoreError::NotFound(_)) => self.revoke_sid(sid).await,
                other => other,
            };
        }
        self.revoke_family(sid).await?;
        self.audit("logout", Some(user_id), None, json!({"family": sid}))
            .await;
        Ok(())
    }

    /// Starts the refresh family of a browser in jwt-cookie mode.
    pub async fn start_browser_family(&self, user: User) -> CoreResult<TokenPair> {
        self.start_family(user, FIRST_PARTY_CLIENT, None).await
    }

    /// Starts a refresh family for an authenticated user.
    pub(crate) async fn start_family(
        &self,
        user: User,
        client_id: &str,
        scope: Option<String>,
    ) -> CoreResult<TokenPair> {
        let now = self.now();
        let family = RefreshFamily {
            id: new_id("fam"),
            user_id: user.id.clone(),
            client_id: client_id.to_owned(),
            scope: scope.clone(),
            created_at: now,
            revoked_at: None,
        };
        let (refresh, record) = self.new_refresh(&family.id, now);
        self.stores.refresh.create_family(&family, &record).await?;
        let access = self
            .issue_access_token(&user, &family.id, client_id, scope.clone(), None)
            .await?;
        Ok(TokenPair {
            access,
            refresh,
            refresh_expires_at: record.expires_at,
            family_id: family.id,
            scope,
            user,
        })
    }

    /// `grant_type=refresh_token`: rotates the token and issues a new pair.
    pub async fn refresh_grant(
        &self,
        presented: &str,
        scope: Option<&str>,
        client: &ClientInfo,
    ) -> CoreResult<TokenPair> {
        self.check_ip_rate(client).await?;
        let invalid = CoreError::InvalidGrant("the refresh token is invalid, expired or revoked");
        let Some(presented) = BearerSecret::parse(presented) else {
            return Err(invalid);
        };
        // A refresh asking for more than the family holds fails before the
        // token is rotated, so the client keeps a usable refresh token. A
        // token already used goes on to the rotation whatever it asks for:
        // its replay is reuse, and the scope must not hide it.
        if scope.is_some_and(|s| !s.trim().is_empty())
            && let Some((family, _, used)) = self
                .stores
                .refresh
                .refresh_family(&presented.hash())
                .await?
            && !used
        {
            narrow_scope(family.scope.as_deref(), scope)?;
        }
        let now = self.now();
        let next_secret = BearerSecret::generate();
        let next_expires_at = now + self.tokens.refresh_ttl;
        let outcome = self
            .stores
            .refresh
            .rotate_refresh(
                &presented.hash(),
                &next_secret.hash(),
                next_expires_at,
                now,
                self.audit_event("refresh_rotated", None, Some(client), json!({})),
            )
            .await?;
        let family = match outcome {
            Rotation::Rotated(family) => family,
            Rotation::Reused(family) => {
                self.telemetry
                    .count("tessera_refresh_reuse_detected_total", &[]);
                tracing::warn!(user_id = %family.user_id, family = %family.id, "refresh token reuse: family revoked");
                self.revoke_sid(&family.id).await?;
                self.audit(
                    "refresh_reuse_detected",
                    Some(&family.user_id),
                    Some(client),
                    json!({"family": family.id, "client_id": family.client_id}),
                )
                .await;
                return Err(invalid);
            }
            Rotation::Invalid => return Err(invalid),
        };
        let scope = narrow_scope(family.scope.as_deref(), scope)?;
        let user = match self.stores.users.user_by_id(&family.user_id).await? {
            Some(u) if u.status == UserStatus::Active => (*u).clone(),
            _ => {
                self.revoke_family(&family.id).await?;
                return Err(invalid);
            }
        };
        let access = self
            .issue_access_token(&user, &family.id, &family.client_id, scope.clone(), None)
            .await?;
        self.telemetry.count("tessera_refresh_rotations_total", &[]);
        Ok(TokenPair {
            access,
            refresh: next_secret,
            refresh_expires_at: next_expires_at,
            family_id: family.id,
            scope,
            user,
        })
    }

    /// The live family of a refresh token, without using it: `None` when the
    /// token is unknown, used, expired or its family revoked.
    pub async fn refresh_token_family(
        &self,
        presented: &str,
    ) -> CoreResult<Option<(RefreshFamily, OffsetDateTime)>> {
        Ok(self
            .refresh_token_owner(presented)
            .await?
            .filter(|(family, expires_at, used)| {
                !used && family.revoked_at.is_none() && *expires_at > self.now()
            })
            .map(|(family, expires_at, _)| (family, expires_at)))
    }

    /// The family of a refresh token in any state (for CSRF checks, which
    /// must run before a replayed token reaches reuse detection).
    pub async fn refresh_token_owner(
        &self,
        presented: &str,
    ) -> CoreResult<Option<(RefreshFamily, OffsetDateTime, bool)>> {
        let Some(secret) = BearerSecret::parse(presented) else {
            return Ok(None);
        };
        Ok(self.stores.refresh.refresh_family(&secret.hash()).await?)
    }

    /// A user's families that can still rotate (their signed-in browsers in
    /// jwt-cookie mode, and their apps), most recently used first; at most
    /// [`MAX_LISTED_FAMILIES`].
    pub async fn families_of(&self, user_id: &str) -> CoreResult<Vec<LiveFamily>> {
        Ok(self
            .stores
            .refresh
            .live_families(user_id, self.now(), MAX_LISTED_FAMILIES)
            .await?)
    }

    /// Ends one of the user's own families (a device list's "sign out"):
    /// `NotFound` unless it is theirs and live.
    pub async fn end_family_of(&self, user_id: &str, family_id: &str) -> CoreResult<()> {
        let theirs = self
            .families_of(user_id)
            .await?
            .iter()
            .any(|f| f.family.id == family_id);
        if !theirs {
            return Err(CoreError::NotFound("no such session"));
        }
        self.end_sid(user_id, family_id).await
    }

    /// Revokes a refresh family and every access token carrying its id.
    pub async fn revoke_family(&self, family_id: &str) -> CoreResult<()> {
        self.stores
            .refresh
            .revoke_family(family_id, self.now())
            .await?;
        self.revoke_sid(family_id).await
    }

    /// Denies every access token whose `sid` is this session or family.
    pub(crate) async fn revoke_sid(&self, sid: &str) -> CoreResult<()> {
        let exp = self.latest_possible_exp();
        self.revoke(Revocation::Family {
            sid: sid.to_owned(),
            exp,
        })
        .await
    }

    /// Ends every refresh family and every earlier access token of a user.
    pub(crate) async fn revoke_user_tokens(&self, user_id: &str) -> CoreResult<()> {
        self.stores
            .refresh
            .revoke_user_families(user_id, self.now())
            .await?;
        self.revoke_user_access_tokens(user_id).await
    }

    /// Every access token of the user issued until now is dead (a cut-off);
    /// refresh families live on and mint tokens with fresh roles.
    pub(crate) async fn revoke_user_access_tokens(&self, user_id: &str) -> CoreResult<()> {
        // Ceil to the next second: `iat` has second precision.
        let not_before = self.now().unix_timestamp() + 1;
        self.revoke(Revocation::User {
            sub: user_id.to_owned(),
            not_before,
        })
        .await
    }

    /// The latest `exp` (plus leeway) any token issued now can have.
    pub(crate) fn latest_possible_exp(&self) -> i64 {
        (self.now() + self.tokens.access_ttl + self.tokens.leeway).unix_timestamp()
    }

    /// Records a revocation, applies it here at once, and lets other
    /// processes follow it.
    pub(crate) async fn revoke(&self, r: Revocation) -> CoreResult<()> {
        let forget_at = match &r {
            Revocation::Token { exp, .. } | Revocation::Family { exp, .. } => {
                *exp + self.tokens.leeway.whole_seconds()
            }
            Revocation::User { not_before, .. } => {
                not_before + (self.tokens.access_ttl + self.tokens.leeway).whole_seconds()
            }
            // A session a store gives back was last seen no later than the
            // cut-off (it was deleted then), so it has idled out one idle
            // timeout after it, whatever its absolute expiry.
            Revocation::Sessions { before, .. } => {
                before.div_euclid(1000)
                    + (self.policy.sessions.idle + self.tokens.leeway).whole_seconds()
                    + 1
            }
        };
        self.revocations.apply(&r, forget_at);
        self.telemetry
            .count("tessera_revocations_total", &[("kind", r.kind())]);
        self.stores
            .revocations
            .insert_revocation(&r, forget_at, self.now())
            .await?;
        Ok(())
    }
}

/// The scope for a refreshed access token: the family's own when none is
/// requested, otherwise the requested subset, de-duplicated in the order
/// asked (RFC 6749 §6: a refresh may narrow the scope, never widen it).
fn narrow_scope(held: Option<&str>, requested: Option<&str>) -> CoreResult<Option<String>> {
    let Some(requested) = requested.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(held.map(str::to_owned));
    };
    let held: Vec<&str> = held.unwrap_or("").split(' ').collect();
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !held.contains(&scope) {
            return Err(CoreError::InvalidScope);
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(Some(granted.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_client_ids_are_short_plain_and_not_service_ids() {
        assert!(is_public_client_id("mobile-app.v2"));
        assert!(is_public_client_id("urn:app:1"));
        assert!(!is_public_client_id(""));
        assert!(!is_public_client_id("a b"));
        assert!(!is_public_client_id(&"x".repeat(65)));
        assert!(!is_public_client_id("cli_Jm2fQ0u1bq3o8yqQ7pVf0A"));
    }

    #[test]
    fn a_refresh_may_narrow_the_scope_but_never_widen_it() {
        assert_eq!(
            narrow_scope(Some("read write"), None).unwrap().as_deref(),
            Some("read write")
        );
        assert_eq!(narrow_scope(None, Some("  ")).unwrap(), None);
        assert_eq!(
            narrow_scope(Some("read write"), Some("read  read"))
                .unwrap()
                .as_deref(),
            Some("read")
        );
        assert!(matches!(
            narrow_scope(Some("read"), Some("read admin")),
            Err(CoreError::InvalidScope)
        ));
        assert!(matches!(
            narrow_scope(None, Some("read")),
            Err(CoreError::InvalidScope)
        ));
    }
}
