//! Settings: an optional TOML file, overridden by `AMO_*` environment
//! variables (docs/configuration.md). Bad configuration is refused at start with one line
//! naming the problem; a backend being down is not bad configuration.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    chain::{Chain, ChainConfig, UsageKey, redacted_text},
    domain::StorageId,
    state::RedisTopology,
    storage::S3Config,
};

/// The settings a file may hold; every key can also be set as `AMO_<KEY>`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    redis_url: Option<String>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_prefix: Option<String>,
    key_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    jwt_secret: Option<String>,
    jwt_issuer: Option<String>,
    storage_id: Option<u32>,
    token_ttl_secs: Option<u64>,
    upload_lifetime_secs: Option<u64>,
    v1_max_data_bytes: Option<u64>,
    metadata_max_bytes: Option<usize>,
    max_parcel_bytes: Option<u64>,
    s3_part_size_bytes: Option<usize>,
    s3_single_put_max_bytes: Option<u64>,
    chain_rpc: Option<String>,
    chain_usage_key: Option<String>,
    chain_timeout_ms: Option<u64>,
    chain_cache_secs: Option<u64>,
    drain_timeout_secs: Option<u64>,
    drain_grace_secs: Option<u64>,
    auth_rate_per_ip: Option<u64>,
    auth_rate_per_user: Option<u64>,
    max_outstanding_tokens: Option<u64>,
    max_concurrent_uploads: Option<usize>,
    trust_forwarded_for: Option<bool>,
    s3_timeout_secs: Option<u64>,
    body_idle_timeout_secs: Option<u64>,
    body_deadline_secs: Option<u64>,
    max_concurrent_v1_downloads: Option<usize>,
    lease_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    log: Option<String>,
    log_format: Option<String>,
}

/// The environment variables this service reads, and their file keys.
const VARIABLES: &[&str] = &[
    "REDIS_URL",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "S3_PREFIX",
    "KEY_FILE",
    "DATA_DIR",
    "JWT_SECRET",
    "JWT_ISSUER",
    "STORAGE_ID",
    "TOKEN_TTL_SECS",
    "UPLOAD_LIFETIME_SECS",
    "V1_MAX_DATA_BYTES",
    "METADATA_MAX_BYTES",
    "MAX_PARCEL_BYTES",
    "S3_PART_SIZE_BYTES",
    "S3_SINGLE_PUT_MAX_BYTES",
    "CHAIN_RPC",
    "CHAIN_USAGE_KEY",
    "CHAIN_TIMEOUT_MS",
    "CHAIN_CACHE_SECS",
    "DRAIN_TIMEOUT_SECS",
    "DRAIN_GRACE_SECS",
    "AUTH_RATE_PER_IP",
    "AUTH_RATE_PER_USER",
    "MAX_OUTSTANDING_TOKENS",
    "MAX_CONCURRENT_UPLOADS",
    "TRUST_FORWARDED_FOR",
    "S3_TIMEOUT_SECS",
    "BODY_IDLE_TIMEOUT_SECS",
    "BODY_DEADLINE_SECS",
    "MAX_CONCURRENT_V1_DOWNLOADS",
    "LEASE_SECS",
    "HEADER_READ_TIMEOUT_SECS",
    "IDLE_TIMEOUT_SECS",
    "MAX_CONNECTIONS",
    "LOG",
    "LOG_FORMAT",
];

/// The largest object S3 stores: 5 TiB.
const S3_MAX_OBJECT_BYTES: u64 = 5 << 40;
/// How long a resumable upload lives by default: 24 hours.
const DEFAULT_UPLOAD_LIFETIME_SECS: u64 = 24 * 60 * 60;
/// S3's smallest part (but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// Parts beyond this would make memory per upload needlessly large.
const MAX_PART_SIZE: usize = 256 << 20;
/// The default part size.
const DEFAULT_PART_SIZE: usize = 8 << 20;
/// The largest object S3 takes in one `PutObject`: 5 GiB.
const S3_MAX_SINGLE_PUT: u64 = 5 << 30;
/// The default timeout of a blockchain query, in milliseconds.
const DEFAULT_CHAIN_TIMEOUT_MS: u64 = 3_000;
/// The longest timeout of a blockchain query: a download waits for it.
const MAX_CHAIN_TIMEOUT_MS: u64 = 60_000;
/// How long one S3 call may take, by default.
const DEFAULT_S3_TIMEOUT_SECS: u64 = 30;
/// How long an upload body may stall, by default.
const DEFAULT_BODY_IDLE_TIMEOUT_SECS: u64 = 60;
/// How long in-flight requests may run after a shutdown signal, by default.
const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 30;
/// How long a replica keeps accepting, not ready, after a shutdown signal.
const DEFAULT_DRAIN_GRACE_SECS: u64 = 2;
/// How long a blockchain grant is remembered by default, in seconds.
const DEFAULT_CHAIN_CACHE_SECS: u64 = 30;
/// How long a v1 upload's whole body may take to arrive, by default.
const DEFAULT_BODY_DEADLINE_SECS: u64 = 300;
/// How long a lease (a token claim, a write lock, a live multipart upload)
/// lives without renewal, by default.
const DEFAULT_LEASE_SECS: u64 = 30;

