//! One module per subcommand. Each returns `Ok(())` after printing its
//! result on stdout, or the error that `amo-storage` prints on stderr.

pub mod download;
pub mod inspect;
pub mod key;
pub mod remove;
pub mod resume;
pub mod upload;

use crate::domain::ParcelId;

use super::error::{CliError, CliResult};

/// Parses a parcel id given on the command line.
fn parcel_id(text: &str) -> CliResult<ParcelId> {
    ParcelId::parse(text.trim())
        .map_err(|err| CliError::failed(format!("{text:?} is not a parcel id: {err}")))
}
