//! The CLI's errors: one line on stderr, and an exit code.

use std::{fmt, process::ExitCode};

use reqwest::StatusCode;
use serde_json::Value;

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// The service answered with an error status; `message` is its `error`
    /// text (or the body, or nothing).
    Server {
        /// The HTTP status.
        status: StatusCode,
        /// What the service said.
        message: String,
    },
    /// Anything else: a file, a key, the network, a check of the answer.
    Failed(String),
    /// Ctrl-C.
    Interrupted,
}

/// The result of a CLI step.
pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    /// A failure described by `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed(message.into())
    }

    /// The error answer of the service: its status and the `error` field of
    /// its JSON body, or the body itself when it is not the JSON error form.
    pub fn from_answer(status: StatusCode, body: &str) -> Self {
        let message = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|json| json.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| one_line(body, 300));
        Self::Server { status, message }
    }

    /// A failed request to `url`: the error and its causes, on one line.
    pub fn request(url: &str, err: reqwest::Error) -> Self {
        Self::Failed(format!(
            "request to {url} failed: {}",
            error_chain(&err.without_url())
        ))
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Interrupted => 130,
            Self::Server { .. } | Self::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server { status, message } if message.is_empty() => write!(f, "{status}"),
            Self::Server { status, message } => write!(f, "{status}: {message}"),
            Self::Failed(message) => f.write_str(message),
            Self::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for CliError {}

/// `err` and its sources joined with `: ` (a cause already quoted by the
/// message before it is not repeated): the service's own helper.
pub use crate::error::with_sources as error_chain;

/// `text` on one line, cut to at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Prints `error: …` for a failure and maps the outcome to an exit code.
pub fn exit_code(outcome: CliResult<()>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_show_status_and_message() {
        let err = CliError::from_answer(
            StatusCode::FORBIDDEN,
            r#"{"error":"only the owner may download parcel X","code":"forbidden"}"#,
        );
        assert_eq!(
            err.to_string(),
            "403 Forbidden: only the owner may download parcel X"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_body_that_is_not_the_error_form_is_shown_on_one_line() {
        let err = CliError::from_answer(StatusCode::BAD_GATEWAY, "bad\n  gateway\n");
        assert_eq!(err.to_string(), "502 Bad Gateway: bad gateway");
        let err = CliError::from_answer(StatusCode::NOT_FOUND, "");
        assert_eq!(err.to_string(), "404 Not Found");
    }
}
