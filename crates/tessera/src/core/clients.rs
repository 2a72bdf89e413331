//! Service clients: other services that call introspection and the
//! revocation feed with HTTP Basic. The secret (256 random bits) is shown
//! once, at creation or rotation, and stored only as its SHA-256; checks are
//! constant-time and cost the same for unknown, disabled and deleted client
//! ids, which all fail with the one `invalid_client` answer.
//!
//! Lifecycle: an administrator (API, admin page) or an operator (CLI) can
//! disable a client and enable it again, give it a new secret (the old one
//! stops working at once), or delete it. Nothing caches clients: every
//! authentication reads the store, so each of these takes effect on the
//! very next request on every node; an open revocation-feed stream checks
//! its client again every [`CLIENT_RECHECK`] and ends when it no longer
//! authenticates. Every change is audited (`client_created`,
//! `client_changed` with `detail.change`), never with a secret in it.

use std::time::Duration;

use serde_json::json;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::Tessera;
use super::error::{CoreError, CoreResult};
use super::secret::{BearerSecret, SecretHash, is_id, new_id};

/// How often an open revocation-feed stream checks that its client still
/// authenticates (not disabled, not deleted, secret not rotated): the
/// longest a stream outlives its client.
pub const CLIENT_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ServiceClient {
    pub id: String,
    pub name: String,
    pub secret_hash: SecretHash,
    pub created_at: OffsetDateTime,
    /// When it was disabled; `None` while it is enabled.
    pub disabled_at: Option<OffsetDateTime>,
}

impl ServiceClient {
    /// A disabled client fails authentication until it is enabled again.
    pub fn disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

/// A new client (or a client with a new secret) and its secret, which
/// exists nowhere else.
#[derive(Debug)]
pub struct NewClient {
    pub client: ServiceClient,
    pub secret: BearerSecret,
}

/// Who acted on a client, as the audit log names them (`detail.actor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An administrator, through the API or the admin page: their user id
    /// (also the event's `user_id`).
    User(String),
    /// The command line, with the operating-system user who ran it when
    /// known (as the environment says: `USER`, `LOGNAME`).
    Cli(Option<String>),
}

impl Actor {
    /// The command line run by `os_user`, kept only when it looks like a
    /// user name (1 to 64 of `A-Z a-z 0-9 . _ -`): the audit log must not
    /// take arbitrary text from the environment.
    pub fn cli(os_user: Option<&str>) -> Self {
        let name = os_user.map(str::trim).filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
        Actor::Cli(name.map(str::to_owned))
    }

    /// The user id the audit event is filed under (an administrator's).
    fn user_id(&self) -> Option<&str> {
        match self {
            Actor::User(id) => Some(id),
            Actor::Cli(_) => None,
        }
    }

    /// `usr_…`, `cli:alice`, or `cli` when the user is not known.
    pub fn label(&self) -> String {
        match self {
            Actor::User(id) => id.clone(),
            Actor::Cli(Some(name)) => format!("cli:{name}"),
            Actor::Cli(None) => "cli".to_owned(),
        }
    }
}

/// What a `client_changed` event says changed (`detail.change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientChange {
    Disabled,
    Enabled,
    SecretRotated,
    Deleted,
}

impl ClientChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientChange::Disabled => "disabled",
            ClientChange::Enabled => "enabled",
            ClientChange::SecretRotated => "secret_rotated",
            ClientChange::Deleted => "deleted",
        }
    }
}

fn validate_name(name: &str) -> CoreResult<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(CoreError::Validation(
            "a client name is 1 to 100 printable characters".into(),
        ));
    }
    Ok(name)
}

impl Tessera {
    /// [`Tessera::create_client_by`] with no one named as the actor.
    pub async fn create_client(&self, name: &str) -> CoreResult<NewClient> {
        self.create_client_by(None, name).await
    }

    /// Creates an enabled client with a fresh secret (returned, never
    /// stored); audited as `client_created`.
    pub async fn create_client_by(
        &self,
        actor: Option<&Actor>,
        name: &str,
    ) -> CoreResult<NewClient> {
        let name = validate_name(name)?;
        let secret = BearerSecret::generate();
        let client = ServiceClient {
            id: new_id("cli"),
            name: name.to_owned(),
            secret_hash: secret.hash(),
            created_at: self.now(),
            disabled_at: None,
        };
        self.stores.clients.insert_client(&client).await?;
        tracing::info!(client_id = %client.id, "service client created");
        self.audit(
            "client_created",
            actor.and_then(Actor::user_id),
            None,
            json!({
                "client_id": client.id,
                "name": client.name,
                "actor": actor.map(Actor::label),
            }),
        )
        .await;
        Ok(NewClient { client, secret })
    }

    /// Every client, oldest first.
    pub async fn list_clients(&self) -> CoreResult<Vec<ServiceClient>> {
        Ok(self.stores.clients.list_clients().await?)
    }

    /// One client, enabled or disabled; `NotFound` for an unknown or
    /// deleted id (and anything that is not a client id at all).
    pub async fn client(&self, id: &str) -> CoreResult<ServiceClient> {
        const UNKNOWN: CoreError = CoreError::NotFound("no such client");
        if !is_id("cli", id) {
            return Err(UNKNOWN);
        }
        self.stores.clients.client_by_id(id).await?.ok_or(UNKNOWN)
    }

