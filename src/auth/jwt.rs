//! The one-time JWT (docs/protocol.md, "Tokens"): HS256, algorithm pinned by the server.
//!
//! One secret signs; earlier secrets (and the next one, staged before it
//! signs) still verify, so that a rotation (docs/operations.md, "Rotating
//! the JWT secret") leaves the tokens and bound uploads made before it
//! valid. Each key is named by an id derived from its secret ([`key_id`]),
//! which new tokens carry as `kid`; a `kid` that names none of this
//! replica's keys is refused.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
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

/// The id (`kid`) of the key `secret`: the first 8 bytes of a SHA-256 of
/// the secret, as 16 hex digits. It tells which secret signed a token, and
/// reveals no more of it than a token signed with it does (an HMAC over
/// known claims is as good a test of a guessed secret).
pub fn key_id(secret: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(b"amo-storage JWT key id\0")
        .chain_update(secret)
        .finalize();
    hex::encode(&digest[..8])
}

/// A key that verifies tokens.
#[derive(Clone)]
struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
}

/// Writes new tokens: what is the same in every token is done once. The
/// header (fixed per codec) is kept encoded, and the HMAC keyed with the
/// signing secret, so that a token costs the encoding of its claims and two
/// SHA-256 passes over it; the same bytes as `jsonwebtoken::encode` writes
/// (a test compares them), which is what verifies them.
#[derive(Clone)]
struct TokenSigner {
    /// The header, base64url without padding, and the `.` after it.
    encoded_header: String,
    /// HMAC-SHA256 keyed with the signing secret, cloned for each token.
    keyed: Hmac<Sha256>,
}

impl TokenSigner {
    fn new(secret: &[u8], header: &Header) -> Self {
        Self {
            encoded_header: Self::encoded(header),
            keyed: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }

    /// `header`, base64url without padding, and the `.` after it.
    fn encoded(header: &Header) -> String {
        let header_json = serde_json::to_vec(header).expect("a JWT header serializes");
        let mut encoded_header = URL_SAFE_NO_PAD.encode(header_json);
        encoded_header.push('.');
        encoded_header
    }

    /// `header.claims.signature` for `claims`.
    fn sign(&self, claims: &TokenClaims) -> Result<String, serde_json::Error> {
        let claims_json = serde_json::to_vec(claims)?;
        let mut jwt =
            String::with_capacity(self.encoded_header.len() + claims_json.len() * 4 / 3 + 48);
        jwt.push_str(&self.encoded_header);
        URL_SAFE_NO_PAD.encode_string(claims_json, &mut jwt);
        let mut mac = self.keyed.clone();
        mac.update(jwt.as_bytes());
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut jwt);
        Ok(jwt)
    }
}

/// Issues and verifies tokens with the shared HS256 secrets: one signs,
/// all verify.
#[derive(Clone)]
pub struct TokenCodec {
    signer: TokenSigner,
    /// The header of new tokens: HS256, `typ` JWT and the signing key's
    /// `kid` (unless turned off).
    header: Header,
    /// The signing key first, then the others in the order configured.
    keys: Vec<VerifyingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenCodec {
    /// A codec for `secret` (at least 32 bytes, checked by the settings),
    /// which signs and verifies; new tokens name it by its [`key_id`].
    pub fn new(secret: &[u8], issuer: &str, storage: StorageId, ttl: Duration) -> Self {
        let audience = storage.to_string();
        // The algorithm is fixed here and never read from the token.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        let kid = key_id(secret);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        Self {
            signer: TokenSigner::new(secret, &header),
            header,
            keys: vec![VerifyingKey {
                kid,
                decoding: DecodingKey::from_secret(secret).expect("an HMAC secret is a valid key"),
            }],
            validation,
            issuer: issuer.to_owned(),
            audience,
            ttl,
        }
    }

    /// This codec, also verifying (never signing) the tokens of `secrets`:
    /// the secrets that signed before the current one, and the next one
    /// staged before it signs. A secret already known is skipped.
    pub fn verifying<'a>(mut self, secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        for secret in secrets {
            let kid = key_id(secret);
            if self.keys.iter().any(|key| key.kid == kid) {
                continue;
            }
            self.keys.push(VerifyingKey {
                kid,
                decoding: DecodingKey::from_secret(secret).expect("an HMAC secret is a valid key"),
            });
        }
        self
    }

    /// This codec, writing the signing key's `kid` in new tokens or not
    /// (tokens without one verify against every key: replicas of versions
    /// before key ids refuse a `kid`).
    pub fn writing_kid(mut self, write: bool) -> Self {
        self.header.kid = write.then(|| self.keys[0].kid.clone());
        self.signer.encoded_header = TokenSigner::encoded(&self.header);
        self
    }

    /// The id of the signing key.
    pub fn signing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// The ids of the keys that verify but do not sign, in order.
    pub fn verifying_kids(&self) -> Vec<&str> {
        self.keys[1..].iter().map(|key| key.kid.as_str()).collect()
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
        let jwt = self
            .signer
            .sign(&claims)
            .map_err(|err| Error::Internal(format!("encoding a JWT: {err}")))?;
        Ok(IssuedToken { jwt, claims })
    }

    /// Checks the header, MAC, algorithm, `iss`, `aud` and `exp` of `jwt`.
    /// The header must be exactly one [`TokenCodec::issue`] writes: HS256,
    /// `typ` JWT and, optionally, a `kid` that names one of this codec's
    /// keys (the MAC is then checked with that key only; without a `kid`,
    /// with each key in turn). A token that names another key, a key URL
    /// (`jku`, `x5u`), a key (`jwk`), certificates or critical extensions
    /// was not issued here, whatever its MAC.
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
        let header = jsonwebtoken::decode_header(jwt).map_err(refused)?;
        let mut plain = header.clone();
        let kid = plain.kid.take();
        if plain != Header::new(Algorithm::HS256) {
            return Err(not_ours());
        }
        let keys: Vec<&VerifyingKey> = match &kid {
            Some(kid) => vec![
                self.keys
                    .iter()
                    .find(|key| &key.kid == kid)
                    .ok_or_else(|| {
                        Error::unauthenticated(
                            "token_invalid",
                            "the token names a key this service does not hold",
                        )
                    })?,
            ],
            None => self.keys.iter().collect(),
        };
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<TokenClaims>(jwt, &key.decoding, validation) {
                // Its header was checked above.
                Ok(data) => return Ok(data.claims),
                // Another key may have signed it: try the next.
                Err(err) if *err.kind() == ErrorKind::InvalidSignature => last = Some(err),
                Err(err) => return Err(refused(err)),
            }
        }
        Err(refused(
            last.expect("a token is checked against one key at least"),
        ))
    }
}