/// How long a request head may take to arrive, by default.
const DEFAULT_HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// How long a connection with no request in flight stays open, by default:
/// longer than the shipped nginx keeps idle upstream connections (60 s),
/// so that nginx, not this service, closes them.
const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 75;
/// The most client connections one replica keeps open, by default.
const DEFAULT_MAX_CONNECTIONS: usize = 4_096;

/// A configuration problem; its text is the one line printed at start.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the shared state (tokens, locks, limits) is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// Redis or a Redis Cluster (`AMO_REDIS_URL` set): any number of replicas.
    Redis(RedisTopology),
    /// In this process (`AMO_REDIS_URL` unset): one replica only.
    Embedded,
}

/// Where parcels are kept.
#[derive(Debug, Clone)]
pub enum StoreBackend {
    /// An S3 bucket (`AMO_S3_ENDPOINT` set).
    S3(S3Config),
    /// Files under this directory (`AMO_S3_ENDPOINT` unset; `AMO_DATA_DIR`).
    Directory(PathBuf),
}

/// The validated settings of one replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where tokens, write locks and rate counters are kept.
    pub state: StateBackend,
    /// Where parcels are kept.
    pub store: StoreBackend,
    /// HS256 secret shared by all replicas.
    pub jwt_secret: Secret,
    /// The `iss` of tokens.
    pub jwt_issuer: String,
    /// This storage's id.
    pub storage_id: StorageId,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// How long a resumable upload (and the token bound to it) lives.
    pub upload_lifetime: Duration,
    /// Largest v1 parcel body, in bytes of data (hex is twice as long).
    pub v1_max_data_bytes: u64,
    /// Largest stored metadata JSON, in bytes.
    pub metadata_max_bytes: usize,
    /// Largest parcel a v2 upload may store.
    pub max_parcel_bytes: u64,
    /// Multipart part size: what a body of unknown length buffers at most,
    /// and the size of the parts of a multipart upload.
    pub s3_part_size_bytes: usize,
    /// The largest body of known length that goes up in one streamed
    /// `PutObject` (at most S3's 5 GiB); longer ones go up in parts.
    pub s3_single_put_max_bytes: u64,
    /// The AMO blockchain node asked about grants; `None`: only owners
    /// download.
    pub chain: Option<ChainConfig>,
    /// How long in-flight requests may run after a shutdown signal.
    pub drain_timeout: Duration,
    /// On a shutdown signal, how long the replica keeps accepting
    /// connections while `/readyz` answers 503, so that a load balancer
    /// that probes it sees it leave rather than find it gone.
    pub drain_grace: Duration,
    /// Limits against abuse.
    pub limits: AbuseLimits,
    /// How long one S3 call may take before it fails (503).
    pub s3_timeout: Duration,
    /// How long an upload's body may send nothing before the upload fails.
    pub body_idle_timeout: Duration,
    /// How long a v1 upload's whole body may take to arrive (the v1 body is
    /// read into memory, so it is bounded in time as well as in size).
    pub body_deadline: Duration,
    /// How long a lease (a token claim, a parcel write lock, the mark of a
    /// live multipart upload) lives unless its holder renews it; holders
    /// renew every third of it. A replica that dies lets its leases lapse.
    pub lease: Duration,
    /// How this replica treats client connections: header read timeout,
    /// idle timeout, and the cap on open connections.
    pub connections: Connections,
    /// Log filter, as `RUST_LOG`.
    pub log: String,
    /// Log lines as text or JSON.
    pub log_format: LogFormat,
}

