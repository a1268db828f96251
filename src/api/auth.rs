//! `POST /api/v1/auth` and `POST /api/v2/auth`: one-time tokens.

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::{ApiTags, bounded::bounded, client::Client, types::RequestedOperation};
use crate::{auth::Authorizer, domain::Address, error::ApiResult, limits::RateLimiter};

/// A token request.
#[derive(Debug, Clone, Object)]
pub struct AuthRequest {
    /// The account that will sign the token.
    pub user: Address,
    /// The operation: a bare name (`"upload"`, `"download"`, `"remove"`), or
    /// an object limiting the token: `{"name":"upload","hash":<SHA-256 hex of
    /// the body>}`, `{"name":"download","id":<parcel id>}`,
    /// `{"name":"remove","id":<parcel id>}`; an object always carries its
    /// `hash` or `id` (else 400). A v2 upload needs `hash`.
    pub operation: RequestedOperation,
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
    limiter: RateLimiter,
}

impl AuthApi {
    /// The endpoints over `authorizer`, within `limiter`'s rate limits.
    pub fn new(authorizer: Authorizer, limiter: RateLimiter) -> Self {
        Self {
            authorizer,
            limiter,
        }
    }

    async fn issue(&self, client: Client, request: AuthRequest) -> ApiResult<AuthResponse> {
        let user = request.user;
        self.limiter.admit_token_request(client.0).await?;
        let issued = self
            .authorizer
            .issue(&user, client.0, request.operation.sent)
            .await?;
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
    #[oai(
        path = "/api/v1/auth",
        method = "post",
        operation_id = "auth_v1",
        transform = "bounded"
    )]
    async fn auth_v1(&self, client: Client, request: Json<AuthRequest>) -> ApiResult<AuthResponse> {
        self.issue(client, request.0).await
    }

    /// Get a one-time token (v2 path)
    ///
    /// The same as `POST /api/v1/auth`.
    #[oai(
        path = "/api/v2/auth",
        method = "post",
        operation_id = "auth_v2",
        transform = "bounded"
    )]
    async fn auth_v2(&self, client: Client, request: Json<AuthRequest>) -> ApiResult<AuthResponse> {
        self.issue(client, request.0).await
    }
}
