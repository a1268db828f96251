//! v1 parcels: the JSON-and-hex format of the public AMO clients (docs/protocol.md, "v1").

use std::{borrow::Cow, collections::BTreeMap};

use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, Union,
    param::{Path, Query},
    payload::Json,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    ApiTags, ParcelIdBody,
    body::V1UploadBody,
    client::Client,
    proof::{OptionalProof, Proof},
    v1_answer::V1Answer,
};
use crate::{
    auth::Authorizer,
    domain::{Address, OperationKind, ParcelId},
    error::{ApiResult, Error},
    parcels::Parcels,
    storage::{PutOutcome, StoredParcel},
};

/// A v1 upload.
#[derive(Debug, Clone, Object)]
pub struct V1UploadRequest {
    /// The owner's address; must be the token's user.
    pub owner: Address,
    /// A JSON object. An `owner` in it must be the token's user; the stored
    /// metadata always carries `owner`.
    pub metadata: Option<BTreeMap<String, Value>>,
    /// The parcel body as hex (any case).
    #[oai(validator(pattern = "^([0-9A-Fa-f]{2})*$"))]
    pub data: String,
}

/// The same, as parsed from the raw body without copying `data`.
#[derive(Deserialize)]
struct V1UploadWire<'a> {
    #[serde(borrow)]
    owner: Cow<'a, str>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

// Answered streamed (super::v1_answer); this type gives the spec its shape.
/// A whole parcel.
#[derive(Debug, Clone, Object)]
pub struct V1Parcel {
    /// Parcel id.
    pub id: ParcelId,
    /// Owner's address.
    pub owner: Address,
    /// Metadata (carries `owner`).
    pub metadata: Value,
    /// The body as upper-case hex.
    pub data: String,
}

/// A parcel's id, owner and metadata (`?key=metadata`).
#[derive(Debug, Clone, Object)]
pub struct V1ParcelMetadata {
    /// Parcel id.
    pub id: ParcelId,
    /// Owner's address.
    pub owner: Address,
    /// Metadata (carries `owner`).
    pub metadata: Value,
}

/// A parcel's owner (`?key=owner`).
#[derive(Debug, Clone, Object)]
pub struct V1ParcelOwner {
    /// Owner's address.
    pub owner: Address,
}

/// What `?key=` selects: a part of the parcel that needs no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum V1Key {
    /// The id, owner and metadata.
    Metadata,
    /// The owner only.
    Owner,
}

/// What `GET /api/v1/parcels/{id}` answers, depending on `key`.
#[derive(Debug, Clone, Union)]
pub enum V1ParcelView {
    /// No `key`: the whole parcel (needs a download token).
    Parcel(V1Parcel),
    /// `key=metadata`.
    Metadata(V1ParcelMetadata),
    /// `key=owner`.
    Owner(V1ParcelOwner),
}

/// Answers of a v1 upload.
#[derive(ApiResponse)]
pub enum V1UploadResponse {
    /// A new parcel was stored.
    #[oai(status = 201)]
    Created(Json<ParcelIdBody>),
    /// The caller already stores this content; nothing changed.
    #[oai(status = 200)]
    AlreadyStored(Json<ParcelIdBody>),
}

/// Answers of a v1 read.
#[derive(ApiResponse)]
pub enum V1GetResponse {
    /// The parcel, its metadata or its owner.
    #[oai(status = 200)]
    Found(V1Answer),
}

/// Answers of a v1 remove.
#[derive(ApiResponse)]
pub enum V1RemoveResponse {
    /// The parcel is gone.
    #[oai(status = 204)]
    Removed,
}

/// The v1 parcel endpoints.
pub struct ParcelsV1Api {
    authorizer: Authorizer,
    parcels: Parcels,
}

impl ParcelsV1Api {
    /// The endpoints over `authorizer` and `parcels`.
    pub fn new(authorizer: Authorizer, parcels: Parcels) -> Self {
        Self {
            authorizer,
            parcels,
        }
    }
}

fn metadata_view(id: &ParcelId, parcel: &StoredParcel) -> V1ParcelMetadata {
    V1ParcelMetadata {
        id: id.clone(),
        owner: parcel.owner.clone(),
        metadata: parcel.metadata.to_value(),
    }
}

