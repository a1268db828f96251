//! v2 parcels: raw bodies streamed between the client and S3 (docs/protocol.md, "v2").

use futures_util::TryStreamExt;
use poem::{Body, Request};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path},
    payload::{Binary, Json},
};
use serde_json::Value;

use super::{
    ApiTags, ParcelIdBody, body::drain_refused_body, client::Client, headers::sent_once,
    proof::Proof,
};
use crate::{
    auth::Authorizer,
    domain::{Address, OperationKind, ParcelId, ParcelMetadata},
    error::{ApiResult, Error},
    parcels::Parcels,
    storage::PutOutcome,
};

/// A parcel's id, owner, metadata and size.
#[derive(Debug, Clone, Object)]
pub struct V2ParcelMetadata {
    /// Parcel id.
    pub id: ParcelId,
    /// Owner's address.
    pub owner: Address,
    /// Metadata (carries `owner`).
    pub metadata: Value,
    /// Body size in bytes.
    pub size: u64,
}

/// Answers of a v2 upload.
#[derive(ApiResponse)]
pub enum V2UploadResponse {
    /// A new parcel was stored.
    #[oai(status = 201)]
    Created(Json<ParcelIdBody>),
    /// The caller already stores this content; nothing changed (the stored
    /// metadata is kept).
    #[oai(status = 200)]
    AlreadyStored(Json<ParcelIdBody>),
}

/// Answers of a v2 download.
#[derive(ApiResponse)]
pub enum V2DownloadResponse {
    /// The whole body.
    #[oai(status = 200)]
    Whole(
        Binary<Body>,
        /// The body's length.
        #[oai(header = "Content-Length")]
        u64,
        /// `"<sha256 hex>"`: the content hash.
        #[oai(header = "ETag")]
        String,
        /// `bytes`.
        #[oai(header = "Accept-Ranges")]
        String,
    ),
    /// The requested range.
    #[oai(status = 206)]
    Partial(
        Binary<Body>,
        /// The range's length.
        #[oai(header = "Content-Length")]
        u64,
        /// `"<sha256 hex>"`: the content hash.
        #[oai(header = "ETag")]
        String,
        /// `bytes`.
        #[oai(header = "Accept-Ranges")]
        String,
        /// `bytes <first>-<last>/<size>`.
        #[oai(header = "Content-Range")]
        String,
    ),
}

/// Answers of a v2 inspect.
#[derive(ApiResponse)]
pub enum V2MetadataResponse {
    /// The parcel's id, owner, metadata and size.
    #[oai(status = 200)]
    Found(Json<V2ParcelMetadata>),
}

/// Answers of a v2 remove.
#[derive(ApiResponse)]
pub enum V2RemoveResponse {
    /// The parcel is gone.
    #[oai(status = 204)]
    Removed,
}

/// The v2 parcel endpoints.
pub struct ParcelsV2Api {
    authorizer: Authorizer,
    parcels: Parcels,
}

impl ParcelsV2Api {
    /// The endpoints over `authorizer` and `parcels`.
    pub fn new(authorizer: Authorizer, parcels: Parcels) -> Self {
        Self {
            authorizer,
            parcels,
        }
    }
}

