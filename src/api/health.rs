//! `GET /healthz` (liveness) and `GET /readyz` (readiness).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{error::ErrorBody, state::Shared, storage::Store};

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

/// Set once the replica shuts down: from then on it is not ready.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// The replica shuts down.
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it does.
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The health endpoints.
pub struct HealthApi {
    state: Shared,
    store: Store,
    draining: Draining,
}

impl HealthApi {
    /// Health over the shared state and the parcel store.
    pub fn new(state: Shared, store: Store, draining: Draining) -> Self {
        Self {
            state,
            store,
            draining,
        }
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
    /// Answers 200 when the shared state (Redis) answers PING and the
    /// parcel store (the S3 bucket) answers, 503 with the reason otherwise,
    /// and 503 from the moment the replica begins to shut down.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadinessResponse {
        if self.draining.is_draining() {
            return ReadinessResponse::NotReady(ErrorBody::new(
                "shutting down: finishing the requests in flight",
                "not_ready",
            ));
        }
        let (state, store) = tokio::join!(
            probe(self.state.kind(), self.state.ping()),
            probe(self.store.kind(), self.store.check())
        );
        let problems: Vec<String> = state.into_iter().chain(store).collect();
        if problems.is_empty() {
            ReadinessResponse::Ready(Json(HealthStatus {
                status: "ok".into(),
            }))
        } else {
            ReadinessResponse::NotReady(ErrorBody::new(problems.join("; "), "not_ready"))
        }
    }
}
