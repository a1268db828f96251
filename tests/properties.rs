//! Property tests of every parser of untrusted input: parcel ids, addresses
//! and hashes, public keys and signatures in every encoding, operations, the
//! `Range` header, parcel metadata and the one-time JWT; and the checked
//! sum of an offset and a declared length against an upload's length.
//!
//! Four kinds of property run here: no parser panics on any input (Unicode,
//! control characters, lossy bytes), a valid value rendered then parsed gives
//! the same value, a mutated value (one character changed, a wrong length, a
//! traversal string) is refused, and a proof verifies over its own token with
//! its own key and never over another token or with another key.
//!
//! Case counts scale with `PROPTEST_CASES` (256 unless set): cheap parsers
//! run 8 times that many cases, JSON and JWT ones 4 or 2 times, the
//! elliptic-curve ones once.

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use amo_storage::{
    auth::{
        jwt::TokenCodec,
        proof::{PublicKey, TokenSignature},
    },
    domain::{
        Address, MetadataError, Operation, OperationKind, ParcelId, ParcelMetadata, RangeRequest,
        Sha256Hex, StorageId, overrun,
    },
    error::Error,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey, signature::Signer};
use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    sample::{Index, select},
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------
// Case counts
// ---------------------------------------------------------------------------

fn base_cases() -> u32 {
    ProptestConfig::default().cases
}

/// String parsers and the range resolver: microseconds a case.
fn cheap() -> ProptestConfig {
    ProptestConfig::with_cases(base_cases() * 8)
}

/// JSON values and HMAC-SHA256 tokens.
fn medium() -> ProptestConfig {
    ProptestConfig::with_cases(base_cases() * 4)
}

/// Several JSON documents built, serialised and parsed a case.
fn heavy() -> ProptestConfig {
    ProptestConfig::with_cases(base_cases() * 2)
}

/// P-256 key derivation, signing and verification.
fn crypto() -> ProptestConfig {
    ProptestConfig::with_cases(base_cases())
}

// ---------------------------------------------------------------------------
// Shared strategies and helpers
// ---------------------------------------------------------------------------

/// Text of every kind: any Unicode scalar values (NUL and other controls
/// included), bytes read lossily, ASCII with controls, and strings made of
/// hex digits, dots, slashes, percent signs and padding.
fn wild_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..100).prop_map(|chars| chars.into_iter().collect()),
        vec(any::<u8>(), 0..100).prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        "[\\x00-\\x7f]{0,100}",
        "[0-9a-fA-F./\\\\%\\x00 +=_-]{0,140}",
    ]
}

/// Traversal strings, separators, NUL, whitespace and look-alike characters.
const HOSTILE: &[&str] = &[
    "../",
    "..",
    "..\\",
    "./",
    "%2e%2e",
    "%2E%2E%2F",
    "%00",
    "/",
    "\\",
    "\0",
    " ",
    "\t",
    "\n",
    "\r\n",
    "0x",
    "+",
    "-",
    "é",
    "\u{FF21}", // fullwidth A
    "\u{0663}", // Arabic-Indic digit three
    "\u{202E}", // right-to-left override
    "\u{FEFF}", // byte order mark
];

/// What a fixed-length hex parser must answer: the upper-case text when it
/// is exactly `digits` ASCII hex digits, a refusal otherwise.
fn expected_hex(input: &str, digits: usize) -> Option<String> {
    (input.chars().count() == digits && input.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| input.to_ascii_uppercase())
}

/// Hex digits around `digits` long, sometimes with one foreign character.
fn hex_like(digits: usize) -> impl Strategy<Value = String> {
    (
        proptest::string::string_regex(&format!("[0-9a-fA-F]{{{},{}}}", digits - 2, digits + 2))
            .expect("a valid regex"),
        any::<Index>(),
        proptest::option::of(select(HOSTILE)),
    )
        .prop_map(|(text, at, hostile)| match hostile {
            Some(hostile) => splice(&text, at, 1, hostile),
            None => text,
        })
}

/// `text` with `cut` characters from position `at` replaced by `insert`.
fn splice(text: &str, at: Index, cut: usize, insert: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let start = at.index(chars.len() + 1);
    let end = (start + cut).min(chars.len());
    chars[..start]
        .iter()
        .chain(insert.chars().collect::<Vec<_>>().iter())
        .chain(chars[end..].iter())
        .collect()
}

/// `text` with the letters at the positions `mask` selects in the other case.
fn recase(text: &str, mask: u128) -> String {
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 128) & 1 == 1 {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// The base64url alphabet, in value order.
const URL_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters in neither the hex nor the base64url alphabet. `+` and `/` are
/// left out: the parsers accept the standard base64 alphabet too, where they
/// mean what `-` and `_` mean in base64url.
const FOREIGN: &[char] = &[
    '.', '!', '=', '%', '\0', '\u{7f}', ' ', '\n', '~', '*', 'é', '\u{FF21}',
];

#[derive(Debug, Clone, Copy)]
enum Alphabet {
    Hex,
    Base64Url,
}

/// One character of `text` (padding excluded) changed so that the value the
/// text stands for changes: a digit of another value in the same alphabet
/// (hex in either case), or a character foreign to the alphabet.
fn mutate(text: &str, alphabet: Alphabet, at: Index, pick: u8, foreign: bool) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let positions: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] != '=').collect();
    let i = positions[at.index(positions.len())];
    let old = chars[i];
    chars[i] = if foreign {
        FOREIGN[usize::from(pick) % FOREIGN.len()]
    } else {
        match alphabet {
            Alphabet::Hex => {
                let value = old.to_digit(16).expect("a hex digit");
                let new = (value + 1 + u32::from(pick) % 15) % 16;
                let digit = char::from_digit(new, 16).expect("a hex value");
                if pick & 0x80 == 0 {
                    digit
                } else {
                    digit.to_ascii_uppercase()
                }
            }
            Alphabet::Base64Url => {
                let value = URL_ALPHABET
                    .iter()
                    .position(|&b| char::from(b) == old)
                    .expect("a base64url digit");
                let new = (value + 1 + usize::from(pick) % 63) % 64;
                char::from(URL_ALPHABET[new])
            }
        }
    };
    chars.into_iter().collect()
}

