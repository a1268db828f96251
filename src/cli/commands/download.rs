//! `parcel download`: a `download` token for the id, then
//! `GET /api/v2/parcels/{id}` streamed into a temporary file next to the
//! output, which replaces the output only once the body's SHA-256 matches
//! the id. On any failure (or Ctrl-C, which drops this future) the temporary
//! file is removed and the output is left as it was.

use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempPath};
use tokio::io::AsyncWriteExt;

use crate::{
    cli::{
        client::{StorageClient, send},
        error::{CliError, CliResult, error_chain},
        key::AccountKey,
        progress,
    },
    domain::Sha256Hex,
};

/// Downloads parcel `id` into `output` with the account of `key`.
pub async fn run(id: &str, key: &Path, endpoint: &str, output: &Path) -> CliResult<()> {
    let id = super::parcel_id(id)?;
    let key = AccountKey::load(key)?;
    let client = StorageClient::new(endpoint)?;
    if output.is_dir() {
        return Err(CliError::failed(format!(
            "{} is a directory; -o names the file to write",
            output.display()
        )));
    }
    // Before the token is spent: a directory we cannot write to fails here.
    let temp = temp_file_beside(output)?;
    let (file, temp_path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(file);

    let proof = client
        .prove(&key, json!({"name": "download", "id": id.as_str()}))
        .await?;
    let url = client.url(&format!("/api/v2/parcels/{id}"));
    let mut response = send(proof.apply(client.http().get(&url))).await?;

    let failed_write = |err: std::io::Error| {
        CliError::failed(format!("cannot write {}: {err}", temp_path.display()))
    };
    let bar = progress::bytes("downloading", response.content_length());
    let mut hasher = Sha256::new();
    let received = async {
        while let Some(chunk) = response.chunk().await.map_err(|err| {
            CliError::failed(format!(
                "download from {url} broke off: {}",
                error_chain(&err.without_url())
            ))
        })? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(failed_write)?;
            bar.inc(chunk.len() as u64);
        }
        file.flush().await.map_err(failed_write)?;
        file.sync_all().await.map_err(failed_write)
    }
    .await;
    bar.finish_and_clear();
    received?;
    drop(file);

    let actual = Sha256Hex::from_digest(&hasher.finalize());
    let expected = id.content_hash();
    if actual != expected {
        return Err(CliError::failed(format!(
            "the downloaded body's SHA-256 is {actual}, but parcel {id} names {expected}; \
             nothing was written"
        )));
    }
    persist(temp_path, output)
}

/// A new empty file in the directory of `output`, so the final rename stays
/// on one file system.
fn temp_file_beside(output: &Path) -> CliResult<NamedTempFile> {
    let dir = output
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder.prefix(".amo-download-").suffix(".part");
    #[cfg(unix)]
    {
        // The umask applies, as for any file a program creates.
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|err| {
        CliError::failed(format!(
            "cannot create a temporary file in {}: {err}",
            dir.display()
        ))
    })
}

/// Renames the checked temporary file to `output` (replacing it).
fn persist(temp: TempPath, output: &Path) -> CliResult<()> {
    temp.persist(output).map_err(|err| {
        CliError::failed(format!("cannot write {}: {}", output.display(), err.error))
    })
}
