//! The one place where failures become HTTP answers (docs/protocol.md, "Errors").
//!
//! Code inside the service returns [`Error`]; [`ErrorResponse`] is what the
//! API answers: a status and a JSON body `{"error": …, "code": …}`. Answers
//! that do not come from a handler (no such route, a method the route does
//! not take, a parameter poem could not parse, a panic) are turned into the
//! same body by [`json_errors`]. Server-side details (S3, Redis or
//! blockchain node messages) are logged and never sent to the client.

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response,
    http::{Method, StatusCode, header},
};
use poem_openapi::{ApiResponse, Object, payload::Json};

use crate::{
    chain::ChainError,
    domain::{MetadataError, ParcelId, ParseError},
    routes::Routes,
    state::StateError,
    storage::StoreError,
    transfer_rate::TooSlow,
};

/// The cause of a backend's failure, kept as the source of its error: the
/// backend's own error, or words saying what went wrong when there is none.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error and every source under it, as one line: `error: source: …`.
/// A source already quoted by the text before it (Redis's errors quote
/// theirs) is not repeated.
pub fn with_sources(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or failed authentication; `code` says which check failed.
    #[error("{message}")]
    Unauthenticated {
        /// Stable machine-readable reason.
        code: &'static str,
        /// What a person can act on.
        message: String,
    },
    /// Authenticated, but this account or token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such parcel.
    #[error("parcel {0} not found")]
    NotFound(ParcelId),
    /// No such resumable upload, or not one this token and key may touch.
    #[error("no such upload; it may have expired, or this token is not bound to it")]
    UploadNotFound,
    /// Another request is writing to this resumable upload right now.
    #[error("another request is writing to this upload; retry in a moment")]
    UploadLocked,
    /// A tus `PATCH` whose `Upload-Offset` is not where the upload stands.
    #[error("the upload is at offset {at}, not {sent}; ask HEAD for the offset")]
    OffsetMismatch {
        /// Where the upload stands.
        at: u64,
        /// The `Upload-Offset` sent.
        sent: u64,
    },
    /// A tus `PATCH` whose `X-Upload-Sequence` is not the upload's next
    /// one: a replay, or a client that lost track.
    #[error(
        "this request's X-Upload-Sequence is used or not yet due (the upload is at {at}); ask HEAD for the upload's sequence and offset"
    )]
    StaleRequest {
        /// The upload's sequence: the next PATCH's.
        at: u64,
    },
    /// The account or the client holds as many unfinished resumable
    /// uploads as it may.
    #[error("{0}")]
    TooManyUploads(String),
    /// The token is being used by another request right now.
    #[error("this token is in use by another request; get a new token")]
    TokenInUse,
    /// Another account already stores a parcel with this content.
    #[error("parcel {0} already exists and belongs to another account")]
    OwnedByAnother(ParcelId),
    /// Another request is committing a parcel with this content right now,
    /// or a replica died while it did and its write lock has not lapsed yet.
    #[error("another upload of parcel {id} is in progress; retry in {retry_after} s")]
    UploadInProgress {
        /// The parcel.
        id: ParcelId,
        /// Seconds until the write lock lapses, at the most.
        retry_after: u64,
    },
    /// No byte of the parcel is in the requested range.
    #[error("the requested range is outside the parcel's {size} bytes")]
    RangeNotSatisfiable {
        /// The parcel's size.
        size: u64,
    },
    /// The request or a part of it is over a configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The body's SHA-256 is not the one the token declared.
    #[error("the body's SHA-256 is {actual}, but the token declares {declared}")]
    HashMismatch {
        /// Declared by the token.
        declared: String,
        /// Measured on the body.
        actual: String,
    },
    /// Redis or S3 could not be reached or failed.
    #[error("{service} is unavailable; try again later")]
    Unavailable {
        /// "token store" or "parcel store".
        service: &'static str,
        /// The underlying error, for the log only.
        detail: String,
    },
    /// S3 was asked to store or remove a parcel and did not answer in time:
    /// it may have done it. The request's token is used up (its effect may
    /// have happened), and a retry with a new token finds out (200 for a
    /// parcel the caller now stores, 404 for one removed).
    #[error(
        "the parcel store did not confirm the change, which may have happened; get a new \
         token and try again"
    )]
    OutcomeUnknown {
        /// The underlying error, for the log only.
        detail: String,
    },
    /// The AMO blockchain node could not say whether a non-owner may download
    /// a parcel: unreachable, too slow, or an answer that is neither a grant
    /// nor a refusal. Never a grant.
    #[error(
        "the AMO blockchain node could not be asked whether this parcel is granted to you; \
         your token is still valid: try again later"
    )]
    ChainUnavailable {
        /// What went wrong, for the log only.
        detail: String,
    },
    /// A client asked too often; it may retry after `retry_after` seconds.
    #[error("{message}")]
    RateLimited {
        /// Which limit, and how to stay under it.
        message: String,
        /// Seconds until the limit admits the client again.
        retry_after: u64,
    },
    /// This replica is at its configured capacity; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// This client holds its whole share of a replica (upload slots, v1
    /// upload memory); it may retry once one of its own requests ends.
    #[error("{0}")]
    ClientShare(String),
    /// A body moved more slowly than the minimum transfer rate and was cut.
    #[error("{0}")]
    TooSlow(#[from] TooSlow),
    /// A tus request without `Tus-Resumable: 1.0.0`, the only tus version
    /// served (`sent`: what it sent instead, if anything).
    #[error("{}", tus_version_message(.sent.as_deref()))]
    TusVersion {
        /// The `Tus-Resumable` sent, if any.
        sent: Option<String>,
    },
    /// A request body of a `Content-Type` this operation does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A defect of this service. The detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

/// The message of [`Error::TusVersion`].
fn tus_version_message(sent: Option<&str>) -> String {
    match sent {
        None => "a tus request needs Tus-Resumable: 1.0.0 (Tus-Version lists the versions served)"
            .into(),
        Some(sent) => format!(
            "tus version {sent:?} is not served; send Tus-Resumable: 1.0.0 (Tus-Version lists \
             the versions served)"
        ),
    }
}

/// How long a client should wait after a 503, in seconds.
pub const RETRY_AFTER_UNAVAILABLE: u64 = 2;

/// `Retry-After` of 429 `too_many_uploads`: an unfinished upload frees its
/// place when it completes, is ended or idles out, which the service
/// cannot foresee; a minute is a polite pause.
pub const RETRY_AFTER_UPLOADS: u64 = 60;

impl Error {
    /// Whether the effect of the request may have happened: its token must
    /// then be used up, never released.
    pub fn may_have_taken_effect(&self) -> bool {
        matches!(self, Self::OutcomeUnknown { .. })
    }

    /// Another commit of `id` holds its write lock for `remaining` more
    /// (none: it just ended); the client may retry after that, rounded up
    /// to whole seconds, at least one.
    pub fn upload_in_progress(id: &ParcelId, remaining: Option<std::time::Duration>) -> Self {
        let millis = remaining.map_or(0, |left| left.as_millis() as u64);
        Self::UploadInProgress {
            id: id.clone(),
            retry_after: millis.div_ceil(1000).max(1),
        }
    }

    /// A request body that failed while it was read (`what` says where): too
    /// slow (408), or cut short or malformed (400).
    pub fn body_failed(what: &str, err: &std::io::Error) -> Self {
        match TooSlow::within(err) {
            Some(too_slow) => Self::TooSlow(too_slow),
            None => Self::BadRequest(format!("{what}: {err}")),
        }
    }

    /// Failed authentication with a stable reason code.
    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            code,
            message: message.into(),
        }
    }
}

