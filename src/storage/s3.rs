//! The parcel store on Ceph RGW (or any S3), through aws-sdk-s3.
//!
//! User-metadata fields (part of the contract between versions):
//! `x-amz-meta-owner` (the owner's address) and `x-amz-meta-metadata` (the
//! compact ASCII JSON metadata, which carries `owner` too).

use secrecy::SecretString;
use std::{path::PathBuf, time::Duration};

use async_trait::async_trait;
use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, IdentityCache, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, timeout::TimeoutConfig,
    },
    error::{ProvideErrorMetadata, SdkError},
    primitives::ByteStream,
    types::{CompletedMultipartUpload, CompletedPart},
};
use bytes::Bytes;

use super::{
    BodyStream, Feed, Fetched, ParcelStore, PartUpload, PutOutcome, S3Keys, StaleUpload,
    StoreError, StoredParcel, TokenMark,
};
use crate::{
    domain::{Address, ParcelId, ParcelMetadata},
    error::{Cause, with_sources},
};

const OWNER_FIELD: &str = "owner";
/// The folder, under the prefix, of resumable uploads' tails.
const TAILS_DIR: &str = ".tus/";
const METADATA_FIELD: &str = "metadata";
/// The folder, under the prefix, of the marks of used tokens
/// ([`ParcelStore::mark_token_used`]); a bucket lifecycle rule expires them.
pub const TOKENS_DIR: &str = ".tokens/";

/// How to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:7480`.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Prefix of every object key (may be empty).
    pub prefix: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key; never shown in `Debug` output or logs.
    pub secret_key: SecretString,
    /// The key file the keys came from, read again every `key_file_poll`
    /// and on SIGHUP by [`S3Keys::watch`]; `None`: the keys never change.
    pub key_file: Option<PathBuf>,
    /// How often the key file is read again.
    pub key_file_poll: Duration,
}

/// Parcels as objects in one bucket.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    keys: S3Keys,
    /// How long a response body may send nothing before its read fails
    /// (`None`: no bound).
    body_idle: Option<Duration>,
}

