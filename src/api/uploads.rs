//! Resumable uploads: the tus 1.0.0 protocol at `/api/v2/uploads`
//! (docs/protocol.md, "Resumable uploads"), with the extensions `creation`,
//! `termination` and `expiration`. Every request carries the proof headers
//! of one upload token; after creation, the signature covers the request
//! ([`UploadRequest`]), and a `PATCH` spends the upload's sequence, so a
//! captured request cannot be served twice. The state lives in
//! [`crate::parcels`].

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use futures_util::TryStreamExt;
use poem::Request;
use poem_openapi::{
    ApiResponse, OpenApi,
    param::{Header, Path},
    payload::Json,
};
use serde_json::Value;

use super::{
    ApiTags,
    body::drain_refused_body,
    client::Client,
    headers::sent_once,
    proof::Proof,
    tus::{OffsetOctetStream, TusResumable},
};
use crate::{
    auth::{Authorizer, Bound, bound::UploadRequest},
    domain::{OperationKind, ParcelMetadata},
    error::{ApiResult, Error, ErrorBody},
    parcels::{Parcels, UploadStatus, valid_upload_id},
};

/// The tus version this service speaks.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions this service supports.
pub const TUS_EXTENSIONS: &str = "creation,termination,expiration";
/// Where uploads are created; an upload's URL is this, `/`, its id.
pub const UPLOADS_PATH: &str = "/api/v2/uploads";

/// Answers of `OPTIONS`.
#[derive(ApiResponse)]
pub enum TusOptionsResponse {
    /// What the server supports.
    #[oai(status = 204)]
    Supported(
        /// `1.0.0`.
        #[oai(header = "Tus-Resumable")]
        String,
        /// `1.0.0`: the versions supported.
        #[oai(header = "Tus-Version")]
        String,
        /// `creation,termination,expiration`.
        #[oai(header = "Tus-Extension")]
        String,
        /// The largest `Upload-Length` taken, in bytes.
        #[oai(header = "Tus-Max-Size")]
        u64,
    ),
    /// The request head is too large (`headers_too_large`): the HTTP layer
    /// answers it before this operation runs, as on every route.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
}

/// Answers of a creation.
#[derive(ApiResponse)]
pub enum TusCreateResponse {
    /// The upload exists; send its bytes to `Location` with `PATCH`. (An
    /// empty body is stored at once: `X-Parcel-Id` names it.)
    #[oai(status = 201)]
    Created(
        /// The upload's URL: `/api/v2/uploads/<upload id>`.
        #[oai(header = "Location")]
        String,
        /// When the upload expires (an HTTP date).
        #[oai(header = "Upload-Expires")]
        String,
        /// `1.0.0`.
        #[oai(header = "Tus-Resumable")]
        String,
        /// The parcel id, once the parcel is stored.
        #[oai(header = "X-Parcel-Id")]
        Option<String>,
        /// `0`: the `X-Upload-Sequence` of the first `PATCH`.
        #[oai(header = "X-Upload-Sequence")]
        u64,
    ),
}

/// Answers of `HEAD`.
#[derive(ApiResponse)]
pub enum TusHeadResponse {
    /// Where the upload stands.
    #[oai(status = 200)]
    Found(
        /// The bytes stored so far: the next `PATCH` starts there.
        #[oai(header = "Upload-Offset")]
        u64,
        /// The upload's whole length.
        #[oai(header = "Upload-Length")]
        u64,
        /// When the upload expires (an HTTP date).
        #[oai(header = "Upload-Expires")]
        String,
        /// `no-store`.
        #[oai(header = "Cache-Control")]
        String,
        /// `1.0.0`.
        #[oai(header = "Tus-Resumable")]
        String,
        /// The parcel id, once the parcel is stored.
        #[oai(header = "X-Parcel-Id")]
        Option<String>,
        /// The `X-Upload-Sequence` the next `PATCH` sends (and signs).
        #[oai(header = "X-Upload-Sequence")]
        u64,
    ),
}

/// Answers of `PATCH`.
#[derive(ApiResponse)]
pub enum TusPatchResponse {
    /// The bytes are stored; the last ones stored the parcel.
    #[oai(status = 204)]
    Stored(
        /// The bytes stored so far.
        #[oai(header = "Upload-Offset")]
        u64,
        /// When the upload expires (an HTTP date).
        #[oai(header = "Upload-Expires")]
        String,
        /// `1.0.0`.
        #[oai(header = "Tus-Resumable")]
        String,
        /// The parcel id, once the parcel is stored.
        #[oai(header = "X-Parcel-Id")]
        Option<String>,
        /// The `X-Upload-Sequence` the next `PATCH` sends (and signs).
        #[oai(header = "X-Upload-Sequence")]
        u64,
    ),
}

