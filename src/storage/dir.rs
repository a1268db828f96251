//! [`ParcelStore`] in a local directory, for the embedded one-replica mode.
//!
//! Each parcel is one file, `<data dir>/parcels/<parcel id>`, holding a
//! header (owner and metadata) and then the body, so a parcel's metadata can
//! never be seen without its body. A write goes to a temporary file
//! `.upload-<uuid>` in the same directory, is fsynced, and is then linked
//! to its final name, which fails if the parcel exists: the commit is
//! atomic and never replaces a parcel. Temporary files left by a killed
//! process are removed at start.
//!
//! File names come only from [`ParcelId`], which is hexadecimal digits by
//! construction, so no id can name a path outside the directory.
//!
//! Header layout (part of the on-disk contract): the 4 bytes `AMO1`, a
//! big-endian `u32` length N, then N bytes of JSON `{"owner", "metadata"}`.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::ReaderStream;
use uuid::Uuid;

use super::{
    BodyStream, Feed, Fetched, ParcelStore, PartUpload, PutOutcome, StaleUpload, StoreError,
    StoredParcel, TokenMark,
};
use crate::{
    domain::{Address, ParcelId, ParcelMetadata, RangeRequest},
    error::with_sources,
};

const MAGIC: &[u8; 4] = b"AMO1";
const UPLOAD_PREFIX: &str = ".upload-";
/// The file of a resumable upload's parts: `.upload-tus-<upload>-<parcel id>`.
const STAGED_PREFIX: &str = ".upload-tus-";
/// A resumable upload's tail: `.upload-tail-<upload>-<name>`.
const TAIL_PREFIX: &str = ".upload-tail-";
/// The mark of a used token: `.token-<jti>`, holding its holder.
const TOKEN_PREFIX: &str = ".token-";
/// Bytes read from disk at a time when streaming a body.
const READ_CHUNK: usize = 256 * 1024;
/// The largest header accepted when reading a file back.
const MAX_HEADER: u32 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    owner: String,
    metadata: String,
}

/// Parcels as files in one directory.
#[derive(Clone)]
pub struct DirStore {
    root: Arc<PathBuf>,
}

impl DirStore {
    /// Opens (creating it if needed) the store under `data_dir`, and removes
    /// the temporary files of uploads that never finished.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("parcels");
        std::fs::create_dir_all(&root)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // No token outlives the process that recorded it (its records
            // live in that process): the marks of used tokens go too.
            if name.starts_with(UPLOAD_PREFIX) || name.starts_with(TOKEN_PREFIX) {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %root.display(), "removed unfinished uploads and the marks of used tokens");
        }
        Ok(Self {
            root: Arc::new(root),
        })
    }

    fn path(&self, id: &ParcelId) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn token_mark_path(&self, jti: &str) -> PathBuf {
        self.root.join(format!("{TOKEN_PREFIX}{}", file_safe(jti)))
    }

    fn staged_path(&self, id: &ParcelId, upload: &str) -> PathBuf {
        self.root
            .join(format!("{STAGED_PREFIX}{}-{id}", file_safe(upload)))
    }

    fn tail_path(&self, upload: &str, name: &str) -> PathBuf {
        self.root.join(format!(
            "{TAIL_PREFIX}{}-{}",
            file_safe(upload),
            file_safe(name)
        ))
    }

    /// Writes exactly `length` bytes that `feed` delivers to `file`, from
    /// where it stands; a feed that fails, ends short or runs long fails.
    async fn write_feed(
        &self,
        mut file: File,
        length: u64,
        mut feed: Feed,
    ) -> Result<File, StoreError> {
        let mut written: u64 = 0;
        while let Some(chunk) = feed.recv().await {
            let chunk = chunk.map_err(StoreError::Body)?;
            written += chunk.len() as u64;
            if written > length {
                return Err(StoreError::Internal(format!(
                    "a part of {length} bytes was fed more"
                )));
            }
            file = self
                .blocking(move |_| file.write_all(&chunk).map(|()| file))
                .await?;
        }
        if written != length {
            return Err(StoreError::ShortBody { written, length });
        }
        Ok(file)
    }

    /// Runs blocking file work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Path) -> io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|err| StoreError::Internal(format!("file task: {err}")))?
            .map_err(|err| StoreError::Unavailable(Box::new(err)))
    }
}

