//! API tests against a real Redis and a real Ceph RGW (`deploy/local/up.sh`).
//! One binary, one module per feature.

mod fake_chain;
mod helpers;

mod auth;
mod concurrency;
mod errors;
mod grants;
mod health;
mod openapi;
mod refusals;
mod roundtrip_v1;
mod roundtrip_v2;
mod streaming_faults;
