//! Domain types. Each one parses its input once, at the edge, and can only
//! hold a valid value afterwards ("parse, don't validate").

mod address;
mod byte_range;
mod client;
mod hex_digest;
mod metadata;
mod operation;
mod parcel_id;
mod span;

pub use address::Address;
pub use byte_range::RangeRequest;
pub use client::ClientAddress;
pub use hex_digest::Sha256Hex;
pub use metadata::{MetadataError, ParcelMetadata};
pub use operation::{Operation, OperationKind};
pub use parcel_id::{ParcelId, StorageId};
pub use span::overrun;

/// Why a piece of untrusted input was refused by a domain parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Parses `input` as exactly `digits` hexadecimal digits, any case, and
/// returns it upper-cased.
pub(crate) fn parse_upper_hex(
    input: &str,
    digits: usize,
    what: &str,
) -> Result<String, ParseError> {
    if input.len() != digits || !input.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError(format!(
            "{what} must be {digits} hexadecimal digits"
        )));
    }
    Ok(input.to_ascii_uppercase())
}
