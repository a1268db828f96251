//! The sweep: what replicas that died leave in the store is removed.
//!
//! - **Abandoned multipart uploads.** An unfinished multipart upload is
//!   aborted when its live mark (`amo:multipart:{<upload id>}`) has lapsed,
//!   its parcel's write lock is not held, and S3 has seen no write to it
//!   (its start, or its last part's `LastModified`, read with `ListParts`)
//!   for the grace (`AMO_SWEEP_GRACE_SECS`). The grace is what keeps a
//!   writer that is still streaming when Redis lost its mark (a failover
//!   that lost writes): its parts keep coming.
//! - **Tails of expired resumable uploads**, whose record is gone.
//!
//! Every page of S3's listings is read, and a pass works on a few uploads
//! at once. One replica sweeps per pass: a short
//! lease in the shared state (`amo:sweeper:{<bucket and prefix>}`) elects
//! it, and is kept after the pass until three quarters of the interval
//! between passes, so that N replicas do not repeat one pass. A replica that dies mid-pass lets the
//! lease lapse, and another takes over at its next tick.

use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;

use super::{lock_key, multipart_mark_key, upload_key};
use crate::{
    error::{Error, with_sources},
    state::{Lease, Shared},
    storage::{StaleUpload, Store},
};

/// What one sweep did with the unfinished uploads it looked at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Aborted, or their tails deleted.
    pub swept: u64,
    /// Left alone: live, or written to within the grace.
    pub kept: u64,
    /// Their check or their removal failed (logged at warn); the next pass
    /// tries again.
    pub failed: u64,
}

/// How often the sweep runs, and what it leaves alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepTiming {
    /// The term of the live marks and locks (`AMO_LEASE_SECS`): an upload
    /// younger than it is not looked at. Passes run every half of it.
    pub lease: Duration,
    /// How long S3 must have seen no write to an upload whose mark lapsed
    /// before it is aborted (`AMO_SWEEP_GRACE_SECS`).
    pub grace: Duration,
}

impl SweepTiming {
    /// The time between two passes.
    pub fn interval(&self) -> Duration {
        self.lease / 2
    }
}

/// The shared-state key of the lease that elects the sweeper of the store
/// at `location`.
pub fn sweeper_lease_key(location: &str) -> String {
    format!("amo:sweeper:{{{location}}}")
}

/// One pass of the sweeper, if this replica wins the sweeper lease: both
/// sweeps, each counted in `amo_sweeps_total`, `amo_swept_uploads_total`
/// and `amo_sweep_duration_seconds`. The lease is kept until three
/// quarters of [`SweepTiming::interval`] from the pass's start. Answers
/// whether this replica swept.
pub async fn sweep_pass(store: &Store, state: &Shared, timing: SweepTiming) -> bool {
    const SWEEPS: [&str; 2] = ["multipart", "tails"];
    let key = sweeper_lease_key(&store.location());
    let lease = match Lease::try_take(state, key, timing.lease).await {
        Ok(Some(lease)) => lease,
        Ok(None) => {
            for sweep in SWEEPS {
                crate::metrics::sweep(sweep, "elsewhere");
            }
            return false;
        }
        Err(err) => {
            for sweep in SWEEPS {
                crate::metrics::sweep(sweep, "failed");
            }
            tracing::warn!(err = %with_sources(&err), "could not take the sweeper lease; trying again at the next pass");
            return false;
        }
    };
    let pass = Instant::now();
    let multipart = sweep_abandoned_uploads(store, state, timing).await;
    record(SWEEPS[0], multipart, pass.elapsed());
    let started = Instant::now();
    let tails = sweep_expired_tails(store, state, timing.lease).await;
    record(SWEEPS[1], tails, started.elapsed());
    // Held on until three quarters of an interval from the pass's start:
    // no replica sweeps again before, and the next tick of any replica,
    // this one's included, finds it free.
    let keep = (timing.interval() * 3 / 4).saturating_sub(pass.elapsed());
    let kept = if keep.is_zero() {
        lease.end().await
    } else {
        lease.replace("swept", keep).await
    };
    if let Err(err) = kept {
        tracing::warn!(err = %with_sources(&err), "could not keep or end the sweeper lease; it lapses");
    }
    true
}

