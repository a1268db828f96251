//! The bucket at start: it must exist, or be created when
//! `AMO_S3_CREATE_BUCKET` says so; and it should carry the lifecycle rules
//! that back the sweep up (docs/operations.md, "The bucket lifecycle
//! rules"), which the service checks and warns about, and never needs.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
    LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
};

use super::S3Store;
use crate::error::with_sources;

/// Days after which S3 aborts an unfinished multipart upload by itself:
/// past the longest a live one lasts (a resumable upload's lifetime, 24 h by
/// default; a 5 TiB body streamed at 10 MB/s, 6 days).
pub const ABORT_INCOMPLETE_DAYS: i32 = 7;

/// Days after which S3 expires the per-token markers under
/// `<prefix>.tokens/`: far past any token's lifetime.
pub const TOKEN_MARKER_DAYS: i32 = 1;

/// The folder, under the prefix, of the per-token markers.
pub const TOKEN_MARKERS_DIR: &str = ".tokens/";

/// Why the bucket stops the start.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The bucket does not exist and may not be created.
    #[error(
        "bucket {bucket} does not exist at the S3 endpoint: create it (deploy/local/ceph.sh \
         shows how), or set AMO_S3_CREATE_BUCKET=true to have the service create it"
    )]
    Missing {
        /// The bucket's name.
        bucket: String,
    },
    /// The bucket does not exist and creating it failed.
    #[error("bucket {bucket} does not exist, and creating it failed: {cause}")]
    NotCreated {
        /// The bucket's name.
        bucket: String,
        /// What S3 answered.
        cause: String,
    },
}

/// The lifecycle rules a bucket lacks, of those that back the sweep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingRules {
    /// No enabled rule aborts the unfinished multipart uploads under the
    /// prefix.
    pub abort_incomplete: bool,
    /// No enabled rule expires the per-token markers.
    pub token_markers: bool,
}

impl S3Store {
    /// At start: a bucket that exists is checked for its lifecycle rules
    /// (a warning names each one missing); a missing one is created with
    /// them when `create`, else it is an error. Any other failure (S3 down,
    /// no answer) is logged and the start goes on: the requests that need
    /// S3 answer 503 until it is back.
    pub async fn check_bucket_at_start(&self, create: bool) -> Result<(), BucketError> {
        let bucket = self.bucket().to_owned();
        match self.client().head_bucket().bucket(&bucket).send().await {
            Ok(_) => {}
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                if !create {
                    return Err(BucketError::Missing { bucket });
                }
                self.create_bucket().await?;
                tracing::info!(bucket, "created the bucket, with its lifecycle rules");
            }
            Err(err) => {
                tracing::warn!(bucket, err = %with_sources(&err), "could not check the bucket at start; going on");
                return Ok(());
            }
        }
        match self.missing_rules().await {
            Ok(missing) => warn_of(&bucket, missing),
            Err(err) => {
                tracing::warn!(bucket, err = %with_sources(&err), "could not read the bucket's lifecycle rules; going on");
            }
        }
        Ok(())
    }

    /// Creates the bucket and gives it the lifecycle rules.
    async fn create_bucket(&self) -> Result<(), BucketError> {
        let bucket = self.bucket().to_owned();
        let not_created = |err: &dyn std::error::Error| BucketError::NotCreated {
            bucket: bucket.clone(),
            cause: with_sources(err).to_string(),
        };
        self.client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .map_err(|err| not_created(&err))?;
        self.client()
            .put_bucket_lifecycle_configuration()
            .bucket(&bucket)
            .lifecycle_configuration(self.lifecycle_rules())
            .send()
            .await
            .map_err(|err| not_created(&err))?;
        Ok(())
    }

    /// The lifecycle rules that back the sweep up, for this store's prefix.
    pub fn lifecycle_rules(&self) -> BucketLifecycleConfiguration {
        let rule = |id: &str, prefix: String| {
            LifecycleRule::builder()
                .id(id)
                .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                .status(ExpirationStatus::Enabled)
        };
        let abort = rule(
            "amo-abort-incomplete-multipart-uploads",
            self.prefix().into(),
        )
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(ABORT_INCOMPLETE_DAYS)
                .build(),
        )
        .build()
        .expect("a rule with a status");
        let markers = rule("amo-expire-token-markers", self.token_markers_prefix())
            .expiration(
                LifecycleExpiration::builder()
                    .days(TOKEN_MARKER_DAYS)
                    .build(),
            )
            .build()
            .expect("a rule with a status");
        BucketLifecycleConfiguration::builder()
            .rules(abort)
            .rules(markers)
            .build()
            .expect("rules")
    }

    /// Where the per-token markers are kept.
    fn token_markers_prefix(&self) -> String {
        format!("{}{TOKEN_MARKERS_DIR}", self.prefix())
    }

    /// Which of the rules that back the sweep up the bucket lacks (all of
    /// them when it has no lifecycle configuration).
    pub async fn missing_rules(&self) -> Result<MissingRules, aws_sdk_s3::Error> {
        let answer = self
            .client()
            .get_bucket_lifecycle_configuration()
            .bucket(self.bucket())
            .send()
            .await;
        let rules = match answer {
            Ok(config) => config.rules().to_vec(),
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(404) => Vec::new(),
            Err(err) => return Err(err.into()),
        };
        let covers = |rule: &LifecycleRule, key_prefix: &str| {
            *rule.status() == ExpirationStatus::Enabled
                && rule_prefix(rule).is_some_and(|prefix| key_prefix.starts_with(prefix))
        };
        let markers = self.token_markers_prefix();
        Ok(MissingRules {
            abort_incomplete: !rules.iter().any(|rule| {
                covers(rule, self.prefix())
                    && rule
                        .abort_incomplete_multipart_upload()
                        .and_then(AbortIncompleteMultipartUpload::days_after_initiation)
                        .is_some()
            }),
            token_markers: !rules.iter().any(|rule| {
                covers(rule, &markers)
                    && rule
                        .expiration()
                        .is_some_and(|expiration| expiration.days().is_some())
            }),
        })
    }
}

/// The key prefix a rule applies to: its filter's (alone, or in an `And`),
/// or the rule's own (the older form, which RGW answers for an empty
/// prefix). `None`: the rule also filters by tag or size, and so covers
/// less than any prefix.
#[allow(deprecated)] // the rule's own prefix: RGW answers an empty one so
fn rule_prefix(rule: &LifecycleRule) -> Option<&str> {
    match rule.filter() {
        Some(filter)
            if filter.tag().is_some()
                || filter.and().is_some()
                || filter.object_size_greater_than().is_some()
                || filter.object_size_less_than().is_some() =>
        {
            None
        }
        Some(filter) => Some(filter.prefix().unwrap_or("")),
        None => Some(rule.prefix().unwrap_or("")),
    }
}

/// Logs a warning for each rule the bucket lacks.
fn warn_of(bucket: &str, missing: MissingRules) {
    if missing.abort_incomplete {
        tracing::warn!(
            bucket,
            "the bucket has no lifecycle rule that aborts unfinished multipart uploads \
             (AbortIncompleteMultipartUpload) under the key prefix: while the sweep is down, \
             abandoned uploads keep their space; see docs/operations.md, \"The bucket \
             lifecycle rules\""
        );
    }
    if missing.token_markers {
        tracing::warn!(
            bucket,
            "the bucket has no lifecycle rule that expires the per-token markers under \
             <prefix>.tokens/: they are kept for ever; see docs/operations.md, \"The bucket \
             lifecycle rules\""
        );
    }
}
