//! Blockchain grants: asks an AMO node whether an account that does not own a
//! parcel may download it (DESIGN §4, "Access control").
//!
//! # The query
//!
//! One Tendermint JSON-RPC call, `POST <AMO_CHAIN_RPC>` with
//! `Content-Type: application/json`:
//!
//! ```json
//! {"jsonrpc":"2.0","id":1,"method":"abci_query","params":{"path":"/usage","data":"<HEX>"}}
//! ```
//!
//! `data` is the upper-case hex of the compact JSON
//! `{"buyer":"<address>","target":"<parcel id>"}`. AMO nodes have named the
//! buyer `buyer` (the AMO RPC document) or `recipient` (later amoabci
//! releases): `AMO_CHAIN_USAGE_KEY` picks the name. The node answers:
//!
//! ```json
//! {"jsonrpc":"2.0","id":1,"result":{"response":{"code":0,"log":"","info":"","index":"0",
//!  "key":null,"value":"<base64 of the usage JSON>","height":"…","codespace":""}}}
//! ```
//!
//! (Tendermint's URI form, `GET /abci_query?path="/usage"&data=0x<HEX>`,
//! asks the same; this client does not use it.)
//!
//! # What the answer means
//!
//! - HTTP 200, a `result.response` whose `code` is 0 (Tendermint leaves a zero
//!   code out) and whose `value` is base64 of JSON other than `null`:
//!   **granted**.
//! - `code` 0 with `value` absent, `null`, empty or JSON `null`, or `code` 4
//!   (amoabci's `QueryCodeNoMatch`, "no usage"): **not granted** (403).
//! - Anything else is a **failure, never a grant**: the node is unreachable or
//!   does not answer within `AMO_CHAIN_TIMEOUT_MS`, a status other than 200, a
//!   body that is not the JSON above, a JSON-RPC `error`, another `code` (the
//!   node refused the query: a bad path or key, for instance a wrong
//!   `AMO_CHAIN_USAGE_KEY`), a `value` that is not base64 of JSON. It answers
//!   502 `chain_unavailable`, and the token stays usable.
//!
//! # Caching
//!
//! A grant is remembered for `AMO_CHAIN_CACHE_SECS` (default 30 s, 0: never),
//! in the memory of each replica; a refusal or a failure is never remembered,
//! so a purchase counts at once. Per replica rather than in Redis because a
//! Redis entry would cost a round trip on every check to save a query that is
//! as cheap, and would add a second way for the check to fail; the price is
//! at most one query per replica, buyer and parcel per TTL. A revoked grant
//! stays usable on a replica until its entry expires, whichever the choice.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::Deserialize;
use serde_json::{Value, json};
use url::Url;

use crate::{
    domain::{Address, ParcelId},
    error::Error,
};

/// The ABCI query path of granted usages.
pub const USAGE_PATH: &str = "/usage";

/// amoabci's `QueryCodeNoMatch`: the node has no usage for this buyer and
/// parcel. Every other non-zero code is a refused query.
pub const NO_MATCH_CODE: u32 = 4;

/// The largest answer read from the node; a usage is a few hundred bytes.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// The most grants a replica remembers; past it, new grants are not cached.
const CACHE_CAPACITY: usize = 10_000;

/// How the buyer is named in the `/usage` query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageKey {
    /// `{"buyer": …, "target": …}`, the AMO RPC document's form.
    Buyer,
    /// `{"recipient": …, "target": …}`.
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
}

/// Where and how to ask the chain.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    /// The node's Tendermint JSON-RPC endpoint (`AMO_CHAIN_RPC`).
    pub rpc: Url,
    /// How the buyer is named in the query (`AMO_CHAIN_USAGE_KEY`).
    pub usage_key: UsageKey,
    /// Connect and total timeout of one query (`AMO_CHAIN_TIMEOUT_MS`).
    pub timeout: Duration,
    /// How long a grant is remembered; zero: never (`AMO_CHAIN_CACHE_SECS`).
    pub cache_ttl: Duration,
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
    usage_key: UsageKey,
    timeout: Duration,
    cache: Option<GrantCache>,
}

