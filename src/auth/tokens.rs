//! The one-use record of every token, in Redis (DESIGN §3).
//!
//! Key layout (part of the contract between versions):
//! `amo:token:{<jti>}` holds `issued` from issue until first use, with the
//! token's TTL; while a request uses it, `claimed:<claim id>` with a short
//! lease that the request keeps extending. Consuming deletes the key;
//! releasing puts `issued` back with the token's remaining lifetime. The
//! braces make the jti the Redis Cluster hash tag.

use std::{sync::Arc, time::Duration};

use redis::{AsyncCommands, Script, aio::ConnectionManager};
use tokio::{sync::OnceCell, task::JoinHandle};
use uuid::Uuid;

use crate::error::Error;

use super::jwt::unix_now;

/// How long a claim lives without being extended. A replica that crashes
/// mid-request frees its claim (and so its token's key) after this long.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == 'issued' then
  redis.call('SET', KEYS[1], 'claimed:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 2
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], 'issued', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

const CONSUME: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// The Redis key of a token's record.
pub fn token_key(jti: &str) -> String {
    format!("amo:token:{{{jti}}}")
}

struct Scripts {
    claim: Script,
    release: Script,
    consume: Script,
    extend: Script,
}

/// The shared token store. Connects lazily, so the service starts (and
/// reports not ready) while Redis is down, and recovers when it returns.
#[derive(Clone)]
pub struct TokenStore {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    scripts: Arc<Scripts>,
}

impl TokenStore {
    /// A store for the Redis at `url` (already known to parse).
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            connection: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM),
                release: Script::new(RELEASE),
                consume: Script::new(CONSUME),
                extend: Script::new(EXTEND),
            }),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, Error> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        self.connection
            .get_or_try_init(|| self.client.get_connection_manager_with_config(config))
            .await
            .cloned()
            .map_err(Error::token_store)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(Error::token_store)
    }

    /// Records a new token's `jti` for `ttl`.
    pub async fn issue(&self, jti: &str, ttl: Duration) -> Result<(), Error> {
        let mut conn = self.connection().await?;
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl.as_millis() as u64));
        let set: Option<String> = conn
            .set_options(token_key(jti), "issued", options)
            .await
            .map_err(Error::token_store)?;
        match set {
            Some(_) => Ok(()),
            None => Err(Error::Internal(format!("jti {jti} already recorded"))),
        }
    }

    /// Claims the token `jti` (expiring at `exp`) for one request, atomically.
    /// Of concurrent claims on any replicas, at most one succeeds.
    pub async fn claim(&self, jti: &str, exp: u64) -> Result<TokenClaim, Error> {
        let claim_id = Uuid::new_v4().to_string();
        let key = token_key(jti);
        let mut conn = self.connection().await?;
        let outcome: i64 = self
            .scripts
            .claim
            .key(&key)
            .arg(&claim_id)
            .arg(CLAIM_LEASE.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(Error::token_store)?;
        match outcome {
            1 => Ok(TokenClaim::start(self.clone(), key, claim_id, exp)),
            2 => Err(Error::TokenInUse),
            _ => Err(Error::unauthenticated(
                "token_used",
                "the token is expired, unknown or already used; get a new token",
            )),
        }
    }

    async fn run(
        &self,
        script: &Script,
        key: &str,
        claim_id: &str,
        arg: u64,
    ) -> Result<bool, Error> {
        let mut conn = self.connection().await?;
        let done: i64 = script
            .key(key)
            .arg(claim_id)
            .arg(arg)
            .invoke_async(&mut conn)
            .await
            .map_err(Error::token_store)?;
        Ok(done == 1)
    }
}

/// A token claimed by this request. Finish it with [`TokenClaim::consume`]
/// once the operation had its effect, or [`TokenClaim::release`] if it failed
/// before anything became visible. Dropped unfinished (a client that went
/// away, a handler that failed), it releases itself.
pub struct TokenClaim {
    store: TokenStore,
    key: String,
    claim_id: String,
    exp: u64,
    keep_alive: Option<JoinHandle<()>>,
}

impl TokenClaim {
    fn start(store: TokenStore, key: String, claim_id: String, exp: u64) -> Self {
        let keep_alive = {
            let (store, key, claim_id) = (store.clone(), key.clone(), claim_id.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(CLAIM_LEASE / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let lease = CLAIM_LEASE.as_millis() as u64;
                    match store
                        .run(&store.scripts.extend, &key, &claim_id, lease)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(err) => tracing::warn!(%err, "could not extend a token claim"),
                    }
                }
            })
        };
        Self {
            store,
            key,
            claim_id,
            exp,
            keep_alive: Some(keep_alive),
        }
    }

    fn stop_keep_alive(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }

    /// The operation succeeded: the token can never be used again.
    pub async fn consume(mut self) {
        self.stop_keep_alive();
        match self
            .store
            .run(&self.store.scripts.consume, &self.key, &self.claim_id, 0)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("a token's claim had lapsed before it was consumed"),
            Err(err) => tracing::warn!(%err, "could not consume a token; it expires by itself"),
        }
    }

    /// The operation failed before anything became visible: the token may
    /// be used again until it expires.
    pub async fn release(mut self) {
        self.stop_keep_alive();
        release(&self.store, &self.key, &self.claim_id, self.exp).await;
    }
}

async fn release(store: &TokenStore, key: &str, claim_id: &str, exp: u64) {
    let remaining_ms = exp.saturating_sub(unix_now()).saturating_mul(1000);
    if let Err(err) = store
        .run(&store.scripts.release, key, claim_id, remaining_ms)
        .await
    {
        tracing::warn!(%err, "could not release a token claim; it lapses by itself");
    }
}

impl Drop for TokenClaim {
    fn drop(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
            let (store, key, claim_id, exp) = (
                self.store.clone(),
                self.key.clone(),
                self.claim_id.clone(),
                self.exp,
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { release(&store, &key, &claim_id, exp).await });
            }
        }
    }
}
