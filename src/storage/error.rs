//! What can go wrong in a parcel store, whichever it is. The API turns it
//! into an answer in one place (`crate::error`); here, a failure keeps its
//! cause (S3's or the file system's own error) as its source.

use std::io;

use crate::{domain::ParcelId, error::Cause};

/// A failure of a parcel store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// S3 or the data directory failed, could not be reached or did not
    /// answer in time, and nothing was changed (or it was only read).
    #[error("the parcel store failed")]
    Unavailable(#[source] Cause),
    /// A write (a `PutObject`, a `CompleteMultipartUpload`, a
    /// `DeleteObject`) that S3 may have received whole and did not confirm:
    /// it may have taken effect.
    #[error("the parcel store did not confirm a write, which may have happened")]
    OutcomeUnknown(#[source] Cause),
    /// What the store holds of a parcel does not read back (a missing owner,
    /// metadata that does not parse).
    #[error("stored parcel {id} is invalid")]
    Corrupt {
        /// The parcel.
        id: ParcelId,
        /// What is wrong with it.
        #[source]
        source: Cause,
    },
    /// The client's body, fed to the store, failed.
    #[error("the body failed")]
    Body(#[source] io::Error),
    /// The client's body, fed to the store, ended before its length.
    #[error("the body ended after {written} of {length} bytes")]
    ShortBody {
        /// Bytes written.
        written: u64,
        /// Bytes announced.
        length: u64,
    },
    /// A defect of the store's code, not of the backend.
    #[error("{0}")]
    Internal(String),
}

impl StoreError {
    /// A failure of the store, described in words.
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// A write that was not confirmed, described in words.
    pub fn outcome_unknown(cause: impl Into<Cause>) -> Self {
        Self::OutcomeUnknown(cause.into())
    }

    /// Whether the backend failed or could not be reached (a retry later
    /// may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::OutcomeUnknown(_))
    }

    /// Whether the write may have taken effect although it failed.
    pub fn may_have_taken_effect(&self) -> bool {
        matches!(self, Self::OutcomeUnknown(_))
    }
}