impl Chain {
    /// A client for `config`: one connection pool (rustls, connect and total
    /// timeouts, no redirects, no proxy). Fails only when the TLS stack
    /// cannot start, e.g. with no CA certificates on the system.
    pub fn new(config: &ChainConfig) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(config.timeout)
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("amo-storage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| error_chain(&err))?;
        let cache = (!config.cache_ttl.is_zero()).then(|| GrantCache::new(config.cache_ttl));
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                rpc: config.rpc.clone(),
                usage_key: config.usage_key,
                timeout: config.timeout,
                cache,
            }),
        })
    }

    /// Whether the chain grants `target` to `buyer`. `Ok(false)` is the
    /// node's "no"; every failure to get a clear answer is an
    /// [`Error::ChainUnavailable`], never a grant.
    pub async fn is_granted(&self, buyer: &Address, target: &ParcelId) -> Result<bool, Error> {
        let key = (buyer.clone(), target.clone());
        let cache = self.inner.cache.as_ref();
        if cache.is_some_and(|cache| cache.holds(&key, Instant::now())) {
            tracing::debug!(%buyer, %target, "grant found in the cache");
            return Ok(true);
        }
        let request = usage_request(self.inner.usage_key, buyer, target);
        let granted = self
            .ask(&request)
            .await
            .map_err(|detail| Error::ChainUnavailable {
                detail: format!("abci_query {USAGE_PATH} at {}: {detail}", self.inner.rpc),
            })?;
        if granted {
            if let Some(cache) = cache {
                cache.remember(key, Instant::now());
            }
        }
        Ok(granted)
    }

    /// Sends one query and reads the answer.
    async fn ask(&self, request: &Value) -> Result<bool, String> {
        let describe = |err: reqwest::Error| {
            if err.is_timeout() {
                format!("no answer within {:?}", self.inner.timeout)
            } else {
                error_chain(&err)
            }
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
            return Err(format!("the node answered HTTP {status}"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if body.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(format!("the answer is over {MAX_REPLY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_reply(&body)
    }
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
    value: Option<String>,
}

/// Reads an `abci_query` answer (HTTP 200): `Ok(true)` a grant, `Ok(false)`
/// the node's "no", `Err` anything that is neither.
fn parse_reply(body: &[u8]) -> Result<bool, String> {
    let reply: RpcReply = serde_json::from_slice(body)
        .map_err(|err| format!("the answer is not a JSON-RPC abci_query result: {err}"))?;
    if let Some(error) = reply.error.filter(|error| !error.is_null()) {
        return Err(format!("the node answered a JSON-RPC error: {error}"));
    }
    let response = reply
        .result
        .ok_or("the answer has neither a result nor an error")?
        .response;
    match response.code {
        0 => {}
        NO_MATCH_CODE => return Ok(false),
        code => {
            return Err(format!(
                "the node refused the query with code {code}: {:?}",
                response.log.unwrap_or_default()
            ));
        }
    }
    let Some(value) = response.value.filter(|value| !value.is_empty()) else {
        return Ok(false);
    };
    let usage = STANDARD
        .decode(value.as_bytes())
        .map_err(|err| format!("the value is not base64: {err}"))?;
    if usage.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let usage: Value =
        serde_json::from_slice(&usage).map_err(|err| format!("the value is not JSON: {err}"))?;
    Ok(!usage.is_null())
}

/// An error and its sources, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Grants remembered until they expire, in this replica's memory.
struct GrantCache {
    ttl: Duration,
    until: Mutex<HashMap<(Address, ParcelId), Instant>>,
}

impl GrantCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            until: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a grant for `key` is remembered at `now`.
    fn holds(&self, key: &(Address, ParcelId), now: Instant) -> bool {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        match until.get(key) {
            Some(&expiry) if now < expiry => true,
            Some(_) => {
                until.remove(key);
                false
            }
            None => false,
        }
    }

    /// Remembers a grant for `key` from `now`. When the cache is full, expired
    /// entries go first; if none has expired, the grant is not remembered.
    fn remember(&self, key: (Address, ParcelId), now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= CACHE_CAPACITY {
            until.retain(|_, expiry| now < *expiry);
        }
        if until.len() < CACHE_CAPACITY {
            until.insert(key, now + self.ttl);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUYER: &str = "1E6C1528E4C04F5C879BE30F5A62121CE343308B";

    fn target() -> ParcelId {
        ParcelId::parse(&format!("00000001{}", "AB".repeat(32))).unwrap()
    }

    /// An HTTP 200 body with this ABCI `response`.
    fn reply(response: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"response": response}}))
            .unwrap()
    }

    fn value_of(usage: &str) -> String {
        STANDARD.encode(usage)
    }

    #[test]
    fn the_request_is_an_abci_query_of_the_hex_of_compact_json() {
        let buyer = Address::parse(BUYER).unwrap();
        let request = usage_request(UsageKey::Buyer, &buyer, &target());
        assert_eq!(request["jsonrpc"], "2.0");
        assert_eq!(request["method"], "abci_query");
        assert_eq!(request["params"]["path"], "/usage");
        let data = request["params"]["data"].as_str().unwrap();
        assert_eq!(data, data.to_uppercase());
        let decoded = String::from_utf8(hex::decode(data).unwrap()).unwrap();
        assert_eq!(
            decoded,
            format!(r#"{{"buyer":"{BUYER}","target":"{}"}}"#, target())
        );

        let request = usage_request(UsageKey::Recipient, &buyer, &target());
        let decoded = hex::decode(request["params"]["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(decoded).unwrap(),
            format!(r#"{{"recipient":"{BUYER}","target":"{}"}}"#, target())
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
    fn code_zero_with_a_usage_is_a_grant() {
        let usage = value_of(r#"{"custody":"AA","exp":"2030-01-01T00:00:00Z"}"#);
        assert_eq!(
            parse_reply(&reply(json!({"code": 0, "value": usage}))),
            Ok(true)
        );
        // Tendermint leaves a zero code out, and may add any other field.
        let full = json!({"log": "", "info": "", "index": "0", "key": null,
                          "value": value_of("{}"), "height": "12", "codespace": ""});
        assert_eq!(parse_reply(&reply(full)), Ok(true));
    }

    #[test]
    fn an_empty_absent_or_null_value_is_no_grant() {
        for response in [
            json!({"code": 0}),
            json!({"code": 0, "value": null}),
            json!({"code": 0, "value": ""}),
            json!({"code": 0, "value": value_of("null")}),
            json!({"code": 0, "value": value_of(" \n")}),
        ] {
            assert_eq!(
                parse_reply(&reply(response.clone())),
                Ok(false),
                "{response}"
            );
        }
    }

    #[test]
    fn no_match_is_no_grant_even_with_a_value() {
        // Early amoabci answered "no usage" with code 4 and the value `null`.
        let response =
            json!({"code": NO_MATCH_CODE, "log": "error: no usage", "value": value_of("null")});
        assert_eq!(parse_reply(&reply(response)), Ok(false));
        let response = json!({"code": NO_MATCH_CODE, "value": value_of(r#"{"custody":"AA"}"#)});
        assert_eq!(parse_reply(&reply(response)), Ok(false));
    }

    #[test]
    fn another_code_is_a_failure_never_a_grant() {
        for code in [1, 2, 3, 5, 1000] {
            let response = json!({"code": code, "log": "error: recipient is missing",
                                  "value": value_of(r#"{"custody":"AA"}"#)});
            let err = parse_reply(&reply(response)).unwrap_err();
            assert!(err.contains(&format!("code {code}")), "{err}");
        }
    }

    #[test]
    fn malformed_answers_are_failures_never_grants() {
        let usage = value_of(r#"{"custody":"AA"}"#);
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
                "result": {"response": {"code": 0, "value": usage}}}))
            .unwrap(),
            reply(json!({"code": 0, "value": "not base64!"})),
            reply(json!({"code": 0, "value": value_of("not json")})),
            reply(json!({"code": 0, "value": 7})),
        ];
        for body in cases {
            assert!(
                parse_reply(&body).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
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

        /// What `value` says when it is the standard base64 of JSON that
        /// is not null.
        fn is_a_usage(value: &Value) -> bool {
            value
                .as_str()
                .and_then(|text| STANDARD.decode(text).ok())
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .is_some_and(|usage| !usage.is_null())
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
                let _ = parse_reply(&body);
            }

            /// A grant only ever comes from code 0 (or none) without a
            /// JSON-RPC error and with a value that is the base64 of JSON
            /// other than null; code 4 is always a "no" and any other code
            /// a failure.
            #[test]
            fn only_code_zero_with_a_usage_grants(
                code in maybe(prop_oneof![
                    Just(json!(0)),
                    Just(json!(NO_MATCH_CODE)),
                    any::<u32>().prop_map(Value::from),
                    Just(json!(-1)),
                    Just(json!("0")),
                    Just(json!(1.5)),
                    Just(json!(u64::from(u32::MAX) + 1)),
                ]),
                log in maybe(prop_oneof![Just(Value::Null), "\\PC{0,12}".prop_map(Value::from)]),
                value in maybe(prop_oneof![
                    Just(Value::Null),
                    Just(json!("")),
                    json_value().prop_map(|usage| json!(STANDARD.encode(usage.to_string()))),
                    select(&["null", " \n", "{}", "not json"][..])
                        .prop_map(|usage| json!(STANDARD.encode(usage))),
                    "[A-Za-z0-9+/=!]{0,12}".prop_map(Value::from),
                    json_leaf(),
                ]),
                error in maybe(json_value()),
            ) {
                let mut response = Map::new();
                for (name, field) in [("code", &code), ("log", &log), ("value", &value)] {
                    if let Some(field) = field {
                        response.insert(name.into(), field.clone());
                    }
                }
                let mut body = json!({"jsonrpc": "2.0", "id": 1,
                                      "result": {"response": Value::Object(response)}});
                if let Some(error) = &error {
                    body["error"] = error.clone();
                }
                let answer = parse_reply(&serde_json::to_vec(&body).unwrap());
                let failed = error.as_ref().is_some_and(|e| !e.is_null());
                let code = code.as_ref().map_or(Some(0), Value::as_u64);
                let log_ok = log.as_ref().is_none_or(|l| l.is_null() || l.is_string());
                let value_ok = value.as_ref().is_none_or(|v| v.is_null() || v.is_string());
                if answer == Ok(true) {
                    prop_assert!(!failed && code == Some(0), "{}", body);
                    prop_assert!(is_a_usage(value.as_ref().unwrap()), "{}", body);
                }
                if failed {
                    prop_assert!(answer.is_err(), "{}", body);
                } else if log_ok && value_ok {
                    match code {
                        Some(n) if n == u64::from(NO_MATCH_CODE) => {
                            prop_assert_eq!(answer, Ok(false), "{}", body);
                        }
                        Some(0) => {
                            let grant = value.as_ref().is_some_and(is_a_usage);
                            if grant {
                                prop_assert_eq!(answer, Ok(true), "{}", body);
                            }
                        }
                        _ => prop_assert!(answer.is_err(), "{}", body),
                    }
                } else {
                    prop_assert!(answer.is_err(), "{}", body);
                }
            }
        }
    }

    #[test]
    fn the_cache_holds_a_grant_for_its_ttl_only() {
        let cache = GrantCache::new(Duration::from_secs(30));
        let key = (Address::parse(BUYER).unwrap(), target());
        let start = Instant::now();
        assert!(!cache.holds(&key, start));
        cache.remember(key.clone(), start);
        assert!(cache.holds(&key, start + Duration::from_secs(29)));
        let other = (Address::parse(&"0".repeat(40)).unwrap(), target());
        assert!(!cache.holds(&other, start));
        assert!(!cache.holds(&key, start + Duration::from_secs(30)));
        // The expired entry is gone, not only hidden.
        assert!(!cache.holds(&key, start));
    }

    #[test]
    fn a_full_cache_drops_expired_grants_and_never_grows_past_its_capacity() {
        let cache = GrantCache::new(Duration::from_secs(1));
        let start = Instant::now();
        let key = |n: usize| {
            let address = Address::parse(&format!("{n:040X}")).unwrap();
            (address, target())
        };
        for n in 0..CACHE_CAPACITY {
            cache.remember(key(n), start);
        }
        // Full of live grants: a new one is not remembered.
        cache.remember(key(CACHE_CAPACITY), start);
        assert!(!cache.holds(&key(CACHE_CAPACITY), start));
        assert!(cache.holds(&key(0), start));
        // Once they expired, room is made.
        let later = start + Duration::from_secs(2);
        cache.remember(key(CACHE_CAPACITY), later);
        assert!(cache.holds(&key(CACHE_CAPACITY), later));
        assert_eq!(cache.until.lock().unwrap().len(), 1);
    }
}
