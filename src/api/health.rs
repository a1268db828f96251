//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use std::time::Duration;

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{auth::Authorizer, error::ErrorBody, storage::S3Store};

/// How long a readiness probe waits for each backend.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `{"status": "ok"}`.
#[derive(Debug, Clone, Object)]
pub struct HealthStatus {
    /// Always `ok`.
    pub status: String,
}

/// Liveness answers.
#[derive(ApiResponse)]
pub enum LivenessResponse {
    /// The process serves requests.
    #[oai(status = 200)]
    Alive(Json<HealthStatus>),
}

/// Readiness answers.
#[derive(ApiResponse)]
pub enum ReadinessResponse {
    /// Redis and S3 both answer.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// Redis or S3 does not answer; `error` says which, and why.
    #[oai(status = 503)]
    NotReady(Json<ErrorBody>),
}

/// The health endpoints.
pub struct HealthApi {
    authorizer: Authorizer,
    store: S3Store,
}

impl HealthApi {
    /// Health over the token store and the parcel store.
    pub fn new(authorizer: Authorizer, store: S3Store) -> Self {
        Self { authorizer, store }
    }
}

async fn probe<F>(name: &str, check: F) -> Option<String>
where
    F: Future<Output = Result<(), crate::error::Error>>,
{
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(crate::error::Error::Unavailable { detail, .. })) => {
            Some(format!("{name}: {detail}"))
        }
        Ok(Err(err)) => Some(format!("{name}: {err}")),
        Err(_) => Some(format!("{name}: no answer within {PROBE_TIMEOUT:?}")),
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// Answers 200 while the process serves requests.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> LivenessResponse {
        LivenessResponse::Alive(Json(HealthStatus {
            status: "ok".into(),
        }))
    }

    /// Readiness
    ///
    /// Answers 200 when Redis answers PING and the S3 bucket answers
    /// HeadBucket, 503 with the reason otherwise.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadinessResponse {
        let (redis, s3) = tokio::join!(
            probe("redis", self.authorizer.store().redis().ping()),
            probe("s3", self.store.check())
        );
        let problems: Vec<String> = redis.into_iter().chain(s3).collect();
        if problems.is_empty() {
            ReadinessResponse::Ready(Json(HealthStatus {
                status: "ok".into(),
            }))
        } else {
            ReadinessResponse::NotReady(ErrorBody::new(problems.join("; "), "not_ready"))
        }
    }
}
