//! Prometheus metrics, served at `GET /metrics` in the text format.
//!
//! One registry per process. Every label comes from a closed set, whatever
//! a client sends: routes are the templates of the router (`crate::routes`;
//! anything unmatched is `other`), methods the standard ones
//! (anything else `other`), statuses the codes this service answers,
//! reasons the stable error codes.

use std::{sync::LazyLock, time::Duration};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_received: IntCounter,
    bytes_sent: IntCounter,
    tokens_issued: IntCounter,
    tokens_consumed: IntCounter,
    tokens_refused: IntCounterVec,
    backend_errors: IntCounterVec,
    backend_calls: IntCounterVec,
    s3_key_reloads: IntCounterVec,
    limited: IntCounterVec,
    resumable: IntCounterVec,
    sweeps: IntCounterVec,
    swept_uploads: IntCounterVec,
    sweep_duration: HistogramVec,
    chain_probe: IntGaugeVec,
    connections_open: IntGauge,
    connections_by_state: IntGaugeVec,
    connections_closed: IntCounterVec,
    in_flight: IntGaugeVec,
    capacity: IntGaugeVec,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let gauge = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(gauge.clone()))
        .expect("registered once");
    gauge
}

fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let histogram = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("a valid metric");
    registry
        .register(Box::new(histogram.clone()))
        .expect("registered once");
    histogram
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("a valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry
        .register(Box::new(counter.clone()))
        .expect("registered once");
    counter
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let latency = histogram_vec(
        &registry,
        "amo_http_request_duration_seconds",
        "Time from request to response headers, by route and method.",
        &["route", "method"],
        vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0,
        ],
    );
    // Resident memory, CPU seconds, open and most file descriptors, threads
    // and start time, as process_*: read from /proc at each scrape.
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("registered once");
    Metrics {
        requests: counter_vec(
            &registry,
            "amo_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            &["route", "method", "status"],
        ),
        latency,
        bytes_received: counter(
            &registry,
            "amo_parcel_bytes_received_total",
            "Parcel body bytes received from clients.",
        ),
        bytes_sent: counter(
            &registry,
            "amo_parcel_bytes_sent_total",
            "Parcel body bytes sent to clients.",
        ),
        tokens_issued: counter(&registry, "amo_tokens_issued_total", "Tokens issued."),
        tokens_consumed: counter(
            &registry,
            "amo_tokens_consumed_total",
            "Tokens used up by a successful operation.",
        ),
        tokens_refused: counter_vec(
            &registry,
            "amo_tokens_refused_total",
            "Requests refused by the token and proof checks, by reason (error code).",
            &["reason"],
        ),
        backend_errors: counter_vec(
            &registry,
            "amo_backend_errors_total",
            "Failed calls to a backend, by backend (redis, s3).",
            &["backend"],
        ),
        backend_calls: {
            let calls = counter_vec(
                &registry,
                "amo_backend_calls_total",
                "Calls to a backend, by backend (redis: one command or script; s3: one \
                 operation, its retries included) and outcome (ok, or error: no answer, a \
                 timeout, a Redis error, an S3 5xx, 401 or 403).",
                &["backend", "outcome"],
            );
            for backend in ["redis", "s3"] {
                for outcome in ["ok", "error"] {
                    calls.with_label_values(&[backend, outcome]);
                }
            }
            calls
        },
        s3_key_reloads: counter_vec(
            &registry,
            "amo_s3_key_reloads_total",
            "Changes of the S3 key file read again, by outcome: applied (new keys in use) or \
             refused (no valid keys in it; the old keys stay).",
            &["outcome"],
        ),
        limited: counter_vec(
            &registry,
            "amo_limited_total",
            "Requests refused by a limit, by limit.",
            &["limit"],
        ),
        connections_open: {
            let gauge = IntGauge::new(
                "amo_http_connections_open",
                "Client connections open now (AMO_MAX_CONNECTIONS caps them).",
            )
            .expect("a valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("registered once");
            gauge
        },
        connections_closed: counter_vec(
            &registry,
            "amo_http_connections_closed_total",
            "Client connections this service closed on its own, by reason (header_timeout, \
             idle, refused: past AMO_MAX_CONNECTIONS, client_share: past one client's share \
             of it, too_slow: an answer taken below AMO_MIN_TRANSFER_BYTES_PER_SEC).",
            &["reason"],
        ),
        connections_by_state: gauge_vec(
            &registry,
            "amo_http_connections",
            "Client connections open now, by state: reading_head (a request head is \
             arriving), active (a request is being read, handled or answered), idle \
             (kept alive, nothing in flight).",
            &["state"],
        ),
        in_flight: gauge_vec(
            &registry,
            "amo_in_flight",
            "Work in flight on this replica, by resource: uploads (slots held, of \
             AMO_MAX_CONCURRENT_UPLOADS), downloads (answers streaming a parcel), \
             v1_upload_memory_bytes (of AMO_V1_UPLOAD_MEMORY_BYTES).",
            &["resource"],
        ),
        capacity: gauge_vec(
            &registry,
            "amo_capacity",
            "What this replica takes at most, by resource (uploads, \
             v1_upload_memory_bytes, connections); 0: no cap. amo_in_flight over it is \
             the saturation.",
            &["resource"],
        ),
        sweeps: counter_vec(
            &registry,
            "amo_sweeps_total",
            "Passes of the sweeper, by sweep (multipart: abandoned multipart uploads; \
             tails: the tails of expired resumable uploads) and outcome (ok; failed: the \
             listing, the sweeper lease or an upload failed; elsewhere: another replica \
             holds the sweeper lease and swept).",
            &["sweep", "outcome"],
        ),
        swept_uploads: counter_vec(
            &registry,
            "amo_swept_uploads_total",
            "Unfinished uploads a sweeper pass looked at, by sweep and result (swept: \
             aborted, or its tails deleted; kept: live, or written to within the grace; \
             failed: its check or its abort failed, tried again at the next pass).",
            &["sweep", "result"],
        ),
        sweep_duration: histogram_vec(
            &registry,
            "amo_sweep_duration_seconds",
            "Time one sweeper pass took, by sweep.",
            &["sweep"],
            vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0],
        ),
        resumable: counter_vec(
            &registry,
            "amo_resumable_uploads_total",
            "Resumable (tus) uploads, by event (created, completed, hash_mismatch, terminated, refused_open_cap: a creation past an open-upload cap).",
            &["event"],
        ),
        chain_probe: {
            let gauge = IntGaugeVec::new(
                Opts::new(
                    "amo_chain_probe",
                    "The start-up probe of the AMO node, by node (AMO_CHAIN_RPC without its \
                     credentials) and outcome (dialect, wrong_usage_key, unreachable, \
                     unexpected): 1 for the outcome found, 0 for the others.",
                ),
                &["node", "outcome"],
            )
            .expect("a valid metric");
            registry
                .register(Box::new(gauge.clone()))
                .expect("registered once");
            gauge
        },
        registry,
    }
});

