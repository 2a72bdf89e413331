//! Accounts: users, their emails, roles and status.
//!
//! A user's id (`usr_…`) is permanent and is what sessions and tokens refer to;
//! the email is only a login name, unique case-insensitively. Passwords are
//! checked against the length policy *before* any hashing so an attacker cannot
//! make the server hash megabytes. Role changes and suspension are recorded as
//! change events so every cache (in this process and others) drops what it
//! knew at once: a change shows at the user's very next request.
//!
//! **The last admin.** No one can remove the `admin` role from, suspend or
//! delete the last active admin, through any door (API, pages, CLI): every
//! such write goes through the store with `keep = admin`, and the store
//! checks for another active admin in the same step as the write, so two
//! admins demoting each other at once cannot both succeed
//! ([`crate::store::UserWrite::LastHolder`]). The core answers
//! [`CoreError::LastAdmin`].
//!
//! **Administrators' actions on accounts** are audited with the target as
//! `user_id` and the administrator as `detail.actor` (their user id, or
//! `cli` for the command line, see [`OPERATOR`]). Deleting a user ends everything of
//! theirs at once on every node, like a suspension, and the audit log keeps
//! their id but loses their email.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::error::{CoreError, CoreResult};
use super::events::Change;
use super::passwords::Principals;
use super::secret::{is_id, new_id};
use super::sessions::ClientInfo;
use super::{Tessera, time::serde_rfc3339};
use crate::store::UserWrite;

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

/// The role that administers Tessera; it never loses its last active
/// holder.
pub const ADMIN_ROLE: &str = "admin";

/// `detail.actor` when no one is named: the operator at the command line.
///
/// Every `*_by` function takes `actor`, who acts as the audit log names
/// them: an administrator's user id (`usr_…`), or the command line (`cli`,
/// `cli:NAME` with the operating-system user); `None` is this.
pub const OPERATOR: &str = "cli";

pub(crate) fn actor_of(actor: Option<&str>) -> &str {
    actor.unwrap_or(OPERATOR)
}

/// What a guarded write ended in, in the core's terms.
fn guarded(write: UserWrite) -> CoreResult<()> {
    match write {
        UserWrite::Done => Ok(()),
        UserWrite::NoSuchUser => Err(CoreError::NotFound("no such user")),
        UserWrite::LastHolder => Err(CoreError::LastAdmin),
    }
}

