//! Who may sign up: `registration = open | invite | closed`, the allowed
//! email domains, and invitations.
//!
//! The rules bind self-registration only (`POST /v1/accounts`, the
//! `/register` page). An administrator or the operator creating an account
//! (admin API, `/admin`, `tessera user create`) vouches for it and is
//! bound by none of them.
//!
//! - `open`: anyone may register, with an address in an allowed domain
//!   when `allowed_email_domains` is set.
//! - `invite`: only with an invitation, for the address it was made for.
//! - `closed`: nobody (403 `registration_closed`).
//!
//! An invitation admits its address whatever the domain list says (the
//! administrator chose the address); under `open` an invitation is not
//! needed but still works (and still grants its roles). It is a
//! [`BearerSecret`] kept only as a hash, single use, bound to its email's
//! key, with an expiry; the registration that uses it gets its roles and
//! starts with a verified email only when the invitation was mailed to it
//! (the link then proved the mailbox): an invitation whose link an
//! administrator handed over themselves does not.

use serde_json::json;
use time::{Duration, OffsetDateTime};

use super::Tessera;
use super::accounts::{OPERATOR, parse_email, validate_roles};
use super::error::{CoreError, CoreResult};
use super::secret::{BearerSecret, SecretHash};
use crate::mail::{Queued, signup};
use crate::store::Invitation;

/// How long an invitation works by default.
pub const DEFAULT_INVITATION_TTL: Duration = Duration::days(7);

/// `registration`: who may create their own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Registration {
    #[default]
    Open,
    Invite,
    Closed,
}

impl Registration {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "invite" => Some(Self::Invite),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Invite => "invite",
            Self::Closed => "closed",
        }
    }
}

/// One entry of `allowed_email_domains`: a domain, matched exactly and
/// case-insensitively, or `*.domain`, which also admits its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    /// Lowercase, without the `*.`.
    domain: String,
    subdomains: bool,
}

impl DomainRule {
    /// Parses one entry; `None` for text that is not a plausible domain.
    pub fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim().to_lowercase();
        let (domain, subdomains) = match entry.strip_prefix("*.") {
            Some(rest) => (rest.to_owned(), true),
            None => (entry, false),
        };
        let plausible = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        plausible.then_some(Self { domain, subdomains })
    }

    /// Whether an address's key (already case-folded) is in this domain.
    fn admits(&self, email_key: &str) -> bool {
        let Some((_, domain)) = email_key.rsplit_once('@') else {
            return false;
        };
        domain == self.domain
            || (self.subdomains
                && domain
                    .strip_suffix(&self.domain)
                    .is_some_and(|head| head.ends_with('.')))
    }

    /// As the setting spells it.
    pub fn shown(&self) -> String {
        if self.subdomains {
            format!("*.{}", self.domain)
        } else {
            self.domain.clone()
        }
    }
}

/// What the core enforces about new accounts and their emails.
#[derive(Debug, Clone)]
pub struct AccountPolicy {
    pub registration: Registration,
    /// Empty: any domain.
    pub allowed_email_domains: Vec<DomainRule>,
    pub email_verification: super::verification::EmailVerification,
    /// How long a verification link works.
    pub verification_ttl: Duration,
    /// How long an invitation works.
    pub invitation_ttl: Duration,
}

impl Default for AccountPolicy {
    fn default() -> Self {
        Self {
            registration: Registration::default(),
            allowed_email_domains: Vec::new(),
            email_verification: super::verification::EmailVerification::default(),
            verification_ttl: super::verification::DEFAULT_VERIFICATION_TTL,
            invitation_ttl: DEFAULT_INVITATION_TTL,
        }
    }
}

/// A new invitation, as its creator gets it back.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    /// `{public_url}/register?invitation=…`: the one thing carrying the
    /// token. Never log it.
    pub url: String,
    pub expires_at: OffsetDateTime,
    /// Whether it was mailed to the address too.
    pub mailed: bool,
}

/// What an accepted invitation gives the account it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub roles: Vec<String>,
    /// The invitation was mailed to this address: it is verified.
    pub email_verified: bool,
    /// The invitation's [`invitation_ref`], for the `user_created` event.
    pub reference: String,
}

