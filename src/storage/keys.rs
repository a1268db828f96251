//! The S3 keys of `AMO_KEY_FILE` (`key.json`), reloaded without a restart
//! (docs/operations.md, "Rotating the S3 keys").
//!
//! The S3 client asks [`S3Keys`] for credentials as it signs each request
//! (the SDK's identity cache is off), and gets the keys last read. A task
//! ([`S3Keys::watch`]) reads the file again every few seconds and on
//! SIGHUP; new, valid keys replace the old ones for the requests signed
//! from then on, while requests already signed finish with the old. A file
//! that does not hold valid keys is logged at warn and changes nothing.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use aws_credential_types::{
    Credentials,
    provider::{self, ProvideCredentials},
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::{signal::unix::Signal, sync::watch};

/// The keys of a `key.json` file.
pub struct KeyFile {
    /// Access key id.
    pub access_key: String,
    /// Secret access key; never shown in `Debug` output or logs.
    pub secret_key: SecretString,
}

impl KeyFile {
    /// Parses the text of a key file (JSON with non-empty `access_key` and
    /// `secret_key`); the error never quotes the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Raw {
            access_key: String,
            secret_key: String,
        }
        let keys: Raw = serde_json::from_str(text).map_err(|err| {
            format!(
                "must be JSON with \"access_key\" and \"secret_key\" (line {}, column {})",
                err.line(),
                err.column()
            )
        })?;
        if keys.access_key.trim().is_empty() || keys.secret_key.trim().is_empty() {
            return Err("\"access_key\" and \"secret_key\" must not be empty".into());
        }
        Ok(Self {
            access_key: keys.access_key,
            secret_key: keys.secret_key.into(),
        })
    }

    /// Reads and parses the key file at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|err| format!("cannot be read: {err}"))?;
        Self::parse(&text)
    }
}

/// How many times the key file was read again and its keys taken
/// (`applied`) or refused as invalid (`refused`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    /// New keys taken.
    pub applied: u64,
    /// Changed files that held no valid keys (the old keys stayed).
    pub refused: u64,
}

/// The S3 credentials of a replica: the keys last read from the key file.
/// Clones share them.
#[derive(Clone, Debug)]
pub struct S3Keys {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The key file, if the keys came from one.
    path: Option<PathBuf>,
    credentials: RwLock<Credentials>,
    /// The text of the file last read (valid or not), so that an unchanged
    /// file is neither parsed nor reported again; and whether the last
    /// read failed.
    seen: Mutex<(Option<SecretString>, bool)>,
    reloads: watch::Sender<Reloads>,
}

impl S3Keys {
    /// Credentials of `access_key` and `secret_key`, read from `path` (which
    /// [`S3Keys::reload`] reads again) or from nowhere.
    pub fn new(access_key: &str, secret_key: &SecretString, path: Option<PathBuf>) -> Self {
        let seen = path
            .as_deref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .map(SecretString::from);
        Self {
            inner: Arc::new(Inner {
                path,
                credentials: RwLock::new(credentials(access_key, secret_key)),
                seen: Mutex::new((seen, false)),
                reloads: watch::Sender::new(Reloads::default()),
            }),
        }
    }

    /// The key file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The counts of reloads, updated as they happen.
    pub fn reloads(&self) -> watch::Receiver<Reloads> {
        self.inner.reloads.subscribe()
    }

    /// The access key id in use (not a secret).
    pub fn access_key(&self) -> String {
        self.current().access_key_id().to_owned()
    }

    fn current(&self) -> Credentials {
        self.inner
            .credentials
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the key file again: if its text changed and holds valid keys,
    /// they are used from now on; if it holds none, the old keys stay and
    /// a warning is logged. A file that cannot be read changes nothing.
    pub fn reload(&self) {
        let Some(path) = self.path() else { return };
        let mut seen = self
            .inner
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                if !seen.1 {
                    tracing::warn!(file = %path.display(), "the S3 key file cannot be read, the current S3 keys stay: {err}");
                }
                seen.1 = true;
                return;
            }
        };
        seen.1 = false;
        if seen.0.as_ref().map(ExposeSecret::expose_secret) == Some(text.as_str()) {
            return;
        }
        let parsed = KeyFile::parse(&text);
        seen.0 = Some(text.into());
        match parsed {
            Ok(keys) => {
                *self
                    .inner
                    .credentials
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) =
                    credentials(&keys.access_key, &keys.secret_key);
                tracing::info!(file = %path.display(), "S3 keys reloaded: new requests use the new keys");
                crate::metrics::s3_key_reload("applied");
                self.inner.reloads.send_modify(|count| count.applied += 1);
            }
            Err(err) => {
                tracing::warn!(file = %path.display(), "the S3 key file changed but {err}; the current S3 keys stay");
                crate::metrics::s3_key_reload("refused");
                self.inner.reloads.send_modify(|count| count.refused += 1);
            }
        }
    }

    /// Reloads the keys every `every`, and whenever `hangup` (SIGHUP)
    /// arrives; runs until dropped.
    pub async fn watch(self, every: Duration, mut hangup: Option<Signal>) {
        // The keys were read at start: the first read is one period on.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGHUP: reading the S3 key file again");
                }
            }
            let keys = self.clone();
            // File reads block: off the async workers.
            if tokio::task::spawn_blocking(move || keys.reload())
                .await
                .is_err()
            {
                tracing::warn!("reloading the S3 keys failed");
            }
        }
    }
}

fn credentials(access_key: &str, secret_key: &SecretString) -> Credentials {
    Credentials::new(
        access_key,
        secret_key.expose_secret(),
        None,
        None,
        "key-file",
    )
}

impl ProvideCredentials for S3Keys {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::ready(Ok(self.current()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// The access key the SDK gets.
    async fn access_key(keys: &S3Keys) -> String {
        let provided = keys.provide_credentials().await.unwrap();
        assert_eq!(provided.access_key_id(), keys.access_key());
        keys.access_key()
    }

    #[tokio::test]
    async fn a_changed_file_swaps_the_keys_and_a_bad_one_keeps_them() {
        let file = file_with(r#"{"access_key": "one", "secret_key": "s1"}"#);
        let keys = S3Keys::new("one", &"s1".into(), Some(file.path().to_owned()));
        keys.reload();
        assert_eq!(*keys.reloads().borrow(), Reloads::default(), "unchanged");
        std::fs::write(file.path(), r#"{"access_key": "two", "secret_key": "s2"}"#).unwrap();
        keys.reload();
        assert_eq!(access_key(&keys).await, "two");
        for bad in [
            "{",
            r#"{"access_key": "three"}"#,
            r#"{"access_key": "", "secret_key": "x"}"#,
        ] {
            std::fs::write(file.path(), bad).unwrap();
            keys.reload();
            assert_eq!(access_key(&keys).await, "two", "{bad}");
        }
        assert_eq!(
            *keys.reloads().borrow(),
            Reloads {
                applied: 1,
                refused: 3
            }
        );
        std::fs::remove_file(file.path()).unwrap();
        keys.reload();
        assert_eq!(access_key(&keys).await, "two");
    }

    #[test]
    fn errors_never_quote_the_file() {
        let err = KeyFile::parse(r#"{"access_key": "ak", "secret_key": "hunter2""#)
            .err()
            .unwrap();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
