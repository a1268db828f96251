//! Settings: an optional TOML file, overridden by `AMO_*` environment
//! variables (DESIGN §6). Bad configuration is refused at start with one line
//! naming the problem; a backend being down is not bad configuration.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{domain::StorageId, storage::S3Config};

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
    v1_max_data_bytes: Option<u64>,
    metadata_max_bytes: Option<usize>,
    max_parcel_bytes: Option<u64>,
    s3_part_size_bytes: Option<usize>,
    log: Option<String>,
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
    "V1_MAX_DATA_BYTES",
    "METADATA_MAX_BYTES",
    "MAX_PARCEL_BYTES",
    "S3_PART_SIZE_BYTES",
    "LOG",
];

/// The largest object S3 stores: 5 TiB.
const S3_MAX_OBJECT_BYTES: u64 = 5 << 40;
/// S3's smallest part (but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// Parts beyond this would make memory per upload needlessly large.
const MAX_PART_SIZE: usize = 256 << 20;
/// The default part size.
const DEFAULT_PART_SIZE: usize = 8 << 20;

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

/// The validated settings of one replica.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Redis URL for the token store.
    pub redis_url: String,
    /// The S3 bucket and its credentials.
    pub s3: S3Config,
    /// The embedded store's directory (reserved for the embedded mode).
    pub data_dir: PathBuf,
    /// HS256 secret shared by all replicas.
    pub jwt_secret: Secret,
    /// The `iss` of tokens.
    pub jwt_issuer: String,
    /// This storage's id.
    pub storage_id: StorageId,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Largest v1 parcel body, in bytes of data (hex is twice as long).
    pub v1_max_data_bytes: u64,
    /// Largest stored metadata JSON, in bytes.
    pub metadata_max_bytes: usize,
    /// Largest parcel a v2 upload may store.
    pub max_parcel_bytes: u64,
    /// Multipart part size; bodies up to it go up in one PutObject.
    pub s3_part_size_bytes: usize,
    /// Log filter, as `RUST_LOG`.
    pub log: String,
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
            redis_url: "redis://127.0.0.1:1".into(),
            s3: S3Config {
                endpoint: "http://127.0.0.1:1".into(),
                region: "us-east-1".into(),
                bucket: "amo".into(),
                prefix: String::new(),
                access_key: String::new(),
                secret_key: String::new(),
            },
            data_dir: "./data".into(),
            jwt_secret: Secret("offline-settings-never-serve-requests".into()),
            jwt_issuer: "amo-storage-service".into(),
            storage_id: StorageId(1),
            token_ttl: Duration::from_secs(300),
            v1_max_data_bytes: 64 * 1024 * 1024,
            metadata_max_bytes: 8 * 1024,
            max_parcel_bytes: S3_MAX_OBJECT_BYTES,
            s3_part_size_bytes: DEFAULT_PART_SIZE,
            log: "info".into(),
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
        Ok((raw.validate()?, warnings))
    }
}