/// A P-256 private key from 32 random bytes (the rare invalid scalar is
/// filtered out).
fn signing_key() -> impl Strategy<Value = SigningKey> {
    any::<[u8; 32]>().prop_filter_map("a scalar in 1..n-1", |bytes| {
        SigningKey::from_slice(&bytes).ok()
    })
}

/// What a client may sign: JWT-shaped text or anything at all.
fn token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{10,60}\\.[A-Za-z0-9_-]{10,200}\\.[A-Za-z0-9_-]{43}",
        wild_text(),
    ]
}

/// The texts a key or signature header may hold for `bytes` in the URL-safe
/// alphabets: hex in both cases, base64url with and without padding.
fn url_safe_encodings(bytes: &[u8]) -> [(Alphabet, String); 4] {
    [
        (Alphabet::Hex, hex::encode(bytes)),
        (Alphabet::Hex, hex::encode_upper(bytes)),
        (Alphabet::Base64Url, URL_SAFE_NO_PAD.encode(bytes)),
        (Alphabet::Base64Url, URL_SAFE.encode(bytes)),
    ]
}

/// Every text a key or signature header may hold for `bytes`: the URL-safe
/// ones, standard base64, and hex with surrounding whitespace.
fn all_encodings(bytes: &[u8]) -> Vec<String> {
    let mut texts: Vec<String> = url_safe_encodings(bytes)
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    texts.push(STANDARD.encode(bytes));
    texts.push(format!(" \t{}\r\n", hex::encode(bytes)));
    texts
}

fn uncompressed(key: &VerifyingKey) -> Vec<u8> {
    key.to_sec1_point(false).as_bytes().to_vec()
}

fn compressed(key: &VerifyingKey) -> Vec<u8> {
    key.to_sec1_point(true).as_bytes().to_vec()
}

/// Whether `err` is a 401 with this code.
fn is_unauthenticated(err: &Error, expected: &str) -> bool {
    matches!(err, Error::Unauthenticated { code, .. } if *code == expected)
}

/// Arbitrary JSON: every scalar kind (finite floats, Unicode and control
/// characters in strings and keys), nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        json_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            json_object(inner).prop_map(Value::Object),
        ]
    })
}

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..24).prop_map(|chars| chars.into_iter().collect()),
        "[a-z]{0,12}",
        select(HOSTILE).prop_map(str::to_owned),
    ]
}

fn json_object(values: impl Strategy<Value = Value>) -> impl Strategy<Value = Map<String, Value>> {
    btree_map(json_text(), values, 0..6).prop_map(|map| map.into_iter().collect())
}

fn address_from(bytes: [u8; 20]) -> Address {
    Address::parse(&hex::encode(bytes)).expect("40 hex digits")
}

// ---------------------------------------------------------------------------
// Parcel ids, addresses and hex digests
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cheap())]

    /// Each fixed-length hex parser accepts exactly the strings of its
    /// length made of ASCII hex digits, and returns them upper-cased; it
    /// refuses everything else and never panics.
    #[test]
    fn hex_parsers_accept_exactly_their_digits(
        text in prop_oneof![wild_text(), hex_like(40), hex_like(64), hex_like(72)],
    ) {
        let id = ParcelId::parse(&text).ok();
        prop_assert_eq!(id.as_ref().map(ToString::to_string), expected_hex(&text, 72));
        if let Some(id) = id {
            prop_assert_eq!(id.content_hash().to_string(), &id.as_str()[8..]);
        }
        prop_assert_eq!(
            Address::parse(&text).ok().map(|a| a.to_string()),
            expected_hex(&text, 40)
        );
        prop_assert_eq!(
            Sha256Hex::parse(&text).ok().map(|h| h.to_string()),
            expected_hex(&text, 64)
        );
    }

    /// An id rendered then parsed, in any mix of cases, is the same id; it
    /// is the storage id then the body's SHA-256, 72 upper hex digits.
    #[test]
    fn parcel_ids_and_digests_round_trip(
        storage in any::<u32>(),
        body in vec(any::<u8>(), 0..64),
        mask in any::<u128>(),
    ) {
        let hash = Sha256Hex::of(&body);
        prop_assert_eq!(hash.as_str(), hex::encode_upper(Sha256::digest(&body)));
        prop_assert_eq!(Sha256Hex::parse(&recase(hash.as_str(), mask)).unwrap(), hash.clone());

        let id = ParcelId::new(StorageId(storage), &hash);
        let text = id.to_string();
        prop_assert_eq!(text.len(), 72);
        prop_assert!(text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')));
        prop_assert_eq!(&text[..8], format!("{storage:08X}"));
        let back = ParcelId::parse(&recase(&text, mask)).unwrap();
        prop_assert_eq!(&back, &id);
        prop_assert_eq!(back.content_hash(), hash);
    }

    /// Addresses in any mix of cases parse to their upper-case form.
    #[test]
    fn addresses_round_trip(bytes in any::<[u8; 20]>(), mask in any::<u128>()) {
        let address = address_from(bytes);
        prop_assert_eq!(address.as_str(), hex::encode_upper(bytes));
        prop_assert_eq!(Address::parse(&recase(address.as_str(), mask)).unwrap(), address.clone());
        prop_assert_eq!(Address::parse(&address.to_string()).unwrap(), address);
    }

    /// A valid id, address or hash with a traversal string, separator, NUL
    /// or look-alike spliced in anywhere (replacing up to 3 characters) is
    /// refused by every hex parser.
    #[test]
    fn hostile_splices_are_refused(
        bytes in any::<[u8; 36]>(),
        which in 0..3usize,
        at in any::<Index>(),
        cut in 0..4usize,
        hostile in select(HOSTILE),
    ) {
        let valid = match which {
            0 => hex::encode(bytes),
            1 => hex::encode_upper(&bytes[..20]),
            _ => hex::encode(&bytes[..32]),
        };
        let spliced = splice(&valid, at, cut, hostile);
        prop_assert!(ParcelId::parse(&spliced).is_err(), "{:?}", spliced);
        prop_assert!(Address::parse(&spliced).is_err(), "{:?}", spliced);
        prop_assert!(Sha256Hex::parse(&spliced).is_err(), "{:?}", spliced);
    }
}

