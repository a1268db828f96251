//! What can be done with parcels, independent of the HTTP API version.
//!
//! Every operation that needs a token takes an [`Authorized`] and settles it:
//! the token is consumed when the operation succeeds, and released when it
//! fails before anything became visible.

use bytes::Bytes;
use serde_json::Value;

use crate::{
    auth::Authorized,
    domain::{Address, ParcelId, ParcelMetadata, Sha256Hex, StorageId},
    error::Error,
    storage::{PutOutcome, S3Store, StoredParcel},
};

/// Limits on what clients may store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest stored metadata JSON, in bytes.
    pub metadata_max_bytes: usize,
    /// Largest body the bounded (v1) API takes or returns.
    pub whole_body_max_bytes: u64,
}

/// The parcel operations.
#[derive(Clone)]
pub struct Parcels {
    store: S3Store,
    storage_id: StorageId,
    limits: Limits,
}

impl Parcels {
    /// Parcel operations on `store` for the storage `storage_id`.
    pub fn new(store: S3Store, storage_id: StorageId, limits: Limits) -> Self {
        Self {
            store,
            storage_id,
            limits,
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &S3Store {
        &self.store
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Stores a whole, already received body for the authorized caller, who
    /// must be `owner`. Answers the parcel id and whether it was new.
    pub async fn upload_whole(
        &self,
        auth: Authorized,
        owner: &Address,
        metadata: Option<Value>,
        body: Bytes,
    ) -> Result<(ParcelId, PutOutcome), Error> {
        let outcome = self.try_upload_whole(&auth, owner, metadata, body).await;
        auth.settle(outcome).await
    }

    async fn try_upload_whole(
        &self,
        auth: &Authorized,
        owner: &Address,
        metadata: Option<Value>,
        body: Bytes,
    ) -> Result<(ParcelId, PutOutcome), Error> {
        if owner != auth.caller() {
            return Err(Error::Forbidden(
                "\"owner\" must be the token's user".into(),
            ));
        }
        let metadata = ParcelMetadata::for_owner(metadata, owner, self.limits.metadata_max_bytes)?;
        let hash = {
            let body = body.clone();
            tokio::task::spawn_blocking(move || Sha256Hex::of(&body))
                .await
                .map_err(|err| Error::Internal(format!("hashing task: {err}")))?
        };
        if let Some(declared) = auth.declared_hash() {
            if *declared != hash {
                return Err(Error::HashMismatch {
                    declared: declared.to_string(),
                    actual: hash.to_string(),
                });
            }
        }
        let id = ParcelId::new(self.storage_id, &hash);
        if let Some(existing) = self.store.head(&id).await? {
            return same_owner(&id, &existing, owner).map(|()| (id, PutOutcome::AlreadyExists));
        }
        match self.store.put_new(&id, body, owner, &metadata).await? {
            PutOutcome::Created => Ok((id, PutOutcome::Created)),
            PutOutcome::AlreadyExists => {
                // Another request stored the same content a moment ago.
                let existing = self.store.head(&id).await?.ok_or_else(|| {
                    Error::parcel_store(format!("{id} existed, then vanished during upload"))
                })?;
                same_owner(&id, &existing, owner).map(|()| (id, PutOutcome::AlreadyExists))
            }
        }
    }

    /// Reads a whole parcel for the authorized caller (bounded by the v1 limit).
    pub async fn download_whole(
        &self,
        auth: Authorized,
        id: &ParcelId,
    ) -> Result<(StoredParcel, Bytes), Error> {
        let limit = self.limits.whole_body_max_bytes;
        let caller = auth.caller().clone();
        let outcome = self
            .store
            .get_whole(id, |parcel| {
                may_download(id, parcel, &caller)?;
                if parcel.size > limit {
                    return Err(Error::TooLarge(format!(
                        "parcel {id} is {} bytes; this API returns at most {limit}: \
                         use GET /api/v2/parcels/{id}",
                        parcel.size
                    )));
                }
                Ok(())
            })
            .await
            .and_then(|found| found.ok_or_else(|| Error::NotFound(id.clone())));
        auth.settle(outcome).await
    }

    /// Removes a parcel of the authorized caller.
    pub async fn remove(&self, auth: Authorized, id: &ParcelId) -> Result<(), Error> {
        let outcome = async {
            let parcel = self.inspect(id).await?;
            if parcel.owner != *auth.caller() {
                return Err(Error::Forbidden(format!(
                    "only the owner may remove parcel {id}"
                )));
            }
            self.store.delete(id).await
        }
        .await;
        auth.settle(outcome).await
    }

    /// The owner, metadata and size of a parcel; needs no token.
    pub async fn inspect(&self, id: &ParcelId) -> Result<StoredParcel, Error> {
        self.store
            .head(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))
    }
}

/// Who may read a parcel: its owner. (Blockchain grants come later.)
fn may_download(id: &ParcelId, parcel: &StoredParcel, caller: &Address) -> Result<(), Error> {
    if parcel.owner == *caller {
        Ok(())
    } else {
        Err(Error::Forbidden(format!(
            "only the owner may download parcel {id}"
        )))
    }
}

fn same_owner(id: &ParcelId, existing: &StoredParcel, owner: &Address) -> Result<(), Error> {
    if existing.owner == *owner {
        Ok(())
    } else {
        Err(Error::OwnedByAnother(id.clone()))
    }
}