impl S3Store {
    /// The multipart uploads begun and not finished under this store's
    /// prefix: every page of S3's listing (1,000 a page), each page asked
    /// from where the last one ended.
    async fn multipart_uploads(
        &self,
    ) -> Result<Vec<aws_sdk_s3::types::MultipartUpload>, StoreError> {
        let mut found = Vec::new();
        let mut marker: Option<(Option<String>, Option<String>)> = None;
        loop {
            let mut request = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&self.prefix);
            if let Some((key, upload_id)) = marker.take() {
                request = request.set_key_marker(key).set_upload_id_marker(upload_id);
            }
            let page = request.send().await.map_err(failure)?;
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            let truncated = page.is_truncated().unwrap_or(false);
            found.extend(page.uploads.unwrap_or_default());
            if !truncated || next.0.is_none() {
                return Ok(found);
            }
            marker = Some(next);
        }
    }

    /// Starts a multipart upload of a parcel.
    async fn create_multipart(
        &self,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PartTarget, StoreError> {
        let key = self.key(id);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("application/octet-stream")
            .metadata(OWNER_FIELD, owner.as_str())
            .metadata(METADATA_FIELD, metadata.as_stored())
            .send()
            .await
            .map_err(failure)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::unavailable("CreateMultipartUpload answered no upload id"))?
            .to_owned();
        Ok(PartTarget {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            upload_id,
        })
    }

    /// The target of a multipart upload already started.
    fn part_target(&self, id: &ParcelId, upload_id: &str) -> PartTarget {
        PartTarget {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: self.key(id),
            upload_id: upload_id.to_owned(),
        }
    }

    /// Where the tails of resumable uploads are kept: beside the parcels,
    /// under a name no parcel id has.
    fn tails_prefix(&self) -> String {
        format!("{}{TAILS_DIR}", self.prefix)
    }

    /// The object key of a tail of `upload`, or the prefix of them all.
    fn tail_key(&self, upload: &str, name: &str) -> String {
        format!("{}{upload}/{name}", self.tails_prefix())
    }

    /// The object key of the mark of the used token `jti`.
    pub fn token_mark_key(&self, jti: &str) -> String {
        format!("{}{TOKENS_DIR}{jti}", self.prefix)
    }

    /// Who wrote the token mark `key`, if it exists.
    async fn token_mark_holder(&self, key: &str) -> Result<Option<String>, StoreError> {
        let object = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(err) if status_of(&err) == Some(404) => return Ok(None),
            Err(err) => return Err(failure(err)),
        };
        let written = object
            .body
            .collect()
            .await
            .map_err(|err| StoreError::Unavailable(Box::new(S3Error::Body(Box::new(err)))))?;
        Ok(Some(
            String::from_utf8_lossy(&written.into_bytes()).into_owned(),
        ))
    }

    /// Every object under `prefix`: key and last modified.
    async fn objects(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<std::time::SystemTime>)>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(failure)?;
            found.extend(page.contents().iter().filter_map(|object| {
                let modified = object
                    .last_modified()
                    .and_then(|at| std::time::SystemTime::try_from(*at).ok());
                Some((object.key()?.to_owned(), modified))
            }));
        }
        Ok(found)
    }

    /// A store for `config`. Nothing is contacted yet.
    pub fn new(config: &S3Config) -> Self {
        let keys = S3Keys::new(
            &config.access_key,
            &config.secret_key,
            config.key_file.clone(),
        );
        let sdk_config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            // Asked as each request is signed: reloaded keys apply at once.
            .identity_cache(IdentityCache::no_cache())
            .credentials_provider(keys.clone())
            // Ceph RGW: path-style, and no checksums or aws-chunked bodies
            // (Ceph 16 stores aws-chunked framing inside the object).
            .force_path_style(true)
            // Every operation counted once, in amo_backend_calls_total.
            .interceptor(super::s3_calls::CountCalls)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(sdk_config),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
            keys,
            body_idle: None,
        }
    }

    /// The same store, with every S3 call limited to `timeout` (attempt and
    /// whole operation), and reads of a response body that stall for
    /// `timeout` failing too.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        Self {
            client: Client::from_conf(config),
            body_idle: Some(timeout),
            ..self
        }
    }

    /// The same store, with `interceptor` run on each of its S3 calls as
    /// well as the call counter (the tests count one store's calls by
    /// request).
    pub fn with_interceptor(
        self,
        interceptor: impl aws_sdk_s3::config::Intercept + 'static,
    ) -> Self {
        let config = self
            .client
            .config()
            .to_builder()
            .interceptor(interceptor)
            .build();
        Self {
            client: Client::from_conf(config),
            ..self
        }
    }

    /// The S3 keys this store signs with (reloaded by [`S3Keys::watch`]).
    pub fn keys(&self) -> &S3Keys {
        &self.keys
    }

    /// The client, as configured for this store (the benchmarks reuse it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix of every object key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The object key of a parcel.
    pub fn key(&self, id: &ParcelId) -> String {
        format!("{}{}", self.prefix, id)
    }

    /// `PutObject` of a parcel unless one with its id exists
    /// (`If-None-Match: *`). The payload is not signed (`UNSIGNED-PAYLOAD`):
    /// the service hashes every byte itself, and signing would hash the
    /// body a second time, before the first byte could leave. A `streamed`
    /// body arrives at the client's pace, so the SDK's timeouts are off for
    /// it: the caller bounds the wait for each chunk and for the answer.
    async fn put(
        &self,
        id: &ParcelId,
        length: u64,
        body: ByteStream,
        owner: &Address,
        metadata: &ParcelMetadata,
        streamed: bool,
    ) -> Result<PutOutcome, StoreError> {
        let mut config = aws_sdk_s3::config::Builder::default();
        if streamed {
            config = config.timeout_config(paced_by_the_client());
        }
        let answer = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(id))
            .if_none_match("*")
            .content_type("application/octet-stream")
            .content_length(length as i64)
            .metadata(OWNER_FIELD, owner.as_str())
            .metadata(METADATA_FIELD, metadata.as_stored())
            .body(body)
            .customize()
            .config_override(config)
            .disable_payload_signing()
            .send()
            .await;
        match answer {
            Ok(_) => Ok(PutOutcome::Created),
            Err(err) if status_of(&err) == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(err) => Err(write_failure(err)),
        }
    }

    /// `GetObject` of a parcel (or a range of it); `None` when it does not
    /// exist.
    async fn get_object(
        &self,
        id: &ParcelId,
        range: Option<(u64, u64)>,
    ) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, StoreError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(id))
            .set_range(range.map(|(first, last)| format!("bytes={first}-{last}")))
            .send()
            .await;
        match answer {
            Ok(object) => Ok(Some(object)),
            Err(err) if status_of(&err) == Some(404) => Ok(None),
            Err(err) => Err(failure(err)),
        }
    }
}

