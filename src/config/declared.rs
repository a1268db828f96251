//! Every setting, declared once: its file key (the environment variable is
//! `AMO_` and the key in upper case), its type, its default and its meaning.
//! From this one list come the keys a settings file may hold (others are
//! refused), the variables read from the environment (other `AMO_*` ones are
//! reported), the defaults, and the table of docs/configuration.md, which a
//! test compares with [`table`] (`amo-storage settings-table` prints it).

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// A value a setting can take, read from an environment variable.
pub(super) trait FromVariable: Sized {
    /// Parses the variable's text; the error completes `AMO_X="text" …`.
    fn from_variable(text: &str) -> Result<Self, &'static str>;

    /// The default as the docs show it: `None` for a setting unset by
    /// default.
    fn shown(&self) -> Option<String>;
}

impl FromVariable for String {
    fn from_variable(text: &str) -> Result<Self, &'static str> {
        Ok(text.to_owned())
    }

    fn shown(&self) -> Option<String> {
        Some(if self.is_empty() {
            "empty".to_owned()
        } else {
            format!("`{self}`")
        })
    }
}

impl FromVariable for PathBuf {
    fn from_variable(text: &str) -> Result<Self, &'static str> {
        Ok(text.into())
    }

    fn shown(&self) -> Option<String> {
        Some(format!("`{}`", self.display()))
    }
}

impl<T: FromVariable> FromVariable for Option<T> {
    fn from_variable(text: &str) -> Result<Self, &'static str> {
        T::from_variable(text).map(Some)
    }

    fn shown(&self) -> Option<String> {
        self.as_ref().and_then(FromVariable::shown)
    }
}

/// Numbers and flags: the text, trimmed, parsed.
macro_rules! parsed_variable {
    ($($ty:ty),*) => {$(
        impl FromVariable for $ty {
            fn from_variable(text: &str) -> Result<Self, &'static str> {
                text.trim().parse().map_err(|_| "is not a valid number")
            }

            fn shown(&self) -> Option<String> {
                Some(format!("`{self}`"))
            }
        }
    )*};
}

parsed_variable!(u32, u64, usize, bool);