/// Records an answered request.
pub fn request(route: &str, method: &str, status: u16, elapsed: Duration) {
    let metrics = &*METRICS;
    metrics
        .requests
        .with_label_values(&[route, method, &status.to_string()])
        .inc();
    metrics
        .latency
        .with_label_values(&[route, method])
        .observe(elapsed.as_secs_f64());
}

/// Adds `change` to the open connections.
pub fn connections_open(change: i64) {
    METRICS.connections_open.add(change);
}

/// Moves one connection from state `from` to state `to` (`None`: opened,
/// or closed).
pub fn connection_state(from: Option<&str>, to: Option<&str>) {
    if let Some(from) = from {
        METRICS
            .connections_by_state
            .with_label_values(&[from])
            .dec();
    }
    if let Some(to) = to {
        METRICS.connections_by_state.with_label_values(&[to]).inc();
    }
}

/// Sets what this replica takes at most of `resource`.
pub fn capacity(resource: &str, most: u64) {
    METRICS
        .capacity
        .with_label_values(&[resource])
        .set(i64::try_from(most).unwrap_or(i64::MAX));
}

/// Work of `resource` counted in `amo_in_flight` while it lives.
pub struct InFlight {
    resource: &'static str,
    amount: i64,
}

impl InFlight {
    /// `amount` of `resource`, in flight until dropped.
    pub fn new(resource: &'static str, amount: u64) -> Self {
        let amount = i64::try_from(amount).unwrap_or(i64::MAX);
        METRICS.in_flight.with_label_values(&[resource]).add(amount);
        Self { resource, amount }
    }
}

impl InFlight {
    /// Counts what `other` (of the same resource) counted, too; `other`
    /// counts nothing after.
    pub fn absorb(&mut self, other: &mut InFlight) {
        self.amount += std::mem::take(&mut other.amount);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS
            .in_flight
            .with_label_values(&[self.resource])
            .sub(self.amount);
    }
}

