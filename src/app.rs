//! Builds the service from its settings: state, routes, the OpenAPI spec,
//! and the server loop.

use std::{future::Future, io, net::SocketAddr, sync::Arc};

use poem::{Endpoint, EndpointExt, IntoEndpoint, Route, middleware::CatchPanic};
use poem_openapi::{LicenseObject, OpenApiService, ServerObject};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::{
    api::{
        auth::AuthApi,
        body::{V1BodyLimit, V1BodyTimeouts},
        client::ClientPolicy,
        health::{Draining, HealthApi},
        parcels_v1::ParcelsV1Api,
        parcels_v2::ParcelsV2Api,
        proof::WithProof,
        uploads::UploadsApi,
    },
    auth::{Authorizer, jwt::TokenCodec, tokens::TokenStore},
    chain::Chain,
    config::{Settings, StateBackend, StoreBackend},
    limits::RateLimiter,
    parcels::{Limits, Parcels, SweepTiming},
    routes::Routes,
    serve::ConnectionLimits,
    state::{MemoryState, RedisState, Shared},
    storage::{BucketError, DirStore, S3Keys, S3Store, Store},
};

/// Where the spec is served.
pub const SPEC_PATH: &str = "/api/openapi.json";

type Apis = (AuthApi, ParcelsV1Api, ParcelsV2Api, UploadsApi, HealthApi);

/// The backends of a replica: the state it shares with other replicas, and
/// its parcel store.
#[derive(Clone)]
pub struct Backends {
    /// Tokens, write locks and limits.
    pub state: Shared,
    /// Parcels.
    pub store: Store,
    /// The S3 keys the store signs with, when it is an S3 store: reloaded
    /// from their key file while the replica runs.
    pub s3_keys: Option<S3Keys>,
}

impl Backends {
    /// The backends `settings` name. Contacts nothing; opens the data
    /// directory of the embedded store (and cleans up its unfinished
    /// uploads).
    pub fn from_settings(settings: &Settings) -> io::Result<Self> {
        let state: Shared = match &settings.state {
            StateBackend::Redis(config) => Arc::new(RedisState::new(config.clone())),
            StateBackend::Embedded => Arc::new(MemoryState::new()),
        };
        let mut s3_keys = None;
        let store: Store = match &settings.store {
            StoreBackend::S3(config) => {
                let store = S3Store::new(config).with_timeout(settings.s3_timeout);
                s3_keys = Some(store.keys().clone());
                Arc::new(store)
            }
            StoreBackend::Directory(dir) => Arc::new(DirStore::open(dir).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("data directory {}: {err}", dir.display()),
                )
            })?),
        };
        if matches!(settings.state, StateBackend::Embedded) {
            tracing::warn!(
                "embedded mode: tokens are kept in this process (AMO_REDIS_URL is unset), so \
                 this replica must be the only one; set AMO_REDIS_URL to run several"
            );
        }
        if let StoreBackend::Directory(dir) = &settings.store {
            tracing::info!(dir = %dir.display(), "parcels are kept in a local directory (AMO_S3_ENDPOINT is unset)");
        }
        Ok(Self {
            state,
            store,
            s3_keys,
        })
    }
}

