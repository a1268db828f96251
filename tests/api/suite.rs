// The modules of the API suite; `main.rs` and `embedded.rs` include this
// file, each after choosing its backend pair.

mod fake_chain;
mod helpers;
mod recorded_state;

mod adversarial;
mod attacks;
mod audit;
mod auth;
mod cli;
mod concurrency;
mod cors;
mod errors;
mod fair_share;
mod grants;
mod health;
mod http_layer;
mod leases;
mod limits;
mod marks;
mod metadata_precision;
mod metrics;
mod missing_bucket;
mod openapi;
mod process;
mod promises;
mod refusals;
mod remove_race;
mod resumable;
mod roundtrip_v1;
mod roundtrip_v2;
mod s3_keys;
mod straight_through;
mod streaming_faults;
mod sweeper;
mod tus_attacks;
mod tus_protocol;