/// Opens a parcel file and reads its header. `None`: no such parcel.
fn open_parcel(path: &Path, id: &ParcelId) -> io::Result<Option<(File, StoredParcel, u64)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix)?;
    let length = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
    if &prefix[..4] != MAGIC || length > MAX_HEADER {
        return Err(corrupt(id, "no parcel header"));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|err| corrupt(id, &err.to_string()))?;
    let owner = Address::parse(&header.owner).map_err(|err| corrupt(id, &err.to_string()))?;
    let metadata = ParcelMetadata::from_stored(&header.metadata)
        .map_err(|err| corrupt(id, &err.to_string()))?;
    let body_start = 8 + u64::from(length);
    let size = file.metadata()?.len().saturating_sub(body_start);
    Ok(Some((
        file,
        StoredParcel {
            owner,
            metadata,
            size,
        },
        body_start,
    )))
}

/// A name made of what a file name may hold here: hex digits and letters
/// (upload ids and tail names are hexadecimal; anything else is dropped).
fn file_safe(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).collect()
}

/// The header of a parcel file.
fn header_of(owner: &Address, metadata: &ParcelMetadata) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(&Header {
        owner: owner.as_str().to_owned(),
        metadata: metadata.as_stored().to_owned(),
    })
    .map_err(|err| StoreError::Internal(format!("parcel header: {err}")))?;
    let mut header = Vec::with_capacity(8 + json.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(json.len() as u32).to_be_bytes());
    header.extend_from_slice(&json);
    Ok(header)
}

