//! What can be done with parcels, independent of the HTTP API version.
//!
//! Every operation that needs a token takes an [`Authorized`] and settles it:
//! the token is consumed when the operation succeeds, and released when it
//! fails before anything became visible.
//!
//! Each such operation runs in a task of its own, with its settlement: a
//! request future can be dropped at any point (a client that resets an
//! HTTP/2 stream, a connection that closes), but the operation it started
//! still runs to its end and settles its token as consumed or released
//! according to what happened. One effect per token, whatever the client
//! does.
//!
//! Who may do what (docs/protocol.md, "Access control"): anyone inspects;
//! the owner removes; the owner downloads, and so does an account the AMO
//! blockchain grants the parcel to, when a [`Chain`] is configured. Those
//! rules apply after every check of the token and proof (docs/protocol.md,
//! "Order of checks"), and before any byte of the parcel is sent.

mod gate;
mod open;
mod resumable;
mod sweep;
mod upload;

pub use open::{open_by_account_key, open_by_client_key};
pub use resumable::{UploadRecord, UploadStatus, upload_key, upload_lock_key, valid_upload_id};
pub use sweep::{
    SweepTiming, Swept, sweep_abandoned_uploads, sweep_expired_tails, sweep_pass, sweeper_lease_key,
};
pub use upload::{MAX_PARTS, lock_key, multipart_mark_key, part_size_for};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use serde_json::Value;

use self::upload::{LockAfter, NewParcel};
use crate::{
    auth::{Authorized, Spend},
    chain::Chain,
    domain::{
        Address, ClientAddress, ParcelId, ParcelMetadata, RangeRequest, Sha256Hex, StorageId,
    },
    error::Error,
    limits::{Reservation, Slot, SlotKind, Slots},
    state::Shared,
    storage::{BodyStream, Fetched, PutOutcome, Store, StoredParcel},
    tasks::detached,
};

/// Limits on what clients may store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest stored metadata JSON, in bytes.
    pub metadata_max_bytes: usize,
    /// Largest body the bounded (v1) API takes or returns.
    pub whole_body_max_bytes: u64,
    /// Largest parcel a streamed (v2) upload may store.
    pub max_parcel_bytes: u64,
    /// Size of the parts of a multipart upload, and what a body of unknown
    /// length (chunked) or a resumable upload buffers at most: such a body
    /// is at most [`MAX_PARTS`] of them (413 past it).
    pub part_size: usize,
    /// The largest part a body of declared length grows its parts to
    /// ([`part_size_for`]); they stream through, unbuffered.
    pub max_part_size: u64,
    /// How long an upload's body may send nothing before it fails.
    pub body_idle_timeout: std::time::Duration,
    /// Uploads this replica takes at once (0: no cap).
    pub max_concurrent_uploads: usize,
    /// Downloads this replica serves at once (0: no cap).
    pub max_concurrent_downloads: usize,
    /// Bytes the bodies of v1 uploads in flight may hold together (0: no
    /// cap).
    pub v1_upload_memory_bytes: u64,
    /// The largest v1 upload body (its JSON, on the wire).
    pub v1_body_max_bytes: u64,
    /// The share of the upload slots and of the v1 memory one client may
    /// hold, in percent.
    pub client_share_percent: u64,
    /// The term of write locks and of the live marks of multipart uploads.
    pub lease: std::time::Duration,
    /// The largest body of known length that goes up in one `PutObject`;
    /// longer ones go up in parts.
    pub single_put_max_bytes: u64,
    /// How long S3 may take to accept a chunk of a streamed body, or to
    /// answer once the body is through.
    pub store_timeout: std::time::Duration,
    /// How long a resumable upload lives after its creation.
    pub upload_lifetime: std::time::Duration,
    /// How long a resumable upload lives after its creation or its last
    /// `PATCH` that stored bytes (never past its lifetime).
    pub upload_idle: std::time::Duration,
    /// Unfinished resumable uploads one account may hold (0: no cap).
    pub max_open_uploads_per_account: u64,
    /// Unfinished resumable uploads one client may hold (0: no cap).
    pub max_open_uploads_per_client: u64,
    /// Whether each effect of a token is gated by a mark of its use in the
    /// parcel store (`AMO_TOKEN_MARKERS`; docs/reliability.md, "Exactly
    /// once across a failover").
    pub token_markers: bool,
}

impl Limits {
    /// The largest body of unknown length (chunked), and the largest
    /// resumable upload: [`MAX_PARTS`] parts of `part_size`, never past
    /// `max_parcel_bytes`.
    pub fn parts_max_bytes(&self) -> u64 {
        self.max_parcel_bytes.min(MAX_PARTS * self.part_size as u64)
    }
}

