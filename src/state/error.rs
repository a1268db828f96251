//! What can go wrong in the shared state. The API turns it into an answer
//! in one place (`crate::error`); here, a failure keeps its cause (Redis's
//! own error) as its source.

use crate::error::Cause;

/// A failure of the shared state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis failed, could not be reached or did not answer in time.
    #[error("the shared state failed")]
    Unavailable(#[source] Cause),
    /// Redis answered, but not what the operation expects of it.
    #[error("the shared state answered unexpectedly: {0}")]
    Unexpected(String),
}

impl StateError {
    /// A failure of the state, described in words.
    pub fn unavailable(cause: impl Into<Cause>) -> Self {
        Self::Unavailable(cause.into())
    }

    /// Whether the backend failed or could not be reached (a retry later
    /// may succeed).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
