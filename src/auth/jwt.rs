//! The one-time JWT (docs/protocol.md, "Tokens"): HS256, algorithm pinned by the server.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    domain::{Address, StorageId},
    error::Error,
    state::unix_now,
};

/// The claims of a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Issuer (configurable, default `amo-storage-service`).
    pub iss: String,
    /// Audience: this storage id as 8 hex digits.
    pub aud: String,
    /// The account the token was issued to.
    pub user: String,
    /// The operation, exactly as the client sent it to `/auth`.
    pub operation: Value,
    /// Random UUID v4; the key of the token's one-use record in Redis.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// The partition of the account's outstanding tokens this token counts
    /// in: an opaque digest of the client that asked for it (absent on
    /// tokens issued before partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpart: Option<String>,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The encoded JWT.
    pub jwt: String,
    /// Its claims.
    pub claims: TokenClaims,
}

/// Issues and verifies tokens with the shared HS256 secret.
#[derive(Clone)]
pub struct TokenCodec {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenCodec {
    /// A codec for `secret` (at least 32 bytes, checked by the settings).
    pub fn new(secret: &[u8], issuer: &str, storage: StorageId, ttl: Duration) -> Self {
        let audience = storage.to_string();
        // The algorithm is fixed here and never read from the token.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret).expect("an HMAC secret is a valid key"),
            decoding: DecodingKey::from_secret(secret).expect("an HMAC secret is a valid key"),
            validation,
            issuer: issuer.to_owned(),
            audience,
            ttl,
        }
    }

    /// The lifetime of new tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `user` to perform `operation` (already parsed and
    /// found valid; it is embedded as received), counted in the outstanding
    /// partition `partition`.
    pub fn issue(
        &self,
        user: &Address,
        partition: &str,
        operation: Value,
    ) -> Result<IssuedToken, Error> {
        let iat = unix_now();
        let claims = TokenClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            user: user.to_string(),
            operation,
            jti: Uuid::new_v4().to_string(),
            iat,
            exp: iat + self.ttl.as_secs(),
            cpart: Some(partition.to_owned()),
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| Error::Internal(format!("encoding a JWT: {err}")))?;
        Ok(IssuedToken { jwt, claims })
    }

    /// Checks the MAC, algorithm, header, `iss`, `aud` and `exp` of `jwt`.
    /// The header must be exactly the one [`TokenCodec::issue`] writes: a
    /// token that names a key (`kid`, `jwk`), a key URL (`jku`, `x5u`),
    /// certificates or critical extensions was not issued here, whatever
    /// its MAC.
    pub fn verify(&self, jwt: &str) -> Result<TokenClaims, Error> {
        self.decode(jwt, &self.validation)
    }

    /// [`TokenCodec::verify`] but for `exp`: a token bound to a resumable
    /// upload lives as long as its binding, whatever its own `exp`.
    pub fn verify_bound(&self, jwt: &str) -> Result<TokenClaims, Error> {
        let mut validation = self.validation.clone();
        validation.validate_exp = false;
        self.decode(jwt, &validation)
    }

    fn decode(&self, jwt: &str, validation: &Validation) -> Result<TokenClaims, Error> {
        let data = jsonwebtoken::decode::<TokenClaims>(jwt, &self.decoding, validation).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => Error::unauthenticated(
                    "token_expired",
                    "the token has expired; get a new token",
                ),
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => Error::unauthenticated(
                    "token_invalid",
                    "the token was not issued by this storage service",
                ),
                _ => Error::unauthenticated(
                    "token_invalid",
                    format!("the token is not valid: {err}"),
                ),
            },
        )?;
        if data.header != Header::new(Algorithm::HS256) {
            return Err(Error::unauthenticated(
                "token_invalid",
                "the token's header is not the one this service issues",
            ));
        }
        Ok(data.claims)
    }
}