// ---------------------------------------------------------------------------
// Public keys and signatures (src/auth/proof.rs)
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(medium())]

    /// Neither header parser panics on any text.
    #[test]
    fn key_and_signature_parsers_never_panic(text in wild_text()) {
        let _ = PublicKey::parse(&text);
        let _ = TokenSignature::parse(&text);
    }

    /// Lowercase hex of any bytes is a key exactly when the bytes are a 33-
    /// or 65-byte SEC1 point on the curve; every other length is refused.
    /// (Lowercase hex never reads as base64 that starts with a SEC1 tag.)
    #[test]
    fn keys_of_wrong_length_or_off_the_curve_are_refused(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..140),
            (select(&[2u8, 3, 4][..]), prop_oneof![Just(32usize), Just(64usize), 0..70usize])
                .prop_flat_map(|(tag, len)| vec(any::<u8>(), len).prop_map(move |mut rest| {
                    rest.insert(0, tag);
                    rest
                })),
        ],
    ) {
        let accepted = PublicKey::parse(&hex::encode(&bytes)).is_ok();
        let valid = matches!(bytes.len(), 33 | 65) && VerifyingKey::from_sec1_bytes(&bytes).is_ok();
        prop_assert_eq!(accepted, valid);
        // base64url of bytes of the wrong length is refused too, unless the
        // text also reads as hex of a right length (a few short texts).
        let text = URL_SAFE_NO_PAD.encode(&bytes);
        let also_hex = hex::decode(&text).is_ok_and(|b| matches!(b.len(), 33 | 65));
        if !matches!(bytes.len(), 33 | 65) && !also_hex {
            prop_assert!(PublicKey::parse(&text).is_err(), "{:?}", text);
        }
    }

    /// Lowercase hex of any bytes is a signature exactly when the bytes are
    /// a 64-byte r‖s with r and s in 1..n-1, or a DER signature. 43-byte
    /// strings are left out: their 86 hex digits also read as the base64 of
    /// 64 bytes, which the parser tries as well.
    #[test]
    fn signatures_of_wrong_length_or_out_of_range_are_refused(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..140),
            vec(any::<u8>(), 64),
            (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(r, s)| {
                Signature::from_scalars(r, s).map(|sig| sig.to_der().as_bytes().to_vec()).unwrap_or_default()
            }),
        ].prop_filter("not 43 bytes", |b| b.len() != 43),
    ) {
        let accepted = TokenSignature::parse(&hex::encode(&bytes)).is_ok();
        let valid = if bytes.len() == 64 {
            Signature::from_slice(&bytes).is_ok()
        } else {
            Signature::from_der(&bytes).is_ok()
        };
        prop_assert_eq!(accepted, valid, "{}", hex::encode(&bytes));
    }
}

