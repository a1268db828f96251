//! A remove holds the parcel's write lock from its owner check to its
//! delete: two removes by A that straddle B's commit of the same content
//! leave B's parcel stored.
//!
//! The order is made, not hoped for: the store of the replica is the real
//! one behind a gate that holds each `DeleteObject` of a parcel until the
//! test lets it go, and says when one arrived.

use std::{sync::Arc, time::Duration};

use amo_storage::{
    app::Backends,
    domain::{Address, ParcelId, ParcelMetadata},
    storage::{
        BodyStream, Feed, Fetched, ParcelStore, PartUpload, PutOutcome, StaleUpload, Store,
        StoreError, StoredParcel, TokenMark,
    },
};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;
use tokio::sync::{Semaphore, mpsc};

use crate::helpers::*;

/// The real store, whose parcel deletes wait for a permit of `gate` and
/// report their arrival on `arrived`.
struct GatedDeletes {
    inner: Store,
    gate: Arc<Semaphore>,
    arrived: mpsc::UnboundedSender<()>,
}

#[async_trait]
impl ParcelStore for GatedDeletes {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn check(&self) -> Result<(), StoreError> {
        self.inner.check().await
    }
    async fn head(&self, id: &ParcelId) -> Result<Option<StoredParcel>, StoreError> {
        self.inner.head(id).await
    }
    async fn get_stream(
        &self,
        id: &ParcelId,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BodyStream>, StoreError> {
        self.inner.get_stream(id, range).await
    }
    async fn fetch(&self, id: &ParcelId, range: Option<&str>) -> Result<Fetched, StoreError> {
        self.inner.fetch(id, range).await
    }
    async fn put_fed(
        &self,
        id: &ParcelId,
        length: u64,
        feed: Feed,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError> {
        self.inner.put_fed(id, length, feed, owner, metadata).await
    }
    async fn start_upload(
        &self,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<Box<dyn PartUpload>, StoreError> {
        self.inner.start_upload(id, owner, metadata).await
    }
    async fn delete(&self, id: &ParcelId) -> Result<(), StoreError> {
        let _ = self.arrived.send(());
        let _permit = self.gate.acquire().await.expect("the gate stays open");
        self.inner.delete(id).await
    }
    async fn list(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list().await
    }
    async fn unfinished_uploads(&self) -> Result<Vec<String>, StoreError> {
        self.inner.unfinished_uploads().await
    }
    async fn stale_uploads(&self, older_than: Duration) -> Result<Vec<StaleUpload>, StoreError> {
        self.inner.stale_uploads(older_than).await
    }
    async fn abort_upload(&self, upload: &StaleUpload) -> Result<(), StoreError> {
        self.inner.abort_upload(upload).await
    }
    async fn last_activity(
        &self,
        upload: &StaleUpload,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        self.inner.last_activity(upload).await
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn mark_token_used(&self, jti: &str, holder: &str) -> Result<TokenMark, StoreError> {
        self.inner.mark_token_used(jti, holder).await
    }
    async fn unmark_token(&self, jti: &str, holder: &str) -> Result<bool, StoreError> {
        self.inner.unmark_token(jti, holder).await
    }
    async fn staged_start(
        &self,
        upload: &str,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<String, StoreError> {
        self.inner.staged_start(upload, id, owner, metadata).await
    }
    async fn staged_part(
        &self,
        id: &ParcelId,
        store_id: &str,
        number: usize,
        at: u64,
        length: u64,
        feed: Feed,
    ) -> Result<String, StoreError> {
        self.inner
            .staged_part(id, store_id, number, at, length, feed)
            .await
    }
    async fn staged_complete(
        &self,
        id: &ParcelId,
        store_id: &str,
        parts: &[String],
    ) -> Result<PutOutcome, StoreError> {
        self.inner.staged_complete(id, store_id, parts).await
    }
    async fn staged_abort(&self, id: &ParcelId, store_id: &str) {
        self.inner.staged_abort(id, store_id).await
    }
    async fn put_tail(&self, upload: &str, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner.put_tail(upload, name, bytes).await
    }
    async fn get_tail(&self, upload: &str, name: &str) -> Result<Bytes, StoreError> {
        self.inner.get_tail(upload, name).await
    }
    async fn drop_tails(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        self.inner.drop_tails(upload, name).await
    }
    async fn tailed_uploads(&self, older_than: Duration) -> Result<Vec<String>, StoreError> {
        self.inner.tailed_uploads(older_than).await
    }
}

/// A v2 remove of `id` by `account`, with a token of its own; its status.
async fn remove(app: &TestApp, account: &Account, id: &str) -> StatusCode {
    let operation = serde_json::json!({"name": "remove", "id": id});
    let token = app.token(&account.address, operation).await;
    app.remove_v2(Some(&account.prove(&token)), id)
        .await
        .status()
}

/// A removes its parcel twice at once. The first remove is held at its
/// delete; the second, meanwhile, either waits for the parcel's write lock
/// (the first holds it) or, without the lock, checks the owner (A) and
/// reaches its own delete. The first delete goes; B uploads the same
/// content (its commit takes the write lock); then any delete still held
/// goes. B's parcel must survive: the second remove answers without
/// deleting (the lock's wait ran out while the first held it: 409
/// `upload_in_progress`).
#[tokio::test]
async fn two_removes_straddling_anothers_commit_leave_that_parcel_stored() {
    let settings = settings(&[]);
    let real = Backends::from_settings(&settings).expect("backends");
    let gate = Arc::new(Semaphore::new(0));
    let (arrived, mut deletes) = mpsc::unbounded_channel();
    let store: Store = Arc::new(GatedDeletes {
        inner: real.store.clone(),
        gate: gate.clone(),
        arrived,
    });
    let app = spawn_on(settings, Backends { store, ..real }).await;
    let (a, b) = (Arc::new(Account::new()), Account::new());
    let data = random_body(1000);
    let id = app.store_v2(&a, &data).await;

    let first = tokio::spawn({
        let (app, a, id) = (app.clone(), a.clone(), id.clone());
        async move { remove(&app, &a, &id).await }
    });
    deletes.recv().await.expect("the first remove reaches its delete");
    let mut second = tokio::spawn({
        let (app, a, id) = (app.clone(), a.clone(), id.clone());
        async move { remove(&app, &a, &id).await }
    });
    // The second remove ends (waiting for the lock, in vain) or reaches a
    // delete of its own, whichever comes: both are events, not a time.
    let second_done = tokio::select! {
        status = &mut second => Some(status.unwrap()),
        reached = deletes.recv() => {
            reached.expect("the second remove reaches its delete");
            None
        }
    };
    gate.add_permits(1);
    assert_eq!(first.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(app.inspect_v1(&id, "owner").await.status(), StatusCode::NOT_FOUND);

    // B stores the same content: the same parcel id, now B's.
    assert_eq!(app.store_v2(&b, &data).await, id);
    gate.add_permits(1);
    let second_status = match second_done {
        Some(status) => status,
        None => second.await.unwrap(),
    };
    assert_eq!(
        second_status,
        StatusCode::CONFLICT,
        "the second remove waited for the write lock the first held, in vain"
    );
    let owner = expect_json(app.inspect_v1(&id, "owner").await, StatusCode::OK).await;
    assert_eq!(owner["owner"], serde_json::json!(b.address), "B's parcel survives");
    assert_eq!(app.fetch_v2(&b, &id).await, data);
}

/// docs/protocol.md, Access control: a remove answers 409
/// `upload_in_progress` when the parcel's write lock stays held for 5 s.
/// The lock is held here, under its documented key, as another replica's
/// commit would hold it; the remove must wait the 5 s, no less, and answer
/// within twice that.
#[tokio::test]
async fn a_remove_that_finds_the_write_lock_held_for_5_s_answers_409_upload_in_progress() {
    const LOCK_WAIT: Duration = Duration::from_secs(5);
    let app = spawn_app().await;
    let owner = Account::new();
    let data = random_body(1000);
    let id = app.store_v2(&owner, &data).await;
    let lock = documented_keys::parcel_lock(&id);
    let state = &app.backends.state;
    assert!(
        state
            .set_new(&lock, "claimed:another", Duration::from_secs(60))
            .await
            .unwrap(),
        "the test holds the parcel's write lock"
    );
    let token = app
        .token(&owner.address, serde_json::json!({"name": "remove", "id": id}))
        .await;
    let started = std::time::Instant::now();
    let response = app.remove_v2(Some(&owner.prove(&token)), &id).await;
    let took = started.elapsed();
    eprintln!("a remove that found the write lock held answered after {took:?}");
    expect_code(response, StatusCode::CONFLICT, "upload_in_progress").await;
    assert!(
        took >= LOCK_WAIT && took < LOCK_WAIT * 2,
        "answered 409 after {took:?}: not within [5 s, 10 s)"
    );
    // Nothing was deleted; once the lock is let go, a remove goes through.
    assert_eq!(app.fetch_v2(&owner, &id).await, data);
    assert!(state.end(&lock, "another").await.unwrap());
    assert_eq!(remove(&app, &owner, &id).await, StatusCode::NO_CONTENT);
}