/// A short, stable name for an invitation in the audit log: the first 12
/// hex digits of its token's SHA-256 (which tells nothing about the
/// token). `invitation_created` and the `user_created` of the account it
/// made both carry it, so they can be matched without the address being
/// in the invitation's event (a deleted user's events lose their address;
/// an event that is not theirs would keep it).
pub fn invitation_ref(hash: &SecretHash) -> String {
    hash.as_bytes()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Tessera {
    /// Whether self-registration needs an invitation (for the pages).
    pub fn registration(&self) -> Registration {
        self.policy.accounts.registration
    }

    /// Whether the domain list admits `email_key` (any domain when it is
    /// empty).
    fn domain_allowed(&self, email_key: &str) -> bool {
        let rules = &self.policy.accounts.allowed_email_domains;
        rules.is_empty() || rules.iter().any(|r| r.admits(email_key))
    }

    /// Checks that an address may register by itself, before anything
    /// expensive: with `invitation`, that it is a live invitation for this
    /// address (looked at, not used); without, the setting and the domain
    /// list. Answers [`CoreError::RegistrationClosed`] saying why.
    pub(crate) async fn check_self_registration(
        &self,
        email_key: &str,
        invitation: Option<&str>,
    ) -> CoreResult<()> {
        let policy = &self.policy.accounts;
        if policy.registration == Registration::Closed {
            return Err(CoreError::RegistrationClosed(
                "registration is closed on this server: ask an administrator for an account".into(),
            ));
        }
        if let Some(token) = invitation {
            let found = match BearerSecret::parse(token) {
                Some(secret) => {
                    self.stores
                        .links
                        .invitation(&secret.hash(), self.now())
                        .await?
                }
                None => None,
            };
            return match found {
                Some(i) if i.email_key == email_key => Ok(()),
                Some(_) => Err(CoreError::RegistrationClosed(
                    "this invitation is for another email address".into(),
                )),
                None => Err(CoreError::RegistrationClosed(
                    "this invitation is invalid, used or expired: ask for a new one".into(),
                )),
            };
        }
        if policy.registration == Registration::Invite {
            return Err(CoreError::RegistrationClosed(
                "registration on this server needs an invitation".into(),
            ));
        }
        if !self.domain_allowed(email_key) {
            let domains: Vec<String> = policy
                .allowed_email_domains
                .iter()
                .map(DomainRule::shown)
                .collect();
            return Err(CoreError::RegistrationClosed(format!(
                "registration is open only to addresses at {}",
                domains.join(", ")
            )));
        }
        Ok(())
    }

    /// Uses the invitation for this address (after the password was
    /// hashed, just before the account is written): what it admits, or
    /// [`CoreError::RegistrationClosed`] when another registration used it
    /// first or it expired meanwhile.
    pub(crate) async fn use_invitation(
        &self,
        token: &str,
        email_key: &str,
    ) -> CoreResult<Admission> {
        let refused = || {
            CoreError::RegistrationClosed(
                "this invitation is invalid, used or expired: ask for a new one".into(),
            )
        };
        let secret = BearerSecret::parse(token).ok_or_else(refused)?;
        let invitation = self
            .stores
            .links
            .consume_invitation(&secret.hash(), email_key, self.now())
            .await?
            .ok_or_else(refused)?;
        Ok(Admission {
            roles: invitation.roles,
            email_verified: invitation.mailed,
            reference: invitation_ref(&invitation.hash),
        })
    }

    /// Invites `email` to register (admin API, `/admin`, `tessera user
    /// invite`), with `roles` for the account; audited
    /// `invitation_created` with its [`invitation_ref`] (never with the
    /// link, nor the address). With `mail`, the link
    /// is also mailed to the address. An address that already has an
    /// account is a conflict.
    pub async fn invite_by(
        &self,
        actor: Option<&str>,
        raw_email: &str,
        roles: &[String],
        mail: bool,
    ) -> CoreResult<NewInvitation> {
        let email = parse_email(raw_email)?;
        let roles = validate_roles(roles)?;
        if self
            .stores
            .users
            .credentials_by_email(&email.key)
            .await?
            .is_some()
        {
            return Err(CoreError::Conflict(
                "an account with this email already exists",
            ));
        }
        let setup = self.mail_setup()?;
        let now = self.now();
        let expires_at = now + self.policy.accounts.invitation_ttl;
        let secret = BearerSecret::generate();
        let reference = invitation_ref(&secret.hash());
        let actor = actor.unwrap_or(OPERATOR);
        self.stores
            .links
            .insert_invitation(&Invitation {
                hash: secret.hash(),
                email: email.display.clone(),
                email_key: email.key.clone(),
                roles: roles.clone(),
                created_by: actor.to_owned(),
                mailed: mail,
                created_at: now,
                expires_at,
            })
            .await?;
        let url = format!(
            "{}/register?invitation={}",
            setup.public_url,
            secret.expose()
        );
        if mail {
            let message = signup::invitation(
                &email.display,
                &setup.product,
                &setup.public_url,
                &url,
                self.policy.accounts.invitation_ttl.whole_days(),
            );
            setup
                .outbox
                .send(Queued {
                    mail: message,
                    kind: "invitation",
                    user_id: None,
                })
                .await;
        }
        tracing::info!(mailed = mail, "invitation created");
        self.audit(
            "invitation_created",
            None,
            None,
            json!({
                "invitation": reference,
                "roles": roles,
                "actor": actor,
                "mailed": mail,
                "expires_at": super::time::rfc3339(expires_at),
            }),
        )
        .await;
        Ok(NewInvitation {
            url,
            expires_at,
            mailed: mail,
        })
    }

    /// The address an invitation token is for, if it is live (for the
    /// registration form to show it).
    pub async fn invitation_email(&self, token: &str) -> CoreResult<Option<String>> {
        let Some(secret) = BearerSecret::parse(token) else {
            return Ok(None);
        };
        let hash: SecretHash = secret.hash();
        Ok(self
            .stores
            .links
            .invitation(&hash, self.now())
            .await?
            .map(|i| i.email))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_rules_match_exactly_or_with_subdomains() {
        let exact = DomainRule::parse("Example.COM").unwrap();
        assert!(exact.admits("a@example.com"));
        assert!(!exact.admits("a@mail.example.com"));
        assert!(!exact.admits("a@notexample.com"));
        assert!(!exact.admits("a@example.com.evil.io"));
        let wild = DomainRule::parse("*.example.com").unwrap();
        assert!(wild.admits("a@example.com"));
        assert!(wild.admits("a@mail.example.com"));
        assert!(wild.admits("a@x.y.example.com"));
        assert!(!wild.admits("a@badexample.com"));
        assert_eq!(wild.shown(), "*.example.com");
        for bad in [
            "",
            "*.",
            "localhost",
            ".example.com",
            "exa mple.com",
            "a..b",
            "*.*.a.b",
        ] {
            assert!(DomainRule::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn registration_settings_parse() {
        for r in [
            Registration::Open,
            Registration::Invite,
            Registration::Closed,
        ] {
            assert_eq!(Registration::parse(r.as_str()), Some(r));
        }
        assert_eq!(Registration::parse("Open"), None);
    }
}