proptest! {
    #![proptest_config(crypto())]

    /// A key in any accepted encoding (65 or 33 bytes; hex in either case,
    /// base64url with or without padding, standard base64, whitespace
    /// around) parses to the key, whose address is the upper hex of the
    /// first 20 bytes of SHA-256 over the 65-byte form.
    #[test]
    fn keys_round_trip_in_every_encoding(key in signing_key()) {
        let public = key.verifying_key();
        let long = uncompressed(public);
        let expected = hex::encode_upper(&Sha256::digest(&long)[..20]);
        prop_assert_eq!(Address::of_key(public).to_string(), expected.clone());
        for form in [long.clone(), compressed(public)] {
            for text in all_encodings(&form) {
                let parsed = PublicKey::parse(&text);
                prop_assert!(parsed.is_ok(), "{:?}", text);
                prop_assert_eq!(parsed.unwrap().address().to_string(), expected.clone());
            }
        }
    }

    /// A signature over a token, in any form (r‖s, DER, and the high-S twin)
    /// and any encoding, verifies over that token with that key, and never
    /// over another token or with another key.
    #[test]
    fn a_proof_verifies_only_over_its_token_with_its_key(
        key in signing_key(),
        other_key in signing_key(),
        token in token_text(),
        other_token in token_text(),
        pick in any::<Index>(),
        refused in 0..4usize,
    ) {
        prop_assume!(token != other_token && key.verifying_key() != other_key.verifying_key());
        let public = PublicKey::parse(&hex::encode(uncompressed(key.verifying_key()))).unwrap();
        let other_public =
            PublicKey::parse(&hex::encode(compressed(other_key.verifying_key()))).unwrap();
        let signature: Signature = key.sign(token.as_bytes());
        let (r, s) = signature.split_scalars();
        let high_s = Signature::from_scalars(r, -s).unwrap();
        let forms = [
            signature.to_bytes().to_vec(),
            signature.to_der().as_bytes().to_vec(),
            high_s.to_bytes().to_vec(),
            high_s.to_der().as_bytes().to_vec(),
        ];
        for (i, form) in forms.iter().enumerate() {
            let texts = all_encodings(form);
            // Each form verifies in one encoding picked at random; one form a
            // case, picked at random, also checks that every other encoding
            // parses to the same signature (its Debug form holds r and s),
            // and is the one the refusals use.
            let parsed = TokenSignature::parse(&texts[pick.index(texts.len())]).unwrap();
            prop_assert!(public.verify(&token, &parsed).is_ok());
            if i == refused {
                for text in &texts {
                    let again = TokenSignature::parse(text);
                    prop_assert!(again.is_ok(), "{:?}", text);
                    prop_assert_eq!(format!("{:?}", again.unwrap()), format!("{parsed:?}"));
                }
                let err = public.verify(&other_token, &parsed).unwrap_err();
                prop_assert!(is_unauthenticated(&err, "invalid_signature"));
                prop_assert!(other_public.verify(&token, &parsed).is_err());
            }
        }
    }

    /// One character of a valid signature changed (a digit of another value,
    /// or a character foreign to the encoding) is refused: either it no
    /// longer parses, or it does not verify.
    #[test]
    fn mutated_signatures_are_refused(
        key in signing_key(),
        token in token_text(),
        der in any::<bool>(),
        encoding in 0..4usize,
        at in any::<Index>(),
        pick in any::<u8>(),
        foreign in prop::bool::weighted(0.2),
    ) {
        let public = PublicKey::parse(&hex::encode(uncompressed(key.verifying_key()))).unwrap();
        let signature: Signature = key.sign(token.as_bytes());
        let bytes = if der {
            signature.to_der().as_bytes().to_vec()
        } else {
            signature.to_bytes().to_vec()
        };
        let (alphabet, text) = url_safe_encodings(&bytes)[encoding].clone();
        prop_assert!(public.verify(&token, &TokenSignature::parse(&text).unwrap()).is_ok());
        let mutated = mutate(&text, alphabet, at, pick, foreign);
        prop_assert_ne!(&mutated, &text);
        if let Ok(parsed) = TokenSignature::parse(&mutated) {
            prop_assert!(public.verify(&token, &parsed).is_err(), "{} -> {}", text, mutated);
        }
    }

    /// One character of a valid key changed is refused: either it no longer
    /// parses (a point off the curve, a bad tag, a bad digit), or it is
    /// another key, of another address, that the signature does not verify
    /// with.
    #[test]
    fn mutated_keys_are_refused(
        key in signing_key(),
        short in any::<bool>(),
        encoding in 0..4usize,
        at in any::<Index>(),
        pick in any::<u8>(),
        foreign in prop::bool::weighted(0.2),
    ) {
        let public = key.verifying_key();
        let address = Address::of_key(public);
        let token = "header.payload.mac";
        let signature = TokenSignature::parse(&hex::encode(
            Signer::<Signature>::sign(&key, token.as_bytes()).to_bytes(),
        ))
        .unwrap();
        let bytes = if short { compressed(public) } else { uncompressed(public) };
        let (alphabet, text) = url_safe_encodings(&bytes)[encoding].clone();
        let mutated = mutate(&text, alphabet, at, pick, foreign);
        prop_assert_ne!(&mutated, &text);
        if let Ok(parsed) = PublicKey::parse(&mutated) {
            prop_assert_ne!(parsed.address(), address.clone(), "{} -> {}", text, mutated);
            prop_assert!(parsed.verify(token, &signature).is_err(), "{} -> {}", text, mutated);
        }
    }
}

// ---------------------------------------------------------------------------
// Operations (src/domain/operation.rs)
// ---------------------------------------------------------------------------

const KINDS: [OperationKind; 3] = [
    OperationKind::Upload,
    OperationKind::Download,
    OperationKind::Remove,
];

fn scope_key(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Upload => "hash",
        OperationKind::Download | OperationKind::Remove => "id",
    }
}

fn scope_digits(kind: OperationKind) -> usize {
    match kind {
        OperationKind::Upload => 64,
        OperationKind::Download | OperationKind::Remove => 72,
    }
}

/// The scope of a parsed operation, as text.
fn scope_of(operation: &Operation) -> Option<String> {
    match operation.kind() {
        OperationKind::Upload => operation.declared_hash().map(ToString::to_string),
        _ => operation.parcel_id().map(ToString::to_string),
    }
}

proptest! {
    #![proptest_config(cheap())]

    /// Both forms round-trip: a bare name is the unscoped operation, and an
    /// object with its scope (any case) gives the same kind and the
    /// upper-case scope. An object without its scope, or with a null one,
    /// is refused: the bare name is the unscoped form.
    #[test]
    fn operations_round_trip_in_both_forms(
        kind in select(&KINDS[..]),
        bytes in any::<[u8; 36]>(),
        mask in any::<u128>(),
        form in 0..4usize,
    ) {
        let digits = hex::encode_upper(&bytes[..scope_digits(kind) / 2]);
        let (value, scope) = match form {
            0 => (json!(kind.name()), None),
            1 | 2 => {
                let value = match form {
                    1 => json!({"name": kind.name()}),
                    _ => json!({"name": kind.name(), scope_key(kind): null}),
                };
                prop_assert!(Operation::parse(&value).is_err(), "{}", value);
                return Ok(());
            }
            _ => (
                json!({scope_key(kind): recase(&digits, mask), "name": kind.name()}),
                Some(digits),
            ),
        };
        let operation = Operation::parse(&value).unwrap();
        prop_assert_eq!(operation.kind(), kind);
        prop_assert_eq!(scope_of(&operation), scope);
        // The value a token carries parses the same way again.
        let reparsed: Value = serde_json::from_str(&value.to_string()).unwrap();
        prop_assert_eq!(Operation::parse(&reparsed).unwrap(), operation);
    }
}

