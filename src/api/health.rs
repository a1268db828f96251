//! `GET /healthz` (liveness), `GET /readyz` (readiness of this replica) and
//! `GET /status/backends` (the shared backends, for operators).
//!
//! Readiness reports only what is particular to this replica: it answers
//! and it is not draining. Load never makes it unready (a full replica
//! refuses uploads one request at a time, 503 `busy`). Redis and S3
//! are shared by every replica: an outage of theirs would take every replica
//! out of rotation at once, and the load balancer would then answer its own
//! error pages instead of the service's JSON 503s (with `Retry-After`), and
//! inspect, which works without Redis, would stop too. So the backends are
//! reported by `/status/backends`, by `amo_backend_errors_total`, and by the
//! 503s of the requests that need them, never by `/readyz`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{
    error::{ErrorBody, RETRY_AFTER_UNAVAILABLE, with_sources},
    state::{RedisNodeReport, Shared},
    storage::Store,
};

/// How long the backend check waits for each backend.
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
    /// The request head is too large (`headers_too_large`): the HTTP layer
    /// answers it before this operation runs, as on every route.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
}

/// Readiness answers.
#[derive(ApiResponse)]
pub enum ReadinessResponse {
    /// This replica takes new requests.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// This replica is shutting down, or streams as many uploads as it may
    /// (`AMO_MAX_CONCURRENT_UPLOADS`); `error` says which.
    #[oai(status = 503)]
    NotReady(
        Json<ErrorBody>,
        /// Seconds to wait before asking again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The request head is too large (`headers_too_large`): the HTTP layer
    /// answers it before this operation runs, as on every route.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
}

/// `/status/backends` when the backends answer.
#[derive(Debug, Clone, Object)]
pub struct BackendsStatus {
    /// Always `ok`.
    pub status: String,
    /// What each Redis primary says of its eviction policy, persistence and
    /// replicas (one entry for a single server); absent for the embedded
    /// state.
    #[oai(skip_serializing_if_is_none)]
    pub redis: Option<Vec<RedisNodeReport>>,
}

/// Backend check answers.
#[derive(ApiResponse)]
pub enum BackendsResponse {
    /// Redis and S3 both answer, and Redis keeps its keys
    /// (`maxmemory-policy` `noeviction`, or `AMO_REDIS_ALLOW_EVICTION`).
    #[oai(status = 200)]
    Up(Json<BackendsStatus>),
    /// Redis or S3 does not answer, or Redis may evict keys; `error` says
    /// which, and why.
    #[oai(status = 503)]
    Down(
        Json<ErrorBody>,
        /// Seconds to wait before asking again.
        #[oai(header = "Retry-After")]
        u64,
    ),
    /// The request head is too large (`headers_too_large`): the HTTP layer
    /// answers it before this operation runs, as on every route.
    #[oai(status = 431)]
    HeadersTooLarge(Json<ErrorBody>),
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
    /// Health of this replica (`draining`) and of the shared state and
    /// parcel store.
    pub fn new(state: Shared, store: Store, draining: Draining) -> Self {
        Self {
            state,
            store,
            draining,
        }
    }
}

async fn probe<F, E>(name: &str, check: F) -> Option<String>
where
    F: Future<Output = Result<(), E>>,
    E: std::error::Error,
{
    match tokio::time::timeout(PROBE_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{name}: {}", with_sources(&err))),
        Err(_) => Some(format!("{name}: no answer within {PROBE_TIMEOUT:?}")),
    }
}

fn ok() -> Json<HealthStatus> {
    Json(HealthStatus {
        status: "ok".into(),
    })
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// Answers 200 while the process serves requests.
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> LivenessResponse {
        LivenessResponse::Alive(ok())
    }

    /// Readiness of this replica
    ///
    /// Answers 200 while this replica takes new requests; 503 only while it
    /// shuts down. Load never makes it 503: a replica whose upload slots
    /// are all held still serves downloads, inspections and tokens, and
    /// refuses uploads one by one (503 `busy`, `Retry-After`); its in-flight
    /// gauges (`amo_in_flight`) say how full it is. Contacts no backend:
    /// Redis and S3 are shared by every replica, and their outages are
    /// answered by the requests that need them (503 with `Retry-After`) and
    /// reported by `/status/backends` and the metrics.
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self) -> ReadinessResponse {
        if self.draining.is_draining() {
            return ReadinessResponse::NotReady(
                ErrorBody::new(
                    "shutting down: finishing the requests in flight",
                    "not_ready",
                ),
                RETRY_AFTER_UNAVAILABLE,
            );
        }
        ReadinessResponse::Ready(ok())
    }

    /// Backend status
    ///
    /// Answers 200 when the shared state (Redis) answers PING and the parcel
    /// store (the S3 bucket) answers, 503 with the reason otherwise. With
    /// Redis, the answer gives each primary's `maxmemory-policy`,
    /// persistence (AOF, RDB snapshots) and connected replicas, and is 503
    /// when a primary may evict keys (unless `AMO_REDIS_ALLOW_EVICTION`). For
    /// operators and monitoring; not a probe: every replica shares these
    /// backends, so a failure here must not take replicas out of rotation.
    #[oai(
        path = "/status/backends",
        method = "get",
        operation_id = "backends_status"
    )]
    async fn backends(&self) -> BackendsResponse {
        let kind = self.state.kind();
        let state = async {
            if let Some(problem) = probe(kind, self.state.ping()).await {
                return (Some(problem), None);
            }
            match tokio::time::timeout(PROBE_TIMEOUT, self.state.redis_report()).await {
                Ok(Ok(Some(report))) => (
                    report.refusal().map(|refusal| format!("{kind}: {refusal}")),
                    Some(report.nodes),
                ),
                Ok(Ok(None)) => (None, None),
                Ok(Err(err)) => (Some(format!("{kind}: {}", with_sources(&err))), None),
                Err(_) => (
                    Some(format!("{kind}: no report within {PROBE_TIMEOUT:?}")),
                    None,
                ),
            }
        };
        let ((state, redis), store) =
            tokio::join!(state, probe(self.store.kind(), self.store.check()));
        let problems: Vec<String> = state.into_iter().chain(store).collect();
        if problems.is_empty() {
            BackendsResponse::Up(Json(BackendsStatus {
                status: "ok".into(),
                redis,
            }))
        } else {
            BackendsResponse::Down(
                ErrorBody::new(problems.join("; "), "unavailable"),
                RETRY_AFTER_UNAVAILABLE,
            )
        }
    }
}