/// How a replica treats client connections (see `serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// How long a request head (request line and headers) may take to
    /// arrive, from its first byte; a new connection's first head, from the
    /// accept.
    pub header_read_timeout: Duration,
    /// How long a connection with no request in flight stays open.
    pub idle_timeout: Duration,
    /// The most connections open at once; past it new ones are closed at
    /// once, and the open ones go on.
    pub max_connections: usize,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Limits against abuse. A zero turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Token requests per minute from one client address, across replicas.
    pub auth_per_ip_per_minute: u64,
    /// Tokens one account may hold unused and unexpired at once; issuing
    /// one more evicts the account's oldest unused token (a stranger can
    /// ask for tokens in anyone's name, so a refusal would lock the owner
    /// out).
    pub max_outstanding_tokens: u64,
    /// Uploads (v1 and v2) one replica takes at once; more answer 503.
    pub max_concurrent_uploads: usize,
    /// v1 downloads one replica serves at once (each is held whole and
    /// hex-encoded in memory); more answer 503.
    pub max_concurrent_v1_downloads: usize,
    /// Take the client address from the last `X-Forwarded-For` entry (set
    /// this behind a proxy that appends it, such as the shipped nginx).
    pub trust_forwarded_for: bool,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            auth_per_ip_per_minute: 6_000,
            max_outstanding_tokens: 1_000,
            max_concurrent_uploads: 64,
            max_concurrent_v1_downloads: 8,
            trust_forwarded_for: false,
        }
    }
}

/// The `key.json` file of the seed: S3 credentials.
#[derive(Deserialize)]
struct KeyFile {
    access_key: String,
    secret_key: String,
}

impl Settings {
    /// Settings that name no real backend, for work that contacts none (such
    /// as printing the OpenAPI spec).
    pub fn offline() -> Self {
        Self {
            state: StateBackend::Embedded,
            store: StoreBackend::Directory(std::env::temp_dir().join("amo-storage-offline")),
            jwt_secret: Secret("offline-settings-never-serve-requests".into()),
            jwt_issuer: "amo-storage-service".into(),
            storage_id: StorageId(1),
            token_ttl: Duration::from_secs(300),
            upload_lifetime: Duration::from_secs(DEFAULT_UPLOAD_LIFETIME_SECS),
            v1_max_data_bytes: 64 * 1024 * 1024,
            metadata_max_bytes: 8 * 1024,
            max_parcel_bytes: S3_MAX_OBJECT_BYTES,
            s3_part_size_bytes: DEFAULT_PART_SIZE,
            s3_single_put_max_bytes: S3_MAX_SINGLE_PUT,
            chain: None,
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_SECS),
            drain_grace: Duration::from_secs(DEFAULT_DRAIN_GRACE_SECS),
            limits: AbuseLimits::default(),
            s3_timeout: Duration::from_secs(DEFAULT_S3_TIMEOUT_SECS),
            body_idle_timeout: Duration::from_secs(DEFAULT_BODY_IDLE_TIMEOUT_SECS),
            body_deadline: Duration::from_secs(DEFAULT_BODY_DEADLINE_SECS),
            lease: Duration::from_secs(DEFAULT_LEASE_SECS),
            connections: Connections::default(),
            log: "info".into(),
            log_format: LogFormat::Text,
        }
    }

    /// Loads `file` (if given), then the process environment.
    pub fn load(file: Option<&Path>) -> Result<(Self, Vec<String>), ConfigError> {
        Self::load_from(file, std::env::vars())
    }

    /// Loads `file` (if given), then the `AMO_*` variables of `env`. Returns
    /// the settings and warnings (such as unknown `AMO_` variables).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let mut raw = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|err| ConfigError(format!("cannot read {}: {err}", path.display())))?;
                toml::from_str(&text)
                    .map_err(|err| ConfigError(format!("{}: {}", path.display(), err.message())))?
            }
            None => RawSettings::default(),
        };
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with("AMO_"))
            .collect();
        let mut warnings = Vec::new();
        for name in env.keys() {
            let bare = &name["AMO_".len()..];
            let ours = VARIABLES.contains(&bare);
            let other_tools = ["LOCAL_", "TEST_", "BENCH_"]
                .iter()
                .any(|prefix| bare.starts_with(prefix))
                || ["ENDPOINT", "KEY"].contains(&bare);
            if !ours && !other_tools {
                warnings.push(format!("unknown variable {name} is ignored (a typo?)"));
            }
        }
        raw.overlay(&env)?;
        if raw.auth_rate_per_user.is_some() {
            warnings.push(
                "AMO_AUTH_RATE_PER_USER is no longer used: a per-account limit on /auth let \
                 strangers lock an account out; the per-address limit and the outstanding-token \
                 cap bound token requests"
                    .into(),
            );
        }
        Ok((raw.validate()?, warnings))
    }
}

