//! The TOML schema of `conf/*.toml`, exactly as operators write it. Every field is optional and
//! unknown fields are errors. Units are in the field names (`_ms`, `_bytes`); conversion and
//! validation happen in `config.rs`, never here.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address clients connect to, e.g. "127.0.0.1:6380".
    pub listen: Option<String>,
    /// A Unix socket clients may connect to as well (redis-server's `unixsocket`), an absolute
    /// path; off if unset.
    pub unix_socket: Option<String>,
    /// The socket file's permissions, in octal (redis-server's `unixsocketperm`); "700" if unset.
    pub unix_socket_perm: Option<String>,
    /// "cluster" (default), "sentinel" or "standalone".
    pub mode: Option<String>,
    /// Cluster nodes to learn the topology from (cluster mode).
    pub seeds: Option<Vec<String>>,
    /// Sentinels to ask for the master (sentinel mode).
    pub sentinels: Option<Vec<String>>,
    /// The master's name as the Sentinels know it (sentinel mode).
    pub master_name: Option<String>,
    /// Optional AUTH for the Sentinels.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// The one server (standalone mode).
    pub server: Option<String>,
    /// "split" (default) or "strict".
    pub multi_key: Option<String>,
    /// Log filter, e.g. "info" or "slotgate=debug".
    pub log: Option<String>,
    /// Worker threads (thread per core): 0 (default) uses one per CPU; 1 runs everything on one
    /// thread.
    pub threads: Option<usize>,
    /// "epoll" (default) or "uring": how plaintext TCP sockets are driven (restart to change).
    pub io: Option<String>,
    pub config_check_ms: Option<u64>,
    #[serde(default)]
    pub clients: ClientsFile,
    #[serde(default)]
    pub backend: BackendFile,
    #[serde(default)]
    pub topology: TopologyFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub reads: ReadsFile,
    /// Proxy users: `[[users]] name = "app" rules = "on >secret ~* &* +@read"`.
    pub users: Option<Vec<UserFile>>,
    /// The zone (or region) slotgate runs in, e.g. "eu-west-1a".
    pub zone: Option<String>,
    /// The zones nodes are in: `[[zones]] name = "eu-west-1a" nodes = ["10.1.0.0/16",
    /// ".euw1a.internal"]` (address ranges, or host-name suffixes); the first match wins.
    pub zones: Option<Vec<ZoneFile>>,
    /// Key families kept in one slot: `[[colocate]] preset = "celery"` or `[[colocate]] name =
    /// "jobs" keys = ["queue:*", "lock:*"]` (names, `prefix*`, globs with `*` and `?`).
    pub colocate: Option<Vec<ColocateFile>>,
}

/// One key family.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColocateFile {
    /// The family's name, its hash tag (`{name}`); the preset's name by default.
    pub name: Option<String>,
    /// A well-known library's keys: "celery" or "rq".
    pub preset: Option<String>,
    /// Key patterns of the family (besides the preset's).
    pub keys: Option<Vec<String>>,
}

/// One zone of the zone map.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneFile {
    pub name: String,
    /// Address ranges (CIDR, or one address) and host-name suffixes of the zone's nodes.
    pub nodes: Vec<String>,
}

/// One proxy user, with Redis' ACL rules.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    /// Rules as `ACL SETUSER` takes them, applied in order after `reset`: on/off, >password,
    /// #sha256, nopass, +command, -command, +@category, -@category, +command|subcommand,
    /// ~pattern / allkeys / resetkeys, &pattern / allchannels / resetchannels.
    pub rules: String,
}

