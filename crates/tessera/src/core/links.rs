//! Single-use links mailed to users, and the password reset they carry.
//!
//! A link token is a [`BearerSecret`] (256 random bits from the OS); the
//! store keeps only its SHA-256, its purpose, its user and its expiry, so a
//! database leak opens no link. A token is used once: the store's consume
//! is atomic, so of two racing confirms exactly one wins, and a used,
//! expired, unknown or other-purpose token is refused alike
//! ([`CoreError::InvalidToken`]).
//!
//! Asking for a reset answers the same, at about the same time, whether the
//! email has an account: after the limits (per address, and per email
//! whether or not it exists) the lookup, the token and the mail happen on a
//! task of their own, off the request. Links are built from the configured
//! public URL, never from the request. The token is never logged or
//! audited (only the `log` mailer writes the message, link included: that
//! is what it is for).
//!
//! A reset sets the password (after the same policy as any password),
//! ends every session, refresh family and earlier access token of the user
//! on every node (as an administrator's `set_password_by` does), voids the
//! user's other reset links, audits `password_reset` and mails the user a
//! notice.

use std::sync::{Arc, Weak};

use async_trait::async_trait;
use serde_json::json;
use time::Duration;

use super::Tessera;
use super::accounts::{Password, UserStatus, parse_email};
use super::error::{CoreError, CoreResult};
use super::events::Change;
use super::limits::RetryAfter;
use super::passwords::Principals;
use super::secret::BearerSecret;
use super::sessions::ClientInfo;
use crate::mail::{self, Outbox, Queued, Report};
use crate::store::LinkToken;

/// The purpose of password reset links.
pub const PASSWORD_RESET: &str = "password_reset";

/// How long a reset link works by default.
pub const DEFAULT_RESET_TTL: Duration = Duration::minutes(30);

/// What the core needs to send mail with links.
pub struct MailSetup {
    pub outbox: Outbox,
    /// The public URL links start with (no trailing slash).
    pub public_url: String,
    /// The product name the messages say (`product_name`).
    pub product: String,
    /// How long a reset link works.
    pub reset_ttl: Duration,
    /// Whether a password sign-in from a new device is mailed to the user
    /// (`notify_new_device`, see [`super::devices`]).
    pub notify_new_device: bool,
}

/// The outbox's reports, into the core's metrics and audit log.
pub struct CoreReport(pub Weak<Tessera>);

#[async_trait]
impl Report for CoreReport {
    fn sent(&self, kind: &'static str) {
        if let Some(core) = self.0.upgrade() {
            core.telemetry
                .count("tessera_mail_sent_total", &[("kind", kind)]);
        }
    }

    async fn failed(&self, kind: &'static str, user_id: Option<&str>, attempts: u32, error: &str) {
        if let Some(core) = self.0.upgrade() {
            core.telemetry
                .count("tessera_mail_failed_total", &[("kind", kind)]);
            core.audit(
                "mail_failed",
                user_id,
                None,
                json!({"kind": kind, "attempts": attempts, "error": error}),
            )
            .await;
        }
    }
}

impl Tessera {
    /// Gives the core its mail (once, where the app is wired).
    pub fn set_mail(&self, setup: MailSetup) {
        if self.mail.set(setup).is_err() {
            tracing::warn!("the mail setup was given twice; the first one stays");
        }
    }

    pub(crate) fn mail_setup(&self) -> CoreResult<&MailSetup> {
        self.mail.get().ok_or_else(|| {
            tracing::error!("no mail setup: this process cannot make links");
            CoreError::Unavailable
        })
    }

    /// The per-email limit of mail-sending requests (resets, verification
    /// links), by the address's key, whether or not it has an account.
    pub(crate) fn check_mail_limit(&self, email_key: &str) -> CoreResult<()> {
        if let Err(RetryAfter(secs)) = self.limits.check_mail_to(email_key, self.now()) {
            self.telemetry
                .count("tessera_rate_limited_total", &[("limit", "email")]);
            return Err(CoreError::RateLimited(secs));
        }
        Ok(())
    }

    /// A new reset link for `user_id`, stored before it is returned (for
    /// the mail, and for `tessera user reset-link`). The link is the one
    /// thing that carries the token: never log it.
    pub async fn password_reset_link(&self, user_id: &str) -> CoreResult<String> {
        let setup = self.mail_setup()?;
        let now = self.now();
        let secret = BearerSecret::generate();
        self.stores
            .links
            .insert_link_token(&LinkToken {
                hash: secret.hash(),
                purpose: PASSWORD_RESET.to_owned(),
                user_id: user_id.to_owned(),
                created_at: now,
                expires_at: now + setup.reset_ttl,
            })
            .await?;
        Ok(format!(
            "{}/reset?token={}",
            setup.public_url,
            secret.expose()
        ))
    }

