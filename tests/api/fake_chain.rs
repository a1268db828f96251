//! A stand-in for an AMO node's Tendermint JSON-RPC endpoint, in-process on
//! `127.0.0.1:0`, for the grant tests. It answers `/usage` as amoabci's
//! `queryUsage` (`amo/query.go`) does, with the codes of `amo/code/code.go`.
//!
//! **Request**: `POST /` with
//!
//! ```json
//! {"jsonrpc":"2.0","id":1,"method":"abci_query","params":{"path":"/usage","data":"<HEX>"}}
//! ```
//!
//! Every such request is recorded before it is answered: a query for the
//! zero address is the start-up probe ([`FakeChain::probes`]), any other a
//! [`Query`] ([`FakeChain::queries`]). A request of any other shape gets a
//! JSON-RPC error, so a service that asks wrongly fails its test.
//!
//! **Answer**, by [`Answer::AsTheNode`], as `queryUsage` in the node's
//! [`Dialect`]: no data: `NoKey`; data that is not a JSON object of hex
//! strings, no buyer key (`recipient`, or `buyer` before v1.7.0), no
//! `target`, an address that is not 20 bytes: `BadKey`; a path other than
//! `/usage`: `BadPath`; no usage: `NoMatch`; a granted pair: code 0, `value`
//! the base64 of `UsageEx` (`{"custody":…,"extra":{},"recipient":…}`), `key`
//! the base64 of the query data. As Tendermint does, empty fields (a zero
//! code among them) are left out. The other [`Answer`]s are failures and
//! forgeries that must never count as a grant.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{
    EndpointExt, Response, Route, Server, handler,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpListener},
    post,
    web::Data,
};
use serde_json::{Map, Value, json};

/// The zero address: the start-up probe asks about it.
pub const ZERO_ADDRESS: &str = "0000000000000000000000000000000000000000";

/// Which amoabci the fake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// v1.7.0 and later: `recipient`, codes 1002 to 1005.
    Current,
    /// v1.5.4 to v1.6.x: `buyer`, codes 1002 to 1005.
    Buyer,
    /// Before v1.5.4: `buyer`, codes 1 to 4.
    Legacy,
}

impl Dialect {
    /// The name of the buyer in the query and in the usage.
    fn key(self) -> &'static str {
        match self {
            Self::Current => "recipient",
            Self::Buyer | Self::Legacy => "buyer",
        }
    }

    /// The code of `BadPath`, `NoKey`, `BadKey` or `NoMatch` (1 to 4).
    fn code(self, offset_free: u32) -> u32 {
        match self {
            Self::Legacy => offset_free,
            Self::Current | Self::Buyer => offset_free + 1001,
        }
    }
}

const BAD_PATH: u32 = 1;
const NO_KEY: u32 = 2;
const BAD_KEY: u32 = 3;
const NO_MATCH: u32 = 4;

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// As amoabci's `queryUsage`.
    AsTheNode,
    /// A JSON-RPC error (`-32603`, as Tendermint reports an internal error).
    RpcError,
    /// This ABCI `code`, with a usage of the asker beside it.
    Code(u32),
    /// HTTP 200 with a body cut short.
    Garbage,
    /// This HTTP status, with a grant in the body.
    Status(u16),
    /// A grant, after this long.
    Slow(Duration),
    /// Code 0 and no value.
    NoValue,
    /// Code 0, this JSON text as the value, the query echoed as the key.
    Value(String),
    /// Code 0, the usage of the asker as the value, and this JSON text as
    /// the key (`None`: no key).
    Key(Option<String>),
}

/// One `abci_query` the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `params.path`.
    pub path: String,
    /// `params.data`, hex-decoded.
    pub data: String,
}

