//! Email verification: proving that an account reads its address.
//!
//! `email_verification = off | optional | required`:
//!
//! - `off`: no verification mail is sent and nothing asks for one;
//!   `email_verified` still shows what is known.
//! - `optional` (default): registration and an email change mail a link
//!   (`/verify-email?token=…`, 24 h); `email_verified` shows whether it
//!   was followed; nothing is refused.
//! - `required`: as `optional`, and an account whose email is not verified
//!   cannot log in (sessions, the jwt-cookie mode) nor get tokens (the
//!   password grant): 403 `email_not_verified`, said only after the
//!   password matched, so it tells a stranger nothing. Sessions and
//!   refresh families it already had keep working until they end (an
//!   administrator who wants them gone revokes the user).
//!
//! A verification link is a link token (see [`super::links`]) with purpose
//! [`EMAIL_VERIFICATION`]: 256 random bits kept only as a hash, single
//! use, with an expiry. An email change voids the user's earlier links, so
//! a link sent to the old address cannot verify the new one. A reset link
//! and a mailed invitation also prove the mailbox, and verify it.
//!
//! Asking for a link again (`POST /v1/email-verification`) answers the
//! same whether the address has an account, and mails off the request,
//! like a password reset, under the same per-address and per-email limits.

use std::sync::Arc;

use serde_json::json;
use time::Duration;

use super::Tessera;
use super::accounts::{User, parse_email};
use super::error::{CoreError, CoreResult};
use super::events::Change;
use super::secret::BearerSecret;
use super::sessions::ClientInfo;
use crate::mail::{Queued, signup};
use crate::store::LinkToken;

/// The purpose of email verification links.
pub const EMAIL_VERIFICATION: &str = "email_verification";

/// How long a verification link works by default.
pub const DEFAULT_VERIFICATION_TTL: Duration = Duration::hours(24);

/// `email_verification`: whether an address must be proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmailVerification {
    Off,
    #[default]
    Optional,
    Required,
}

impl EmailVerification {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "optional" => Some(Self::Optional),
            "required" => Some(Self::Required),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Optional => "optional",
            Self::Required => "required",
        }
    }
}

impl Tessera {
    /// The `email_verification` setting (for the pages).
    pub fn email_verification(&self) -> EmailVerification {
        self.policy.accounts.email_verification
    }

    /// Refuses a login or a grant of `user` when verification is required
    /// and their email is not verified (after their password matched, or
    /// their refresh token did).
    pub(crate) async fn require_verified_email(
        &self,
        user: &User,
        client: Option<&ClientInfo>,
        via: &'static str,
    ) -> CoreResult<()> {
        if self.policy.accounts.email_verification != EmailVerification::Required
            || user.email_verified
        {
            return Ok(());
        }
        self.telemetry
            .count("tessera_logins_total", &[("outcome", "email_not_verified")]);
        self.audit(
            "login_failed",
            Some(&user.id),
            client,
            json!({"via": via, "reason": "email_not_verified"}),
        )
        .await;
        Err(CoreError::EmailNotVerified)
    }

    /// Mails `user` a new verification link, unless verification is off or
    /// the email is verified already. Never fails the caller's request for
    /// a mail problem: the outbox retries and reports on its own.
    pub async fn mail_verification_link(&self, user: &User) -> CoreResult<()> {
        if self.policy.accounts.email_verification == EmailVerification::Off || user.email_verified
        {
            return Ok(());
        }
        let setup = self.mail_setup()?;
        let now = self.now();
        let ttl = self.policy.accounts.verification_ttl;
        let secret = BearerSecret::generate();
        self.stores
            .links
            .insert_link_token(&LinkToken {
                hash: secret.hash(),
                purpose: EMAIL_VERIFICATION.to_owned(),
                user_id: user.id.clone(),
                created_at: now,
                expires_at: now + ttl,
            })
            .await?;
        let link = format!(
            "{}/verify-email?token={}",
            setup.public_url,
            secret.expose()
        );
        setup
            .outbox
            .send(Queued {
                mail: signup::verify_email(
                    &user.email,
                    &setup.product,
                    &setup.public_url,
                    &link,
                    ttl.whole_hours(),
                ),
                kind: "email_verification",
                user_id: Some(user.id.clone()),
            })
            .await;
        Ok(())
    }

