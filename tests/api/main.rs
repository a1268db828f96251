//! The API suite on a real Redis and a real Ceph RGW (`deploy/local/up.sh`).
//! One binary, one module per feature; `embedded.rs` runs the same modules
//! on the embedded backends.

/// The backend pair of this run.
const BACKEND: helpers::Backend = helpers::Backend::Real;

include!("suite.rs");
