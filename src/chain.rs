//! Blockchain grants: asks an AMO node whether an account that does not own a
//! parcel may download it (docs/protocol.md, "Access control").
//!
//! The node software is amoabci (`amo/query.go` `queryUsage`,
//! `amo/code/code.go`, `amo/types/usage.go`). The query, the codes, what an
//! answer means (granted, not granted, a failure that is never a grant), the
//! start-up probe, the credentials in `AMO_CHAIN_RPC` and the grant cache
//! are written up once, in docs/operations.md, "Blockchain grants"; this
//! module is that text in code.

use std::{fmt, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::{
    domain::{Address, ParcelId},
    error::with_sources,
};

/// The AMO node could not say whether a usage is granted: unreachable, too
/// slow, or an answer that is neither a grant nor a refusal. Never a grant.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// No clear answer from the node.
    #[error("abci_query {USAGE_PATH} at {node}: {detail}")]
    Unanswered {
        /// The node, as logged (credentials redacted).
        node: String,
        /// What went wrong.
        detail: String,
    },
}

/// The ABCI query path of granted usages.
pub const USAGE_PATH: &str = "/usage";

/// amoabci's `QueryCodeOK`.
pub const CODE_OK: u32 = 0;
/// amoabci's `QueryCodeBadPath`.
pub const CODE_BAD_PATH: u32 = 1002;
/// amoabci's `QueryCodeNoKey`: no query data.
pub const CODE_NO_KEY: u32 = 1003;
/// amoabci's `QueryCodeBadKey`: bad JSON, a missing key, a bad address.
pub const CODE_BAD_KEY: u32 = 1004;
/// amoabci's `QueryCodeNoMatch`: no usage for this buyer and parcel.
pub const CODE_NO_MATCH: u32 = 1005;
/// `QueryCodeBadKey` before amoabci v1.5.4, when the codes had no offset.
pub const LEGACY_CODE_BAD_KEY: u32 = 3;
/// `QueryCodeNoMatch` before amoabci v1.5.4.
pub const LEGACY_CODE_NO_MATCH: u32 = 4;

/// The largest answer read from the node; a usage is a few hundred bytes.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// The most grants a replica remembers; past it, moka evicts the grants least
/// likely to be asked for again (or does not admit the new one).
const CACHE_CAPACITY: u64 = 10_000;

/// amoabci's name of a query code, `None` for a code it never answers.
pub fn code_name(code: u32) -> Option<&'static str> {
    Some(match code {
        CODE_OK => "OK",
        CODE_BAD_PATH => "BadPath",
        CODE_NO_KEY => "NoKey",
        CODE_BAD_KEY => "BadKey",
        CODE_NO_MATCH => "NoMatch",
        1 => "BadPath before amoabci v1.5.4",
        2 => "NoKey before amoabci v1.5.4",
        LEGACY_CODE_BAD_KEY => "BadKey before amoabci v1.5.4",
        LEGACY_CODE_NO_MATCH => "NoMatch before amoabci v1.5.4",
        _ => return None,
    })
}

/// How the buyer is named in the `/usage` query and in the usage answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    /// `{"buyer": …, "target": …}`: amoabci before v1.7.0.
    Buyer,
    /// `{"recipient": …, "target": …}`: amoabci v1.7.0 and later.
    Recipient,
}

impl UsageKey {
    /// `buyer` or `recipient`; anything else is `None`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "buyer" => Some(Self::Buyer),
            "recipient" => Some(Self::Recipient),
            _ => None,
        }
    }

    /// The JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Recipient => "recipient",
        }
    }

    /// The other key, and the amoabci releases that expect it.
    fn other(self) -> (Self, &'static str) {
        match self {
            Self::Buyer => (Self::Recipient, "amoabci v1.7.0 and later"),
            Self::Recipient => (Self::Buyer, "amoabci before v1.7.0"),
        }
    }
}

/// Where and how to ask the chain.
#[derive(Clone)]
pub struct ChainConfig {
    /// The node's Tendermint JSON-RPC endpoint (`AMO_CHAIN_RPC`); it may
    /// carry credentials, so it is only ever shown [`redacted`].
    pub rpc: Url,
    /// How the buyer is named in the query (`AMO_CHAIN_USAGE_KEY`).
    pub usage_key: UsageKey,
    /// Connect and total timeout of one query (`AMO_CHAIN_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How long a grant is remembered; zero: never (`AMO_CHAIN_CACHE_SECS`).
    pub cache_ttl: Duration,
    /// The HTTP client for the node: one connection pool, built once.
    http: reqwest::Client,
}