impl Query {
    /// The `/usage` query the service should send for `buyer` and `target`.
    pub fn usage(key: &str, buyer: &str, target: &str) -> Self {
        Self {
            path: "/usage".into(),
            data: format!(r#"{{"{key}":"{buyer}","target":"{target}"}}"#),
        }
    }
}

struct State {
    dialect: Dialect,
    answer: Answer,
    /// Granted (address, parcel id), upper-case hex.
    grants: HashSet<(String, String)>,
    queries: Vec<Query>,
    probes: Vec<Query>,
}

/// A running fake node.
#[derive(Clone)]
pub struct FakeChain {
    /// `http://127.0.0.1:PORT/`, for `AMO_CHAIN_RPC`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeChain {
    /// Starts a current amoabci that grants nothing yet.
    pub async fn start() -> Self {
        Self::start_as(Dialect::Current).await
    }

    /// Starts an amoabci of `dialect` that grants nothing yet.
    pub async fn start_as(dialect: Dialect) -> Self {
        let state = Arc::new(Mutex::new(State {
            dialect,
            answer: Answer::AsTheNode,
            grants: HashSet::new(),
            queries: Vec::new(),
            probes: Vec::new(),
        }));
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the fake chain");
        let addr = acceptor.local_addr()[0]
            .as_socket_addr()
            .copied()
            .expect("a socket address");
        let routes = Route::new().at("/", post(rpc)).data(state.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(routes));
        Self {
            url: format!("http://{addr}/"),
            state,
        }
    }

    /// Grants `target` to `buyer` on the fake chain.
    pub fn grant(&self, buyer: &str, target: &str) {
        self.lock()
            .grants
            .insert((buyer.to_uppercase(), target.to_uppercase()));
    }

    /// Takes back a grant of `target` to `buyer`.
    pub fn revoke(&self, buyer: &str, target: &str) {
        self.lock()
            .grants
            .remove(&(buyer.to_uppercase(), target.to_uppercase()));
    }

    /// Answers every later query as `answer` says.
    pub fn answer(&self, answer: Answer) {
        self.lock().answer = answer;
    }

    /// Every query received so far, in order, but the start-up probes.
    pub fn queries(&self) -> Vec<Query> {
        self.lock().queries.clone()
    }

    /// The start-up probes received so far: queries for the zero address.
    pub fn probes(&self) -> Vec<Query> {
        self.lock().probes.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

/// A URL where nothing listens: a port that was free a moment ago.
pub fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

/// The JSON-RPC answer around an ABCI `response`.
fn abci(response: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "result": {"response": response}})
}

/// An ABCI `ResponseQuery` as Tendermint writes it: empty fields left out,
/// `key` and `value` in base64.
fn response(code: u32, log: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Value {
    let mut response = Map::new();
    if code != 0 {
        response.insert("code".into(), code.into());
    }
    if !log.is_empty() {
        response.insert("log".into(), log.into());
    }
    if let Some(key) = key {
        response.insert("key".into(), STANDARD.encode(key).into());
    }
    if let Some(value) = value {
        response.insert("value".into(), STANDARD.encode(value).into());
    }
    response.insert("height".into(), "42".into());
    abci(Value::Object(response))
}

/// `UsageEx` of `address`, as Go marshals it.
fn usage_ex(dialect: Dialect, address: &str) -> String {
    format!(
        r#"{{"custody":"C0FFEE","extra":{{}},"{}":"{address}"}}"#,
        dialect.key()
    )
}

/// amoabci's `queryUsage`, on the query `data` at `path`.
fn query_usage(
    dialect: Dialect,
    path: &str,
    data: &[u8],
    grants: &HashSet<(String, String)>,
) -> Value {
    if path != "/usage" {
        return response(dialect.code(BAD_PATH), "error: unknown path", None, None);
    }
    if data.is_empty() {
        return response(dialect.code(NO_KEY), "error: no query_data", None, None);
    }
    let bad_key = |log: &str| response(dialect.code(BAD_KEY), log, None, None);
    // json.Unmarshal into map[string]bytes.HexBytes: every value a hex string.
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
        return bad_key("error: unmarshal");
    };
    let mut hex_map = std::collections::HashMap::new();
    for (name, value) in map {
        let Some(bytes) = value.as_str().and_then(|text| hex::decode(text).ok()) else {
            return bad_key("error: unmarshal");
        };
        hex_map.insert(name, bytes);
    }
    let Some(address) = hex_map.get(dialect.key()) else {
        return bad_key(&format!("error: {} is missing", dialect.key()));
    };
    let Some(target) = hex_map.get("target") else {
        return bad_key("error: target is missing");
    };
    if address.len() != 20 {
        return bad_key("error: not avaiable address");
    }
    let address = hex::encode_upper(address);
    if !grants.contains(&(address.clone(), hex::encode_upper(target))) {
        return response(dialect.code(NO_MATCH), "error: no usage", None, None);
    }
    let usage = usage_ex(dialect, &address);
    response(0, &usage, Some(data), Some(usage.as_bytes()))
}

fn json_response(status: StatusCode, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.into())
}

