//! Parcel metadata: a JSON object that always names its owner (docs/protocol.md,
//! "v1" and "Storage model").

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::Address;

/// Why metadata offered by a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not valid JSON, or not a JSON object.
    #[error("metadata must be a JSON object: {0}")]
    NotAnObject(String),
    /// The metadata's `owner` names another account.
    #[error("metadata \"owner\" must be the token's user")]
    ForeignOwner,
    /// The stored form would exceed the configured limit.
    #[error("metadata is {size} bytes as stored; the limit is {limit} bytes")]
    TooLarge {
        /// Size of the compact stored JSON.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

/// A parcel's metadata as stored: a JSON object whose `owner` is the parcel's
/// owner, kept as compact ASCII JSON (non-ASCII characters as `\u` escapes),
/// which is what S3 user metadata can carry.
#[derive(Debug, Clone, PartialEq)]
pub struct ParcelMetadata {
    object: Map<String, Value>,
    stored: String,
}

impl ParcelMetadata {
    /// Builds the metadata of a new parcel of `owner` from what the client
    /// sent (`None`: no metadata). An `owner` in it must name the same account.
    pub fn for_owner(
        offered: Option<Value>,
        owner: &Address,
        limit: usize,
    ) -> Result<Self, MetadataError> {
        let mut object = match offered {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(object)) => object,
            Some(other) => {
                return Err(MetadataError::NotAnObject(format!(
                    "got {}",
                    kind_of(&other)
                )));
            }
        };
        if let Some(claimed) = object.get("owner") {
            let same = claimed
                .as_str()
                .and_then(|text| Address::parse(text).ok())
                .is_some_and(|claimed| &claimed == owner);
            if !same {
                return Err(MetadataError::ForeignOwner);
            }
        }
        object.insert("owner".into(), Value::String(owner.to_string()));
        let stored = ascii_json(&Value::Object(object.clone()));
        if stored.len() > limit {
            return Err(MetadataError::TooLarge {
                size: stored.len(),
                limit,
            });
        }
        Ok(Self { object, stored })
    }

    /// Parses metadata text offered in a header (v2's `X-Parcel-Metadata`).
    pub fn parse_offered(text: &str) -> Result<Value, MetadataError> {
        serde_json::from_str(text).map_err(|err| MetadataError::NotAnObject(err.to_string()))
    }

    /// Reads metadata back from storage. Storage written by this service
    /// always holds an object; anything else is reported as an error.
    pub fn from_stored(stored: &str) -> Result<Self, MetadataError> {
        match serde_json::from_str(stored) {
            Ok(Value::Object(object)) => Ok(Self {
                object,
                stored: stored.to_owned(),
            }),
            Ok(other) => Err(MetadataError::NotAnObject(format!(
                "got {}",
                kind_of(&other)
            ))),
            Err(err) => Err(MetadataError::NotAnObject(err.to_string())),
        }
    }

    /// The compact ASCII JSON that is stored.
    pub fn as_stored(&self) -> &str {
        &self.stored
    }

    /// The metadata as a JSON object.
    pub fn to_value(&self) -> Value {
        Value::Object(self.object.clone())
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Compact JSON with every non-ASCII character, and DEL, written as
/// `\uXXXX` (UTF-16 units): visible ASCII only, which an HTTP header (S3
/// user metadata) can carry. serde_json escapes the other control
/// characters itself; outside strings JSON is ASCII already, so escaping
/// every such character is valid.
fn ascii_json(value: &Value) -> String {
    let escaped = |ch: char| !ch.is_ascii() || ch == '\u{7f}';
    let compact = value.to_string();
    if !compact.chars().any(escaped) {
        return compact;
    }
    let mut out = String::with_capacity(compact.len() + 16);
    for ch in compact.chars() {
        if !escaped(ch) {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn owner() -> Address {
        Address::parse(&"A1".repeat(20)).unwrap()
    }

    #[test]
    fn owner_is_always_added() {
        let meta = ParcelMetadata::for_owner(Some(json!({"name": "x"})), &owner(), 8192).unwrap();
        assert_eq!(meta.to_value()["owner"], json!(owner().to_string()));
        let empty = ParcelMetadata::for_owner(None, &owner(), 8192).unwrap();
        assert_eq!(empty.to_value(), json!({"owner": owner().to_string()}));
    }

    #[test]
    fn a_foreign_owner_is_refused_and_the_same_owner_in_any_case_is_kept() {
        let foreign = json!({"owner": "B2".repeat(20)});
        assert_eq!(
            ParcelMetadata::for_owner(Some(foreign), &owner(), 8192),
            Err(MetadataError::ForeignOwner)
        );
        let same = json!({"owner": "a1".repeat(20)});
        assert!(ParcelMetadata::for_owner(Some(same), &owner(), 8192).is_ok());
    }

    #[test]
    fn stored_form_is_ascii_and_round_trips() {
        let offered = json!({"title": "Grüße 🌍", "ctl": "\u{1}\u{7f}\t", "\u{7f}": 1});
        let meta = ParcelMetadata::for_owner(Some(offered.clone()), &owner(), 8192).unwrap();
        // Visible ASCII only: an HTTP header value can carry it.
        assert!(
            meta.as_stored().bytes().all(|b| (0x20..0x7f).contains(&b)),
            "{}",
            meta.as_stored()
        );
        let back = ParcelMetadata::from_stored(meta.as_stored()).unwrap();
        assert_eq!(back.to_value()["title"], offered["title"]);
        assert_eq!(back.to_value()["ctl"], offered["ctl"]);
        assert_eq!(back.to_value()["\u{7f}"], offered["\u{7f}"]);
    }

    #[test]
    fn numbers_survive_the_stored_form_exactly() {
        // Found by tests/properties.rs: without serde_json's `float_roundtrip`
        // reading the stored text back changed these in their last bit.
        let offered = json!({"a": 1.6560159018346113e-303, "b": -1.1714271875614011e157});
        let meta = ParcelMetadata::for_owner(Some(offered.clone()), &owner(), 8192).unwrap();
        let back = ParcelMetadata::from_stored(meta.as_stored()).unwrap();
        assert_eq!(back.to_value()["a"], offered["a"]);
        assert_eq!(back.to_value()["b"], offered["b"]);
        assert_eq!(back, meta);
    }

    #[test]
    fn size_is_measured_on_the_stored_form() {
        let big = json!({"blob": "x".repeat(100)});
        let err = ParcelMetadata::for_owner(Some(big), &owner(), 64).unwrap_err();
        assert!(matches!(err, MetadataError::TooLarge { limit: 64, .. }));
        assert!(ParcelMetadata::for_owner(Some(json!([1])), &owner(), 64).is_err());
    }
}
