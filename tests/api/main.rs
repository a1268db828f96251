//! The API suite on a real Redis and a real Ceph RGW (`deploy/local/up.sh`).
//! One binary, one module per feature; `embedded.rs` runs the same modules
//! on the embedded backends.

/// The backend pair of this run.
const BACKEND: helpers::Backend = helpers::Backend::Real;

include!("suite.rs");

/// Only here: these tests start a `redis-server` of their own, or use this
/// suite's single Redis server.
mod redis_setup;
