//! The shared test support (tests/support), bound to this suite's backend
//! pair (`crate::BACKEND`).

pub use amo_test_support::*;

/// Settings for a test app on this suite's backends: a fresh key prefix or
/// data directory, and `overrides` (pairs of `AMO_*` names and values).
pub fn settings(overrides: &[(&str, &str)]) -> amo_storage::config::Settings {
    settings_for(crate::BACKEND, overrides)
}

/// Starts one replica on this suite's backends.
pub async fn spawn_app() -> TestApp {
    spawn_with(settings(&[])).await
}

/// Starts two replicas that share this suite's backends.
pub async fn spawn_pair() -> (TestApp, TestApp) {
    spawn_pair_with(settings(&[])).await
}
