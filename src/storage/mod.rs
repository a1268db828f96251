//! Where parcels live (docs/protocol.md, "Storage model"): one object per parcel, holding its body,
//! its owner and its metadata together.
//!
//! [`ParcelStore`] is what the parcel operations need of a store.
//! [`S3Store`] keeps parcels in an S3 bucket (Ceph RGW in production);
//! [`DirStore`] keeps them as files in a local directory, for the embedded
//! one-replica mode. Both make a parcel visible only whole, never partly.

mod bucket;
mod dir;
mod error;
mod keys;
mod s3;
mod s3_calls;

pub use self::{
    bucket::{BucketError, MissingRules},
    dir::DirStore,
    error::StoreError,
    keys::{KeyFile, Reloads, S3Keys},
    s3::{S3Config, S3Store},
};

use std::{io, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

use crate::domain::{Address, ParcelId, ParcelMetadata};

/// A body streamed from or to the store.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The bytes of a body being written, handed to the store as they arrive:
/// one item a chunk; an `Err`, or an end before the announced length,
/// abandons the write.
pub type Feed = tokio::sync::mpsc::Receiver<io::Result<Bytes>>;

/// A feed of a body already whole in memory.
pub fn feed_of(bytes: Bytes) -> Feed {
    let (sender, feed) = tokio::sync::mpsc::channel(1);
    let _ = sender.try_send(Ok(bytes));
    feed
}

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

/// What a store answers when asked for a parcel's body.
pub enum Fetched {
    /// No such parcel.
    Missing,
    /// The parcel exists, and no byte of it is in the range asked for.
    OutOfRange,
    /// The parcel, and its body or the part of it asked for.
    Found {
        /// Owner, metadata and whole size, read from the same answer as
        /// the body.
        parcel: StoredParcel,
        /// The bytes served, `first..=last`; `None`: the whole body.
        served: Option<(u64, u64)>,
        /// The bytes, not read yet: dropped unread, they cost nothing more.
        body: BodyStream,
    },
}

/// How a conditional write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The parcel is new.
    Created,
    /// A parcel with this id was already there; nothing was written.
    AlreadyExists,
}

/// How an attempt to mark a token used went
/// ([`ParcelStore::mark_token_used`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMark {
    /// The mark is new: this holder spent the token.
    New,
    /// The mark was there already, written by this same holder (a retried
    /// commit of the same operation).
    Ours,
    /// Another holder spent the token: its effect must not happen again.
    Spent,
}

/// A parcel store. Writes are conditional (a parcel is never replaced) and
/// atomic (a parcel is visible whole or not at all).
#[async_trait]
pub trait ParcelStore: Send + Sync {
    /// What this is, for logs (`s3`, `directory`).
    fn kind(&self) -> &'static str;

    /// Checks that the store answers and can be written.
    async fn check(&self) -> Result<(), StoreError>;

    /// The owner, metadata and size of a parcel, if it exists.
    async fn head(&self, id: &ParcelId) -> Result<Option<StoredParcel>, StoreError>;

