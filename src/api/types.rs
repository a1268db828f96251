//! How the domain types appear in the API: each one is read with the
//! domain's own parser, so a handler receives it already parsed, and each is
//! a named schema in the spec with the pattern that parser accepts, so that
//! generated clients and fuzzers know the valid input before they send it.

use std::borrow::Cow;

use poem_openapi::{
    registry::{MetaSchema, MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToJSON, Type},
};
use serde_json::{Value, json};

use crate::domain::{Address, Operation, ParcelId, Sha256Hex};

/// The inline string schema of a domain type.
trait StringSchema {
    fn string_schema() -> MetaSchema;
}

/// Makes a domain type that parses from a string a named string schema with
/// a pattern, read from JSON and from parameters with its own `parse`.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $pattern:literal, $description:literal, $example:literal) => {
        impl StringSchema for $ty {
            fn string_schema() -> MetaSchema {
                MetaSchema {
                    description: Some($description),
                    pattern: Some($pattern.into()),
                    example: Some(Value::String($example.into())),
                    ..MetaSchema::new("string")
                }
            }
        }

        impl Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> MetaSchemaRef {
                // Inline, not a named component: generators (openapi-python-client)
                // cannot take the `allOf` that a described field of a named
                // string schema becomes.
                MetaSchemaRef::Inline(Box::new(Self::string_schema()))
            }

            fn as_raw_value(&self) -> Option<&Self::RawValueType> {
                Some(self)
            }

            fn raw_element_iter<'a>(
                &'a self,
            ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
                Box::new(self.as_raw_value().into_iter())
            }
        }

        impl ParseFromJSON for $ty {
            fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
                match value.unwrap_or_default() {
                    Value::String(text) => <$ty>::parse(&text).map_err(ParseError::custom),
                    other => Err(ParseError::expected_type(other)),
                }
            }
        }

        impl ParseFromParameter for $ty {
            fn parse_from_parameter(value: &str) -> ParseResult<Self> {
                <$ty>::parse(value).map_err(ParseError::custom)
            }
        }

        impl ToJSON for $ty {
            fn to_json(&self) -> Option<Value> {
                Some(Value::String(self.to_string()))
            }
        }
    };
}

string_schema!(
    ParcelId,
    "ParcelId",
    "^[0-9A-Fa-f]{72}$",
    "A parcel id: the storage id (8 hex digits) followed by the SHA-256 of the \
     body (64 hex digits). Any case is read; answers use upper case.",
    "00000001E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
);

string_schema!(
    Address,
    "Address",
    "^[0-9A-Fa-f]{40}$",
    "An account address: the first 20 bytes of the SHA-256 of the account's \
     uncompressed P-256 public key, as 40 hex digits. Any case is read; \
     answers use upper case.",
    "2F0A4B8E4C1D3A5B6C7D8E9F00112233445566AB"
);

string_schema!(
    Sha256Hex,
    "Sha256Hex",
    "^[0-9A-Fa-f]{64}$",
    "A SHA-256 digest as 64 hex digits, any case.",
    "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
);

/// The operation of a token request, parsed, with the form the client sent
/// (which the token carries back unchanged).
#[derive(Debug, Clone)]
pub struct RequestedOperation {
    /// What the token will allow.
    pub parsed: Operation,
    /// The JSON the client sent.
    pub sent: Value,
}

impl Type for RequestedOperation {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "Operation".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        // Inline, for the same reason as the string types above.
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(
                "The operation a token allows: a bare name, or an object that \
                 limits the token to one body (upload) or one parcel (download, \
                 remove), the public clients' form.",
            ),
            one_of: [
                "OperationName",
                "UploadOperation",
                "DownloadOperation",
                "RemoveOperation",
            ]
            .into_iter()
            .map(|name| MetaSchemaRef::Reference(name.into()))
            .collect(),
            ..MetaSchema::ANY
        }))
    }

    fn register(registry: &mut Registry) {
        registry.create_schema::<Self, _>("OperationName".into(), |_| MetaSchema {
            description: Some(
                "A bare operation name (the seed's form): a token for any body \
                 (upload) or any parcel of the user (download, remove).",
            ),
            enum_items: vec![json!("upload"), json!("download"), json!("remove")],
            ..MetaSchema::new("string")
        });
        registry.create_schema::<Self, _>("UploadOperation".into(), |_| {
            scoped_operation(
                "upload",
                "hash",
                Sha256Hex::string_schema(),
                "An upload token, limited to the body with this SHA-256 (the public \
                 clients' form; v2 and resumable uploads need it).",
            )
        });
        registry.create_schema::<Self, _>("DownloadOperation".into(), |_| {
            scoped_operation(
                "download",
                "id",
                ParcelId::string_schema(),
                "A download token, limited to this parcel.",
            )
        });
        registry.create_schema::<Self, _>("RemoveOperation".into(), |_| {
            scoped_operation(
                "remove",
                "id",
                ParcelId::string_schema(),
                "A remove token, limited to this parcel.",
            )
        });
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

/// The schema of an operation object: `{"name": <name>, <scope>: <scope type>}`,
/// both required (amolabs' storage protocol; the bare name is the unscoped
/// form) and nothing else allowed.
fn scoped_operation(
    name: &'static str,
    scope: &'static str,
    scope_schema: MetaSchema,
    description: &'static str,
) -> MetaSchema {
    MetaSchema {
        description: Some(description),
        properties: vec![
            (
                "name",
                MetaSchemaRef::Inline(Box::new(MetaSchema {
                    enum_items: vec![json!(name)],
                    ..MetaSchema::new("string")
                })),
            ),
            (scope, MetaSchemaRef::Inline(Box::new(scope_schema))),
        ],
        required: vec!["name", scope],
        // No other field: poem-openapi cannot write `additionalProperties:
        // false`, so this is a schema no value satisfies (a string at least
        // one and at most zero characters long), which means the same.
        additional_properties: Some(Box::new(MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("No other field is allowed."),
            min_length: Some(1),
            max_length: Some(0),
            ..MetaSchema::new("string")
        })))),
        ..MetaSchema::new("object")
    }
}

impl ParseFromJSON for RequestedOperation {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let sent = value.unwrap_or_default();
        let parsed = Operation::parse(&sent).map_err(ParseError::custom)?;
        Ok(Self { parsed, sent })
    }
}

impl ToJSON for RequestedOperation {
    fn to_json(&self) -> Option<Value> {
        Some(self.sent.clone())
    }
}
