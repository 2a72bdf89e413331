//! Service clients: other services that call introspection (and later the
//! revocation feed) with HTTP Basic. The secret (256 random bits) is shown
//! once at creation and stored only as its SHA-256; checks are constant-time
//! and cost the same for unknown client ids.

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use super::Tessera;
use super::error::{CoreError, CoreResult};
use super::secret::{BearerSecret, SecretHash, is_id, new_id};

#[derive(Debug, Clone)]
pub struct ServiceClient {
    pub id: String,
    pub name: String,
    pub secret_hash: SecretHash,
    pub created_at: OffsetDateTime,
}

/// A new client and its secret, which exists nowhere else.
#[derive(Debug)]
pub struct NewClient {
    pub client: ServiceClient,
    pub secret: BearerSecret,
}

impl Tessera {
    pub async fn create_client(&self, name: &str) -> CoreResult<NewClient> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(CoreError::Validation(
                "a client name is 1 to 100 printable characters".into(),
            ));
        }
        let secret = BearerSecret::generate();
        let client = ServiceClient {
            id: new_id("cli"),
            name: name.to_owned(),
            secret_hash: secret.hash(),
            created_at: self.now(),
        };
        self.stores.clients.insert_client(&client).await?;
        Ok(NewClient { client, secret })
    }

    /// Checks HTTP Basic credentials of a service client.
    pub async fn authenticate_client(&self, id: &str, secret: &str) -> CoreResult<ServiceClient> {
        let found = if is_id("cli", id) {
            self.stores.clients.client_by_id(id).await?
        } else {
            None
        };
        let presented = SecretHash::of(secret.as_bytes());
        let expected = found
            .as_ref()
            .map_or(SecretHash([0u8; 32]), |c| c.secret_hash);
        let matches: bool = presented.as_bytes().ct_eq(expected.as_bytes()).into();
        match found {
            Some(client) if matches => Ok(client),
            _ => Err(CoreError::InvalidClient),
        }
    }
}
