//! Logging, through `tracing`.

use tracing_subscriber::EnvFilter;

/// Installs a text logger filtered by `filter` (as `RUST_LOG`). A filter
/// that does not parse falls back to `info`, with a warning.
pub fn init(filter: &str) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(parsed) => (parsed, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .init();
    if bad {
        tracing::warn!(filter, "AMO_LOG does not parse; logging at info");
    }
}
