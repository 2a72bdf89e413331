//! Token revocation (RFC 7009) and introspection (RFC 7662).

use serde::Serialize;
use serde_json::json;

use super::Tessera;
use super::error::CoreResult;
use super::revocation::Revocation;
use super::sessions::ClientInfo;

/// The RFC 7662 answer. Anything invalid, expired or revoked is just
/// `{"active": false}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

impl Tessera {
    /// Revokes a token presented by whoever holds it. Unknown or already dead
    /// tokens are not an error (RFC 7009 §2.2). The hint only says which
    /// kind to look for first: a token not found as that kind is looked for
    /// as the other (§2.1), so a wrong hint never leaves a token alive.
    pub async fn revoke_presented_token(
        &self,
        token: &str,
        hint: Option<&str>,
        client: &ClientInfo,
    ) -> CoreResult<()> {
        if hint == Some("refresh_token") {
            if !self.revoke_refresh_token(token, client).await? {
                self.revoke_access_token(token, client).await?;
            }
        } else if !self.revoke_access_token(token, client).await? {
            self.revoke_refresh_token(token, client).await?;
        }
        Ok(())
    }

    /// Revokes `token` if it is a live access token; whether it was.
    async fn revoke_access_token(&self, token: &str, client: &ClientInfo) -> CoreResult<bool> {
        if !looks_like_jwt(token) {
            return Ok(false);
        }
        let Ok(claims) = self.verify_access_token(token).await else {
            return Ok(false);
        };
        self.revoke(Revocation::Token {
            jti: claims.jti.clone(),
            exp: claims.exp + self.tokens.leeway.whole_seconds(),
        })
        .await?;
        self.audit(
            "token_revoked",
            Some(&claims.sub),
            Some(client),
            json!({"kind": "access_token", "jti": claims.jti}),
        )
        .await;
        Ok(true)
    }

    /// Revokes the family of `token` if it is a known refresh token; whether
    /// it was.
    async fn revoke_refresh_token(&self, token: &str, client: &ClientInfo) -> CoreResult<bool> {
        let Some((family, _)) = self.refresh_token_family(token).await? else {
            return Ok(false);
        };
        self.revoke_family(&family.id).await?;
        self.audit(
            "token_revoked",
            Some(&family.user_id),
            Some(client),
            json!({"kind": "refresh_token", "family": family.id}),
        )
        .await;
        Ok(true)
    }

    /// What a resource server may learn about a token.
    pub async fn introspect(&self, token: &str) -> CoreResult<Introspection> {
        if looks_like_jwt(token) {
            return Ok(match self.verify_access_token(token).await {
                Ok(c) => Introspection {
                    active: true,
                    sub: Some(c.sub.clone()),
                    scope: c.scope.clone(),
                    client_id: Some(c.client_id.clone()),
                    exp: Some(c.exp),
                    iat: Some(c.iat),
                    jti: Some(c.jti.clone()),
                    token_type: Some("Bearer"),
                    sid: Some(c.sid.clone()),
                },
                Err(_) => Introspection::default(),
            });
        }
        Ok(match self.refresh_token_family(token).await? {
            Some((family, expires_at)) => Introspection {
                active: true,
                sub: Some(family.user_id),
                scope: family.scope,
                client_id: Some(family.client_id),
                exp: Some(expires_at.unix_timestamp()),
                iat: None,
                jti: None,
                token_type: Some("refresh_token"),
                sid: Some(family.id),
            },
            None => Introspection::default(),
        })
    }
}