/// Sets `target` from `AMO_<name>` when that variable is set.
fn number<T: std::str::FromStr>(
    target: &mut Option<T>,
    env: &BTreeMap<String, String>,
    name: &str,
) -> Result<(), ConfigError> {
    let name = format!("AMO_{name}");
    if let Some(value) = env.get(&name) {
        let parsed = value
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name}={value:?} is not a valid number")))?;
        *target = Some(parsed);
    }
    Ok(())
}

/// Parses the value of `name` as an http(s) URL with a host.
fn http_url(name: &str, value: &str) -> Result<url::Url, ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(ConfigError(format!(
            "{name}={value:?} is not an http(s) URL"
        ))),
    }
}

impl RawSettings {
    fn overlay(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        let get = |name: &str| env.get(&format!("AMO_{name}")).cloned();
        let text = |target: &mut Option<String>, name: &str| {
            if let Some(value) = get(name) {
                *target = Some(value);
            }
        };
        text(&mut self.redis_url, "REDIS_URL");
        text(&mut self.s3_endpoint, "S3_ENDPOINT");
        text(&mut self.s3_bucket, "S3_BUCKET");
        text(&mut self.s3_region, "S3_REGION");
        text(&mut self.s3_prefix, "S3_PREFIX");
        text(&mut self.jwt_secret, "JWT_SECRET");
        text(&mut self.jwt_issuer, "JWT_ISSUER");
        text(&mut self.chain_rpc, "CHAIN_RPC");
        text(&mut self.chain_usage_key, "CHAIN_USAGE_KEY");
        text(&mut self.log, "LOG");
        if let Some(value) = get("KEY_FILE") {
            self.key_file = Some(value.into());
        }
        if let Some(value) = get("DATA_DIR") {
            self.data_dir = Some(value.into());
        }
        number(&mut self.storage_id, env, "STORAGE_ID")?;
        number(&mut self.token_ttl_secs, env, "TOKEN_TTL_SECS")?;
        number(&mut self.upload_lifetime_secs, env, "UPLOAD_LIFETIME_SECS")?;
        number(&mut self.v1_max_data_bytes, env, "V1_MAX_DATA_BYTES")?;
        number(&mut self.metadata_max_bytes, env, "METADATA_MAX_BYTES")?;
        number(&mut self.max_parcel_bytes, env, "MAX_PARCEL_BYTES")?;
        number(&mut self.s3_part_size_bytes, env, "S3_PART_SIZE_BYTES")?;
        number(
            &mut self.s3_single_put_max_bytes,
            env,
            "S3_SINGLE_PUT_MAX_BYTES",
        )?;
        number(&mut self.chain_timeout_ms, env, "CHAIN_TIMEOUT_MS")?;
        number(&mut self.chain_cache_secs, env, "CHAIN_CACHE_SECS")?;
        number(&mut self.drain_timeout_secs, env, "DRAIN_TIMEOUT_SECS")?;
        number(&mut self.drain_grace_secs, env, "DRAIN_GRACE_SECS")?;
        number(&mut self.auth_rate_per_ip, env, "AUTH_RATE_PER_IP")?;
        number(&mut self.auth_rate_per_user, env, "AUTH_RATE_PER_USER")?;
        number(
            &mut self.max_outstanding_tokens,
            env,
            "MAX_OUTSTANDING_TOKENS",
        )?;
        number(
            &mut self.max_concurrent_uploads,
            env,
            "MAX_CONCURRENT_UPLOADS",
        )?;
        number(&mut self.trust_forwarded_for, env, "TRUST_FORWARDED_FOR")?;
        number(&mut self.s3_timeout_secs, env, "S3_TIMEOUT_SECS")?;
        number(
            &mut self.body_idle_timeout_secs,
            env,
            "BODY_IDLE_TIMEOUT_SECS",
        )?;
        number(&mut self.body_deadline_secs, env, "BODY_DEADLINE_SECS")?;
        number(
            &mut self.max_concurrent_v1_downloads,
            env,
            "MAX_CONCURRENT_V1_DOWNLOADS",
        )?;
        number(&mut self.lease_secs, env, "LEASE_SECS")?;
        number(
            &mut self.header_read_timeout_secs,
            env,
            "HEADER_READ_TIMEOUT_SECS",
        )?;
        number(&mut self.idle_timeout_secs, env, "IDLE_TIMEOUT_SECS")?;
        number(&mut self.max_connections, env, "MAX_CONNECTIONS")?;
        text(&mut self.log_format, "LOG_FORMAT");
        Ok(())
    }

