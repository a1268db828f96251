//! The proof of possession: the public key and signature headers
//! (docs/protocol.md, "Proof of possession").

use base64::{
    Engine, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use p256::ecdsa::{Signature, VerifyingKey, signature::Verifier};

use crate::{domain::Address, error::Error};

/// base64url with or without padding (the seed's form); the standard
/// alphabet is accepted as well.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The byte strings `text` may stand for: hex, then base64url, then base64.
fn decodings(text: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    let text = text.trim();
    let hex = hex::decode(text).ok();
    let url = URL_SAFE_LENIENT.decode(text).ok();
    let standard = STANDARD_LENIENT.decode(text).ok();
    hex.into_iter().chain(url).chain(standard)
}

/// An account's P-256 public key, from the `X-Public-Key` header.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a 65-byte uncompressed or 33-byte compressed SEC1 point written
    /// as hex or base64url. The point must lie on the curve.
    pub fn parse(text: &str) -> Result<Self, Error> {
        decodings(text)
            .filter(|bytes| bytes.len() == 65 || bytes.len() == 33)
            .find_map(|bytes| VerifyingKey::from_sec1_bytes(&bytes).ok())
            .map(Self)
            .ok_or_else(|| {
                Error::unauthenticated(
                    "invalid_public_key",
                    "X-Public-Key is not a P-256 public key (65 or 33 bytes, hex or base64url)",
                )
            })
    }

    /// The account address this key belongs to.
    pub fn address(&self) -> Address {
        Address::of_key(&self.0)
    }

    /// Checks `signature` over the ASCII bytes of `message` (ECDSA P-256,
    /// SHA-256). High-S signatures are valid.
    pub fn verify(&self, message: &str, signature: &TokenSignature) -> Result<(), Error> {
        self.0
            .verify(message.as_bytes(), &signature.0)
            .map_err(|_| {
                Error::unauthenticated(
                    "invalid_signature",
                    "X-Signature does not verify against X-Public-Key over the token (on a \
                     resumable upload after its creation: over the request)",
                )
            })
    }
}

/// An ECDSA signature from the `X-Signature` header.
#[derive(Debug, Clone)]
pub struct TokenSignature(Signature);

impl TokenSignature {
    /// Parses a 64-byte r‖s or a DER signature, written as hex or base64url.
    pub fn parse(text: &str) -> Result<Self, Error> {
        decodings(text)
            .find_map(|bytes| {
                if bytes.len() == 64 {
                    Signature::from_slice(&bytes).ok()
                } else {
                    Signature::from_der(&bytes).ok()
                }
            })
            .map(Self)
            .ok_or_else(|| {
                Error::unauthenticated(
                    "invalid_signature",
                    "X-Signature is not an ECDSA signature (64-byte r||s or DER, hex or base64url)",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::ecdsa::{SigningKey, signature::Signer};

    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_slice(&[0x42; 32]).unwrap()
    }

    #[test]
    fn keys_parse_in_every_accepted_encoding_to_one_address() {
        let public = key().verifying_key().to_owned();
        let long = public.to_sec1_point(false).as_bytes().to_vec();
        let short = public.to_sec1_point(true).as_bytes().to_vec();
        let address = Address::of_key(&public);
        for text in [
            hex::encode(&long),
            hex::encode_upper(&long),
            hex::encode(&short),
            URL_SAFE_NO_PAD.encode(&long),
            URL_SAFE_LENIENT.encode(&long),
            URL_SAFE_NO_PAD.encode(&short),
        ] {
            assert_eq!(
                PublicKey::parse(&text).unwrap().address(),
                address,
                "{text}"
            );
        }
    }

    #[test]
    fn points_off_the_curve_and_wrong_lengths_are_refused() {
        let mut long = key()
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        long[64] ^= 1;
        assert!(PublicKey::parse(&hex::encode(&long)).is_err());
        assert!(PublicKey::parse(&hex::encode(&long[..64])).is_err());
        assert!(PublicKey::parse("").is_err());
    }

    #[test]
    fn signatures_verify_as_rs_der_base64url_and_high_s() {
        let signer = key();
        let public = PublicKey(signer.verifying_key().to_owned());
        let message = "token.to.sign";
        let signature: Signature = signer.sign(message.as_bytes());
        let (r, s) = signature.split_scalars();
        let high_s = Signature::from_scalars(r, -s).unwrap();
        assert_ne!(high_s.to_bytes(), signature.to_bytes());
        for text in [
            hex::encode(signature.to_bytes()),
            hex::encode(signature.to_der().as_bytes()),
            URL_SAFE_NO_PAD.encode(signature.to_bytes()),
            URL_SAFE_LENIENT.encode(signature.to_der().as_bytes()),
            hex::encode(high_s.to_bytes()),
        ] {
            let parsed = TokenSignature::parse(&text).unwrap();
            assert!(public.verify(message, &parsed).is_ok(), "{text}");
            assert!(public.verify("another message", &parsed).is_err(), "{text}");
        }
        assert!(TokenSignature::parse("zz").is_err());
        assert!(TokenSignature::parse(&"00".repeat(64)).is_err());
    }
}