proptest! {
    #![proptest_config(heavy())]

    /// Objects with another key, the other kind's scope key, a scope that is
    /// not a string, or a name in another case or with spaces are refused;
    /// a scope string is accepted exactly when it is its hex parser's input.
    #[test]
    fn malformed_operations_are_refused(
        kind in select(&KINDS[..]),
        extra in "[a-z_]{1,8}",
        junk in json_value(),
        scope in prop_oneof![wild_text(), hex_like(64), hex_like(72)],
        name_case in any::<u128>(),
    ) {
        let key = scope_key(kind);
        if extra != "name" && extra != key {
            let value = json!({"name": kind.name(), extra.clone(): junk.clone()});
            prop_assert!(Operation::parse(&value).is_err(), "{}", value);
        }
        let wrong_key = if key == "id" { "hash" } else { "id" };
        let value = json!({"name": kind.name(), wrong_key: junk.clone()});
        prop_assert!(Operation::parse(&value).is_err(), "{}", value);
        if !junk.is_string() {
            let value = json!({"name": kind.name(), key: junk.clone()});
            prop_assert!(Operation::parse(&value).is_err(), "{}", value);
        }
        let name = recase(kind.name(), name_case);
        for name in [name.clone(), format!(" {name}"), format!("{name}\0")] {
            if name != kind.name() {
                prop_assert!(Operation::parse(&json!(name)).is_err(), "{:?}", name);
                prop_assert!(Operation::parse(&json!({"name": name})).is_err(), "{:?}", name);
            }
        }
        let value = json!({"name": kind.name(), key: scope.clone()});
        let parsed = Operation::parse(&value).ok();
        prop_assert_eq!(
            parsed.as_ref().and_then(scope_of),
            expected_hex(&scope, scope_digits(kind))
        );
    }
    /// No JSON value makes the operation parser panic, and what it accepts
    /// is a string name or an object with a string "name".
    #[test]
    fn operation_parser_never_panics(value in prop_oneof![
        json_value(),
        (select(&["upload", "download", "remove", "Upload", ""][..]), json_object(json_value()))
            .prop_map(|(name, mut fields)| {
                fields.insert("name".into(), json!(name));
                Value::Object(fields)
            }),
    ]) {
        if Operation::parse(&value).is_ok() {
            let name = value.as_str().or_else(|| value.get("name").and_then(Value::as_str));
            prop_assert!(matches!(name, Some("upload" | "download" | "remove")), "{}", value);
        }
    }
}

// ---------------------------------------------------------------------------
// The Range header (src/domain/byte_range.rs)
// ---------------------------------------------------------------------------

/// One side of a range spec.
#[derive(Debug, Clone)]
enum Bound {
    Absent,
    /// ASCII digits, maybe with leading zeros, maybe past u64.
    Digits(String),
    /// Not a valid position: a sign, a fraction, letters.
    Invalid(String),
}

impl Bound {
    fn text(&self) -> &str {
        match self {
            Self::Absent => "",
            Self::Digits(text) | Self::Invalid(text) => text,
        }
    }

    /// The exact value: the generators below write at most 38 significant
    /// digits, which u128 holds. (Longer ones are in the invariants test.)
    fn value(digits: &str) -> u128 {
        let significant = digits.trim_start_matches('0');
        assert!(significant.len() <= 38, "{digits}");
        significant.parse().unwrap_or(0)
    }
}

/// Sizes near the edges: empty, tiny, and u64's top.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..4u64,
        0..100_000u64,
        any::<u64>(),
        Just(u64::MAX),
        Just(u64::MAX - 1),
    ]
}

fn bound(size: u64) -> impl Strategy<Value = Bound> {
    prop_oneof![
        1 => Just(Bound::Absent),
        2 => prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(size.saturating_sub(1)),
            Just(size),
            Just(size.saturating_add(1)),
            0..=size.saturating_add(2),
            any::<u64>(),
            Just(u64::MAX),
        ]
        .prop_map(|n| Bound::Digits(n.to_string())),
        1 => prop_oneof![
            Just("18446744073709551616".to_owned()),
            "[1-9][0-9]{19,37}",
            "0{1,30}[0-9]{0,6}",
        ]
        .prop_map(Bound::Digits),
        1 => prop_oneof![
            "-[0-9]{1,25}",
            "\\+[0-9]{1,5}",
            "[0-9]{1,3}\\.[0-9]",
            "[0-9]{0,3}[a-zA-Z_][0-9]{0,3}",
            "[\u{0660}-\u{0669}]{1,3}",
        ]
        .prop_map(Bound::Invalid),
    ]
}

/// RFC 9110 §14.1.2, computed exactly in u128: what a single range spec
/// asks of a body of `size` bytes.
fn rfc_range(first: &Bound, last: &Bound, size: u64) -> RangeRequest {
    let size = u128::from(size);
    let part = |first: u128, last: u128| RangeRequest::Part {
        first: u64::try_from(first).unwrap(),
        last: u64::try_from(last).unwrap(),
    };
    match (first, last) {
        (Bound::Invalid(_), _) | (_, Bound::Invalid(_)) | (Bound::Absent, Bound::Absent) => {
            RangeRequest::Whole
        }
        (Bound::Absent, Bound::Digits(suffix)) => match Bound::value(suffix) {
            0 => RangeRequest::Unsatisfiable,
            _ if size == 0 => RangeRequest::Unsatisfiable,
            n if n < size => part(size - n, size - 1),
            _ => part(0, size - 1),
        },
        (Bound::Digits(first), Bound::Absent) => match Bound::value(first) {
            first if first < size => part(first, size - 1),
            _ => RangeRequest::Unsatisfiable,
        },
        (Bound::Digits(first), Bound::Digits(last)) => {
            let (first, last) = (Bound::value(first), Bound::value(last));
            if first > last {
                RangeRequest::Whole
            } else if first < size {
                part(first, last.min(size - 1))
            } else {
                RangeRequest::Unsatisfiable
            }
        }
    }
}

