//! How the service logs in to Redis, apart from where Redis is: the ACL user
//! and password (read from a file, a mounted Secret) and the TLS material of
//! `rediss://` (a CA file, and a client certificate and key for mutual TLS).
//!
//! Every way of connecting (one server, a cluster, and any other topology)
//! builds its connection from [`RedisAccess::connection_info`] and
//! [`RedisAccess::tls`], so they all log in the same way. Nothing here shows
//! the password: not `Debug`, not an error, not [`redacted_url`].

use std::path::Path;

use redis::{ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, TlsCertificates};
use secrecy::{ExposeSecret, SecretString};

/// The files of the Redis settings, as configured (`AMO_REDIS_*_FILE`).
#[derive(Debug, Clone, Default)]
pub struct RedisAccessFiles<'a> {
    /// The ACL user (`AMO_REDIS_USERNAME`).
    pub username: Option<&'a str>,
    /// The file holding the password (`AMO_REDIS_PASSWORD_FILE`); empty
    /// means no password.
    pub password_file: Option<&'a Path>,
    /// CA certificates (PEM) that sign the server's certificate
    /// (`AMO_REDIS_CA_FILE`).
    pub ca_file: Option<&'a Path>,
    /// The client certificate (PEM) for mutual TLS
    /// (`AMO_REDIS_CLIENT_CERT_FILE`).
    pub client_cert_file: Option<&'a Path>,
    /// Its private key (PEM) (`AMO_REDIS_CLIENT_KEY_FILE`).
    pub client_key_file: Option<&'a Path>,
}

/// How to log in to Redis: the ACL user and password, and the TLS
/// certificates. The password never shows in `Debug` output.
#[derive(Clone, Default)]
pub struct RedisAccess {
    username: Option<String>,
    password: Option<SecretString>,
    tls: Option<TlsCertificates>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAccess")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisAccess {
    /// Reads the files `files` name. `tls_urls` says whether the Redis URLs
    /// are `rediss://`: TLS files beside plain URLs are refused, as they
    /// would be ignored. Errors name the setting and the file, never the
    /// content.
    pub fn read(files: &RedisAccessFiles<'_>, tls_urls: bool) -> Result<Self, String> {
        let password = files
            .password_file
            .map(|path| {
                let text = read_text("AMO_REDIS_PASSWORD_FILE", path)?;
                // A file written by `echo` ends with a newline that is not
                // part of the password; a Secret's file has none.
                let password = text.strip_suffix('\n').unwrap_or(&text);
                let password = password.strip_suffix('\r').unwrap_or(password);
                // Empty: Redis asks for none (a Secret's key left empty).
                Ok::<_, String>(
                    (!password.is_empty()).then(|| SecretString::from(password.to_owned())),
                )
            })
            .transpose()?
            .flatten();
        let root_cert = files
            .ca_file
            .map(|path| read_pem("AMO_REDIS_CA_FILE", path))
            .transpose()?;
        let client_tls = match (files.client_cert_file, files.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientTlsConfig {
                client_cert: read_pem("AMO_REDIS_CLIENT_CERT_FILE", cert)?,
                client_key: read_pem("AMO_REDIS_CLIENT_KEY_FILE", key)?,
            }),
            _ => {
                return Err(
                    "AMO_REDIS_CLIENT_CERT_FILE and AMO_REDIS_CLIENT_KEY_FILE go \
                     together: set both, or neither"
                        .into(),
                );
            }
        };
        let tls = match (root_cert, client_tls) {
            (None, None) => None,
            (root_cert, client_tls) if tls_urls => Some(TlsCertificates {
                client_tls,
                root_cert,
            }),
            _ => {
                return Err(
                    "AMO_REDIS_CA_FILE and the client certificate are for TLS, but \
                     AMO_REDIS_URL is not rediss://"
                        .into(),
                );
            }
        };
        Ok(Self {
            username: files
                .username
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned),
            password,
            tls,
        })
    }

    /// The connection info of `url` with this user and password (they
    /// override those of the URL) and `TCP_NODELAY`.
    pub fn connection_info(&self, url: &str) -> redis::RedisResult<ConnectionInfo> {
        let info = url.into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password.expose_secret());
        }
        Ok(info
            .set_redis_settings(redis)
            .set_tcp_settings(tcp_settings()))
    }

    /// The TLS certificates to connect with, if any were configured (else
    /// `rediss://` trusts the system's CA certificates).
    pub fn tls(&self) -> Option<&TlsCertificates> {
        self.tls.as_ref()
    }

    /// The ACL user, if one is set apart from the URL.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, if one is set apart from the URL.
    pub fn password(&self) -> Option<&SecretString> {
        self.password.as_ref()
    }

    /// A client for one server at `url`.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        let info = self.connection_info(url)?;
        match &self.tls {
            Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
            None => redis::Client::open(info),
        }
    }
}

/// `TCP_NODELAY`: commands of concurrent requests share one multiplexed
/// connection, and with Nagle's algorithm a command written while an
/// earlier one is unacknowledged waits for that ACK.
pub fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// `url` with its password, if any, replaced by `***`: for messages.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL: it may still hold `user:password@`; show none of it.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
    }
}

/// Whether `url` has a password in it.
pub fn has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|parsed| parsed.password().is_some())
}

fn read_text(setting: &str, path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|err| format!("{setting}: cannot read {}: {err}", path.display()))
}

fn read_pem(setting: &str, path: &Path) -> Result<Vec<u8>, String> {
    let text = read_text(setting, path)?;
    if !text.contains("-----BEGIN ") {
        return Err(format!("{setting}: {} is not PEM", path.display()));
    }
    Ok(text.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_a_url_is_redacted_and_never_debug_printed() {
        assert_eq!(
            redacted_url("redis://amo:hunter2@127.0.0.1:6379"),
            "redis://amo:***@127.0.0.1:6379"
        );
        assert_eq!(
            redacted_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert!(!redacted_url("not a url:hunter2@x").contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "hunter2\n").unwrap();
        let access = RedisAccess::read(
            &RedisAccessFiles {
                username: Some("amo"),
                password_file: Some(&file),
                ..Default::default()
            },
            false,
        )
        .unwrap();
        assert_eq!(access.password().unwrap().expose_secret(), "hunter2");
        assert!(!format!("{access:?}").contains("hunter2"));
        let info = access.connection_info("redis://127.0.0.1:1").unwrap();
        assert_eq!(info.redis_settings().username(), Some("amo"));
        assert_eq!(info.redis_settings().password(), Some("hunter2"));
    }

    #[test]
    fn tls_files_need_a_tls_url_and_a_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let ca = RedisAccessFiles {
            ca_file: Some(&pem),
            ..Default::default()
        };
        assert!(
            RedisAccess::read(&ca, false)
                .unwrap_err()
                .contains("rediss://")
        );
        assert!(RedisAccess::read(&ca, true).unwrap().tls().is_some());
        let half = RedisAccessFiles {
            client_cert_file: Some(&pem),
            ..Default::default()
        };
        assert!(
            RedisAccess::read(&half, true)
                .unwrap_err()
                .contains("AMO_REDIS_CLIENT_KEY_FILE")
        );
    }
}
