//! Settings: an optional TOML file, overridden by `AMO_*` environment
//! variables (docs/configuration.md). Each setting is declared once, with
//! its default and meaning, in `declared.rs`; this module checks the values
//! and shapes them for the rest of the service. Bad configuration is refused
//! at start with one line naming the problem; a backend being down is not
//! bad configuration.

mod declared;

pub use declared::table;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use secrecy::SecretString;

use declared::{RawSettings, Values};

use crate::{
    chain::{ChainConfig, UsageKey, redacted_text},
    cors::AllowedOrigins,
    domain::StorageId,
    state::{RedisAccess, RedisAccessFiles, RedisConfig, RedisTopology, has_password},
    storage::{KeyFile, S3Config},
    transfer_rate::MinTransferRate,
};

/// The largest object S3 stores: 5 TiB.
const S3_MAX_OBJECT_BYTES: u64 = 5 << 40;
/// S3's smallest part (but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// Parts beyond this would make memory per upload needlessly large.
const MAX_PART_SIZE: usize = 256 << 20;
/// The largest object S3 takes in one `PutObject`: 5 GiB.
const S3_MAX_SINGLE_PUT: u64 = 5 << 30;
/// S3's largest part: 5 GiB.
const S3_MAX_PART_SIZE: u64 = 5 << 30;
/// The longest timeout of a blockchain query: a download waits for it.
const MAX_CHAIN_TIMEOUT_MS: u64 = 60_000;

/// A configuration problem; its text is the one line printed at start.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// Where the shared state (tokens, locks, limits) is kept.
#[derive(Debug, Clone)]
pub enum StateBackend {
    /// Redis or a Redis Cluster (`AMO_REDIS_URL` set): any number of replicas.
    Redis(RedisConfig),
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
    /// HS256 secret shared by all replicas; never shown in `Debug` output
    /// or logs.
    pub jwt_secret: SecretString,
    /// HS256 secrets that verify tokens but sign none (the previous ones,
    /// and the next one staged); never shown in `Debug` output or logs.
    pub jwt_previous_secrets: Vec<SecretString>,
    /// Whether new tokens carry the signing secret's `kid`.
    pub jwt_write_kid: bool,
    /// The `iss` of tokens.
    pub jwt_issuer: String,
    /// This storage's id.
    pub storage_id: StorageId,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// How long a resumable upload (and the token bound to it) lives.
    pub upload_lifetime: Duration,
    /// How long a resumable upload lives without a `PATCH` that stores
    /// bytes (never past its lifetime).
    pub upload_idle: Duration,
    /// Whether each effect of a token is gated by a mark of its use in the
    /// parcel store.
    pub token_markers: bool,
    /// Unfinished resumable uploads one account may hold (0: no cap).
    pub max_open_uploads_per_account: u64,
    /// Unfinished resumable uploads one client may hold (0: no cap).
    pub max_open_uploads_per_client: u64,
    /// Largest v1 parcel body, in bytes of data (hex is twice as long).
    pub v1_max_data_bytes: u64,
    /// Largest stored metadata JSON, in bytes.
    pub metadata_max_bytes: usize,
    /// Largest parcel a v2 upload may store.
    pub max_parcel_bytes: u64,
    /// Multipart part size: what a body of unknown length buffers at most,
    /// and the size of the parts of a multipart upload.
    pub s3_part_size_bytes: usize,
    /// The largest part a body of declared length grows its parts to.
    pub s3_max_part_size_bytes: u64,
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
    /// How long S3 must have seen no write to an unfinished multipart
    /// upload whose live mark lapsed before the sweep aborts it.
    pub sweep_grace: Duration,
    /// Whether a missing bucket is created at start (else it stops the
    /// start).
    pub s3_create_bucket: bool,
    /// How this replica treats client connections: header read timeout,
    /// idle timeout, and the cap on open connections.
    pub connections: Connections,
    /// The origins browser pages may call the service from (CORS).
    pub cors: AllowedOrigins,
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
    /// The slowest a body may move while the replica waits on its client;
    /// `None`: no minimum.
    pub min_transfer: Option<MinTransferRate>,
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
    /// Downloads (v1 and v2) one replica serves at once; more answer 503.
    pub max_concurrent_downloads: usize,
    /// Bytes the bodies of v1 uploads in flight on one replica may hold
    /// together (each is held whole); more answer 503. 0: no limit.
    pub v1_upload_memory_bytes: u64,
    /// Take the client address from the last `X-Forwarded-For` entry (set
    /// this behind a proxy that appends it, such as the shipped nginx).
    pub trust_forwarded_for: bool,
    /// The share of a replica's upload slots, v1 upload memory and
    /// connections one client may hold, in percent (100: no share).
    pub client_share_percent: u64,
}

