//! [`SharedState`] in Redis: one server, or a Redis Cluster.
//!
//! Every operation is one command or one Lua script on one key, so it is
//! atomic across replicas and works the same on a cluster. The connection is
//! made on first use: the service starts (and reports not ready) while Redis
//! is down, and recovers by itself when it returns.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{
    Cmd, Pipeline, RedisFuture, Script, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo},
};
use tokio::sync::OnceCell;

use super::{
    SharedState, StateError, Taken,
    redis_access::{RedisAccess, redacted_url},
    redis_checks::{RedisNodeReport, RedisReport},
    sentinel::SentinelConnection,
    unix_now_micros,
};

/// How long to wait for Redis to connect or answer; also the most one
/// operation may take in all, reconnecting included, before it fails (503).
const TIMEOUT: Duration = Duration::from_secs(2);

/// Connection attempts after the first, when (re)connecting: few and close
/// together (see `RECONNECT_MAX_DELAY`), so that requests fail fast while
/// Redis is down and the connection is back soon after Redis is.
const RECONNECT_RETRIES: usize = 2;

/// The longest pause between two connection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(250);

/// Renews a lease held by `ARGV[1]` for `ARGV[2]` ms.
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

/// Gives up a lease held by `ARGV[1]`: puts `issued` back for `ARGV[2]` ms,
/// or deletes the key when that is 0.
const RESTORE: &str = r"
if redis.call('GET', KEYS[1]) ~= 'claimed:' .. ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], 'issued', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Takes a lease on a key that holds `issued`. Answers 1 when taken, 2 when
/// another holder has it, 0 when absent.
const TAKE_ISSUED: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == 'issued' then
  redis.call('SET', KEYS[1], 'claimed:' .. ARGV[1], 'PX', ARGV[2])
  return 1
end
return 2
";

/// Counts a hit in a window of `ARGV[1]` ms that starts at the first hit.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

/// Drops the members of a sorted set scored by expiry (Unix µs) that
/// expired at `ARGV[3]`, takes out the ones that expire first until fewer
/// than `ARGV[4]` are left, and adds `ARGV[1]` scored `ARGV[2]`. Answers the
/// members taken out. The set lives as long as its last member.
const ADD_EVICTING: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZREM', KEYS[1], ARGV[1])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4]) + 1
local evicted = {}
if over > 0 then
  evicted = redis.call('ZRANGE', KEYS[1], 0, over - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2]) / 1000) + 1000)
return evicted
";

/// Drops the members of a sorted set scored by expiry (Unix µs) that
/// expired at `ARGV[3]`; then adds `ARGV[1]` scored `ARGV[2]` if it is a
/// member already or fewer than `ARGV[4]` are left. Answers 1 when added.
/// The set lives as long as its last member.
const ADD_CAPPED: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
  and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2]) / 1000) + 1000)
return 1
";

/// Gives the member `ARGV[1]` of a sorted set scored by expiry the score
/// `ARGV[2]`, if it is there; the set lives as long as its last member.
const RESCORE: &str = r"
if redis.call('ZADD', KEYS[1], 'XX', 'CH', ARGV[2], ARGV[1]) == 0 then return 0 end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.floor(tonumber(last[2]) / 1000) + 1000)
return 1
";

/// Deletes a key that holds `issued`.
const END_ISSUED: &str = r"
if redis.call('GET', KEYS[1]) ~= 'issued' then return 0 end
redis.call('DEL', KEYS[1])
return 1
";

/// If the key holds `ARGV[1]`: sets it to `ARGV[2]` for `ARGV[3]` ms, or
/// deletes it when `ARGV[3]` is 0.
const SWAP: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Where Redis is: one server, or the seed nodes of a cluster. `Debug`
/// shows the URLs without their passwords.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One server (`redis://`, or `rediss://` for TLS).
    Single(String),
    /// A Redis Cluster, found from these nodes.
    Cluster(Vec<String>),
    /// A master (and its replicas) watched by Sentinel.
    Sentinel {
        /// The sentinels, `host:port`.
        sentinels: Vec<String>,
        /// The master's name there.
        master: String,
        /// A URL whose scheme, user, password and database the master
        /// takes (its host is the sentinels' to say).
        node: String,
    },
}