/// How long each S3 request of the start-up checks may take.
pub const START_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What start-up checks of the store: an S3 bucket must exist (or is
/// created, `AMO_S3_CREATE_BUCKET`), and should have its lifecycle rules
/// (a warning otherwise). S3 that does not answer is logged, not an error,
/// and delays the start by [`START_CHECK_TIMEOUT`] at most per request.
pub async fn check_store_at_start(settings: &Settings) -> Result<(), BucketError> {
    match &settings.store {
        StoreBackend::S3(config) => {
            S3Store::new(config)
                .with_timeout(settings.s3_timeout.min(START_CHECK_TIMEOUT))
                .check_bucket_at_start(settings.s3_create_bucket)
                .await
        }
        StoreBackend::Directory(_) => Ok(()),
    }
}

/// The shared parts every API is built on.
struct State {
    authorizer: Authorizer,
    parcels: Parcels,
    limiter: RateLimiter,
    draining: Draining,
}

impl State {
    fn new(settings: &Settings, backends: &Backends, draining: Draining) -> Self {
        let codec = TokenCodec::new(
            settings.jwt_secret.expose_secret().as_bytes(),
            &settings.jwt_issuer,
            settings.storage_id,
            settings.token_ttl,
        )
        .verifying(
            settings
                .jwt_previous_secrets
                .iter()
                .map(|secret| secret.expose_secret().as_bytes()),
        )
        .writing_kid(settings.jwt_write_kid);
        tracing::info!(
            signing = codec.signing_kid(),
            verifying = ?codec.verifying_kids(),
            "JWT keys (by kid)"
        );
        let authorizer = Authorizer::new(
            codec,
            TokenStore::new(
                backends.state.clone(),
                settings.limits.max_outstanding_tokens,
                settings.lease,
            ),
        );
        let limits = Limits {
            metadata_max_bytes: settings.metadata_max_bytes,
            whole_body_max_bytes: settings.v1_max_data_bytes,
            max_parcel_bytes: settings.max_parcel_bytes,
            part_size: settings.s3_part_size_bytes,
            max_part_size: settings.s3_max_part_size_bytes,
            body_idle_timeout: settings.body_idle_timeout,
            max_concurrent_uploads: settings.limits.max_concurrent_uploads,
            max_concurrent_downloads: settings.limits.max_concurrent_downloads,
            v1_upload_memory_bytes: settings.limits.v1_upload_memory_bytes,
            v1_body_max_bytes: crate::config::v1_body_limit(
                settings.v1_max_data_bytes,
                settings.metadata_max_bytes,
            ),
            client_share_percent: settings.limits.client_share_percent,
            lease: settings.lease,
            single_put_max_bytes: settings.s3_single_put_max_bytes,
            store_timeout: settings.s3_timeout,
            upload_lifetime: settings.upload_lifetime,
            upload_idle: settings.upload_idle,
            max_open_uploads_per_account: settings.max_open_uploads_per_account,
            max_open_uploads_per_client: settings.max_open_uploads_per_client,
            token_markers: settings.token_markers,
        };
        let chain = settings.chain.as_ref().map(|config| {
            let chain = Chain::new(config);
            chain.probe_in_background();
            chain
        });
        let parcels = Parcels::new(
            backends.store.clone(),
            backends.state.clone(),
            chain,
            settings.storage_id,
            limits,
        );
        Self {
            authorizer,
            parcels,
            limiter: RateLimiter::new(backends.state.clone(), settings.limits),
            draining,
        }
    }

    fn apis(&self) -> Apis {
        (
            AuthApi::new(self.authorizer.clone(), self.limiter.clone()),
            ParcelsV1Api::new(self.authorizer.clone(), self.parcels.clone()),
            ParcelsV2Api::new(self.authorizer.clone(), self.parcels.clone()),
            UploadsApi::new(self.authorizer.clone(), self.parcels.clone()),
            HealthApi::new(
                self.authorizer.store().state().clone(),
                self.parcels.store().clone(),
                self.draining.clone(),
            ),
        )
    }
}

fn service(apis: Apis) -> OpenApiService<WithProof<Apis>, ()> {
    OpenApiService::new(
        WithProof(apis),
        "AMO storage service",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Data parcels of the AMO blockchain, stored in Ceph through S3. Get a one-time \
         token from /auth, sign it with the account's P-256 key, and send it with \
         X-Auth-Token, X-Public-Key and X-Signature to upload, download or remove a \
         parcel. Every error answers JSON {\"error\", \"code\"}.",
    )
    // Relative: the spec describes the host that serves it.
    .server(ServerObject::new("/").description("the service that serves this spec"))
    // Cargo.toml's `license`; OpenAPI 3.0 names a license by URL.
    .license(
        LicenseObject::new(env!("CARGO_PKG_LICENSE"))
            .url("https://www.apache.org/licenses/LICENSE-2.0"),
    )
}

/// The OpenAPI document the code describes, as pretty JSON. Contacts nothing.
pub fn openapi_spec() -> String {
    let backends = Backends {
        state: Arc::new(MemoryState::new()),
        store: Arc::new(S3Store::new(&crate::storage::S3Config {
            endpoint: "http://127.0.0.1:1".into(),
            region: "us-east-1".into(),
            bucket: "amo".into(),
            prefix: String::new(),
            access_key: String::new(),
            secret_key: String::new().into(),
            key_file: None,
            key_file_poll: std::time::Duration::from_secs(5),
        })),
        s3_keys: None,
    };
    crate::api::spec::finish(
        &service(State::new(&Settings::offline(), &backends, Draining::default()).apis()).spec(),
    )
}

/// The whole HTTP application for `settings` on `backends`.
pub fn endpoint(
    settings: &Settings,
    backends: &Backends,
    draining: Draining,
) -> impl Endpoint + 'static {
    let state = State::new(settings, backends, draining);
    let service = service(state.apis());
    let published = crate::api::spec::finish(&service.spec());
    let routes = Routes::from_spec(&published);
    let policy = ClientPolicy {
        trust_forwarded_for: settings.limits.trust_forwarded_for,
    };
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(published.clone())
    });
    let docs = service.swagger_ui();
    Route::new()
        .nest("/", service)
        .at(SPEC_PATH, spec)
        .at(
            "/metrics",
            poem::endpoint::make_sync(|_| crate::metrics::render()),
        )
        .nest("/docs", docs)
        .data(V1BodyLimit(crate::config::v1_body_limit(
            settings.v1_max_data_bytes,
            settings.metadata_max_bytes,
        )))
        .data(policy)
        .data(V1BodyTimeouts {
            idle: settings.body_idle_timeout,
            deadline: settings.body_deadline,
        })
        .with(CatchPanic::new())
        .around({
            let routes = routes.clone();
            move |endpoint, request| {
                let routes = routes.clone();
                // tus's rules outside the JSON errors: every tus answer,
                // a JSON error included, carries Tus-Resumable.
                async move {
                    let served = crate::api::tus::tus_protocol(request, |request| {
                        Box::pin(crate::error::json_errors(endpoint, request, &routes))
                    });
                    Ok(served.await)
                }
            }
        })
        .around({
            // Outside the JSON errors, so that a page reads them; inside
            // the observation, so that preflights are logged and counted.
            let routes = routes.clone();
            let origins = Arc::new(settings.cors.clone());
            move |endpoint, request| {
                let routes = routes.clone();
                let origins = origins.clone();
                async move { Ok(crate::cors::cors(endpoint, request, &origins, &routes).await) }
            }
        })
        .around(move |endpoint, request| {
            let routes = routes.clone();
            async move { Ok(crate::observe::observe(endpoint, request, &routes, policy).await) }
        })
}

