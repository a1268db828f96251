//! # amo-storage
//!
//! The AMO storage service keeps *data parcels*, items traded on the AMO
//! blockchain, in Ceph through its S3 API. A tour of the modules:
//!
//! - [`config`]: settings from a TOML file and `AMO_*` variables.
//! - [`domain`]: the parsed types of untrusted input: addresses, parcel ids,
//!   hashes, operations, metadata.
//! - [`auth`]: the one-time JWT, its one-use record in Redis, and the proof
//!   of possession; passing it yields [`auth::Authorized`].
//! - [`parcels`]: upload, download, inspect and remove, whatever the API
//!   version; settles the token of every operation.
//! - [`storage`]: the S3 object store of parcels.
//! - [`chain`]: asks an AMO blockchain node whether a non-owner may download
//!   a parcel (its `/usage` query), and remembers grants briefly.
//! - [`redis_state`]: the Redis handle, and the leases that token claims and
//!   parcel write locks are.
//! - [`api`]: the poem-openapi endpoints; [`error`]: how failures answer.
//! - [`app`]: wires it all into a server; [`telemetry`]: logging.

pub mod api;
pub mod app;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod parcels;
pub mod redis_state;
pub mod storage;
pub mod telemetry;