/// Answers of `DELETE`.
#[derive(ApiResponse)]
pub enum TusDeleteResponse {
    /// The upload and everything staged for it are gone.
    #[oai(status = 204)]
    Terminated(
        /// `1.0.0`.
        #[oai(header = "Tus-Resumable")]
        String,
    ),
}

/// The tus endpoints.
pub struct UploadsApi {
    authorizer: Authorizer,
    parcels: Parcels,
}

impl UploadsApi {
    /// The endpoints over `authorizer` and `parcels`.
    pub fn new(authorizer: Authorizer, parcels: Parcels) -> Self {
        Self {
            authorizer,
            parcels,
        }
    }

    /// The upload of a path, and the proof checked for `request` on it.
    async fn bound(
        &self,
        id: &str,
        proof: &Proof,
        request: UploadRequest,
    ) -> Result<(String, Bound), Error> {
        // Check 1 of the order of checks comes first: without the proof
        // headers, 401, whatever the path names.
        proof.headers().present()?;
        let upload = upload_id(id)?;
        let bound = self
            .authorizer
            .authorize_bound(proof.headers(), &upload, request)
            .await?;
        Ok((upload, bound))
    }
}

#[OpenApi(tag = "ApiTags::Uploads")]
impl UploadsApi {
    /// What the tus server supports
    ///
    /// tus 1.0.0 discovery: the version, the extensions (`creation`,
    /// `termination`, `expiration`) and the largest upload. Needs no token.
    #[oai(
        path = "/api/v2/uploads",
        method = "options",
        operation_id = "tus_options"
    )]
    async fn options(&self) -> TusOptionsResponse {
        TusOptionsResponse::Supported(
            TUS_VERSION.into(),
            TUS_VERSION.into(),
            TUS_EXTENSIONS.into(),
            self.parcels.max_upload_bytes(),
        )
    }

    /// Create a resumable upload (tus `creation`)
    ///
    /// Needs an upload token that declares the whole body's SHA-256, and
    /// passes every check of the order of checks (the signature over the
    /// token, as for any operation). The token is not used up: it is bound
    /// to the new upload, for the upload's lifetime, and serves every later
    /// request on it (and nothing else), each signed over the request.
    /// Answers the upload's URL in `Location`. 429 `too_many_uploads`: the
    /// account or the client holds its cap of unfinished uploads (the token
    /// stays usable).
    #[oai(path = "/api/v2/uploads", method = "post", operation_id = "tus_create")]
    async fn create(
        &self,
        /// The body's whole length in bytes.
        #[oai(name = "Upload-Length")]
        length: Header<Option<String>>,
        /// tus metadata: `key base64value` pairs separated by commas. The
        /// key `metadata` carries the base64 of the parcel's metadata JSON
        /// object, with the rules of `X-Parcel-Metadata`; other keys are
        /// ignored.
        /// Sent at most once, in ASCII (else 400).
        #[oai(name = "Upload-Metadata")]
        _upload_metadata: Header<Option<String>>,
        /// `1.0.0`: required (else 412, with `Tus-Version`).
        #[oai(name = "Tus-Resumable")]
        _tus: Header<TusResumable>,
        /// The one-time JWT from `/auth`, for operation `upload` with `hash`.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
        client: Client,
        request: &Request,
    ) -> ApiResult<TusCreateResponse> {
        let auth = self
            .authorizer
            .authorize(proof.headers(), OperationKind::Upload, None)
            .await?;
        let parsed = parse_length(length.0.as_deref()).and_then(|length| {
            // The raw header: one sent twice or not in ASCII is refused,
            // never dropped (poem's `Header` would read it as absent).
            let refusal = "Upload-Metadata must be sent once, in ASCII (tus 1.0.0)";
            let metadata = sent_once(request, "upload-metadata", refusal)?
                .map(parse_upload_metadata)
                .transpose()?
                .flatten();
            Ok((length, metadata))
        });
        let (length, metadata) = match parsed {
            Ok(parsed) => parsed,
            Err(err) => {
                auth.failed().await;
                return Err(err.into());
            }
        };
        let status = self
            .parcels
            .create_upload(auth, client.0, length, metadata)
            .await?;
        Ok(TusCreateResponse::Created(
            format!("{UPLOADS_PATH}/{}", status.upload),
            http_date(status.expires),
            TUS_VERSION.into(),
            status.parcel.as_ref().map(ToString::to_string),
            status.sequence,
        ))
    }

    /// Where a resumable upload stands (tus `HEAD`)
    ///
    /// `Upload-Offset` is where the next `PATCH` starts, and
    /// `X-Upload-Sequence` the sequence it sends. Needs the token bound to
    /// this upload, with its key, and `X-Signature` over
    /// `HEAD\n<upload id>\n\n\n<token>` (the JWT's own `exp` no longer
    /// matters); any other token or account gets 404. Once the parcel is
    /// stored, `X-Parcel-Id` names it, until the upload expires.
    #[oai(
        path = "/api/v2/uploads/:id",
        method = "head",
        operation_id = "tus_head"
    )]
    async fn head(
        &self,
        /// The upload id (from `Location`).
        id: Path<String>,
        /// `1.0.0`: required (else 412, with `Tus-Version`).
        #[oai(name = "Tus-Resumable")]
        _tus: Header<TusResumable>,
        /// The JWT bound to this upload.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<TusHeadResponse> {
        let (upload, bound) = self.bound(&id.0, &proof, UploadRequest::Head).await?;
        let status = self.parcels.upload_status(&bound, &upload).await?;
        Ok(TusHeadResponse::Found(
            status.offset,
            status.length,
            http_date(status.expires),
            "no-store".into(),
            TUS_VERSION.into(),
            status.parcel.as_ref().map(ToString::to_string),
            status.sequence,
        ))
    }

    /// Send bytes of a resumable upload (tus `PATCH`)
    ///
    /// The body (`Content-Type: application/offset+octet-stream`) goes at
    /// `Upload-Offset`, which must be where the upload stands (else 409
    /// `offset_mismatch`; ask `HEAD`). `X-Upload-Sequence` must be the
    /// upload's sequence (`HEAD` says it, and each answer gives the next
    /// one), else 409 `stale_request` and nothing changes; `X-Signature`
    /// signs `PATCH\n<upload id>\n<Upload-Offset>\n<X-Upload-Sequence>\n<token>`.
    /// The sequence is spent before any byte is read, so the same request
    /// is never served twice. A body past `Upload-Length` answers
    /// 413. A body cut short keeps the parts stored whole and, when it is
    /// chunked or within the last part it declares, the bytes that arrived
    /// past them: `HEAD` says how much. Another `Content-Type` answers 415
    /// (nothing spent). The
    /// `PATCH` that reaches `Upload-Length` checks the SHA-256 and stores
    /// the parcel (`X-Parcel-Id`), using up the token; on a mismatch it
    /// answers 422 and everything staged is deleted. 423 `upload_locked`:
    /// another request is writing to this upload.
    #[oai(
        path = "/api/v2/uploads/:id",
        method = "patch",
        operation_id = "tus_patch"
    )]
    // Each header tus and the proof need is a parameter of its own, so
    // that the spec names it.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        /// The upload id (from `Location`).
        id: Path<String>,
        body: OffsetOctetStream,
        /// Where this body starts in the upload.
        #[oai(name = "Upload-Offset")]
        offset: Header<Option<String>>,
        /// The upload's sequence, as `HEAD` or the last answer gave it.
        #[oai(name = "X-Upload-Sequence")]
        sequence: Header<Option<String>>,
        /// `1.0.0`: required (else 412, with `Tus-Version`).
        #[oai(name = "Tus-Resumable")]
        _tus: Header<TusResumable>,
        request: &Request,
        /// The JWT bound to this upload.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<TusPatchResponse> {
        let stream = Box::pin(body.0.into_bytes_stream().map_err(std::io::Error::other));
        let admitted = async {
            proof.headers().present()?;
            upload_id(&id.0)?;
            let offset = number(
                offset.0.as_deref(),
                "Upload-Offset must be a number of bytes",
            )?;
            let sequence = number(
                sequence.0.as_deref(),
                "X-Upload-Sequence must be the upload's sequence (ask HEAD)",
            )?;
            let slot = self.parcels.upload_slot(Client::of(request).0)?;
            let request = UploadRequest::Patch { offset, sequence };
            let (upload, bound) = self.bound(&id.0, &proof, request).await?;
            Ok::<_, Error>((upload, offset, sequence, slot, bound))
        }
        .await;
        let (upload, offset, sequence, _slot, bound) = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                drain_refused_body(stream);
                return Err(err.into());
            }
        };
        let length = request
            .header(poem::http::header::CONTENT_LENGTH)
            .and_then(|value| value.parse::<u64>().ok());
        let (outcome, stream) = self
            .parcels
            .patch_upload(bound, upload, offset, sequence, stream, length)
            .await?;
        match outcome {
            Ok(status) => Ok(patched(&status)),
            Err(err) => {
                drain_refused_body(stream);
                Err(err.into())
            }
        }
    }

    /// End a resumable upload (tus `termination`)
    ///
    /// Deletes the upload, everything staged for it, and the binding of
    /// its token (which is then used up). Needs the token bound to it, and
    /// `X-Signature` over `DELETE\n<upload id>\n\n\n<token>`.
    #[oai(
        path = "/api/v2/uploads/:id",
        method = "delete",
        operation_id = "tus_delete"
    )]
    async fn delete(
        &self,
        /// The upload id (from `Location`).
        id: Path<String>,
        /// `1.0.0`: required (else 412, with `Tus-Version`).
        #[oai(name = "Tus-Resumable")]
        _tus: Header<TusResumable>,
        /// The JWT bound to this upload.
        #[oai(name = "X-Auth-Token")]
        proof: Proof,
    ) -> ApiResult<TusDeleteResponse> {
        let (upload, bound) = self.bound(&id.0, &proof, UploadRequest::Delete).await?;
        self.parcels.terminate_upload(bound, upload).await?;
        Ok(TusDeleteResponse::Terminated(TUS_VERSION.into()))
    }
}

