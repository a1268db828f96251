//! The account key file: a P-256 private key as 64 hex digits, the 32-byte
//! scalar form the Go client writes.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write},
    path::Path,
};

use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer},
    elliptic_curve::Generate,
};

use crate::domain::Address;

use super::error::{CliError, CliResult};

/// An account's P-256 signing key.
pub struct AccountKey(SigningKey);

impl AccountKey {
    /// A new random key from the operating system's generator.
    pub fn generate() -> CliResult<Self> {
        SigningKey::try_generate()
            .map(Self)
            .map_err(|err| CliError::failed(format!("cannot get random bytes: {err}")))
    }

    /// Parses 64 hex digits (any case, surrounding whitespace and a `0x`
    /// prefix allowed): a scalar in 1..n-1.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        if digits.len() != 64 {
            return Err(format!(
                "a key is 64 hex digits, this one has {} characters",
                digits.len()
            ));
        }
        let bytes = hex::decode(digits).map_err(|_| "a key is 64 hex digits".to_owned())?;
        SigningKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| "not a valid P-256 private key".to_owned())
    }

    /// Reads the key file at `path`.
    pub fn load(path: &Path) -> CliResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            CliError::failed(format!("cannot read key file {}: {err}", path.display()))
        })?;
        Self::parse(&text).map_err(|why| {
            CliError::failed(format!("key file {} is not usable: {why}", path.display()))
        })
    }

    /// Writes the key to a new file at `path`, readable by its owner only
    /// (mode 0600 on Unix). An existing file is never replaced.
    pub fn save_new(&self, path: &Path) -> CliResult<()> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|err| {
            CliError::failed(if err.kind() == ErrorKind::AlreadyExists {
                format!("{} already exists; not overwriting it", path.display())
            } else {
                format!("cannot create key file {}: {err}", path.display())
            })
        })?;
        file.write_all(self.to_hex().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|err| {
                CliError::failed(format!("cannot write key file {}: {err}", path.display()))
            })
    }

    /// The private scalar as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The account address, as the service derives it.
    pub fn address(&self) -> Address {
        Address::of_key(self.0.verifying_key())
    }

    /// The 65-byte uncompressed public key as lower-case hex (`X-Public-Key`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_sec1_point(false).as_bytes())
    }

    /// ECDSA P-256 with SHA-256 over the token's ASCII bytes, as 64-byte
    /// r‖s hex (`X-Signature`).
    pub fn sign_token(&self, token: &str) -> String {
        self.sign_text(token)
    }

    /// ECDSA P-256 with SHA-256 over the ASCII bytes of `text`, as 64-byte
    /// r‖s hex: the `X-Signature` of a request whose signature covers more
    /// than the token (a request on a resumable upload).
    pub fn sign_text(&self, text: &str) -> String {
        let signature: Signature = self.0.sign(text.as_bytes());
        hex::encode(signature.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::proof::{PublicKey, TokenSignature};

    use super::*;

    #[test]
    fn the_hex_form_round_trips_and_the_service_accepts_the_proof() {
        let key = AccountKey::generate().unwrap();
        let again = AccountKey::parse(&format!("  0x{}\n", key.to_hex())).unwrap();
        assert_eq!(again.to_hex(), key.to_hex());
        assert_eq!(key.to_hex().len(), 64);

        let public = PublicKey::parse(&key.public_key_hex()).unwrap();
        assert_eq!(public.address(), key.address());
        let signature = TokenSignature::parse(&key.sign_token("a.b.c")).unwrap();
        assert!(public.verify("a.b.c", &signature).is_ok());
        assert!(public.verify("a.b.d", &signature).is_err());
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(AccountKey::parse("").is_err());
        assert!(AccountKey::parse(&"0".repeat(64)).is_err());
        assert!(AccountKey::parse(&"g".repeat(64)).is_err());
        assert!(AccountKey::parse(&"1".repeat(63)).is_err());
    }
}
