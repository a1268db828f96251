//! Storage ids and parcel ids (docs/protocol.md, "Identities").

use std::fmt;

use super::{ParseError, Sha256Hex, parse_upper_hex};

/// The u32 that names this storage service on the AMO chain, written as 8
/// upper-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorageId(pub u32);

impl fmt::Display for StorageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

/// A parcel id: the storage id (8 hex digits) followed by the SHA-256 of the
/// parcel body (64 hex digits), upper case. Only hex digits can be in it, so
/// it is safe as an object key or a file name by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParcelId(String);

impl ParcelId {
    /// Parses 72 hexadecimal digits in any case.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        parse_upper_hex(input, 72, "a parcel id").map(Self)
    }

    /// The id of a body with digest `hash`, stored on `storage`.
    pub fn new(storage: StorageId, hash: &Sha256Hex) -> Self {
        Self(format!("{storage}{hash}"))
    }

    /// The content hash part of the id.
    pub fn content_hash(&self) -> Sha256Hex {
        Sha256Hex::parse(&self.0[8..]).expect("a parsed parcel id ends with 64 hex digits")
    }

    /// The canonical upper-case form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ParcelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_id_is_eight_upper_hex_digits() {
        assert_eq!(StorageId(1).to_string(), "00000001");
        assert_eq!(StorageId(0xABCDEF12).to_string(), "ABCDEF12");
    }

    #[test]
    fn id_is_storage_id_then_content_hash() {
        let hash = Sha256Hex::of(b"parcel");
        let id = ParcelId::new(StorageId(1), &hash);
        assert_eq!(id.as_str(), format!("00000001{hash}"));
        assert_eq!(id.content_hash(), hash);
        assert_eq!(ParcelId::parse(&id.as_str().to_lowercase()).unwrap(), id);
    }

    #[test]
    fn refuses_traversal_and_wrong_lengths() {
        assert!(ParcelId::parse("../../etc/passwd").is_err());
        assert!(ParcelId::parse(&format!("00000001{}/..", "A".repeat(61))).is_err());
        assert!(ParcelId::parse(&"A".repeat(71)).is_err());
        assert!(ParcelId::parse(&"A".repeat(73)).is_err());
    }
}