fn patched(status: &UploadStatus) -> TusPatchResponse {
    TusPatchResponse::Stored(
        status.offset,
        http_date(status.expires),
        TUS_VERSION.into(),
        status.parcel.as_ref().map(ToString::to_string),
        status.sequence,
    )
}

/// A header that must be a decimal number.
fn number(text: Option<&str>, refusal: &str) -> Result<u64, Error> {
    text.and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| Error::BadRequest(refusal.into()))
}

/// An upload id from a path; anything else is an unknown upload.
fn upload_id(text: &str) -> Result<String, Error> {
    if valid_upload_id(text) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(Error::UploadNotFound)
    }
}

/// `Upload-Length`: required (this server does not defer lengths).
fn parse_length(text: Option<&str>) -> Result<u64, Error> {
    text.and_then(|text| text.trim().parse::<u64>().ok())
        .ok_or_else(|| Error::BadRequest("Upload-Length must be the body's length in bytes".into()))
}

/// The parcel metadata in a tus `Upload-Metadata`: comma-separated pairs
/// of a key and an optional base64 value; the key `metadata` carries the
/// metadata JSON. Anything malformed is refused, not dropped.
pub fn parse_upload_metadata(text: &str) -> Result<Option<Value>, Error> {
    let malformed = |why: &str| Error::BadRequest(format!("Upload-Metadata is malformed: {why}"));
    let mut keys = Vec::new();
    let mut metadata = None;
    if text.trim().is_empty() {
        return Ok(None);
    }
    for pair in text.split(',') {
        let mut fields = pair.trim().split(' ');
        let key = fields.next().unwrap_or_default();
        let value = fields.next();
        if key.is_empty() || fields.next().is_some() {
            return Err(malformed("each pair is a key, a space and a base64 value"));
        }
        if keys.contains(&key) {
            return Err(malformed("a key is sent twice"));
        }
        keys.push(key);
        let value = value
            .map(|value| base64::engine::general_purpose::STANDARD.decode(value))
            .transpose()
            .map_err(|_| malformed("a value is not base64"))?;
        if key == "metadata" {
            let text = value
                .and_then(|value| String::from_utf8(value).ok())
                .ok_or_else(|| malformed("metadata must be base64 of UTF-8 JSON"))?;
            metadata = Some(ParcelMetadata::parse_offered(&text)?);
        }
    }
    Ok(metadata)
}

/// Unix seconds as an HTTP date.
fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_metadata_carries_the_parcel_metadata_and_refuses_what_is_malformed() {
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let sent = format!("filename {},metadata {}", b64("a.bin"), b64(r#"{"k":1}"#));
        assert_eq!(
            parse_upload_metadata(&sent).unwrap(),
            Some(serde_json::json!({"k": 1}))
        );
        assert_eq!(parse_upload_metadata("is_confidential").unwrap(), None);
        assert_eq!(parse_upload_metadata("").unwrap(), None);
        for bad in [
            "metadata !!!".to_owned(),
            format!("metadata {}", b64("not json")),
            "metadata".to_owned(),
            format!("a {0},a {0}", b64("x")),
            "a b c".to_owned(),
            ",".to_owned(),
        ] {
            assert!(
                matches!(parse_upload_metadata(&bad), Err(Error::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
