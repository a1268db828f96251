//! Per-request observability: a request id, one access-log line, metrics.
//!
//! The request id is the client's `X-Request-Id` when it is a sane token
//! (1 to 128 visible ASCII characters), or a new UUID. Every log line of
//! the request carries it (it is a field of the request's span), and the
//! answer echoes it. Only the route template, method, status and timing
//! are logged: never headers, so tokens, keys and signatures stay out of
//! the logs.

use std::{sync::Arc, time::Instant};

use poem::{
    Endpoint, IntoResponse, Request, Response,
    http::{HeaderName, HeaderValue},
};
use tracing::Instrument;

use crate::{api::client::ClientPolicy, audit, metrics, routes::Routes};

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's request id if it is usable, else a new one.
pub fn request_id_of(request: &Request) -> String {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Runs `request` through `endpoint` inside a span that names it, then logs
/// and counts the answer and echoes the request id. A parcel operation is
/// audited ([`crate::audit`]): its event is written when its answer's body
/// ends, with the client `policy` names.
pub async fn observe<E: Endpoint>(
    endpoint: Arc<E>,
    mut request: Request,
    routes: &Routes,
    policy: ClientPolicy,
) -> Response {
    let request_id = request_id_of(&request);
    let audit = routes
        .find(request.uri().path())
        .and_then(|(template, _)| {
            audit::operation(template, request.method(), request.uri().query())
        })
        .map(|operation| {
            audit::Record::start(
                operation,
                &request_id,
                policy.client_of(&request),
                request.uri().path(),
            )
        });
    if let Some(record) = &audit {
        let body = request.take_body();
        request.set_body(record.count_in(body));
    }
    let method = metrics::method_label(request.method());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method,
        route = tracing::field::Empty
    );
    let started = Instant::now();
    let handled = async {
        match endpoint.call(request).await {
            Ok(response) => response.into_response(),
            Err(err) => err.into_response(),
        }
    }
    .instrument(span.clone());
    let mut response = match &audit {
        Some(record) => audit::Record::scope(record.clone(), handled).await,
        None => handled.await,
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = routes.label(&response);
    span.record("route", route.as_str());
    metrics::request(&route, method, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            status,
            elapsed_ms = elapsed.as_secs_f64() * 1000.0,
            "answered"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    if let Some(record) = audit {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|value: &HeaderValue| value.to_str().ok())
        };
        record.answered(
            status,
            header(poem::http::header::CONTENT_LENGTH.as_str())
                .and_then(|length| length.parse().ok()),
            header(poem::http::header::LOCATION.as_str()),
            header("x-parcel-id"),
        );
        let body = response.take_body();
        response.set_body(audit::Record::count_out(record, body));
    }
    response
}