impl Default for AbuseLimits {
    /// The limits of the declared defaults.
    fn default() -> Self {
        abuse_limits(&Values::default())
    }
}

impl Settings {
    /// Settings that name no real backend, for work that contacts none (such
    /// as printing the OpenAPI spec): the declared defaults.
    pub fn offline() -> Self {
        Values::default()
            .check()
            .expect("the declared defaults are valid settings")
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
        let mut warnings: Vec<String> = env
            .keys()
            .filter(|name| !is_known_variable(name))
            .map(|name| format!("unknown variable {name} is ignored (a typo?)"))
            .collect();
        raw.overlay(&env)?;
        let (values, retired) = raw.resolve();
        warnings.extend(retired);
        let settings = values.check()?;
        if let StateBackend::Redis(redis) = &settings.state
            && redis.topology.urls().iter().any(|url| has_password(url))
        {
            warnings.push(
                "AMO_REDIS_URL holds a password, which then sits wherever the URL does (a \
                 ConfigMap, a process listing): put it in a file, AMO_REDIS_PASSWORD_FILE \
                 (a mounted Secret)"
                    .into(),
            );
        }
        Ok((settings, warnings))
    }
}

/// Whether `name` is a setting's variable, or one of the `AMO_*` variables
/// the project's scripts, tests and CLI read.
fn is_known_variable(name: &str) -> bool {
    let bare = &name["AMO_".len()..];
    declared::KEYS
        .iter()
        .any(|key| key.eq_ignore_ascii_case(bare))
        || ["LOCAL_", "TEST_", "BENCH_"]
            .iter()
            .any(|prefix| bare.starts_with(prefix))
        || ["ENDPOINT", "KEY"].contains(&bare)
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

/// The most bytes a v1 upload body may have: the hex data, plus room for the
/// metadata (escapes may quadruple it) and the JSON around them.
pub fn v1_body_limit(v1_max_data_bytes: u64, metadata_max_bytes: usize) -> u64 {
    v1_max_data_bytes
        .saturating_mul(2)
        .saturating_add(metadata_max_bytes as u64 * 6)
        .saturating_add(64 * 1024)
}

/// The memory a v1 upload whose JSON body is `body_bytes` long holds at
/// most: the body, then the data decoded from its hex beside it.
pub fn v1_upload_memory(body_bytes: u64) -> u64 {
    body_bytes.saturating_add(body_bytes / 2)
}

/// The abuse limits of `values`.
/// Refuses parcel sizes that contradict each other: a largest parcel past
/// S3's 5 TiB, or past what 10,000 parts of the largest part hold; a largest
/// part below the part size or past S3's 5 GiB.
fn parcel_sizes(max_parcel: u64, part_size: usize, max_part: u64) -> Result<(), ConfigError> {
    if !(part_size as u64..=S3_MAX_PART_SIZE).contains(&max_part) {
        return Err(ConfigError(format!(
            "AMO_S3_MAX_PART_SIZE_BYTES={max_part} must be between AMO_S3_PART_SIZE_BYTES \
             ({part_size}) and {S3_MAX_PART_SIZE} (S3's largest part)"
        )));
    }
    if max_parcel > S3_MAX_OBJECT_BYTES {
        return Err(ConfigError(format!(
            "AMO_MAX_PARCEL_BYTES={max_parcel} is past {S3_MAX_OBJECT_BYTES}, the largest object S3 stores"
        )));
    }
    let reachable = crate::parcels::MAX_PARTS * max_part;
    if max_parcel > reachable {
        return Err(ConfigError(format!(
            "AMO_MAX_PARCEL_BYTES={max_parcel} is past {reachable}, what 10,000 parts of \
             AMO_S3_MAX_PART_SIZE_BYTES ({max_part}) hold: raise the one or lower the other"
        )));
    }
    Ok(())
}

fn abuse_limits(values: &Values) -> AbuseLimits {
    AbuseLimits {
        auth_per_ip_per_minute: values.auth_rate_per_ip,
        max_outstanding_tokens: values.max_outstanding_tokens,
        max_concurrent_uploads: values.max_concurrent_uploads,
        max_concurrent_downloads: values.max_concurrent_downloads,
        v1_upload_memory_bytes: values.v1_upload_memory_bytes,
        trust_forwarded_for: values.trust_forwarded_for,
        client_share_percent: values.client_share_percent,
    }
}

impl Values {
    /// Checks every value and shapes the settings; reads the S3 key file.
    fn check(self) -> Result<Settings, ConfigError> {
        let limits = abuse_limits(&self);
        let redis_url = self
            .redis_url
            .as_deref()
            .filter(|url| !url.trim().is_empty());
        let sentinels = self
            .redis_sentinels
            .as_deref()
            .filter(|list| !list.trim().is_empty());
        let state = match (sentinels, redis_url) {
            (None, None) => StateBackend::Embedded,
            (sentinels, url) => StateBackend::Redis(redis_config(&self, sentinels, url)?),
        };
        let store = match self.s3_endpoint.filter(|url| !url.trim().is_empty()) {
            Some(endpoint) => {
                http_url("AMO_S3_ENDPOINT", &endpoint)?;
                let keys = read_key_file(&self.key_file)?;
                StoreBackend::S3(S3Config {
                    endpoint,
                    region: self.s3_region,
                    bucket: self.s3_bucket,
                    prefix: self.s3_prefix,
                    access_key: keys.access_key,
                    secret_key: keys.secret_key,
                    key_file: Some(self.key_file),
                    key_file_poll: positive_secs(
                        "AMO_KEY_FILE_POLL_SECS",
                        self.key_file_poll_secs,
                    )?,
                })
            }
            None => StoreBackend::Directory(self.data_dir),
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
        let jwt_previous_secrets = previous_secrets(self.jwt_previous_secrets.as_deref())?;
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&self.s3_part_size_bytes) {
            return Err(ConfigError(format!(
                "AMO_S3_PART_SIZE_BYTES must be between {MIN_PART_SIZE} (S3's minimum) and {MAX_PART_SIZE}"
            )));
        }
        parcel_sizes(
            self.max_parcel_bytes,
            self.s3_part_size_bytes,
            self.s3_max_part_size_bytes,
        )?;
        let largest_v1 = v1_upload_memory(v1_body_limit(
            self.v1_max_data_bytes,
            self.metadata_max_bytes,
        ));
        if self.v1_upload_memory_bytes != 0 && self.v1_upload_memory_bytes < largest_v1 {
            return Err(ConfigError(format!(
                "AMO_V1_UPLOAD_MEMORY_BYTES={} cannot hold the largest v1 upload, which \
                 AMO_V1_MAX_DATA_BYTES allows: it needs at least {largest_v1}",
                self.v1_upload_memory_bytes
            )));
        }
        if self.s3_single_put_max_bytes > S3_MAX_SINGLE_PUT {
            return Err(ConfigError(format!(
                "AMO_S3_SINGLE_PUT_MAX_BYTES must be at most {S3_MAX_SINGLE_PUT} (S3's limit)"
            )));
        }
        let connections = Connections {
            header_read_timeout: positive_secs(
                "AMO_HEADER_READ_TIMEOUT_SECS",
                self.header_read_timeout_secs,
            )?,
            idle_timeout: positive_secs("AMO_IDLE_TIMEOUT_SECS", self.idle_timeout_secs)?,
            max_connections: match self.max_connections {
                0 => return Err(ConfigError("AMO_MAX_CONNECTIONS must be at least 1".into())),
                count => count,
            },
            min_transfer: match self.min_transfer_bytes_per_sec {
                0 => None,
                bytes_per_sec => Some(MinTransferRate {
                    bytes_per_sec,
                    window: positive_secs(
                        "AMO_MIN_TRANSFER_WINDOW_SECS",
                        self.min_transfer_window_secs,
                    )?,
                }),
            },
        };
        if !(1..=100).contains(&self.client_share_percent) {
            return Err(ConfigError(
                "AMO_CLIENT_SHARE_PERCENT must be between 1 and 100".into(),
            ));
        }
        let chain = chain_config(
            self.chain_rpc,
            &self.chain_usage_key,
            self.chain_timeout_ms,
            self.chain_cache_secs,
        )?;
        Ok(Settings {
            state,
            store,
            jwt_secret: jwt_secret.into(),
            jwt_previous_secrets,
            jwt_write_kid: self.jwt_write_kid,
            jwt_issuer: self.jwt_issuer,
            storage_id: StorageId(self.storage_id),
            token_ttl: positive_secs("AMO_TOKEN_TTL_SECS", self.token_ttl_secs)?,
            upload_lifetime: positive_secs("AMO_UPLOAD_LIFETIME_SECS", self.upload_lifetime_secs)?,
            upload_idle: positive_secs("AMO_UPLOAD_IDLE_SECS", self.upload_idle_secs)?,
            max_open_uploads_per_account: self.max_open_uploads_per_account,
            max_open_uploads_per_client: self.max_open_uploads_per_client,
            token_markers: self.token_markers,
            v1_max_data_bytes: self.v1_max_data_bytes,
            metadata_max_bytes: self.metadata_max_bytes,
            max_parcel_bytes: self.max_parcel_bytes,
            s3_part_size_bytes: self.s3_part_size_bytes,
            s3_max_part_size_bytes: self.s3_max_part_size_bytes,
            s3_single_put_max_bytes: self.s3_single_put_max_bytes,
            chain,
            drain_timeout: Duration::from_secs(self.drain_timeout_secs),
            drain_grace: Duration::from_secs(self.drain_grace_secs),
            limits,
            s3_timeout: positive_secs("AMO_S3_TIMEOUT_SECS", self.s3_timeout_secs)?,
            body_idle_timeout: positive_secs(
                "AMO_BODY_IDLE_TIMEOUT_SECS",
                self.body_idle_timeout_secs,
            )?,
            body_deadline: positive_secs("AMO_BODY_DEADLINE_SECS", self.body_deadline_secs)?,
            lease: positive_secs("AMO_LEASE_SECS", self.lease_secs)?,
            sweep_grace: positive_secs("AMO_SWEEP_GRACE_SECS", self.sweep_grace_secs)?,
            s3_create_bucket: self.s3_create_bucket,
            connections,
            cors: AllowedOrigins::parse(&self.cors_allowed_origins)
                .map_err(|problem| ConfigError(format!("AMO_CORS_ALLOWED_ORIGINS: {problem}")))?,
            log: self.log,
            log_format: match self.log_format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError(format!(
                        "AMO_LOG_FORMAT={other:?} must be \"text\" or \"json\""
                    )));
                }
            },
        })
    }
}

