//! Redis behind Sentinel (`AMO_REDIS_SENTINELS`): the sentinels name the
//! master of `AMO_REDIS_SENTINEL_MASTER`, and the service follows it.
//!
//! Commands go to the master over one reconnecting connection, as with one
//! server. A command that fails as a lost master does (the connection
//! refused or dropped, or `READONLY`: the old master came back as a
//! replica) asks the sentinels again, in the background, and moves the
//! connection to the master they name. The failed command itself is not
//! sent again (a script may have run): it fails, and the request answers
//! 503 as for any Redis failure; the next one goes to the new master.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use redis::{
    Cmd, ConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    sentinel::{Sentinel, SentinelNodeConnectionInfo},
};

/// A connection to the master the sentinels name, moved to the new master
/// after a failover.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    node: SentinelNodeConnectionInfo,
    config: ConnectionManagerConfig,
    /// The master's address and the connection to it.
    current: RwLock<(String, ConnectionManager)>,
    /// Whether the sentinels are being asked already.
    following: AtomicBool,
    db: i64,
}

impl SentinelConnection {
    /// Asks `sentinels` (`host:port`) for the master `master_name`, and
    /// connects to it with the user, password and database of `node`.
    pub(super) async fn connect(
        sentinels: &[String],
        master_name: &str,
        node: &ConnectionInfo,
        config: ConnectionManagerConfig,
    ) -> RedisResult<Self> {
        let urls: Vec<String> = sentinels
            .iter()
            .map(|address| format!("redis://{address}"))
            .collect();
        let mut sentinel = Sentinel::build(urls)?;
        let db = node.redis_settings().db();
        let node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(node.redis_settings().clone())
            .set_tcp_settings(super::redis_access::tcp_settings());
        let (address, connection) = master(&mut sentinel, master_name, &node, &config).await?;
        tracing::info!(master = %address, name = master_name, "Redis master found by Sentinel");
        Ok(Self {
            inner: Arc::new(Inner {
                sentinel: tokio::sync::Mutex::new(sentinel),
                master_name: master_name.to_owned(),
                node,
                config,
                current: RwLock::new((address, connection)),
                following: AtomicBool::new(false),
                db,
            }),
        })
    }

    /// The connection to the master as known now.
    fn current(&self) -> ConnectionManager {
        let current = self.inner.current.read().unwrap_or_else(|e| e.into_inner());
        current.1.clone()
    }

    /// After `err`: if it is how a lost master fails, asks the sentinels for
    /// the master in the background (once at a time).
    fn after(&self, err: &RedisError) {
        if !lost_master(err) || self.inner.following.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if !follow(&inner).await {
                // No master to follow yet (Sentinel has not promoted one):
                // ask again after a pause, not at every failed command.
                tokio::time::sleep(ASK_AGAIN_AFTER).await;
            }
            inner.following.store(false, Ordering::Release);
        });
    }
}

/// The pause after the sentinels named no reachable master.
const ASK_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// Asks the sentinels for the master; moves the connection if it moved.
/// Answers whether they named a reachable one.
async fn follow(inner: &Inner) -> bool {
    let found = {
        let mut sentinel = inner.sentinel.lock().await;
        sentinel
            .async_master_for(&inner.master_name, Some(&inner.node))
            .await
    };
    let client = match found {
        Ok(client) => client,
        Err(err) => {
            tracing::warn!(err = %err, "Sentinel named no reachable master yet");
            return false;
        }
    };
    let address = client.get_connection_info().addr().to_string();
    let known = {
        let current = inner.current.read().unwrap_or_else(|e| e.into_inner());
        current.0.clone()
    };
    if known == address {
        return true;
    }
    match client
        .get_connection_manager_with_config(inner.config.clone())
        .await
    {
        Ok(connection) => {
            tracing::warn!(from = %known, to = %address, "the Redis master moved (Sentinel failover); following it");
            *inner.current.write().unwrap_or_else(|e| e.into_inner()) = (address, connection);
            true
        }
        Err(err) => {
            tracing::warn!(err = %err, master = %address, "could not connect to the master Sentinel names");
            false
        }
    }
}

/// The master the sentinels name now, checked to be one, and a connection
/// to it.
async fn master(
    sentinel: &mut Sentinel,
    name: &str,
    node: &SentinelNodeConnectionInfo,
    config: &ConnectionManagerConfig,
) -> RedisResult<(String, ConnectionManager)> {
    let client = sentinel.async_master_for(name, Some(node)).await?;
    let address = client.get_connection_info().addr().to_string();
    let connection = client
        .get_connection_manager_with_config(config.clone())
        .await?;
    Ok((address, connection))
}

/// Whether `err` may mean that its server is no longer the master: any
/// failure but a script's own refusal. (Scripts here fail only when Redis
/// does: the connection is gone, or the server is a replica now and
/// answers `READONLY`, an error redis-rs reports under several kinds.)
/// Asking the sentinels costs one round trip when the master did not move.
fn lost_master(err: &RedisError) -> bool {
    !matches!(err.kind(), redis::ErrorKind::UnexpectedReturnType)
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let answer = self.current().req_packed_command(cmd).await;
            if let Err(err) = &answer {
                self.after(err);
            }
            answer
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let answer = self
                .current()
                .req_packed_commands(pipeline, offset, count)
                .await;
            if let Err(err) = &answer {
                self.after(err);
            }
            answer
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}