impl std::fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(url) => f.debug_tuple("Single").field(&redacted_url(url)).finish(),
            Self::Cluster(nodes) => f
                .debug_tuple("Cluster")
                .field(
                    &nodes
                        .iter()
                        .map(|url| redacted_url(url))
                        .collect::<Vec<_>>(),
                )
                .finish(),
            Self::Sentinel {
                sentinels,
                master,
                node,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("node", &redacted_url(node))
                .finish(),
        }
    }
}

/// Everything the service needs to use Redis: where it is, how to log in,
/// and what it accepts of it.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is.
    pub topology: RedisTopology,
    /// The ACL user and password, and the TLS certificates.
    pub access: RedisAccess,
    /// Whether a `maxmemory-policy` other than `noeviction` is accepted
    /// (`AMO_REDIS_ALLOW_EVICTION`).
    pub allow_eviction: bool,
}

impl RedisTopology {
    /// Parses `AMO_REDIS_URL`: one URL names one server; several URLs
    /// separated by commas name the nodes of a cluster, and so does one URL
    /// whose scheme is `redis+cluster://` (or `rediss+cluster://`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let urls: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        let (cluster_scheme, mut urls): (Vec<bool>, Vec<String>) = urls
            .into_iter()
            .map(|url| match url.split_once("+cluster://") {
                Some((scheme, rest)) => (true, format!("{scheme}://{rest}")),
                None => (false, url),
            })
            .unzip();
        // `redis+cluster://a:1,b:2`: the nodes after the first take its
        // scheme (and credentials).
        if cluster_scheme.first() == Some(&true)
            && let Some((prefix, _)) = urls[0].split_once("://")
        {
            let prefix = prefix.to_owned();
            let user = urls[0]
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .map(|(user, _)| format!("{user}@"))
                .unwrap_or_default();
            for url in urls.iter_mut().skip(1).filter(|url| !url.contains("://")) {
                *url = format!("{prefix}://{user}{url}");
            }
        }
        for url in &urls {
            redis::Client::open(url.as_str())
                .map_err(|err| format!("{} is not a valid Redis URL: {err}", redacted_url(url)))?;
        }
        match urls.as_slice() {
            [] => Err("no Redis URL given".into()),
            [url] if !cluster_scheme[0] => Ok(Self::Single(url.clone())),
            _ => Ok(Self::Cluster(urls)),
        }
    }

    /// Redis behind the sentinels `sentinels` (`host:port`, separated by
    /// commas) that watch the master `master`; `url` (`AMO_REDIS_URL`, if
    /// any) gives the master's scheme, user, password and database.
    pub fn sentinel(sentinels: &str, master: &str, url: Option<&str>) -> Result<Self, String> {
        let sentinels: Vec<String> = sentinels
            .split(',')
            .map(str::trim)
            .filter(|address| !address.is_empty())
            .map(str::to_owned)
            .collect();
        if sentinels.is_empty() {
            return Err("no sentinel given".into());
        }
        for address in &sentinels {
            let port = address
                .rsplit_once(':')
                .map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) || address.contains('/') {
                return Err(format!("{address:?} is not host:port"));
            }
        }
        if master.trim().is_empty() {
            return Err("the master name is empty".into());
        }
        let node = url.unwrap_or("redis://127.0.0.1").to_owned();
        if node.starts_with("rediss://") {
            return Err("TLS to a master found through Sentinel is not supported yet".into());
        }
        let single = match Self::parse(&node)? {
            Self::Single(url) => url,
            _ => return Err("with Sentinel, AMO_REDIS_URL names one server".into()),
        };
        Ok(Self::Sentinel {
            sentinels,
            master: master.trim().to_owned(),
            node: single,
        })
    }

    /// The URLs it names.
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Single(url) | Self::Sentinel { node: url, .. } => std::slice::from_ref(url),
            Self::Cluster(nodes) => nodes,
        }
    }

    /// Whether its URLs are `rediss://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.urls().iter().any(|url| url.starts_with("rediss://"))
    }
}

/// One connection, to a server or a cluster; the scripts run on either.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
        }
    }
}

struct Scripts {
    renew: Script,
    end: Script,
    restore: Script,
    take_issued: Script,
    hit: Script,
    add_evicting: Script,
    add_capped: Script,
    rescore: Script,
    end_issued: Script,
    swap: Script,
}

