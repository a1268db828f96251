//! The shared state in Redis: one lazily connected handle, and leases.
//!
//! A [`Lease`] is a key whose value names its holder (`claimed:<holder id>`)
//! and that expires unless its holder keeps renewing it. Token claims and
//! parcel write locks are both leases: a replica that dies lets them lapse.

use std::{sync::Arc, time::Duration};

use redis::{Script, aio::ConnectionManager};
use tokio::{sync::OnceCell, task::JoinHandle};
use uuid::Uuid;

use crate::error::Error;

/// How long a lease lives without being renewed.
pub const LEASE: Duration = Duration::from_secs(30);

/// Renews a lease held by `ARGV[1]`.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Deletes a lease held by `ARGV[1]`.
const END: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// Gives up a lease held by `ARGV[1]`: puts `issued` back for `ARGV[2]` ms
/// (a token claim released), or deletes the key when that is 0.
const RESTORE: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], 'issued', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Takes a lease on a key that holds `issued` (a token's first use).
/// Answers 1 when taken, 2 when another holder has it, 0 when absent.
const TAKE_ISSUED: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == 'issued' then
  redis.call('SET', KEYS[1], 'claimed:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 2
";

struct Scripts {
    renew: Script,
    end: Script,
    restore: Script,
    take_issued: Script,
}

/// How a `take_issued` attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// The key is absent: never issued, expired or used up.
    Absent,
    /// Another request holds it now.
    Held,
}

/// A Redis connection shared by a replica. Connects on first use, so the
/// service starts (and reports not ready) while Redis is down, and recovers
/// by itself when it returns.
#[derive(Clone)]
pub struct Redis {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    scripts: Arc<Scripts>,
}

impl Redis {
    /// A handle on `client`; nothing is contacted yet.
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            connection: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts {
                renew: Script::new(RENEW),
                end: Script::new(END),
                restore: Script::new(RESTORE),
                take_issued: Script::new(TAKE_ISSUED),
            }),
        }
    }

    /// A connection; reconnects by itself once made.
    pub async fn connection(&self) -> Result<ConnectionManager, Error> {
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

    /// Runs `script` on `key` with the holder id and one number.
    async fn run(
        &self,
        script: &Script,
        key: &str,
        holder: &str,
        number: u64,
    ) -> Result<i64, Error> {
        let mut conn = self.connection().await?;
        script
            .key(key)
            .arg(holder)
            .arg(number)
            .invoke_async(&mut conn)
            .await
            .map_err(Error::token_store)
    }

    /// Takes `key` as a new lease if nobody holds it. `None`: it is taken.
    pub async fn try_lease(&self, key: String) -> Result<Option<Lease>, Error> {
        let holder = Uuid::new_v4().to_string();
        let mut conn = self.connection().await?;
        let taken: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(format!("claimed:{holder}"))
            .arg("NX")
            .arg("PX")
            .arg(LEASE.as_millis() as u64)
            .query_async(&mut conn)
            .await
            .map_err(Error::token_store)?;
        Ok(taken.map(|_| Lease::held(self.clone(), key, holder, None)))
    }

    /// Takes a lease on `key` if it holds `issued`, atomically: of any number
    /// of concurrent attempts on any replicas, at most one succeeds. Given up
    /// without being ended, the key returns to `issued` until `restore_until`
    /// (Unix seconds).
    pub async fn take_issued(
        &self,
        key: String,
        restore_until: u64,
    ) -> Result<Result<Lease, TakeOutcome>, Error> {
        let holder = Uuid::new_v4().to_string();
        let taken = self
            .run(
                &self.scripts.take_issued,
                &key,
                &holder,
                LEASE.as_millis() as u64,
            )
            .await?;
        Ok(match taken {
            1 => Ok(Lease::held(self.clone(), key, holder, Some(restore_until))),
            2 => Err(TakeOutcome::Held),
            _ => Err(TakeOutcome::Absent),
        })
    }
}

/// A key this request holds. It is renewed in the background while held.
/// [`Lease::end`] deletes it (the work is done); [`Lease::give_up`] restores
/// it if it was taken from `issued`, else deletes it. Dropped, it gives up.
pub struct Lease {
    redis: Redis,
    key: String,
    holder: String,
    restore_until: Option<u64>,
    renewal: Option<JoinHandle<()>>,
}

impl Lease {
    /// A lease on `key` already taken by `holder`; starts renewing it.
    fn held(redis: Redis, key: String, holder: String, restore_until: Option<u64>) -> Self {
        let renewal = {
            let (redis, key, holder) = (redis.clone(), key.clone(), holder.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LEASE / 3);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let lease = LEASE.as_millis() as u64;
                    match redis.run(&redis.scripts.renew, &key, &holder, lease).await {
                        Ok(1) => {}
                        Ok(_) => break,
                        Err(err) => tracing::warn!(%err, "could not renew a lease"),
                    }
                }
            })
        };
        Self {
            redis,
            key,
            holder,
            restore_until,
            renewal: Some(renewal),
        }
    }

    /// Deletes the key if this lease still holds it; answers whether it did.
    pub async fn end(mut self) -> Result<bool, Error> {
        self.stop_renewal();
        let done = self
            .redis
            .run(&self.redis.scripts.end, &self.key, &self.holder, 0)
            .await?;
        Ok(done == 1)
    }

    /// Gives the key up: back to `issued` for the rest of its lifetime, or
    /// deleted.
    pub async fn give_up(mut self) -> Result<bool, Error> {
        self.stop_renewal();
        give_up(&self.redis, &self.key, &self.holder, self.restore_until).await
    }

    fn stop_renewal(&mut self) -> bool {
        match self.renewal.take() {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}

async fn give_up(
    redis: &Redis,
    key: &str,
    holder: &str,
    restore_until: Option<u64>,
) -> Result<bool, Error> {
    let remaining_ms = restore_until
        .map(|deadline| deadline.saturating_sub(unix_now()).saturating_mul(1000))
        .unwrap_or(0);
    let done = redis
        .run(&redis.scripts.restore, key, holder, remaining_ms)
        .await?;
    Ok(done == 1)
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.stop_renewal() {
            let (redis, key, holder, restore_until) = (
                self.redis.clone(),
                self.key.clone(),
                self.holder.clone(),
                self.restore_until,
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = give_up(&redis, &key, &holder, restore_until).await {
                        tracing::warn!(%err, "could not give up a lease; it lapses by itself");
                    }
                });
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