impl From<ParseError> for Error {
    fn from(err: ParseError) -> Self {
        Self::BadRequest(err.0)
    }
}

/// The `service` of an [`Error::Unavailable`] that the parcel store caused.
pub const PARCEL_STORE: &str = "parcel store";

/// A parcel store's failure as the API answers it; a failure of the backend
/// counts in `amo_backend_errors_total` (under `s3`, whichever the store).
impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        if err.is_unavailable() {
            crate::metrics::backend_error("s3");
        }
        let detail = with_sources(&err);
        match err {
            StoreError::Unavailable(_) => Self::Unavailable {
                service: PARCEL_STORE,
                detail,
            },
            StoreError::OutcomeUnknown(_) => Self::OutcomeUnknown { detail },
            StoreError::Body(err) => Self::body_failed("the body failed", &err),
            StoreError::ShortBody { .. } => Self::BadRequest(err.to_string()),
            StoreError::Corrupt { .. } | StoreError::Internal(_) => Self::Internal(detail),
        }
    }
}

/// A shared state's failure as the API answers it; it counts in
/// `amo_backend_errors_total` under `redis`.
impl From<StateError> for Error {
    fn from(err: StateError) -> Self {
        crate::metrics::backend_error("redis");
        Self::Unavailable {
            service: "token store",
            detail: with_sources(&err),
        }
    }
}