/// The shared state in Redis.
#[derive(Clone)]
pub struct RedisState {
    config: Arc<RedisConfig>,
    connection: Arc<OnceCell<Connection>>,
    scripts: Arc<Scripts>,
}

impl RedisState {
    /// A handle on the Redis of `config`; nothing is contacted yet.
    pub fn new(config: RedisConfig) -> Self {
        Self {
            config: Arc::new(config),
            connection: Arc::new(OnceCell::new()),
            scripts: Arc::new(Scripts {
                renew: Script::new(RENEW),
                end: Script::new(END),
                restore: Script::new(RESTORE),
                take_issued: Script::new(TAKE_ISSUED),
                hit: Script::new(HIT),
                add_evicting: Script::new(ADD_EVICTING),
                add_capped: Script::new(ADD_CAPPED),
                rescore: Script::new(RESCORE),
                end_issued: Script::new(END_ISSUED),
                swap: Script::new(SWAP),
            }),
        }
    }

    /// A connection; reconnects by itself once made.
    async fn connection(&self) -> Result<Connection, StateError> {
        self.connection
            .get_or_try_init(|| connect(&self.config.topology, &self.config.access))
            .await
            .cloned()
            .map_err(failed)
    }

    /// Runs a script with its keys and arguments.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        bounded(async {
            let mut conn = self.connection().await?;
            invocation.invoke_async(&mut conn).await.map_err(failed)
        })
        .await
    }

    /// Runs one command.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StateError> {
        bounded(async {
            let mut conn = self.connection().await?;
            cmd.query_async(&mut conn).await.map_err(failed)
        })
        .await
    }

    /// `cmd`'s answer from every primary, by node: errors as text.
    async fn on_primaries(
        &self,
        cmd: &Cmd,
    ) -> Result<Vec<(String, Result<Value, String>)>, StateError> {
        bounded(async {
            match self.connection().await? {
                Connection::Single(mut conn) => {
                    let node = redacted_url(&self.config.topology.urls()[0]);
                    let answer = cmd.query_async::<Value>(&mut conn).await;
                    Ok(vec![(node, answer.map_err(|err| err.to_string()))])
                }
                Connection::Sentinel(mut conn) => {
                    let node = match &self.config.topology {
                        RedisTopology::Sentinel { master, .. } => {
                            format!("the master {master:?} of the sentinels")
                        }
                        topology => redacted_url(&topology.urls()[0]),
                    };
                    let answer = cmd.query_async::<Value>(&mut conn).await;
                    Ok(vec![(node, answer.map_err(|err| err.to_string()))])
                }
                Connection::Cluster(mut conn) => {
                    let routing =
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                    let answers = conn
                        .route_command(cmd.clone(), routing)
                        .await
                        .map_err(failed)?;
                    let answers: Vec<(String, Value)> = redis::from_redis_value(answers)
                        .map_err(|err| StateError::Unexpected(err.to_string()))?;
                    Ok(answers
                        .into_iter()
                        .map(|(node, answer)| match answer {
                            Value::ServerError(err) => (node, Err(err.to_string())),
                            answer => (node, Ok(answer)),
                        })
                        .collect())
                }
            }
        })
        .await
    }

    /// What every primary says of its eviction policy, persistence and
    /// replicas.
    pub async fn report(&self) -> Result<RedisReport, StateError> {
        let mut config = redis::cmd("CONFIG");
        config.arg("GET").arg("maxmemory-policy").arg("save");
        let mut persistence = redis::cmd("INFO");
        persistence.arg("persistence");
        let mut replication = redis::cmd("INFO");
        replication.arg("replication");
        let (config, persistence, replication) = tokio::try_join!(
            self.on_primaries(&config),
            self.on_primaries(&persistence),
            self.on_primaries(&replication),
        )?;
        let mut persistence: std::collections::HashMap<_, _> = persistence.into_iter().collect();
        let mut replication: std::collections::HashMap<_, _> = replication.into_iter().collect();
        let missing = || Err("no answer".to_owned());
        let mut nodes: Vec<RedisNodeReport> = config
            .into_iter()
            .map(|(node, config)| {
                let persistence = persistence.remove(&node).unwrap_or_else(missing);
                let replication = replication.remove(&node).unwrap_or_else(missing);
                RedisNodeReport::from_answers(node, config, persistence, replication)
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(RedisReport {
            nodes,
            eviction_allowed: self.config.allow_eviction,
        })
    }
}

/// `operation` (one command or script: one call in
/// `amo_backend_calls_total{backend="redis"}`), failed if it takes longer
/// than [`TIMEOUT`] in all: the
/// response timeout covers one command on a live connection, not the wait
/// for a connection being made again.
async fn bounded<T>(
    operation: impl Future<Output = Result<T, StateError>>,
) -> Result<T, StateError> {
    let outcome = tokio::time::timeout(TIMEOUT, operation)
        .await
        .unwrap_or_else(|_| {
            Err(StateError::unavailable(format!(
                "no answer from Redis within {TIMEOUT:?}"
            )))
        });
    crate::metrics::backend_call("redis", outcome.is_ok());
    outcome
}

/// A failed command or connection: Redis's error is the cause.
fn failed(err: redis::RedisError) -> StateError {
    StateError::Unavailable(Box::new(err))
}

/// How a connection to one server (re)connects.
fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

async fn connect(topology: &RedisTopology, access: &RedisAccess) -> redis::RedisResult<Connection> {
    match topology {
        RedisTopology::Sentinel {
            sentinels,
            master,
            node,
        } => {
            let node = access.connection_info(node)?;
            Ok(Connection::Sentinel(
                SentinelConnection::connect(sentinels, master, &node, manager_config()).await?,
            ))
        }
        RedisTopology::Single(url) => {
            let config = manager_config();
            let client = access.client(url)?;
            Ok(Connection::Single(
                client.get_connection_manager_with_config(config).await?,
            ))
        }
        RedisTopology::Cluster(nodes) => {
            let nodes = nodes
                .iter()
                .map(|url| access.connection_info(url))
                .collect::<redis::RedisResult<Vec<_>>>()?;
            let mut builder = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(TIMEOUT)
                .response_timeout(TIMEOUT)
                .tcp_settings(super::redis_access::tcp_settings());
            if let Some(username) = access.username() {
                builder = builder.username(username);
            }
            if let Some(password) = access.password() {
                builder = builder.password(secrecy::ExposeSecret::expose_secret(password));
            }
            if let Some(certs) = access.tls() {
                builder = builder.certs(certs.clone());
            }
            Ok(Connection::Cluster(
                builder.build()?.get_async_connection().await?,
            ))
        }
    }
}

fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}

