//! Accounts: users, their emails, roles and status.
//!
//! A user's id (`usr_…`) is permanent and is what sessions and tokens refer to;
//! the email is only a login name, unique case-insensitively. Passwords are
//! checked against the length policy *before* any hashing so an attacker cannot
//! make the server hash megabytes. Role changes and suspension are recorded as
//! change events so every cache (in this process and others) drops what it
//! knew at once: a change shows at the user's very next request.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::{CoreError, CoreResult};
use super::events::Change;
use super::secret::{is_id, new_id};
use super::{Tessera, time::serde_rfc3339};

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 1024;
const EMAIL_MAX_LEN: usize = tessera_wire::email::MAX_LEN;
/// Longer than any id Tessera makes (`usr_` and 22 characters).
pub(crate) const ID_MAX_LEN: usize = 64;

/// Refuses a query parameter longer than `max` bytes.
pub(crate) fn check_len(name: &str, value: Option<&str>, max: usize) -> CoreResult<()> {
    match value {
        Some(v) if v.len() > max => Err(CoreError::Validation(format!(
            "{name} is longer than {max} bytes"
        ))),
        _ => Ok(()),
    }
}
const ROLE_MAX_LEN: usize = 64;
const MAX_ROLES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Suspended => "suspended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "suspended" => Some(UserStatus::Suspended),
            _ => None,
        }
    }
}

/// A page request for listing users.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Case-insensitive substring of the email.
    pub email_contains: Option<String>,
    pub limit: u32,
    /// Return users whose id sorts after this one.
    pub after_id: Option<String>,
}

/// The contract's user object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Permanent and opaque; what tokens carry in `sub`.
    #[schema(example = "usr_3q2-7wEjs8cGvX0dMqvKxg")]
    pub id: String,
    #[schema(example = "alice@example.com")]
    pub email: String,
    pub roles: Vec<String>,
    pub status: UserStatus,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A password in memory: wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Password(String);