    /// A parcel's body, or bytes `first..=last` of it, as a stream; `None`
    /// when the parcel does not exist.
    async fn get_stream(
        &self,
        id: &ParcelId,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BodyStream>, StoreError>;

    /// A parcel with its body, or the part of it that `range` (an HTTP
    /// `Range` value for one range) asks for, in one request: owner,
    /// metadata and size come with the body.
    async fn fetch(&self, id: &ParcelId, range: Option<&str>) -> Result<Fetched, StoreError>;

    /// Writes a whole parcel unless one with this id exists.
    async fn put_new(
        &self,
        id: &ParcelId,
        body: Bytes,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError> {
        self.put_fed(id, body.len() as u64, feed_of(body), owner, metadata)
            .await
    }

    /// Writes a parcel of `length` bytes as `feed` delivers them, in one
    /// request, unless one with this id exists. Nothing is visible unless
    /// the feed delivers exactly `length` bytes and then ends.
    async fn put_fed(
        &self,
        id: &ParcelId,
        length: u64,
        feed: Feed,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError>;

    /// Starts writing a parcel in parts. Nothing is visible until
    /// [`PartUpload::complete`]; dropped before that, it is discarded.
    async fn start_upload(
        &self,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<Box<dyn PartUpload>, StoreError>;

    /// Marks the token `jti` used by `holder`, in one write that fails if
    /// the mark exists (S3: `PutObject` with `If-None-Match: *` of
    /// `<prefix>.tokens/<jti>`; a directory: a file created new). The
    /// mark is the strongly consistent gate of a token's effect
    /// (docs/reliability.md, "Exactly once across a failover"): written
    /// right before the effect, it makes a token that a Redis failover
    /// brought back work at most once.
    async fn mark_token_used(&self, jti: &str, holder: &str) -> Result<TokenMark, StoreError>;

    /// Deletes the mark of token `jti` if `holder` wrote it: its operation
    /// had no effect after all (the parcel was another owner's), and the
    /// token is released. Answers whether it deleted it.
    async fn unmark_token(&self, jti: &str, holder: &str) -> Result<bool, StoreError>;

    /// Deletes a parcel (deleting one that is not there is no error).
    async fn delete(&self, id: &ParcelId) -> Result<(), StoreError>;

    /// The ids of the stored parcels (for operators and tests).
    async fn list(&self) -> Result<Vec<String>, StoreError>;

    /// Uploads begun and neither completed nor discarded (for operators and
    /// tests: after every request has ended, there are none).
    async fn unfinished_uploads(&self) -> Result<Vec<String>, StoreError>;

    /// Unfinished uploads begun more than `older_than` ago, which a replica
    /// that died may have left behind. (A store that cleans up at start
    /// answers none.)
    async fn stale_uploads(&self, older_than: Duration) -> Result<Vec<StaleUpload>, StoreError>;

    /// When the store last saw `upload` written to: its start, or its last
    /// part stored. `None`: the upload is gone (completed or discarded
    /// meanwhile). A store that dates a stale upload by its last write
    /// already answers that date.
    async fn last_activity(
        &self,
        upload: &StaleUpload,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        Ok(Some(upload.active))
    }

    /// Discards an unfinished upload, in one attempt; an error says it may
    /// still be there (the next sweep tries again).
    async fn abort_upload(&self, upload: &StaleUpload) -> Result<(), StoreError>;

    /// Where this store keeps its parcels (a bucket and key prefix, or a
    /// directory): replicas with the same location share their parcels,
    /// and one sweep serves them all.
    fn location(&self) -> String;

    // Resumable uploads (docs/protocol.md, "Resumable uploads"): their
    // bytes stay in the store between requests, named by what the shared
    // upload record holds, so that any replica goes on with them.

    /// Starts the staged upload `upload` (the resumable upload's id) of a
    /// parcel; answers the store's id of it (an S3 multipart upload id).
    /// Nothing is visible until [`ParcelStore::staged_complete`].
    async fn staged_start(
        &self,
        upload: &str,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<String, StoreError>;

    /// Writes part `number` (from 1) of a staged upload, `length` bytes
    /// starting at byte `at` of the body, as `feed` delivers them; answers
    /// the part's tag (its S3 ETag). Writing a part again replaces it.
    async fn staged_part(
        &self,
        id: &ParcelId,
        store_id: &str,
        number: usize,
        at: u64,
        length: u64,
        feed: Feed,
    ) -> Result<String, StoreError>;

    /// Makes the parcel visible from the parts written (their tags in
    /// order). The caller holds the parcel's write lock and checked that no
    /// parcel with this id exists.
    async fn staged_complete(
        &self,
        id: &ParcelId,
        store_id: &str,
        parts: &[String],
    ) -> Result<PutOutcome, StoreError>;

    /// Discards a staged upload's parts.
    async fn staged_abort(&self, id: &ParcelId, store_id: &str);

    /// Stores `bytes` (less than one part) as the tail `name` of `upload`.
    async fn put_tail(&self, upload: &str, name: &str, bytes: Bytes) -> Result<(), StoreError>;

    /// The tail `name` of `upload`.
    async fn get_tail(&self, upload: &str, name: &str) -> Result<Bytes, StoreError>;

    /// Deletes the tail `name` of `upload`, or every tail of it.
    async fn drop_tails(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError>;

    /// The uploads with tails stored more than `older_than` ago.
    async fn tailed_uploads(&self, older_than: Duration) -> Result<Vec<String>, StoreError>;
}

/// An unfinished upload found in the store.
#[derive(Debug, Clone)]
pub struct StaleUpload {
    /// The parcel it was writing.
    pub id: ParcelId,
    /// The store's handle on it (an S3 key and upload id).
    pub key: String,
    /// The store's upload id.
    pub upload_id: String,
    /// When it was begun (S3), or last written to (the directory store).
    pub active: std::time::SystemTime,
}

/// A parcel being written in parts.
#[async_trait]
pub trait PartUpload: Send {
    /// The store's id of this upload (an S3 upload id).
    fn upload_id(&self) -> &str;

    /// How many parts were handed over so far.
    fn parts(&self) -> usize;

    /// Writes the next part, of `length` bytes, as `feed` delivers them;
    /// answers once it is stored. A feed that fails or ends short fails it.
    async fn push_part(&mut self, length: u64, feed: Feed) -> Result<(), StoreError>;

    /// Makes the parcel visible from the parts written, unless a parcel with
    /// its id appeared meanwhile.
    async fn complete(self: Box<Self>) -> Result<PutOutcome, StoreError>;

    /// Discards everything written: nothing becomes visible.
    async fn abort(self: Box<Self>);
}

/// The parcel store of a replica.
pub type Store = Arc<dyn ParcelStore>;
