//! What Redis must be, checked: every key here has a lifetime, so under any
//! `maxmemory-policy` but `noeviction` Redis may drop a consumed token's
//! record (the token works again), a write lock or a multipart mark when it
//! fills up. The start-up check refuses such a Redis unless
//! `AMO_REDIS_ALLOW_EVICTION` says otherwise; persistence (AOF, RDB) and
//! replicas are reported, in the start-up log and in `/status/backends`.
//! A managed service that refuses `CONFIG` is reported as such, and the
//! service goes on.

use std::collections::HashMap;

use redis::Value;

/// The one `maxmemory-policy` that never drops a key.
pub const NO_EVICTION: &str = "noeviction";

/// What one Redis primary says about itself (`/status/backends`).
#[derive(Debug, Clone, Default, PartialEq, Eq, poem_openapi::Object)]
#[oai(skip_serializing_if_is_none)]
pub struct RedisNodeReport {
    /// The node (its address, without credentials).
    pub node: String,
    /// `maxmemory-policy`; `None` when `CONFIG` is refused.
    pub maxmemory_policy: Option<String>,
    /// Whether the append-only file is on (`INFO persistence`).
    pub aof: Option<bool>,
    /// The RDB snapshot schedule (`save`): empty when off; `None` when
    /// `CONFIG` is refused.
    pub rdb_save: Option<String>,
    /// The replicas connected to it (`INFO replication`).
    pub connected_replicas: Option<u64>,
    /// Why `CONFIG GET` was refused, if it was (a managed service).
    pub config_refused: Option<String>,
}

/// What the primaries of the shared state say about themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisReport {
    /// One entry per primary (one for a single server).
    pub nodes: Vec<RedisNodeReport>,
    /// Whether an evicting `maxmemory-policy` is accepted
    /// (`AMO_REDIS_ALLOW_EVICTION`).
    pub eviction_allowed: bool,
}

impl RedisReport {
    /// Why the service must not run on this Redis, if it must not: a
    /// primary that may evict keys, unless that is allowed.
    pub fn refusal(&self) -> Option<String> {
        if self.eviction_allowed {
            return None;
        }
        let evicting: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|node| match node.maxmemory_policy.as_deref() {
                Some(policy) if policy != NO_EVICTION => {
                    Some(format!("{} on {}", policy, node.node))
                }
                _ => None,
            })
            .collect();
        if evicting.is_empty() {
            return None;
        }
        Some(format!(
            "Redis maxmemory-policy is {}; it must be {NO_EVICTION}: an evicted token record \
             lets a used token work again (set maxmemory-policy {NO_EVICTION} on Redis, or \
             AMO_REDIS_ALLOW_EVICTION=true to run anyway)",
            evicting.join(", ")
        ))
    }
}

impl RedisNodeReport {
    /// The report of `node` from its answers to `CONFIG GET maxmemory-policy
    /// save`, `INFO persistence` and `INFO replication` (errors as text).
    pub fn from_answers(
        node: String,
        config: Result<Value, String>,
        persistence: Result<Value, String>,
        replication: Result<Value, String>,
    ) -> Self {
        let (config, config_refused) = match config.and_then(config_pairs) {
            Ok(pairs) => (pairs, None),
            Err(err) => (HashMap::new(), Some(err)),
        };
        let persistence = info_fields(persistence);
        let replication = info_fields(replication);
        Self {
            node,
            maxmemory_policy: config.get("maxmemory-policy").cloned(),
            aof: persistence.get("aof_enabled").map(|value| value == "1"),
            rdb_save: config.get("save").cloned(),
            connected_replicas: replication
                .get("connected_slaves")
                .and_then(|count| count.parse().ok()),
            config_refused,
        }
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let unknown = "unknown";
        format!(
            "{}: maxmemory-policy {}, AOF {}, RDB snapshots {}, {} connected replicas",
            self.node,
            self.maxmemory_policy.as_deref().unwrap_or(unknown),
            self.aof.map_or(unknown, |on| if on { "on" } else { "off" }),
            match self.rdb_save.as_deref() {
                None => unknown,
                Some("") => "off",
                Some(schedule) => schedule,
            },
            self.connected_replicas
                .map_or(unknown.to_owned(), |count| count.to_string()),
        )
    }

    /// What a restart of this node does to the keys, when that is a risk:
    /// with neither AOF nor RDB it loses them all (a used token stays
    /// refused, but locks, multipart marks and resumable uploads go); with
    /// RDB snapshots alone it brings back those of the last snapshot, and a
    /// token used since works again. `None` with AOF on, or when unknown.
    pub fn restart_risk(&self) -> Option<&'static str> {
        match (self.aof, self.rdb_save.as_deref()) {
            (Some(false), Some("")) => Some(
                "Redis keeps no AOF and no RDB snapshots: a restart loses every key (write \
                 locks, multipart marks, resumable uploads; tokens issued before it are refused)",
            ),
            (Some(false), Some(_)) => Some(
                "Redis keeps RDB snapshots without AOF: a restart brings back the keys of the \
                 last snapshot, so a token used since then works again (turn appendonly on)",
            ),
            _ => None,
        }
    }
}

/// `CONFIG GET`'s answer as name → value (RESP2 flat array or RESP3 map).
fn config_pairs(value: Value) -> Result<HashMap<String, String>, String> {
    match value {
        Value::ServerError(err) => Err(err.to_string()),
        value => redis::from_redis_value(value).map_err(|err| err.to_string()),
    }
}

/// The `name:value` lines of an `INFO` answer.
fn info_fields(answer: Result<Value, String>) -> HashMap<String, String> {
    let text: String = match answer {
        Ok(Value::ServerError(_)) | Err(_) => return HashMap::new(),
        Ok(value) => redis::from_redis_value(value).unwrap_or_default(),
    };
    text.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_evicting_policy_is_refused_by_name_unless_allowed() {
        let node = RedisNodeReport::from_answers(
            "127.0.0.1:1".into(),
            Ok(Value::Array(vec![
                bulk("maxmemory-policy"),
                bulk("allkeys-lru"),
                bulk("save"),
                bulk(""),
            ])),
            Ok(bulk("# Persistence\r\naof_enabled:0\r\n")),
            Ok(bulk(
                "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n",
            )),
        );
        assert_eq!(node.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(node.connected_replicas, Some(2));
        assert!(node.restart_risk().unwrap().contains("no AOF and no RDB"));
        let mut report = RedisReport {
            nodes: vec![node],
            eviction_allowed: false,
        };
        let refusal = report.refusal().expect("refused");
        assert!(refusal.contains("maxmemory-policy is allkeys-lru"));
        assert!(refusal.contains("AMO_REDIS_ALLOW_EVICTION"));
        report.eviction_allowed = true;
        assert_eq!(report.refusal(), None);
    }

    #[test]
    fn a_refused_config_is_reported_and_not_refused() {
        let node = RedisNodeReport::from_answers(
            "managed".into(),
            Err("NOPERM this user has no permissions".into()),
            Ok(bulk("aof_enabled:1\r\n")),
            Err("NOPERM".into()),
        );
        assert!(node.config_refused.as_deref().unwrap().contains("NOPERM"));
        assert_eq!(node.maxmemory_policy, None);
        assert_eq!(node.restart_risk(), None);
        let report = RedisReport {
            nodes: vec![node],
            eviction_allowed: false,
        };
        assert_eq!(report.refusal(), None);
    }
}