proptest! {
    #![proptest_config(cheap())]

    /// Any header against any size: no panic, and a part lies within
    /// [0, size) with first <= last, so its length neither underflows nor
    /// exceeds the body.
    #[test]
    fn any_range_header_resolves_within_the_body(
        header in prop_oneof![
            wild_text(),
            wild_text().prop_map(|t| format!("bytes={t}")),
            "bytes=[0-9 ,-]{0,50}",
        ],
        size in size(),
    ) {
        match RangeRequest::resolve(Some(&header), size) {
            RangeRequest::Part { first, last } => {
                prop_assert!(first <= last && last < size, "{:?} {} -> {}..={}", header, size, first, last);
                prop_assert!(last - first < size);
            }
            RangeRequest::Unsatisfiable | RangeRequest::Whole => {}
        }
        prop_assert_eq!(RangeRequest::resolve(None, size), RangeRequest::Whole);
    }

    /// Any part of a body, written as a header in each form that can name
    /// it (`a-b`, `a-` and `-n` for a part that ends the body), resolves to
    /// exactly that part.
    #[test]
    fn a_written_range_resolves_to_itself(
        size in prop_oneof![1..1000u64, 1..=u64::MAX, Just(u64::MAX)],
        a in any::<u64>(),
        b in any::<u64>(),
        form in 0..3usize,
    ) {
        let (first, last) = (a.min(b) % size, a.max(b) % size);
        let (first, last) = (first.min(last), first.max(last));
        let (header, last) = match form {
            0 => (format!("bytes={first}-{last}"), last),
            1 => (format!("bytes={first}-"), size - 1),
            _ => (format!("bytes=-{}", size - first), size - 1),
        };
        prop_assert_eq!(
            RangeRequest::resolve(Some(&header), size),
            RangeRequest::Part { first, last },
            "{} size {}", header, size
        );
    }

    /// Single ranges of every form, with numbers at the edges, past u64
    /// (20+ digits), with leading zeros, signed or not numbers at all,
    /// resolve as RFC 9110 says; several ranges, another unit or a
    /// differently cased unit give the whole body.
    #[test]
    fn single_ranges_resolve_as_rfc_9110_says(
        (size, first, last) in size().prop_flat_map(|size| (Just(size), bound(size), bound(size))),
        variant in 0..4usize,
    ) {
        let spec = format!("{}-{}", first.text(), last.text());
        let (header, expected) = match variant {
            0 => (format!("bytes={spec}"), rfc_range(&first, &last, size)),
            1 => (format!("bytes={spec},0-0"), RangeRequest::Whole),
            2 => (format!("items={spec}"), RangeRequest::Whole),
            _ => (spec.clone(), RangeRequest::Whole),
        };
        prop_assert_eq!(RangeRequest::resolve(Some(&header), size), expected, "{:?} size {}", header, size);
    }
}

// ---------------------------------------------------------------------------
// Metadata (src/domain/metadata.rs)
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(medium())]

    /// No text makes the metadata parsers panic, deeply nested text
    /// included; stored text is accepted exactly when it is a JSON object.
    #[test]
    fn metadata_parsers_never_panic(
        text in prop_oneof![
            wild_text(),
            json_value().prop_map(|v| v.to_string()),
            (select(&["[", "{\"a\":", "[{\"b\":"][..]), 100..3000usize)
                .prop_map(|(open, depth)| open.repeat(depth)),
        ],
    ) {
        let offered = ParcelMetadata::parse_offered(&text);
        let as_json = serde_json::from_str::<Value>(&text).ok();
        prop_assert_eq!(offered.ok(), as_json.clone());
        let stored = ParcelMetadata::from_stored(&text);
        prop_assert_eq!(stored.is_ok(), as_json.is_some_and(|v| v.is_object()));
    }

}

proptest! {
    #![proptest_config(heavy())]

    /// Any offered object gets its owner and round-trips: the stored form
    /// is ASCII JSON within the limit, and reading it back gives the same
    /// object, every offered field kept; the stored form is stable.
    #[test]
    fn metadata_round_trips_through_its_stored_form(
        fields in json_object(json_value()),
        owner in any::<[u8; 20]>(),
        same_owner_case in prop::option::of(any::<u128>()),
    ) {
        let owner = address_from(owner);
        let mut offered = fields.clone();
        match same_owner_case {
            Some(mask) => {
                offered.insert("owner".into(), json!(recase(owner.as_str(), mask)));
            }
            None => {
                offered.remove("owner");
            }
        }
        let metadata =
            ParcelMetadata::for_owner(Some(Value::Object(offered.clone())), &owner, usize::MAX)
                .unwrap();
        let stored = metadata.as_stored();
        prop_assert!(stored.is_ascii(), "{}", stored);
        let value = metadata.to_value();
        prop_assert_eq!(&value["owner"], &json!(owner.to_string()));
        for (key, field) in &offered {
            if key != "owner" {
                prop_assert_eq!(&value[key], field);
            }
        }
        prop_assert_eq!(value.as_object().unwrap().len(), offered.len() + usize::from(!offered.contains_key("owner")));

        let back = ParcelMetadata::from_stored(stored).unwrap();
        prop_assert_eq!(back.to_value(), value.clone());
        prop_assert_eq!(back.as_stored(), stored);
        // Offered again as text (the v2 header), it is stored the same way.
        let again = ParcelMetadata::parse_offered(stored).unwrap();
        let again = ParcelMetadata::for_owner(Some(again), &owner, stored.len()).unwrap();
        prop_assert_eq!(again.as_stored(), stored);
    }

    /// A foreign owner, an owner that is not an address string, anything
    /// but an object, and a stored form one byte over the limit are refused.
    #[test]
    fn bad_metadata_is_refused(
        fields in json_object(json_value()),
        owner in any::<[u8; 20]>(),
        claimed in prop_oneof![
            any::<[u8; 20]>().prop_map(|b| json!(hex::encode(b))),
            json_value(),
        ],
        not_object in prop_oneof![
            any::<bool>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            json_text().prop_map(Value::from),
            vec(json_value(), 0..4).prop_map(Value::Array),
        ],
    ) {
        let owner = address_from(owner);
        let mut offered = fields.clone();
        offered.insert("owner".into(), claimed.clone());
        let names_owner = claimed
            .as_str()
            .is_some_and(|text| text.eq_ignore_ascii_case(owner.as_str()));
        let result = ParcelMetadata::for_owner(Some(Value::Object(offered)), &owner, usize::MAX);
        if names_owner {
            prop_assert!(result.is_ok());
        } else {
            prop_assert_eq!(result, Err(MetadataError::ForeignOwner));
        }

        prop_assert!(matches!(
            ParcelMetadata::for_owner(Some(not_object), &owner, usize::MAX),
            Err(MetadataError::NotAnObject(_))
        ));

        let mut fields = fields;
        fields.remove("owner");
        let fits = ParcelMetadata::for_owner(Some(Value::Object(fields.clone())), &owner, usize::MAX)
            .unwrap();
        let size = fits.as_stored().len();
        prop_assert!(ParcelMetadata::for_owner(Some(Value::Object(fields.clone())), &owner, size).is_ok());
        prop_assert_eq!(
            ParcelMetadata::for_owner(Some(Value::Object(fields)), &owner, size - 1),
            Err(MetadataError::TooLarge { size, limit: size - 1 })
        );
    }
}