    fn validate(self) -> Result<Settings, ConfigError> {
        let state = match self.redis_url.filter(|url| !url.trim().is_empty()) {
            Some(url) => StateBackend::Redis(
                RedisTopology::parse(&url)
                    .map_err(|err| ConfigError(format!("AMO_REDIS_URL: {err}")))?,
            ),
            None => StateBackend::Embedded,
        };
        let store = match self.s3_endpoint.filter(|url| !url.trim().is_empty()) {
            Some(endpoint) => {
                http_url("AMO_S3_ENDPOINT", &endpoint)?;
                let keys = read_key_file(self.key_file.unwrap_or_else(|| "key.json".into()))?;
                StoreBackend::S3(S3Config {
                    endpoint,
                    region: self.s3_region.unwrap_or_else(|| "us-east-1".into()),
                    bucket: self.s3_bucket.unwrap_or_else(|| "amo".into()),
                    prefix: self.s3_prefix.unwrap_or_default(),
                    access_key: keys.access_key,
                    secret_key: keys.secret_key,
                })
            }
            None => StoreBackend::Directory(self.data_dir.unwrap_or_else(|| "./data".into())),
        };
        let jwt_secret = match (self.jwt_secret, &state) {
            (Some(secret), _) => secret,
            (None, StateBackend::Embedded) => random_secret(),
            (None, StateBackend::Redis(_)) => {
                return Err(ConfigError(
                    "AMO_JWT_SECRET is not set; all replicas must share one secret".into(),
                ));
            }
        };
        if jwt_secret.len() < 32 {
            return Err(ConfigError(format!(
                "AMO_JWT_SECRET is {} bytes; it must be at least 32",
                jwt_secret.len()
            )));
        }
        let defaults = AbuseLimits::default();
        let token_ttl_secs = self.token_ttl_secs.unwrap_or(300);
        if token_ttl_secs == 0 {
            return Err(ConfigError("AMO_TOKEN_TTL_SECS must be at least 1".into()));
        }
        let upload_lifetime_secs = self
            .upload_lifetime_secs
            .unwrap_or(DEFAULT_UPLOAD_LIFETIME_SECS);
        if upload_lifetime_secs == 0 {
            return Err(ConfigError(
                "AMO_UPLOAD_LIFETIME_SECS must be at least 1".into(),
            ));
        }
        let s3_part_size_bytes = self.s3_part_size_bytes.unwrap_or(DEFAULT_PART_SIZE);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s3_part_size_bytes) {
            return Err(ConfigError(format!(
                "AMO_S3_PART_SIZE_BYTES must be between {MIN_PART_SIZE} (S3's minimum) and {MAX_PART_SIZE}"
            )));
        }
        let s3_single_put_max_bytes = self.s3_single_put_max_bytes.unwrap_or(S3_MAX_SINGLE_PUT);
        if s3_single_put_max_bytes > S3_MAX_SINGLE_PUT {
            return Err(ConfigError(format!(
                "AMO_S3_SINGLE_PUT_MAX_BYTES must be at most {S3_MAX_SINGLE_PUT} (S3's limit)"
            )));
        }
        let max_connections = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            return Err(ConfigError("AMO_MAX_CONNECTIONS must be at least 1".into()));
        }
        let connections = Connections {
            header_read_timeout: positive_secs(
                "AMO_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
                DEFAULT_HEADER_READ_TIMEOUT_SECS,
            )?,
            idle_timeout: positive_secs(
                "AMO_IDLE_TIMEOUT_SECS",
                self.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT_SECS,
            )?,
            max_connections,
        };
        let chain = chain_config(
            self.chain_rpc,
            self.chain_usage_key,
            self.chain_timeout_ms,
            self.chain_cache_secs,
        )?;
        Ok(Settings {
            state,
            store,
            jwt_secret: Secret(jwt_secret),
            jwt_issuer: self
                .jwt_issuer
                .unwrap_or_else(|| "amo-storage-service".into()),
            storage_id: StorageId(self.storage_id.unwrap_or(1)),
            token_ttl: Duration::from_secs(token_ttl_secs),
            upload_lifetime: Duration::from_secs(upload_lifetime_secs),
            v1_max_data_bytes: self.v1_max_data_bytes.unwrap_or(64 * 1024 * 1024),
            metadata_max_bytes: self.metadata_max_bytes.unwrap_or(8 * 1024),
            max_parcel_bytes: self.max_parcel_bytes.unwrap_or(S3_MAX_OBJECT_BYTES),
            s3_part_size_bytes,
            s3_single_put_max_bytes,
            chain,
            drain_timeout: Duration::from_secs(
                self.drain_timeout_secs
                    .unwrap_or(DEFAULT_DRAIN_TIMEOUT_SECS),
            ),
            drain_grace: Duration::from_secs(
                self.drain_grace_secs.unwrap_or(DEFAULT_DRAIN_GRACE_SECS),
            ),
            limits: AbuseLimits {
                auth_per_ip_per_minute: self
                    .auth_rate_per_ip
                    .unwrap_or(defaults.auth_per_ip_per_minute),
                max_outstanding_tokens: self
                    .max_outstanding_tokens
                    .unwrap_or(defaults.max_outstanding_tokens),
                max_concurrent_uploads: self
                    .max_concurrent_uploads
                    .unwrap_or(defaults.max_concurrent_uploads),
                max_concurrent_v1_downloads: self
                    .max_concurrent_v1_downloads
                    .unwrap_or(defaults.max_concurrent_v1_downloads),
                trust_forwarded_for: self.trust_forwarded_for.unwrap_or(false),
            },
            s3_timeout: positive_secs(
                "AMO_S3_TIMEOUT_SECS",
                self.s3_timeout_secs,
                DEFAULT_S3_TIMEOUT_SECS,
            )?,
            body_idle_timeout: positive_secs(
                "AMO_BODY_IDLE_TIMEOUT_SECS",
                self.body_idle_timeout_secs,
                DEFAULT_BODY_IDLE_TIMEOUT_SECS,
            )?,
            body_deadline: positive_secs(
                "AMO_BODY_DEADLINE_SECS",
                self.body_deadline_secs,
                DEFAULT_BODY_DEADLINE_SECS,
            )?,
            lease: positive_secs("AMO_LEASE_SECS", self.lease_secs, DEFAULT_LEASE_SECS)?,
            connections,
            log: self.log.unwrap_or_else(|| "info".into()),
            log_format: match self.log_format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "AMO_LOG_FORMAT={other:?} must be \"text\" or \"json\""
                    )));
                }
            },
        })
    }
}