    /// `POST /v1/password-reset`: the limits, then the rest off the request
    /// (see the module's doc). A malformed email is a validation error,
    /// which says nothing about accounts.
    pub async fn request_password_reset(
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
            if let Err(e) = core.mail_reset_link(&email.key).await {
                tracing::warn!(error = %e, "a password reset link could not be made");
            }
        });
        Ok(())
    }

    /// Mails a reset link to the active account with this email key, if
    /// there is one; nothing otherwise.
    async fn mail_reset_link(&self, email_key: &str) -> CoreResult<()> {
        let Some((user, _)) = self.stores.users.credentials_by_email(email_key).await? else {
            return Ok(());
        };
        if user.status != UserStatus::Active {
            return Ok(());
        }
        self.mail_reset_link_to(&user).await
    }

    /// An administrator's forced reset (`{"send_reset": true}`): the
    /// password is replaced by one nobody knows (so a leaked one stops
    /// working at once), everything the user was signed in with ends, as
    /// for any password an administrator sets (audited `password_reset`),
    /// and the user is mailed a link to choose a new one. A suspended user
    /// gets the link too: it works once they are reactivated, until it
    /// expires.
    pub async fn force_password_reset_by(&self, actor: Option<&str>, id: &str) -> CoreResult<()> {
        self.mail_setup()?;
        let unknown = Password::new(BearerSecret::generate().expose().to_owned());
        let user = self.set_password_by(actor, id, unknown).await?;
        self.mail_reset_link_to(&user).await
    }

    /// Mails `user` a new reset link.
    pub async fn mail_reset_link_to(&self, user: &super::accounts::User) -> CoreResult<()> {
        self.mail_link_to(user, "password_reset", mail::templates::password_reset)
            .await
    }

    /// Mails a user an administrator just created without a password the
    /// link to choose one, in words of its own (kind `welcome`): nobody
    /// asked for a reset, an account was made for them. The link is a reset
    /// link all the same (its lifetime, single use, the `/reset` page).
    pub async fn mail_welcome_link_to(&self, user: &super::accounts::User) -> CoreResult<()> {
        self.mail_link_to(user, "welcome", mail::templates::welcome)
            .await
    }

    /// Makes `user` a new reset link and queues the message `template`
    /// builds around it (to, public URL, link, minutes it works).
    async fn mail_link_to(
        &self,
        user: &super::accounts::User,
        kind: &'static str,
        template: fn(&str, &str, &str, &str, i64) -> mail::Mail,
    ) -> CoreResult<()> {
        let link = self.password_reset_link(&user.id).await?;
        let setup = self.mail_setup()?;
        let message = template(
            &user.email,
            &setup.product,
            &setup.public_url,
            &link,
            setup.reset_ttl.whole_minutes(),
        );
        setup
            .outbox
            .send(Queued {
                mail: message,
                kind,
                user_id: Some(user.id.clone()),
            })
            .await;
        Ok(())
    }

    /// `POST /v1/password-reset/confirm`: sets the password of the link's
    /// user and ends everything they were signed in with (see the module's
    /// doc). The new password is hashed before the token is used, so a
    /// busy server does not burn the link.
    pub async fn confirm_password_reset(
        &self,
        token: &str,
        password: Password,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        self.check_ip_rate(client).await?;
        password.check_policy()?;
        let secret = BearerSecret::parse(token).ok_or(CoreError::InvalidToken)?;
        // The strength rule needs the account's email: the link's user,
        // looked up without using the link (a refused password keeps it).
        let who = Principals::new(client.ip_addr(), None);
        let email = match self
            .stores
            .links
            .link_token_user(&secret.hash(), PASSWORD_RESET, self.now())
            .await?
        {
            Some(user_id) => match self.user(&user_id).await {
                Err(CoreError::NotFound(_)) => return Err(CoreError::InvalidToken),
                found => found?.email,
            },
            None => return Err(CoreError::InvalidToken),
        };
        self.check_new_password(&who, &password, &email).await?;
        let hash = self.passwords.hash(&who, password).await?;
        let now = self.now();
        let Some(user_id) = self
            .stores
            .links
            .consume_link_token(&secret.hash(), PASSWORD_RESET, now)
            .await?
        else {
            return Err(CoreError::InvalidToken);
        };
        if !self
            .stores
            .users
            .set_password_hash(&user_id, &hash, now)
            .await?
        {
            return Err(CoreError::InvalidToken);
        }
        let sessions = self.end_all_sessions(&user_id).await?;
        self.revoke_user_tokens(&user_id).await?;
        self.publish(Change::UserSessionsRevoked {
            user_id: user_id.clone(),
        })
        .await?;
        self.stores
            .links
            .void_link_tokens(&user_id, PASSWORD_RESET, now)
            .await?;
        // The link reached the user's mailbox: that proves the address
        // (after everything the old password started has ended).
        self.mark_email_verified(&user_id, "reset_link", Some(client))
            .await?;
        tracing::info!(user_id = %user_id, sessions, "password reset with a link");
        self.audit(
            "password_reset",
            Some(&user_id),
            Some(client),
            json!({"via": "reset_link", "sessions": sessions}),
        )
        .await;
        let user = self.user(&user_id).await?;
        let setup = self.mail_setup()?;
        setup
            .outbox
            .send(Queued {
                mail: mail::templates::password_changed(
                    &user.email,
                    &setup.product,
                    &setup.public_url,
                ),
                kind: "password_changed",
                user_id: Some(user_id),
            })
            .await;
        Ok(())
    }

    /// Deletes link tokens past their expiry (the sweep).
    pub(crate) async fn prune_link_tokens(&self) {
        match self
            .stores
            .links
            .delete_expired_link_tokens(self.now())
            .await
        {
            Ok(n) if n > 0 => tracing::debug!(count = n, "expired link tokens deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweeping expired link tokens failed"),
        }
    }
}
