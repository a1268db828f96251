//! Resumable uploads (docs/protocol.md, "Resumable uploads"): the state of
//! the tus 1.0.0 protocol, kept where every replica finds it.
//!
//! An upload is a record in the shared state (`amo:upload:{<upload id>}`,
//! JSON, living until the upload expires) and an S3 multipart upload on the
//! parcel's key. The record holds the offset, the parts written (their
//! ETags), the tail and the SHA-256 of every byte so far as its serialized
//! intermediate state: a `PATCH` goes on from it on any replica, and no
//! byte is read twice.
//!
//! Every part but the last is exactly one part size. A `PATCH` that ends off
//! a part boundary stores its **tail** (the bytes past the last whole part,
//! less than one part) as an object of its own, as tusd's S3 store does; the
//! next `PATCH` sends it as the start of the next part. So memory per upload
//! stays at one part, and an upload survives any replica.
//!
//! A `PATCH` holds the upload's lock (`amo:upload-lock:{<upload id>}`, a
//! lease) and writes the record after each part and at its end, with a
//! compare-and-set: a body cut in the middle leaves the record saying what
//! the store holds. It runs detached from its request, so a client that
//! goes away does not stop it half-way through a record write.

use std::time::Duration;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256, digest::common::hazmat::SerializableState};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    Parcels,
    upload::{
        FEED_DEPTH, Incoming, LockAfter, NewParcel, end_feed, is_store_stopped, multipart_mark_key,
        short_body, too_large, unlock,
    },
};
use crate::{
    auth::{
        Authorized, Bound, Spend,
        tokens::{bound_to, token_key},
    },
    domain::{Address, ClientAddress, ParcelId, ParcelMetadata, Sha256Hex, overrun},
    error::{Error, with_sources},
    state::{Lease, unix_now},
    storage::{PutOutcome, StoreError},
    tasks::detached,
};

/// The shared-state key of a resumable upload's record.
pub fn upload_key(upload: &str) -> String {
    format!("amo:upload:{{{upload}}}")
}

/// The shared-state key of the lock of a resumable upload, held while a
/// request writes to it.
pub fn upload_lock_key(upload: &str) -> String {
    format!("amo:upload-lock:{{{upload}}}")
}

/// The value of the live mark of a resumable upload's multipart upload.
fn mark_value(upload: &str) -> String {
    format!("upload:{upload}")
}

/// The record of a resumable upload (part of the contract between versions:
/// docs/protocol.md, "Shared state").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    /// The parcel it writes (its id names the declared SHA-256).
    pub parcel: String,
    /// The token's user.
    pub owner: String,
    /// The `jti` of the token bound to it.
    pub jti: String,
    /// The parcel's metadata, as stored.
    pub metadata: String,
    /// `Upload-Length`.
    pub length: u64,
    /// `Upload-Offset`: the bytes the store holds.
    pub offset: u64,
    /// When it expires (Unix seconds): its creation or its last `PATCH`
    /// that stored bytes, plus the idle time, at most its deadline.
    pub expires: u64,
    /// When it expires however busy it is (Unix seconds): its creation plus
    /// the upload lifetime. Records written before it was kept have
    /// `expires` there.
    #[serde(default)]
    pub deadline: Option<u64>,
    /// The `PATCH`es admitted so far: the `X-Upload-Sequence` the next one
    /// must send (records written before it was kept read as 0).
    #[serde(default)]
    pub sequence: u64,
    /// The client that created it ([`crate::domain::ClientAddress::key`]),
    /// whose open uploads it counts in.
    #[serde(default)]
    pub client: String,
    /// The store's id of its parts (an S3 multipart upload id).
    pub store_id: String,
    /// The tags (ETags) of the parts written, in order.
    pub parts: Vec<String>,
    /// The bytes past the last whole part, stored on their own.
    pub tail: Option<Tail>,
    /// The SHA-256 of the first `offset` bytes, as its serialized
    /// intermediate state (base64).
    pub sha256: String,
    /// Set once the parcel is stored.
    pub finished: bool,
}

/// The tail of a resumable upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tail {
    /// Its name in the store (each tail has a new one).
    pub name: String,
    /// Its length: less than one part.
    pub length: u64,
}

