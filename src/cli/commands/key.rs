//! `key new` and `key show`.

use std::path::Path;

use crate::cli::{error::CliResult, key::AccountKey};

/// Creates a key file at `out` and prints the account's address.
pub fn new(out: &Path) -> CliResult<()> {
    let key = AccountKey::generate()?;
    key.save_new(out)?;
    println!("{}", key.address());
    Ok(())
}

/// Prints the address and the uncompressed public key of the key in `path`.
pub fn show(path: &Path) -> CliResult<()> {
    let key = AccountKey::load(path)?;
    println!("address: {}", key.address());
    println!("public_key: {}", key.public_key_hex());
    Ok(())
}