/// A download ready to stream: what was found, and the bytes to send.
pub struct Download {
    /// The parcel.
    pub parcel: StoredParcel,
    /// Its content hash (the `ETag`).
    pub hash: Sha256Hex,
    /// `Some((first, last))` for a range answer (206).
    pub range: Option<(u64, u64)>,
    /// The bytes.
    pub body: BodyStream,
}

impl Download {
    /// The download, holding `slot` (and with it its place in the
    /// replica's downloads in flight) until its body is dropped.
    fn holding(mut self, slot: Slot) -> Self {
        let body = self.body;
        self.body = Box::pin(futures_util::StreamExt::inspect(body, move |_| {
            let _held_while_it_streams = &slot;
        }));
        self
    }
}

/// `bytes` in the unit of the v1 upload memory slots, KiB, rounded up.
fn kibibytes(bytes: u64) -> usize {
    usize::try_from(bytes.div_ceil(1 << 10)).unwrap_or(usize::MAX)
}

/// The memory a v1 upload holds of its replica's budget: grown as its body
/// arrives, so that what a client holds never runs ahead of what it sent.
pub struct V1Memory(Reservation);

impl V1Memory {
    /// Holds what a body of `body_bytes` needs (the body, then the data
    /// decoded beside it): 429 `client_share` past the client's share, 503
    /// `busy` past the budget.
    pub fn cover(&mut self, body_bytes: u64) -> Result<(), Error> {
        self.0
            .grow_to(kibibytes(crate::config::v1_upload_memory(body_bytes)))
    }

    /// What it holds, to keep with the upload.
    pub fn into_slot(self) -> Slot {
        self.0.into_slot()
    }
}

/// The parcel operations.
#[derive(Clone)]
pub struct Parcels {
    store: Store,
    state: Shared,
    chain: Option<Chain>,
    storage_id: StorageId,
    limits: Limits,
    upload_slots: Slots,
    download_slots: Slots,
    v1_upload_memory: Slots,
}

impl Parcels {
    /// Parcel operations on `store` for the storage `storage_id`; `state`
    /// holds the write locks; `chain`, when there is one, grants downloads
    /// to accounts other than the owner.
    pub fn new(
        store: Store,
        state: Shared,
        chain: Option<Chain>,
        storage_id: StorageId,
        limits: Limits,
    ) -> Self {
        Self {
            store,
            state,
            chain,
            storage_id,
            limits,
            upload_slots: Slots::new(
                SlotKind::Upload,
                limits.max_concurrent_uploads,
                limits.client_share_percent,
                1,
            ),
            download_slots: Slots::new(
                SlotKind::Download,
                limits.max_concurrent_downloads,
                limits.client_share_percent,
                1,
            ),
            v1_upload_memory: Slots::new(
                SlotKind::V1UploadMemory,
                kibibytes(limits.v1_upload_memory_bytes),
                limits.client_share_percent,
                kibibytes(crate::config::v1_upload_memory(limits.v1_body_max_bytes)),
            ),
        }
    }

    /// A slot for one upload of `client` on this replica: 429
    /// `client_share` past the client's share, 503 `busy` when all are
    /// taken. Take it before the token is claimed, and hand it to the
    /// upload.
    pub fn upload_slot(&self, client: ClientAddress) -> Result<Slot, Error> {
        self.upload_slots.take(client)
    }

    /// A slot for one download of `client` on this replica, held while its
    /// body streams: 429 `client_share` past the client's share, 503
    /// `busy` when all are taken. Take it before the token is claimed.
    pub fn download_slot(&self, client: ClientAddress) -> Result<Slot, Error> {
        self.download_slots.take(client)
    }

    /// The memory of a v1 upload body of `client` from this replica's
    /// budget, grown as the body arrives ([`V1Memory::cover`]); it starts
    /// with one unit (a KiB), so that a full budget refuses the upload
    /// before its proof (as [`Parcels::upload_slot`] refuses). Take it with
    /// the upload slot, before the token is claimed.
    pub fn v1_upload_memory(&self, client: ClientAddress) -> Result<V1Memory, Error> {
        let mut memory = V1Memory(self.v1_upload_memory.reserve(client));
        memory.cover(1)?;
        Ok(memory)
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
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
        slot: Slot,
        owner: Address,
        metadata: Option<Value>,
        body: Bytes,
    ) -> Result<(ParcelId, PutOutcome), Error> {
        let this = self.clone();
        detached(async move {
            let _slot = slot;
            let lock_after = LockAfter::default();
            let outcome = this
                .store_whole(&auth, &owner, metadata, body, &lock_after)
                .await;
            lock_after.end_with(auth.settle(outcome)).await
        })
        .await?
    }

