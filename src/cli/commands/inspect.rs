//! `parcel inspect`: `GET /api/v2/parcels/{id}/metadata`, no token.

use crate::cli::{
    client::{StorageClient, json_body, send},
    error::{CliError, CliResult},
};

/// Prints the parcel's id, owner, metadata and size as pretty JSON.
pub async fn run(id: &str, endpoint: &str) -> CliResult<()> {
    let id = super::parcel_id(id)?;
    let client = StorageClient::new(endpoint)?;
    let url = client.url(&format!("/api/v2/parcels/{id}/metadata"));
    let answer = json_body(send(client.http().get(url)).await?).await?;
    let text = serde_json::to_string_pretty(&answer)
        .map_err(|err| CliError::failed(format!("cannot print the metadata: {err}")))?;
    println!("{text}");
    Ok(())
}
