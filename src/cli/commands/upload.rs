//! `parcel upload`: hash the file (streamed), get an upload token that
//! declares that hash, then stream the file to `POST /api/v2/parcels`.

use std::path::Path;

use futures_util::TryStreamExt;
use reqwest::{
    Body, StatusCode,
    header::{CONTENT_LENGTH, CONTENT_TYPE},
};
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use crate::{
    cli::{
        client::{StorageClient, json_body, send},
        commands::resume,
        digest,
        error::{CliError, CliResult},
        key::AccountKey,
        progress,
    },
    domain::{Address, ParcelId, ParcelMetadata},
};

/// Size of the reads that feed the request body.
const CHUNK: usize = 256 * 1024;

/// How to upload.
pub struct Options<'a> {
    /// `--metadata`.
    pub metadata: Option<&'a str>,
    /// `--resumable`.
    pub resumable: bool,
    /// `--chunk-size`: the bytes of one PATCH.
    pub chunk_size: u64,
    /// `--state-dir`.
    pub state_dir: Option<std::path::PathBuf>,
}

/// Uploads `file` for the account of `key`; prints the parcel id last.
/// Files over [`resume::RESUMABLE_ABOVE`] bytes, or any with
/// `--resumable`, go up resumably.
pub async fn run(file: &Path, key: &Path, endpoint: &str, options: Options<'_>) -> CliResult<()> {
    let key = AccountKey::load(key)?;
    let client = StorageClient::new(endpoint)?;
    if options.chunk_size == 0 {
        return Err(CliError::failed("--chunk-size must be at least 1"));
    }
    let metadata = options
        .metadata
        .map(|text| metadata_header(text, &key.address()))
        .transpose()?;
    let unreadable =
        |err: std::io::Error| CliError::failed(format!("cannot read {}: {err}", file.display()));
    let info = tokio::fs::metadata(file).await.map_err(unreadable)?;
    if !info.is_file() {
        return Err(CliError::failed(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    let size = info.len();

    let bar = progress::bytes("hashing", Some(size));
    let hash = digest::file_sha256(file, &bar).await;
    bar.finish_and_clear();
    let hash = hash?;

    if options.resumable || size > resume::RESUMABLE_ABOVE {
        let job = resume::Resumable {
            file,
            size,
            hash: &hash,
            metadata: metadata.as_deref(),
            chunk: options.chunk_size,
            state_dir: options.state_dir.unwrap_or_else(resume::default_state_dir),
        };
        let id = resume::upload(&client, &key, &job).await?;
        return print_id(&id, &hash, false);
    }

    let proof = client
        .prove(&key, json!({"name": "upload", "hash": hash.as_str()}))
        .await?;
    let opened = tokio::fs::File::open(file).await.map_err(unreadable)?;
    let bar = progress::bytes("uploading", Some(size));
    let counter = bar.clone();
    let body = ReaderStream::with_capacity(opened, CHUNK)
        .inspect_ok(move |chunk| counter.inc(chunk.len() as u64));
    let mut request = client
        .http()
        .post(client.url("/api/v2/parcels"))
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, size)
        .body(Body::wrap_stream(body));
    if let Some(metadata) = metadata {
        request = request.header("X-Parcel-Metadata", metadata);
    }
    let response = send(proof.apply(request)).await;
    bar.finish_and_clear();
    let response = response?;
    let status = response.status();
    let answer = json_body(response).await?;

    let id = answer
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| ParcelId::parse(id).ok())
        .ok_or_else(|| CliError::failed(format!("the service answered no parcel id: {answer}")))?;
    print_id(&id, &hash, status == StatusCode::OK)
}

/// Prints the parcel id, once checked to name the file's SHA-256.
fn print_id(id: &ParcelId, hash: &crate::domain::Sha256Hex, already: bool) -> CliResult<()> {
    if id.content_hash() != *hash {
        return Err(CliError::failed(format!(
            "the service answered parcel id {id}, which does not name this file's SHA-256 {hash}"
        )));
    }
    if already {
        eprintln!("this account already stores this content; its metadata was kept");
    }
    println!("{id}");
    Ok(())
}

/// The `X-Parcel-Metadata` header for `--metadata`: checked to be a JSON
/// object whose `owner`, if any, is this account, and written the way the
/// service stores it (compact, ASCII, non-ASCII as `\u` escapes).
fn metadata_header(text: &str, owner: &Address) -> CliResult<String> {
    let invalid =
        |err: crate::domain::MetadataError| CliError::failed(format!("--metadata: {err}"));
    let value = ParcelMetadata::parse_offered(text).map_err(invalid)?;
    if !value.is_object() {
        return Err(CliError::failed("--metadata must be a JSON object"));
    }
    let metadata = ParcelMetadata::for_owner(Some(value), owner, usize::MAX).map_err(invalid)?;
    Ok(metadata.as_stored().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_becomes_ascii_json_with_the_owner() {
        let owner = Address::parse(&"AB".repeat(20)).unwrap();
        let header = metadata_header(r#"{"name": "café"}"#, &owner).unwrap();
        assert!(header.is_ascii(), "{header}");
        let value: Value = serde_json::from_str(&header).unwrap();
        assert_eq!(value["name"], "café");
        assert_eq!(value["owner"], owner.as_str());
        assert!(metadata_header("[1]", &owner).is_err());
        assert!(metadata_header("{", &owner).is_err());
        assert!(metadata_header(&format!(r#"{{"owner":"{}"}}"#, "CD".repeat(20)), &owner).is_err());
    }
}