fn parse_number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| ConfigError(format!("{name}={value:?} is not a valid number")))
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
        text(&mut self.log, "LOG");
        if let Some(value) = get("KEY_FILE") {
            self.key_file = Some(value.into());
        }
        if let Some(value) = get("DATA_DIR") {
            self.data_dir = Some(value.into());
        }
        if let Some(value) = get("STORAGE_ID") {
            self.storage_id = Some(parse_number("AMO_STORAGE_ID", &value)?);
        }
        if let Some(value) = get("TOKEN_TTL_SECS") {
            self.token_ttl_secs = Some(parse_number("AMO_TOKEN_TTL_SECS", &value)?);
        }
        if let Some(value) = get("V1_MAX_DATA_BYTES") {
            self.v1_max_data_bytes = Some(parse_number("AMO_V1_MAX_DATA_BYTES", &value)?);
        }
        if let Some(value) = get("METADATA_MAX_BYTES") {
            self.metadata_max_bytes = Some(parse_number("AMO_METADATA_MAX_BYTES", &value)?);
        }
        if let Some(value) = get("MAX_PARCEL_BYTES") {
            self.max_parcel_bytes = Some(parse_number("AMO_MAX_PARCEL_BYTES", &value)?);
        }
        if let Some(value) = get("S3_PART_SIZE_BYTES") {
            self.s3_part_size_bytes = Some(parse_number("AMO_S3_PART_SIZE_BYTES", &value)?);
        }
        Ok(())
    }

    fn validate(self) -> Result<Settings, ConfigError> {
        let redis_url = self
            .redis_url
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                ConfigError(
                    "AMO_REDIS_URL is not set; this version needs Redis for its tokens \
                 (e.g. redis://127.0.0.1:6379)"
                        .into(),
                )
            })?;
        redis::Client::open(redis_url.as_str())
            .map_err(|err| ConfigError(format!("AMO_REDIS_URL is not a valid Redis URL: {err}")))?;
        let endpoint = self
            .s3_endpoint
            .filter(|url| !url.is_empty())
            .ok_or_else(|| {
                ConfigError(
                "AMO_S3_ENDPOINT is not set; this version needs an S3 endpoint such as Ceph RGW"
                    .into(),
            )
            })?;
        match url::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(ConfigError(format!(
                    "AMO_S3_ENDPOINT={endpoint:?} is not an http(s) URL"
                )));
            }
        }
        let key_file = self.key_file.unwrap_or_else(|| "key.json".into());
        let keys: KeyFile = std::fs::read_to_string(&key_file)
            .map_err(|err| {
                ConfigError(format!(
                    "cannot read key file {}: {err}",
                    key_file.display()
                ))
            })
            .and_then(|text| {
                serde_json::from_str(&text).map_err(|err| {
                    ConfigError(format!(
                        "key file {} must be JSON with \"access_key\" and \"secret_key\": {err}",
                        key_file.display()
                    ))
                })
            })?;
        let jwt_secret = self.jwt_secret.ok_or_else(|| {
            ConfigError("AMO_JWT_SECRET is not set; all replicas must share one secret".into())
        })?;
        if jwt_secret.len() < 32 {
            return Err(ConfigError(format!(
                "AMO_JWT_SECRET is {} bytes; it must be at least 32",
                jwt_secret.len()
            )));
        }
        let token_ttl_secs = self.token_ttl_secs.unwrap_or(300);
        if token_ttl_secs == 0 {
            return Err(ConfigError("AMO_TOKEN_TTL_SECS must be at least 1".into()));
        }
        let s3_part_size_bytes = self.s3_part_size_bytes.unwrap_or(DEFAULT_PART_SIZE);
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&s3_part_size_bytes) {
            return Err(ConfigError(format!(
                "AMO_S3_PART_SIZE_BYTES must be between {MIN_PART_SIZE} (S3's minimum) and {MAX_PART_SIZE}"
            )));
        }
        Ok(Settings {
            redis_url,
            s3: S3Config {
                endpoint,
                region: self.s3_region.unwrap_or_else(|| "us-east-1".into()),
                bucket: self.s3_bucket.unwrap_or_else(|| "amo".into()),
                prefix: self.s3_prefix.unwrap_or_default(),
                access_key: keys.access_key,
                secret_key: keys.secret_key,
            },
            data_dir: self.data_dir.unwrap_or_else(|| "./data".into()),
            jwt_secret: Secret(jwt_secret),
            jwt_issuer: self
                .jwt_issuer
                .unwrap_or_else(|| "amo-storage-service".into()),
            storage_id: StorageId(self.storage_id.unwrap_or(1)),
            token_ttl: Duration::from_secs(token_ttl_secs),
            v1_max_data_bytes: self.v1_max_data_bytes.unwrap_or(64 * 1024 * 1024),
            metadata_max_bytes: self.metadata_max_bytes.unwrap_or(8 * 1024),
            max_parcel_bytes: self.max_parcel_bytes.unwrap_or(S3_MAX_OBJECT_BYTES),
            s3_part_size_bytes,
            log: self.log.unwrap_or_else(|| "info".into()),
        })
    }
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

    #[test]
    fn defaults_are_those_of_the_design() {
        let key = key_file();
        let (settings, warnings) = Settings::load_from(None, env(&key.0, &[])).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(settings.s3.bucket, "amo");
        assert_eq!(settings.s3.region, "us-east-1");
        assert_eq!(settings.storage_id, StorageId(1));
        assert_eq!(settings.token_ttl, Duration::from_secs(300));
        assert_eq!(settings.jwt_issuer, "amo-storage-service");
        assert_eq!(settings.s3.access_key, "ak");
        assert!(!format!("{settings:?}").contains(&"x".repeat(32)));
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
        assert_eq!(settings.s3.bucket, "from-file");
        assert_eq!(settings.storage_id, StorageId(9));
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("AMO_S3_BUCKT"));
        let unknown_key = tempfile_path::TempKey::new("bukket = \"x\"\n");
        assert!(Settings::load_from(Some(&unknown_key.0), env(&key.0, &[])).is_err());
    }
}
