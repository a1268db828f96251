//! The API suite of `main.rs`, the same modules, on the embedded backends:
//! tokens and locks in the process, parcels in a data directory.

/// The backend pair of this run.
const BACKEND: helpers::Backend = helpers::Backend::Embedded;

include!("suite.rs");