#[OpenApi(tag = "ApiTags::ParcelsV1")]
impl ParcelsV1Api {
    /// Upload a parcel (JSON, hex)
    ///
    /// Stores `data` for `owner`, who must be the token's user. The id is the
    /// storage id followed by the SHA-256 of the body. If the token declares
    /// a `hash`, the body must match it (422 otherwise). Uploading content the
    /// caller already stores answers 200; content another account stores
    /// answers 409. The body is bounded (413 past the limit): use v2 for large
    /// parcels.
    #[oai(
        path = "/api/v1/parcels",
        method = "post",
        operation_id = "upload_parcel_v1"
    )]
    async fn upload(
        &self,
        body: V1UploadBody,
        client: Client,
        /// The one-time JWT from `/auth`, for operation `upload`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<V1UploadResponse> {
        // Nothing of the body is read before the proof passed and a slot,
        // with the memory of the body's first MiB, is taken: a stranger
        // cannot make this replica hold a body. The memory grows as the
        // body arrives, within the replica's budget
        // (AMO_V1_UPLOAD_MEMORY_BYTES) and the client's share of it.
        let admitted = async {
            let slot = self.parcels.upload_slot(client.0)?;
            let memory = self.parcels.v1_upload_memory(client.0)?;
            let auth = self
                .authorizer
                .authorize(proof.headers(), OperationKind::Upload, None)
                .await?;
            Ok::<_, crate::error::ErrorResponse>((slot, memory, auth))
        }
        .await;
        let (slot, mut memory, auth) = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                body.refuse();
                return Err(err);
            }
        };
        let parsed = async {
            let raw = body.read(&mut memory).await?;
            let limit = self.parcels.limits().whole_body_max_bytes;
            let wire: V1UploadWire = serde_json::from_slice(&raw).map_err(|err| {
                Error::BadRequest(format!("the body is not a valid v1 upload: {err}"))
            })?;
            let owner = Address::parse(&wire.owner)
                .map_err(|err| Error::BadRequest(format!("owner: {err}")))?;
            if wire.data.len() as u64 > limit.saturating_mul(2) {
                return Err(Error::TooLarge(format!(
                    "the data is over {limit} bytes, the v1 limit; use POST /api/v2/parcels"
                )));
            }
            let data = hex::decode(wire.data.as_bytes())
                .map_err(|err| Error::BadRequest(format!("data must be hex: {err}")))?;
            Ok((owner, wire.metadata, data))
        }
        .await;
        let (owner, metadata, data) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                auth.failed().await;
                return Err(err.into());
            }
        };
        let (id, outcome) = self
            .parcels
            .upload_whole(
                auth,
                slot.join(memory.into_slot()),
                owner,
                metadata,
                data.into(),
            )
            .await?;
        crate::audit::parcel(&id);
        let body = Json(ParcelIdBody { id });
        Ok(match outcome {
            PutOutcome::Created => V1UploadResponse::Created(body),
            PutOutcome::AlreadyExists => V1UploadResponse::AlreadyStored(body),
        })
    }

    /// Download or inspect a parcel
    ///
    /// Without `key`: the whole parcel, with a download token, for its owner
    /// or, when a blockchain RPC endpoint is configured, for an account the
    /// AMO blockchain grants it to (its `/usage` query; 502 if the node cannot
    /// answer, and the token stays usable). With `key=metadata` or
    /// `key=owner`: what the key names, without a token.
    #[oai(
        path = "/api/v1/parcels/:id",
        method = "get",
        operation_id = "get_parcel_v1"
    )]
    async fn get(
        &self,
        /// The parcel id.
        id: Path<ParcelId>,
        /// `metadata` or `owner` to inspect without a token.
        key: Query<Option<V1Key>>,
        client: Client,
        /// The one-time JWT from `/auth`, for operation `download`; none
        /// with `key`.
        #[oai(name = "X-Auth-Token")]
        proof: OptionalProof,
    ) -> ApiResult<V1GetResponse> {
        let id = id.0;
        let answer = match key.0 {
            Some(V1Key::Metadata) => V1Answer::Part(V1ParcelView::Metadata(metadata_view(
                &id,
                &self.parcels.inspect(&id).await?,
            ))),
            Some(V1Key::Owner) => V1Answer::Part(V1ParcelView::Owner(V1ParcelOwner {
                owner: self.parcels.inspect(&id).await?.owner,
            })),
            None => {
                let slot = self.parcels.download_slot(client.0)?;
                let auth = self
                    .authorizer
                    .authorize(proof.headers(), OperationKind::Download, Some(&id))
                    .await?;
                let download = self.parcels.download_whole(auth, slot, &id).await?;
                V1Answer::Whole {
                    head: metadata_view(&id, &download.parcel),
                    size: download.parcel.size,
                    body: download.body,
                }
            }
        };
        Ok(V1GetResponse::Found(answer))
    }

    /// Remove a parcel
    ///
    /// Deletes a parcel of the caller, with a remove token, under the
    /// parcel's write lock (as a commit holds it): the owner checked is the
    /// owner deleted. 409 `upload_in_progress` when the lock stays held.
    #[oai(
        path = "/api/v1/parcels/:id",
        method = "delete",
        operation_id = "remove_parcel_v1"
    )]
    async fn remove(
        &self,
        /// The parcel id.
        id: Path<ParcelId>,
        /// The one-time JWT from `/auth`, for operation `remove`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<V1RemoveResponse> {
        let id = id.0;
        let auth = self
            .authorizer
            .authorize(proof.headers(), OperationKind::Remove, Some(&id))
            .await?;
        self.parcels.remove(auth, &id).await?;
        Ok(V1RemoveResponse::Removed)
    }
}
