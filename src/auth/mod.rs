//! Tokens and the proof of possession (docs/protocol.md, "Tokens" to
//! "Token lifecycle").
//!
//! [`Authorizer::authorize`] runs every check of the design, in order, before
//! any side effect, then claims the token. Passing yields [`Authorized`]: the
//! parcel code takes one, so it cannot act for a caller that was not checked.

pub mod bound;
pub mod jwt;
pub mod proof;
pub mod tokens;

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use crate::{
    domain::{Address, ClientAddress, Operation, OperationKind, ParcelId, Sha256Hex},
    error::Error,
};

use self::{
    bound::UploadRequest,
    jwt::{IssuedToken, TokenCodec},
    proof::{PublicKey, TokenSignature},
    tokens::{TokenClaim, TokenStore},
};

/// The three headers of a request that uses a token, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProofHeaders<'a> {
    /// `X-Auth-Token`: the JWT.
    pub token: Option<&'a str>,
    /// `X-Public-Key`: the account's P-256 public key.
    pub public_key: Option<&'a str>,
    /// `X-Signature`: the signature over the token (over the request, on a
    /// resumable upload: [`UploadRequest::signed_text`]).
    pub signature: Option<&'a str>,
}

impl<'a> ProofHeaders<'a> {
    /// Check 1 of the order of checks: the three headers, each present
    /// (else 401 `missing_credentials`).
    pub fn present(&self) -> Result<(&'a str, &'a str, &'a str), Error> {
        match (self.token, self.public_key, self.signature) {
            (Some(token), Some(key), Some(signature)) => Ok((token, key, signature)),
            _ => Err(Error::unauthenticated(
                "missing_credentials",
                "this request needs the X-Auth-Token, X-Public-Key and X-Signature headers",
            )),
        }
    }
}

/// A request whose token, key and signature passed every check, and whose
/// token is now claimed by this request.
pub struct Authorized {
    caller: Address,
    operation: Operation,
    claim: TokenClaim,
    /// Set once the token's use is marked in the parcel store: the token
    /// is spent, whatever happens next.
    marked: AtomicBool,
    /// This request's name in the token's use mark.
    holder: String,
}

impl Authorized {
    /// The proven account.
    pub fn caller(&self) -> &Address {
        &self.caller
    }

    /// The SHA-256 the upload token declares, if it declares one.
    pub fn declared_hash(&self) -> Option<&Sha256Hex> {
        self.operation.declared_hash()
    }

    /// The operation succeeded: the token is used up.
    pub async fn succeeded(self) {
        self.claim.consume().await;
    }

    /// The token's `jti`.
    pub fn jti(&self) -> &str {
        self.claim.jti()
    }

    /// What a commit of this request spends: the token, marked used by
    /// this request alone, and its claim, which must still be held.
    pub fn spend(&self) -> Spend<'_> {
        Spend {
            jti: self.claim.jti(),
            holder: self.holder.clone(),
            held: Some(self.claim.lease()),
            marked: Some(&self.marked),
        }
    }

    /// Binds the token to the resumable upload `upload` for `lifetime`
    /// instead of consuming it: from now on it serves that upload only.
    pub async fn bind(self, upload: &str, lifetime: std::time::Duration) -> Result<(), Error> {
        self.claim.bind(upload, lifetime).await
    }

    /// The operation failed before any effect: the token stays usable.
    pub async fn failed(self) {
        self.claim.release().await;
    }

    /// Settles the token on `outcome`: consumed if the operation succeeded,
    /// or may have taken effect; released if it failed before anything
    /// became visible.
    ///
    /// Once the token's use is marked (docs/reliability.md, "Exactly once
    /// across a failover") the token is spent whatever the outcome: a
    /// store that failed after the mark answers `outcome_unknown`, which
    /// tells the client to get a new token.
    pub async fn settle<T>(self, outcome: Result<T, Error>) -> Result<T, Error> {
        if self.marked.load(Ordering::Acquire) {
            self.succeeded().await;
            return outcome.map_err(|err| match err {
                Error::Unavailable {
                    service: "parcel store",
                    detail,
                } => Error::OutcomeUnknown { detail },
                other => other,
            });
        }
        match &outcome {
            Ok(_) => self.succeeded().await,
            Err(err) if err.may_have_taken_effect() => self.succeeded().await,
            // Redis failed: its release would most likely wait for Redis's
            // timeout too, and fail. It runs on, and the answer goes now.
            Err(Error::Unavailable {
                service: "token store",
                ..
            }) => {
                tokio::spawn(self.failed());
            }
            Err(_) => self.failed().await,
        }
        outcome
    }
}

/// Issues tokens and checks the requests that use them.
#[derive(Clone)]
pub struct Authorizer {
    codec: TokenCodec,
    store: TokenStore,
}

impl Authorizer {
    /// An authorizer over the shared codec and token store.
    pub fn new(codec: TokenCodec, store: TokenStore) -> Self {
        Self { codec, store }
    }

    /// The token store, for readiness checks.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// Issues a one-time token for `user`, asked for by `client`, and records
    /// its `jti`. `operation` is the value the client sent; it is parsed here
    /// and must be valid.
    pub async fn issue(
        &self,
        user: &Address,
        client: ClientAddress,
        operation: Value,
    ) -> Result<IssuedToken, Error> {
        Operation::parse(&operation)?;
        let partition = tokens::partition_of(client);
        let issued = self.codec.issue(user, &partition, operation)?;
        self.store
            .issue(&issued.claims.jti, user, &partition, self.codec.ttl())
            .await?;
        crate::metrics::token_issued();
        Ok(issued)
    }