    async fn store_whole(
        &self,
        auth: &Authorized,
        owner: &Address,
        metadata: Option<Value>,
        body: Bytes,
        lock_after: &LockAfter,
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
        let spend = auth.spend();
        let parcel = NewParcel {
            id: &id,
            owner,
            metadata: &metadata,
            spend: &spend,
            lock_after,
        };
        let outcome = self.write_whole(&parcel, body).await;
        let outcome = self.settle_gate(&spend, outcome).await?;
        Ok((id, outcome))
    }

    /// Streams a body into a new parcel of the authorized caller. The token
    /// must declare the body's SHA-256, which is the parcel id; the parcel
    /// becomes visible only if the body matches it. The body is handed back
    /// with the outcome, so that what is left of a refused one can be
    /// drained.
    pub async fn upload_stream<S>(
        &self,
        auth: Authorized,
        slot: Slot,
        metadata: Option<Value>,
        mut body: S,
        length: Option<u64>,
    ) -> Result<(Result<(ParcelId, PutOutcome), Error>, S), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let this = self.clone();
        detached(async move {
            let _slot = slot;
            let lock_after = LockAfter::default();
            let outcome = this
                .store_stream(&auth, metadata, &mut body, length, &lock_after)
                .await;
            (lock_after.end_with(auth.settle(outcome)).await, body)
        })
        .await
    }

    async fn store_stream<S>(
        &self,
        auth: &Authorized,
        metadata: Option<Value>,
        body: S,
        length: Option<u64>,
        lock_after: &LockAfter,
    ) -> Result<(ParcelId, PutOutcome), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let declared = auth.declared_hash().ok_or_else(|| {
            Error::BadRequest(
                "a v2 upload token must declare the body's SHA-256: get one with \
                 {\"name\":\"upload\",\"hash\":\"<sha256 hex>\"}"
                    .into(),
            )
        })?;
        let owner = auth.caller();
        let metadata = ParcelMetadata::for_owner(metadata, owner, self.limits.metadata_max_bytes)?;
        let id = ParcelId::new(self.storage_id, declared);
        let spend = auth.spend();
        let parcel = NewParcel {
            id: &id,
            owner,
            metadata: &metadata,
            spend: &spend,
            lock_after,
        };
        let outcome = self.write_stream(parcel, body, length).await;
        let outcome = self.settle_gate(&spend, outcome).await?;
        Ok((id, outcome))
    }

    /// Opens a whole parcel for the authorized caller, for the v1 answer:
    /// a parcel over the v1 limit is refused (413) before a byte of it is
    /// read, and the token stays usable. Who may read it is decided first,
    /// as for any download. The body streams: nothing of it is held whole.
    pub async fn download_whole(
        &self,
        auth: Authorized,
        slot: Slot,
        id: &ParcelId,
    ) -> Result<Download, Error> {
        let (this, id) = (self.clone(), id.clone());
        detached(async move {
            let outcome = this.open_whole(auth.caller(), &id).await;
            auth.settle(outcome).await
        })
        .await?
        .map(|download| download.holding(slot))
    }

    async fn open_whole(&self, caller: &Address, id: &ParcelId) -> Result<Download, Error> {
        let limit = self.limits.whole_body_max_bytes;
        let download = self.open(caller, id, None).await?;
        if download.parcel.size > limit {
            return Err(Error::TooLarge(format!(
                "parcel {id} is {} bytes; this API returns at most {limit}: \
                 use GET /api/v2/parcels/{id}",
                download.parcel.size
            )));
        }
        Ok(download)
    }

    /// Opens a parcel, or the range of it that `range` asks for, for the
    /// authorized caller. The token is consumed once the stream is open.
    pub async fn download_stream(
        &self,
        auth: Authorized,
        slot: Slot,
        id: &ParcelId,
        range: Option<String>,
    ) -> Result<Download, Error> {
        let (this, id) = (self.clone(), id.clone());
        detached(async move {
            let outcome = this.open(auth.caller(), &id, range.as_deref()).await;
            auth.settle(outcome).await
        })
        .await?
        .map(|download| download.holding(slot))
    }

    /// One `GetObject` in the common case: who may read the parcel is
    /// decided on the owner that comes with the body, before a byte of it
    /// goes out (a refused body is dropped unread). The size that comes
    /// with it settles the range: what the store served is what the client
    /// asked for, or (rarely) a second request asks for exactly that.
    async fn open(
        &self,
        caller: &Address,
        id: &ParcelId,
        range: Option<&str>,
    ) -> Result<Download, Error> {
        let fetched = self
            .store
            .fetch(id, RangeRequest::for_store(range).as_deref())
            .await?;
        let (parcel, served, body) = match fetched {
            Fetched::Missing => return Err(Error::NotFound(id.clone())),
            Fetched::OutOfRange => {
                // A range past the end: the size is needed for the 416.
                let parcel = self.inspect(id).await?;
                self.may_download(id, &parcel, caller).await?;
                return match RangeRequest::resolve(range, parcel.size) {
                    RangeRequest::Unsatisfiable => {
                        Err(Error::RangeNotSatisfiable { size: parcel.size })
                    }
                    wanted => self.open_exactly(id, parcel, wanted.served()).await,
                };
            }
            Fetched::Found {
                parcel,
                served,
                body,
            } => (parcel, served, body),
        };
        self.may_download(id, &parcel, caller).await?;
        let body = match RangeRequest::resolve(range, parcel.size) {
            RangeRequest::Unsatisfiable => {
                return Err(Error::RangeNotSatisfiable { size: parcel.size });
            }
            wanted if wanted.served() == served => body,
            wanted => {
                drop(body);
                return self.open_exactly(id, parcel, wanted.served()).await;
            }
        };
        Ok(self.download(id, parcel, served, body))
    }

    /// Opens exactly `served` (`None`: the whole body) of a parcel whose
    /// reader is authorized.
    async fn open_exactly(
        &self,
        id: &ParcelId,
        parcel: StoredParcel,
        served: Option<(u64, u64)>,
    ) -> Result<Download, Error> {
        let body = self
            .store
            .get_stream(id, served)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))?;
        Ok(self.download(id, parcel, served, body))
    }

    fn download(
        &self,
        id: &ParcelId,
        parcel: StoredParcel,
        range: Option<(u64, u64)>,
        body: BodyStream,
    ) -> Download {
        let body = Box::pin(body.inspect_ok(move |chunk| {
            crate::metrics::bytes_sent(chunk.len() as u64);
        }));
        Download {
            parcel,
            hash: id.content_hash(),
            range,
            body,
        }
    }

    /// Removes a parcel of the authorized caller. The parcel's write lock
    /// and the token end together (one Redis round trip, not two).
    pub async fn remove(&self, auth: Authorized, id: &ParcelId) -> Result<(), Error> {
        let (this, id) = (self.clone(), id.clone());
        detached(async move {
            let spend = auth.spend();
            let lock_after = LockAfter::default();
            let outcome = this.remove_as(&auth, &spend, &id, &lock_after).await;
            let outcome = this.settle_gate(&spend, outcome).await;
            drop(spend);
            lock_after.end_with(auth.settle(outcome)).await
        })
        .await?
    }

    /// Removes `id` if the caller owns it, under the parcel's write lock:
    /// the owner checked is the owner deleted. (Without it, two removes that
    /// both checked the owner could straddle another account's commit of
    /// the same content, and the second would delete that parcel.) The
    /// delete passes the token's gate (fencing and its use mark) first.
    /// The lock is left in `lock_after`, for the caller to end.
    async fn remove_as(
        &self,
        auth: &Authorized,
        spend: &Spend<'_>,
        id: &ParcelId,
        lock_after: &LockAfter,
    ) -> Result<(), Error> {
        let lock = self.lock_for_commit(id).await?;
        let removed = async {
            let parcel = self.inspect(id).await?;
            if parcel.owner != *auth.caller() {
                return Err(Error::Forbidden(format!(
                    "only the owner may remove parcel {id}"
                )));
            }
            self.pass_gate(spend, Some(&lock)).await?;
            Ok(self.store.delete(id).await?)
        }
        .await;
        lock_after.keep(lock);
        removed?;
        if let Some(chain) = &self.chain {
            chain.forget_parcel(id);
        }
        Ok(())
    }

    /// The owner, metadata and size of a parcel; needs no token.
    pub async fn inspect(&self, id: &ParcelId) -> Result<StoredParcel, Error> {
        self.store
            .head(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// Who may read a parcel: its owner, without asking anyone; or, when a
    /// chain is configured, an account it grants the parcel to. A chain that
    /// cannot answer is an error, never a grant.
    async fn may_download(
        &self,
        id: &ParcelId,
        parcel: &StoredParcel,
        caller: &Address,
    ) -> Result<(), Error> {
        if parcel.owner == *caller {
            return Ok(());
        }
        let Some(chain) = &self.chain else {
            return Err(Error::Forbidden(format!(
                "only the owner may download parcel {id}"
            )));
        };
        if chain.is_granted(caller, id, &parcel.owner).await? {
            tracing::info!(buyer = %caller, parcel = %id, "download granted by the AMO blockchain");
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "parcel {id} belongs to another account, and the AMO blockchain grants \
                 {caller} no usage of it"
            )))
        }
    }
}
