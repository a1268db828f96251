//! The write path, shared by v1 (a whole body) and v2 (a stream).
//!
//! A parcel becomes visible only once its whole body arrived and matched its
//! SHA-256. A body that fits in one part goes up in one `PutObject` with
//! `If-None-Match: *` after the check; a larger one goes up as a multipart
//! upload that is completed only after the check and aborted otherwise.
//!
//! Ceph ignores `If-None-Match` on `CompleteMultipartUpload`, so every
//! commit (the `PutObject`, or the `CompleteMultipartUpload`) holds a
//! per-parcel write lock in the shared state (`amo:lock:{<parcel id>}`) and
//! looks for an existing parcel under it. The lock is taken only once the
//! whole body arrived and matched, and only for the commit: a client that
//! trickles a body, or declares someone else's content, holds nothing that
//! stops the rightful upload. Until then, uploads of the same content go on
//! side by side, and exactly one commit wins.
//!
//! A multipart upload in progress is marked live in the shared state
//! (`amo:multipart:{<upload id>}`), a lease its writer renews while the body
//! streams. The sweep aborts the multipart uploads whose mark lapsed: their
//! replica died.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};

use super::Parcels;
use crate::{
    domain::{Address, ParcelId, ParcelMetadata, Sha256Hex},
    error::Error,
    state::{Lease, Shared},
    storage::{PartUpload, PutOutcome, Store, StoredParcel},
};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// How long a commit waits for another commit of the same parcel to end
/// before it answers 409 `upload_in_progress`. A commit is one `PutObject` of
/// at most a part, or one `CompleteMultipartUpload`: seconds at most.
const COMMIT_LOCK_WAIT: Duration = Duration::from_secs(5);

/// The pause between two attempts to take a commit lock.
const COMMIT_LOCK_POLL: Duration = Duration::from_millis(50);

/// The shared-state key of a parcel's write lock.
pub fn lock_key(id: &ParcelId) -> String {
    format!("amo:lock:{{{id}}}")
}

/// The shared-state key that marks a multipart upload live.
pub fn multipart_mark_key(upload_id: &str) -> String {
    format!("amo:multipart:{{{upload_id}}}")
}

/// Aborts the unfinished uploads in `store` that no live request writes:
/// older than `lease`, and whose live mark in `state` has lapsed (the
/// replica that wrote it died). Answers how many it aborted.
///
/// An upload whose parcel's write lock is held is left alone too: replicas
/// of the version before the live marks held that lock while streaming, so
/// a rolling upgrade does not abort their uploads.
pub async fn sweep_abandoned_uploads(
    store: &Store,
    state: &Shared,
    lease: Duration,
) -> Result<usize, Error> {
    let mut aborted = 0;
    for upload in store.stale_uploads(lease).await? {
        let live = state
            .value(&multipart_mark_key(&upload.upload_id))
            .await?
            .is_some()
            || state.value(&lock_key(&upload.id)).await?.is_some();
        if !live {
            store.abort_upload(&upload).await?;
            tracing::info!(parcel = %upload.id, "aborted an upload its replica abandoned");
            aborted += 1;
        }
    }
    Ok(aborted)
}

/// What a new parcel is made of.
pub(super) struct NewParcel<'a> {
    pub id: &'a ParcelId,
    pub owner: &'a Address,
    pub metadata: &'a ParcelMetadata,
}

/// A body that arrived whole and matched its hash, ready to commit.
enum Checked {
    /// Small enough for one `PutObject`.
    Whole(Bytes),
    /// Written in parts; `Bytes` is the last part.
    Parts(Box<dyn PartUpload>, Bytes),
}

impl Checked {
    /// Discards what was written, if anything.
    async fn discard(self) {
        if let Self::Parts(upload, _) = self {
            upload.abort().await;
        }
    }
}

impl Parcels {
    /// Writes a whole body whose hash is already checked.
    pub(super) async fn write_whole(
        &self,
        parcel: NewParcel<'_>,
        body: Bytes,
    ) -> Result<PutOutcome, Error> {
        self.commit(&parcel, Checked::Whole(body)).await
    }

    /// Streams `body` into the store, hashing it on the way, and makes it
    /// visible only if its SHA-256 is `parcel.id`'s. `length` is the declared
    /// length, if any.
    pub(super) async fn write_stream<S>(
        &self,
        parcel: NewParcel<'_>,
        body: S,
        length: Option<u64>,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        if let Some(existing) = self.store.head(parcel.id).await? {
            return same_owner(parcel.id, &existing, parcel.owner)
                .map(|()| PutOutcome::AlreadyExists);
        }
        let (checked, live_mark) = self.receive(&parcel, body, length).await?;
        let outcome = self.commit(&parcel, checked).await;
        if let Some(mark) = live_mark {
            if let Err(err) = mark.end().await {
                tracing::debug!(%err, "could not end a multipart upload's live mark; it lapses");
            }
        }
        outcome
    }

