//! The HTTP API: one file per resource. Handlers stay thin: they parse the
//! request into domain types, call [`crate::parcels`] or [`crate::auth`], and
//! shape the answer.

pub mod auth;
pub mod body;
pub mod bounded;
pub mod health;
pub mod parcels_v1;
pub mod parcels_v2;
pub mod types;

use poem_openapi::{Object, Tags, param::Header};

use crate::{auth::ProofHeaders, domain::ParcelId};

/// The groups of operations in the spec.
#[derive(Tags)]
pub enum ApiTags {
    /// One-time tokens for upload, download and remove.
    Auth,
    /// Parcels in the public AMO clients' JSON-and-hex format (bounded size).
    ParcelsV1,
    /// Parcels as raw bodies, streamed: any size, memory flat.
    ParcelsV2,
    /// Liveness and readiness, for load balancers and Kubernetes.
    Health,
}

/// Borrows the three proof headers of a request.
pub(crate) fn proof<'a>(
    token: &'a Header<Option<String>>,
    public_key: &'a Header<Option<String>>,
    signature: &'a Header<Option<String>>,
) -> ProofHeaders<'a> {
    ProofHeaders {
        token: token.0.as_deref(),
        public_key: public_key.0.as_deref(),
        signature: signature.0.as_deref(),
    }
}

/// `{"id": …}`: the id of a stored parcel.
#[derive(Debug, Clone, Object)]
pub struct ParcelIdBody {
    /// The parcel id: 8 hex digits of storage id, then the SHA-256 of the
    /// body, upper case.
    pub id: ParcelId,
}