#[OpenApi(tag = "ApiTags::ParcelsV2")]
impl ParcelsV2Api {
    /// Upload a parcel (streamed)
    ///
    /// Streams the raw body to storage. The upload token must declare the
    /// body's SHA-256 (`{"name":"upload","hash":…}`); the body is hashed as
    /// it arrives and the parcel becomes visible only if it matches (422
    /// otherwise, and nothing is stored). Any size works, with or without
    /// `Content-Length`. Content the caller already stores answers 200;
    /// content another account stores answers 409.
    #[oai(
        path = "/api/v2/parcels",
        method = "post",
        operation_id = "upload_parcel_v2"
    )]
    async fn upload(
        &self,
        body: Binary<Body>,
        /// Optional metadata: a JSON object in ASCII (other characters as
        /// `\u` escapes). Absent, the metadata is `{"owner": <user>}`.
        #[oai(name = "X-Parcel-Metadata")]
        _metadata: Header<Option<String>>,
        request: &Request,
        client: Client,
        /// The one-time JWT from `/auth`, for operation `upload` with `hash`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<V2UploadResponse> {
        let stream = Box::pin(body.0.into_bytes_stream().map_err(std::io::Error::other));
        let admitted: ApiResult<_> = async {
            let slot = self.parcels.upload_slot(client.0)?;
            let auth = self
                .authorizer
                .authorize(proof.headers(), OperationKind::Upload, None)
                .await?;
            // Metadata is read after the token: a request that may not upload
            // learns nothing from it, and malformed metadata (400) leaves the
            // token usable, as every refusal after the claim does. poem reads a
            // header value that is not visible ASCII as absent, so the raw
            // header is checked first: sent metadata is never dropped.
            match offered_metadata(request) {
                Ok(metadata) => Ok((slot, auth, metadata)),
                Err(err) => {
                    auth.failed().await;
                    Err(err.into())
                }
            }
        }
        .await;
        let (slot, auth, metadata) = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                drain_refused_body(stream);
                return Err(err);
            }
        };
        // Sizes the first buffer when known; chunked bodies have none.
        let length = request
            .header(poem::http::header::CONTENT_LENGTH)
            .and_then(|value| value.parse::<u64>().ok());
        let (outcome, stream) = self
            .parcels
            .upload_stream(auth, slot, metadata, stream, length)
            .await?;
        match outcome {
            Ok((id, outcome)) => {
                crate::audit::parcel(&id);
                let body = Json(ParcelIdBody { id });
                Ok(match outcome {
                    PutOutcome::Created => V2UploadResponse::Created(body),
                    PutOutcome::AlreadyExists => V2UploadResponse::AlreadyStored(body),
                })
            }
            Err(err) => {
                drain_refused_body(stream);
                Err(err.into())
            }
        }
    }

    /// Download a parcel (streamed)
    ///
    /// Streams the body, with a download token, to its owner or, when a
    /// blockchain RPC endpoint is configured, to an account the AMO
    /// blockchain grants it to (502 if the node cannot answer; the token
    /// stays usable). A single `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`)
    /// answers 206; a range outside the body answers 416; several ranges or
    /// another unit answer the whole body. Each request, ranged or not, uses one token.
    #[oai(
        path = "/api/v2/parcels/:id",
        method = "get",
        operation_id = "download_parcel_v2"
    )]
    async fn download(
        &self,
        /// The parcel id.
        id: Path<ParcelId>,
        /// An optional single byte range.
        #[oai(name = "Range")]
        range: Header<Option<String>>,
        client: Client,
        /// The one-time JWT from `/auth`, for operation `download`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<V2DownloadResponse> {
        let id = id.0;
        let slot = self.parcels.download_slot(client.0)?;
        let auth = self
            .authorizer
            .authorize(proof.headers(), OperationKind::Download, Some(&id))
            .await?;
        let download = self
            .parcels
            .download_stream(auth, slot, &id, range.0)
            .await?;
        let etag = format!("\"{}\"", download.hash);
        let body = Binary(Body::from_bytes_stream(download.body));
        let accept = "bytes".to_owned();
        Ok(match download.range {
            None => V2DownloadResponse::Whole(body, download.parcel.size, etag, accept),
            Some((first, last)) => V2DownloadResponse::Partial(
                body,
                last - first + 1,
                etag,
                accept,
                format!("bytes {first}-{last}/{}", download.parcel.size),
            ),
        })
    }

    /// Inspect a parcel
    ///
    /// The parcel's id, owner, metadata and size. Needs no token.
    #[oai(
        path = "/api/v2/parcels/:id/metadata",
        method = "get",
        operation_id = "inspect_parcel_v2"
    )]
    async fn metadata(
        &self,
        /// The parcel id.
        id: Path<ParcelId>,
    ) -> ApiResult<V2MetadataResponse> {
        let id = id.0;
        let parcel = self.parcels.inspect(&id).await?;
        Ok(V2MetadataResponse::Found(Json(V2ParcelMetadata {
            id,
            owner: parcel.owner,
            metadata: parcel.metadata.to_value(),
            size: parcel.size,
        })))
    }

    /// Remove a parcel
    ///
    /// Deletes a parcel of the caller, with a remove token, under the
    /// parcel's write lock (as a commit holds it): the owner checked is the
    /// owner deleted. 409 `upload_in_progress` when the lock stays held.
    #[oai(
        path = "/api/v2/parcels/:id",
        method = "delete",
        operation_id = "remove_parcel_v2"
    )]
    async fn remove(
        &self,
        /// The parcel id.
        id: Path<ParcelId>,
        /// The one-time JWT from `/auth`, for operation `remove`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<V2RemoveResponse> {
        let id = id.0;
        let auth = self
            .authorizer
            .authorize(proof.headers(), OperationKind::Remove, Some(&id))
            .await?;
        self.parcels.remove(auth, &id).await?;
        Ok(V2RemoveResponse::Removed)
    }
}

/// The metadata an upload offers in `X-Parcel-Metadata`, if any. A header
/// sent twice, or not in ASCII, is refused rather than dropped.
fn offered_metadata(request: &Request) -> Result<Option<Value>, Error> {
    let refusal = "X-Parcel-Metadata must be sent once, as ASCII JSON (other characters as \\u \
                   escapes)";
    sent_once(request, "x-parcel-metadata", refusal)?
        .map(ParcelMetadata::parse_offered)
        .transpose()
        .map_err(Error::from)
}
