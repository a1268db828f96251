//! Logging, through `tracing`: text lines or JSON objects on stderr.
//!
//! In JSON, each line carries the fields of the spans it happened in; the
//! request span (see [`crate::observe`]) gives every line of a request its
//! `request_id`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs a logger filtered by `filter` (as `RUST_LOG`), writing `format`.
/// A filter that does not parse falls back to `info`, with a warning.
pub fn init(filter: &str, format: LogFormat) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(parsed) => (parsed, false),
        Err(_) => (EnvFilter::new("info"), true),
    };
    // Colours only for a person at a terminal, never into a file or a
    // log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    if bad {
        tracing::warn!(filter, "AMO_LOG does not parse; logging at info");
    }
}
