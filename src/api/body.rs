//! Upload bodies: the bounded JSON body of a v1 upload, and what is left of
//! a refused upload's body (any version), drained so that the client reads
//! the refusal.
//!
//! poem's `Json` reads any amount of data before the handler runs; this
//! payload reads nothing until the handler asks, after the proof headers
//! passed and an upload slot was taken. Then it reads at most the
//! configured limit (413 past it, before the rest is read), within the idle
//! timeout and an overall deadline, and keeps the raw bytes, so the hex
//! `data` can be decoded without an intermediate copy. A declared
//! `Content-Length` over the limit answers 413 at once, unread.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::TryStreamExt;
use poem::{Body, IntoResponse, Request, RequestBody, Result};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};

use super::parcels_v1::V1UploadRequest;
use crate::{
    error::{Error, ErrorResponse},
    parcels::V1Memory,
};

/// The most bytes a v1 upload body may have. Put in the route's data.
#[derive(Debug, Clone, Copy)]
pub struct V1BodyLimit(pub u64);

/// How long a v1 upload body may send nothing (`AMO_BODY_IDLE_TIMEOUT_SECS`,
/// as for v2), and how long it may take in all (`AMO_BODY_DEADLINE_SECS`).
/// Put in the route's data.
#[derive(Debug, Clone, Copy)]
pub struct V1BodyTimeouts {
    /// The longest silence.
    pub idle: Duration,
    /// The longest whole body.
    pub deadline: Duration,
}

/// The most address space a v1 body's buffer asks for up front (a route
/// without a [`V1BodyLimit`] has no limit to size it by).
const MAX_RESERVED: u64 = 1 << 30;

/// A v1 upload body: JSON (`V1UploadRequest`), not read yet.
pub struct V1UploadBody {
    body: Body,
    limit: u64,
    declared: Option<u64>,
    timeouts: V1BodyTimeouts,
}

fn too_large(limit: u64) -> Error {
    Error::TooLarge(format!(
        "the body is over {limit} bytes, the v1 limit; upload large parcels with \
         POST /api/v2/parcels, which streams"
    ))
}

impl V1UploadBody {
    /// Leaves the body of a refused upload unread: what is left of it is
    /// read and thrown away in the background, so that the client (or the
    /// proxy streaming it) reads the refusal instead of a broken pipe.
    pub fn refuse(self) {
        drain_refused_body(self.body.into_bytes_stream());
    }

    /// Reads the whole body, bounded in size and time, growing `memory` to
    /// cover each piece before it is kept (a piece that does not fit the
    /// replica's budget or the client's share fails the upload).
    pub async fn read(self, memory: &mut V1Memory) -> Result<Bytes, Error> {
        let Self {
            body,
            limit,
            declared,
            timeouts,
        } = self;
        let mut stream = body.into_bytes_stream();
        // The whole length (the limit, for a chunked body) is asked of the
        // allocator at once, so the buffer never moves or doubles as it
        // grows; its pages only become resident, and are only counted in
        // `memory`, as the bytes arrive.
        let capacity = declared.unwrap_or(limit).min(limit);
        let mut buffer = BytesMut::with_capacity(if capacity <= MAX_RESERVED {
            capacity
        } else {
            0
        } as usize);
        let whole = async {
            while let Some(chunk) = tokio::time::timeout(timeouts.idle, stream.try_next())
                .await
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "the body sent nothing for {} s; the upload is abandoned",
                        timeouts.idle.as_secs()
                    ))
                })?
                .map_err(|err| Error::body_failed("reading the body", &err))?
            {
                let total = (buffer.len() + chunk.len()) as u64;
                if total > limit {
                    return Err(too_large(limit));
                }
                memory.cover(total)?;
                buffer.extend_from_slice(&chunk);
            }
            Ok(())
        };
        tokio::time::timeout(timeouts.deadline, whole)
            .await
            .map_err(|_| {
                Error::BadRequest(format!(
                    "the body did not arrive whole within {} s; the upload is abandoned",
                    timeouts.deadline.as_secs()
                ))
            })??;
        Ok(buffer.freeze())
    }
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
            return Err(poem::Error::from_response(
                ErrorResponse::from(too_large(limit)).into_response(),
            ));
        }
        let timeouts = request
            .data::<V1BodyTimeouts>()
            .copied()
            .unwrap_or(V1BodyTimeouts {
                idle: Duration::MAX,
                deadline: Duration::MAX,
            });
        Ok(Self {
            body: body.take()?,
            limit,
            declared,
            timeouts,
        })
    }
}

impl_apirequest_for_payload!(V1UploadBody);

/// How much of a refused upload's body is read and thrown away, at most.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// How long a refused upload's body is read and thrown away, at most.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and throws away, in the background, what is left of the body of an
/// upload that was refused (at most [`DRAIN_BYTES`], for [`DRAIN_TIME`]),
/// while the answer goes out.
///
/// A connection closed with request bytes unread makes the peer's next sends
/// fail (EPIPE, RST). nginx, still streaming the body
/// (`proxy_request_buffering off`), then answers 502 instead of this answer
/// and counts this replica as failed (`max_fails`): tests/lb saw it for 2 of
/// 10 early 401s to a 64 MiB body through nginx 1.22, none direct.
pub fn drain_refused_body<S>(mut body: S)
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        let mut drained: u64 = 0;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Ok(Some(chunk)) = body.try_next().await {
                drained += chunk.len() as u64;
                if drained >= DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
        tracing::debug!(drained, "drained a refused upload's body");
    });
}