/// Who creates an account, for its `user_created` event.
enum Creator<'a> {
    /// Self-registration, from this client, with an invitation or not.
    Themselves(&'a ClientInfo, Option<&'a str>),
    /// An administrator (their id), or the operator (`None`).
    Admin(Option<&'a str>),
}

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
    /// Whether the account proved it reads this email's mailbox (a
    /// verification link, a reset link, or an invitation sent to it).
    /// False again after the email changes.
    pub email_verified: bool,
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

    /// The rule for a password being set (not one being checked: a login
    /// and a change's current password use [`Password::check_policy`]
    /// only): the length policy, then the strength rule
    /// ([`super::password_strength`]: not guessable from the common-password
    /// lists, patterns or `user_inputs`, the account's email and its
    /// pieces). CPU-bound (up to ~25 ms): the core runs it on the hashing
    /// pool (`Tessera::check_new_password`).
    pub fn check_new(&self, user_inputs: &[&str]) -> CoreResult<()> {
        self.check_policy()?;
        super::password_strength::check(&self.0, user_inputs)
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
    /// Creates an account for the operator ([`OPERATOR`]; tests, embedders),
    /// audited as `user_created`. Validation happens before the
    /// (expensive) hash.
    pub async fn register(&self, new: NewAccount) -> CoreResult<User> {
        self.register_as(new, Principals::nobody(), Creator::Admin(None))
            .await
    }

    /// Creates an account for an administrator or the operator (`actor`,
    /// see [`OPERATOR`]), audited as `user_created`. Its hash counts
    /// towards the actor's share of the hashing pool.
    pub async fn create_user_by(&self, actor: Option<&str>, new: NewAccount) -> CoreResult<User> {
        self.register_as(new, Principals::new(None, actor), Creator::Admin(actor))
            .await
    }

    /// Creates an account a client asked for, if `registration`, the
    /// domain list or `invitation` allow it (see [`super::registration`]):
    /// its hash counts towards the client address's fair share of the
    /// hashing pool, like a login's. The new account is mailed a link to
    /// verify its address (unless verification is off or a mailed
    /// invitation proved it already).
    pub async fn register_from(
        &self,
        new: NewAccount,
        invitation: Option<&str>,
        client: &super::sessions::ClientInfo,
    ) -> CoreResult<User> {
        let email = parse_email(&new.email)?;
        self.check_self_registration(&email.key, invitation).await?;
        let address = client.ip_addr().filter(|_| self.limits.per_address());
        let who = Principals::new(address, None);
        let user = self
            .register_as(new, who, Creator::Themselves(client, invitation))
            .await?;
        self.mail_verification_link(&user).await?;
        Ok(user)
    }

    async fn register_as(
        &self,
        new: NewAccount,
        who: Principals,
        creator: Creator<'_>,
    ) -> CoreResult<User> {
        let email = parse_email(&new.email)?;
        self.check_new_password(&who, &new.password, &email.display)
            .await?;
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
        // The invitation is used last, once nothing else can refuse.
        let (roles, email_verified, invitation) = match creator {
            Creator::Themselves(_, Some(token)) => {
                let admitted = self.use_invitation(token, &email.key).await?;
                let mut all = roles;
                for role in admitted.roles {
                    if !all.contains(&role) {
                        all.push(role);
                    }
                }
                (all, admitted.email_verified, Some(admitted.reference))
            }
            _ => (roles, false, None),
        };
        let user = User {
            id: new_id("usr"),
            email: email.display,
            roles,
            status: UserStatus::Active,
            email_verified,
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
        // The email is recorded here (a deleted user's events lose it).
        let (client, detail) = match creator {
            Creator::Themselves(client, _) => (
                Some(client),
                match invitation {
                    Some(reference) => serde_json::json!({
                        "email": user.email,
                        "roles": user.roles,
                        "via": "invitation",
                        "invitation": reference,
                    }),
                    None => serde_json::json!({
                        "email": user.email,
                        "roles": user.roles,
                        "via": "registration",
                    }),
                },
            ),
            Creator::Admin(actor) => (
                None,
                serde_json::json!({"email": user.email, "roles": user.roles, "actor": actor_of(actor)}),
            ),
        };
        self.audit("user_created", Some(&user.id), client, detail)
            .await;
        Ok(user)
    }

    /// The user an operator names by id (`usr_…`) or by email (matched as
    /// a login matches it: any case, any Unicode spelling).
    pub async fn find_user(&self, id_or_email: &str) -> CoreResult<User> {
        let named = id_or_email.trim();
        if !named.contains('@') {
            return self.user(named).await;
        }
        let email = parse_email(named)?;
        self.stores
            .users
            .credentials_by_email(&email.key)
            .await?
            .map(|(user, _)| user)
            .ok_or(CoreError::NotFound("no user has this email"))
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
        let write = self
            .stores
            .users
            .set_roles(id, &roles, Some(ADMIN_ROLE), now)
            .await?;
        guarded(write)?;
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
            serde_json::json!({"roles": roles, "actor": actor_of(actor)}),
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
        let write = self
            .stores
            .users
            .set_status(id, status, Some(ADMIN_ROLE), now)
            .await?;
        guarded(write)?;
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
        self.audit(
            event,
            Some(id),
            None,
            serde_json::json!({"actor": actor_of(actor)}),
        )
        .await;
        tracing::info!(user_id = %id, status = status.as_str(), "status changed");
        self.user(id).await
    }

    /// Sets a user's password for an administrator or the operator
    /// (`actor`, see [`OPERATOR`]), without the current one: the password policy first, then
    /// the new hash, then every session, refresh family and earlier access
    /// token of the user ends, at once on every node (as a password change
    /// does). Works on a suspended account too (suspend, set, reactivate is
    /// how leaked credentials are taken back). Audited as `password_reset`.
    pub async fn set_password_by(
        &self,
        actor: Option<&str>,
        id: &str,
        password: Password,
    ) -> CoreResult<User> {
        password.check_policy()?;
        let user = self.user(id).await?;
        self.check_new_password(&Principals::new(None, actor), &password, &user.email)
            .await?;
        let hash = self
            .passwords
            .hash(&Principals::new(None, actor), password)
            .await?;
        if !self
            .stores
            .users
            .set_password_hash(id, &hash, self.now())
            .await?
        {
            return Err(CoreError::NotFound("no such user"));
        }
        let sessions = self.end_all_sessions(id).await?;
        self.revoke_user_tokens(id).await?;
        self.publish(Change::UserSessionsRevoked {
            user_id: id.to_owned(),
        })
        .await?;
        tracing::info!(user_id = %id, "password set by an administrator");
        self.audit(
            "password_reset",
            Some(id),
            None,
            serde_json::json!({"actor": actor_of(actor), "sessions": sessions}),
        )
        .await;
        Ok(user)
    }

    /// Deletes a user for an administrator or the operator (`actor`, see
    /// [`OPERATOR`]); returns the user as it was. The row goes with its
    /// database sessions and refresh families in one step that the last
    /// admin guard is part of; then every session (wherever sessions
    /// live) ends and every access token of the user is cut off, at once
    /// on every node, as a suspension does. The audit log keeps the id and
    /// loses the email; `user_deleted` records the actor. The email can be
    /// registered again at once.
    ///
    /// Should the revocations fail after the row is gone (a store down),
    /// the error is returned and logged; the row stays deleted, so the
    /// user's sessions and refresh tokens are dead anyway (their user is
    /// gone), and only access tokens seen by verifiers that do not look
    /// the user up can live on, until their expiry.
    pub async fn delete_user_by(&self, actor: Option<&str>, id: &str) -> CoreResult<User> {
        let user = self.user(id).await?;
        guarded(self.stores.users.delete_user(id, Some(ADMIN_ROLE)).await?)?;
        tracing::info!(user_id = %id, "user deleted");
        // Recorded once the row is gone (after the store forgot the email
        // in the user's earlier events); it names no email itself.
        self.audit(
            "user_deleted",
            Some(id),
            None,
            serde_json::json!({"actor": actor_of(actor)}),
        )
        .await;
        let ended = async {
            // The access-token cut-off first (tokens are what no store
            // lookup stops), then the sessions wherever they live.
            self.revoke_user_tokens(id).await?;
            let sessions = self.end_all_sessions(id).await?;
            self.publish(Change::UserChanged {
                user_id: id.to_owned(),
            })
            .await?;
            self.publish(Change::UserSessionsRevoked {
                user_id: id.to_owned(),
            })
            .await?;
            Ok::<_, CoreError>(sessions)
        }
        .await;
        match ended {
            Ok(sessions) => {
                tracing::info!(user_id = %id, sessions, "deleted user's sessions and tokens ended");
                Ok(user)
            }
            Err(e) => {
                tracing::error!(user_id = %id, error = %e, "user deleted, but ending their sessions and tokens failed");
                Err(e)
            }
        }
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