#[async_trait]
impl SharedState for RedisState {
    fn kind(&self) -> &'static str {
        match self.config.topology {
            RedisTopology::Single(_) => "redis",
            RedisTopology::Cluster(_) => "redis cluster",
            RedisTopology::Sentinel { .. } => "redis sentinel",
        }
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
    }

    async fn redis_report(&self) -> Result<Option<RedisReport>, StateError> {
        self.report().await.map(Some)
    }

    async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("NX").arg("PX").arg(millis(ttl));
        Ok(self.query::<Option<String>>(&cmd).await?.is_some())
    }

    async fn take_issued(
        &self,
        key: &str,
        holder: &str,
        lease: Duration,
    ) -> Result<Taken, StateError> {
        let answer: i64 = self
            .run(
                self.scripts
                    .take_issued
                    .key(key)
                    .arg(holder)
                    .arg(millis(lease)),
            )
            .await?;
        Ok(match answer {
            1 => Taken::Now,
            2 => Taken::ByAnother,
            _ => Taken::Absent,
        })
    }

    async fn renew(&self, key: &str, holder: &str, lease: Duration) -> Result<bool, StateError> {
        let done: i64 = self
            .run(self.scripts.renew.key(key).arg(holder).arg(millis(lease)))
            .await?;
        Ok(done == 1)
    }

    async fn end(&self, key: &str, holder: &str) -> Result<bool, StateError> {
        let done: i64 = self.run(self.scripts.end.key(key).arg(holder)).await?;
        Ok(done == 1)
    }

    async fn restore(
        &self,
        key: &str,
        holder: &str,
        remaining: Duration,
    ) -> Result<bool, StateError> {
        let done: i64 = self
            .run(
                self.scripts
                    .restore
                    .key(key)
                    .arg(holder)
                    .arg(remaining.as_millis() as u64),
            )
            .await?;
        Ok(done == 1)
    }

    async fn value(&self, key: &str) -> Result<Option<String>, StateError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn remaining(&self, key: &str) -> Result<Option<Duration>, StateError> {
        let millis: i64 = self.query(redis::cmd("PTTL").arg(key)).await?;
        Ok(u64::try_from(millis).ok().map(Duration::from_millis))
    }

    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StateError> {
        self.run(self.scripts.hit.key(key).arg(millis(window)))
            .await
    }

    async fn add_evicting(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<Vec<String>, StateError> {
        self.run(
            self.scripts
                .add_evicting
                .key(key)
                .arg(member)
                .arg(expires_us)
                .arg(unix_now_micros())
                .arg(cap.max(1)),
        )
        .await
    }

    async fn add_capped(
        &self,
        key: &str,
        member: &str,
        expires_us: u64,
        cap: u64,
    ) -> Result<bool, StateError> {
        let done: i64 = self
            .run(
                self.scripts
                    .add_capped
                    .key(key)
                    .arg(member)
                    .arg(expires_us)
                    .arg(unix_now_micros())
                    .arg(cap),
            )
            .await?;
        Ok(done == 1)
    }

    async fn rescore(&self, key: &str, member: &str, expires_us: u64) -> Result<(), StateError> {
        self.run::<i64>(self.scripts.rescore.key(key).arg(member).arg(expires_us))
            .await
            .map(drop)
    }

    async fn end_issued(&self, key: &str) -> Result<bool, StateError> {
        let done: i64 = self.run(&self.scripts.end_issued.key(key)).await?;
        Ok(done == 1)
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<(), StateError> {
        self.query::<i64>(redis::cmd("ZREM").arg(key).arg(member))
            .await
            .map(drop)
    }

    async fn swap(
        &self,
        key: &str,
        expected: &str,
        new: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let ttl = match new {
            Some(_) => millis(ttl).max(1),
            None => 0,
        };
        let done: i64 = self
            .run(
                self.scripts
                    .swap
                    .key(key)
                    .arg(expected)
                    .arg(new.unwrap_or(""))
                    .arg(ttl),
            )
            .await?;
        Ok(done == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_is_one_server_and_several_or_a_cluster_scheme_are_a_cluster() {
        assert_eq!(
            RedisTopology::parse("redis://127.0.0.1:6379"),
            Ok(RedisTopology::Single("redis://127.0.0.1:6379".into()))
        );
        assert_eq!(
            RedisTopology::parse("redis://a:1, redis://b:2"),
            Ok(RedisTopology::Cluster(vec![
                "redis://a:1".into(),
                "redis://b:2".into()
            ]))
        );
        assert_eq!(
            RedisTopology::parse("redis+cluster://a:1"),
            Ok(RedisTopology::Cluster(vec!["redis://a:1".into()]))
        );
        assert_eq!(
            RedisTopology::parse("rediss+cluster://a:1,b:2"),
            Ok(RedisTopology::Cluster(vec![
                "rediss://a:1".into(),
                "rediss://b:2".into()
            ]))
        );
        assert!(RedisTopology::parse("").is_err());
        assert!(RedisTopology::parse("http://a:1").is_err());
    }

    #[test]
    fn sentinels_are_host_port_pairs_and_the_url_names_one_master() {
        assert_eq!(
            RedisTopology::sentinel("s1:26379, s2:26380", "amo", Some("redis://:pw@ignored/2")),
            Ok(RedisTopology::Sentinel {
                sentinels: vec!["s1:26379".into(), "s2:26380".into()],
                master: "amo".into(),
                node: "redis://:pw@ignored/2".into(),
            })
        );
        assert!(matches!(
            RedisTopology::sentinel("s1:26379", "amo", None),
            Ok(RedisTopology::Sentinel { node, .. }) if node == "redis://127.0.0.1"
        ));
        for (sentinels, master, url) in [
            ("", "amo", None),
            ("s1", "amo", None),
            ("s1:port", "amo", None),
            ("redis://s1:26379", "amo", None),
            ("s1:26379", " ", None),
            ("s1:26379", "amo", Some("redis://a:1,redis://b:2")),
        ] {
            assert!(
                RedisTopology::sentinel(sentinels, master, url).is_err(),
                "{sentinels:?} {master:?} {url:?}"
            );
        }
    }
}