#[async_trait]
impl ParcelStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn check(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(err) if status_of(&err) == Some(404) => Err(StoreError::unavailable(format!(
                "bucket {} does not exist",
                self.bucket
            ))),
            Err(err) => Err(failure(err)),
        }
    }

    async fn head(&self, id: &ParcelId) -> Result<Option<StoredParcel>, StoreError> {
        let answer = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.key(id))
            .send()
            .await;
        match answer {
            Ok(head) => Ok(Some(stored_parcel(
                id,
                head.metadata(),
                head.content_length(),
            )?)),
            Err(err) if status_of(&err) == Some(404) => Ok(None),
            Err(err) => Err(failure(err)),
        }
    }

    async fn put_new(
        &self,
        id: &ParcelId,
        body: Bytes,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError> {
        let length = body.len() as u64;
        self.put(id, length, ByteStream::from(body), owner, metadata, false)
            .await
    }

    async fn put_fed(
        &self,
        id: &ParcelId,
        length: u64,
        feed: Feed,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError> {
        let body = ByteStream::from_body_1_x(FedBody::new(feed, length));
        self.put(id, length, body, owner, metadata, true).await
    }

    async fn get_stream(
        &self,
        id: &ParcelId,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BodyStream>, StoreError> {
        let Some(object) = self.get_object(id, range).await? else {
            return Ok(None);
        };
        Ok(Some(body_stream(object.body, self.body_idle)))
    }

    async fn fetch(&self, id: &ParcelId, range: Option<&str>) -> Result<Fetched, StoreError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(id))
            .set_range(range.map(str::to_owned))
            .send()
            .await;
        let object = match answer {
            Ok(object) => object,
            Err(err) if status_of(&err) == Some(404) => return Ok(Fetched::Missing),
            Err(err) if status_of(&err) == Some(416) => return Ok(Fetched::OutOfRange),
            Err(err) => return Err(failure(err)),
        };
        let served = object
            .content_range()
            .map(parse_content_range)
            .transpose()?;
        let size = match served {
            Some((_, _, size)) => size as i64,
            None => object.content_length().unwrap_or(0),
        };
        let parcel = stored_parcel(id, object.metadata(), Some(size))?;
        Ok(Fetched::Found {
            parcel,
            served: served.map(|(first, last, _)| (first, last)),
            body: body_stream(object.body, self.body_idle),
        })
    }

    async fn start_upload(
        &self,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<Box<dyn PartUpload>, StoreError> {
        let target = self.create_multipart(id, owner, metadata).await?;
        Ok(Box::new(MultipartUpload {
            target,
            done: Vec::new(),
            finished: false,
        }))
    }

    async fn delete(&self, id: &ParcelId) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.key(id))
            .send()
            .await
            .map(drop)
            .map_err(write_failure)
    }

    async fn mark_token_used(&self, jti: &str, holder: &str) -> Result<TokenMark, StoreError> {
        let key = self.token_mark_key(jti);
        let answer = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .if_none_match("*")
            .content_type("text/plain")
            .body(ByteStream::from(holder.as_bytes().to_vec()))
            .send()
            .await;
        match answer {
            Ok(_) => return Ok(TokenMark::New),
            Err(err) if status_of(&err) == Some(412) => {}
            Err(err) => return Err(failure(err)),
        }
        Ok(
            if self.token_mark_holder(&key).await?.as_deref() == Some(holder) {
                TokenMark::Ours
            } else {
                TokenMark::Spent
            },
        )
    }

    async fn unmark_token(&self, jti: &str, holder: &str) -> Result<bool, StoreError> {
        let key = self.token_mark_key(jti);
        if self.token_mark_holder(&key).await?.as_deref() != Some(holder) {
            return Ok(false);
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
            .map(|_| true)
            .map_err(failure)
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        let tails = self.tails_prefix();
        let marks = self.token_mark_key("");
        Ok(self
            .objects(&self.prefix)
            .await?
            .into_iter()
            .filter(|(key, _)| !key.starts_with(&tails) && !key.starts_with(&marks))
            .filter_map(|(key, _)| key.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }

    async fn stale_uploads(&self, older_than: Duration) -> Result<Vec<StaleUpload>, StoreError> {
        let cutoff = std::time::SystemTime::now() - older_than;
        Ok(self
            .multipart_uploads()
            .await?
            .iter()
            .filter_map(|upload| {
                let initiated = upload
                    .initiated()
                    .and_then(|at| std::time::SystemTime::try_from(*at).ok())
                    .filter(|at| *at < cutoff)?;
                let key = upload.key()?;
                let id = ParcelId::parse(key.strip_prefix(&self.prefix)?).ok()?;
                Some(StaleUpload {
                    id,
                    key: key.to_owned(),
                    upload_id: upload.upload_id()?.to_owned(),
                    active: initiated,
                })
            })
            .collect())
    }

    /// The latest of the upload's start and its parts' `LastModified`,
    /// every page of `ListParts` read.
    async fn last_activity(
        &self,
        upload: &StaleUpload,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        let mut pages = self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(&upload.key)
            .upload_id(&upload.upload_id)
            .into_paginator()
            .send();
        let mut latest = upload.active;
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(err) if status_of(&err) == Some(404) => return Ok(None),
                Err(err) => return Err(failure(err)),
            };
            let modified = page.parts().iter().filter_map(|part| {
                part.last_modified()
                    .and_then(|at| std::time::SystemTime::try_from(*at).ok())
            });
            latest = modified.fold(latest, std::cmp::max);
        }
        Ok(Some(latest))
    }

    async fn abort_upload(&self, upload: &StaleUpload) -> Result<(), StoreError> {
        PartTarget {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: upload.key.clone(),
            upload_id: upload.upload_id.clone(),
        }
        .try_abort()
        .await
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn unfinished_uploads(&self) -> Result<Vec<String>, StoreError> {
        let mut unfinished: Vec<String> = self
            .multipart_uploads()
            .await?
            .iter()
            .filter_map(|upload| upload.key().map(str::to_owned))
            .collect();
        let tails = self.objects(&self.tails_prefix()).await?;
        unfinished.extend(tails.into_iter().map(|(key, _)| key));
        Ok(unfinished)
    }

    async fn staged_start(
        &self,
        _upload: &str,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<String, StoreError> {
        Ok(self.create_multipart(id, owner, metadata).await?.upload_id)
    }

    async fn staged_part(
        &self,
        id: &ParcelId,
        store_id: &str,
        number: usize,
        _at: u64,
        length: u64,
        feed: Feed,
    ) -> Result<String, StoreError> {
        let number = i32::try_from(number)
            .map_err(|_| StoreError::Internal(format!("part number {number} out of range")))?;
        let part = self
            .part_target(id, store_id)
            .upload_part(number, length, feed)
            .await?;
        Ok(part.e_tag().unwrap_or_default().to_owned())
    }

    async fn staged_complete(
        &self,
        id: &ParcelId,
        store_id: &str,
        parts: &[String],
    ) -> Result<PutOutcome, StoreError> {
        let parts = parts
            .iter()
            .enumerate()
            .map(|(at, tag)| {
                CompletedPart::builder()
                    .part_number(at as i32 + 1)
                    .e_tag(tag)
                    .build()
            })
            .collect();
        self.part_target(id, store_id).complete(parts).await
    }

    async fn staged_abort(&self, id: &ParcelId, store_id: &str) {
        self.part_target(id, store_id).abort().await;
    }

    async fn put_tail(&self, upload: &str, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.tail_key(upload, name))
            .content_type("application/octet-stream")
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(drop)
            .map_err(failure)
    }

    async fn get_tail(&self, upload: &str, name: &str) -> Result<Bytes, StoreError> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.tail_key(upload, name))
            .send()
            .await
            .map_err(failure)?;
        let body = object
            .body
            .collect()
            .await
            .map_err(|err| StoreError::Unavailable(Box::new(S3Error::Body(Box::new(err)))))?;
        Ok(body.into_bytes())
    }

    async fn drop_tails(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        let keys = match name {
            Some(name) => vec![self.tail_key(upload, name)],
            None => self
                .objects(&self.tail_key(upload, ""))
                .await?
                .into_iter()
                .map(|(key, _)| key)
                .collect(),
        };
        for key in keys {
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(failure)?;
        }
        Ok(())
    }

    async fn tailed_uploads(&self, older_than: Duration) -> Result<Vec<String>, StoreError> {
        let cutoff = std::time::SystemTime::now() - older_than;
        let tails = self.tails_prefix();
        let mut uploads: Vec<String> = self
            .objects(&tails)
            .await?
            .into_iter()
            .filter(|(_, modified)| modified.is_some_and(|at| at < cutoff))
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix(&tails)?;
                Some(rest.split_once('/')?.0.to_owned())
            })
            .collect();
        uploads.sort();
        uploads.dedup();
        Ok(uploads)
    }
}