/// A bound, ready-to-run service.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: Settings,
    backends: Backends,
    draining: Draining,
    /// SIGHUP, listened for from the bind on (so that it never kills a
    /// bound replica), when there are S3 keys to reload.
    hangup: Option<tokio::signal::unix::Signal>,
}

impl App {
    /// Binds `addr` (port 0 picks a free port) for `settings`, with the
    /// backends they name.
    pub async fn bind(settings: Settings, addr: &str) -> io::Result<Self> {
        let backends = Backends::from_settings(&settings)?;
        Self::bind_with(settings, backends, addr).await
    }

    /// Binds `addr` for `settings`, on `backends` (which replicas in one
    /// process may share).
    pub async fn bind_with(settings: Settings, backends: Backends, addr: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let hangup = match &backends.s3_keys {
            Some(_) => Some(tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            )?),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            settings,
            backends,
            draining: Draining::default(),
            hangup,
        })
    }

    /// The start-up check of the shared state: logs what Redis says of its
    /// eviction policy, persistence and replicas, and answers why the
    /// service must not run on it, if it must not (a `maxmemory-policy`
    /// other than `noeviction`, unless `AMO_REDIS_ALLOW_EVICTION`). A Redis
    /// that cannot be reached now, or refuses `CONFIG`, is logged and not
    /// refused: the service starts while Redis is down.
    pub async fn check_state(&self) -> Result<(), String> {
        let report = match self.backends.state.redis_report().await {
            Ok(Some(report)) => report,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::warn!(
                    err = %crate::error::with_sources(&err),
                    "cannot check Redis at start (maxmemory-policy, persistence, replicas); \
                     starting anyway: /status/backends checks it while the service runs"
                );
                return Ok(());
            }
        };
        for node in &report.nodes {
            tracing::info!("Redis {}", node.summary());
            if let Some(refused) = &node.config_refused {
                tracing::warn!(
                    node = %node.node,
                    %refused,
                    "Redis refuses CONFIG (a managed service?): its maxmemory-policy cannot be \
                     checked; it must be noeviction (docs/operations.md, What Redis must be)"
                );
            }
            if let Some(risk) = node.restart_risk() {
                tracing::warn!(node = %node.node, "{risk}");
            }
        }
        match report.refusal() {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// The backends it serves from.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; then refuses new connections,
    /// answers 503 on `/readyz`, and lets in-flight requests finish for up
    /// to the drain timeout (`AMO_DRAIN_TIMEOUT_SECS`).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> io::Result<()> {
        let draining = self.draining.clone();
        let janitor = tokio::spawn(sweep_periodically(
            self.backends.clone(),
            SweepTiming {
                lease: self.settings.lease,
                grace: self.settings.sweep_grace,
            },
        ));
        let key_watch = match (&self.backends.s3_keys, &self.settings.store) {
            (Some(keys), StoreBackend::S3(config)) if keys.path().is_some() => Some(tokio::spawn(
                keys.clone().watch(config.key_file_poll, self.hangup),
            )),
            _ => None,
        };
        let endpoint = endpoint(&self.settings, &self.backends, self.draining).into_endpoint();
        let grace = self.settings.drain_grace;
        let shutdown = async move {
            shutdown.await;
            // Not ready from now on, and still accepting for the grace, so
            // that a probe sees 503 rather than a refused connection.
            draining.start();
            tokio::time::sleep(grace).await;
        };
        let connections = self.settings.connections;
        let limits = ConnectionLimits {
            header_read_timeout: connections.header_read_timeout,
            idle_timeout: connections.idle_timeout,
            max_connections: connections.max_connections,
            http2_max_concurrent_streams: HTTP2_MAX_CONCURRENT_STREAMS,
            min_transfer: connections.min_transfer,
            // Behind a trusted proxy every connection is the proxy's: the
            // proxy shares its own connections out (deploy/nginx).
            client_share_percent: if self.settings.limits.trust_forwarded_for {
                100
            } else {
                self.settings.limits.client_share_percent
            },
        };
        let served = crate::serve::serve(
            self.listener,
            endpoint,
            limits,
            shutdown,
            self.settings.drain_timeout,
        )
        .await;
        janitor.abort();
        if let Some(watch) = key_watch {
            watch.abort();
        }
        served
    }
}

/// The streams one HTTP/2 connection may have open at once (h2c is served
/// beside HTTP/1.1). Each stream is a request like any other, so the
/// per-replica caps still apply; this bounds what one connection may
/// hold.
const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 64;

/// Runs a pass of the sweeper every half lease; of the replicas that share
/// a store, the one that wins the sweeper lease sweeps
/// ([`crate::parcels::sweep_pass`]).
async fn sweep_periodically(backends: Backends, timing: SweepTiming) {
    let mut tick = tokio::time::interval(timing.interval());
    loop {
        tick.tick().await;
        crate::parcels::sweep_pass(&backends.store, &backends.state, timing).await;
    }
}
