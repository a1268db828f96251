//! The unfinished resumable uploads each account and each client holds
//! (docs/protocol.md, "Shared state"): a cap on each, counted across
//! replicas.
//!
//! Each count is a sorted set in the shared state
//! (`amo:open-uploads:account:{<address>}`,
//! `amo:open-uploads:client:{<client>}`) of upload ids scored by the
//! upload's expiry (Unix µs). A creation joins both sets with an atomic
//! check-and-add, before anything is staged; a `PATCH` that moves the
//! expiry moves the scores; completion, termination and a discard leave
//! the sets, and an upload that expires (or idles out) leaves them by its
//! score, at the next check. The two sets live in different hash slots of a
//! Redis Cluster, so they are two operations: a refusal by the second
//! takes the upload out of the first.

use super::{Parcels, UploadRecord};
use crate::error::{Error, with_sources};

/// The shared-state key of the open uploads of account `owner`.
pub fn open_by_account_key(owner: &str) -> String {
    format!("amo:open-uploads:account:{{{owner}}}")
}

/// The shared-state key of the open uploads of client `client`
/// ([`crate::domain::ClientAddress::key`]).
pub fn open_by_client_key(client: &str) -> String {
    format!("amo:open-uploads:client:{{{client}}}")
}

/// The sets an upload of `record` counts in, with their caps.
fn sets(parcels: &Parcels, record: &UploadRecord) -> [(String, u64); 2] {
    [
        (
            open_by_account_key(&record.owner),
            parcels.limits.max_open_uploads_per_account,
        ),
        (
            open_by_client_key(&record.client),
            parcels.limits.max_open_uploads_per_client,
        ),
    ]
}

/// Unix seconds as the sets' scores (Unix µs).
fn score(expires: u64) -> u64 {
    expires.saturating_mul(1_000_000)
}

impl Parcels {
    /// Counts the new upload `upload` of `record` for its account and its
    /// client, or refuses it (429 `too_many_uploads`) when either holds its
    /// cap of unfinished uploads already. A cap of 0 counts nothing.
    pub(super) async fn admit_open(
        &self,
        upload: &str,
        record: &UploadRecord,
    ) -> Result<(), Error> {
        let mut joined: Vec<String> = Vec::new();
        for ((key, cap), who) in sets(self, record).into_iter().zip(["account", "client"]) {
            if cap == 0 {
                continue;
            }
            let admitted = self
                .state
                .add_capped(&key, upload, score(record.expires), cap)
                .await;
            let refusal = match admitted {
                Ok(true) => {
                    joined.push(key);
                    continue;
                }
                Ok(false) => Error::TooManyUploads(format!(
                    "this {who} holds {cap} unfinished resumable uploads, the most it may: \
                     complete or end one (DELETE), or wait until one expires"
                )),
                Err(err) => err.into(),
            };
            for key in &joined {
                self.leave_set(key, upload).await;
            }
            return Err(refusal);
        }
        Ok(())
    }

    /// The upload's expiry moved: so do its scores.
    pub(super) async fn open_moved(&self, upload: &str, record: &UploadRecord) {
        for (key, _) in sets(self, record) {
            if let Err(err) = self
                .state
                .rescore(&key, upload, score(record.expires))
                .await
            {
                tracing::warn!(err = %with_sources(&err), upload, "could not move an open upload's expiry; it leaves the count sooner");
            }
        }
    }

    /// The upload is finished or gone: it leaves the counts.
    pub(super) async fn close_open(&self, upload: &str, record: &UploadRecord) {
        for (key, _) in sets(self, record) {
            self.leave_set(&key, upload).await;
        }
    }

    async fn leave_set(&self, key: &str, upload: &str) {
        if let Err(err) = self.state.remove_member(key, upload).await {
            tracing::warn!(err = %with_sources(&err), upload, "could not take an upload out of an open-uploads count; it leaves when it expires");
        }
    }
}