/// Where the parts of one multipart upload go.
#[derive(Clone)]
struct PartTarget {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
}

impl PartTarget {
    async fn upload_part(
        &self,
        number: i32,
        length: u64,
        feed: Feed,
    ) -> Result<CompletedPart, StoreError> {
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .content_length(length as i64)
            .body(ByteStream::from_body_1_x(FedBody::new(feed, length)))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().timeout_config(paced_by_the_client()),
            )
            .disable_payload_signing()
            .send()
            .await
            .map_err(failure)?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(uploaded.e_tag().map(str::to_owned))
            .build())
    }

    /// Completes the upload from `parts`. Ceph ignores `If-None-Match` on
    /// `CompleteMultipartUpload`: the parcel write lock is what keeps an
    /// existing parcel from being replaced.
    async fn complete(&self, parts: Vec<CompletedPart>) -> Result<PutOutcome, StoreError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(write_failure)?;
        Ok(PutOutcome::Created)
    }

    /// Aborts the upload. If S3 cannot be reached (the very failure that
    /// often ends an upload), keeps trying in the background, so the upload
    /// is gone soon after S3 is back.
    async fn abort(&self) {
        let Err(error) = self.try_abort().await else {
            return;
        };
        let error = with_sources(&error);
        tracing::warn!(key = %self.key, %error, "could not abort a multipart upload; trying again");
        let target = self.clone();
        tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + ABORT_RETRY_FOR;
            let mut pause = ABORT_FIRST_PAUSE;
            while tokio::time::Instant::now() < give_up {
                tokio::time::sleep(pause).await;
                match target.try_abort().await {
                    Ok(()) => {
                        tracing::info!(key = %target.key, "multipart upload aborted on a later try");
                        return;
                    }
                    Err(error) => {
                        let error = with_sources(&error);
                        tracing::debug!(key = %target.key, %error, "still cannot abort");
                    }
                }
                pause = (pause * 2).min(ABORT_MAX_PAUSE);
            }
            tracing::warn!(
                key = %target.key,
                "gave up aborting a multipart upload; the sweep of abandoned uploads will"
            );
        });
    }

    /// One attempt to abort; `Ok` once the upload is gone.
    async fn try_abort(&self) -> Result<(), StoreError> {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        match aborted {
            Ok(_) => {
                tracing::debug!(key = %self.key, "multipart upload aborted");
                Ok(())
            }
            Err(err) if status_of(&err) == Some(404) => Ok(()),
            Err(err) => Err(failure(err)),
        }
    }
}