/// Counts a connection closed by this service, by reason.
pub fn connection_closed(reason: &str) {
    METRICS
        .connections_closed
        .with_label_values(&[reason])
        .inc();
}

/// Counts parcel bytes received.
pub fn bytes_received(bytes: u64) {
    METRICS.bytes_received.inc_by(bytes);
}

/// Counts parcel bytes sent.
pub fn bytes_sent(bytes: u64) {
    METRICS.bytes_sent.inc_by(bytes);
}

/// Counts an issued token.
pub fn token_issued() {
    METRICS.tokens_issued.inc();
}

/// Counts an event of a resumable upload.
pub fn resumable(event: &'static str) {
    METRICS.resumable.with_label_values(&[event]).inc();
}

/// Counts a pass of the sweeper `sweep` (`multipart`, `tails`) that ended
/// `ok`, `failed`, or was left to another replica (`elsewhere`).
pub fn sweep(sweep: &'static str, outcome: &'static str) {
    METRICS.sweeps.with_label_values(&[sweep, outcome]).inc();
}

/// Counts what a pass of the sweeper `sweep` did with the uploads it looked
/// at (`swept`, `kept`, `failed`), and how long it took.
pub fn swept(sweep: &'static str, counts: [(&'static str, u64); 3], took: Duration) {
    for (result, count) in counts {
        METRICS
            .swept_uploads
            .with_label_values(&[sweep, result])
            .inc_by(count);
    }
    METRICS
        .sweep_duration
        .with_label_values(&[sweep])
        .observe(took.as_secs_f64());
}

/// Counts a consumed token.
pub fn token_consumed() {
    METRICS.tokens_consumed.inc();
}

/// Counts a request refused by the token checks, with its reason code.
pub fn token_refused(reason: &str) {
    METRICS.tokens_refused.with_label_values(&[reason]).inc();
}

/// Counts a failed backend call.
pub fn backend_error(backend: &str) {
    METRICS.backend_errors.with_label_values(&[backend]).inc();
}

/// Counts one call to `backend` (`redis` or `s3`), by whether it worked.
pub fn backend_call(backend: &'static str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    METRICS
        .backend_calls
        .with_label_values(&[backend, outcome])
        .inc();
}

/// Counts a changed S3 key file, by `outcome`: `applied` or `refused`.
pub fn s3_key_reload(outcome: &str) {
    METRICS.s3_key_reloads.with_label_values(&[outcome]).inc();
}

/// Counts a request refused by the limit `limit`.
pub fn limited(limit: &str) {
    METRICS.limited.with_label_values(&[limit]).inc();
}

/// Records the outcome of the start-up probe of the AMO node `node`: 1 for
/// `outcome`, 0 for the other outcomes.
pub fn chain_probe(node: &str, outcome: &str) {
    for other in crate::chain::ProbeOutcome::ALL {
        let found = i64::from(other.as_str() == outcome);
        METRICS
            .chain_probe
            .with_label_values(&[node, other.as_str()])
            .set(found);
    }
}

/// Every metric in the Prometheus text format.
pub fn render() -> String {
    let mut text = Vec::new();
    TextEncoder::new()
        .encode(&METRICS.registry.gather(), &mut text)
        .expect("the text encoder writes to memory");
    String::from_utf8(text).unwrap_or_default()
}

/// The label of a request method: a standard method's name, else `other`.
pub fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        use poem::http::Method;
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for made_up in ["FOO", "BREW", "X1", "get"] {
            assert_eq!(
                method_label(&Method::from_bytes(made_up.as_bytes()).unwrap()),
                "other"
            );
        }
    }

    #[test]
    fn recorded_requests_appear_in_the_rendering() {
        request("/healthz", "GET", 200, Duration::from_millis(3));
        token_refused("token_used");
        let text = render();
        assert!(
            text.contains(r#"amo_http_requests_total{method="GET",route="/healthz",status="200"}"#)
        );
        assert!(text.contains(r#"amo_tokens_refused_total{reason="token_used"}"#));
    }

    #[test]
    fn the_process_and_every_backend_outcome_are_rendered() {
        let text = render();
        for backend in ["redis", "s3"] {
            for outcome in ["ok", "error"] {
                assert!(text.contains(&format!(
                    r#"amo_backend_calls_total{{backend="{backend}",outcome="{outcome}"}}"#
                )));
            }
        }
        #[cfg(target_os = "linux")]
        for process in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert!(text.contains(process), "{process} is rendered");
        }
    }
}