/// Where a resumable upload stands.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    /// Its id.
    pub upload: String,
    /// `Upload-Length`.
    pub length: u64,
    /// `Upload-Offset`.
    pub offset: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// The `X-Upload-Sequence` the next `PATCH` must send.
    pub sequence: u64,
    /// The parcel, once stored.
    pub parcel: Option<ParcelId>,
}

impl UploadStatus {
    fn of(upload: &str, record: &UploadRecord) -> Self {
        Self {
            upload: upload.to_owned(),
            length: record.length,
            offset: record.offset,
            expires: record.expires,
            sequence: record.sequence,
            parcel: record
                .finished
                .then(|| ParcelId::parse(&record.parcel).ok())
                .flatten(),
        }
    }
}

/// A part whose bytes were all handed to the store, which has yet to say
/// it stored them.
struct InFlight {
    /// The store's write of it; answers the part's tag.
    put: tokio::task::JoinHandle<Result<String, StoreError>>,
    /// Where the upload stands once it is stored.
    end: u64,
    /// The SHA-256 of the upload up to `end`.
    hasher: Sha256,
}

/// The outcome of a task.
fn joined<T>(outcome: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, Error> {
    Ok(outcome.map_err(|err| Error::Internal(format!("a part's task failed: {err}")))??)
}

/// A record as read, with the text it was read as (for compare-and-set).
struct Stored {
    text: String,
    record: UploadRecord,
}

/// The serialized state of a SHA-256, as the record keeps it.
fn save_hash(hasher: &Sha256) -> String {
    base64::engine::general_purpose::STANDARD.encode(hasher.serialize())
}

/// A SHA-256 from the state [`save_hash`] wrote.
fn load_hash(text: &str) -> Result<Sha256, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|err| Error::Internal(format!("an upload's hash state: {err}")))?;
    let state = bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::Internal("an upload's hash state has the wrong length".into()))?;
    Sha256::deserialize(state)
        .map_err(|err| Error::Internal(format!("an upload's hash state: {err:?}")))
}

/// How long `record` has to live: until its expiry; an expired one is not
/// found.
fn time_left(record: &UploadRecord) -> Result<Duration, Error> {
    match record.expires.saturating_sub(unix_now()) {
        0 => Err(Error::UploadNotFound),
        left => Ok(Duration::from_secs(left)),
    }
}

/// An upload id as sent in a path: 32 hex digits, as created.
pub fn valid_upload_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

impl Parcels {
    /// The largest upload this replica takes: 10,000 parts of
    /// `AMO_S3_PART_SIZE_BYTES` (a resumable upload's parts do not grow),
    /// never past `AMO_MAX_PARCEL_BYTES`.
    pub fn max_upload_bytes(&self) -> u64 {
        self.limits.parts_max_bytes()
    }

