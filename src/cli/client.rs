//! The HTTP side: one-time tokens, the proof headers, and turning error
//! answers into [`CliError::Server`].

use std::time::Duration;

use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};

use super::{
    error::{CliError, CliResult},
    key::AccountKey,
};
use crate::auth::bound::UploadRequest;

/// The most of an error answer's body that is read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// A client of one service.
pub struct StorageClient {
    http: reqwest::Client,
    base: String,
}

/// The three headers that carry a token and its proof of possession.
pub struct Proof {
    token: String,
    public_key: String,
    signature: String,
}

impl Proof {
    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Adds `X-Auth-Token`, `X-Public-Key` and `X-Signature` to `request`.
    pub fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .header("X-Auth-Token", &self.token)
            .header("X-Public-Key", &self.public_key)
            .header("X-Signature", &self.signature)
    }
}

impl StorageClient {
    /// A client for the service at `endpoint` (an `http://` or `https://`
    /// base URL; a trailing `/` is ignored).
    pub fn new(endpoint: &str) -> CliResult<Self> {
        let parsed = url::Url::parse(endpoint).map_err(|err| {
            CliError::failed(format!("endpoint {endpoint:?} is not a URL: {err}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(CliError::failed(format!(
                "endpoint {endpoint:?} is not an http:// or https:// URL"
            )));
        }
        // No total timeout: a parcel may take hours. A stalled connection
        // still ends, through the read timeout.
        let http = reqwest::Client::builder()
            .tls_backend_rustls()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("amo-storage-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| {
                CliError::failed(format!(
                    "cannot start the HTTP client: {}",
                    super::error::error_chain(&err)
                ))
            })?;
        Ok(Self {
            http,
            base: endpoint.trim_end_matches('/').to_owned(),
        })
    }

    /// The underlying HTTP client, to build requests with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Gets a one-time token for `operation` of the key's account
    /// (`POST /api/v2/auth`) and signs it.
    pub async fn prove(&self, key: &AccountKey, operation: Value) -> CliResult<Proof> {
        let request = self.http.post(self.url("/api/v2/auth")).json(&json!({
            "user": key.address().as_str(),
            "operation": operation,
        }));
        let answer: Value = json_body(send(request).await?).await?;
        let token = answer
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| CliError::failed("the service's token answer has no \"token\""))?
            .to_owned();
        Ok(self.proof_for(key, &token))
    }

    /// The proof headers of `token`, signed with `key`.
    pub fn proof_for(&self, key: &AccountKey, token: &str) -> Proof {
        Proof {
            signature: key.sign_token(token),
            public_key: key.public_key_hex(),
            token: token.to_owned(),
        }
    }

    /// The proof of `request` on the resumable upload `upload` (its id)
    /// with the bound `token`: the signature covers the request
    /// (docs/protocol.md, "Signing a request on an upload").
    pub fn proof_of_request(
        &self,
        key: &AccountKey,
        token: &str,
        upload: &str,
        request: UploadRequest,
    ) -> Proof {
        Proof {
            signature: key.sign_text(&request.signed_text(upload, token)),
            public_key: key.public_key_hex(),
            token: token.to_owned(),
        }
    }
}

/// Sends `request`; an answer with a status other than 2xx becomes
/// [`CliError::Server`] with the service's `error` text.
pub async fn send(request: RequestBuilder) -> CliResult<Response> {
    let (client, request) = request.build_split();
    let request = request.map_err(|err| CliError::request("the service", err))?;
    let url = request.url().to_string();
    let response = client
        .execute(request)
        .await
        .map_err(|err| CliError::request(&url, err))?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = read_limited(response, ERROR_BODY_LIMIT).await;
    Err(CliError::from_answer(status, &body))
}

/// The JSON body of a successful answer.
pub async fn json_body(response: Response) -> CliResult<Value> {
    let url = response.url().to_string();
    response.json().await.map_err(|err| {
        CliError::failed(format!(
            "the answer of {url} is not JSON: {}",
            super::error::error_chain(&err)
        ))
    })
}

/// At most `limit` bytes of the body as text (lossy); what could not be
/// read is left out.
async fn read_limited(mut response: Response, limit: usize) -> String {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(limit);
    String::from_utf8_lossy(&body).into_owned()
}