// ---------------------------------------------------------------------------
// JWTs (src/auth/jwt.rs)
// ---------------------------------------------------------------------------

const SECRET: &[u8] = b"property-test-secret-of-32-bytes-or-more";
const ISSUER: &str = "amo-storage-service";

static CODEC: LazyLock<TokenCodec> =
    LazyLock::new(|| TokenCodec::new(SECRET, ISSUER, StorageId(1), Duration::from_secs(300)));

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// HMAC-SHA256 (RFC 2104), written out so that tokens of any shape can be
/// made.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A compact JWS of `header` and `claims`, MAC'd with HMAC-SHA256.
fn raw_jwt(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(secret, signed.as_bytes()));
    format!("{signed}.{mac}")
}

/// Claims the codec would accept, for `user`.
fn good_claims(user: &Address) -> Value {
    let now = now();
    json!({
        "iss": ISSUER, "aud": "00000001", "user": user.to_string(), "operation": "upload",
        "jti": "5f0c5c8e-7a42-4d43-9a8d-2f1e0b8f6a11", "iat": now, "exp": now + 300,
    })
}

fn hs256_header() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

proptest! {
    #![proptest_config(medium())]

    /// No text, random segments or well-formed segments of random JSON make
    /// verification panic, and none of them verifies.
    #[test]
    fn jwt_verification_never_panics_and_refuses_junk(
        token in prop_oneof![
            wild_text(),
            "[A-Za-z0-9_=+/-]{0,80}(\\.[A-Za-z0-9_=+/-]{0,80}){0,4}",
            (json_value(), json_value(), vec(any::<u8>(), 0..40)).prop_map(|(h, c, mac)| format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(h.to_string()),
                URL_SAFE_NO_PAD.encode(c.to_string()),
                URL_SAFE_NO_PAD.encode(mac)
            )),
        ],
    ) {
        let err = CODEC.verify(&token).unwrap_err();
        prop_assert!(is_unauthenticated(&err, "token_invalid"), "{:?}", err);
    }

    /// An issued token verifies and carries its user and operation back.
    #[test]
    fn issued_tokens_round_trip(user in any::<[u8; 20]>(), operation in prop_oneof![
        select(&["upload", "download", "remove"][..]).prop_map(Value::from),
        json_value(),
    ]) {
        let user = address_from(user);
        let issued = CODEC.issue(&user, "0123456789abcdef", operation.clone()).unwrap();
        let claims = CODEC.verify(&issued.jwt).unwrap();
        prop_assert_eq!(claims.cpart.as_deref(), Some("0123456789abcdef"));
        prop_assert_eq!(claims.user, user.to_string());
        prop_assert_eq!(claims.operation, operation);
        prop_assert_eq!(claims.iss, ISSUER);
        prop_assert_eq!(claims.aud, "00000001");
        prop_assert_eq!(claims.exp - claims.iat, 300);
        prop_assert_eq!(claims.jti, issued.claims.jti);
    }

    /// Any one character of a valid token changed (to a base64url digit, a
    /// dot, or a foreign character) makes it invalid: in the header or
    /// claims the MAC no longer matches, in the MAC it is another MAC or not
    /// base64url.
    #[test]
    fn one_changed_character_invalidates_a_token(
        user in any::<[u8; 20]>(),
        at in any::<Index>(),
        replacement in prop_oneof![
            select(URL_ALPHABET).prop_map(char::from),
            Just('.'),
            select(FOREIGN),
            Just('+'),
            Just('/'),
        ],
    ) {
        let issued = CODEC.issue(&address_from(user), "0123456789abcdef", json!("download")).unwrap();
        let mut chars: Vec<char> = issued.jwt.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != replacement);
        chars[i] = replacement;
        let forged: String = chars.into_iter().collect();
        prop_assert!(CODEC.verify(&forged).is_err(), "{} -> {}", issued.jwt, forged);
    }

    /// The algorithm is pinned to HS256: a token whose header names another
    /// one (or "none", or HS256 misspelt) is refused even when its MAC is
    /// right for that header, whether HMAC-SHA256, the named HMAC, or none.
    /// The same token with an HS256 header verifies, so the refusal is the
    /// algorithm's.
    #[test]
    fn tokens_naming_another_algorithm_are_refused(
        user in any::<[u8; 20]>(),
        alg in select(&[
            "none", "None", "NONE", "HS384", "HS512", "RS256", "ES256", "PS256", "EdDSA",
            "hs256", "HS256 ", " HS256", "HS256\u{0}", "", "HS2560",
        ][..]),
        mac in 0..3usize,
    ) {
        let user = address_from(user);
        let claims = good_claims(&user);
        prop_assert!(CODEC.verify(&raw_jwt(&hs256_header(), &claims, SECRET)).is_ok());

        let header = json!({"alg": alg, "typ": "JWT"});
        let token = match mac {
            0 => raw_jwt(&header, &claims, SECRET),
            1 => {
                // An unsecured JWS: empty MAC.
                let full = raw_jwt(&header, &claims, SECRET);
                full[..=full.rfind('.').unwrap()].to_owned()
            }
            _ => {
                let algorithm = match alg {
                    "HS512" => Algorithm::HS512,
                    _ => Algorithm::HS384,
                };
                jsonwebtoken::encode(
                    &Header::new(algorithm),
                    &claims,
                    &EncodingKey::from_secret(SECRET).unwrap(),
                )
                .unwrap()
            }
        };
        prop_assert!(CODEC.verify(&token).is_err(), "{}", token);
    }

}