    /// Creates a resumable upload of `length` bytes for the authorized
    /// caller, whose token must declare the body's SHA-256, and binds the
    /// token to it. An empty body is stored at once.
    pub async fn create_upload(
        &self,
        auth: Authorized,
        client: ClientAddress,
        length: u64,
        metadata: Option<Value>,
    ) -> Result<UploadStatus, Error> {
        let this = self.clone();
        detached(async move {
            let prepared = this.prepare_upload(&auth, length, metadata).await;
            let (id, owner, metadata) = match prepared {
                Ok(prepared) => prepared,
                Err(err) => {
                    auth.failed().await;
                    return Err(err);
                }
            };
            let upload = Uuid::new_v4().simple().to_string();
            let lifetime = this.limits.upload_lifetime;
            let now = unix_now();
            let mut record = UploadRecord {
                parcel: id.to_string(),
                owner: owner.to_string(),
                jti: auth.jti().to_owned(),
                metadata: metadata.as_stored().to_owned(),
                length,
                offset: 0,
                expires: now.saturating_add(lifetime.min(this.limits.upload_idle).as_secs()),
                deadline: Some(now.saturating_add(lifetime.as_secs())),
                sequence: 0,
                client: client.key(),
                store_id: String::new(),
                parts: Vec::new(),
                tail: None,
                sha256: save_hash(&Sha256::new()),
                finished: false,
            };
            if length == 0 {
                let spend = auth.spend();
                let lock_after = LockAfter::default();
                let parcel = NewParcel {
                    id: &id,
                    owner: &owner,
                    metadata: &metadata,
                    spend: &spend,
                    lock_after: &lock_after,
                };
                let written = this.write_whole(&parcel, Bytes::new()).await;
                let written = match written {
                    Ok(_) => this.new_record(&upload, &record, true).await,
                    Err(err) => Err(err),
                };
                drop(spend);
                return lock_after
                    .end_with(auth.settle(written))
                    .await
                    .map(|stored| {
                        crate::metrics::resumable("completed");
                        UploadStatus::of(&upload, &stored.record)
                    });
            }
            if let Err(err) = this.admit_open(&upload, &record).await {
                auth.failed().await;
                return Err(err);
            }
            let started: Result<_, Error> = async {
                record.store_id = this
                    .store
                    .staged_start(&upload, &id, &owner, &metadata)
                    .await?;
                let mark = multipart_mark_key(&record.store_id);
                if let Err(err) = this
                    .state
                    .set_new(&mark, &mark_value(&upload), time_left(&record)?)
                    .await
                {
                    this.store.staged_abort(&id, &record.store_id).await;
                    return Err(err.into());
                }
                match this.new_record(&upload, &record, false).await {
                    Ok(stored) => Ok(stored),
                    Err(err) => {
                        this.discard_staged(&upload, &id, &record.store_id).await;
                        Err(err)
                    }
                }
            }
            .await;
            let stored = match started {
                Ok(stored) => stored,
                Err(err) => {
                    this.close_open(&upload, &record).await;
                    auth.failed().await;
                    return Err(err);
                }
            };
            let bound = match time_left(&stored.record) {
                Ok(left) => auth.bind(&upload, left).await,
                Err(err) => Err(err),
            };
            if let Err(err) = bound {
                this.discard(&upload, &stored).await;
                return Err(err);
            }
            crate::metrics::resumable("created");
            Ok(UploadStatus::of(&upload, &stored.record))
        })
        .await?
    }

    /// The checks of a creation, after the token's: the hash, the length,
    /// the metadata, and who stores the content already.
    async fn prepare_upload(
        &self,
        auth: &Authorized,
        length: u64,
        metadata: Option<Value>,
    ) -> Result<(ParcelId, Address, ParcelMetadata), Error> {
        let declared = auth.declared_hash().ok_or_else(|| {
            Error::BadRequest(
                "a resumable upload's token must declare the body's SHA-256: get one with \
                 {\"name\":\"upload\",\"hash\":\"<sha256 hex>\"}"
                    .into(),
            )
        })?;
        let max = self.max_upload_bytes();
        if length > max {
            return Err(Error::TooLarge(format!(
                "a resumable upload is at most {max} bytes (10,000 parts of {} bytes; \
                 Tus-Max-Size), got {length}: send a longer body in one v2 upload of \
                 declared length",
                self.limits.part_size
            )));
        }
        if length == 0 && *declared != Sha256Hex::of(b"") {
            return Err(Error::HashMismatch {
                declared: declared.to_string(),
                actual: Sha256Hex::of(b"").to_string(),
            });
        }
        let owner = auth.caller().clone();
        let metadata = ParcelMetadata::for_owner(metadata, &owner, self.limits.metadata_max_bytes)?;
        let id = ParcelId::new(self.storage_id, declared);
        if let Some(existing) = self.store.head(&id).await? {
            if existing.owner != owner {
                return Err(Error::OwnedByAnother(id));
            }
        }
        Ok((id, owner, metadata))
    }

    /// Writes a new record.
    async fn new_record(
        &self,
        upload: &str,
        record: &UploadRecord,
        finished: bool,
    ) -> Result<Stored, Error> {
        let record = UploadRecord {
            finished,
            ..record.clone()
        };
        let text = serde_json::to_string(&record)
            .map_err(|err| Error::Internal(format!("an upload record: {err}")))?;
        if !self
            .state
            .set_new(&upload_key(upload), &text, time_left(&record)?)
            .await?
        {
            return Err(Error::Internal(format!("upload {upload} exists already")));
        }
        Ok(Stored { text, record })
    }

