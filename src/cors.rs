//! Cross-origin requests from browsers (CORS), for the origins
//! `AMO_CORS_ALLOWED_ORIGINS` names: none by default, a list, or `*`.
//!
//! - A *preflight* (`OPTIONS` with `Origin` and
//!   `Access-Control-Request-Method`) from an allowed origin, on a route of
//!   the spec, is answered here, 204, without reaching the route: the
//!   route's methods, the request headers the service reads
//!   ([`ALLOWED_HEADERS`]) and a [`MAX_AGE_SECS`]. It is labelled with its
//!   route in the metrics, like any request. An `OPTIONS` without
//!   `Access-Control-Request-Method` is not a preflight: on
//!   `/api/v2/uploads` it stays tus discovery.
//! - Any other request from an allowed origin is served as usual, and its
//!   answer (errors included) names the origin and exposes the headers a
//!   client reads ([`EXPOSED_HEADERS`]).
//! - A request from an origin that is not allowed, or without `Origin`,
//!   gets no CORS header and is judged as it would be without this layer (a
//!   foreign preflight answers 405, as before).
//!
//! No credentials are allowed: the proof travels in headers, not cookies.
//! With a list, every answer varies on `Origin`, so that a cache never
//! hands one origin's answer to another.

use std::sync::Arc;

use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response,
    http::{HeaderValue, Method, StatusCode, header},
};

use crate::routes::Routes;

/// The request headers a browser may send: those the service reads.
pub const ALLOWED_HEADERS: &str = "X-Auth-Token, X-Public-Key, X-Signature, X-Parcel-Metadata, \
     Range, Content-Type, Upload-Length, Upload-Offset, Upload-Metadata, Tus-Resumable, \
     X-Upload-Sequence, X-Request-Id";

/// The answer headers a page may read, besides the CORS-safelisted ones.
pub const EXPOSED_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, \
     Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, X-Parcel-Id, X-Upload-Sequence, \
     Content-Range, Content-Length, ETag, X-Request-Id, Retry-After";

/// How long a browser may keep a preflight's answer, in seconds (Chromium
/// keeps it at most 7,200 s).
pub const MAX_AGE_SECS: u64 = 600;

/// The origins allowed to call the service from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No origin: no CORS header is ever sent.
    #[default]
    None,
    /// Every origin (`*`).
    Any,
    /// These origins, as `scheme://host[:port]` in lower case.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses the setting: empty for none, `*`, or a comma-separated list of
    /// origins (`https://market.example`, `http://127.0.0.1:8000`). The
    /// error says what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::None);
        }
        if text == "*" {
            return Ok(Self::Any);
        }
        let mut origins = Vec::new();
        for entry in text.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            origins.push(origin(entry)?);
        }
        if origins.is_empty() {
            return Ok(Self::None);
        }
        Ok(Self::List(origins))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`,
    /// if it is allowed.
    fn allow(&self, origin: &str) -> Option<HeaderValue> {
        match self {
            Self::None => None,
            Self::Any => Some(HeaderValue::from_static("*")),
            Self::List(origins) => origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
                .then(|| HeaderValue::from_str(origin).ok())
                .flatten(),
        }
    }
}

/// One origin of the list, checked and in lower case: an http(s) scheme, a
/// host, an optional port, and nothing else (no path, not even `/`).
fn origin(entry: &str) -> Result<String, String> {
    let problem =
        || format!("{entry:?} is not an origin (scheme://host[:port], without a path), nor `*`");
    let url = url::Url::parse(entry).map_err(|_| problem())?;
    let bare = !entry.ends_with('/')
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none();
    // A host name, or an address: no wildcard (`https://*.example`).
    let host_ok = url.host_str().is_some_and(|host| {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    if !matches!(url.scheme(), "http" | "https") || !host_ok || !bare {
        return Err(problem());
    }
    Ok(entry.to_ascii_lowercase())
}

/// Runs `request` through `endpoint` with the CORS rules of `origins` on the
/// routes of `routes` (see the module's documentation).
pub async fn cors<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    origins: &AllowedOrigins,
    routes: &Routes,
) -> Response {
    let allowed = match origins {
        AllowedOrigins::None => None,
        _ => request
            .headers()
            .get(header::ORIGIN)
            .and_then(|origin| origin.to_str().ok())
            .and_then(|origin| origins.allow(origin)),
    };
    let vary = matches!(origins, AllowedOrigins::List(_));
    let Some(allow_origin) = allowed else {
        let mut response = call(&endpoint, request).await;
        if vary {
            response
                .headers_mut()
                .append(header::VARY, HeaderValue::from_static("origin"));
        }
        return response;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let route = routes.find(request.uri().path());
    let mut response = match (preflight, route) {
        (true, Some((template, methods))) => {
            let mut response = Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ACCESS_CONTROL_ALLOW_METHODS, methods)
                .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS)
                .header(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS)
                .finish();
            // The route it was asked for, for the metrics and the log.
            response.set_data(PathPattern(template.into()));
            response
        }
        _ => {
            let mut response = call(&endpoint, request).await;
            response.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    if vary {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

async fn call<E: Endpoint>(endpoint: &Arc<E>, request: Request) -> Response {
    match endpoint.call(request).await {
        Ok(response) => response.into_response(),
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_reads_none_any_or_a_list_of_origins() {
        assert_eq!(AllowedOrigins::parse(""), Ok(AllowedOrigins::None));
        assert_eq!(AllowedOrigins::parse(" , "), Ok(AllowedOrigins::None));
        assert_eq!(AllowedOrigins::parse("*"), Ok(AllowedOrigins::Any));
        assert_eq!(
            AllowedOrigins::parse("https://Market.example, http://127.0.0.1:8000"),
            Ok(AllowedOrigins::List(vec![
                "https://market.example".into(),
                "http://127.0.0.1:8000".into()
            ]))
        );
    }

    #[test]
    fn an_entry_that_is_not_a_bare_origin_is_refused() {
        for entry in [
            "https://market.example/",
            "https://market.example/shop",
            "market.example",
            "ftp://market.example",
            "https://market.example?x=1",
            "https://*.example",
        ] {
            assert!(
                AllowedOrigins::parse(entry).is_err(),
                "{entry} was accepted"
            );
        }
    }

    #[test]
    fn only_a_listed_origin_is_allowed_and_echoed() {
        let origins = AllowedOrigins::parse("https://market.example").unwrap();
        assert_eq!(
            origins.allow("https://market.example"),
            Some(HeaderValue::from_static("https://market.example"))
        );
        assert_eq!(origins.allow("https://evil.example"), None);
        assert_eq!(origins.allow("null"), None);
        assert_eq!(AllowedOrigins::None.allow("https://market.example"), None);
        assert_eq!(
            AllowedOrigins::Any.allow("https://evil.example"),
            Some(HeaderValue::from_static("*"))
        );
    }
}
