//! SHA-256 digests written as hex.

use std::fmt;

use sha2::{Digest, Sha256};

use super::{ParseError, parse_upper_hex};

/// A SHA-256 digest as 64 upper-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// Parses 64 hexadecimal digits in any case.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        parse_upper_hex(input, 64, "a SHA-256 hash").map(Self)
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_digest(&Sha256::digest(bytes))
    }

    /// Wraps a finished digest.
    pub fn from_digest(digest: &[u8]) -> Self {
        Self(hex::encode_upper(digest))
    }

    /// The canonical upper-case form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_body_is_the_known_constant() {
        // Cross-checked with `sha256sum </dev/null`.
        assert_eq!(
            Sha256Hex::of(b"").as_str(),
            "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        );
    }

    #[test]
    fn parse_compares_ignoring_case() {
        let lower = Sha256Hex::parse(&"ab".repeat(32)).unwrap();
        let upper = Sha256Hex::parse(&"AB".repeat(32)).unwrap();
        assert_eq!(lower, upper);
        assert!(Sha256Hex::parse(&"ab".repeat(31)).is_err());
    }
}