    /// Reads the record of `upload`, if `bound` may see it: the token's
    /// user's, with its token, bound to it (or, once it finished, the token
    /// that was).
    async fn visible(&self, bound: &Bound, upload: &str) -> Result<Stored, Error> {
        let text = self
            .state
            .value(&upload_key(upload))
            .await?
            .ok_or(Error::UploadNotFound)?;
        let record: UploadRecord = serde_json::from_str(&text)
            .map_err(|err| Error::Internal(format!("upload record {upload}: {err}")))?;
        let owner_matches = Address::parse(&record.owner).is_ok_and(|owner| owner == bound.caller);
        if !owner_matches || record.jti != bound.jti || !(bound.bound || record.finished) {
            return Err(Error::UploadNotFound);
        }
        Ok(Stored { text, record })
    }

    /// Writes `stored`'s record back if nobody changed it meanwhile.
    async fn save(&self, upload: &str, stored: &mut Stored) -> Result<(), Error> {
        let text = serde_json::to_string(&stored.record)
            .map_err(|err| Error::Internal(format!("an upload record: {err}")))?;
        let swapped = self
            .state
            .swap(
                &upload_key(upload),
                &stored.text,
                Some(&text),
                time_left(&stored.record)?,
            )
            .await?;
        if !swapped {
            return Err(Error::UploadLocked);
        }
        stored.text = text;
        Ok(())
    }

    /// Where `upload` stands (tus `HEAD`).
    /// An upload whose bytes are all stored is complete by tus: a client
    /// that finds its offset equal to its length sends nothing more. So an
    /// upload left stored but not completed (its completion failed) is
    /// completed here, before it says so.
    pub async fn upload_status(&self, bound: &Bound, upload: &str) -> Result<UploadStatus, Error> {
        let stored = self.visible(bound, upload).await?;
        if stored.record.offset == stored.record.length && !stored.record.finished {
            return self.complete_stored(bound, upload).await;
        }
        Ok(UploadStatus::of(upload, &stored.record))
    }

    /// Takes the lock of `upload` and reads its record under it.
    async fn lock_upload(&self, bound: &Bound, upload: &str) -> Result<(Lease, Stored), Error> {
        self.visible(bound, upload).await?;
        let lock = Lease::try_take(&self.state, upload_lock_key(upload), self.limits.lease)
            .await?
            .ok_or(Error::UploadLocked)?;
        match self.visible(bound, upload).await {
            Ok(stored) => Ok((lock, stored)),
            Err(err) => {
                unlock(lock).await;
                Err(err)
            }
        }
    }

