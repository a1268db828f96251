//! Account addresses (docs/protocol.md, "Identities").

use std::fmt;

use p256::ecdsa::VerifyingKey;
use sha2::{Digest, Sha256};

use super::{ParseError, parse_upper_hex};

/// An AMO account address: the upper-case hex of the first 20 bytes of
/// SHA-256 over the account's 65-byte uncompressed P-256 public key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address(String);

impl Address {
    /// Parses 40 hexadecimal digits in any case.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        parse_upper_hex(input, 40, "an account address").map(Self)
    }

    /// The address of the account that holds `key`. A compressed key gives the
    /// same address as its uncompressed form.
    pub fn of_key(key: &VerifyingKey) -> Self {
        let uncompressed = key.to_sec1_point(false);
        let digest = Sha256::digest(uncompressed.as_bytes());
        Self(hex::encode_upper(&digest[..20]))
    }

    /// The canonical upper-case form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_case_and_emits_upper_case() {
        let address = Address::parse("1e6c1528e4c04f5c879be30f5a62121ce343308b").unwrap();
        assert_eq!(address.as_str(), "1E6C1528E4C04F5C879BE30F5A62121CE343308B");
    }

    #[test]
    fn refuses_wrong_length_and_non_hex() {
        assert!(Address::parse("1E6C").is_err());
        assert!(Address::parse("ZZ6C1528E4C04F5C879BE30F5A62121CE343308B").is_err());
        assert!(Address::parse("").is_err());
    }
}