/// `params.path`, and `params.data` decoded, of a well-formed `abci_query`.
fn parse_query(body: &[u8]) -> Option<Query> {
    let request: Value = serde_json::from_slice(body).ok()?;
    if request["jsonrpc"] != "2.0" || request["method"] != "abci_query" {
        return None;
    }
    let path = request["params"]["path"].as_str()?.to_owned();
    let data = hex::decode(request["params"]["data"].as_str()?).ok()?;
    Some(Query {
        path,
        data: String::from_utf8(data).ok()?,
    })
}

/// The address the query names, under either key.
fn asker(query: &Query) -> String {
    let key: Value = serde_json::from_str(&query.data).unwrap_or_default();
    let address = key.get("recipient").or_else(|| key.get("buyer"));
    address
        .and_then(Value::as_str)
        .unwrap_or(ZERO_ADDRESS)
        .to_uppercase()
}

#[handler]
async fn rpc(state: Data<&Arc<Mutex<State>>>, body: bytes::Bytes) -> Response {
    let Some(query) = parse_query(&body) else {
        let error = json!({"jsonrpc": "2.0", "id": -1,
                           "error": {"code": -32600, "message": "Invalid Request"}});
        return json_response(StatusCode::OK, error.to_string());
    };
    let (dialect, answer, as_the_node) = {
        let mut state = state.lock().unwrap();
        if query.data.contains(ZERO_ADDRESS) {
            state.probes.push(query.clone());
        } else {
            state.queries.push(query.clone());
        }
        let as_the_node = query_usage(
            state.dialect,
            &query.path,
            query.data.as_bytes(),
            &state.grants,
        );
        (state.dialect, state.answer.clone(), as_the_node)
    };
    let data = query.data.as_bytes();
    let own_usage = usage_ex(dialect, &asker(&query));
    let granted = || response(0, "", Some(data), Some(own_usage.as_bytes()));
    let body = match answer {
        Answer::AsTheNode => as_the_node,
        Answer::RpcError => {
            json!({"jsonrpc": "2.0", "id": 1, "error":
                {"code": -32603, "message": "Internal error", "data": "node is catching up"}})
        }
        Answer::Code(code) => response(code, "error: refused", Some(data), Some(own_usage.as_bytes())),
        Answer::Garbage => {
            let text = granted().to_string();
            return json_response(StatusCode::OK, &text[..text.len() / 2]);
        }
        Answer::Status(status) => {
            return json_response(StatusCode::from_u16(status).unwrap(), granted().to_string());
        }
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            granted()
        }
        Answer::NoValue => response(0, "", Some(data), None),
        Answer::Value(value) => response(0, "", Some(data), Some(value.as_bytes())),
        Answer::Key(key) => response(
            0,
            "",
            key.as_ref().map(String::as_bytes),
            Some(own_usage.as_bytes()),
        ),
    };
    json_response(StatusCode::OK, body.to_string())
}
