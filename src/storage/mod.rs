//! Where parcels live: one S3 object per parcel (DESIGN §5).

mod s3;

pub use s3::{MultipartUpload, S3Config, S3Store};

use std::{io, pin::Pin};

use bytes::Bytes;
use futures_util::Stream;

/// A body streamed from or to the store.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

use crate::domain::{Address, ParcelMetadata};

/// What the store knows of a parcel besides its body.
#[derive(Debug, Clone)]
pub struct StoredParcel {
    /// The account that uploaded it.
    pub owner: Address,
    /// Its metadata (which names the owner too).
    pub metadata: ParcelMetadata,
    /// Body size in bytes.
    pub size: u64,
}

/// How a conditional write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The parcel is new.
    Created,
    /// A parcel with this id was already there; nothing was written.
    AlreadyExists,
}
