//! The OpenAPI document as published (`amo-storage openapi`, and served at
//! [`crate::app::SPEC_PATH`]): poem-openapi's, finished where poem-openapi
//! cannot say it.
//!
//! - An operation without `security` gets `security: []`: it needs no proof,
//!   said outright (poem-openapi leaves an empty list out). The operations
//!   that take a proof already name its schemes ([`super::proof::WithProof`]).
//! - Every object's keys are written in sorted order. poem-openapi builds a
//!   security requirement from a `HashMap`, whose order changes from run to
//!   run; sorted, the document is the same bytes every time, so the
//!   committed copy can be compared with the code's.

use serde_json::Value;

/// The methods of a path item that are operations (OpenAPI 3.0).
const OPERATION_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `spec`, poem-openapi's document in JSON, finished: pretty JSON. A text
/// that is not a JSON object comes back unchanged.
pub fn finish(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<Value>(spec) else {
        return spec.to_owned();
    };
    if !document.is_object() {
        return spec.to_owned();
    }
    let operations = document
        .get_mut("paths")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(Value::as_object_mut)
        .flat_map(|item| {
            item.iter_mut()
                .filter(|(method, _)| OPERATION_METHODS.contains(&method.as_str()))
                .map(|(_, operation)| operation)
        })
        .filter_map(Value::as_object_mut);
    for operation in operations {
        operation
            .entry("security")
            .or_insert_with(|| Value::Array(Vec::new()));
    }
    // serde_json's objects are sorted maps (no `preserve_order`): printing
    // the value sorts every object's keys.
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| spec.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(spec: &str) -> Value {
        serde_json::from_str(&finish(spec)).unwrap()
    }

    #[test]
    fn an_operation_without_security_needs_none_said_outright() {
        let spec = r#"{"paths": {"/a": {
            "get": {"responses": {}},
            "post": {"security": [{"AuthToken": []}], "responses": {}},
            "parameters": [{"name": "x"}],
            "summary": "not an operation"
        }}}"#;
        let document = finished(spec);
        assert_eq!(
            document["paths"]["/a"]["get"]["security"],
            Value::Array(vec![])
        );
        assert_eq!(
            document["paths"]["/a"]["post"]["security"],
            serde_json::json!([{"AuthToken": []}])
        );
        assert_eq!(
            document["paths"]["/a"]["parameters"],
            serde_json::json!([{"name": "x"}])
        );
        assert_eq!(document["paths"]["/a"]["summary"], "not an operation");
    }

    #[test]
    fn the_same_document_in_any_key_order_is_the_same_text() {
        let one = r#"{"paths": {"/a": {"get": {"security": [{"B": [], "A": [], "C": []}]}}}, "info": {"title": "t"}}"#;
        let other = r#"{"info": {"title": "t"}, "paths": {"/a": {"get": {"security": [{"C": [], "A": [], "B": []}]}}}}"#;
        assert_eq!(finish(one), finish(other));
        let text = finish(one);
        let (a, b, c) = (
            text.find("\"A\"").unwrap(),
            text.find("\"B\"").unwrap(),
            text.find("\"C\"").unwrap(),
        );
        assert!(a < b && b < c, "{text}");
        assert!(text.find("\"info\"").unwrap() < text.find("\"paths\"").unwrap());
    }

    #[test]
    fn a_text_that_is_not_a_document_is_left_alone() {
        assert_eq!(finish("not json"), "not json");
        assert_eq!(finish("[1, 2]"), "[1, 2]");
    }
}