impl ChainConfig {
    /// The settings of one node, with its HTTP client (rustls, connect and
    /// total timeouts, no redirects, no proxy). Fails only when the TLS
    /// stack cannot start, e.g. with no CA certificates on the system.
    pub fn new(
        rpc: Url,
        usage_key: UsageKey,
        timeout: Duration,
        cache_ttl: Duration,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("amo-storage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| with_sources(&err.without_url()))?;
        Ok(Self {
            rpc,
            usage_key,
            timeout,
            cache_ttl,
            http,
        })
    }
}

impl fmt::Debug for ChainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainConfig")
            .field("rpc", &redacted(&self.rpc))
            .field("usage_key", &self.usage_key)
            .field("timeout", &self.timeout)
            .field("cache_ttl", &self.cache_ttl)
            .finish()
    }
}

/// `url` as it may be logged: any userinfo (`user:password@`) is `***@`.
pub fn redacted(url: &Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Both only fail for URLs that cannot have userinfo, which have none.
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// `text`, a URL that may not parse, with whatever stands between `://`
/// and the last `@` of its authority replaced by `***`.
pub fn redacted_text(text: &str) -> String {
    let Some(start) = text.find("://").map(|at| at + 3) else {
        return text.to_owned();
    };
    let end = text[start..]
        .find(['/', '?', '#'])
        .map_or(text.len(), |at| start + at);
    match text[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &text[start + at..]),
        None => text.to_owned(),
    }
}

/// What the start-up probe found out about the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// `NoMatch` (1005 or 4): the node reads the query as this replica
    /// writes it.
    Dialect,
    /// `BadKey` (1004 or 3): the node expects the other usage key.
    WrongUsageKey,
    /// No answer: refused, timed out.
    Unreachable,
    /// An answer that is none of the above.
    Unexpected,
}

impl ProbeOutcome {
    /// Every outcome, in the order of the metric's label values.
    pub const ALL: [Self; 4] = [
        Self::Dialect,
        Self::WrongUsageKey,
        Self::Unreachable,
        Self::Unexpected,
    ];

    /// The label value of the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialect => "dialect",
            Self::WrongUsageKey => "wrong_usage_key",
            Self::Unreachable => "unreachable",
            Self::Unexpected => "unexpected",
        }
    }
}

/// A client of one AMO node, with its cache of grants. Cheap to clone: the
/// clones share the connection pool and the cache.
#[derive(Clone)]
pub struct Chain {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    rpc: Url,
    /// `rpc` as logged.
    shown: String,
    usage_key: UsageKey,
    timeout: Duration,
    cache: Option<GrantCache>,
}

impl Chain {
    /// A client of the node of `config`, sharing its connection pool, with
    /// a grant cache of its own.
    pub fn new(config: &ChainConfig) -> Self {
        let http = config.http.clone();
        let cache = (!config.cache_ttl.is_zero()).then(|| GrantCache::new(config.cache_ttl));
        Self {
            inner: Arc::new(Inner {
                http,
                rpc: config.rpc.clone(),
                shown: redacted(&config.rpc),
                usage_key: config.usage_key,
                timeout: config.timeout,
                cache,
            }),
        }
    }

    /// Whether the chain grants `target`, a parcel of `owner`, to `buyer`.
    /// `Ok(false)` is the node's "no"; every failure to get a clear answer
    /// is a [`ChainError`], never a grant.
    pub async fn is_granted(
        &self,
        buyer: &Address,
        target: &ParcelId,
        owner: &Address,
    ) -> Result<bool, ChainError> {
        let key = GrantKey {
            buyer: buyer.clone(),
            parcel: target.clone(),
            owner: owner.clone(),
        };
        let cache = self.inner.cache.as_ref();
        if cache.is_some_and(|cache| cache.holds(&key)) {
            tracing::debug!(%buyer, %target, "grant found in the cache");
            return Ok(true);
        }
        let usage_key = self.inner.usage_key;
        let unavailable = |detail: String| ChainError::Unanswered {
            node: self.inner.shown.clone(),
            detail,
        };
        let body = self
            .ask(&usage_request(usage_key, buyer, target))
            .await
            .map_err(|failure| unavailable(failure.detail))?;
        let response = read_reply(&body).map_err(unavailable)?;
        match judge(&response, usage_key, buyer, target)
            .map_err(|failure| unavailable(failure.describe(usage_key)))?
        {
            Verdict::Granted => {
                if let Some(cache) = cache {
                    cache.remember(key);
                }
                Ok(true)
            }
            Verdict::NoUsage => Ok(false),
            Verdict::Another(what) => {
                tracing::warn!(%buyer, %target, node = %self.inner.shown,
                    "the AMO node answered a usage of {what}; not a grant");
                Ok(false)
            }
        }
    }

    /// Forgets every remembered grant of `parcel`: call it once the parcel
    /// is removed.
    pub fn forget_parcel(&self, parcel: &ParcelId) {
        if let Some(cache) = &self.inner.cache {
            cache.forget(parcel);
        }
    }

