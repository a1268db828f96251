//! `parcel remove`: a `remove` token for the id, then
//! `DELETE /api/v2/parcels/{id}`.

use std::path::Path;

use serde_json::json;

use crate::cli::{
    client::{StorageClient, send},
    error::CliResult,
    key::AccountKey,
};

/// Removes the parcel; only its owner may.
pub async fn run(id: &str, key: &Path, endpoint: &str) -> CliResult<()> {
    let id = super::parcel_id(id)?;
    let key = AccountKey::load(key)?;
    let client = StorageClient::new(endpoint)?;
    let proof = client
        .prove(&key, json!({"name": "remove", "id": id.as_str()}))
        .await?;
    let url = client.url(&format!("/api/v2/parcels/{id}"));
    send(proof.apply(client.http().delete(url))).await?;
    println!("removed {id}");
    Ok(())
}
