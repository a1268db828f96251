//! Fault injection on the real Redis and the real Ceph RGW of
//! `deploy/local/up.sh`: the service under test reaches each through a
//! loopback TCP proxy (`proxy.rs`) that the tests switch between passing,
//! down and stalled. The backends themselves are never stopped.
//!
//! `cargo test --test faults` (backends running). Figures (recovery times,
//! memory) are printed; `-- --nocapture` shows them.

/// The shared test support (tests/support), on the real Redis and Ceph
/// RGW.
mod helpers {
    pub use amo_test_support::*;

    /// Settings for a test app on the real backends, with `overrides`.
    pub fn settings(overrides: &[(&str, &str)]) -> amo_storage::config::Settings {
        settings_for(Backend::Real, overrides)
    }
}

mod proxy;
mod rig;

use std::sync::LazyLock;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Held shared by every test of this binary, and exclusively by those
/// that measure time to within a second (the normal client's latency under
/// 2,000 connections, the idle timeout): libtest runs the others side by
/// side, and on a 2-core machine their transfers would be what they
/// measure.
static RUNNING: LazyLock<RwLock<()>> = LazyLock::new(|| RwLock::new(()));

/// A place beside the other tests, for as long as it is held.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    RUNNING.read().await
}

/// The machine to oneself: waits for the tests running, holds back the
/// others.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    RUNNING.write().await
}

mod ceph_down;
mod connections;
mod held_mid_body;
mod redis_down;
mod slow_clients;
mod stalled_backends;
mod tus_commit;