    /// Runs [`Chain::probe`] in a task of the current Tokio runtime; does
    /// nothing outside one.
    pub fn probe_in_background(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let chain = self.clone();
            runtime.spawn(async move { chain.probe().await });
        }
    }

    /// Asks once for a usage that cannot exist (the zero address, the zero
    /// parcel id), logs what the answer says about the node, and records it
    /// as the metric `amo_chain_probe`. Never fails.
    pub async fn probe(&self) -> ProbeOutcome {
        let usage_key = self.inner.usage_key;
        let zero_address = Address::parse(&"0".repeat(40)).expect("40 hex digits");
        let zero_parcel = ParcelId::parse(&"0".repeat(72)).expect("72 hex digits");
        let node = self.inner.shown.as_str();
        let key = usage_key.as_str();
        let (other, releases) = usage_key.other();
        let reply = match self
            .ask(&usage_request(usage_key, &zero_address, &zero_parcel))
            .await
        {
            Err(failure) if failure.unreachable => Err((ProbeOutcome::Unreachable, failure.detail)),
            Err(failure) => Err((ProbeOutcome::Unexpected, failure.detail)),
            Ok(body) => read_reply(&body).map_err(|detail| (ProbeOutcome::Unexpected, detail)),
        };
        let outcome = match reply {
            Err((outcome, detail)) => {
                tracing::warn!(%node, %detail, outcome = outcome.as_str(),
                    "the AMO node did not answer the start-up probe; owners still download, \
                     and each non-owner download asks the node again");
                outcome
            }
            Ok(response) => match response.code {
                CODE_NO_MATCH | LEGACY_CODE_NO_MATCH => {
                    tracing::info!(%node, usage_key = key, code = response.code,
                        "the AMO node speaks this replica's /usage dialect (NoMatch for a usage \
                         that cannot exist)");
                    ProbeOutcome::Dialect
                }
                CODE_BAD_KEY | LEGACY_CODE_BAD_KEY => {
                    tracing::error!(%node, usage_key = key, code = response.code,
                        log = response.log.as_deref().unwrap_or_default(),
                        "the AMO node refuses this replica's /usage query as BadKey: it likely \
                         expects the usage key {:?} ({releases}); set AMO_CHAIN_USAGE_KEY={} \
                         (it is {key:?}). Until then every non-owner download answers 502",
                        other.as_str(), other.as_str());
                    ProbeOutcome::WrongUsageKey
                }
                code => {
                    tracing::warn!(%node, usage_key = key, code,
                        code_name = code_name(code).unwrap_or("unknown"),
                        log = response.log.as_deref().unwrap_or_default(),
                        "the AMO node answered the start-up probe with a code other than \
                         NoMatch; is it an amoabci node?");
                    ProbeOutcome::Unexpected
                }
            },
        };
        crate::metrics::chain_probe(node, outcome.as_str());
        outcome
    }

    /// Sends one query and reads the body of its HTTP 200 answer.
    async fn ask(&self, request: &Value) -> Result<Vec<u8>, AskFailure> {
        let describe = |err: reqwest::Error| AskFailure {
            unreachable: err.is_timeout() || err.is_connect(),
            detail: if err.is_timeout() {
                format!("no answer within {:?}", self.inner.timeout)
            } else {
                with_sources(&err.without_url())
            },
        };
        let mut response = self
            .inner
            .http
            .post(self.inner.rpc.clone())
            .json(request)
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(AskFailure {
                unreachable: false,
                detail: format!("the node answered HTTP {status}"),
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(AskFailure {
                    unreachable: false,
                    detail: format!("the answer is over {MAX_REPLY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A query that got no readable answer.
struct AskFailure {
    /// No connection, or no answer in time.
    unreachable: bool,
    detail: String,
}

/// The JSON-RPC request that asks for the usage of `target` by `buyer`.
fn usage_request(usage_key: UsageKey, buyer: &Address, target: &ParcelId) -> Value {
    let mut key = serde_json::Map::new();
    key.insert(usage_key.as_str().into(), buyer.as_str().into());
    key.insert("target".into(), target.as_str().into());
    let data = serde_json::to_vec(&key).expect("a map of strings serializes");
    json!({
        "jsonrpc": "2.0",
        "id": 1,
        "method": "abci_query",
        "params": {"path": USAGE_PATH, "data": hex::encode_upper(data)},
    })
}

/// A JSON-RPC answer: a result or an error.
#[derive(Deserialize)]
struct RpcReply {
    #[serde(default)]
    result: Option<QueryResult>,
    #[serde(default)]
    error: Option<Value>,
}

/// The `result` of `abci_query`.
#[derive(Deserialize)]
struct QueryResult {
    response: AbciResponse,
}

/// The ABCI `ResponseQuery`; Tendermint leaves out empty fields.
#[derive(Deserialize)]
struct AbciResponse {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    log: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// Reads an `abci_query` answer (HTTP 200) down to its ABCI response; a
/// JSON-RPC error or anything else is an `Err`.
fn read_reply(body: &[u8]) -> Result<AbciResponse, String> {
    let reply: RpcReply = serde_json::from_slice(body)
        .map_err(|err| format!("the answer is not a JSON-RPC abci_query result: {err}"))?;
    if let Some(error) = reply.error.filter(|error| !error.is_null()) {
        return Err(format!("the node answered a JSON-RPC error: {error}"));
    }
    Ok(reply
        .result
        .ok_or("the answer has neither a result nor an error")?
        .response)
}

/// What a readable answer says about the buyer and parcel asked about.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// A usage of this parcel by this buyer.
    Granted,
    /// No usage: `NoMatch`, or code 0 with no value.
    NoUsage,
    /// A well-formed usage of another buyer or parcel (what it names).
    Another(String),
}

/// An answer that is neither a grant nor a "no".
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// A non-zero code other than `NoMatch`.
    Refused { code: u32, log: String },
    /// Code 0 with a value that is not a usage.
    Malformed(String),
}

impl Failure {
    /// The detail logged: the code and its name, and for `BadKey` the usage
    /// key the node likely expects.
    fn describe(&self, usage_key: UsageKey) -> String {
        match self {
            Self::Malformed(detail) => format!("code 0, but {detail}"),
            Self::Refused { code, log } => {
                let name = code_name(*code).unwrap_or("not an amoabci query code");
                let mut text =
                    format!("the node refused the query with code {code} ({name}): {log:?}");
                if matches!(*code, CODE_BAD_KEY | LEGACY_CODE_BAD_KEY) {
                    let (other, releases) = usage_key.other();
                    text.push_str(&format!(
                        "; the node likely expects the usage key {:?} ({releases}): set \
                         AMO_CHAIN_USAGE_KEY={} (it is {:?})",
                        other.as_str(),
                        other.as_str(),
                        usage_key.as_str()
                    ));
                }
                text
            }
        }
    }
}

/// Judges a readable answer to the `/usage` query of `buyer` and `target`,
/// as amoabci's `queryUsage` writes it (see the module documentation).
fn judge(
    response: &AbciResponse,
    usage_key: UsageKey,
    buyer: &Address,
    target: &ParcelId,
) -> Result<Verdict, Failure> {
    match response.code {
        CODE_OK => {}
        CODE_NO_MATCH | LEGACY_CODE_NO_MATCH => return Ok(Verdict::NoUsage),
        code => {
            return Err(Failure::Refused {
                code,
                log: response.log.clone().unwrap_or_default(),
            });
        }
    }
    let Some(usage) = decode_json(response.value.as_deref(), "value")? else {
        return Ok(Verdict::NoUsage);
    };
    let name = usage_key.as_str();
    let Some(recipient) = usage.get(name).and_then(Value::as_str) else {
        return Err(Failure::Malformed(format!(
            "the value is not a usage naming its {name:?}: {}",
            shorten(&usage)
        )));
    };
    if Address::parse(recipient).is_err() {
        return Err(Failure::Malformed(format!(
            "the usage's {name:?} is not an address: {recipient:?}"
        )));
    }
    let echoed = decode_json(response.key.as_deref(), "key")?;
    let Some(parcel) = echoed.as_ref().and_then(|key| key.get("target")?.as_str()) else {
        return Err(Failure::Malformed(
            "the answer's key does not echo the query's \"target\", so it names no parcel".into(),
        ));
    };
    if !recipient.eq_ignore_ascii_case(buyer.as_str()) {
        return Ok(Verdict::Another(format!("{name} {recipient}")));
    }
    if !parcel.eq_ignore_ascii_case(target.as_str()) {
        return Ok(Verdict::Another(format!("parcel {parcel}")));
    }
    Ok(Verdict::Granted)
}

/// The JSON object in a base64 field: `None` when the field is absent, empty
/// or JSON `null`; a failure when it is anything but an object.
fn decode_json(field: Option<&str>, name: &str) -> Result<Option<Value>, Failure> {
    let Some(text) = field.filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let bytes = STANDARD
        .decode(text.as_bytes())
        .map_err(|err| Failure::Malformed(format!("the {name} is not base64: {err}")))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|err| Failure::Malformed(format!("the {name} is not JSON: {err}")))?;
    match value {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(value)),
        other => Err(Failure::Malformed(format!(
            "the {name} is not a JSON object: {}",
            shorten(&other)
        ))),
    }
}

/// At most 200 characters of `value`, for a log line.
fn shorten(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

/// What a remembered grant is for: the parcel's owner is part of it, so that
/// a parcel removed and stored again by another owner is asked about anew.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GrantKey {
    buyer: Address,
    parcel: ParcelId,
    owner: Address,
}

/// Grants remembered for a TTL from when they were granted, in this
/// replica's memory: a moka cache of at most [`CACHE_CAPACITY`] grants.
struct GrantCache {
    grants: moka::sync::Cache<GrantKey, ()>,
}

impl GrantCache {
    fn new(ttl: Duration) -> Self {
        Self {
            grants: moka::sync::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(ttl)
                // For `forget`: a parcel's grants are many keys.
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Whether a grant for `key` is remembered (and has not expired).
    fn holds(&self, key: &GrantKey) -> bool {
        self.grants.get(key).is_some()
    }

    /// Remembers a grant for `key` from now, for the TTL.
    fn remember(&self, key: GrantKey) {
        self.grants.insert(key, ());
    }

    /// Forgets every grant of `parcel` remembered so far: no lookup finds
    /// them from now on (moka removes them in its next maintenance).
    fn forget(&self, parcel: &ParcelId) {
        let parcel = parcel.clone();
        // Fails only without `support_invalidation_closures`, which `new` sets.
        self.grants
            .invalidate_entries_if(move |key, ()| key.parcel == parcel)
            .expect("the grant cache supports invalidation closures");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUYER: &str = "1E6C1528E4C04F5C879BE30F5A62121CE343308B";
    const OTHER: &str = "0A0B0C0D0E0F101112131415161718191A1B1C1D";

    fn buyer() -> Address {
        Address::parse(BUYER).unwrap()
    }

    fn target() -> ParcelId {
        ParcelId::parse(&format!("00000001{}", "AB".repeat(32))).unwrap()
    }

    /// An HTTP 200 body with this ABCI `response`.
    fn reply(response: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"response": response}}))
            .unwrap()
    }

    fn b64(text: &str) -> String {
        STANDARD.encode(text)
    }

    /// The `UsageEx` amoabci answers for `recipient`, as Go marshals it.
    fn usage_ex(recipient: &str) -> String {
        format!(r#"{{"custody":"C0FFEE","extra":{{}},"recipient":"{recipient}"}}"#)
    }

    /// The query data amoabci echoes as `key`.
    fn echoed(recipient: &str, target: &str) -> String {
        b64(&format!(
            r#"{{"recipient":"{recipient}","target":"{target}"}}"#
        ))
    }

    /// amoabci's answer of a grant to the buyer of the target.
    fn grant() -> Value {
        json!({"log": usage_ex(BUYER), "key": echoed(BUYER, target().as_str()),
               "value": b64(&usage_ex(BUYER)), "height": "12"})
    }

    /// What the service makes of `body`, for the buyer and target.
    fn verdict(body: &[u8]) -> Result<Verdict, String> {
        let response = read_reply(body)?;
        judge(&response, UsageKey::Recipient, &buyer(), &target())
            .map_err(|failure| failure.describe(UsageKey::Recipient))
    }

    #[test]
    fn the_request_is_an_abci_query_of_the_hex_of_compact_json() {
        let request = usage_request(UsageKey::Recipient, &buyer(), &target());
        assert_eq!(request["jsonrpc"], "2.0");
        assert_eq!(request["method"], "abci_query");
        assert_eq!(request["params"]["path"], "/usage");
        let data = request["params"]["data"].as_str().unwrap();
        assert_eq!(data, data.to_uppercase());
        let decoded = String::from_utf8(hex::decode(data).unwrap()).unwrap();
        assert_eq!(
            decoded,
            format!(r#"{{"recipient":"{BUYER}","target":"{}"}}"#, target())
        );

        let request = usage_request(UsageKey::Buyer, &buyer(), &target());
        let decoded = hex::decode(request["params"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            format!(r#"{{"buyer":"{BUYER}","target":"{}"}}"#, target())
        );
    }

    #[test]
    fn usage_keys_parse_by_name() {
        assert_eq!(UsageKey::parse("buyer"), Some(UsageKey::Buyer));
        assert_eq!(UsageKey::parse("recipient"), Some(UsageKey::Recipient));
        assert_eq!(UsageKey::parse("Buyer"), None);
        assert_eq!(UsageKey::parse("owner"), None);
    }

    #[test]
    fn the_codes_are_amoabcis() {
        // amo/code/code.go: QueryCodeOK = 0, then iota + 1001 from BadPath.
        assert_eq!(
            [
                CODE_OK,
                CODE_BAD_PATH,
                CODE_NO_KEY,
                CODE_BAD_KEY,
                CODE_NO_MATCH
            ],
            [0, 1002, 1003, 1004, 1005]
        );
        assert_eq!(code_name(1005), Some("NoMatch"));
        assert_eq!(code_name(4), Some("NoMatch before amoabci v1.5.4"));
        assert_eq!(code_name(1001), None);
    }

    #[test]
    fn the_usage_of_this_buyer_and_parcel_is_a_grant() {
        assert_eq!(verdict(&reply(grant())), Ok(Verdict::Granted));
        // Tendermint may send a zero code, and any other field; hex in any case.
        let mut full = grant();
        full["code"] = json!(0);
        full["info"] = json!("");
        full["proofOps"] = Value::Null;
        full["value"] = json!(b64(&usage_ex(&BUYER.to_lowercase())));
        full["key"] = json!(echoed(BUYER, &target().as_str().to_lowercase()));
        assert_eq!(verdict(&reply(full)), Ok(Verdict::Granted));
        // Before v1.7.0 the usage names the `buyer`.
        let old = json!({"value": b64(&format!(r#"{{"custody":"","buyer":"{BUYER}"}}"#)),
                         "key": b64(&format!(r#"{{"buyer":"{BUYER}","target":"{}"}}"#, target()))});
        let response = read_reply(&reply(old)).unwrap();
        assert_eq!(
            judge(&response, UsageKey::Buyer, &buyer(), &target()),
            Ok(Verdict::Granted)
        );
        assert!(judge(&response, UsageKey::Recipient, &buyer(), &target()).is_err());
    }

    #[test]
    fn no_match_and_an_absent_value_are_no_grant() {
        for response in [
            json!({"code": CODE_NO_MATCH, "log": "error: no usage"}),
            json!({"code": LEGACY_CODE_NO_MATCH, "log": "error: no usage"}),
            // NoMatch wins over any value beside it.
            json!({"code": CODE_NO_MATCH, "value": b64(&usage_ex(BUYER))}),
            json!({}),
            json!({"code": 0, "value": null}),
            json!({"code": 0, "value": ""}),
            json!({"code": 0, "value": b64("null")}),
            json!({"code": 0, "value": b64(" \n")}),
        ] {
            assert_eq!(
                verdict(&reply(response.clone())),
                Ok(Verdict::NoUsage),
                "{response}"
            );
        }
    }

    #[test]
    fn a_usage_of_another_buyer_or_parcel_is_no_grant() {
        let mut other_buyer = grant();
        other_buyer["value"] = json!(b64(&usage_ex(OTHER)));
        assert_eq!(
            verdict(&reply(other_buyer)),
            Ok(Verdict::Another(format!("recipient {OTHER}")))
        );
        let mut other_parcel = grant();
        let elsewhere = format!("00000001{}", "CD".repeat(32));
        other_parcel["key"] = json!(echoed(BUYER, &elsewhere));
        assert_eq!(
            verdict(&reply(other_parcel)),
            Ok(Verdict::Another(format!("parcel {elsewhere}")))
        );
    }

    #[test]
    fn a_value_that_is_not_a_usage_is_a_failure_never_a_grant() {
        for value in [
            "false",
            "0",
            "true",
            "\"granted\"",
            "[]",
            "{}",
            r#"{"custody":"AA"}"#,
            r#"{"recipient":7}"#,
            r#"{"recipient":"me"}"#,
            "not json",
        ] {
            let mut response = grant();
            response["value"] = json!(b64(value));
            let err = verdict(&reply(response)).unwrap_err();
            assert!(err.starts_with("code 0, but"), "{value}: {err}");
        }
        let mut response = grant();
        response["value"] = json!("not base64!");
        assert!(verdict(&reply(response)).is_err());
        // A usage with no echoed key names no parcel.
        for key in [Value::Null, json!(""), json!(b64("{}")), json!(b64("[1]"))] {
            let mut response = grant();
            response["key"] = key.clone();
            assert!(verdict(&reply(response)).is_err(), "{key}");
        }
    }

    #[test]
    fn another_code_is_a_failure_that_names_it() {
        for code in [1, 2, 1002, 1003, 1000, 5, 7] {
            let mut response = grant();
            response["code"] = json!(code);
            response["log"] = json!("error: recipient is missing");
            let err = verdict(&reply(response)).unwrap_err();
            assert!(err.contains(&format!("code {code} (")), "{err}");
            assert!(!err.contains("AMO_CHAIN_USAGE_KEY"), "{err}");
        }
        let mut response = grant();
        response["code"] = json!(CODE_BAD_KEY);
        let err = verdict(&reply(response)).unwrap_err();
        assert!(err.contains("code 1004 (BadKey)"), "{err}");
        assert!(err.contains("AMO_CHAIN_USAGE_KEY=buyer"), "{err}");
        let failure = Failure::Refused {
            code: CODE_BAD_KEY,
            log: String::new(),
        };
        assert!(
            failure
                .describe(UsageKey::Buyer)
                .contains("AMO_CHAIN_USAGE_KEY=recipient")
        );
    }

    #[test]
    fn malformed_answers_are_failures_never_grants() {
        let cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"<html>bad gateway</html>".to_vec(),
            b"{\"jsonrpc\":\"2.0\",\"id\":1".to_vec(),
            br#"{"jsonrpc":"2.0","id":1}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"result":{"response":{"code":"0"}}}"#.to_vec(),
            br#"{"jsonrpc":"2.0","id":1,"result":{"response":{"code":-1}}}"#.to_vec(),
            // A JSON-RPC error wins over any result beside it.
            serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1,
                "error": {"code": -32603, "message": "Internal error"},
                "result": {"response": grant()}}))
            .unwrap(),
            reply(json!({"code": 0, "value": 7})),
        ];
        for body in cases {
            assert!(
                verdict(&body).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn credentials_in_the_rpc_url_are_redacted() {
        let url = Url::parse("https://alice:s3cret@node.example:26657/rpc?x=1").unwrap();
        assert_eq!(redacted(&url), "https://***@node.example:26657/rpc?x=1");
        let url = Url::parse("http://token@node.example/").unwrap();
        assert_eq!(redacted(&url), "http://***@node.example/");
        let url = Url::parse("http://node.example:26657").unwrap();
        assert_eq!(redacted(&url), "http://node.example:26657/");
        assert_eq!(
            redacted_text("http://a:b@c@node example/p@q"),
            "http://***@node example/p@q"
        );
        assert_eq!(redacted_text("not a url"), "not a url");
        let config = ChainConfig::new(
            Url::parse("http://alice:s3cret@127.0.0.1:1/").unwrap(),
            UsageKey::Recipient,
            Duration::from_millis(200),
            Duration::ZERO,
        )
        .unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn a_failure_detail_never_carries_the_credentials() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let config = ChainConfig::new(
            Url::parse(&format!("http://alice:s3cret@127.0.0.1:{port}/")).unwrap(),
            UsageKey::Recipient,
            Duration::from_millis(500),
            Duration::ZERO,
        )
        .unwrap();
        let chain = Chain::new(&config);
        let Err(failure) = chain.is_granted(&buyer(), &target(), &buyer()).await else {
            panic!("an unreachable node is a failure");
        };
        // What error.rs logs: the error's text.
        let detail = failure.to_string();
        assert!(
            !detail.contains("s3cret") && !detail.contains("alice"),
            "{detail}"
        );
        assert!(
            detail.contains(&format!("http://***@127.0.0.1:{port}/")),
            "{detail}"
        );
        assert_eq!(chain.probe().await, ProbeOutcome::Unreachable);
    }

    mod properties {
        use proptest::{collection::vec, prelude::*, sample::select};
        use serde_json::Map;

        use super::*;

        fn json_leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                "\\PC{0,12}".prop_map(Value::from),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            json_leaf().prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    vec(inner.clone(), 0..4).prop_map(Value::Array),
                    vec(("[a-z]{0,6}", inner), 0..4)
                        .prop_map(|fields| Value::Object(fields.into_iter().collect())),
                ]
            })
        }

        /// A field that may be left out (`None`).
        fn maybe(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Option<Value>> {
            proptest::option::weighted(0.8, value)
        }

        /// The base64 of this JSON text, as a field.
        fn encoded(text: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
            text.prop_map(|text| json!(STANDARD.encode(text)))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// No answer of the node makes the reader panic: any bytes,
            /// any JSON.
            #[test]
            fn any_answer_is_read_without_panic(
                body in prop_oneof![
                    vec(any::<u8>(), 0..200),
                    json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
                    json_value().prop_map(reply),
                ],
            ) {
                let _ = verdict(&body);
            }

            /// A grant only ever comes from code 0 (or none) without a
            /// JSON-RPC error, with a value that is a usage naming this
            /// buyer and a key naming this parcel; NoMatch is always a "no"
            /// and any other code a failure.
            #[test]
            fn only_code_zero_with_this_buyers_usage_grants(
                code in maybe(prop_oneof![
                    Just(json!(0)),
                    Just(json!(CODE_NO_MATCH)),
                    Just(json!(LEGACY_CODE_NO_MATCH)),
                    any::<u32>().prop_map(Value::from),
                    Just(json!(-1)),
                    Just(json!("0")),
                    Just(json!(1.5)),
                ]),
                value in maybe(prop_oneof![
                    Just(Value::Null),
                    Just(json!("")),
                    encoded(select(vec![BUYER, OTHER, "1e6c1528e4c04f5c879be30f5a62121ce343308b"])
                        .prop_map(usage_ex)),
                    encoded(json_value().prop_map(|usage| usage.to_string())),
                    encoded(select(&["null", " \n", "{}", "false", "0", "not json"][..])
                        .prop_map(str::to_owned)),
                    "[A-Za-z0-9+/=!]{0,12}".prop_map(Value::from),
                    json_leaf(),
                ]),
                key in maybe(prop_oneof![
                    Just(json!(echoed(BUYER, target().as_str()))),
                    Just(json!(echoed(BUYER, &"0".repeat(72)))),
                    encoded(json_value().prop_map(|key| key.to_string())),
                    json_leaf(),
                ]),
                error in maybe(json_value()),
            ) {
                let mut response = Map::new();
                for (name, field) in [("code", &code), ("value", &value), ("key", &key)] {
                    if let Some(field) = field {
                        response.insert(name.into(), field.clone());
                    }
                }
                let mut body = json!({"jsonrpc": "2.0", "id": 1,
                                      "result": {"response": Value::Object(response)}});
                if let Some(error) = &error {
                    body["error"] = error.clone();
                }
                let answer = verdict(&serde_json::to_vec(&body).unwrap());
                let failed = error.as_ref().is_some_and(|e| !e.is_null());
                let code = code.as_ref().map_or(Some(0), Value::as_u64);
                if answer == Ok(Verdict::Granted) {
                    prop_assert!(!failed && code == Some(0), "{}", body);
                    let usage = STANDARD.decode(value.as_ref().unwrap().as_str().unwrap()).unwrap();
                    let usage: Value = serde_json::from_slice(&usage).unwrap();
                    prop_assert!(usage["recipient"].as_str().unwrap().eq_ignore_ascii_case(BUYER));
                    prop_assert_eq!(key.as_ref().unwrap(), &json!(echoed(BUYER, target().as_str())));
                }
                if failed {
                    prop_assert!(answer.is_err(), "{}", body);
                }
                let value_ok = value.as_ref().is_none_or(|v| v.is_null() || v.is_string());
                let key_ok = key.as_ref().is_none_or(|v| v.is_null() || v.is_string());
                if !failed && value_ok && key_ok {
                    match code {
                        Some(n) if n == u64::from(CODE_NO_MATCH)
                            || n == u64::from(LEGACY_CODE_NO_MATCH) => {
                            prop_assert_eq!(answer, Ok(Verdict::NoUsage), "{}", body);
                        }
                        Some(0) => {}
                        _ => prop_assert!(answer.is_err(), "{}", body),
                    }
                }
            }
        }
    }

    fn key(buyer: &str, owner: &str) -> GrantKey {
        GrantKey {
            buyer: Address::parse(buyer).unwrap(),
            parcel: target(),
            owner: Address::parse(owner).unwrap(),
        }
    }

    #[test]
    fn the_cache_holds_a_grant_for_its_ttl_only() {
        // moka expires on its own clock: a short real TTL, polled.
        let ttl = Duration::from_millis(300);
        let cache = GrantCache::new(ttl);
        let granted = key(BUYER, OTHER);
        assert!(!cache.holds(&granted));
        let remembered = std::time::Instant::now();
        cache.remember(granted.clone());
        assert!(!cache.holds(&key(&"0".repeat(40), OTHER)));
        // Every look that finds it gone ends after the TTL (counted from
        // before `remember`): it never expires early. And it does expire.
        loop {
            let held = cache.holds(&granted);
            let since = remembered.elapsed();
            if !held {
                assert!(since >= ttl, "gone after {since:?}, before its TTL");
                break;
            }
            assert!(since < ttl * 20, "still held after {since:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        // The expired entry is gone, not only hidden.
        cache.grants.run_pending_tasks();
        assert_eq!(cache.grants.entry_count(), 0);
    }

    #[test]
    fn a_grant_is_for_one_owner_and_forgotten_with_its_parcel() {
        let cache = GrantCache::new(Duration::from_secs(30));
        cache.remember(key(BUYER, OTHER));
        // The same parcel id, stored again by another owner.
        assert!(!cache.holds(&key(BUYER, BUYER)));
        assert!(cache.holds(&key(BUYER, OTHER)));
        // Another buyer of the same parcel, forgotten with it.
        cache.remember(key(OTHER, OTHER));
        let mut elsewhere = key(BUYER, OTHER);
        elsewhere.parcel = ParcelId::parse(&"1".repeat(72)).unwrap();
        cache.remember(elsewhere.clone());
        cache.forget(&target());
        assert!(!cache.holds(&key(BUYER, OTHER)));
        assert!(!cache.holds(&key(OTHER, OTHER)));
        assert!(cache.holds(&elsewhere), "other parcels are kept");
        cache.grants.run_pending_tasks();
        assert_eq!(
            cache.grants.entry_count(),
            1,
            "forgotten grants are removed"
        );
    }

    #[test]
    fn a_full_cache_never_grows_past_its_capacity() {
        let cache = GrantCache::new(Duration::from_secs(30));
        let key = |n: u64| key(&format!("{n:040X}"), OTHER);
        let remembered = CACHE_CAPACITY + 500;
        for n in 0..remembered {
            cache.remember(key(n));
        }
        cache.grants.run_pending_tasks();
        assert!(cache.grants.entry_count() <= CACHE_CAPACITY);
        let held = (0..remembered).filter(|&n| cache.holds(&key(n))).count();
        assert!(held as u64 <= CACHE_CAPACITY, "{held} grants held");
        assert!(held as u64 >= CACHE_CAPACITY * 9 / 10, "{held} grants held");
    }
}
