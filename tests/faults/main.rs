//! Fault injection on the real Redis and the real Ceph RGW of
//! `deploy/local/up.sh`: the service under test reaches each through a
//! loopback TCP proxy (`proxy.rs`) that the tests switch between passing,
//! down and stalled. The backends themselves are never stopped.
//!
//! `cargo test --test faults` (backends running). Figures (recovery times,
//! memory) are printed; `-- --nocapture` shows them.

/// The backend pair of this run.
const BACKEND: helpers::Backend = helpers::Backend::Real;

#[allow(dead_code)] // the API suite's helpers; this target uses some of them
#[path = "../api/helpers.rs"]
mod helpers;

mod proxy;
mod rig;

mod ceph_down;
mod connections;
mod redis_down;
mod slow_clients;
mod stalled_backends;