/// The refusal of a token whose header is not one this service writes.
fn not_ours() -> Error {
    Error::unauthenticated(
        "token_invalid",
        "the token's header is not the one this service issues",
    )
}

/// The refusal of a token that failed a check.
fn refused(err: jsonwebtoken::errors::Error) -> Error {
    match err.kind() {
        ErrorKind::ExpiredSignature => {
            Error::unauthenticated("token_expired", "the token has expired; get a new token")
        }
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => Error::unauthenticated(
            "token_invalid",
            "the token was not issued by this storage service",
        ),
        _ => Error::unauthenticated("token_invalid", format!("the token is not valid: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;

    const A: &[u8] = b"secret-a-secret-a-secret-a-secret-a";
    const B: &[u8] = b"secret-b-secret-b-secret-b-secret-b";

    fn codec(secret: &[u8]) -> TokenCodec {
        TokenCodec::new(secret, "iss", StorageId(1), Duration::from_secs(60))
    }

    fn token(codec: &TokenCodec) -> String {
        let user = Address::parse("0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        codec.issue(&user, "p", Value::Null).unwrap().jwt
    }

    fn code(result: Result<TokenClaims, Error>) -> String {
        match result {
            Err(Error::Unauthenticated { code, .. }) => code.to_string(),
            other => panic!("not refused as unauthenticated: {:?}", other.map(|c| c.jti)),
        }
    }

    /// The signer writes exactly what `jsonwebtoken::encode` writes for
    /// the same header and claims, with and without a `kid`.
    #[test]
    fn tokens_are_the_bytes_jsonwebtoken_writes() {
        for write_kid in [true, false] {
            let codec = codec(A).writing_kid(write_kid);
            let user = Address::parse("0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
            let operation = serde_json::json!({"name": "upload", "hash": "é\"/\u{1}"});
            let issued = codec.issue(&user, "p", operation).unwrap();
            let expected = jsonwebtoken::encode(
                &codec.header,
                &issued.claims,
                &EncodingKey::from_secret(A).unwrap(),
            )
            .unwrap();
            assert_eq!(issued.jwt, expected, "kid written: {write_kid}");
            assert!(codec.verify(&issued.jwt).is_ok());
        }
    }

    #[test]
    fn new_tokens_name_the_signing_key() {
        let jwt = token(&codec(A));
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.kid.as_deref(), Some(key_id(A).as_str()));
        assert_eq!(
            codec(A).signing_kid(),
            key_id(A),
            "the key the start-up log names"
        );
        assert_eq!(key_id(A).len(), 16);
        assert_ne!(key_id(A), key_id(B));
        let plain = token(&codec(A).writing_kid(false));
        assert_eq!(jsonwebtoken::decode_header(&plain).unwrap().kid, None);
    }

    #[test]
    fn previous_keys_verify_and_retired_ones_do_not() {
        let old = codec(A);
        let (with_kid, without_kid) = (token(&old), token(&old.clone().writing_kid(false)));
        let rotated = codec(B).verifying([A]);
        assert_eq!(rotated.verifying_kids(), vec![key_id(A).as_str()]);
        rotated.verify(&with_kid).unwrap();
        rotated.verify(&without_kid).unwrap();
        rotated.verify_bound(&with_kid).unwrap();
        rotated.verify(&token(&rotated)).unwrap();
        let retired = codec(B);
        assert_eq!(code(retired.verify(&with_kid)), "token_invalid");
        assert_eq!(code(retired.verify(&without_kid)), "token_invalid");
    }

    /// Without a `kid` each key is tried in turn, but only a wrong MAC
    /// moves on to the next: the key that signed a token decides its
    /// refusal. An expired token signed by the first key tried is refused
    /// as expired, not as invalid under the second.
    #[test]
    fn the_key_that_signed_decides_the_refusal() {
        let user = Address::parse("0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        let rotated = codec(B).verifying([A]);
        for secret in [B, A] {
            let mut claims = codec(secret).issue(&user, "p", Value::Null).unwrap().claims;
            claims.exp = 1;
            let expired = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap();
            assert_eq!(code(rotated.verify(&expired)), "token_expired");
        }
    }

    #[test]
    fn a_kid_must_name_the_key_that_signed() {
        // Signed by A but naming B: B's MAC check fails, A is not tried.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key_id(B));
        let user = Address::parse("0123456789ABCDEF0123456789ABCDEF01234567").unwrap();
        let claims = codec(A).issue(&user, "p", Value::Null).unwrap().claims;
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(A).unwrap()).unwrap();
        assert_eq!(
            code(codec(B).verifying([A]).verify(&forged)),
            "token_invalid"
        );
    }
}
