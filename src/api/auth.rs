//! `POST /api/v1/auth` and `POST /api/v2/auth`: one-time tokens.

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde_json::Value;

use super::ApiTags;
use crate::{
    auth::Authorizer,
    domain::Address,
    error::{ApiResult, Error},
};

/// A token request.
#[derive(Debug, Clone, Object)]
pub struct AuthRequest {
    /// The account address: 40 hex digits (any case).
    pub user: String,
    /// The operation: a bare name (`"upload"`, `"download"`, `"remove"`), or
    /// an object limiting the token: `{"name":"upload","hash":<SHA-256 hex of
    /// the body>}`, `{"name":"download","id":<parcel id>}`,
    /// `{"name":"remove","id":<parcel id>}`. A v2 upload needs `hash`.
    pub operation: Value,
}

/// A new token.
#[derive(Debug, Clone, Object)]
pub struct AuthToken {
    /// The JWT. Sign its ASCII bytes with the account's P-256 key and send it
    /// back in `X-Auth-Token`, with `X-Public-Key` and `X-Signature`. It works
    /// once, until it expires.
    pub token: String,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

/// Answers of the token endpoints.
#[derive(ApiResponse)]
pub enum AuthResponse {
    /// A token was issued.
    #[oai(status = 200)]
    Issued(Json<AuthToken>),
}

/// The token endpoints.
pub struct AuthApi {
    authorizer: Authorizer,
}

impl AuthApi {
    /// The endpoints over `authorizer`.
    pub fn new(authorizer: Authorizer) -> Self {
        Self { authorizer }
    }

    async fn issue(&self, request: AuthRequest) -> ApiResult<AuthResponse> {
        let user = Address::parse(&request.user)
            .map_err(|err| Error::BadRequest(format!("user: {err}")))?;
        let issued = self.authorizer.issue(&user, request.operation).await?;
        Ok(AuthResponse::Issued(Json(AuthToken {
            token: issued.jwt,
            expires_at: issued.claims.exp,
        })))
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl AuthApi {
    /// Get a one-time token
    ///
    /// Issues a token for `user` to perform `operation` once. Tokens from
    /// v1 and v2 are the same and work on either API.
    #[oai(path = "/api/v1/auth", method = "post", operation_id = "auth_v1")]
    async fn auth_v1(&self, request: Json<AuthRequest>) -> ApiResult<AuthResponse> {
        self.issue(request.0).await
    }

    /// Get a one-time token (v2 path)
    ///
    /// The same as `POST /api/v1/auth`.
    #[oai(path = "/api/v2/auth", method = "post", operation_id = "auth_v2")]
    async fn auth_v2(&self, request: Json<AuthRequest>) -> ApiResult<AuthResponse> {
        self.issue(request.0).await
    }
}