/// A duration in whole seconds that must be at least 1.
fn positive_secs(name: &str, value: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(ConfigError(format!("{name} must be at least 1"))),
        secs => Ok(Duration::from_secs(secs)),
    }
}

/// Reads the S3 credentials of `key.json`.
fn read_key_file(path: PathBuf) -> Result<KeyFile, ConfigError> {
    let text = std::fs::read_to_string(&path)
        .map_err(|err| ConfigError(format!("cannot read key file {}: {err}", path.display())))?;
    serde_json::from_str(&text).map_err(|err| {
        ConfigError(format!(
            "key file {} must be JSON with \"access_key\" and \"secret_key\": {err}",
            path.display()
        ))
    })
}

/// A JWT secret for one embedded replica: 244 random bits from two v4
/// UUIDs (the operating system's generator), as 64 hex digits.
fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The blockchain settings: `None` when no RPC endpoint is set (an empty
/// `AMO_CHAIN_RPC` is unset). The other values are checked either way, and
/// the client is built once here, as the Redis client is, so that a TLS
/// stack that cannot start is a configuration error.
fn chain_config(
    rpc: Option<String>,
    usage_key: Option<String>,
    timeout_ms: Option<u64>,
    cache_secs: Option<u64>,
) -> Result<Option<ChainConfig>, ConfigError> {
    let usage_key = match usage_key.as_deref() {
        None => UsageKey::Recipient,
        Some(name) => UsageKey::parse(name).ok_or_else(|| {
            ConfigError(format!(
                "AMO_CHAIN_USAGE_KEY={name:?} must be \"buyer\" or \"recipient\""
            ))
        })?,
    };
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_CHAIN_TIMEOUT_MS);
    if !(1..=MAX_CHAIN_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError(format!(
            "AMO_CHAIN_TIMEOUT_MS must be between 1 and {MAX_CHAIN_TIMEOUT_MS}"
        )));
    }
    let Some(rpc) = rpc.filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let config = ChainConfig {
        rpc: http_url("AMO_CHAIN_RPC", &rpc).map_err(|_| {
            ConfigError(format!(
                "AMO_CHAIN_RPC={:?} is not an http(s) URL",
                redacted_text(&rpc)
            ))
        })?,
        usage_key,
        timeout: Duration::from_millis(timeout_ms),
        cache_ttl: Duration::from_secs(cache_secs.unwrap_or(DEFAULT_CHAIN_CACHE_SECS)),
    };
    Chain::new(&config).map_err(|err| {
        ConfigError(format!(
            "AMO_CHAIN_RPC: cannot start its HTTP client ({err}); is the system's CA \
             certificate store (ca-certificates) installed?"
        ))
    })?;
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_file() -> tempfile_path::TempKey {
        tempfile_path::TempKey::new(r#"{"access_key": "ak", "secret_key": "sk"}"#)
    }

    /// A key.json in the system temp dir, removed on drop.
    mod tempfile_path {
        pub struct TempKey(pub std::path::PathBuf);
        impl TempKey {
            pub fn new(text: &str) -> Self {
                let path =
                    std::env::temp_dir().join(format!("amo-key-{}.json", uuid::Uuid::new_v4()));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for TempKey {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn env(key: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut vars = vec![
            (
                "AMO_REDIS_URL".to_owned(),
                "redis://127.0.0.1:6379".to_owned(),
            ),
            (
                "AMO_S3_ENDPOINT".to_owned(),
                "http://127.0.0.1:7480".to_owned(),
            ),
            ("AMO_KEY_FILE".to_owned(), key.display().to_string()),
            ("AMO_JWT_SECRET".to_owned(), "x".repeat(32)),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        vars
    }

    fn s3_of(settings: &Settings) -> &S3Config {
        match &settings.store {
            StoreBackend::S3(s3) => s3,
            StoreBackend::Directory(dir) => panic!("expected S3, got the directory {dir:?}"),
        }
    }

    #[test]
    fn without_redis_and_s3_the_replica_is_embedded_with_its_own_secret() {
        let only = |vars: &[(&str, &str)]| {
            Settings::load_from(
                None,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let (settings, warnings) = only(&[("AMO_DATA_DIR", "/srv/amo")]).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(settings.state, StateBackend::Embedded);
        assert!(
            matches!(&settings.store, StoreBackend::Directory(dir) if dir == Path::new("/srv/amo"))
        );
        let (other, _) = only(&[]).unwrap();
        assert_ne!(settings.jwt_secret.expose(), other.jwt_secret.expose());
        assert!(settings.jwt_secret.expose().len() >= 32);
        let err = only(&[("AMO_REDIS_URL", "redis://127.0.0.1:6379")]).unwrap_err();
        assert!(err.to_string().contains("AMO_JWT_SECRET"), "{err}");
        let (cluster, _) = only(&[
            (
                "AMO_REDIS_URL",
                "redis://127.0.0.1:7001,redis://127.0.0.1:7002",
            ),
            ("AMO_JWT_SECRET", &"s".repeat(32)),
        ])
        .unwrap();
        assert!(matches!(
            cluster.state,
            StateBackend::Redis(RedisTopology::Cluster(nodes)) if nodes.len() == 2
        ));
    }

    #[test]
    fn defaults_are_those_of_the_design() {
        let key = key_file();
        let (settings, warnings) = Settings::load_from(None, env(&key.0, &[])).unwrap();
        assert!(warnings.is_empty());
        let s3 = s3_of(&settings);
        assert_eq!(s3.bucket, "amo");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(settings.storage_id, StorageId(1));
        assert_eq!(settings.token_ttl, Duration::from_secs(300));
        assert_eq!(settings.jwt_issuer, "amo-storage-service");
        assert_eq!(s3.access_key, "ak");
        assert_eq!(
            settings.state,
            StateBackend::Redis(RedisTopology::Single("redis://127.0.0.1:6379".into()))
        );
        assert!(!format!("{settings:?}").contains(&"x".repeat(32)));
        assert!(settings.chain.is_none(), "no RPC: only owners download");
        assert_eq!(
            settings.connections,
            Connections {
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(75),
                max_connections: 4_096,
            }
        );
    }

    #[test]
    fn connection_limits_are_set_and_checked() {
        let key = key_file();
        let load = |extra: &[(&str, &str)]| Settings::load_from(None, env(&key.0, extra));
        let (settings, warnings) = load(&[
            ("AMO_HEADER_READ_TIMEOUT_SECS", "3"),
            ("AMO_IDLE_TIMEOUT_SECS", "20"),
            ("AMO_MAX_CONNECTIONS", "100"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            settings.connections.header_read_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(settings.connections.idle_timeout, Duration::from_secs(20));
        assert_eq!(settings.connections.max_connections, 100);
        for name in [
            "AMO_HEADER_READ_TIMEOUT_SECS",
            "AMO_IDLE_TIMEOUT_SECS",
            "AMO_MAX_CONNECTIONS",
        ] {
            let text = load(&[(name, "0")]).unwrap_err().to_string();
            assert!(text.contains(name), "{name}: {text}");
        }
    }

    #[test]
    fn the_chain_is_asked_only_when_its_rpc_is_set() {
        let key = key_file();
        let load = |extra: &[(&str, &str)]| Settings::load_from(None, env(&key.0, extra)).unwrap();
        let (settings, warnings) = load(&[("AMO_CHAIN_RPC", "http://127.0.0.1:26657")]);
        assert!(warnings.is_empty(), "{warnings:?}");
        let chain = settings.chain.unwrap();
        assert_eq!(chain.rpc.as_str(), "http://127.0.0.1:26657/");
        assert_eq!(chain.usage_key, UsageKey::Recipient);
        assert_eq!(chain.timeout, Duration::from_secs(3));
        assert_eq!(chain.cache_ttl, Duration::from_secs(30));

        let (settings, _) = load(&[
            ("AMO_CHAIN_RPC", "https://node.example/rpc"),
            ("AMO_CHAIN_USAGE_KEY", "buyer"),
            ("AMO_CHAIN_TIMEOUT_MS", "250"),
            ("AMO_CHAIN_CACHE_SECS", "0"),
        ]);
        let chain = settings.chain.unwrap();
        assert_eq!(chain.usage_key, UsageKey::Buyer);
        assert_eq!(chain.timeout, Duration::from_millis(250));
        assert!(chain.cache_ttl.is_zero());

        let (settings, _) = load(&[("AMO_CHAIN_RPC", ""), ("AMO_CHAIN_TIMEOUT_MS", "100")]);
        assert!(settings.chain.is_none(), "an empty AMO_CHAIN_RPC is unset");

        let file = tempfile_path::TempKey::new("chain_rpc = \"http://10.0.0.1:26657\"\n");
        let (settings, _) = Settings::load_from(Some(&file.0), env(&key.0, &[])).unwrap();
        assert_eq!(settings.chain.unwrap().rpc.host_str(), Some("10.0.0.1"));
    }

    #[test]
    fn bad_configuration_is_named() {
        let key = key_file();
        let err = |extra: &[(&str, &str)]| {
            Settings::load_from(None, env(&key.0, extra))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[("AMO_JWT_SECRET", "short")]).contains("at least 32"));
        assert!(err(&[("AMO_S3_ENDPOINT", "not a url")]).contains("AMO_S3_ENDPOINT"));
        assert!(err(&[("AMO_REDIS_URL", "http://x")]).contains("AMO_REDIS_URL"));
        assert!(err(&[("AMO_STORAGE_ID", "-1")]).contains("AMO_STORAGE_ID"));
        assert!(err(&[("AMO_KEY_FILE", "/nonexistent/key.json")]).contains("key file"));
        for (name, value) in [
            ("AMO_CHAIN_RPC", "not a url"),
            ("AMO_CHAIN_RPC", "ftp://node.example"),
            ("AMO_CHAIN_USAGE_KEY", "owner"),
            ("AMO_CHAIN_TIMEOUT_MS", "0"),
            ("AMO_CHAIN_TIMEOUT_MS", "600000"),
            ("AMO_CHAIN_TIMEOUT_MS", "3s"),
            ("AMO_CHAIN_CACHE_SECS", "-1"),
        ] {
            let text = err(&[("AMO_CHAIN_RPC", "http://127.0.0.1:26657"), (name, value)]);
            assert!(text.contains(name), "{name}={value}: {text}");
        }
        // A URL that does not parse is shown without its credentials too.
        let text = err(&[("AMO_CHAIN_RPC", "ftp://alice:s3cret@node.example/")]);
        assert!(text.contains("ftp://***@node.example/"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let bad_key = tempfile_path::TempKey::new("{\"access_key\": 1}");
        let text = Settings::load_from(None, env(&bad_key.0, &[]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("access_key"), "{text}");
    }

    #[test]
    fn the_file_is_overridden_by_the_environment_and_typos_are_reported() {
        let key = key_file();
        let file = tempfile_path::TempKey::new("s3_bucket = \"from-file\"\nstorage_id = 7\n");
        let (settings, warnings) = Settings::load_from(
            Some(&file.0),
            env(&key.0, &[("AMO_STORAGE_ID", "9"), ("AMO_S3_BUCKT", "typo")]),
        )
        .unwrap();
        assert_eq!(s3_of(&settings).bucket, "from-file");
        assert_eq!(settings.storage_id, StorageId(9));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("AMO_S3_BUCKT"));
        let unknown_key = tempfile_path::TempKey::new("bukket = \"x\"\n");
        assert!(Settings::load_from(Some(&unknown_key.0), env(&key.0, &[])).is_err());
    }
}
