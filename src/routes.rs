//! The routes this service serves, known from the router and the OpenAPI
//! spec rather than from a list of our own: the label of the route a
//! request matched, and the methods a path answers.
//!
//! poem's router records the path template it matched on every answer
//! (`PathPattern`), 405s included; the template's parameters (`:id`) are
//! shown as the spec writes them (`{id}`). A request no route matched is
//! `other`, so the label set is the router's, whatever a client sends.

use std::{collections::BTreeMap, sync::Arc};

use poem::{PathPattern, Response};

use crate::api::proof::SECURITY_SCHEMES;

/// The label of a request that matched no route.
pub const UNMATCHED: &str = "other";

/// The route templates of the spec, and the methods each answers.
#[derive(Debug, Clone, Default)]
pub struct Routes(Arc<BTreeMap<String, SpecPath>>);

/// One path of the spec.
#[derive(Debug)]
struct SpecPath {
    /// As the spec writes it, e.g. `/api/v2/parcels/{id}`.
    template: String,
    /// Its methods, as `Allow` lists them.
    methods: String,
    /// Whether its `GET` takes a token (the `X-Auth-Token` security
    /// scheme): a download, which spends it.
    get_takes_token: bool,
    /// Its segments between `/`s: a literal, or `None` for a parameter
    /// (split once here, not on every request).
    segments: Vec<Option<String>>,
}

impl SpecPath {
    /// Whether `path` is on this route: as many segments, each literal
    /// equal and each parameter not empty.
    fn matches(&self, path: &str) -> bool {
        self.segments.len() == path.split('/').count()
            && self
                .segments
                .iter()
                .zip(path.split('/'))
                .all(|(part, segment)| match part {
                    Some(literal) => literal == segment,
                    None => !segment.is_empty(),
                })
    }

    /// Which segments are parameters, left to right: the router prefers the
    /// route whose first parameter comes latest.
    fn parameters(&self) -> impl Iterator<Item = bool> + '_ {
        self.segments.iter().map(Option::is_none)
    }
}

/// The security scheme of the token, in an operation's `security`.
const TOKEN_SCHEME: &str = SECURITY_SCHEMES[0].0;

/// The order methods are listed in `Allow`.
const METHOD_ORDER: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Routes {
    /// The paths of `spec`, an OpenAPI document in JSON.
    pub fn from_spec(spec: &str) -> Self {
        let document: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut paths = BTreeMap::new();
        if let Some(spec_paths) = document.get("paths").and_then(|paths| paths.as_object()) {
            for (template, operations) in spec_paths {
                let methods: Vec<&str> = METHOD_ORDER
                    .into_iter()
                    .filter(|method| operations.get(method.to_ascii_lowercase()).is_some())
                    .collect();
                let get_takes_token = operations
                    .pointer("/get/security")
                    .and_then(|security| security.as_array())
                    .is_some_and(|requirements| {
                        requirements
                            .iter()
                            .any(|requirement| requirement.get(TOKEN_SCHEME).is_some())
                    });
                let shape = shape(template);
                let segments = shape
                    .split('/')
                    .map(|part| (part != "{}").then(|| part.to_owned()))
                    .collect();
                paths.insert(
                    shape,
                    SpecPath {
                        template: template.clone(),
                        methods: methods.join(", "),
                        get_takes_token,
                        segments,
                    },
                );
            }
        }
        Self(Arc::new(paths))
    }

    /// The label of the route `response` was answered on: the spec's
    /// template, or the router's for a route outside the spec (the spec
    /// itself, `/metrics`, the API explorer), or [`UNMATCHED`].
    pub fn label(&self, response: &Response) -> String {
        match response.data::<PathPattern>() {
            Some(PathPattern(pattern)) if !pattern.is_empty() => {
                let shape = shape(pattern);
                match self.0.get(&shape) {
                    Some(path) => path.template.clone(),
                    None => shape,
                }
            }
            _ => UNMATCHED.to_owned(),
        }
    }

    /// The spec's route a request on `path` goes to, and its methods (as
    /// `Allow` lists them): as poem's router picks it, a literal segment
    /// before a parameter.
    pub fn find(&self, path: &str) -> Option<(&str, &str)> {
        self.0
            .values()
            .filter(|spec| spec.matches(path))
            // Literal segments first, from the left, as the router does.
            .min_by(|a, b| a.parameters().cmp(b.parameters()))
            .map(|spec| (spec.template.as_str(), spec.methods.as_str()))
    }

    /// The spec's route a `HEAD` on `path` must not reach, and its methods:
    /// one whose `GET` takes a token. poem's router answers a `HEAD` with
    /// the `GET` handler, and a download's would spend its token for an
    /// answer without a body; `HEAD` is in neither the protocol nor the
    /// spec there.
    pub fn head_would_spend_a_token(&self, path: &str) -> Option<(&str, &str)> {
        let (template, methods) = self.find(path)?;
        let spec = self.0.get(&shape(template))?;
        (spec.get_takes_token && !methods.split(", ").any(|method| method == "HEAD"))
            .then_some((template, methods))
    }

    /// The `Allow` value of the route `response` was answered on, if the
    /// spec has that route.
    pub fn allowed(&self, response: &Response) -> Option<&str> {
        let PathPattern(pattern) = response.data::<PathPattern>()?;
        self.0
            .get(&shape(pattern))
            .map(|path| path.methods.as_str())
    }
}