/// Counts and logs a pass of `sweep`.
fn record(sweep: &'static str, outcome: Result<Swept, Error>, took: Duration) {
    match outcome {
        Ok(counts) => {
            let failed = counts.failed > 0;
            crate::metrics::sweep(sweep, if failed { "failed" } else { "ok" });
            crate::metrics::swept(
                sweep,
                [
                    ("swept", counts.swept),
                    ("kept", counts.kept),
                    ("failed", counts.failed),
                ],
                took,
            );
            if failed {
                tracing::warn!(
                    sweep,
                    swept = counts.swept,
                    kept = counts.kept,
                    failed = counts.failed,
                    ?took,
                    "a sweep pass failed on some uploads; trying them again at the next one"
                );
            } else if counts.swept > 0 {
                tracing::info!(
                    sweep,
                    swept = counts.swept,
                    kept = counts.kept,
                    ?took,
                    "swept"
                );
            }
        }
        Err(err) => {
            crate::metrics::sweep(sweep, "failed");
            crate::metrics::swept(sweep, [("swept", 0), ("kept", 0), ("failed", 0)], took);
            tracing::warn!(sweep, err = %with_sources(&err), "a sweep pass failed; trying again at the next one");
        }
    }
}

/// How many uploads a sweep works on at once.
const AT_ONCE: usize = 8;

/// What a sweep did with one upload.
enum Outcome {
    Swept,
    Kept,
    Failed,
}

/// Runs `sweep_one` on every item, [`AT_ONCE`] at a time, and counts what
/// it did.
async fn sweep_each<T, F, Fut>(items: Vec<T>, sweep_one: F) -> Swept
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    futures_util::stream::iter(items)
        .map(sweep_one)
        .buffer_unordered(AT_ONCE)
        .fold(Swept::default(), |mut counts, outcome| {
            match outcome {
                Outcome::Swept => counts.swept += 1,
                Outcome::Kept => counts.kept += 1,
                Outcome::Failed => counts.failed += 1,
            }
            std::future::ready(counts)
        })
        .await
}

/// Aborts the unfinished multipart uploads in `store` that no live request
/// writes: older than the lease, whose live mark in `state` has lapsed, and
/// that S3 saw no write to for the grace.
///
/// An upload whose parcel's write lock is held is left alone too: replicas
/// of the version before the live marks held that lock while streaming, so
/// a rolling upgrade does not abort their uploads.
pub async fn sweep_abandoned_uploads(
    store: &Store,
    state: &Shared,
    timing: SweepTiming,
) -> Result<Swept, Error> {
    let stale = store.stale_uploads(timing.lease).await?;
    Ok(sweep_each(stale, |upload| async move {
        let failed = match abandoned(store, state, &upload, timing.grace).await {
            Ok(false) => return Outcome::Kept,
            Ok(true) => match store.abort_upload(&upload).await {
                Ok(()) => {
                    tracing::info!(parcel = %upload.id, upload_id = upload.upload_id, "aborted an upload its replica abandoned");
                    return Outcome::Swept;
                }
                Err(err) => ("could not abort an abandoned upload", Error::from(err)),
            },
            Err(err) => ("could not tell whether an upload is abandoned", err),
        };
        let (what, err) = failed;
        tracing::warn!(parcel = %upload.id, upload_id = upload.upload_id, err = %with_sources(&err), "{what}");
        Outcome::Failed
    })
    .await)
}

/// Whether nothing writes `upload` any more: no live mark, no write lock,
/// and no write seen by the store for `grace`. An upload that is gone
/// already is not abandoned (there is nothing to abort).
async fn abandoned(
    store: &Store,
    state: &Shared,
    upload: &StaleUpload,
    grace: Duration,
) -> Result<bool, Error> {
    if state
        .value(&multipart_mark_key(&upload.upload_id))
        .await?
        .is_some()
        || state.value(&lock_key(&upload.id)).await?.is_some()
    {
        return Ok(false);
    }
    let Some(active) = store.last_activity(upload).await? else {
        return Ok(false);
    };
    // An activity in the future (clocks apart) is recent.
    let idle = SystemTime::now()
        .duration_since(active)
        .unwrap_or(Duration::ZERO);
    Ok(idle >= grace)
}

/// Deletes the tails of resumable uploads whose record is gone (expired or
/// ended by a replica that died before deleting them). Their multipart
/// uploads are aborted by [`sweep_abandoned_uploads`] once their live mark
/// lapses.
pub async fn sweep_expired_tails(
    store: &Store,
    state: &Shared,
    lease: Duration,
) -> Result<Swept, Error> {
    let tailed = store.tailed_uploads(lease).await?;
    Ok(sweep_each(tailed, |upload| async move {
        let removed = match state.value(&upload_key(&upload)).await {
            Ok(Some(_)) => return Outcome::Kept,
            Ok(None) => store.drop_tails(&upload, None).await.map_err(Error::from),
            Err(err) => Err(err.into()),
        };
        match removed {
            Ok(()) => {
                tracing::info!(upload, "deleted the tails of an expired upload");
                Outcome::Swept
            }
            Err(err) => {
                tracing::warn!(upload, err = %with_sources(&err), "could not sweep the tails of an upload");
                Outcome::Failed
            }
        }
    })
    .await)
}