/// The TLS listener for clients: `[tls]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Address of the TLS listener (beside `listen`); off if unset.
    pub listen: Option<String>,
    /// Certificate chain and private key (PEM), reloaded when the files change or on SIGHUP.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// When set, a client certificate from this CA (PEM) is required (mutual TLS).
    pub client_ca_file: Option<String>,
    /// Oldest TLS version accepted: "1.3" (default) or "1.2".
    pub min_version: Option<String>,
    /// A client that has not finished its handshake by then is closed.
    pub handshake_timeout_ms: Option<u64>,
    /// How often the certificate files are checked for a change.
    pub reload_check_ms: Option<u64>,
    /// "CN": a client certificate logs the client in as the proxy user its subject's common
    /// name names (mutual TLS only); "off" (default): certificates name nobody.
    pub auth_clients_user: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// Address of the admin HTTP listener (/metrics, /health, /ready, /topology); off if unset.
    pub listen: Option<String>,
    /// Bearer token required on every admin path but /health.
    pub token: Option<String>,
    /// How often every backend's INFO is polled.
    pub info_interval_ms: Option<u64>,
    /// HTTPS with the `[tls]` certificate (no client certificate asked for: the token guards it).
    pub tls: Option<bool>,
    /// What `/ready` requires: "one-master" (default) or "all-slots".
    pub ready_requires: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientsFile {
    pub max_clients: Option<usize>,
    pub max_pipeline: Option<usize>,
    pub max_redirects: Option<u32>,
    pub max_tryagain: Option<u32>,
    pub tryagain_delay_ms: Option<u64>,
    /// How long a request its master failed without running it waits for a new master; 0
    /// fails it at once.
    pub failover_hold_ms: Option<u64>,
    /// Most bytes of requests the failover hold keeps for one shard; past it they fail at
    /// once. 0: no limit.
    pub failover_hold_max_bytes: Option<usize>,
    pub drain_timeout_ms: Option<u64>,
    /// Send FLUSHALL, FLUSHDB and CONFIG SET/RESETSTAT/REWRITE to every master.
    pub fleet_writes: Option<bool>,
    /// Close a client idle this long (Redis' `timeout`); 0 never does.
    pub idle_timeout_ms: Option<u64>,
    /// Reply bytes held for a client that does not read them before it is closed; 0: no limit.
    pub output_buffer_limit_bytes: Option<usize>,
    /// Most bytes every client's buffers (partial requests, unread replies) hold together; past
    /// it the clients holding the most are closed (Redis' `maxmemory-clients`). 0: no budget.
    pub memory_budget_bytes: Option<usize>,
    /// Close a client whose partial request has waited this long for its last bytes (a
    /// slowloris); 0: never.
    pub request_timeout_ms: Option<u64>,
    /// Commands (`flushall`) and subcommands (`config|set`) no client may run: they are
    /// answered as unknown, as Redis answers a command hidden by `rename-command`.
    pub deny_commands: Option<Vec<String>>,
    /// Failed AUTHs one client address may make in a minute; past it, its AUTHs close the
    /// connection until the minute is over. 0: no limit (as Redis).
    pub max_auth_failures_per_minute: Option<u32>,
    /// The `default` user's password, as Redis' `requirepass`: clients must AUTH first.
    /// `SLOTGATE_REQUIREPASS` keeps it out of the file.
    pub requirepass: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendFile {
    /// The ACL user slotgate logs in to every node as (`AUTH user password`); unset: the
    /// `default` user.
    pub user: Option<String>,
    /// The password for `AUTH` on every node connection, control connections included
    /// (`requirepass`, or the user's). `SLOTGATE_BACKEND_PASSWORD` keeps it out of the file.
    pub password: Option<String>,
    pub connections_per_node: Option<usize>,
    pub connect_timeout_ms: Option<u64>,
    pub read_timeout_ms: Option<u64>,
    pub queue_depth: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub backoff_min_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub max_private_per_node: Option<usize>,
    pub warm_private_per_node: Option<usize>,
    /// TLS to the nodes (and the Sentinels): `[backend.tls]`.
    #[serde(default)]
    pub tls: BackendTlsFile,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsFile {
    /// Connect to the nodes over TLS (their `tls-port`).
    pub enabled: Option<bool>,
    /// CA bundle the nodes' certificates must chain to (PEM); needed with TLS. For a managed
    /// service, the system bundle (`/etc/ssl/certs/ca-certificates.crt`) usually holds it.
    pub ca_file: Option<String>,
    /// Client certificate and key (PEM) for nodes with `tls-auth-clients yes`.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// The name the nodes' certificates must carry, when it is not the host connected to
    /// (nodes announced by IP behind one DNS name).
    pub server_name: Option<String>,
    /// Oldest TLS version accepted: "1.3" (default) or "1.2".
    pub min_version: Option<String>,
}

/// Where reads go: `[reads]`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReadsFile {
    /// "master" (default), "prefer-replica", "same-zone", "same-zone-or-master" or "nearest".
    pub from: Option<String>,
    /// A replica further behind its master than this (its last ACK, as the master's INFO
    /// replication says) gets no reads until it catches up.
    pub max_replica_lag_ms: Option<u64>,
    /// How often each master's INFO replication is read to judge its replicas.
    pub check_interval_ms: Option<u64>,
    /// After a client writes a slot, its reads of that slot go to the master for this long
    /// (0, the default: off).
    pub read_your_writes_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    pub refresh_interval_ms: Option<u64>,
    pub refresh_debounce_ms: Option<u64>,
    pub refresh_min_gap_ms: Option<u64>,
    pub discovery_timeout_ms: Option<u64>,
    pub startup_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_bulk_bytes: Option<usize>,
    pub max_inline_bytes: Option<usize>,
    pub max_args: Option<usize>,
    pub max_request_bytes: Option<usize>,
    pub max_reply_depth: Option<usize>,
}