/// The Redis of `url` with the access settings of `values`: the password
/// and certificates are read from their files now.
fn redis_config(
    values: &Values,
    sentinels: Option<&str>,
    url: Option<&str>,
) -> Result<RedisConfig, ConfigError> {
    let topology = match (sentinels, url) {
        (Some(sentinels), url) => {
            RedisTopology::sentinel(sentinels, &values.redis_sentinel_master, url)
                .map_err(|err| ConfigError(format!("AMO_REDIS_SENTINELS: {err}")))?
        }
        (None, url) => RedisTopology::parse(url.unwrap_or_default())
            .map_err(|err| ConfigError(format!("AMO_REDIS_URL: {err}")))?,
    };
    let access = RedisAccess::read(
        &RedisAccessFiles {
            username: values.redis_username.as_deref(),
            password_file: values.redis_password_file.as_deref(),
            ca_file: values.redis_ca_file.as_deref(),
            client_cert_file: values.redis_client_cert_file.as_deref(),
            client_key_file: values.redis_client_key_file.as_deref(),
        },
        topology.is_tls(),
    )
    .map_err(ConfigError)?;
    Ok(RedisConfig {
        topology,
        access,
        allow_eviction: values.redis_allow_eviction,
    })
}

/// A duration in whole seconds that must be at least 1.
fn positive_secs(name: &str, secs: u64) -> Result<Duration, ConfigError> {
    match secs {
        0 => Err(ConfigError(format!("{name} must be at least 1"))),
        secs => Ok(Duration::from_secs(secs)),
    }
}