    /// Checks a request that wants to perform `expected` on `target`, then
    /// claims its token. Every check of docs/protocol.md, "Order of checks",
    /// but the body hash is here.
    pub async fn authorize(
        &self,
        headers: ProofHeaders<'_>,
        expected: OperationKind,
        target: Option<&ParcelId>,
    ) -> Result<Authorized, Error> {
        let (user, claims, operation) = self.prove(headers, true, str::to_owned)?;
        if operation.kind() != expected {
            return Err(Error::Forbidden(format!(
                "this token is for \"{}\", not \"{expected}\"",
                operation.kind()
            )));
        }
        if let (Some(scoped), Some(target)) = (operation.parcel_id(), target) {
            if scoped != target {
                return Err(Error::Forbidden(format!(
                    "this token is for parcel {scoped}, not {target}"
                )));
            }
        }
        let claim = self
            .store
            .claim(&claims.jti, &user, claims.cpart.as_deref(), claims.exp)
            .await?;
        Ok(Authorized {
            caller: user,
            operation,
            claim,
            marked: AtomicBool::new(false),
            holder: format!("request:{}", uuid::Uuid::new_v4()),
        })
    }

    /// Checks `request` on the resumable upload `upload`: the proof, as
    /// [`Authorizer::authorize`] checks it but for the JWT's `exp` (the
    /// binding's lifetime replaces it), and with the signature over the
    /// request ([`UploadRequest::signed_text`]), not the token alone. An
    /// upload token that is not bound to `upload` answers as an unknown
    /// upload would (404). Answers the caller and the token's `jti`, and
    /// whether the binding still stands (it ends when the upload
    /// completes).
    pub async fn authorize_bound(
        &self,
        headers: ProofHeaders<'_>,
        upload: &str,
        request: UploadRequest,
    ) -> Result<Bound, Error> {
        let (caller, claims, operation) =
            self.prove(headers, false, |token| request.signed_text(upload, token))?;
        if operation.kind() != OperationKind::Upload {
            return Err(Error::UploadNotFound);
        }
        let binding = self.store.binding(&claims.jti).await?;
        Ok(Bound {
            caller,
            bound: binding.as_deref() == Some(tokens::bound_to(upload).as_str()),
            jti: claims.jti,
        })
    }

    /// Checks 1 to 5 of the order of checks: the headers, the JWT (its
    /// `exp` if `check_exp`), the key, the key's address and the signature,
    /// over the text `signed` makes of the token.
    fn prove(
        &self,
        headers: ProofHeaders<'_>,
        check_exp: bool,
        signed: impl FnOnce(&str) -> String,
    ) -> Result<(Address, jwt::TokenClaims, Operation), Error> {
        let (jwt, key, signature) = headers.present()?;
        let claims = if check_exp {
            self.codec.verify(jwt)?
        } else {
            self.codec.verify_bound(jwt)?
        };
        let user = Address::parse(&claims.user).map_err(|_| {
            Error::unauthenticated("token_invalid", "the token's user is malformed")
        })?;
        let key = PublicKey::parse(key)?;
        if key.address() != user {
            return Err(Error::unauthenticated(
                "key_mismatch",
                "X-Public-Key does not belong to the token's user",
            ));
        }
        key.verify(&signed(jwt), &TokenSignature::parse(signature)?)?;
        crate::audit::caller(&user);
        let operation = Operation::parse(&claims.operation).map_err(|_| {
            Error::unauthenticated("token_invalid", "the token's operation is malformed")
        })?;
        Ok((user, claims, operation))
    }
}

/// What the commit of an operation spends: a token, in the strongly
/// consistent mark of its use ([`crate::storage::ParcelStore::mark_token_used`]),
/// and the lease that holds it, checked right before (fencing).
pub struct Spend<'a> {
    /// The token's `jti`.
    pub jti: &'a str,
    /// Who spends it: one request, or one resumable upload (whose
    /// completion may be retried).
    pub holder: String,
    /// The lease on the token (its claim, or the resumable upload's lock)
    /// that must still be held at the commit.
    pub held: Option<&'a crate::state::Lease>,
    /// Set once the mark is written.
    pub marked: Option<&'a AtomicBool>,
}

impl Spend<'_> {
    /// Notes that the token's use is marked.
    pub fn mark(&self) {
        self.note(true);
    }

    /// Notes that the mark is taken back: the token is not spent.
    pub fn unmark(&self) {
        self.note(false);
    }

    fn note(&self, marked: bool) {
        if let Some(flag) = self.marked {
            flag.store(marked, Ordering::Release);
        }
    }

    /// Whether the token's use is marked by this spend.
    pub fn is_marked(&self) -> bool {
        self.marked.is_some_and(|flag| flag.load(Ordering::Acquire))
    }
}

/// A request on a resumable upload whose proof passed.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The proven account.
    pub caller: Address,
    /// The token's `jti`.
    pub jti: String,
    /// Whether the token is bound to the upload asked for now.
    pub bound: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real proof-of-possession vector of the public AMO server's tests.
    #[test]
    fn the_public_clients_vector_verifies_and_binds_its_user() {
        let vector: Value =
            serde_json::from_str(include_str!("../../tests/vectors/amo-auth.json")).unwrap();
        let text = |field: &str| vector[field].as_str().unwrap().to_owned();
        let key = PublicKey::parse(&text("public_key_hex")).unwrap();
        let signature = TokenSignature::parse(&text("signature_rs_hex")).unwrap();
        key.verify(&text("token"), &signature).unwrap();
        assert_eq!(key.address(), Address::parse(&text("address")).unwrap());
        let user = vector["payload"]["user"].as_str().unwrap();
        assert_eq!(key.address(), Address::parse(user).unwrap());

        // One flipped bit of the token breaks it.
        let mut forged = text("token");
        forged.replace_range(0..1, "f");
        assert!(key.verify(&forged, &signature).is_err());
    }
}
