//! A stand-in for an AMO node's Tendermint JSON-RPC endpoint, in-process on
//! `127.0.0.1:0`, for the grant tests.
//!
//! **Request** (the one form the service sends): `POST /` with
//!
//! ```json
//! {"jsonrpc":"2.0","id":1,"method":"abci_query","params":{"path":"/usage","data":"<HEX>"}}
//! ```
//!
//! where `<HEX>` is the hex of `{"buyer":"<address>","target":"<parcel id>"}`
//! (or `recipient` for `buyer`). Every such request is recorded as a
//! [`Query`] (its `path` and decoded `data`) before it is answered; a request
//! of any other shape gets a JSON-RPC error, so a service that asks wrongly
//! fails its test.
//!
//! **Answer**, as [`Answer`] says:
//! - [`Answer::Grants`]: for a pair granted with [`FakeChain::grant`],
//!   `{"jsonrpc":"2.0","id":1,"result":{"response":{"code":0,"log":"","info":"",
//!   "index":"0","key":null,"value":"<base64 usage JSON>","height":"42",
//!   "codespace":""}}}`; for any other, amoabci's "no usage": `code` 4,
//!   `log` `"error: no usage"`, no `value`.
//! - The failure modes answer something that must never count as a grant,
//!   each carrying a grant-looking usage where it can: a JSON-RPC `error`, a
//!   non-zero `code` other than 4, a status other than 200, a truncated body,
//!   or a grant sent only after a delay.

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
use serde_json::{Value, json};

/// How the fake answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A usage for granted pairs, "no usage" (code 4) for the others.
    Grants,
    /// A JSON-RPC error (`-32603`, as Tendermint reports an internal error).
    RpcError,
    /// An ABCI `code` other than 0 and 4, with a usage beside it.
    Code(u32),
    /// HTTP 200 with a body cut short.
    Garbage,
    /// This HTTP status, with a grant in the body.
    Status(u16),
    /// A grant, after this long.
    Slow(Duration),
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
    answer: Answer,
    grants: HashSet<(String, String)>,
    queries: Vec<Query>,
}

/// A running fake node.
#[derive(Clone)]
pub struct FakeChain {
    /// `http://127.0.0.1:PORT/`, for `AMO_CHAIN_RPC`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeChain {
    /// Starts a fake that grants nothing yet.
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            answer: Answer::Grants,
            grants: HashSet::new(),
            queries: Vec::new(),
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
        self.lock().grants.insert((buyer.into(), target.into()));
    }

    /// Answers every later query as `answer` says.
    pub fn answer(&self, answer: Answer) {
        self.lock().answer = answer;
    }

    /// Every query received so far, in order.
    pub fn queries(&self) -> Vec<Query> {
        self.lock().queries.clone()
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

/// A usage, as a node's `value`.
fn usage_value() -> String {
    STANDARD.encode(r#"{"custody":"","exp":"2030-01-01T00:00:00Z"}"#)
}

fn granted() -> Value {
    abci(
        json!({"code": 0, "log": "", "info": "", "index": "0", "key": null,
                "value": usage_value(), "height": "42", "codespace": ""}),
    )
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

/// Whether `query` asks for a usage the fake grants.
fn is_granted(query: &Query, grants: &HashSet<(String, String)>) -> bool {
    let Ok(key) = serde_json::from_str::<Value>(&query.data) else {
        return false;
    };
    let buyer = key.get("buyer").or_else(|| key.get("recipient"));
    match (buyer.and_then(Value::as_str), key["target"].as_str()) {
        (Some(buyer), Some(target)) => {
            query.path == "/usage" && grants.contains(&(buyer.to_owned(), target.to_owned()))
        }
        _ => false,
    }
}

#[handler]
async fn rpc(state: Data<&Arc<Mutex<State>>>, body: bytes::Bytes) -> Response {
    let Some(query) = parse_query(&body) else {
        let error = json!({"jsonrpc": "2.0", "id": -1,
                           "error": {"code": -32600, "message": "Invalid Request"}});
        return json_response(StatusCode::OK, error.to_string());
    };
    let (answer, granted_here) = {
        let mut state = state.lock().unwrap();
        state.queries.push(query.clone());
        (state.answer.clone(), is_granted(&query, &state.grants))
    };
    let usage = |granted_here: bool| {
        if granted_here {
            granted()
        } else {
            abci(json!({"code": 4, "log": "error: no usage", "height": "42"}))
        }
    };
    match answer {
        Answer::Grants => json_response(StatusCode::OK, usage(granted_here).to_string()),
        Answer::RpcError => {
            let error = json!({"jsonrpc": "2.0", "id": 1, "error":
                {"code": -32603, "message": "Internal error", "data": "node is catching up"}});
            json_response(StatusCode::OK, error.to_string())
        }
        Answer::Code(code) => {
            let refused = abci(json!({"code": code, "log": "error: bad key",
                                      "value": usage_value()}));
            json_response(StatusCode::OK, refused.to_string())
        }
        Answer::Garbage => {
            let text = granted().to_string();
            json_response(StatusCode::OK, &text[..text.len() / 2])
        }
        Answer::Status(status) => {
            json_response(StatusCode::from_u16(status).unwrap(), granted().to_string())
        }
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            json_response(StatusCode::OK, granted().to_string())
        }
    }
}
