//! The write path, shared by v1 (a whole body) and v2 (a stream).
//!
//! A parcel becomes visible only once its whole body arrived and matched its
//! SHA-256. A body that fits in one part goes up in one `PutObject` with
//! `If-None-Match: *` after the check; a larger one goes up as a multipart
//! upload that is completed only after the check and aborted otherwise.
//! Ceph ignores `If-None-Match` on `CompleteMultipartUpload`, so every write
//! holds a per-parcel lock in the shared state (`amo:lock:{<parcel id>}`) and looks for
//! an existing parcel under it.

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, TryStreamExt};
use sha2::{Digest, Sha256};

use super::Parcels;
use crate::{
    domain::{Address, ParcelId, ParcelMetadata, Sha256Hex},
    error::Error,
    state::{LEASE, Lease, Shared},
    storage::{PartUpload, PutOutcome, Store, StoredParcel},
};

/// S3 allows at most this many parts in one upload.
const MAX_PARTS: u64 = 10_000;

/// The shared-state key of a parcel's write lock.
pub fn lock_key(id: &ParcelId) -> String {
    format!("amo:lock:{{{id}}}")
}

/// Aborts the unfinished uploads in `store` that no live request writes:
/// older than a lease, and whose parcel's write lock in `state` has lapsed
/// (the replica that wrote it died). Answers how many it aborted.
pub async fn sweep_abandoned_uploads(store: &Store, state: &Shared) -> Result<usize, Error> {
    let mut aborted = 0;
    for upload in store.stale_uploads(LEASE).await? {
        if state.value(&lock_key(&upload.id)).await?.is_none() {
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

impl Parcels {
    /// Writes a whole body whose hash is already checked.
    pub(super) async fn write_whole(
        &self,
        parcel: NewParcel<'_>,
        body: Bytes,
    ) -> Result<PutOutcome, Error> {
        let Some(lock) = self.lock_new(&parcel).await? else {
            return Ok(PutOutcome::AlreadyExists);
        };
        let outcome = self
            .store
            .put_new(parcel.id, body, parcel.owner, parcel.metadata)
            .await;
        self.unlock(lock).await;
        self.settle_put(&parcel, outcome?).await
    }

    /// Streams `body` into the store, hashing it on the way, and makes it
    /// visible only if its SHA-256 is `parcel.id`'s. `length` is the declared
    /// length, if any, to size the parts.
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
        let Some(lock) = self.lock_new(&parcel).await? else {
            return Ok(PutOutcome::AlreadyExists);
        };
        let outcome = self.stream_locked(&parcel, body, length).await;
        self.unlock(lock).await;
        self.settle_put(&parcel, outcome?).await
    }

    async fn stream_locked<S>(
        &self,
        parcel: &NewParcel<'_>,
        mut body: S,
        length: Option<u64>,
    ) -> Result<PutOutcome, Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let max = self.limits.max_parcel_bytes;
        if let Some(length) = length.filter(|length| *length > max) {
            return Err(too_large(length, max));
        }
        let part_size = part_size_for(self.limits.part_size, length);
        let mut hasher = Sha256::new();
        let mut received: u64 = 0;
        let mut buffer =
            BytesMut::with_capacity(part_size.min(length.unwrap_or(u64::MAX) as usize));
        let mut multipart: Option<Box<dyn PartUpload>> = None;
        let idle = self.limits.body_idle_timeout;
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
                    Some(upload) => upload,
                    None => multipart.insert(
                        self.store
                            .start_upload(parcel.id, parcel.owner, parcel.metadata)
                            .await?,
                    ),
                };
                if upload.parts() as u64 >= MAX_PARTS - 1 {
                    return Err(too_large(received, (MAX_PARTS - 1) * part_size as u64));
                }
                upload.push_part(part).await?;
            }
        }
        let actual = Sha256Hex::from_digest(&hasher.finalize());
        let declared = parcel.id.content_hash();
        if actual != declared {
            if let Some(upload) = multipart {
                upload.abort().await;
            }
            return Err(Error::HashMismatch {
                declared: declared.to_string(),
                actual: actual.to_string(),
            });
        }
        match multipart {
            None => {
                self.store
                    .put_new(parcel.id, buffer.freeze(), parcel.owner, parcel.metadata)
                    .await
            }
            Some(upload) => upload.complete(buffer.freeze()).await,
        }
    }

    /// Takes the parcel's write lock, then checks that no parcel with its id
    /// exists. `None`: the caller already stores it.
    async fn lock_new(&self, parcel: &NewParcel<'_>) -> Result<Option<Lease>, Error> {
        let lock = Lease::try_take(&self.state, lock_key(parcel.id))
            .await?
            .ok_or_else(|| Error::UploadInProgress(parcel.id.clone()))?;
        match self.store.head(parcel.id).await {
            Ok(None) => Ok(Some(lock)),
            Ok(Some(existing)) => {
                self.unlock(lock).await;
                same_owner(parcel.id, &existing, parcel.owner).map(|()| None)
            }
            Err(err) => {
                self.unlock(lock).await;
                Err(err)
            }
        }
    }

    async fn unlock(&self, lock: Lease) {
        if let Err(err) = lock.end().await {
            tracing::warn!(%err, "could not end a parcel write lock; it lapses by itself");
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

/// The part size for a body of `length` bytes: the configured size, or more
/// if the body would otherwise need more parts than S3 allows.
fn part_size_for(configured: usize, length: Option<u64>) -> usize {
    const MIB: u64 = 1024 * 1024;
    match length {
        Some(length) if length.div_ceil(configured as u64) >= MAX_PARTS => {
            let needed = length.div_ceil(MAX_PARTS - 1);
            (needed.div_ceil(MIB) * MIB) as usize
        }
        _ => configured,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_grows_only_when_the_body_needs_more_parts_than_s3_allows() {
        let eight = 8 * 1024 * 1024;
        assert_eq!(part_size_for(eight, None), eight);
        assert_eq!(part_size_for(eight, Some(1 << 30)), eight);
        let huge = 200 * (1u64 << 30);
        let size = part_size_for(eight, Some(huge));
        assert!(size > eight);
        assert!(huge.div_ceil(size as u64) < MAX_PARTS);
    }
}
