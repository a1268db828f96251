//! `parcel upload` of a large file (or with `--resumable`): a tus 1.0.0
//! upload at `/api/v2/uploads` (docs/protocol.md, "Resumable uploads") that
//! survives Ctrl-C, a network failure and a replica restart.
//!
//! The upload's URL and its bound token are kept in a small state file
//! (mode 0600), named after the endpoint, the account and the file's
//! SHA-256, in the state directory (`--state-dir`, `AMO_STATE_DIR`, else
//! `$XDG_STATE_HOME/amo-storage` or `~/.local/state/amo-storage`). Run again,
//! the same command asks the service where the upload stands (`HEAD`) and
//! goes on from there; the progress bar starts at that offset. Within one
//! run, a PATCH that fails on the network or with a 5xx, 409 or 423 is
//! retried from `HEAD`'s offset, with a growing pause.
//!
//! Each request after creation is signed over itself (method, upload,
//! offset and the upload's sequence), and each `PATCH` sends the sequence
//! the last answer gave (docs/protocol.md, "Signing a request on an
//! upload").

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use futures_util::TryStreamExt;
use reqwest::{Body, StatusCode, header::CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::{
    auth::bound::UploadRequest,
    cli::{
        client::{StorageClient, send},
        error::{CliError, CliResult},
        key::AccountKey,
        progress,
    },
    domain::{ParcelId, Sha256Hex},
};

/// Files larger than this go up resumably without `--resumable`.
pub const RESUMABLE_ABOVE: u64 = 128 * 1024 * 1024;

/// The bytes one PATCH carries, unless `--chunk-size` says otherwise.
pub const DEFAULT_CHUNK: u64 = 64 * 1024 * 1024;

/// Tries of one PATCH (each after asking `HEAD` where the upload stands).
const ATTEMPTS: u32 = 8;

/// Size of the reads that feed a PATCH's body.
const READ: usize = 256 * 1024;

/// What the state file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    /// The upload's absolute URL.
    url: String,
    /// The token bound to it (useless without the key).
    token: String,
}

/// What signs the requests on one upload.
struct Signer<'a> {
    client: &'a StorageClient,
    key: &'a AccountKey,
    saved: &'a Saved,
}

impl Signer<'_> {
    /// `request` with the proof headers of `signed` on this upload.
    fn proven(
        &self,
        request: reqwest::RequestBuilder,
        signed: UploadRequest,
    ) -> reqwest::RequestBuilder {
        let upload = self.saved.url.rsplit('/').next().unwrap_or_default();
        self.client
            .proof_of_request(self.key, &self.saved.token, upload, signed)
            .apply(request)
    }
}

/// What to upload, and how.
pub struct Resumable<'a> {
    /// The file.
    pub file: &'a Path,
    /// Its size.
    pub size: u64,
    /// Its SHA-256.
    pub hash: &'a Sha256Hex,
    /// The metadata, as the service stores it, if any.
    pub metadata: Option<&'a str>,
    /// The bytes of one PATCH.
    pub chunk: u64,
    /// Where state files live.
    pub state_dir: PathBuf,
}

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local").join("state"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("amo-storage")
}

/// Uploads the file resumably; answers the parcel id.
pub async fn upload(
    client: &StorageClient,
    key: &AccountKey,
    job: &Resumable<'_>,
) -> CliResult<ParcelId> {
    let state = job.state_dir.join(format!(
        "upload-{}.json",
        hex::encode(
            &Sha256::digest(
                format!("{}\n{}\n{}", client.url(""), key.address(), job.hash).as_bytes()
            )[..16]
        )
    ));
    let (saved, mut at) = match resume(client, key, &state).await? {
        Some(resumed) => resumed,
        None => {
            let saved = create(client, key, job).await?;
            save(&state, &saved)?;
            (saved, Status::default())
        }
    };
    let signer = Signer {
        client,
        key,
        saved: &saved,
    };
    let bar = progress::bytes("uploading", Some(job.size));
    if at.offset > 0 && at.parcel.is_none() {
        eprintln!("resuming at byte {} of {}", at.offset, job.size);
    }
    bar.set_position(at.offset);
    let mut failures = 0;
    while at.parcel.is_none() {
        let length = job.chunk.min(job.size - at.offset);
        match patch(&signer, job.file, &at, length, &bar).await {
            Ok(status) => {
                at = status;
                failures = 0;
            }
            Err(err) if retryable(&err) && failures + 1 < ATTEMPTS => {
                failures += 1;
                let pause = Duration::from_millis(500 << failures.min(4));
                bar.suspend(|| eprintln!("{err}; retrying in {} ms", pause.as_millis()));
                tokio::time::sleep(pause).await;
                if let Ok(status) = head(&signer).await {
                    at = status;
                }
            }
            Err(err) => {
                bar.finish_and_clear();
                if gone(&err) {
                    forget(&state);
                }
                return Err(err);
            }
        }
        bar.set_position(at.offset);
    }
    bar.finish_and_clear();
    forget(&state);
    at.parcel
        .ok_or_else(|| CliError::failed("the upload ended without a parcel id"))
}

/// Where an upload stands.
#[derive(Debug, Default)]
struct Status {
    offset: u64,
    /// The `X-Upload-Sequence` of the next `PATCH`.
    sequence: u64,
    parcel: Option<ParcelId>,
}

