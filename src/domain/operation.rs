//! The operation a token is for (docs/protocol.md, "Tokens").

use std::fmt;

use serde_json::Value;

use super::{ParcelId, ParseError, Sha256Hex};

/// The three operations a token can authorise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// Store a parcel.
    Upload,
    /// Read a parcel's body.
    Download,
    /// Delete a parcel.
    Remove,
}

impl OperationKind {
    fn parse(name: &str) -> Result<Self, ParseError> {
        match name {
            "upload" => Ok(Self::Upload),
            "download" => Ok(Self::Download),
            "remove" => Ok(Self::Remove),
            _ => Err(ParseError(
                "operation name must be \"upload\", \"download\" or \"remove\"".into(),
            )),
        }
    }

    /// The name clients send.
    pub fn name(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Remove => "remove",
        }
    }
}

impl fmt::Display for OperationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed operation: its kind and, in the public clients' object form, the
/// content hash (upload) or parcel id (download, remove) it is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Upload, optionally limited to a body with this SHA-256.
    Upload {
        /// The declared SHA-256 of the body.
        hash: Option<Sha256Hex>,
    },
    /// Download, optionally limited to one parcel.
    Download {
        /// The only parcel this token may read.
        id: Option<ParcelId>,
    },
    /// Remove, optionally limited to one parcel.
    Remove {
        /// The only parcel this token may remove.
        id: Option<ParcelId>,
    },
}

impl Operation {
    /// Parses either form: a bare name (`"upload"`) or an object
    /// (`{"name":"upload","hash":…}`, `{"name":"download","id":…}`).
    pub fn parse(value: &Value) -> Result<Self, ParseError> {
        match value {
            Value::String(name) => Ok(Self::unscoped(OperationKind::parse(name)?)),
            Value::Object(fields) => {
                let name = fields
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ParseError("operation object needs a string \"name\"".into()))?;
                let kind = OperationKind::parse(name)?;
                let allowed = match kind {
                    OperationKind::Upload => "hash",
                    OperationKind::Download | OperationKind::Remove => "id",
                };
                if let Some(extra) = fields.keys().find(|key| *key != "name" && *key != allowed) {
                    return Err(ParseError(format!(
                        "operation \"{kind}\" takes \"name\" and \"{allowed}\" only, not \"{extra}\""
                    )));
                }
                // The object form is the public clients' (amolabs' storage
                // protocol): it always carries its hash or id. The bare name
                // is the unscoped form.
                let scope = match fields.get(allowed) {
                    Some(Value::String(text)) => Some(text.as_str()),
                    None | Some(Value::Null) => {
                        return Err(ParseError(format!(
                            "operation object \"{kind}\" needs \"{allowed}\"; send the bare \
                             name \"{kind}\" for a token not limited to one {}",
                            if allowed == "hash" { "body" } else { "parcel" }
                        )));
                    }
                    Some(_) => {
                        return Err(ParseError(format!(
                            "operation \"{allowed}\" must be a string"
                        )));
                    }
                };
                Ok(match kind {
                    OperationKind::Upload => Self::Upload {
                        hash: scope.map(Sha256Hex::parse).transpose()?,
                    },
                    OperationKind::Download => Self::Download {
                        id: scope.map(ParcelId::parse).transpose()?,
                    },
                    OperationKind::Remove => Self::Remove {
                        id: scope.map(ParcelId::parse).transpose()?,
                    },
                })
            }
            _ => Err(ParseError(
                "operation must be a name or an object with \"name\"".into(),
            )),
        }
    }

    fn unscoped(kind: OperationKind) -> Self {
        match kind {
            OperationKind::Upload => Self::Upload { hash: None },
            OperationKind::Download => Self::Download { id: None },
            OperationKind::Remove => Self::Remove { id: None },
        }
    }

    /// Which operation this is.
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::Upload { .. } => OperationKind::Upload,
            Self::Download { .. } => OperationKind::Download,
            Self::Remove { .. } => OperationKind::Remove,
        }
    }

    /// The parcel a download or remove token is limited to, if any.
    pub fn parcel_id(&self) -> Option<&ParcelId> {
        match self {
            Self::Download { id } | Self::Remove { id } => id.as_ref(),
            Self::Upload { .. } => None,
        }
    }

    /// The body hash an upload token declares, if any.
    pub fn declared_hash(&self) -> Option<&Sha256Hex> {
        match self {
            Self::Upload { hash } => hash.as_ref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bare_names_parse_unscoped() {
        assert_eq!(
            Operation::parse(&json!("upload")).unwrap(),
            Operation::Upload { hash: None }
        );
        assert_eq!(
            Operation::parse(&json!("remove")).unwrap().kind(),
            OperationKind::Remove
        );
        assert!(Operation::parse(&json!("delete")).is_err());
    }

    #[test]
    fn object_form_carries_its_scope() {
        let hash = "ab".repeat(32);
        let op = Operation::parse(&json!({"name": "upload", "hash": hash})).unwrap();
        assert_eq!(op.declared_hash().unwrap().as_str(), hash.to_uppercase());
        let id = format!("00000001{}", "cd".repeat(32));
        let op = Operation::parse(&json!({"name": "download", "id": id})).unwrap();
        assert_eq!(op.parcel_id().unwrap().as_str(), id.to_uppercase());
    }

    #[test]
    fn malformed_objects_are_refused() {
        assert!(Operation::parse(&json!({"name": "upload", "hash": "xyz"})).is_err());
        assert!(Operation::parse(&json!({"name": "download", "id": "00"})).is_err());
        assert!(Operation::parse(&json!({"name": "upload", "id": "00"})).is_err());
        assert!(Operation::parse(&json!({"hash": "00"})).is_err());
        assert!(Operation::parse(&json!({"name": "upload", "hash": 5})).is_err());
        assert!(Operation::parse(&json!(7)).is_err());
        for name in ["upload", "download", "remove"] {
            assert!(Operation::parse(&json!({"name": name})).is_err(), "{name}");
        }
        assert!(Operation::parse(&json!({"name": "upload", "hash": null})).is_err());
    }
}