proptest! {
    #![proptest_config(heavy())]

    /// Extra header fields cannot choose the key: with key hints (kid, jku,
    /// x5u, an embedded jwk of the forger's HMAC secret) and any private
    /// fields, a token is refused whether it is MAC'd with the forger's
    /// secret or with the server's own (only the header the service issues
    /// is accepted), while the issued header with the server's secret
    /// verifies with the claims intact. A `crit` naming an extension, or
    /// `b64: false`, is refused.
    #[test]
    fn extra_header_fields_cannot_choose_the_key(
        user in any::<[u8; 20]>(),
        forger_secret in vec(any::<u8>(), 1..80),
        hints in (json_text(), json_text(), json_text(), any::<bool>()),
        private in btree_map("x_[a-z]{1,8}", json_value(), 0..4),
        critical in select(&["exp", "b64", "kid", "x_a", ""][..]),
    ) {
        prop_assume!(forger_secret != SECRET);
        let user = address_from(user);
        let claims = good_claims(&user);
        let (kid, jku, x5u, with_jwk) = hints;
        let mut header = hs256_header();
        let fields = header.as_object_mut().unwrap();
        fields.insert("kid".into(), json!(kid));
        fields.insert("jku".into(), json!(jku));
        fields.insert("x5u".into(), json!(x5u));
        if with_jwk {
            fields.insert(
                "jwk".into(),
                json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(&forger_secret)}),
            );
        }
        fields.extend(private);

        let forged = raw_jwt(&header, &claims, &forger_secret);
        prop_assert!(CODEC.verify(&forged).is_err(), "{}", forged);
        let hinted = raw_jwt(&header, &claims, SECRET);
        prop_assert!(CODEC.verify(&hinted).is_err(), "{}", hinted);
        let genuine = raw_jwt(&hs256_header(), &claims, SECRET);
        let verified = CODEC.verify(&genuine);
        prop_assert!(verified.is_ok(), "{:?}", verified.err());
        prop_assert_eq!(verified.unwrap().user, user.to_string());

        let mut critical_header = header.clone();
        critical_header["crit"] = json!([critical]);
        prop_assert!(CODEC.verify(&raw_jwt(&critical_header, &claims, SECRET)).is_err());
        let mut unencoded = header;
        unencoded["b64"] = json!(false);
        prop_assert!(CODEC.verify(&raw_jwt(&unencoded, &claims, SECRET)).is_err());
    }

    /// Claims the server did not issue are refused even with the right MAC:
    /// another issuer or audience, an expired token, a missing exp.
    #[test]
    fn foreign_or_expired_claims_are_refused(
        user in any::<[u8; 20]>(),
        iss in json_text(),
        aud in json_text(),
        age in 1..100_000u64,
        drop in select(&["exp", "iss", "aud"][..]),
    ) {
        let user = address_from(user);
        let claims = good_claims(&user);
        let mut variants = Vec::new();
        if iss != ISSUER {
            let mut c = claims.clone();
            c["iss"] = json!(iss);
            variants.push(c);
        }
        if aud != "00000001" {
            let mut c = claims.clone();
            c["aud"] = json!(aud);
            variants.push(c);
        }
        let mut c = claims.clone();
        c["exp"] = json!(now() - age);
        variants.push(c);
        let mut c = claims;
        c.as_object_mut().unwrap().remove(drop);
        variants.push(c);
        for claims in variants {
            let token = raw_jwt(&hs256_header(), &claims, SECRET);
            prop_assert!(CODEC.verify(&token).is_err(), "{}", claims);
        }
    }
}

// ---------------------------------------------------------------------------
// Offsets and lengths: checked sums
// ---------------------------------------------------------------------------

/// A byte count from the edges (0, 1, `u64::MAX`, near the wrap) or
/// anywhere.
fn byte_count() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(1u64 << 63),
        (0u64..16).prop_map(|n| u64::MAX - n),
        0u64..1 << 20,
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(cheap())]

    /// A body of `length` bytes at `offset` overruns a `total` by exactly
    /// the bytes past it, as the integers (not the 64-bit wrap) say: never
    /// 0 when the sum wraps past 2^64, never a panic.
    #[test]
    fn an_offset_and_a_length_overrun_by_the_true_sum(
        offset in byte_count(),
        length in byte_count(),
        total in byte_count(),
    ) {
        let end = u128::from(offset) + u128::from(length);
        let over = overrun(offset, length, total);
        if end <= u128::from(total) {
            prop_assert_eq!(over, 0);
        } else {
            prop_assert!(over > 0);
            let exact = end - u128::from(total);
            prop_assert_eq!(u128::from(over), exact.min(u128::from(u64::MAX)));
        }
    }

    /// The wrap itself: from any offset within the total (1 or more), a
    /// declared length that brings the sum to 2^64 or just past it, which
    /// 64-bit addition would wrap to a small number that fits, overruns.
    #[test]
    fn a_length_that_wraps_the_sum_overruns(
        total in 1u64..=u64::MAX,
        offset_at in any::<Index>(),
        past in 0u64..16,
    ) {
        let offset = 1 + offset_at.index(usize::try_from(total.min(1 << 40)).unwrap()) as u64;
        // 2^64 - offset + past: the sum is 2^64 + past.
        let length = (u64::MAX - offset + 1).saturating_add(past);
        prop_assert!(offset.checked_add(length).is_none(), "the 64-bit sum wraps");
        prop_assert!(overrun(offset, length, total) > 0, "{} + {} vs {}", offset, length, total);
    }
}