/// The upload of a state file, if the service still has it.
async fn resume(
    client: &StorageClient,
    key: &AccountKey,
    state: &Path,
) -> CliResult<Option<(Saved, Status)>> {
    let Ok(text) = std::fs::read_to_string(state) else {
        return Ok(None);
    };
    let Ok(saved) = serde_json::from_str::<Saved>(&text) else {
        forget(state);
        return Ok(None);
    };
    let signer = Signer {
        client,
        key,
        saved: &saved,
    };
    match head(&signer).await {
        Ok(status) => Ok(Some((saved, status))),
        Err(err) if gone(&err) => {
            eprintln!("the saved upload is gone ({err}); starting again");
            forget(state);
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// Creates the upload with a new token.
async fn create(client: &StorageClient, key: &AccountKey, job: &Resumable<'_>) -> CliResult<Saved> {
    let proof = client
        .prove(key, json!({"name": "upload", "hash": job.hash.as_str()}))
        .await?;
    let mut request = client
        .http()
        .post(client.url("/api/v2/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", job.size);
    if let Some(metadata) = job.metadata {
        let encoded = base64::engine::general_purpose::STANDARD.encode(metadata);
        request = request.header("Upload-Metadata", format!("metadata {encoded}"));
    }
    let response = send(proof.apply(request)).await?;
    let location = header(&response, "location")?;
    let url = reqwest::Url::parse(&client.url("/"))
        .and_then(|base| base.join(&location))
        .map_err(|err| CliError::failed(format!("the upload's Location {location:?}: {err}")))?;
    Ok(Saved {
        url: url.to_string(),
        token: proof.token().to_owned(),
    })
}

async fn head(signer: &Signer<'_>) -> CliResult<Status> {
    let request = signer
        .client
        .http()
        .head(&signer.saved.url)
        .header("Tus-Resumable", "1.0.0");
    status_of(&send(signer.proven(request, UploadRequest::Head)).await?)
}

/// Sends `length` bytes of `file` from where the upload stands, `at`.
async fn patch(
    signer: &Signer<'_>,
    file: &Path,
    at: &Status,
    length: u64,
    bar: &indicatif::ProgressBar,
) -> CliResult<Status> {
    let offset = at.offset;
    let unreadable =
        |err: std::io::Error| CliError::failed(format!("cannot read {}: {err}", file.display()));
    let mut opened = tokio::fs::File::open(file).await.map_err(unreadable)?;
    opened
        .seek(SeekFrom::Start(offset))
        .await
        .map_err(unreadable)?;
    let counter = bar.clone();
    let body = ReaderStream::with_capacity(opened.take(length), READ)
        .inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let request = signer
        .client
        .http()
        .patch(&signer.saved.url)
        .header("Tus-Resumable", "1.0.0")
        .header(CONTENT_TYPE, "application/offset+octet-stream")
        .header("Upload-Offset", offset)
        .header("X-Upload-Sequence", at.sequence)
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(Body::wrap_stream(body));
    let signed = UploadRequest::Patch {
        offset,
        sequence: at.sequence,
    };
    status_of(&send(signer.proven(request, signed)).await?)
}

fn status_of(response: &reqwest::Response) -> CliResult<Status> {
    let offset = header(response, "upload-offset")?.parse().map_err(|_| {
        CliError::failed("the service answered an Upload-Offset that is not a number")
    })?;
    let sequence = header(response, "x-upload-sequence")?
        .parse()
        .map_err(|_| {
            CliError::failed("the service answered an X-Upload-Sequence that is not a number")
        })?;
    let parcel = response
        .headers()
        .get("x-parcel-id")
        .and_then(|value| value.to_str().ok())
        .map(|id| {
            ParcelId::parse(id).map_err(|err| {
                CliError::failed(format!("the service answered parcel id {id:?}: {err}"))
            })
        })
        .transpose()?;
    Ok(Status {
        offset,
        sequence,
        parcel,
    })
}

fn header(response: &reqwest::Response, name: &str) -> CliResult<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| CliError::failed(format!("the service's answer has no {name}")))
}

/// A failure worth another try from `HEAD`'s offset: the network, a
/// replica that failed (5xx), a wrong offset or sequence (409) or a busy
/// upload (423).
fn retryable(err: &CliError) -> bool {
    match err {
        CliError::Server { status, .. } => {
            status.is_server_error()
                || *status == StatusCode::CONFLICT
                || *status == StatusCode::LOCKED
        }
        CliError::Failed(message) => message.starts_with("request to "),
        CliError::Interrupted => false,
    }
}

/// The upload is gone for good: expired, ended, or refused its body.
fn gone(err: &CliError) -> bool {
    matches!(
        err,
        CliError::Server { status, .. }
            if *status == StatusCode::NOT_FOUND
                || *status == StatusCode::GONE
                || *status == StatusCode::UNPROCESSABLE_ENTITY
    )
}

fn save(state: &Path, saved: &Saved) -> CliResult<()> {
    let failed =
        |err: std::io::Error| CliError::failed(format!("cannot write {}: {err}", state.display()));
    if let Some(dir) = state.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let text = serde_json::to_string(saved).unwrap_or_default();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(state).map_err(failed)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed)
}

fn forget(state: &Path) {
    let _ = std::fs::remove_file(state);
}