    /// `POST /v1/email-verification` with an email: the limits, then the
    /// rest off the request (the same answer whether the address has an
    /// account).
    pub async fn request_email_verification(
        self: &Arc<Self>,
        raw_email: &str,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        self.check_ip_rate(client).await?;
        let email = parse_email(raw_email)?;
        self.check_mail_limit(&email.key)?;
        self.mail_setup()?;
        let core = Arc::clone(self);
        tokio::spawn(async move {
            let found = core.stores.users.credentials_by_email(&email.key).await;
            let outcome = match found {
                Ok(Some((user, _))) => core.mail_verification_link(&user).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "an email verification link could not be made");
            }
        });
        Ok(())
    }

    /// `POST /v1/email-verification` from a signed-in user (no body): a
    /// new link to their own address, under the per-email limit.
    pub async fn resend_email_verification(
        &self,
        user_id: &str,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        self.check_ip_rate(client).await?;
        let user = self.user(user_id).await?;
        if let Ok(email) = parse_email(&user.email) {
            self.check_mail_limit(&email.key)?;
        }
        self.mail_verification_link(&user).await
    }

    /// `POST /v1/email-verification/confirm`: marks the link's user's
    /// email verified, once; audited `email_verified`.
    pub async fn confirm_email_verification(
        &self,
        token: &str,
        client: &ClientInfo,
    ) -> CoreResult<User> {
        self.check_ip_rate(client).await?;
        let secret = BearerSecret::parse(token).ok_or(CoreError::InvalidToken)?;
        let now = self.now();
        let Some(user_id) = self
            .stores
            .links
            .consume_link_token(&secret.hash(), EMAIL_VERIFICATION, now)
            .await?
        else {
            return Err(CoreError::InvalidToken);
        };
        self.mark_email_verified(&user_id, "verification_link", Some(client))
            .await?;
        self.stores
            .links
            .void_link_tokens(&user_id, EMAIL_VERIFICATION, now)
            .await?;
        self.user(&user_id).await
    }

    /// An administrator vouches for a user's address (admin API): it is
    /// verified, audited `email_verified` with `via: admin` and the actor.
    pub async fn verify_email_by(&self, actor: Option<&str>, id: &str) -> CoreResult<User> {
        let detail = json!({"via": "admin", "actor": super::accounts::actor_of(actor)});
        if !self.record_verified(id, detail, None).await? {
            return Err(CoreError::NotFound("no such user"));
        }
        self.user(id).await
    }

    /// Records that `user_id` proved their mailbox (`via` says how).
    pub(crate) async fn mark_email_verified(
        &self,
        user_id: &str,
        via: &'static str,
        client: Option<&ClientInfo>,
    ) -> CoreResult<()> {
        if !self
            .record_verified(user_id, json!({"via": via}), client)
            .await?
        {
            return Err(CoreError::InvalidToken);
        }
        Ok(())
    }

    /// Marks `user_id`'s address verified, on every node's caches; audited
    /// `email_verified` with `detail` the first time. False when there is
    /// no such user.
    async fn record_verified(
        &self,
        user_id: &str,
        detail: serde_json::Value,
        client: Option<&ClientInfo>,
    ) -> CoreResult<bool> {
        let before = self.user(user_id).await?;
        if !self
            .stores
            .users
            .set_email_verified(user_id, self.now())
            .await?
        {
            return Ok(false);
        }
        self.publish(Change::UserChanged {
            user_id: user_id.to_owned(),
        })
        .await?;
        if !before.email_verified {
            tracing::info!(user_id = %user_id, "email verified");
            self.audit("email_verified", Some(user_id), client, detail)
                .await;
        }
        Ok(true)
    }

    /// An administrator's change of a user's email: the new address is not
    /// verified and earlier verification and reset links die; the caller
    /// then mails the new address a link ([`Tessera::mail_verification_link`],
    /// the admin API and page) or vouches for it
    /// ([`Tessera::verify_email_by`], the CLI). Audited
    /// `email_changed` with the actor only: the addresses stay out of the
    /// log (a deleted user's events are scrubbed of their current address
    /// only).
    pub async fn set_email_by(
        &self,
        actor: Option<&str>,
        id: &str,
        raw_email: &str,
    ) -> CoreResult<User> {
        let email = parse_email(raw_email)?;
        let now = self.now();
        // The links mailed to the old address die first: should the change
        // then fail, they are only to be asked for again.
        for purpose in [EMAIL_VERIFICATION, super::links::PASSWORD_RESET] {
            self.stores.links.void_link_tokens(id, purpose, now).await?;
        }
        let changed = self
            .stores
            .users
            .set_email(id, &email.display, &email.key, now)
            .await
            .map_err(|e| match CoreError::from(e) {
                CoreError::Conflict(_) => {
                    CoreError::Conflict("an account with this email already exists")
                }
                other => other,
            })?;
        if !changed {
            return Err(CoreError::NotFound("no such user"));
        }
        self.publish(Change::UserChanged {
            user_id: id.to_owned(),
        })
        .await?;
        tracing::info!(user_id = %id, "email changed");
        self.audit(
            "email_changed",
            Some(id),
            None,
            json!({"actor": super::accounts::actor_of(actor)}),
        )
        .await;
        self.user(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        for v in [
            EmailVerification::Off,
            EmailVerification::Optional,
            EmailVerification::Required,
        ] {
            assert_eq!(EmailVerification::parse(v.as_str()), Some(v));
        }
        assert_eq!(EmailVerification::parse("yes"), None);
    }
}
