//! The HTTP API: one file per resource. Handlers stay thin: they parse the
//! request into domain types, call [`crate::parcels`] or [`crate::auth`], and
//! shape the answer.

pub mod auth;
pub mod body;
pub mod bounded;
pub mod client;
pub mod headers;
pub mod health;
pub mod parcels_v1;
pub mod parcels_v2;
pub mod proof;
pub mod spec;
pub mod tus;
pub mod types;
pub mod uploads;
pub mod v1_answer;

use poem_openapi::{Object, Tags};

use crate::domain::ParcelId;

/// The groups of operations in the spec.
#[derive(Tags)]
pub enum ApiTags {
    /// One-time tokens for upload, download and remove.
    Auth,
    /// Parcels in the public AMO clients' JSON-and-hex format (bounded size).
    ParcelsV1,
    /// Parcels as raw bodies, streamed: any size, memory flat.
    ParcelsV2,
    /// Resumable uploads: the tus 1.0.0 protocol, with proof of possession
    /// on every request.
    Uploads,
    /// Liveness and readiness, for load balancers and Kubernetes.
    Health,
}

/// `{"id": …}`: the id of a stored parcel.
#[derive(Debug, Clone, Object)]
pub struct ParcelIdBody {
    /// The parcel id: 8 hex digits of storage id, then the SHA-256 of the
    /// body, upper case.
    pub id: ParcelId,
}