impl From<ChainError> for Error {
    fn from(err: ChainError) -> Self {
        Self::ChainUnavailable {
            detail: err.to_string(),
        }
    }
}

impl From<MetadataError> for Error {
    fn from(err: MetadataError) -> Self {
        match err {
            MetadataError::ForeignOwner => Self::Forbidden(err.to_string()),
            MetadataError::TooLarge { .. } => Self::TooLarge(err.to_string()),
            MetadataError::NotAnObject(_) => Self::BadRequest(err.to_string()),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// What went wrong, in words a person can act on.
    pub error: String,
    /// A stable machine-readable reason, e.g. `token_used`, `hash_mismatch`.
    pub code: String,
}

impl ErrorBody {
    /// A body with this message and code.
    /// The code is noted in the request's audit record, if any.
    pub fn new(error: impl Into<String>, code: impl Into<String>) -> Json<Self> {
        let code = code.into();
        crate::audit::code(&code);
        Json(Self {
            error: error.into(),
            code,
        })
    }
}

/// The error answers of the API.
#[derive(Debug, ApiResponse)]
pub enum ErrorResponse {
    /// Malformed input: a parameter, header or body that does not parse.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Authentication is missing or failed: no token, a token that is
    /// invalid, expired, unknown or already used, a public key that does not
    /// parse or does not belong to the token's user, a bad signature.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// Authenticated, but not allowed: the token is for another operation or
    /// parcel, or the caller does not own the parcel (and, for a download,
    /// the AMO blockchain grants it none, or no blockchain is configured).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such parcel, or no such resumable upload for this token and key.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The token is in use by a concurrent request, another account owns a
    /// parcel with the same content, or another upload of it is in progress
    /// (`upload_in_progress`, with `Retry-After`: the seconds until that
    /// upload's write lock lapses, if its replica died).
    #[oai(status = 409)]
    Conflict(
        Json<ErrorBody>,
        /// With `upload_in_progress` only: seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        Option<u64>,
    ),
    /// Another request is writing to this resumable upload; retry.
    #[oai(status = 423)]
    Locked(Json<ErrorBody>),
    /// The body or its metadata is over the configured limit.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The requested range is outside the parcel; `Content-Range` gives its
    /// size as `bytes */N`.
    #[oai(status = 416)]
    RangeNotSatisfiable(
        Json<ErrorBody>,
        /// `bytes */<size>`.
        #[oai(header = "Content-Range")]
        String,
    ),
    /// The body does not match the SHA-256 the token declares.
    #[oai(status = 422)]
    UnprocessableEntity(Json<ErrorBody>),
    /// The body's `Content-Type` is missing or not the one this operation
    /// takes (a tus `PATCH`: `application/offset+octet-stream`).
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// A tus request (`/api/v2/uploads`, but for `OPTIONS`) without
    /// `Tus-Resumable: 1.0.0`, the only tus version served (tus 1.0.0's
    /// answer to an unsupported version).
    #[oai(status = 412)]
    PreconditionFailed(
        Json<ErrorBody>,
        /// The tus versions served: `1.0.0`.
        #[oai(header = "Tus-Version")]
        String,
    ),
    /// The request body moved more slowly than the minimum transfer rate
    /// (`AMO_MIN_TRANSFER_BYTES_PER_SEC`) and was cut; nothing was stored
    /// and the token stays usable.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// Too many token requests from this client address (`rate_limited`),
    /// this client holds its whole share of the replica (`client_share`), or
    /// too many unfinished resumable uploads for this account or client
    /// (`too_many_uploads`); retry after `Retry-After` seconds.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// A defect of the service; the details are in its log.
    #[oai(status = 500)]
    InternalServerError(Json<ErrorBody>),
    /// The AMO blockchain node, asked whether a non-owner may download the
    /// parcel, is unreachable, timed out or gave an answer that is neither a
    /// grant nor a refusal. Nothing was sent; the token stays usable.
    #[oai(status = 502)]
    BadGateway(Json<ErrorBody>),
    /// Redis or S3 is unavailable, or this replica is at capacity; retry
    /// after `Retry-After` seconds.
    #[oai(status = 503)]
    ServiceUnavailable(
        Json<ErrorBody>,
        /// Seconds to wait before retrying.
        #[oai(header = "Retry-After")]
        u64,
    ),
}

impl From<Error> for ErrorResponse {
    fn from(err: Error) -> Self {
        let message = err.to_string();
        match err {
            Error::BadRequest(_) => Self::BadRequest(ErrorBody::new(message, "bad_request")),
            Error::Unauthenticated { code, .. } => {
                crate::metrics::token_refused(code);
                Self::Unauthorized(ErrorBody::new(message, code))
            }
            Error::Forbidden(_) => Self::Forbidden(ErrorBody::new(message, "forbidden")),
            Error::NotFound(_) => Self::NotFound(ErrorBody::new(message, "not_found")),
            Error::UploadNotFound => Self::NotFound(ErrorBody::new(message, "not_found")),
            Error::UploadLocked => Self::Locked(ErrorBody::new(message, "upload_locked")),
            Error::OffsetMismatch { .. } => {
                Self::Conflict(ErrorBody::new(message, "offset_mismatch"), None)
            }
            Error::StaleRequest { .. } => {
                Self::Conflict(ErrorBody::new(message, "stale_request"), None)
            }
            Error::TooManyUploads(_) => Self::TooManyRequests(
                ErrorBody::new(message, "too_many_uploads"),
                RETRY_AFTER_UPLOADS,
            ),
            Error::TokenInUse => Self::Conflict(ErrorBody::new(message, "token_in_use"), None),
            Error::OwnedByAnother(_) => {
                Self::Conflict(ErrorBody::new(message, "owned_by_another"), None)
            }
            Error::UploadInProgress { retry_after, .. } => Self::Conflict(
                ErrorBody::new(message, "upload_in_progress"),
                Some(retry_after),
            ),
            Error::RangeNotSatisfiable { size } => Self::RangeNotSatisfiable(
                ErrorBody::new(message, "range_not_satisfiable"),
                format!("bytes */{size}"),
            ),
            Error::TooLarge(_) => Self::PayloadTooLarge(ErrorBody::new(message, "too_large")),
            Error::HashMismatch { .. } => {
                Self::UnprocessableEntity(ErrorBody::new(message, "hash_mismatch"))
            }
            Error::Unavailable { service, detail } => {
                tracing::warn!(service, %detail, "backend unavailable");
                Self::ServiceUnavailable(
                    ErrorBody::new(message, "unavailable"),
                    RETRY_AFTER_UNAVAILABLE,
                )
            }
            Error::OutcomeUnknown { detail } => {
                tracing::warn!(%detail, "a write to the parcel store may or may not have happened");
                Self::ServiceUnavailable(
                    ErrorBody::new(message, "outcome_unknown"),
                    RETRY_AFTER_UNAVAILABLE,
                )
            }
            Error::RateLimited { retry_after, .. } => {
                Self::TooManyRequests(ErrorBody::new(message, "rate_limited"), retry_after)
            }
            Error::Busy(_) => {
                Self::ServiceUnavailable(ErrorBody::new(message, "busy"), RETRY_AFTER_UNAVAILABLE)
            }
            Error::ClientShare(_) => Self::TooManyRequests(
                ErrorBody::new(message, "client_share"),
                RETRY_AFTER_UNAVAILABLE,
            ),
            Error::TooSlow(_) => Self::RequestTimeout(ErrorBody::new(message, "too_slow")),
            Error::ChainUnavailable { detail } => {
                tracing::warn!(%detail, "blockchain node unavailable");
                Self::BadGateway(ErrorBody::new(message, "chain_unavailable"))
            }
            Error::TusVersion { .. } => Self::PreconditionFailed(
                ErrorBody::new(message, "tus_version"),
                crate::api::uploads::TUS_VERSION.into(),
            ),
            Error::UnsupportedMediaType(_) => {
                Self::UnsupportedMediaType(ErrorBody::new(message, "unsupported_media_type"))
            }
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Self::InternalServerError(ErrorBody::new(message, "internal"))
            }
        }
    }
}

/// A handler's result: its own answers, or an error answer.
pub type ApiResult<T> = Result<T, ErrorResponse>;

/// The answer to a `HEAD` on a route whose `GET` spends a token: 405 with
/// the route's methods, before any handler runs (poem would answer it with
/// the `GET` handler, spending the token for no body).
fn refused_head(request: &Request, routes: &Routes) -> Option<Response> {
    if request.method() != Method::HEAD {
        return None;
    }
    let (template, methods) = routes.head_would_spend_a_token(request.uri().path())?;
    let mut refused = ErrorBody::new(
        "HEAD is not served on a route whose GET spends a token; send GET",
        "method_not_allowed",
    )
    .into_response();
    refused.set_status(StatusCode::METHOD_NOT_ALLOWED);
    if let Ok(methods) = header::HeaderValue::from_str(methods) {
        refused.headers_mut().insert(header::ALLOW, methods);
    }
    refused.set_data(PathPattern(template.into()));
    Some(refused)
}

/// Turns every error answer that is not JSON yet (a route that does not
/// exist, a method the route does not take, a parameter poem could not
/// parse, a panic) into `{"error", "code"}`; a 405 names the route's
/// methods in `Allow`.
pub async fn json_errors<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    routes: &Routes,
) -> Response {
    if let Some(refused) = refused_head(&request, routes) {
        return refused;
    }
    let mut response = match endpoint.call(request).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = response.take_body().into_string().await.unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        status if status.is_server_error() => "internal",
        _ => "bad_request",
    };
    let mut rebuilt = ErrorBody::new(message, code).into_response();
    rebuilt.set_status(status);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(methods) = routes
            .allowed(&response)
            .and_then(|methods| header::HeaderValue::from_str(methods).ok())
        {
            rebuilt.headers_mut().insert(header::ALLOW, methods);
        }
    }
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rebuilt.headers_mut().insert(name.clone(), value.clone());
        }
    }
    *rebuilt.extensions_mut() = std::mem::take(response.extensions_mut());
    rebuilt
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status, code and `Retry-After` of an answer.
    fn answer(err: impl Into<Error>) -> (u16, String, Option<u64>) {
        match ErrorResponse::from(err.into()) {
            ErrorResponse::ServiceUnavailable(body, retry) => (503, body.0.code, Some(retry)),
            ErrorResponse::BadRequest(body) => (400, body.0.code, None),
            ErrorResponse::InternalServerError(body) => (500, body.0.code, None),
            _ => panic!("an unexpected answer"),
        }
    }

    #[test]
    fn backend_failures_become_the_same_answers_with_their_causes_logged() {
        let refused = || Box::new(std::io::Error::other("connection refused"));
        let err = Error::from(StoreError::Unavailable(refused()));
        assert_eq!(
            err.to_string(),
            "parcel store is unavailable; try again later"
        );
        assert!(matches!(&err, Error::Unavailable { detail, .. }
            if detail == "the parcel store failed: connection refused"));
        assert!(!err.may_have_taken_effect());
        assert_eq!(answer(err), (503, "unavailable".into(), Some(2)));

        let err = Error::from(StateError::Unavailable(refused()));
        assert_eq!(
            err.to_string(),
            "token store is unavailable; try again later"
        );
        assert!(matches!(&err, Error::Unavailable { detail, .. }
            if detail == "the shared state failed: connection refused"));
        assert_eq!(answer(err), (503, "unavailable".into(), Some(2)));

        // A cause that shows its own source at its end shows it once.
        #[derive(Debug, thiserror::Error)]
        #[error("refused: {0}")]
        struct Refused(#[source] std::io::Error);
        let cause = Refused(std::io::Error::other("os error 111"));
        let err = StateError::Unavailable(Box::new(cause));
        assert_eq!(
            with_sources(&err),
            "the shared state failed: refused: os error 111"
        );

        let err = Error::from(StoreError::outcome_unknown("no answer"));
        assert!(err.may_have_taken_effect());
        assert_eq!(answer(err), (503, "outcome_unknown".into(), Some(2)));

        let err = Error::from(StoreError::Body(std::io::Error::other("reset")));
        assert_eq!(err.to_string(), "the body failed: reset");
        assert_eq!(answer(err), (400, "bad_request".into(), None));
        let err = Error::from(StoreError::ShortBody {
            written: 1,
            length: 2,
        });
        assert_eq!(err.to_string(), "the body ended after 1 of 2 bytes");

        let id = ParcelId::parse(&format!("00000001{}", "A".repeat(64))).unwrap();
        let err = Error::from(StoreError::Corrupt {
            id,
            source: "no owner".into(),
        });
        assert!(
            matches!(&err, Error::Internal(detail) if detail.ends_with("is invalid: no owner"))
        );
        assert_eq!(answer(err), (500, "internal".into(), None));
    }

    #[test]
    fn a_node_without_a_clear_answer_is_a_bad_gateway_never_a_grant() {
        let err = Error::from(ChainError::Unanswered {
            node: "http://***@node.example/".into(),
            detail: "timed out".into(),
        });
        assert!(matches!(&err, Error::ChainUnavailable { detail }
            if detail == "abci_query /usage at http://***@node.example/: timed out"));
        let ErrorResponse::BadGateway(body) = ErrorResponse::from(err) else {
            panic!("not a 502");
        };
        assert_eq!(body.0.code, "chain_unavailable");
    }
}