/// Reads the S3 credentials of `key.json`.
fn read_key_file(path: &Path) -> Result<KeyFile, ConfigError> {
    KeyFile::read(path).map_err(|err| ConfigError(format!("key file {} {err}", path.display())))
}

/// The secrets of `AMO_JWT_PREVIOUS_SECRETS`: comma-separated, blanks
/// around each ignored, each at least 32 bytes. Errors name an entry by its
/// position, never by its text.
fn previous_secrets(text: Option<&str>) -> Result<Vec<SecretString>, ConfigError> {
    let Some(text) = text.filter(|text| !text.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .enumerate()
        .map(|(index, secret)| match secret.len() {
            0 => Err(ConfigError(format!(
                "AMO_JWT_PREVIOUS_SECRETS: entry {} is empty",
                index + 1
            ))),
            n if n < 32 => Err(ConfigError(format!(
                "AMO_JWT_PREVIOUS_SECRETS: entry {} is {n} bytes; it must be at least 32",
                index + 1
            ))),
            _ => Ok(SecretString::from(secret)),
        })
        .collect()
}

/// A JWT secret for one embedded replica: 256 bits from the operating
/// system's generator, as 64 hex digits.
fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    hex::encode(bytes)
}

/// The blockchain settings: `None` when no RPC endpoint is set (an empty
/// `AMO_CHAIN_RPC` is unset). The other values are checked either way, and
/// the node's HTTP client is built here, once, so that a TLS stack that
/// cannot start is a configuration error.
fn chain_config(
    rpc: Option<String>,
    usage_key: &str,
    timeout_ms: u64,
    cache_secs: u64,
) -> Result<Option<ChainConfig>, ConfigError> {
    let usage_key = UsageKey::parse(usage_key).ok_or_else(|| {
        ConfigError(format!(
            "AMO_CHAIN_USAGE_KEY={usage_key:?} must be \"buyer\" or \"recipient\""
        ))
    })?;
    if !(1..=MAX_CHAIN_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(ConfigError(format!(
            "AMO_CHAIN_TIMEOUT_MS must be between 1 and {MAX_CHAIN_TIMEOUT_MS}"
        )));
    }
    let Some(rpc) = rpc.filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let rpc = http_url("AMO_CHAIN_RPC", &rpc).map_err(|_| {
        ConfigError(format!(
            "AMO_CHAIN_RPC={:?} is not an http(s) URL",
            redacted_text(&rpc)
        ))
    })?;
    ChainConfig::new(
        rpc,
        usage_key,
        Duration::from_millis(timeout_ms),
        Duration::from_secs(cache_secs),
    )
    .map(Some)
    .map_err(|err| {
        ConfigError(format!(
            "AMO_CHAIN_RPC: cannot start its HTTP client ({err}); is the system's CA \
             certificate store (ca-certificates) installed?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// A file holding `text`, removed on drop.
    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        file
    }

    fn key_file() -> tempfile::NamedTempFile {
        file_with(r#"{"access_key": "ak", "secret_key": "sk"}"#)
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
        assert!(matches!(settings.state, StateBackend::Embedded));
        assert!(
            matches!(&settings.store, StoreBackend::Directory(dir) if dir == Path::new("/srv/amo"))
        );
        let (other, _) = only(&[]).unwrap();
        assert_ne!(
            settings.jwt_secret.expose_secret(),
            other.jwt_secret.expose_secret()
        );
        assert!(settings.jwt_secret.expose_secret().len() >= 32);
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
            StateBackend::Redis(RedisConfig { topology: RedisTopology::Cluster(nodes), .. })
                if nodes.len() == 2
        ));
    }

    #[test]
    fn defaults_are_those_of_the_design() {
        let key = key_file();
        let (settings, warnings) = Settings::load_from(None, env(key.path(), &[])).unwrap();
        assert!(warnings.is_empty());
        let s3 = s3_of(&settings);
        assert_eq!(s3.bucket, "amo");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(settings.storage_id, StorageId(1));
        assert_eq!(settings.token_ttl, Duration::from_secs(300));
        assert_eq!(settings.jwt_issuer, "amo-storage-service");
        assert_eq!(s3.access_key, "ak");
        assert!(matches!(
            &settings.state,
            StateBackend::Redis(RedisConfig { topology: RedisTopology::Single(url), allow_eviction: false, .. })
                if url == "redis://127.0.0.1:6379"
        ));
        assert!(!format!("{settings:?}").contains(&"x".repeat(32)));
        assert!(
            !format!("{settings:?}").contains("\"sk\""),
            "the S3 secret key shows in {settings:?}"
        );
        assert!(settings.chain.is_none(), "no RPC: only owners download");
        assert_eq!(
            settings.connections,
            Connections {
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(75),
                max_connections: 4_096,
                min_transfer: Some(MinTransferRate {
                    bytes_per_sec: 2_048,
                    window: Duration::from_secs(30),
                }),
            }
        );
        assert_eq!(settings.limits.client_share_percent, 25);
    }

    #[test]
    fn connection_limits_are_set_and_checked() {
        let key = key_file();
        let load = |extra: &[(&str, &str)]| Settings::load_from(None, env(key.path(), extra));
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
    fn the_v1_upload_memory_must_hold_the_largest_v1_upload() {
        let key = key_file();
        let load = |extra: &[(&str, &str)]| Settings::load_from(None, env(key.path(), extra));
        let (settings, _) = load(&[]).unwrap();
        let largest = v1_upload_memory(v1_body_limit(
            settings.v1_max_data_bytes,
            settings.metadata_max_bytes,
        ));
        assert!(settings.limits.v1_upload_memory_bytes >= largest);
        let text = load(&[("AMO_V1_UPLOAD_MEMORY_BYTES", &(largest - 1).to_string())])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("AMO_V1_UPLOAD_MEMORY_BYTES") && text.contains(&largest.to_string()),
            "{text}"
        );
        load(&[("AMO_V1_UPLOAD_MEMORY_BYTES", &largest.to_string())]).unwrap();
        load(&[("AMO_V1_UPLOAD_MEMORY_BYTES", "0")]).unwrap();
        // A larger v1 limit needs a larger budget.
        assert!(load(&[("AMO_V1_MAX_DATA_BYTES", &(256u64 << 20).to_string())]).is_err());
    }

    #[test]
    fn the_chain_is_asked_only_when_its_rpc_is_set() {
        let key = key_file();
        let load =
            |extra: &[(&str, &str)]| Settings::load_from(None, env(key.path(), extra)).unwrap();
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

        let file = file_with("chain_rpc = \"http://10.0.0.1:26657\"\n");
        let (settings, _) = Settings::load_from(Some(file.path()), env(key.path(), &[])).unwrap();
        assert_eq!(settings.chain.unwrap().rpc.host_str(), Some("10.0.0.1"));
    }

    #[test]
    fn bad_configuration_is_named() {
        let key = key_file();
        let err = |extra: &[(&str, &str)]| {
            Settings::load_from(None, env(key.path(), extra))
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
        let bad_key = file_with("{\"access_key\": 1}");
        let text = Settings::load_from(None, env(bad_key.path(), &[]))
            .unwrap_err()
            .to_string();
        assert!(text.contains("access_key"), "{text}");
    }

    #[test]
    fn the_file_is_overridden_by_the_environment_and_typos_are_reported() {
        let key = key_file();
        let file = file_with("s3_bucket = \"from-file\"\nstorage_id = 7\n");
        let (settings, warnings) = Settings::load_from(
            Some(file.path()),
            env(
                key.path(),
                &[("AMO_STORAGE_ID", "9"), ("AMO_S3_BUCKT", "typo")],
            ),
        )
        .unwrap();
        assert_eq!(s3_of(&settings).bucket, "from-file");
        assert_eq!(settings.storage_id, StorageId(9));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("AMO_S3_BUCKT"));
        let unknown_key = file_with("bukket = \"x\"\n");
        assert!(Settings::load_from(Some(unknown_key.path()), env(key.path(), &[])).is_err());
    }

    #[test]
    fn previous_jwt_secrets_are_listed_checked_and_hidden() {
        let key = key_file();
        let (old, next) = ("o".repeat(32), "n".repeat(40));
        let list = format!(" {old} ,{next}");
        let (settings, _) = Settings::load_from(
            None,
            env(key.path(), &[("AMO_JWT_PREVIOUS_SECRETS", &list)]),
        )
        .unwrap();
        let secrets: Vec<&str> = settings
            .jwt_previous_secrets
            .iter()
            .map(|secret| secret.expose_secret())
            .collect();
        assert_eq!(secrets, [old.as_str(), next.as_str()]);
        assert!(settings.jwt_write_kid);
        let shown = format!("{settings:?}");
        assert!(!shown.contains(&old) && !shown.contains(&next), "{shown}");
        let (none, _) = Settings::load_from(None, env(key.path(), &[])).unwrap();
        assert!(none.jwt_previous_secrets.is_empty());
        let short = format!("{old},short-secret-text");
        let err = Settings::load_from(
            None,
            env(key.path(), &[("AMO_JWT_PREVIOUS_SECRETS", &short)]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("entry 2 is 17 bytes"), "{err}");
        assert!(
            !err.contains("short-secret-text") && !err.contains(&old),
            "{err}"
        );
    }

    #[test]
    fn the_docs_table_is_the_declared_one() {
        let docs = include_str!("../../docs/configuration.md");
        let table = table();
        assert!(
            docs.contains(&table),
            "docs/configuration.md does not show the declared settings; replace its table with \
             the output of `cargo run -- settings-table`:\n{table}"
        );
        let rows = table.lines().count() - 2;
        assert_eq!(
            rows + declared::RETIRED.len(),
            declared::KEYS.len(),
            "one row per setting, the retired ones aside"
        );
    }

    #[test]
    fn parcel_sizes_that_contradict_each_other_are_refused_at_start() {
        let key = key_file();
        let refused = |extra: &[(&str, &str)]| {
            Settings::load_from(None, env(key.path(), extra))
                .unwrap_err()
                .to_string()
        };
        let defaults = Settings::load_from(None, env(key.path(), &[])).unwrap().0;
        assert_eq!(defaults.max_parcel_bytes, 5 << 40);
        // The default largest part holds the default largest parcel.
        assert!(crate::parcels::MAX_PARTS * defaults.s3_max_part_size_bytes >= 5 << 40);
        let err = refused(&[("AMO_MAX_PARCEL_BYTES", &((5u64 << 40) + 1).to_string())]);
        assert!(err.contains("the largest object S3 stores"), "{err}");
        let err = refused(&[("AMO_S3_MAX_PART_SIZE_BYTES", &(100u64 << 20).to_string())]);
        assert!(err.contains("what 10,000 parts of"), "{err}");
        let err = refused(&[("AMO_S3_MAX_PART_SIZE_BYTES", &(6u64 << 30).to_string())]);
        assert!(err.contains("S3's largest part"), "{err}");
        let err = refused(&[
            ("AMO_S3_PART_SIZE_BYTES", &(16u64 << 20).to_string()),
            ("AMO_S3_MAX_PART_SIZE_BYTES", &(8u64 << 20).to_string()),
        ]);
        assert!(
            err.contains("must be between AMO_S3_PART_SIZE_BYTES"),
            "{err}"
        );
        // Lowered together, they agree.
        let (small, _) = Settings::load_from(
            None,
            env(
                key.path(),
                &[
                    ("AMO_S3_MAX_PART_SIZE_BYTES", &(100u64 << 20).to_string()),
                    (
                        "AMO_MAX_PARCEL_BYTES",
                        &(10_000u64 * (100 << 20)).to_string(),
                    ),
                ],
            ),
        )
        .unwrap();
        assert_eq!(small.max_parcel_bytes, 10_000 * (100 << 20));
    }

    #[test]
    fn the_docs_state_the_tus_max_size_of_the_defaults() {
        let defaults = Values::default();
        let tus_max = defaults
            .max_parcel_bytes
            .min(crate::parcels::MAX_PARTS * defaults.s3_part_size_bytes as u64);
        let shown = tus_max
            .to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|group| std::str::from_utf8(group).unwrap())
            .collect::<Vec<_>>()
            .join(",");
        let docs = include_str!("../../docs/configuration.md");
        assert!(
            docs.contains(&format!("{shown} bytes at the default")),
            "docs/configuration.md does not state the default Tus-Max-Size, {shown}"
        );
    }

    #[test]
    fn a_retired_setting_is_accepted_with_a_warning() {
        let key = key_file();
        let (_, warnings) =
            Settings::load_from(None, env(key.path(), &[("AMO_AUTH_RATE_PER_USER", "5")])).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("AMO_AUTH_RATE_PER_USER is no longer used: a per-account"),
            "{warnings:?}"
        );
        let file = file_with("auth_rate_per_user = 5\n");
        let (_, warnings) = Settings::load_from(Some(file.path()), env(key.path(), &[])).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let (_, warnings) = Settings::load_from(
            None,
            env(key.path(), &[("AMO_MAX_CONCURRENT_V1_DOWNLOADS", "8")]),
        )
        .unwrap();
        assert!(
            warnings.len() == 1
                && warnings[0].starts_with("AMO_MAX_CONCURRENT_V1_DOWNLOADS is no longer used: v1"),
            "{warnings:?}"
        );
    }
}
