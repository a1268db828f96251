//! The API suite of `main.rs`, the same modules, with the tokens, locks and
//! limits in a real 3-master Redis Cluster (`deploy/local/redis-cluster.sh
//! start`) and the parcels in the real Ceph RGW: the token store code is the
//! same, through `redis::cluster_async`, with hash-tagged keys.

/// The backend pair of this run.
const BACKEND: helpers::Backend = helpers::Backend::RealCluster;

include!("suite.rs");
