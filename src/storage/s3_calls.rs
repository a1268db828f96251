//! Counts the S3 store's calls in `amo_backend_calls_total{backend="s3"}`:
//! an interceptor on the SDK client, run once per operation after its last
//! attempt (retries are one call).
//!
//! An operation counts as an `error` when it failed and S3 did not answer
//! it (a connection failure, a timeout), answered 5xx, or refused the
//! service's keys (401, 403). Other answers, the 4xx that are part of the
//! protocol (404 no such key, 412 a precondition, 409 a conflict), count as
//! `ok`: S3 worked.

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents, interceptors::FinalizerInterceptorContextRef,
};

/// The interceptor that counts S3 calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountCalls;

impl Intercept for CountCalls {
    fn name(&self) -> &'static str {
        "CountCalls"
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let failed = !matches!(context.output_or_error(), Some(Ok(_)));
        let status = context
            .response()
            .map(|response| response.status().as_u16());
        let answered = status
            .is_some_and(|status| (400..500).contains(&status) && status != 401 && status != 403);
        crate::metrics::backend_call("s3", !failed || answered);
        Ok(())
    }
}