    /// Writes `body`, which starts at byte `offset`, to `upload` (tus
    /// `PATCH`); completes the parcel when it reaches the upload's length.
    /// `length` is the body's declared length, if any. The body is handed
    /// back with the outcome, so that what is left of a refused one can be
    /// drained.
    pub async fn patch_upload<S>(
        &self,
        bound: Bound,
        upload: String,
        offset: u64,
        sequence: u64,
        mut body: S,
        length: Option<u64>,
    ) -> Result<(Result<UploadStatus, Error>, S), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let this = self.clone();
        detached(async move {
            let outcome = async {
                let (lock, mut stored) = this.lock_upload(&bound, &upload).await?;
                let expires = stored.record.expires;
                let outcome = this
                    .patch_locked(
                        (&upload, &lock),
                        &mut stored,
                        offset,
                        sequence,
                        &mut body,
                        length,
                    )
                    .await;
                if stored.record.expires != expires && !stored.record.finished {
                    this.kept_alive(&upload, &stored.record).await;
                }
                unlock(lock).await;
                outcome.map(|()| UploadStatus::of(&upload, &stored.record))
            }
            .await;
            (outcome, body)
        })
        .await
    }

    async fn patch_locked<S>(
        &self,
        (upload, lock): (&str, &Lease),
        stored: &mut Stored,
        offset: u64,
        sequence: u64,
        body: S,
        length: Option<u64>,
    ) -> Result<(), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        // The sequence is spent before any byte of the body is read: a
        // replay of this request finds it used, and changes nothing.
        if sequence != stored.record.sequence {
            return Err(Error::StaleRequest {
                at: stored.record.sequence,
            });
        }
        stored.record.sequence += 1;
        self.save(upload, stored).await?;
        let record = &stored.record;
        if offset != record.offset {
            return Err(Error::OffsetMismatch {
                at: record.offset,
                sent: offset,
            });
        }
        if record.finished {
            // The answer to the completing PATCH was lost: say it again.
            return match length {
                Some(0) | None => Ok(()),
                Some(length) => Err(too_large(offset.saturating_add(length), record.length)),
            };
        }
        if let Some(length) = length {
            // Checked: a declared length near 2^64 overruns, never wraps.
            let over = overrun(offset, length, record.length);
            if over > 0 {
                return Err(Error::TooLarge(format!(
                    "the body runs {over} bytes past the upload's length of {}",
                    record.length
                )));
            }
        }
        let written = self.write_body(upload, stored, body, length).await;
        if stored.record.offset == stored.record.length {
            // Every byte is stored, whatever became of the body's end (a
            // connection dropped before a chunked body's last terminator, a
            // client that sent more): the parcel is completed now, so that
            // an offset equal to the length always means a stored parcel.
            self.complete(upload, lock, stored).await?;
        }
        written
    }

    /// Completes an upload whose bytes are all stored but whose completion
    /// failed (the store or the write lock refused it), under the upload's
    /// lock; answers where it stands.
    async fn complete_stored(&self, bound: &Bound, upload: &str) -> Result<UploadStatus, Error> {
        let this = self.clone();
        let (bound, upload) = (bound.clone(), upload.to_owned());
        detached(async move {
            let (lock, mut stored) = this.lock_upload(&bound, &upload).await?;
            let outcome = if stored.record.offset == stored.record.length && !stored.record.finished
            {
                this.complete(&upload, &lock, &mut stored).await
            } else {
                Ok(())
            };
            unlock(lock).await;
            outcome.map(|()| UploadStatus::of(&upload, &stored.record))
        })
        .await?
    }

    /// Writes a body into the upload's parts, saving the record after each
    /// part, and stores what is left past the last whole part as the tail.
    ///
    /// A part the body will fill streams straight to the store, and the
    /// next part streams while the store answers for the one before (two
    /// `UploadPart`s overlap; the first has all its bytes sent). A body
    /// that fails within such a part loses that part's bytes: the offset
    /// stays at the last part stored. The last bytes of a body, less than
    /// a part, are held (at most one part) and stored as the tail, also
    /// when the body fails while they arrive.
    async fn write_body<S>(
        &self,
        upload: &str,
        stored: &mut Stored,
        body: S,
        declared: Option<u64>,
    ) -> Result<(), Error>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
    {
        let part_size = self.limits.part_size as u64;
        let id = ParcelId::parse(&stored.record.parcel)?;
        let mut incoming = Incoming {
            body,
            carry: None,
            hasher: load_hash(&stored.record.sha256)?,
            received: 0,
            max: stored.record.length.saturating_sub(stored.record.offset),
            idle: self.limits.body_idle_timeout,
            store_wait: self.limits.store_timeout,
        };
        // The part being filled: the old tail, then the body's bytes.
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len: u64 = 0;
        if let Some(tail) = &stored.record.tail {
            let bytes = self.store.get_tail(upload, &tail.name).await?;
            if bytes.len() as u64 != tail.length {
                return Err(StoreError::unavailable(format!(
                    "the tail of upload {upload} holds {} bytes, not {}",
                    bytes.len(),
                    tail.length
                ))
                .into());
            }
            pending_len = tail.length;
            pending.push(bytes);
        }
        let mut failed: Option<Error> = None;
        let mut in_flight: Option<InFlight> = None;
        loop {
            let written = stored.record.parts.len() + usize::from(in_flight.is_some());
            let at = (written as u64).saturating_mul(part_size);
            if at >= stored.record.length {
                break;
            }
            let target = part_size.min(stored.record.length - at);
            // What the body has yet to hand out: unread, or read and held.
            let held = incoming
                .carry
                .as_ref()
                .map_or(0, |carry| carry.len() as u64);
            let coming = declared.map(|declared| {
                declared
                    .saturating_sub(incoming.received)
                    .saturating_add(held)
            });
            if coming.is_none_or(|coming| pending_len.saturating_add(coming) < target) {
                // This body may end within the part: hold it until the part
                // is whole.
                self.settle(upload, stored, in_flight.take()).await?;
                while pending_len < target {
                    match incoming.next((target - pending_len) as usize).await {
                        Ok(Some(piece)) => {
                            pending_len += piece.len() as u64;
                            pending.push(piece);
                        }
                        Ok(None) => break,
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                if pending_len < target {
                    break;
                }
            }
            // The part is whole, or will be: it streams to the store as it
            // arrives, in a task of its own.
            let (sender, feed) = mpsc::channel(FEED_DEPTH);
            let put = {
                let (store, id, store_id) = (
                    self.store.clone(),
                    id.clone(),
                    stored.record.store_id.clone(),
                );
                let number = written + 1;
                tokio::spawn(async move {
                    store
                        .staged_part(&id, &store_id, number, at, target, feed)
                        .await
                })
            };
            let fed = async {
                let fed = async {
                    for piece in pending.drain(..) {
                        incoming.hand(&sender, piece).await?;
                    }
                    while pending_len < target {
                        let piece = incoming
                            .next((target - pending_len) as usize)
                            .await?
                            .ok_or_else(|| short_body(pending_len, target))?;
                        pending_len += piece.len() as u64;
                        incoming.hand(&sender, piece).await?;
                    }
                    Ok(())
                }
                .await;
                end_feed(sender, &fed);
                fed
            };
            let (fed, settled) = tokio::join!(fed, self.settle(upload, stored, in_flight.take()));
            pending_len = 0;
            let this = InFlight {
                put,
                end: at.saturating_add(target),
                hasher: incoming.hasher.clone(),
            };
            match (fed, settled) {
                (Ok(()), Ok(())) => in_flight = Some(this),
                (_, Err(err)) => return Err(err),
                (Err(err), Ok(())) if is_store_stopped(&err) => {
                    return Err(joined(this.put.await).err().unwrap_or(err));
                }
                (Err(err), Ok(())) => {
                    // The body failed: this part is lost, the store refuses
                    // it (its feed failed).
                    let _ = this.put.await;
                    failed = Some(err);
                    break;
                }
            }
        }
        self.settle(upload, stored, in_flight.take()).await?;
        let at = (stored.record.parts.len() as u64).saturating_mul(part_size);
        if pending_len > 0 && at.saturating_add(pending_len) > stored.record.offset {
            // New bytes past the last whole part: the new tail.
            let name = Uuid::new_v4().simple().to_string();
            let mut tail = BytesMut::with_capacity(pending_len as usize);
            for piece in pending.drain(..) {
                tail.extend_from_slice(&piece);
            }
            self.store.put_tail(upload, &name, tail.freeze()).await?;
            let old = stored.record.tail.replace(Tail {
                name,
                length: pending_len,
            });
            stored.record.offset = at.saturating_add(pending_len);
            stored.record.sha256 = save_hash(&incoming.hasher);
            self.progressed(&mut stored.record);
            self.save(upload, stored).await?;
            self.drop_tail(upload, old).await;
        }
        if let Some(err) = failed {
            return Err(err);
        }
        // Nothing may follow the upload's length.
        match incoming.next(1).await? {
            Some(_) => Err(too_large(
                stored.record.offset.saturating_add(1),
                stored.record.length,
            )),
            None => Ok(()),
        }
    }

    /// Waits for a part in flight, and saves the record with it: the
    /// offset moves to its end, and the tail it began with is deleted.
    async fn settle(
        &self,
        upload: &str,
        stored: &mut Stored,
        part: Option<InFlight>,
    ) -> Result<(), Error> {
        let Some(part) = part else {
            return Ok(());
        };
        // The part's bytes are all fed: S3 must answer within its timeout.
        let tag = match tokio::time::timeout(self.limits.store_timeout, part.put).await {
            Ok(outcome) => joined(outcome)?,
            Err(_) => {
                return Err(StoreError::unavailable(format!(
                    "UploadPart got no answer within {:?} of its last byte",
                    self.limits.store_timeout
                ))
                .into());
            }
        };
        let old = stored.record.tail.take();
        stored.record.parts.push(tag);
        stored.record.offset = part.end;
        stored.record.sha256 = save_hash(&part.hasher);
        self.progressed(&mut stored.record);
        self.save(upload, stored).await?;
        self.drop_tail(upload, old).await;
        Ok(())
    }

    /// Bytes were stored: the upload lives for the idle time from now, up
    /// to its deadline.
    fn progressed(&self, record: &mut UploadRecord) {
        let deadline = record.deadline.unwrap_or(record.expires);
        record.expires = deadline.min(unix_now() + self.limits.upload_idle.as_secs());
    }

    /// The upload's expiry moved (bytes were stored): its live mark, which
    /// keeps the sweep off its parts, its token's binding and its place in
    /// the open-uploads counts follow.
    async fn kept_alive(&self, upload: &str, record: &UploadRecord) {
        let Ok(left) = time_left(record) else {
            return;
        };
        let follow = [
            (multipart_mark_key(&record.store_id), mark_value(upload)),
            (token_key(&record.jti), bound_to(upload)),
        ];
        for (key, value) in follow {
            if let Err(err) = self.state.swap(&key, &value, Some(&value), left).await {
                tracing::warn!(err = %with_sources(&err), upload, key, "could not move the expiry of an upload's key; it lapses sooner");
            }
        }
        self.open_moved(upload, record).await;
    }

    /// Deletes a tail the record no longer names.
    async fn drop_tail(&self, upload: &str, tail: Option<Tail>) {
        if let Some(tail) = tail {
            if let Err(err) = self.store.drop_tails(upload, Some(&tail.name)).await {
                tracing::warn!(err = %with_sources(&err), upload, "could not delete an old tail; the sweep will");
            }
        }
    }

    /// The upload has all its bytes: checks the SHA-256, and stores the
    /// parcel under its write lock, or discards everything.
    async fn complete(
        &self,
        upload: &str,
        upload_lock: &Lease,
        stored: &mut Stored,
    ) -> Result<(), Error> {
        let id = ParcelId::parse(&stored.record.parcel)?;
        let actual = Sha256Hex::from_digest(&load_hash(&stored.record.sha256)?.finalize());
        if actual != id.content_hash() {
            self.discard(upload, stored).await;
            crate::metrics::resumable("hash_mismatch");
            return Err(Error::HashMismatch {
                declared: id.content_hash().to_string(),
                actual: actual.to_string(),
            });
        }
        let owner = Address::parse(&stored.record.owner)?;
        let metadata = ParcelMetadata::from_stored(&stored.record.metadata)?;
        // The upload is the holder: a completion retried after a failure
        // finds its own mark.
        let spend = Spend {
            jti: &stored.record.jti,
            holder: format!("tus:{upload}"),
            held: Some(upload_lock),
            marked: None,
        };
        // Its lock is ended here, not kept: the commit keeps nothing.
        let lock_after = LockAfter::default();
        let parcel = NewParcel {
            id: &id,
            owner: &owner,
            metadata: &metadata,
            spend: &spend,
            lock_after: &lock_after,
        };
        let lock = self.lock_for_commit(&id).await?;
        if let Err(err) = self.pass_gate(&spend, Some(&lock)).await {
            unlock(lock).await;
            if matches!(err, Error::Unauthenticated { .. }) {
                // The token was spent elsewhere: this upload never stores.
                self.discard(upload, stored).await;
            }
            return Err(err);
        }
        let outcome = match self.store.head(&id).await {
            Ok(None) => {
                self.store
                    .staged_complete(&id, &stored.record.store_id, &stored.record.parts)
                    .await
            }
            Ok(Some(_)) => Ok(PutOutcome::AlreadyExists),
            Err(err) => Err(err),
        };
        // An existing parcel's owner is read under the lock, as an
        // upload's is; the lock then ends while the upload is settled, in
        // the same round trips: nothing after takes or needs it.
        let settled = match outcome {
            Ok(outcome) => self.settle_put(&parcel, outcome).await,
            Err(err) => Err(err.into()),
        };
        let settling = self.settle_completion(upload, stored, &id, settled);
        futures_util::future::join(unlock(lock), settling).await.1
    }

    /// What follows a completion's commit, `settled`: a stored parcel ends
    /// the upload (its tails, mark, record and token); a parcel another
    /// account owns discards it.
    async fn settle_completion(
        &self,
        upload: &str,
        stored: &mut Stored,
        id: &ParcelId,
        settled: Result<PutOutcome, Error>,
    ) -> Result<(), Error> {
        match settled {
            Ok(outcome) => {
                if outcome == PutOutcome::AlreadyExists {
                    self.store.staged_abort(id, &stored.record.store_id).await;
                }
                // A replica that died between storing a tail and saving the
                // record left that tail behind: no tail outlives the upload.
                if let Err(err) = self.store.drop_tails(upload, None).await {
                    tracing::warn!(err = %with_sources(&err), upload, "could not delete an upload's tails; the sweep will");
                }
                self.end_mark(upload, &stored.record.store_id).await;
                stored.record.finished = true;
                self.save(upload, stored).await?;
                self.close_open(upload, &stored.record).await;
                self.unbind(upload, &stored.record.jti).await;
                crate::metrics::token_consumed();
                crate::metrics::resumable("completed");
                Ok(())
            }
            Err(err @ Error::OwnedByAnother(_)) => {
                self.discard(upload, stored).await;
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// Ends `upload` (tus `DELETE`): everything staged is deleted, and so
    /// are its record and its token.
    pub async fn terminate_upload(&self, bound: Bound, upload: String) -> Result<(), Error> {
        let this = self.clone();
        detached(async move {
            let (lock, stored) = this.lock_upload(&bound, &upload).await?;
            if !stored.record.finished {
                this.discard(&upload, &stored).await;
                crate::metrics::resumable("terminated");
            } else {
                this.state
                    .swap(&upload_key(&upload), &stored.text, None, Duration::ZERO)
                    .await?;
            }
            unlock(lock).await;
            Ok(())
        })
        .await?
    }

    /// Deletes everything of an unfinished upload: its parts, tails, live
    /// mark, record and token.
    async fn discard(&self, upload: &str, stored: &Stored) {
        let record = &stored.record;
        if let Ok(id) = ParcelId::parse(&record.parcel) {
            self.discard_staged(upload, &id, &record.store_id).await;
        }
        if let Err(err) = self
            .state
            .swap(&upload_key(upload), &stored.text, None, Duration::ZERO)
            .await
        {
            tracing::warn!(err = %with_sources(&err), upload, "could not delete an upload record; it expires");
        }
        self.close_open(upload, record).await;
        self.unbind(upload, &record.jti).await;
    }

    /// Deletes the parts and tails of an upload, and its live mark.
    async fn discard_staged(&self, upload: &str, id: &ParcelId, store_id: &str) {
        self.store.staged_abort(id, store_id).await;
        if let Err(err) = self.store.drop_tails(upload, None).await {
            tracing::warn!(err = %with_sources(&err), upload, "could not delete an upload's tails; the sweep will");
        }
        self.end_mark(upload, store_id).await;
    }

    async fn end_mark(&self, upload: &str, store_id: &str) {
        let ended = self
            .state
            .swap(
                &multipart_mark_key(store_id),
                &mark_value(upload),
                None,
                Duration::ZERO,
            )
            .await;
        if let Err(err) = ended {
            tracing::warn!(err = %with_sources(&err), upload, "could not end an upload's live mark; it lapses");
        }
    }

    /// Uses up the token bound to `upload`.
    async fn unbind(&self, upload: &str, jti: &str) {
        let ended = self
            .state
            .swap(&token_key(jti), &bound_to(upload), None, Duration::ZERO)
            .await;
        if let Err(err) = ended {
            tracing::warn!(err = %with_sources(&err), upload, "could not end a token's binding; it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_goes_on_from_its_saved_state_as_if_never_stopped() {
        let mut hasher = Sha256::new();
        hasher.update(b"hello, ");
        let mut resumed = load_hash(&save_hash(&hasher)).unwrap();
        resumed.update(b"world");
        assert_eq!(
            Sha256Hex::from_digest(&resumed.finalize()),
            Sha256Hex::of(b"hello, world")
        );
        assert!(load_hash("AAAA").is_err());
    }
}