    /// Disables a client (it fails authentication from its next request
    /// on, everywhere) or enables it again; the secret is kept. Setting the
    /// state it has already changes and records nothing. Returns the client
    /// as it is now.
    pub async fn set_client_disabled(
        &self,
        actor: &Actor,
        id: &str,
        disabled: bool,
    ) -> CoreResult<ServiceClient> {
        let client = self.client(id).await?;
        if client.disabled() == disabled {
            return Ok(client);
        }
        let at = disabled.then(|| self.now());
        if !self.stores.clients.set_client_disabled(id, at).await? {
            return Err(CoreError::NotFound("no such client"));
        }
        let change = if disabled {
            ClientChange::Disabled
        } else {
            ClientChange::Enabled
        };
        self.audit_client_change(actor, &client, change).await;
        self.client(id).await
    }

    /// Gives a client a new secret (returned once, stored as its SHA-256
    /// only); the old secret fails from the next request on, everywhere. A
    /// disabled client stays disabled.
    pub async fn rotate_client_secret(&self, actor: &Actor, id: &str) -> CoreResult<NewClient> {
        let mut client = self.client(id).await?;
        let secret = BearerSecret::generate();
        let hash = secret.hash();
        if !self.stores.clients.set_client_secret(id, &hash).await? {
            return Err(CoreError::NotFound("no such client"));
        }
        client.secret_hash = hash;
        self.audit_client_change(actor, &client, ClientChange::SecretRotated)
            .await;
        Ok(NewClient { client, secret })
    }

    /// Deletes a client for good; returns what it was.
    pub async fn delete_client(&self, actor: &Actor, id: &str) -> CoreResult<ServiceClient> {
        let client = self.client(id).await?;
        if !self.stores.clients.delete_client(id).await? {
            return Err(CoreError::NotFound("no such client"));
        }
        self.audit_client_change(actor, &client, ClientChange::Deleted)
            .await;
        Ok(client)
    }

    async fn audit_client_change(
        &self,
        actor: &Actor,
        client: &ServiceClient,
        change: ClientChange,
    ) {
        tracing::info!(
            client_id = %client.id,
            change = change.as_str(),
            actor = %actor.label(),
            "service client changed"
        );
        self.audit(
            "client_changed",
            actor.user_id(),
            None,
            json!({
                "client_id": client.id,
                "name": client.name,
                "change": change.as_str(),
                "actor": actor.label(),
            }),
        )
        .await;
    }

    /// Checks HTTP Basic credentials of a service client.
    pub async fn authenticate_client(&self, id: &str, secret: &str) -> CoreResult<ServiceClient> {
        self.authenticate_client_hash(id, &SecretHash::of(secret.as_bytes()))
            .await
    }

    /// [`Tessera::authenticate_client`] with the SHA-256 of the presented
    /// secret (what a long-lived stream keeps to check its client again,
    /// rather than the secret). Unknown, deleted and disabled clients are
    /// compared with a hash no secret has, at the same cost as a known one,
    /// and all get the same `InvalidClient`.
    pub async fn authenticate_client_hash(
        &self,
        id: &str,
        presented: &SecretHash,
    ) -> CoreResult<ServiceClient> {
        let found = if is_id("cli", id) {
            self.stores.clients.client_by_id(id).await?
        } else {
            None
        };
        let usable = found.filter(|c| !c.disabled());
        let expected = usable
            .as_ref()
            .map_or(SecretHash([0u8; 32]), |c| c.secret_hash);
        let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        match usable {
            Some(client) if matches => Ok(client),
            _ => Err(CoreError::InvalidClient),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_actor_keeps_only_a_plain_user_name() {
        assert_eq!(Actor::cli(Some("alice")).label(), "cli:alice");
        assert_eq!(Actor::cli(Some(" ops-bot.1 ")).label(), "cli:ops-bot.1");
        assert_eq!(Actor::cli(None).label(), "cli");
        for odd in [
            "",
            "   ",
            "a b",
            "root\nforged",
            "x;y",
            "é",
            &"a".repeat(65),
        ] {
            assert_eq!(Actor::cli(Some(odd)), Actor::Cli(None), "{odd:?}");
        }
        assert_eq!(Actor::User("usr_x".into()).label(), "usr_x");
        assert_eq!(Actor::User("usr_x".into()).user_id(), Some("usr_x"));
        assert_eq!(Actor::cli(Some("alice")).user_id(), None);
    }

    #[test]
    fn client_names_are_short_printable_text() {
        assert_eq!(validate_name("  billing  ").unwrap(), "billing");
        assert!(validate_name(&"é".repeat(100)).is_ok());
        for bad in ["", "  ", "a\u{7}b", "line\nbreak", &"x".repeat(101)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn changes_have_the_names_the_audit_log_uses() {
        let all = [
            ClientChange::Disabled,
            ClientChange::Enabled,
            ClientChange::SecretRotated,
            ClientChange::Deleted,
        ];
        let names: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["disabled", "enabled", "secret_rotated", "deleted"]);
    }
}