impl Password {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The length policy, checked before hashing.
    pub fn check_policy(&self) -> CoreResult<()> {
        let chars = self.0.chars().count();
        if chars < PASSWORD_MIN_CHARS {
            return Err(CoreError::Validation(format!(
                "password must be at least {PASSWORD_MIN_CHARS} characters"
            )));
        }
        if chars > PASSWORD_MAX_CHARS {
            return Err(CoreError::Validation(format!(
                "password must be at most {PASSWORD_MAX_CHARS} characters"
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A syntactically acceptable email: the form shown for it, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// What the user typed, trimmed and in NFC; case kept.
    pub display: String,
    /// The uniqueness key the users table holds and a login looks up: the
    /// address's compatibility caseless form (NFKC and full Unicode case
    /// folding, so NFC and NFD spellings, `STRASSE`/`straße` and fullwidth
    /// letters are one account). See `tessera_wire::email`, which also says
    /// why full folding and not `str::to_lowercase`.
    pub key: String,
}

/// Validates an email address with deliberately conservative rules
/// (`tessera_wire::email::canonical`): one `@`, a non-empty local part of at
/// most 64 bytes, a dotted domain, at most 254 bytes, no whitespace, control
/// or default-ignorable (invisible) characters, none of the characters RFC
/// 5322 only allows quoted. Unicode letters are allowed (RFC 6531).
pub fn parse_email(raw: &str) -> CoreResult<Email> {
    tessera_wire::email::canonical(raw)
        .map(|c| Email {
            display: c.display,
            key: c.key,
        })
        .map_err(|why| CoreError::Validation(format!("email is not valid: {why}")))
}

/// The key of a stored email under the current rules, or `None` when the
/// rules now refuse it (e.g. it holds an invisible character that was
/// accepted when it was registered): what `store::rekey` re-keys with.
pub fn email_key(stored: &str) -> Option<String> {
    tessera_wire::email::canonical(stored).ok().map(|c| c.key)
}

/// Role names: short, lowercase ASCII letters, digits, `_`, `-`, `:` and `.`.
pub fn validate_roles(roles: &[String]) -> CoreResult<Vec<String>> {
    if roles.len() > MAX_ROLES {
        return Err(CoreError::Validation(format!(
            "at most {MAX_ROLES} roles are allowed"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(roles.len());
    for role in roles {
        let ok = !role.is_empty()
            && role.len() <= ROLE_MAX_LEN
            && role.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b':' | b'.')
            });
        if !ok {
            return Err(CoreError::Validation(format!(
                "role {role:?} is not valid: use 1 to 64 of a-z 0-9 _ - : ."
            )));
        }
        if !out.contains(role) {
            out.push(role.clone());
        }
    }
    Ok(out)
}

/// What it takes to create an account.
#[derive(Debug)]
pub struct NewAccount {
    pub email: String,
    pub password: Password,
    pub roles: Vec<String>,
}

impl Tessera {
    /// Creates an account for an operator (the CLI, tests). Validation
    /// happens before the (expensive) hash.
    pub async fn register(&self, new: NewAccount) -> CoreResult<User> {
        self.register_as(new, super::passwords::Principals::nobody())
            .await
    }

    /// Creates an account a client asked for: its hash counts towards the
    /// client address's fair share of the hashing pool, like a login's.
    pub async fn register_from(
        &self,
        new: NewAccount,
        client: &super::sessions::ClientInfo,
    ) -> CoreResult<User> {
        let address = client.ip_addr().filter(|_| self.limits.per_address());
        let who = super::passwords::Principals::new(address, None);
        self.register_as(new, who).await
    }

    async fn register_as(
        &self,
        new: NewAccount,
        who: super::passwords::Principals,
    ) -> CoreResult<User> {
        let email = parse_email(&new.email)?;
        new.password.check_policy()?;
        let roles = validate_roles(&new.roles)?;
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
        let password_hash = self.passwords.hash(&who, new.password).await?;
        let user = User {
            id: new_id("usr"),
            email: email.display,
            roles,
            status: UserStatus::Active,
            created_at: self.now(),
        };
        self.stores
            .users
            .insert_user(&user, &email.key, &password_hash)
            .await
            .map_err(|e| match CoreError::from(e) {
                CoreError::Conflict(_) => {
                    CoreError::Conflict("an account with this email already exists")
                }
                other => other,
            })?;
        tracing::info!(user_id = %user.id, "account created");
        Ok(user)
    }

    pub async fn user(&self, id: &str) -> CoreResult<User> {
        if !is_id("usr", id) {
            return Err(CoreError::NotFound("no such user"));
        }
        self.stores
            .users
            .user_by_id(id)
            .await?
            .map(|u| (*u).clone())
            .ok_or(CoreError::NotFound("no such user"))
    }

    /// An active user through the user cache (no database read in the
    /// common case); `Unauthenticated` when gone or suspended.
    pub async fn active_user(&self, id: &str) -> CoreResult<std::sync::Arc<User>> {
        match self.stores.users.user_by_id(id).await? {
            Some(user) if user.status == UserStatus::Active => Ok(user),
            _ => Err(CoreError::Unauthenticated),
        }
    }

    /// A page of users. Each parameter is bounded here, before any store
    /// sees it: a search longer than any email, or a cursor longer than any
    /// id, is the client's mistake (422), not the store's failure.
    pub async fn list_users(&self, query: &UserQuery) -> CoreResult<Vec<User>> {
        check_len("q", query.email_contains.as_deref(), EMAIL_MAX_LEN)?;
        check_len("cursor", query.after_id.as_deref(), ID_MAX_LEN)?;
        // Keys are normalised and folded (`Email::key`); so is the text
        // searched for, or `straße` would not find the key `strasse@…`.
        let folded = query
            .email_contains
            .as_deref()
            .map(tessera_wire::email::key);
        if folded != query.email_contains {
            let query = UserQuery {
                email_contains: folded,
                ..query.clone()
            };
            return Ok(self.stores.users.list_users(&query).await?);
        }
        Ok(self.stores.users.list_users(query).await?)
    }

    /// Replaces a user's roles. Live sessions see the new roles at their next
    /// request.
    pub async fn set_roles(&self, id: &str, roles: &[String]) -> CoreResult<User> {
        self.set_roles_by(None, id, roles).await
    }

    /// [`Tessera::set_roles`], recording which administrator acted.
    pub async fn set_roles_by(
        &self,
        actor: Option<&str>,
        id: &str,
        roles: &[String],
    ) -> CoreResult<User> {
        let roles = validate_roles(roles)?;
        let now = self.now();
        if !self.stores.users.set_roles(id, &roles, now).await? {
            return Err(CoreError::NotFound("no such user"));
        }
        self.publish(Change::UserChanged {
            user_id: id.to_owned(),
        })
        .await?;
        self.revoke_user_access_tokens(id).await?;
        tracing::info!(user_id = %id, "roles changed");
        self.audit(
            "roles_changed",
            Some(id),
            None,
            serde_json::json!({"roles": roles, "by": actor}),
        )
        .await;
        self.user(id).await
    }

    /// Suspends or reactivates a user. Suspension ends every session at once.
    pub async fn set_status(&self, id: &str, status: UserStatus) -> CoreResult<User> {
        self.set_status_by(None, id, status).await
    }

    /// [`Tessera::set_status`], recording which administrator acted.
    pub async fn set_status_by(
        &self,
        actor: Option<&str>,
        id: &str,
        status: UserStatus,
    ) -> CoreResult<User> {
        let now = self.now();
        if !self.stores.users.set_status(id, status, now).await? {
            return Err(CoreError::NotFound("no such user"));
        }
        if status == UserStatus::Suspended {
            self.end_all_sessions(id).await?;
            self.revoke_user_tokens(id).await?;
        }
        self.publish(Change::UserChanged {
            user_id: id.to_owned(),
        })
        .await?;
        let event = match status {
            UserStatus::Suspended => "user_suspended",
            UserStatus::Active => "user_reactivated",
        };
        self.audit(event, Some(id), None, serde_json::json!({"by": actor}))
            .await;
        tracing::info!(user_id = %id, status = status.as_str(), "status changed");
        self.user(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_validated_and_case_folded() {
        let e = parse_email("  Alice.Smith@Example.COM ").unwrap();
        assert_eq!(e.display, "Alice.Smith@Example.COM");
        assert_eq!(e.key, "alice.smith@example.com");
        assert!(parse_email("o'brien@example.com").is_ok());
        assert!(parse_email("ünïcødé@exämple.org").is_ok());
        for bad in [
            "",
            "plain",
            "a@b",
            "a@@b.com",
            "@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "x'; DROP TABLE users;--@example.com",
            "' OR 1=1 --@example.com",
            "a\u{0}@example.com",
            "a\u{202e}@example.com",
            "a\u{200b}@example.com",
            "a\u{180e}@example.com",
            "a\u{fe0f}@example.com",
            "a\u{e0001}@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example..com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} should be refused");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(parse_email(&long_local).is_err());
    }

    #[test]
    fn emails_are_normalised_before_the_key_and_errors_keep_their_words() {
        let nfd = parse_email("Zoe\u{308}@example.org").unwrap();
        let nfc = parse_email("Zoë@example.org").unwrap();
        assert_eq!(nfd, nfc);
        assert_eq!(nfc.display, "Zoë@example.org");
        assert_eq!(nfc.key, "zoë@example.org");
        assert_eq!(
            parse_email("STRASSE@example.de").unwrap().key,
            parse_email("straße@example.de").unwrap().key
        );
        let message = |raw: &str| match parse_email(raw) {
            Err(CoreError::Validation(m)) => m,
            other => panic!("{raw:?}: {other:?}"),
        };
        assert_eq!(message("plain"), "email is not valid: it has no @");
        assert_eq!(
            message(&"a".repeat(300)),
            "email is not valid: it is longer than 254 bytes"
        );
        assert!(message("a\u{200b}b@example.com").contains("invisible character (U+200B)"));
        assert_eq!(
            email_key("Zoe\u{308}@example.org").as_deref(),
            Some("zoë@example.org")
        );
        assert_eq!(email_key("a\u{fe0f}@example.org"), None);
    }

    #[test]
    fn password_policy_counts_characters_not_bytes() {
        assert!(Password::new("1234567".into()).check_policy().is_err());
        assert!(Password::new("12345678".into()).check_policy().is_ok());
        assert!(Password::new("é".repeat(1024)).check_policy().is_ok());
        assert!(Password::new("a".repeat(1025)).check_policy().is_err());
        assert_eq!(
            format!("{:?}", Password::new("hunter22".into())),
            "[redacted]"
        );
    }

    #[test]
    fn roles_are_validated_and_deduplicated() {
        let roles = validate_roles(&["admin".into(), "admin".into(), "billing:read".into()]);
        assert_eq!(roles.unwrap(), vec!["admin", "billing:read"]);
        assert!(validate_roles(&["Admin".into()]).is_err());
        assert!(validate_roles(&["a,b".into()]).is_err());
        assert!(validate_roles(&[String::new()]).is_err());
    }
}
