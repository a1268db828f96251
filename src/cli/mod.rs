//! The command-line client: `amo-storage key …` and `amo-storage parcel …`.
//!
//! It speaks the service's v2 API the way any client does (docs/protocol.md): get a
//! one-time token for an operation, sign the token with the account's P-256
//! key, and send it with the request. Bodies stream in both directions; a
//! parcel is never held in memory.
//!
//! - [`key`]: the account key file (64 hex digits) and the proof it signs.
//! - [`client`]: the HTTP client: tokens, proofs, requests, error answers.
//! - [`progress`]: progress bars on stderr when it is a terminal.
//! - [`digest`]: SHA-256 of a file, streamed.
//! - [`commands`]: one module per subcommand.
//! - [`error`]: the one-line errors and exit codes.

pub mod client;
pub mod commands;
pub mod digest;
pub mod error;
pub mod key;
pub mod progress;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};

pub use error::{CliError, CliResult};

/// `amo-storage key …`: account keys.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new P-256 account key (64 hex digits, mode 0600) and print its address.
    New {
        /// The key file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print the address and the public key (65-byte uncompressed, hex) of a key.
    Show {
        /// The key file.
        #[arg(long, value_name = "FILE", env = "AMO_KEY")]
        key: PathBuf,
    },
}

/// `amo-storage parcel …`: parcels on a running service (its v2 API).
#[derive(Debug, Subcommand)]
pub enum ParcelCommand {
    /// Upload a file as a parcel; prints the parcel id on the last line.
    Upload {
        /// The file to upload.
        file: PathBuf,
        /// The account key that will own the parcel.
        #[arg(long, value_name = "FILE", env = "AMO_KEY")]
        key: PathBuf,
        /// The service to talk to.
        #[command(flatten)]
        endpoint: Endpoint,
        /// Metadata to store with the parcel: a JSON object.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
        /// Upload resumably (tus, `/api/v2/uploads`) whatever the size; files
        /// over 128 MiB always are. Run the same command again to resume.
        #[arg(long)]
        resumable: bool,
        /// The bytes of one PATCH of a resumable upload.
        #[arg(long, value_name = "BYTES", default_value_t = commands::resume::DEFAULT_CHUNK)]
        chunk_size: u64,
        /// Where resumable uploads keep their state files (default
        /// `$XDG_STATE_HOME/amo-storage`, else `~/.local/state/amo-storage`).
        #[arg(long, value_name = "DIR", env = "AMO_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Download a parcel into a file, checking its SHA-256 against the id.
    Download {
        /// The parcel id (72 hex digits).
        id: String,
        /// The account key: the owner's, or one the chain grants the parcel to.
        #[arg(long, value_name = "FILE", env = "AMO_KEY")]
        key: PathBuf,
        /// The service to talk to.
        #[command(flatten)]
        endpoint: Endpoint,
        /// Where to write the parcel (replaced only once the whole body checked out).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Print a parcel's id, owner, metadata and size as JSON (needs no key).
    Inspect {
        /// The parcel id (72 hex digits).
        id: String,
        /// The service to talk to.
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Remove a parcel (the owner only).
    Remove {
        /// The parcel id (72 hex digits).
        id: String,
        /// The owner's account key.
        #[arg(long, value_name = "FILE", env = "AMO_KEY")]
        key: PathBuf,
        /// The service to talk to.
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// The service to talk to.
#[derive(Debug, Clone, Args)]
pub struct Endpoint {
    /// The service's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long = "endpoint", value_name = "URL", env = "AMO_ENDPOINT")]
    pub url: String,
}

/// Runs a `key` command; prints a one-line error and returns the exit code.
pub fn run_key(command: KeyCommand) -> ExitCode {
    error::exit_code(match command {
        KeyCommand::New { out } => commands::key::new(&out),
        KeyCommand::Show { key } => commands::key::show(&key),
    })
}

/// Runs a `parcel` command until it ends or Ctrl-C; prints a one-line error
/// and returns the exit code. On Ctrl-C the command is dropped, which removes
/// any temporary file it holds.
pub async fn run_parcel(command: ParcelCommand) -> ExitCode {
    let work = async move {
        match command {
            ParcelCommand::Upload {
                file,
                key,
                endpoint,
                metadata,
                resumable,
                chunk_size,
                state_dir,
            } => {
                let options = commands::upload::Options {
                    metadata: metadata.as_deref(),
                    resumable,
                    chunk_size,
                    state_dir,
                };
                commands::upload::run(&file, &key, &endpoint.url, options).await
            }
            ParcelCommand::Download {
                id,
                key,
                endpoint,
                output,
            } => commands::download::run(&id, &key, &endpoint.url, &output).await,
            ParcelCommand::Inspect { id, endpoint } => {
                commands::inspect::run(&id, &endpoint.url).await
            }
            ParcelCommand::Remove { id, key, endpoint } => {
                commands::remove::run(&id, &key, &endpoint.url).await
            }
        }
    };
    let outcome = tokio::select! {
        outcome = work => outcome,
        _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
    };
    error::exit_code(outcome)
}