/// Declares the settings: `key: Type = default => "note on the default",`
/// with the meaning as doc comments (markdown, relative to docs/). A note
/// alone stands for a default of `None`; beside a value it is shown in
/// parentheses.
macro_rules! settings {
    (
        $(
            $(#[doc = $doc:literal])+
            $key:ident : $ty:ty = $default:expr $(=> $note:literal)?,
        )+
        retired {
            $( $(#[doc = $why:literal])+ $old:ident, )*
        }
    ) => {
        /// What a settings file holds: any subset of the settings.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawSettings {
            $( $key: Option<$ty>, )+
            $( $old: Option<toml::Value>, )*
        }

        /// Every setting's value, defaults filled in, not yet checked.
        #[derive(Debug, Clone)]
        pub(super) struct Values {
            $( $(#[doc = $doc])+ pub $key: $ty, )+
        }

        impl Default for Values {
            fn default() -> Self {
                Self { $( $key: Into::<$ty>::into($default), )+ }
            }
        }

        impl RawSettings {
            /// Sets every setting whose `AMO_` variable is in `env`.
            pub(super) fn overlay(&mut self, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
                $( overlay(&mut self.$key, env, stringify!($key))?; )+
                $(
                    if let Some(value) = env.get(&variable(stringify!($old))) {
                        self.$old = Some(toml::Value::String(value.clone()));
                    }
                )*
                Ok(())
            }

            /// The values, each setting not given taking its default; and
            /// a warning for each retired setting given.
            pub(super) fn resolve(self) -> (Values, Vec<String>) {
                let defaults = Values::default();
                let mut warnings = Vec::new();
                $(
                    if self.$old.is_some() {
                        warnings.push(format!(
                            "{} is no longer used:{}",
                            variable(stringify!($old)),
                            concat!($($why),+).trim_end_matches('.'),
                        ));
                    }
                )*
                let values = Values {
                    $( $key: self.$key.unwrap_or(defaults.$key), )+
                };
                (values, warnings)
            }
        }

        /// The file keys of every setting, retired ones included.
        pub(super) const KEYS: &[&str] = &[$( stringify!($key), )+ $( stringify!($old), )*];

        /// The file keys of the retired settings.
        #[cfg(test)]
        pub(super) const RETIRED: &[&str] = &[$( stringify!($old), )*];

        /// The rows of the docs' table: variable, meaning, default.
        fn rows() -> Vec<(String, String, String)> {
            let defaults = Values::default();
            vec![$(
                (
                    variable(stringify!($key)),
                    concat!($($doc),+).trim().to_owned(),
                    shown_default(defaults.$key.shown(), None $(.or(Some($note)))?),
                ),
            )+]
        }
    };
}

/// The environment variable of the file key `key`.
pub(super) fn variable(key: &str) -> String {
    format!("AMO_{}", key.to_ascii_uppercase())
}

/// Sets `target` from the variable of `key` when `env` has it.
fn overlay<T: FromVariable>(
    target: &mut Option<T>,
    env: &BTreeMap<String, String>,
    key: &str,
) -> Result<(), ConfigError> {
    let name = variable(key);
    if let Some(text) = env.get(&name) {
        let value = T::from_variable(text)
            .map_err(|problem| ConfigError(format!("{name}={text:?} {problem}")))?;
        *target = Some(value);
    }
    Ok(())
}

/// A default as the table shows it: the value and its note in parentheses,
/// or the note alone for a setting unset by default.
fn shown_default(value: Option<String>, note: Option<&str>) -> String {
    match (value, note) {
        (Some(value), Some(note)) => format!("{value} ({note})"),
        (Some(value), None) => value,
        (None, Some(note)) => note.to_owned(),
        (None, None) => "unset".to_owned(),
    }
}

/// The table of every setting, as docs/configuration.md shows it.
pub fn table() -> String {
    let mut text = String::from("| variable | meaning | default |\n|---|---|---|\n");
    for (name, meaning, default) in rows() {
        text.push_str(&format!("| `{name}` | {meaning} | {default} |\n"));
    }
    text
}

settings! {
    /// Redis for tokens, locks and rate limits: one `redis://…` URL for a
    /// single server; a comma-separated list of node URLs, or
    /// `redis+cluster://host:port[,host:port…]`, for a Redis Cluster
    redis_url: Option<String> = None => "unset: embedded, in the process (one replica only)",
    /// Redis behind Sentinel: the sentinels, `host:port` separated by
    /// commas; the service asks them for the master of
    /// `AMO_REDIS_SENTINEL_MASTER`, and again after a failover
    /// ([Sentinel](operations.md#redis-behind-sentinel)). `AMO_REDIS_URL`,
    /// if set, gives the scheme, user, password and database of the master
    /// (its host is ignored)
    redis_sentinels: Option<String> = None => "unset: no Sentinel",
    /// the master name the sentinels watch (with `AMO_REDIS_SENTINELS`)
    redis_sentinel_master: String = "mymaster",
    /// gate each effect of a token (an upload's commit, a remove) by a
    /// mark of its use written to the parcel store with `If-None-Match: *`
    /// (`<AMO_S3_PREFIX>.tokens/<jti>`): a token that a Redis failover
    /// brought back works at most once
    /// ([exactly once](reliability.md#exactly-once-across-a-failover))
    token_markers: bool = true,
    /// the Redis ACL user (with `AMO_REDIS_PASSWORD_FILE`; overrides a user
    /// in `AMO_REDIS_URL`)
    redis_username: Option<String> = None => "none: the URL's, or `default`",
    /// a file holding the Redis password (a mounted Secret; one trailing
    /// newline is ignored, an empty file means none); overrides a password
    /// in `AMO_REDIS_URL`, which would sit in the ConfigMap
    redis_password_file: Option<PathBuf> = None => "none: the URL's, or no password",
    /// CA certificates (PEM) that sign the Redis server's certificate, for
    /// `rediss://` URLs
    redis_ca_file: Option<PathBuf> = None => "none: the system's CA certificates",
    /// a client certificate (PEM) for mutual TLS with Redis, with
    /// `AMO_REDIS_CLIENT_KEY_FILE`
    redis_client_cert_file: Option<PathBuf> = None => "none",
    /// the client certificate's private key (PEM)
    redis_client_key_file: Option<PathBuf> = None => "none",
    /// start even when Redis's `maxmemory-policy` is not `noeviction` (an
    /// evicted token record lets a used token work again; see
    /// [What Redis must be](operations.md#what-redis-must-be))
    redis_allow_eviction: bool = false,
    /// Ceph RGW / S3 endpoint URL
    s3_endpoint: Option<String> = None => "unset: the directory store under `AMO_DATA_DIR`",
    /// bucket
    s3_bucket: String = "amo",
    /// signing region
    s3_region: String = "us-east-1",
    /// prefix of every object key
    s3_prefix: String = "",
    /// create the bucket at start when it does not exist, with the
    /// [lifecycle rules](operations.md#the-bucket-lifecycle-rules); `false`:
    /// a missing bucket stops the start with an error
    s3_create_bucket: bool = false,
    /// `key.json` with `access_key`, `secret_key` for S3 (see `key.json.example`)
    key_file: PathBuf = "key.json",
    /// how often the key file is read again: new valid keys are used for
    /// new S3 requests without a restart (also read on SIGHUP; see
    /// [rotating the S3 keys](operations.md#rotating-the-s3-keys))
    key_file_poll_secs: u64 = 5u64,
    /// the directory store's directory (when `AMO_S3_ENDPOINT` is unset)
    data_dir: PathBuf = "./data",
    /// HS256 secret shared by all replicas, ≥ 32 bytes: it signs new
    /// tokens, which name it by a `kid` derived from it
    jwt_secret: Option<String> = None => "required with Redis; embedded: random per start",
    /// other HS256 secrets that verify tokens but sign none, separated by
    /// commas (each ≥ 32 bytes, without commas): the secrets that signed
    /// before, until their tokens and bound uploads have expired, and the
    /// next one, staged before it signs ([rotation](operations.md#rotating-the-jwt-secret))
    jwt_previous_secrets: Option<String> = None => "none",
    /// write the signing secret's `kid` in new tokens' header; turn it off
    /// only while upgrading from a version without key ids (its replicas
    /// refuse a `kid`)
    jwt_write_kid: bool = true,
    /// the tokens' `iss`
    jwt_issuer: String = "amo-storage-service",
    /// u32 storage id (the tokens' `aud`, the ids' first 8 hex digits)
    storage_id: u32 = 1u32,
    /// token lifetime
    token_ttl_secs: u64 = 300u64,
    /// how long a [resumable upload](protocol.md#resumable-uploads) lives
    /// after its creation, and with it the token bound to it; past it the
    /// upload answers 404 and the sweep removes its parts and tail
    upload_lifetime_secs: u64 = 24 * 60 * 60u64 => "24 h",
    /// a [resumable upload](protocol.md#resumable-uploads) that stores no
    /// byte for this long expires early (404, and the sweep removes its
    /// parts and tail): its creation and each `PATCH` that stores bytes
    /// set its expiry to now plus this, never past its lifetime. It bounds
    /// how long an abandoned upload holds its Redis record, its S3 parts
    /// and its place in the open-upload caps; keep it well above the time
    /// one part takes to arrive
    upload_idle_secs: u64 = 60 * 60u64 => "1 h",
    /// unfinished resumable uploads one account may hold, across replicas
    /// (429 `too_many_uploads` past it, the token left usable); a seller
    /// uploads a few files at once, while each unfinished upload holds
    /// about 1.3 KB of Redis (11 KB with the largest metadata;
    /// [operations](operations.md#redis-memory-of-resumable-uploads)) and
    /// an open S3 multipart upload for up to `AMO_UPLOAD_IDLE_SECS`: one
    /// account holds at most 1.1 MB; `0`: no cap
    max_open_uploads_per_account: u64 = 100u64,
    /// unfinished resumable uploads one client (an IPv4 address or an IPv6
    /// /64) may hold, across replicas, whatever accounts it uses (accounts
    /// cost nothing); room for an office behind one NAT, while one address
    /// holds at most 11 MB of Redis; `0`: no cap
    max_open_uploads_per_client: u64 = 1_000u64,
    /// largest v1 parcel body (hex in JSON is twice this)
    v1_max_data_bytes: u64 = 64u64 << 20 => "64 MiB",
    /// memory the bodies of the v1 uploads in flight may hold together,
    /// per replica (503 `busy` past it); one upload holds one and a half
    /// times what arrived of its JSON body, grown as it arrives and given
    /// back at once when it is refused, so this must hold the largest v1
    /// upload, about three times `AMO_V1_MAX_DATA_BYTES`; `0`: no limit
    v1_upload_memory_bytes: u64 = 256u64 << 20 => "256 MiB",
    /// largest stored metadata JSON
    metadata_max_bytes: usize = 8usize * 1024,
    /// largest v2 parcel of declared length (`Content-Length`), at most
    /// 5 TiB (S3's limit) and at most 10,000 parts of
    /// `AMO_S3_MAX_PART_SIZE_BYTES`; a body of unknown length (chunked) and
    /// a resumable upload are at most 10,000 parts of
    /// `AMO_S3_PART_SIZE_BYTES` (83,886,080,000 bytes at the default, the
    /// `Tus-Max-Size` answered), and never past this
    max_parcel_bytes: u64 = super::S3_MAX_OBJECT_BYTES => "5 TiB, S3's limit",
    /// multipart part size (5 MiB to 256 MiB), and the most a body of
    /// unknown length (chunked) or a resumable upload buffers; such a body
    /// is at most 10,000 parts of it. A body of declared length longer
    /// than 10,000 of these parts goes up in larger parts, as the AWS SDKs
    /// do: its length ÷ 10,000 rounded up to a MiB (logged as `part_size`
    /// when its multipart upload starts); those parts stream through
    /// without being buffered
    s3_part_size_bytes: usize = 8usize << 20 => "8 MiB",
    /// the largest part a body of declared length may grow to (from
    /// `AMO_S3_PART_SIZE_BYTES` to 5 GiB, S3's limit); 10,000 of them must
    /// hold `AMO_MAX_PARCEL_BYTES`, else the service refuses to start
    s3_max_part_size_bytes: u64 = 525u64 << 20 => "525 MiB: 10,000 parts hold 5 TiB",
    /// the largest body of known length that streams up in one `PutObject`
    /// (at most 5 GiB, S3's limit); longer ones stream up in parts
    s3_single_put_max_bytes: u64 = super::S3_MAX_SINGLE_PUT => "5 GiB",
    /// the AMO node's Tendermint JSON-RPC URL (`http(s)://…`), asked about
    /// [grants](operations.md#blockchain-grants); unset or empty: only
    /// owners download
    chain_rpc: Option<String> = None => "unset",
    /// how the `/usage` query names the buyer: `recipient` (amoabci v1.7.0
    /// and later) or `buyer` (older nodes)
    chain_usage_key: String = "recipient",
    /// connect and total timeout of one query (1 to 60000)
    chain_timeout_ms: u64 = 3_000u64,
    /// how long a replica remembers a grant; `0`: never
    chain_cache_secs: u64 = 30u64,
    /// token requests per client address per minute, across replicas (429
    /// past it); `0`: no limit
    auth_rate_per_ip: u64 = 6_000u64,
    /// issued, unused, unexpired tokens per account; one more revokes the
    /// account's oldest unused token; `0`: no limit
    max_outstanding_tokens: u64 = 1_000u64,
    /// uploads in flight per replica (503 `busy` past it); `0`: no limit
    max_concurrent_uploads: usize = 64usize,
    /// downloads in flight per replica, v1 and v2 (503 `busy` past it,
    /// before the token is spent); each streams, holding a few buffers
    /// (the [memory plan](operations.md#memory-plan) counts them); `0`: no
    /// limit
    max_concurrent_downloads: usize = 256usize,
    /// the origins a browser page may call the service from (CORS): empty
    /// for none (no CORS header is sent), `*` for any, or a comma-separated
    /// list such as `https://market.example,http://127.0.0.1:8000` (see
    /// [protocol](protocol.md#from-a-browser))
    cors_allowed_origins: String = "",
    /// take the client address from the last `X-Forwarded-For` entry (set
    /// it only behind a proxy that writes it)
    trust_forwarded_for: bool = false,
    /// S3 read, attempt and operation timeout, and the longest S3 may
    /// take no byte of a body going up or send none of one coming down
    /// (503 past it)
    s3_timeout_secs: u64 = 30u64,
    /// an upload whose client sends nothing for this long is aborted (400),
    /// its token released
    body_idle_timeout_secs: u64 = 60u64,
    /// how long a v1 upload's whole body may take to arrive (it is read
    /// into memory)
    body_deadline_secs: u64 = 300u64,
    /// how long a lease lives unless renewed: a token claim, a parcel's
    /// write lock, the live mark of a multipart upload (renewed every third
    /// of it; a dead replica's leases lapse)
    lease_secs: u64 = 30u64,
    /// an unfinished multipart upload whose live mark lapsed (its replica
    /// died, or Redis lost the mark in a failover) is aborted by the sweep
    /// only once S3 has seen no write to it (its start, its last part) for
    /// this long: a writer still streaming keeps it. Keep it above the time
    /// one part takes to arrive; clocks of the replicas and of S3 must
    /// agree within it
    sweep_grace_secs: u64 = 60 * 60u64 => "1 h",
    /// a request head (request line and all headers) must arrive within
    /// this of its first byte, and a new connection must send its first
    /// head within this of being accepted; else the connection is closed
    header_read_timeout_secs: u64 = 10u64,
    /// a connection with no request in flight (none being read, handled or
    /// answered) is closed after this; keep it above the idle time of a
    /// proxy's upstream pool (the shipped nginx: 60 s)
    idle_timeout_secs: u64 = 75u64,
    /// client connections one replica keeps open; past it a new connection
    /// gets a `503` `too_many_connections` JSON answer (best effort, with
    /// `Retry-After: 2`) and is closed at once, while the open ones go on
    max_connections: usize = 4_096usize,
    /// the slowest a body may move while the replica waits on its client,
    /// both ways (upload bodies, and every answer: downloads, and an
    /// HTTP/2 window held at zero); below it over a window the upload is
    /// cut (408 `too_slow`, its token released) or the connection closed;
    /// a slow mobile link (2G moves 5 KB/s and more) meets it; `0`: no
    /// minimum
    min_transfer_bytes_per_sec: u64 = 2_048u64,
    /// the window of `AMO_MIN_TRANSFER_BYTES_PER_SEC`: the waiting time over
    /// which the rate is judged, long enough to ride out a stall of a
    /// mobile link
    min_transfer_window_secs: u64 = 30u64,
    /// the share of a replica's upload slots, download slots, v1 upload
    /// memory and connections one client may hold, in percent (a client holding none
    /// may always take one upload, one largest v1 body and one
    /// connection); past it the client gets 429 `client_share` while
    /// others are served; `100`: no share
    client_share_percent: u64 = 25u64,
    /// on SIGTERM, how long the replica keeps accepting connections while
    /// `/readyz` answers 503, before it stops accepting and drains
    drain_grace_secs: u64 = 2u64,
    /// on SIGTERM, after the grace, how long in-flight requests may take to
    /// finish
    drain_timeout_secs: u64 = 30u64,
    /// log filter, as `RUST_LOG`; the audit log's target is
    /// `amo_storage::audit` ([operations](operations.md#the-audit-log))
    log: String = "info",
    /// `text` or `json` (one object per line, with the request's span
    /// fields)
    log_format: String = "text",
    retired {
        /// a per-account limit on /auth let strangers lock an account out;
        /// the per-address limit and the outstanding-token cap bound token
        /// requests
        auth_rate_per_user,
        /// v1 downloads stream their hex as they read the parcel, holding
        /// none of it whole, so they need no cap of their own
        max_concurrent_v1_downloads,
    }
}