/// The first pause before an abort that failed is tried again; it doubles
/// up to [`ABORT_MAX_PAUSE`].
const ABORT_FIRST_PAUSE: Duration = Duration::from_millis(250);
/// The longest pause between two attempts to abort.
const ABORT_MAX_PAUSE: Duration = Duration::from_secs(2);
/// How long an abort is tried again before it is left to the sweep of
/// abandoned uploads.
const ABORT_RETRY_FOR: Duration = Duration::from_secs(120);

/// A multipart upload in progress; its parts go up one at a time, each
/// streamed from its feed.
struct MultipartUpload {
    target: PartTarget,
    done: Vec<CompletedPart>,
    finished: bool,
}

#[async_trait]
impl PartUpload for MultipartUpload {
    fn upload_id(&self) -> &str {
        &self.target.upload_id
    }

    fn parts(&self) -> usize {
        self.done.len()
    }

    async fn push_part(&mut self, length: u64, feed: Feed) -> Result<(), StoreError> {
        let number = self.done.len() as i32 + 1;
        let part = self.target.upload_part(number, length, feed).await?;
        self.done.push(part);
        Ok(())
    }

    /// Ceph ignores `If-None-Match` on `CompleteMultipartUpload`: the
    /// parcel write lock is what keeps an existing parcel from being
    /// replaced.
    async fn complete(mut self: Box<Self>) -> Result<PutOutcome, StoreError> {
        let parts = std::mem::take(&mut self.done);
        let outcome = self.target.complete(parts).await?;
        self.finished = true;
        Ok(outcome)
    }

    async fn abort(mut self: Box<Self>) {
        self.finished = true;
        self.target.abort().await;
    }
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let target = self.target.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { target.abort().await });
        }
    }
}

/// A request body for S3 that delivers what a feed hands over: `length`
/// bytes, announced as the body's exact size.
struct FedBody {
    feed: Feed,
    length: u64,
}

impl FedBody {
    fn new(feed: Feed, length: u64) -> Self {
        Self { feed, length }
    }
}

