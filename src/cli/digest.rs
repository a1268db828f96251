//! SHA-256 of a file, read in blocks so that any size fits in memory.

use std::path::Path;

use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::domain::Sha256Hex;

use super::error::{CliError, CliResult};

/// Size of one read.
const BLOCK: usize = 1 << 20;

/// The SHA-256 of the file at `path`, advancing `progress` as it reads.
pub async fn file_sha256(path: &Path, progress: &ProgressBar) -> CliResult<Sha256Hex> {
    let unreadable =
        |err: std::io::Error| CliError::failed(format!("cannot read {}: {err}", path.display()));
    let mut file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; BLOCK];
    loop {
        let read = file.read(&mut block).await.map_err(unreadable)?;
        if read == 0 {
            break;
        }
        hasher.update(&block[..read]);
        progress.inc(read as u64);
    }
    Ok(Sha256Hex::from_digest(&hasher.finalize()))
}
