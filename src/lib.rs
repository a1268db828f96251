//! # amo-storage
//!
//! The AMO storage service keeps *data parcels*, items traded on the AMO
//! blockchain, in Ceph through its S3 API. A tour of the modules:
//!
//! - [`config`]: settings from a TOML file and `AMO_*` variables.
//! - [`domain`]: the parsed types of untrusted input: addresses, parcel ids,
//!   hashes, operations, metadata.
//! - [`auth`]: the one-time JWT, its one-use record, and the proof
//!   of possession; passing it yields [`auth::Authorized`].
//! - [`parcels`]: upload, download, inspect and remove, whatever the API
//!   version; settles the token of every operation.
//! - [`storage`]: where parcels are kept: an S3 bucket, or a local
//!   directory in embedded mode.
//! - [`chain`]: asks an AMO blockchain node whether a non-owner may download
//!   a parcel (its `/usage` query), and remembers grants briefly.
//! - [`state`]: the state replicas share (Redis, a Redis Cluster, or memory in
//!   embedded mode), and the leases that token claims and parcel write locks
//!   are.
//! - [`api`]: the poem-openapi endpoints; [`error`]: how failures answer.
//! - [`limits`]: rate limits and upload capacity; [`metrics`]: Prometheus
//!   counters; [`observe`]: request ids, access logs and metrics per request;
//!   [`audit`]: one audit event per parcel operation, when it ends;
//!   [`cors`]: what browsers on other origins may call.
//! - [`app`]: wires it all into a server; [`telemetry`]: logging;
//!   [`tasks`]: work that outlives a dropped request.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod chain;
pub mod cli;
pub mod config;
pub mod cors;
pub mod domain;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod observe;
pub mod parcels;
pub mod routes;
pub mod serve;
pub mod state;
pub mod storage;
pub mod tasks;
pub mod telemetry;
pub mod transfer_rate;