impl http_body::Body for FedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.feed
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(http_body::Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length)
    }
}

/// An S3 response body as a stream of chunks, handed to hyper as they
/// come. They are not merged: hyper writes up to 16 queued chunks in one
/// `writev`, while merging copied every byte once more into a fresh buffer
/// of a MiB or more (page faults on every one, with the mmap threshold
/// pinned in `main.rs`) and held up to 64 reads at once (profiled and
/// measured with bench/streaming.sh: docs/performance.md). A body that
/// sends nothing for `idle` fails: the SDK's timeouts end with the answer's
/// head, and a stalled RGW would otherwise hold the download open.
fn body_stream(body: ByteStream, idle: Option<Duration>) -> BodyStream {
    Box::pin(futures_util::stream::try_unfold(
        body,
        move |mut body| async move {
            let next = match idle {
                Some(idle) => tokio::time::timeout(idle, body.try_next())
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("S3 sent no byte of the body for {idle:?}"),
                        )
                    })?,
                None => body.try_next().await,
            };
            match next {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(err) => Err(std::io::Error::other(err)),
            }
        },
    ))
}

/// `bytes <first>-<last>/<size>` of a ranged answer.
fn parse_content_range(text: &str) -> Result<(u64, u64, u64), StoreError> {
    let parsed = text.strip_prefix("bytes ").and_then(|rest| {
        let (span, size) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        Some((first.parse().ok()?, last.parse().ok()?, size.parse().ok()?))
    });
    parsed.ok_or_else(|| StoreError::unavailable(format!("S3 answered Content-Range {text:?}")))
}

/// Reads owner and metadata back from an object's user metadata.
fn stored_parcel(
    id: &ParcelId,
    fields: Option<&std::collections::HashMap<String, String>>,
    size: Option<i64>,
) -> Result<StoredParcel, StoreError> {
    let field = |name: &str| fields.and_then(|fields| fields.get(name));
    let corrupt = |source: Cause| StoreError::Corrupt {
        id: id.clone(),
        source,
    };
    let owner = field(OWNER_FIELD)
        .and_then(|owner| Address::parse(owner).ok())
        .ok_or_else(|| corrupt("the object has no valid owner field".into()))?;
    let metadata = match field(METADATA_FIELD) {
        Some(text) => ParcelMetadata::from_stored(text),
        None => ParcelMetadata::for_owner(None, &owner, usize::MAX),
    }
    .map_err(|err| corrupt(Box::new(err)))?;
    Ok(StoredParcel {
        owner,
        metadata,
        size: size.unwrap_or(0).max(0) as u64,
    })
}

fn status_of<E, R>(err: &SdkError<E, R>) -> Option<u16>
where
    R: HttpStatus,
{
    err.raw_response().map(HttpStatus::status_code)
}

/// Access to the HTTP status of a raw S3 response.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The timeouts of a request whose body arrives at a client's pace: only
/// the connection's. The caller bounds how long S3 may take each chunk, and
/// how long it may take to answer once the body is through.
fn paced_by_the_client() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .disable_read_timeout()
        .disable_operation_attempt_timeout()
        .disable_operation_timeout()
        .build()
}

/// A failed write (a `PutObject`, a `CompleteMultipartUpload`, a
/// `DeleteObject`): if S3 may have received it whole but did not answer in
/// time (a timeout, a broken answer), whether it took effect is unknown.
fn write_failure<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            StoreError::OutcomeUnknown(cause(err))
        }
        _ => failure(err),
    }
}

/// A failed S3 call that changed nothing.
fn failure<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(cause(err))
}

/// How an S3 call failed, as the cause of a [`StoreError`].
#[derive(Debug, thiserror::Error)]
enum S3Error {
    /// S3 answered with an error.
    #[error("S3 answered {status}: {code} {message}")]
    Answered {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: the request could not be sent, timed out, or its answer
    /// broke; the SDK's error is the cause.
    #[error("S3 request failed")]
    Request(#[source] Cause),
    /// An object's body broke off while it was read.
    #[error("reading an object's body from S3 failed")]
    Body(#[source] Cause),
}

/// The cause of a failed S3 call: S3's answer, or the SDK's error.
fn cause<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Cause
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => Box::new(S3Error::Answered {
            status: service.raw().status().as_u16(),
            code: service.err().code().unwrap_or("(no code)").to_owned(),
            message: service.err().message().unwrap_or("").to_owned(),
        }),
        _ => Box::new(S3Error::Request(Box::new(err))),
    }
}