/// A path template with its parameters unnamed (`{}`): poem's router names
/// them `:param0`, `:param1`…, the spec `{id}`.
fn shape(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            let parameter =
                segment.starts_with(':') || (segment.starts_with('{') && segment.ends_with('}'));
            if parameter { "{}" } else { segment }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"paths": {
        "/a/{id}": {"delete": {}, "get": {}},
        "/a/{id}/meta": {"get": {}},
        "/b": {"post": {}}
    }}"#;

    fn answered_on(pattern: &str) -> Response {
        let mut response = Response::default();
        response.set_data(PathPattern(pattern.into()));
        response
    }

    #[test]
    fn a_matched_route_is_labelled_as_the_spec_writes_it() {
        let routes = Routes::from_spec(SPEC);
        assert_eq!(routes.label(&answered_on("/a/:param0")), "/a/{id}");
        assert_eq!(
            routes.label(&answered_on("/a/:param0/meta")),
            "/a/{id}/meta"
        );
        assert_eq!(routes.label(&answered_on("/metrics")), "/metrics");
    }

    #[test]
    fn an_answer_without_a_matched_route_is_other() {
        let routes = Routes::from_spec(SPEC);
        assert_eq!(routes.label(&Response::default()), UNMATCHED);
        assert_eq!(routes.allowed(&Response::default()), None);
    }

    #[test]
    fn a_path_finds_its_route_literal_segments_first() {
        let routes = Routes::from_spec(
            r#"{"paths": {"/a/{id}": {"get": {}}, "/a/list": {"post": {}}, "/a/{id}/meta": {"get": {}}}}"#,
        );
        assert_eq!(routes.find("/a/17"), Some(("/a/{id}", "GET")));
        assert_eq!(routes.find("/a/list"), Some(("/a/list", "POST")));
        assert_eq!(routes.find("/a/17/meta"), Some(("/a/{id}/meta", "GET")));
        assert_eq!(routes.find("/a/"), None);
        assert_eq!(routes.find("/a"), None);
        assert_eq!(routes.find("/b/17"), None);
    }

    #[test]
    fn the_methods_of_a_route_come_from_the_spec() {
        let routes = Routes::from_spec(SPEC);
        assert_eq!(
            routes.allowed(&answered_on("/a/:param0")),
            Some("GET, DELETE")
        );
        assert_eq!(routes.allowed(&answered_on("/b")), Some("POST"));
        assert_eq!(routes.allowed(&answered_on("/c")), None);
    }

    /// The published spec marks a route whose `GET` spends a token by the
    /// token's security scheme, not by a parameter: `HEAD` is refused on
    /// the downloads (v1 and v2) and only there.
    #[test]
    fn the_downloads_are_the_routes_whose_get_takes_a_token() {
        let routes = Routes::from_spec(&crate::app::openapi_spec());
        let id = "0".repeat(72);
        for path in [
            format!("/api/v2/parcels/{id}"),
            format!("/api/v1/parcels/{id}"),
        ] {
            assert!(routes.head_would_spend_a_token(&path).is_some(), "{path}");
        }
        for path in [
            format!("/api/v2/parcels/{id}/metadata"),
            "/healthz".to_owned(),
            "/api/v2/uploads/abc".to_owned(),
        ] {
            assert_eq!(routes.head_would_spend_a_token(&path), None, "{path}");
        }
    }
}