/// Links a finished temporary file to its parcel's name, unless a parcel
/// is there, and removes the temporary name.
fn link_into_place(root: &Path, temporary: &Path, target: &Path) -> io::Result<PutOutcome> {
    File::open(temporary)?.sync_all()?;
    let linked = std::fs::hard_link(temporary, target);
    std::fs::remove_file(temporary)?;
    match linked {
        Ok(()) => {
            File::open(root)?.sync_all()?;
            Ok(PutOutcome::Created)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(PutOutcome::AlreadyExists),
        Err(err) => Err(err),
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// What follows `prefix` in the names of the files that start with it and
/// were last written more than `older_than` ago.
fn older_files(
    root: &Path,
    prefix: &str,
    older_than: Duration,
) -> io::Result<Vec<(String, SystemTime)>> {
    let cutoff = SystemTime::now() - older_than;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        // Deleted since the directory was read: not there any more.
        let modified = match entry.metadata().and_then(|meta| meta.modified()) {
            Ok(modified) => modified,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        if modified < cutoff {
            found.push((rest.to_owned(), modified));
        }
    }
    Ok(found)
}

fn corrupt(id: &ParcelId, detail: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("parcel file {id} is damaged: {detail}"),
    )
}

#[async_trait]
impl ParcelStore for DirStore {
    fn kind(&self) -> &'static str {
        "directory"
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn check(&self) -> Result<(), StoreError> {
        self.blocking(|root| {
            let probe = root.join(format!("{UPLOAD_PREFIX}probe-{}", Uuid::new_v4()));
            File::create(&probe)?;
            std::fs::remove_file(probe)
        })
        .await
    }

    async fn head(&self, id: &ParcelId) -> Result<Option<StoredParcel>, StoreError> {
        let (path, id) = (self.path(id), id.clone());
        self.blocking(move |_| Ok(open_parcel(&path, &id)?.map(|(_, parcel, _)| parcel)))
            .await
    }

    async fn get_stream(
        &self,
        id: &ParcelId,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BodyStream>, StoreError> {
        let (path, id) = (self.path(id), id.clone());
        let opened = self
            .blocking(move |_| {
                let Some((mut file, parcel, body_start)) = open_parcel(&path, &id)? else {
                    return Ok(None);
                };
                let (first, length) = match range {
                    Some((first, last)) => (first, last.saturating_sub(first).saturating_add(1)),
                    None => (0, parcel.size),
                };
                file.seek(SeekFrom::Start(body_start + first))?;
                Ok(Some((file, length)))
            })
            .await?;
        Ok(opened.map(|(file, length)| {
            let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), length);
            Box::pin(ReaderStream::with_capacity(reader, READ_CHUNK).map(|chunk| chunk))
                as BodyStream
        }))
    }

    async fn fetch(&self, id: &ParcelId, range: Option<&str>) -> Result<Fetched, StoreError> {
        let Some(parcel) = self.head(id).await? else {
            return Ok(Fetched::Missing);
        };
        let served = match RangeRequest::resolve(range, parcel.size) {
            RangeRequest::Unsatisfiable => return Ok(Fetched::OutOfRange),
            resolved => resolved.served(),
        };
        Ok(match self.get_stream(id, served).await? {
            Some(body) => Fetched::Found {
                parcel,
                served,
                body,
            },
            None => Fetched::Missing,
        })
    }

    async fn put_fed(
        &self,
        id: &ParcelId,
        length: u64,
        feed: Feed,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<PutOutcome, StoreError> {
        let mut upload = self.start_upload(id, owner, metadata).await?;
        upload.push_part(length, feed).await?;
        upload.complete().await
    }

    async fn start_upload(
        &self,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<Box<dyn PartUpload>, StoreError> {
        let header = header_of(owner, metadata)?;
        let temporary = self
            .root
            .join(format!("{UPLOAD_PREFIX}{}", Uuid::new_v4().simple()));
        let target = self.path(id);
        let path = temporary.clone();
        let creating = Creating::new(temporary.clone());
        let abandoned = creating.abandoned.clone();
        let file = self
            .blocking(move |_| {
                let mut file = File::create_new(&path)?;
                file.write_all(&header)?;
                if abandoned.load(Ordering::SeqCst) {
                    remove_if_there(&path)?;
                    return Err(io::Error::other("the upload was abandoned"));
                }
                Ok(file)
            })
            .await?;
        creating.done();
        Ok(Box::new(FileUpload {
            store: self.clone(),
            file: Some(file),
            temporary,
            target,
            parts: 0,
        }))
    }

    async fn unmark_token(&self, jti: &str, holder: &str) -> Result<bool, StoreError> {
        let path = self.token_mark_path(jti);
        let holder = holder.to_owned();
        self.blocking(move |_| match std::fs::read(&path) {
            Ok(written) if written == holder.as_bytes() => remove_if_there(&path).map(|()| true),
            Ok(_) => Ok(false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        })
        .await
    }

    async fn mark_token_used(&self, jti: &str, holder: &str) -> Result<TokenMark, StoreError> {
        let path = self.token_mark_path(jti);
        let holder = holder.to_owned();
        self.blocking(move |root| match File::create_new(&path) {
            Ok(mut file) => {
                file.write_all(holder.as_bytes())?;
                file.sync_all()?;
                File::open(root)?.sync_all()?;
                Ok(TokenMark::New)
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Ok(if std::fs::read(&path)? == holder.as_bytes() {
                    TokenMark::Ours
                } else {
                    TokenMark::Spent
                })
            }
            Err(err) => Err(err),
        })
        .await
    }

    async fn delete(&self, id: &ParcelId) -> Result<(), StoreError> {
        let path = self.path(id);
        self.blocking(move |root| {
            remove_if_there(&path)?;
            File::open(root)?.sync_all()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|root| {
            let mut ids = Vec::new();
            for entry in std::fs::read_dir(root)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    ids.push(name);
                }
            }
            Ok(ids)
        })
        .await
    }

    /// One process owns the directory and removes leftovers at start: the
    /// only uploads that outlive a request are resumable ones.
    async fn stale_uploads(&self, older_than: Duration) -> Result<Vec<StaleUpload>, StoreError> {
        let found = self
            .blocking(move |root| older_files(root, STAGED_PREFIX, older_than))
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(rest, modified)| {
                let (upload, id) = rest.split_once('-')?;
                Some(StaleUpload {
                    id: ParcelId::parse(id).ok()?,
                    key: format!("{STAGED_PREFIX}{rest}"),
                    upload_id: upload.to_owned(),
                    active: modified,
                })
            })
            .collect())
    }

    async fn abort_upload(&self, upload: &StaleUpload) -> Result<(), StoreError> {
        let (id, store_id) = (upload.id.clone(), upload.upload_id.clone());
        self.staged_abort(&id, &store_id).await;
        Ok(())
    }

    async fn staged_start(
        &self,
        upload: &str,
        id: &ParcelId,
        owner: &Address,
        metadata: &ParcelMetadata,
    ) -> Result<String, StoreError> {
        let header = header_of(owner, metadata)?;
        let path = self.staged_path(id, upload);
        self.blocking(move |_| {
            let mut file = File::create_new(&path)?;
            file.write_all(&header)
        })
        .await?;
        Ok(upload.to_owned())
    }

    async fn staged_part(
        &self,
        id: &ParcelId,
        store_id: &str,
        _number: usize,
        at: u64,
        length: u64,
        feed: Feed,
    ) -> Result<String, StoreError> {
        let path = self.staged_path(id, store_id);
        let file = self
            .blocking(move |_| {
                let mut file = File::options().read(true).write(true).open(&path)?;
                let mut prefix = [0u8; 8];
                file.read_exact(&mut prefix)?;
                let header = u32::from_be_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
                file.seek(SeekFrom::Start(8 + u64::from(header) + at))?;
                Ok(file)
            })
            .await?;
        // No truncation: parts may be written at once, and part N always
        // spans the same bytes, so the file ends where the last part does.
        self.write_feed(file, length, feed).await?;
        Ok(String::new())
    }

    async fn staged_complete(
        &self,
        id: &ParcelId,
        store_id: &str,
        _parts: &[String],
    ) -> Result<PutOutcome, StoreError> {
        let (temporary, target) = (self.staged_path(id, store_id), self.path(id));
        self.blocking(move |root| link_into_place(root, &temporary, &target))
            .await
    }

    async fn staged_abort(&self, id: &ParcelId, store_id: &str) {
        let path = self.staged_path(id, store_id);
        if let Err(err) = self.blocking(move |_| remove_if_there(&path)).await {
            tracing::warn!(err = %with_sources(&err), "could not remove a resumable upload's file");
        }
    }

    async fn put_tail(&self, upload: &str, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.tail_path(upload, name);
        self.blocking(move |_| {
            let mut file = File::create(&path)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .await
    }

    async fn get_tail(&self, upload: &str, name: &str) -> Result<Bytes, StoreError> {
        let path = self.tail_path(upload, name);
        self.blocking(move |_| std::fs::read(path).map(Bytes::from))
            .await
    }

    async fn drop_tails(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        let prefix = format!(
            "{TAIL_PREFIX}{}-{}",
            file_safe(upload),
            file_safe(name.unwrap_or(""))
        );
        let exact = name.is_some();
        self.blocking(move |root| {
            for entry in std::fs::read_dir(root)? {
                let entry = entry?;
                let file = entry.file_name().to_string_lossy().into_owned();
                let matches = match exact {
                    true => file == prefix,
                    false => file.starts_with(&prefix),
                };
                if matches {
                    remove_if_there(&entry.path())?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn tailed_uploads(&self, older_than: Duration) -> Result<Vec<String>, StoreError> {
        let mut found = self
            .blocking(move |root| older_files(root, TAIL_PREFIX, older_than))
            .await?
            .into_iter()
            .filter_map(|(rest, _)| Some(rest.split_once('-')?.0.to_owned()))
            .collect::<Vec<_>>();
        found.sort();
        found.dedup();
        Ok(found)
    }

    async fn unfinished_uploads(&self) -> Result<Vec<String>, StoreError> {
        self.blocking(|root| {
            let mut uploads = Vec::new();
            for entry in std::fs::read_dir(root)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with(UPLOAD_PREFIX) {
                    uploads.push(name);
                }
            }
            Ok(uploads)
        })
        .await
    }
}

/// An upload's temporary file being created, off the async threads. A
/// request may drop the upload meanwhile (the body failed before the store
/// answered): the file task still runs, so whichever of the two comes
/// second removes the file, and no unfinished upload outlives its request.
/// The file task creates, then checks `abandoned`; the drop sets it, then
/// removes: either the check sees it, or the file was there for
/// the removal.
struct Creating {
    /// `None` once the file was created for the upload.
    path: Option<PathBuf>,
    abandoned: Arc<AtomicBool>,
}

impl Creating {
    fn new(path: PathBuf) -> Self {
        Self {
            path: Some(path),
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The file was created and is the upload's to remove now.
    fn done(mut self) {
        self.path = None;
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        self.abandoned.store(true, Ordering::SeqCst);
        if let Err(err) = remove_if_there(&path) {
            tracing::warn!(%err, file = %path.display(), "could not remove an abandoned upload's temporary file");
        }
    }
}

/// A parcel being written to its temporary file.
struct FileUpload {
    store: DirStore,
    /// `None` while a write runs, and after the upload ended.
    file: Option<File>,
    temporary: PathBuf,
    target: PathBuf,
    parts: usize,
}

#[async_trait]
impl PartUpload for FileUpload {
    fn upload_id(&self) -> &str {
        self.temporary
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
    }

    fn parts(&self) -> usize {
        self.parts
    }

    async fn push_part(&mut self, length: u64, feed: Feed) -> Result<(), StoreError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::Internal("a part after a failed write".into()))?;
        self.file = Some(self.store.write_feed(file, length, feed).await?);
        self.parts += 1;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<PutOutcome, StoreError> {
        let file = self
            .file
            .take()
            .ok_or_else(|| StoreError::Internal("completing a failed upload".into()))?;
        let (temporary, target) = (self.temporary.clone(), self.target.clone());
        self.store
            .blocking(move |root| {
                file.sync_all()?;
                drop(file);
                link_into_place(root, &temporary, &target)
            })
            .await
    }

    async fn abort(self: Box<Self>) {
        // Dropping removes the temporary file.
    }
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_file(&self.temporary) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(%err, file = %self.temporary.display(), "could not remove an upload's temporary file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that drops its upload while the file task creates the
    /// temporary file leaves no unfinished upload behind.
    #[test]
    fn an_upload_dropped_while_its_file_is_created_leaves_no_file() {
        // One blocking thread: its tasks run in the order they were queued.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let id = ParcelId::parse(&format!("00000001{}", "A".repeat(64))).unwrap();
        let owner = Address::parse(&"B".repeat(40)).unwrap();
        let metadata = ParcelMetadata::from_stored("{}").unwrap();
        runtime.block_on(async {
            // The thread is held until the upload was dropped, so the file
            // task queued behind it runs only then.
            let (release, held) = std::sync::mpsc::channel::<()>();
            let holding = store.blocking(move |_| {
                held.recv().ok();
                Ok(())
            });
            let mut holding = Box::pin(holding);
            assert!(futures_util::poll!(holding.as_mut()).is_pending());
            let mut starting = Box::pin(store.start_upload(&id, &owner, &metadata));
            assert!(futures_util::poll!(starting.as_mut()).is_pending());
            drop(starting);
            release.send(()).unwrap();
            holding.await.unwrap();
            // Queued after the file task: its end means the file task ran.
            store.blocking(|_| Ok(())).await.unwrap();
            assert_eq!(
                store.unfinished_uploads().await.unwrap(),
                Vec::<String>::new()
            );
        });
    }
}
