//! tus 1.0.0's rules for every request on `/api/v2/uploads` (the core
//! protocol, "Headers"), before any handler runs: a `POST`, `HEAD`, `PATCH`
//! or `DELETE` must send `Tus-Resumable: 1.0.0` (else 412 with `Tus-Version`;
//! `OPTIONS` needs none),
//! a `PATCH` must send `Content-Type: application/offset+octet-stream` (else
//! 415), and every answer, errors included, carries `Tus-Resumable`.

use futures_util::{TryStreamExt, future::BoxFuture};
use poem::{
    Body, FromRequest, IntoResponse, Request, RequestBody, Response,
    http::{HeaderValue, Method, header},
};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchema, MetaSchemaRef},
};

use super::{
    body::drain_refused_body,
    uploads::{TUS_VERSION, UPLOADS_PATH},
};
use crate::error::{Error, ErrorResponse};

/// The `Content-Type` of a tus `PATCH` body.
pub const PATCH_CONTENT_TYPE: &str = "application/offset+octet-stream";

/// Whether `path` is a tus route: the uploads collection or one upload.
fn is_tus_path(path: &str) -> bool {
    path == UPLOADS_PATH
        || path
            .strip_prefix(UPLOADS_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why tus refuses `request` before its handler, if it does.
fn refusal(request: &Request) -> Option<Error> {
    // OPTIONS (discovery, a CORS preflight) needs no version; a method
    // the route does not take is the router's 405.
    let tus_methods: &[Method] = if request.uri().path() == UPLOADS_PATH {
        &[Method::POST]
    } else {
        &[Method::HEAD, Method::PATCH, Method::DELETE]
    };
    if !tus_methods.contains(request.method()) {
        return None;
    }
    let version = request.headers().get("Tus-Resumable");
    if version.is_none_or(|sent| sent.as_bytes() != TUS_VERSION.as_bytes()) {
        return Some(Error::TusVersion {
            sent: version.map(|sent| String::from_utf8_lossy(sent.as_bytes()).into_owned()),
        });
    }
    if request.method() == Method::PATCH {
        let media_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::trim);
        if !media_type.is_some_and(|media_type| media_type.eq_ignore_ascii_case(PATCH_CONTENT_TYPE))
        {
            return Some(Error::UnsupportedMediaType(format!(
                "a PATCH's body is Content-Type: {PATCH_CONTENT_TYPE} (tus 1.0.0)"
            )));
        }
    }
    None
}

/// Serves `request` by `next` with tus 1.0.0's rules on tus routes; other
/// routes pass untouched.
/// (`next`'s future is boxed: the middleware stack's future type is deep
/// enough already.)
pub async fn tus_protocol<'a, F>(mut request: Request, next: F) -> Response
where
    F: FnOnce(Request) -> BoxFuture<'a, Response>,
{
    if !is_tus_path(request.uri().path()) {
        return next(request).await;
    }
    let mut response = match refusal(&request) {
        Some(err) => {
            let body = request.take_body().into_bytes_stream();
            drain_refused_body(Box::pin(body.map_err(std::io::Error::other)));
            ErrorResponse::from(err).into_response()
        }
        None => next(request).await,
    };
    response
        .headers_mut()
        .insert("Tus-Resumable", HeaderValue::from_static(TUS_VERSION));
    response
}

/// `Tus-Resumable` as the spec names it: required, `1.0.0` only. (The
/// check is [`tus_protocol`]'s, before any handler; this is its
/// description.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
pub enum TusResumable {
    /// tus 1.0.0.
    #[oai(rename = "1.0.0")]
    V1_0_0,
}

/// A tus `PATCH` body: `application/offset+octet-stream`, streamed. (The
/// media type is checked by [`tus_protocol`], before any handler: 415.)
pub struct OffsetOctetStream(pub Body);

impl Payload for OffsetOctetStream {
    const CONTENT_TYPE: &'static str = PATCH_CONTENT_TYPE;

    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            format: Some("binary"),
            ..MetaSchema::new("string")
        }))
    }
}

impl ParsePayload for OffsetOctetStream {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self(Body::from_request(request, body).await?))
    }
}

impl_apirequest_for_payload!(OffsetOctetStream);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tus_paths_are_the_collection_and_its_uploads_only() {
        assert!(is_tus_path("/api/v2/uploads"));
        assert!(is_tus_path("/api/v2/uploads/0123"));
        assert!(!is_tus_path("/api/v2/uploadsx"));
        assert!(!is_tus_path("/api/v2/parcels"));
    }
}
