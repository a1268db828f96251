//! The bounded JSON body of a v1 upload.
//!
//! poem's `Json` reads any amount of data; this payload reads at most the
//! configured limit (413 past it, before the rest is read) and keeps the raw
//! bytes, so the hex `data` can be decoded without an intermediate copy.

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use poem::{Request, RequestBody, Result, http::StatusCode};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use super::parcels_v1::V1UploadRequest;

/// The most bytes a v1 upload body may have. Put in the route's data.
#[derive(Debug, Clone, Copy)]
pub struct V1BodyLimit(pub u64);

/// How long a v1 upload body may send nothing (`AMO_BODY_IDLE_TIMEOUT_SECS`,
/// as for v2). Put in the route's data.
#[derive(Debug, Clone, Copy)]
pub struct V1BodyIdleTimeout(pub std::time::Duration);

/// A v1 upload body: JSON (`V1UploadRequest`), read whole up to the limit.
pub struct V1UploadBody(pub Bytes);

fn too_large(limit: u64) -> poem::Error {
    poem::Error::from_string(
        format!(
            "the body is over {limit} bytes, the v1 limit; upload large parcels with \
             POST /api/v2/parcels, which streams"
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

impl Payload for V1UploadBody {
    const CONTENT_TYPE: &'static str = "application/json; charset=utf-8";

    fn check_content_type(content_type: &str) -> bool {
        matches!(content_type.parse::<mime::Mime>(), Ok(mime)
            if mime.type_() == "application" && mime.subtype() == "json")
    }

    fn schema_ref() -> MetaSchemaRef {
        V1UploadRequest::schema_ref()
    }

    fn register(registry: &mut Registry) {
        V1UploadRequest::register(registry);
    }
}

impl ParsePayload for V1UploadBody {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> Result<Self> {
        let limit = request
            .data::<V1BodyLimit>()
            .map(|limit| limit.0)
            .unwrap_or(u64::MAX);
        let declared = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit));
        }
        let idle = request
            .data::<V1BodyIdleTimeout>()
            .map(|idle| idle.0)
            .unwrap_or(std::time::Duration::MAX);
        let mut stream = body.take()?.into_bytes_stream();
        let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        while let Some(chunk) = tokio::time::timeout(idle, stream.try_next())
            .await
            .map_err(|_| {
                poem::Error::from_string(
                    format!(
                        "the body sent nothing for {} s; the upload is abandoned",
                        idle.as_secs()
                    ),
                    StatusCode::BAD_REQUEST,
                )
            })?
            .map_err(|err| {
                poem::Error::from_string(
                    format!("reading the body: {err}"),
                    StatusCode::BAD_REQUEST,
                )
            })?
        {
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(too_large(limit));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Self(buffer.freeze()))
    }
}

impl_apirequest_for_payload!(V1UploadBody);