    /// Receives the body: buffers it up to a part, then writes parts, and
    /// checks its hash at the end. A part buffer is the configured part
    /// size, whatever length the client declares.
    async fn receive<S>(
        &self,
        parcel: &NewParcel<'_>,
        mut body: S,
        length: Option<u64>,
    ) -> Result<(Checked, Option<Lease>), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let part_size = self.limits.part_size;
        let max = self
            .limits
            .max_parcel_bytes
            .min(MAX_PARTS * part_size as u64);
        if let Some(length) = length.filter(|length| *length > max) {
            return Err(too_large(length, max));
        }
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut buffer =
            BytesMut::with_capacity(part_size.min(length.unwrap_or(u64::MAX) as usize));
        let mut multipart: Option<(Box<dyn PartUpload>, Lease)> = None;
        let idle = self.limits.body_idle_timeout;
        let outcome = async {
            while let Some(chunk) = tokio::time::timeout(idle, body.try_next())
                .await
                .map_err(|_| {
                    Error::BadRequest(format!(
                        "the body sent nothing for {} s; the upload is abandoned",
                        idle.as_secs()
                    ))
                })?
                .map_err(|err| Error::BadRequest(format!("the body ended early: {err}")))?
            {
                received += chunk.len() as u64;
                crate::metrics::bytes_received(chunk.len() as u64);
                if received > max {
                    return Err(too_large(received, max));
                }
                hasher.update(&chunk);
                buffer.extend_from_slice(&chunk);
                while buffer.len() >= part_size {
                    let part = buffer.split_to(part_size).freeze();
                    buffer.reserve(part_size);
                    let upload = match multipart.as_mut() {
                        Some((upload, _)) => upload,
                        None => &mut multipart.insert(self.start_multipart(parcel).await?).0,
                    };
                    upload.push_part(part).await?;
                }
            }
            let actual = Sha256Hex::from_digest(&hasher.finalize());
            let declared = parcel.id.content_hash();
            if actual != declared {
                return Err(Error::HashMismatch {
                    declared: declared.to_string(),
                    actual: actual.to_string(),
                });
            }
            Ok(())
        }
        .await;
        match (outcome, multipart) {
            (Ok(()), None) => Ok((Checked::Whole(buffer.freeze()), None)),
            (Ok(()), Some((upload, mark))) => {
                Ok((Checked::Parts(upload, buffer.freeze()), Some(mark)))
            }
            (Err(err), None) => Err(err),
            (Err(err), Some((upload, mark))) => {
                upload.abort().await;
                let _ = mark.end().await;
                Err(err)
            }
        }
    }

    /// Starts a multipart upload and marks it live.
    async fn start_multipart(
        &self,
        parcel: &NewParcel<'_>,
    ) -> Result<(Box<dyn PartUpload>, Lease), Error> {
        let upload = self
            .store
            .start_upload(parcel.id, parcel.owner, parcel.metadata)
            .await?;
        let mark = Lease::try_take(
            &self.state,
            multipart_mark_key(upload.upload_id()),
            self.limits.lease,
        )
        .await;
        match mark {
            Ok(Some(mark)) => Ok((upload, mark)),
            Ok(None) => {
                upload.abort().await;
                Err(Error::Internal(format!(
                    "a new multipart upload of parcel {} is marked live already",
                    parcel.id
                )))
            }
            Err(err) => {
                upload.abort().await;
                Err(err)
            }
        }
    }

    /// Makes a checked body visible, under the parcel's write lock, unless a
    /// parcel with its id exists: then it answers whose that is.
    async fn commit(&self, parcel: &NewParcel<'_>, checked: Checked) -> Result<PutOutcome, Error> {
        let lock = match self.lock_for_commit(parcel.id).await {
            Ok(lock) => lock,
            Err(err) => {
                checked.discard().await;
                return Err(err);
            }
        };
        let outcome = match self.store.head(parcel.id).await {
            Ok(None) => match checked {
                Checked::Whole(body) => {
                    self.store
                        .put_new(parcel.id, body, parcel.owner, parcel.metadata)
                        .await
                }
                Checked::Parts(upload, last) => upload.complete(last).await,
            },
            Ok(Some(_)) => {
                checked.discard().await;
                Ok(PutOutcome::AlreadyExists)
            }
            Err(err) => {
                checked.discard().await;
                Err(err)
            }
        };
        if let Err(err) = lock.end().await {
            tracing::warn!(%err, "could not end a parcel write lock; it lapses by itself");
        }
        self.settle_put(parcel, outcome?).await
    }

    /// Takes the parcel's write lock, waiting up to [`COMMIT_LOCK_WAIT`]
    /// for another commit to end; 409 `upload_in_progress` past that, with
    /// the lock's remaining time.
    async fn lock_for_commit(&self, id: &ParcelId) -> Result<Lease, Error> {
        let give_up = tokio::time::Instant::now() + COMMIT_LOCK_WAIT;
        loop {
            if let Some(lock) =
                Lease::try_take(&self.state, lock_key(id), self.limits.lease).await?
            {
                return Ok(lock);
            }
            if tokio::time::Instant::now() >= give_up {
                let left = self.state.remaining(&lock_key(id)).await?;
                return Err(Error::upload_in_progress(id, left));
            }
            tokio::time::sleep(COMMIT_LOCK_POLL).await;
        }
    }

    /// A conditional write that found the parcel there: whose is it?
    async fn settle_put(
        &self,
        parcel: &NewParcel<'_>,
        outcome: PutOutcome,
    ) -> Result<PutOutcome, Error> {
        if outcome == PutOutcome::Created {
            return Ok(outcome);
        }
        let existing = self.store.head(parcel.id).await?.ok_or_else(|| {
            Error::parcel_store(format!(
                "{} existed, then vanished during upload",
                parcel.id
            ))
        })?;
        same_owner(parcel.id, &existing, parcel.owner).map(|()| PutOutcome::AlreadyExists)
    }
}

fn too_large(size: u64, max: u64) -> Error {
    Error::TooLarge(format!(
        "the body is over {max} bytes, the largest parcel this service stores (got {size})"
    ))
}

fn same_owner(id: &ParcelId, existing: &StoredParcel, owner: &Address) -> Result<(), Error> {
    if existing.owner == *owner {
        Ok(())
    } else {
        Err(Error::OwnedByAnother(id.clone()))
    }
}
