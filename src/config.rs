//! The validated internal configuration: addresses parsed, durations as `Duration`, limits
//! checked against each other. Built from the TOML file (`config/file.rs`) with command-line
//! flags layered on top. Nothing outside this module reads the file schema, and it must never
//! hand out a value it has not checked.

pub mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::connector::ClientTls;
use crate::backend::{BackendConfig, Connector, Credentials, NodeAddr, ReplicaLinks, Secret};
use crate::frontend::{MultiKeyPolicy, SessionConfig};
use crate::protocol::Limits;
use crate::tls::{ClientFiles, MinVersion, ServerCert, ServerFiles};
use crate::topology::refresh::RefreshConfig;
pub use file::FileConfig;
use file::{BackendFile, BackendTlsFile, TlsFile};

/// How plaintext TCP sockets (the clients' and the nodes') are driven: tokio's reactor (epoll),
/// or one io_uring ring per worker (`crate::uring`; epoll where the kernel refuses io_uring).
/// TLS and Unix sockets are driven by epoll either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoModel {
    Epoll,
    Uring,
}

/// Everything slotgate runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The Unix socket clients may connect to as well, if any.
    pub unix_socket: Option<UnixSocket>,
    /// Where the topology comes from.
    pub backend_mode: BackendMode,
    pub log: String,
    /// Runtime worker threads; 1 means a single-threaded runtime.
    pub threads: usize,
    /// How plaintext TCP sockets are driven (decided at start).
    pub io: IoModel,
    pub session: SessionConfig,
    pub backend: BackendConfig,
    pub refresh: RefreshConfig,
    pub discovery_timeout: Duration,
    pub startup_timeout: Duration,
    pub drain_timeout: Duration,
    /// How often the config file is checked for a change, which reloads it (`None`: only
    /// SIGHUP and `POST /reload` do).
    pub config_check: Option<Duration>,
    /// The admin HTTP listener, if any.
    pub admin: Option<AdminConfig>,
    /// The TLS listener for clients, if any.
    pub tls: Option<TlsListen>,
    /// Which zone each node is in: the topology snapshots read it.
    pub zones: crate::zones::ZoneMap,
    /// How replicas are judged fit for reads (when the read policy uses them).
    pub reads: ReadsConfig,
}

/// The replica checker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadsConfig {
    pub max_replica_lag: Duration,
    pub check_interval: Duration,
}

impl Default for ReadsConfig {
    fn default() -> Self {
        ReadsConfig {
            max_replica_lag: Duration::from_secs(10),
            check_interval: Duration::from_secs(1),
        }
    }
}

/// The TLS listener's settings, its certificate loaded and checked.
#[derive(Clone)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub files: ServerFiles,
    pub handshake_timeout: Duration,
    pub reload_check: Duration,
    /// A client certificate's subject CN names the user the client is logged in as.
    pub user_from_cn: bool,
    /// The certificate in use, which reloads replace.
    pub cert: Arc<ServerCert>,
    pub server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListen")
            .field("listen", &self.listen)
            .field("files", &self.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The admin endpoint's settings.
#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub info_interval: Duration,
    /// HTTPS: the TLS listener's certificate (and its reloads), no client certificate.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long an HTTPS handshake may take.
    pub handshake_timeout: Duration,
    /// What `/ready` requires.
    pub ready_requires: crate::admin::readiness::ReadyRequires,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("info_interval", &self.info_interval)
            .field("tls", &self.tls.is_some())
            .field("ready_requires", &self.ready_requires)
            .finish_non_exhaustive()
    }
}

/// What slotgate fronts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMode {
    /// A Redis Cluster, learned from these seed nodes.
    Cluster { seeds: Vec<NodeAddr> },
    /// A master watched by Sentinels.
    Sentinel {
        sentinels: Vec<NodeAddr>,
        master_name: String,
        auth: Option<Credentials>,
    },
    /// One Redis server.
    Standalone { server: NodeAddr },
}

impl BackendMode {
    /// The addresses start-up errors name.
    pub fn addresses(&self) -> Vec<NodeAddr> {
        match self {
            BackendMode::Cluster { seeds } => seeds.clone(),
            BackendMode::Sentinel { sentinels, .. } => sentinels.clone(),
            BackendMode::Standalone { server } => vec![server.clone()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {cause}")]
    Read {
        path: String,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: std::io::Error,
    },
    #[error("{path}: {cause}")]
    Parse {
        path: String,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: Box<toml::de::Error>,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// A Unix socket listener: its file and the file's mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    pub path: std::path::PathBuf,
    pub perm: u32,
}

/// The Unix socket's settings, checked: an absolute path short enough for a socket address,
/// and permissions in octal, at most 777.
fn unix_socket(
    path: Option<String>,
    perm: Option<String>,
) -> Result<Option<UnixSocket>, ConfigError> {
    let Some(path) = path else {
        if perm.is_some() {
            return Err(invalid("unix_socket_perm", "set without unix_socket"));
        }
        return Ok(None);
    };
    if !path.starts_with('/') {
        return Err(invalid(
            "unix_socket",
            format!("'{path}' is not an absolute path"),
        ));
    }
    // sun_path holds 108 bytes with the terminating NUL.
    if path.len() > 107 {
        return Err(invalid(
            "unix_socket",
            format!("'{path}' is longer than a socket address allows (107 bytes)"),
        ));
    }
    let perm_s = perm.unwrap_or_else(|| "700".into());
    let perm = match u32::from_str_radix(&perm_s, 8) {
        Ok(p) if p <= 0o777 => p,
        _ => {
            return Err(invalid(
                "unix_socket_perm",
                format!("'{perm_s}' is not a file mode in octal (for example 770)"),
            ));
        }
    };
    Ok(Some(UnixSocket {
        path: path.into(),
        perm,
    }))
}

/// Values given on the command line; each one overrides the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    /// `--unix-socket` and `--unix-socket-perm`.
    pub unix_socket: Option<String>,
    pub unix_socket_perm: Option<String>,
    pub seeds: Vec<String>,
    pub sentinels: Vec<String>,
    pub master_name: Option<String>,
    pub standalone: Option<String>,
    pub multi_key: Option<String>,
    pub max_clients: Option<usize>,
    pub log: Option<String>,
    pub threads: Option<usize>,
    pub io: Option<String>,
    pub admin: Option<String>,
    pub admin_tls: bool,
    pub backend_user: Option<String>,
    /// From `--backend-password` or `SLOTGATE_BACKEND_PASSWORD`.
    pub backend_password: Option<Secret>,
    /// `--backend-tls` and the files and name that go with it.
    pub backend_tls: bool,
    pub backend_ca: Option<String>,
    pub backend_cert: Option<String>,
    pub backend_key: Option<String>,
    pub backend_sni: Option<String>,
    /// From `--requirepass` or `SLOTGATE_REQUIREPASS`.
    pub requirepass: Option<Secret>,
    /// `--zone` (or SLOTGATE_ZONE) and `--zone-map` flags.
    pub zone: Option<String>,
    pub zone_map: Vec<String>,
    /// `--read-from` and `--read-your-writes-ms`.
    pub read_from: Option<String>,
    pub read_your_writes_ms: Option<u64>,
    /// `--tls-listen` and the files that go with it.
    pub tls_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_client_ca: Option<String>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_millis).unwrap_or(default)
}

/// A limit that 0 turns off: the value given (`None` for 0), or the default when none is.
fn zero_is_off<T: PartialEq + Default>(v: Option<T>, default: Option<T>) -> Option<T> {
    match v {
        Some(n) if n == T::default() => None,
        Some(n) => Some(n),
        None => default,
    }
}

/// A redirect or retry budget: at most 1,000 (a request is never bounced more than that; a
/// part counts its redirects in 16 bits).
fn budget(field: &'static str, value: Option<u32>, default: u16) -> Result<u16, ConfigError> {
    match value {
        None => Ok(default),
        Some(n) if n <= 1000 => Ok(n as u16),
        Some(_) => Err(invalid(field, "must be at most 1000")),
    }
}

fn positive(field: &'static str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(invalid(field, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// `AUTH` credentials from a user name and a password: a user needs a password, and an empty
/// password is refused (Redis has none to match it).
fn credentials(
    field: &'static str,
    user: Option<String>,
    password: Option<Secret>,
) -> Result<Option<Credentials>, ConfigError> {
    match (user, password) {
        (_, Some(p)) if p.expose().is_empty() => Err(invalid(field, "is empty")),
        (user, Some(password)) => Ok(Some(Credentials { user, password })),
        (Some(_), None) => Err(invalid(field, "a user name needs a password")),
        (None, None) => Ok(None),
    }
}

/// What slotgate logs in to the data nodes with: the flags' (or the environment's), else the
/// file's `[backend] user` and `password`.
fn backend_credentials(b: &BackendFile, o: &Overrides) -> Result<Option<Credentials>, ConfigError> {
    credentials(
        "backend.password",
        o.backend_user.clone().or_else(|| b.user.clone()),
        o.backend_password
            .clone()
            .or_else(|| b.password.as_deref().map(Secret::new)),
    )
}

/// `"1.2"` or `"1.3"`; TLS 1.3 when unset.
fn min_version(field: &'static str, v: &Option<String>) -> Result<MinVersion, ConfigError> {
    match v {
        None => Ok(MinVersion::default()),
        Some(v) => MinVersion::parse(v)
            .ok_or_else(|| invalid(field, format!("'{v}' is not \"1.2\" or \"1.3\""))),
    }
}

/// A flag's value, else the file's.
fn flag_or_file(flag: &Option<String>, file: &Option<String>) -> Option<String> {
    flag.clone().or_else(|| file.clone())
}

/// TLS towards the nodes, from the flags over `[backend.tls]`: off unless enabled (a CA file
/// named on its own does not turn it on); on, it needs a CA bundle, and a client certificate
/// comes with its key. Every file is read and checked now.
fn backend_tls(t: &BackendTlsFile, o: &Overrides) -> Result<Option<ClientTls>, ConfigError> {
    if !(o.backend_tls || t.enabled.unwrap_or(false)) {
        return Ok(None);
    }
    let pick = flag_or_file;
    let ca = pick(&o.backend_ca, &t.ca_file).ok_or_else(|| {
        invalid(
            "backend.tls.ca_file",
            "TLS to the nodes needs a CA bundle (--backend-ca FILE)",
        )
    })?;
    let cert_and_key = match (
        pick(&o.backend_cert, &t.cert_file),
        pick(&o.backend_key, &t.key_file),
    ) {
        (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "backend.tls.cert_file",
                "a client certificate and its key go together (--backend-cert, --backend-key)",
            ));
        }
    };
    let min_version = min_version("backend.tls.min_version", &t.min_version)?;
    let files = ClientFiles {
        ca: PathBuf::from(ca),
        cert_and_key,
        min_version,
    };
    let config =
        crate::tls::client_config(&files).map_err(|e| invalid("backend.tls", e.to_string()))?;
    Ok(Some(ClientTls {
        config,
        server_name: pick(&o.backend_sni, &t.server_name),
    }))
}

/// The TLS listener, from the flags over `[tls]`: on when it has an address, and then it needs
/// a certificate and its key; the files are loaded and checked now.
fn tls_listen(t: &TlsFile, o: &Overrides) -> Result<Option<TlsListen>, ConfigError> {
    let pick = flag_or_file;
    let Some(addr) = pick(&o.tls_listen, &t.listen) else {
        return Ok(None);
    };
    let listen: SocketAddr = addr.parse().map_err(|_| {
        invalid(
            "tls.listen",
            format!("'{addr}' is not an ip:port socket address"),
        )
    })?;
    let (Some(cert), Some(key)) = (
        pick(&o.tls_cert, &t.cert_file),
        pick(&o.tls_key, &t.key_file),
    ) else {
        return Err(invalid(
            "tls.cert_file",
            "the TLS listener needs a certificate and its key (--tls-cert FILE --tls-key FILE)",
        ));
    };
    let min_version = min_version("tls.min_version", &t.min_version)?;
    let files = ServerFiles {
        cert: PathBuf::from(cert),
        key: PathBuf::from(key),
        client_ca: pick(&o.tls_client_ca, &t.client_ca_file).map(PathBuf::from),
        min_version,
    };
    let loaded = ServerCert::load(&files.cert, &files.key)
        .map(Arc::new)
        .map_err(|e| invalid("tls", e.to_string()))?;
    let server = crate::tls::server_config(&files, loaded.clone())
        .map_err(|e| invalid("tls", e.to_string()))?;
    let handshake_timeout = ms(t.handshake_timeout_ms, Duration::from_secs(10));
    if handshake_timeout.is_zero() {
        return Err(invalid("tls.handshake_timeout_ms", "must be above zero"));
    }
    let user_from_cn = match t.auth_clients_user.as_deref().map(str::to_ascii_lowercase) {
        None => false,
        Some(v) if v == "off" => false,
        Some(v) if v == "cn" => true,
        Some(v) => {
            return Err(invalid(
                "tls.auth_clients_user",
                format!("'{v}' is not CN or off"),
            ));
        }
    };
    if user_from_cn && files.client_ca.is_none() {
        return Err(invalid(
            "tls.auth_clients_user",
            "needs client certificates: set tls.client_ca_file (--tls-client-ca)",
        ));
    }
    Ok(Some(TlsListen {
        listen,
        user_from_cn,
        files,
        handshake_timeout,
        reload_check: ms(t.reload_check_ms, Duration::from_secs(5)).max(Duration::from_millis(100)),
        cert: loaded,
        server,
    }))
}

/// The key families of `[[colocate]]`.
fn families(
    file: &Option<Vec<crate::config::file::ColocateFile>>,
) -> Result<Option<Arc<crate::families::Families>>, ConfigError> {
    let specs: Vec<crate::families::FamilySpec> = file
        .iter()
        .flatten()
        .map(|c| crate::families::FamilySpec {
            name: c.name.clone(),
            preset: c.preset.clone(),
            keys: c.keys.clone().unwrap_or_default(),
        })
        .collect();
    crate::families::Families::compile(&specs)
        .map(|f| f.map(Arc::new))
        .map_err(|e| invalid("colocate", e.to_string()))
}

/// The zone map: the `--zone-map` flags if any, else the file's `[[zones]]`.
fn zone_map(
    file: &Option<Vec<crate::config::file::ZoneFile>>,
    flags: &[String],
) -> Result<crate::zones::ZoneMap, ConfigError> {
    let mut map = crate::zones::ZoneMap::default();
    if flags.is_empty() {
        for z in file.iter().flatten() {
            map.add(&z.name, &z.nodes.join(","))
                .map_err(|e| invalid("zones", e))?;
        }
    } else {
        for f in flags {
            map.add_flag(f).map_err(|e| invalid("--zone-map", e))?;
        }
    }
    Ok(map)
}

/// Checks a `host:port` seed address.
fn check_addr(field: &'static str, s: &str) -> Result<NodeAddr, ConfigError> {
    NodeAddr::parse(s).map_err(|e| invalid(field, e.to_string()))
}

/// A non-empty list of `host:port` addresses: the flags' if any, else the file's.
fn address_list(
    field: &'static str,
    flags: &[String],
    file: &Option<Vec<String>>,
    what: &str,
    flag: &str,
) -> Result<Vec<NodeAddr>, ConfigError> {
    let list = if flags.is_empty() {
        file.clone().unwrap_or_default()
    } else {
        flags.to_vec()
    };
    if list.is_empty() {
        return Err(invalid(
            field,
            format!("at least one {what} is needed ({flag} HOST:PORT)"),
        ));
    }
    list.iter().map(|a| check_addr(field, a)).collect()
}

/// Which backends to front: flags first (each names its mode), then the file's `mode`.
fn backend_mode(f: &FileConfig, o: &Overrides) -> Result<BackendMode, ConfigError> {
    let flag_modes = [
        !o.seeds.is_empty(),
        !o.sentinels.is_empty(),
        o.standalone.is_some(),
    ];
    if flag_modes.iter().filter(|&&b| b).count() > 1 {
        return Err(invalid(
            "mode",
            "--seed, --sentinel and --standalone cannot be combined",
        ));
    }
    let mode = if !o.seeds.is_empty() {
        "cluster"
    } else if !o.sentinels.is_empty() {
        "sentinel"
    } else if o.standalone.is_some() {
        "standalone"
    } else {
        f.mode.as_deref().unwrap_or("cluster")
    };
    match mode {
        "cluster" => {
            let seeds = address_list("seeds", &o.seeds, &f.seeds, "seed node", "--seed")?;
            Ok(BackendMode::Cluster { seeds })
        }
        "sentinel" => {
            let sentinels = address_list(
                "sentinels",
                &o.sentinels,
                &f.sentinels,
                "Sentinel",
                "--sentinel",
            )?;
            let master_name = o
                .master_name
                .clone()
                .or_else(|| f.master_name.clone())
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "master_name",
                        "sentinel mode needs the master's name (--master-name NAME)",
                    )
                })?;
            let auth = credentials(
                "sentinel_password",
                f.sentinel_username.clone(),
                f.sentinel_password.as_deref().map(Secret::new),
            )?;
            Ok(BackendMode::Sentinel {
                sentinels,
                master_name,
                auth,
            })
        }
        "standalone" => {
            let server = o
                .standalone
                .clone()
                .or_else(|| f.server.clone())
                .ok_or_else(|| {
                    invalid(
                        "server",
                        "standalone mode needs the server's address (--standalone HOST:PORT)",
                    )
                })?;
            let server = check_addr("server", &server)?;
            Ok(BackendMode::Standalone { server })
        }
        other => Err(invalid(
            "mode",
            format!("'{other}' is not one of cluster, sentinel, standalone"),
        )),
    }
}

impl Config {
    /// Reads and validates a config file, with `overrides` on top.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        Ok(Config::load_with_file(path, overrides)?.1)
    }

    /// [`Config::load`], with the file as read (what a reload compares with the next one).
    pub fn load_with_file(
        path: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<(FileConfig, Config), ConfigError> {
        let file = match path {
            Some(p) => Config::read_file(p)?,
            None => FileConfig::default(),
        };
        let config = Config::from_file(file.clone(), overrides)?;
        Ok((file, config))
    }

    /// The file at `path`, parsed (not yet checked).
    pub fn read_file(p: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(p).map_err(|cause| ConfigError::Read {
            path: p.display().to_string(),
            cause,
        })?;
        toml::from_str::<FileConfig>(&text).map_err(|cause| ConfigError::Parse {
            path: p.display().to_string(),
            cause: Box::new(cause),
        })
    }

    pub fn from_file(f: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
        let backend_mode = backend_mode(&f, o)?;
        let listen_s = o
            .listen
            .clone()
            .or(f.listen)
            .unwrap_or_else(|| "127.0.0.1:6380".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("'{listen_s}' is not an ip:port socket address"),
            )
        })?;
        let multi_key = match o.multi_key.clone().or(f.multi_key).as_deref() {
            None | Some("split") => MultiKeyPolicy::Split,
            Some("strict") => MultiKeyPolicy::Strict,
            Some(other) => {
                return Err(invalid(
                    "multi_key",
                    format!("'{other}' is neither 'split' nor 'strict'"),
                ));
            }
        };
        let d = Limits::default();
        let l = &f.limits;
        let limits = Limits {
            max_bulk_len: positive("limits.max_bulk_bytes", l.max_bulk_bytes, d.max_bulk_len)?,
            max_inline_len: positive(
                "limits.max_inline_bytes",
                l.max_inline_bytes,
                d.max_inline_len,
            )?,
            max_args: positive("limits.max_args", l.max_args, d.max_args)?,
            max_request_bytes: positive(
                "limits.max_request_bytes",
                l.max_request_bytes,
                d.max_request_bytes,
            )?,
            max_reply_depth: positive(
                "limits.max_reply_depth",
                l.max_reply_depth,
                d.max_reply_depth,
            )?,
        };
        if limits.max_request_bytes < limits.max_bulk_len {
            return Err(invalid(
                "limits.max_request_bytes",
                "must be at least limits.max_bulk_bytes (one bulk string is part of a request)",
            ));
        }
        if limits.max_request_bytes > u32::MAX as usize / 2 {
            return Err(invalid("limits.max_request_bytes", "must be below 2 GiB"));
        }
        if limits.max_reply_depth > crate::protocol::MAX_REPLY_DEPTH_LIMIT {
            return Err(invalid(
                "limits.max_reply_depth",
                format!("must be at most {}", crate::protocol::MAX_REPLY_DEPTH_LIMIT),
            ));
        }
        let sd = SessionConfig::default();
        let c = &f.clients;
        let requirepass = o
            .requirepass
            .clone()
            .or_else(|| c.requirepass.as_deref().map(Secret::new));
        if requirepass.as_ref().is_some_and(|p| p.expose().is_empty()) {
            return Err(invalid(
                "clients.requirepass",
                "is empty; remove the line to let clients in without a password",
            ));
        }
        let deny_commands = c.deny_commands.clone().unwrap_or_default();
        // One table checks both: the names denied, and the names users' rules give.
        let table = crate::command::Table::redis70();
        let users: Vec<crate::access::UserRules> = f
            .users
            .iter()
            .flatten()
            .map(|u| crate::access::UserRules {
                name: u.name.clone(),
                rules: u.rules.clone(),
            })
            .collect();
        let access = crate::access::Access::with_users(requirepass.as_ref(), &users, &table);
        if let Err(name) = table.without(&deny_commands) {
            return Err(invalid(
                "clients.deny_commands",
                format!("'{name}' is not a Redis 7.0 command (write subcommands as config|set)"),
            ));
        }
        let session = SessionConfig {
            deny_commands,
            max_auth_failures_per_minute: c
                .max_auth_failures_per_minute
                .unwrap_or(sd.max_auth_failures_per_minute),
            access: access.map_err(|e| invalid("users", e))?,
            limits,
            max_pipeline: positive("clients.max_pipeline", c.max_pipeline, sd.max_pipeline)?,
            max_clients: positive(
                "clients.max_clients",
                o.max_clients.or(c.max_clients),
                sd.max_clients,
            )?,
            max_redirects: budget("clients.max_redirects", c.max_redirects, sd.max_redirects)?,
            max_tryagain: budget("clients.max_tryagain", c.max_tryagain, sd.max_tryagain)?,
            tryagain_delay: ms(c.tryagain_delay_ms, sd.tryagain_delay),
            failover_hold: zero_is_off(
                c.failover_hold_ms.map(Duration::from_millis),
                sd.failover_hold,
            ),
            fleet_writes: c.fleet_writes.unwrap_or(false),
            idle_timeout: c
                .idle_timeout_ms
                .filter(|&t| t > 0)
                .map(Duration::from_millis),
            output_buffer_limit: zero_is_off(c.output_buffer_limit_bytes, sd.output_buffer_limit),
            memory_budget: zero_is_off(c.memory_budget_bytes, sd.memory_budget),
            failover_hold_max_bytes: zero_is_off(
                c.failover_hold_max_bytes,
                sd.failover_hold_max_bytes,
            ),
            request_timeout: zero_is_off(
                c.request_timeout_ms.map(Duration::from_millis),
                sd.request_timeout,
            ),
            multi_key,
            zone: match o.zone.clone().or(f.zone.clone()) {
                Some(z) if z.trim().is_empty() || z.contains(char::is_whitespace) => {
                    return Err(invalid("zone", format!("'{z}' is not a zone name")));
                }
                z => z,
            },
            read_from: match o.read_from.as_deref().or(f.reads.from.as_deref()) {
                None => crate::router::ReadFrom::Master,
                Some(name) => crate::router::ReadFrom::parse(name).ok_or_else(|| {
                    invalid(
                        "reads.from",
                        format!(
                            "'{name}' is not a read policy (one of {})",
                            crate::router::ReadFrom::NAMES.join(", ")
                        ),
                    )
                })?,
            },
            read_your_writes: o
                .read_your_writes_ms
                .or(f.reads.read_your_writes_ms)
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            families: families(&f.colocate)?,
        };
        if session.max_pipeline >= 1 << 40 {
            return Err(invalid("clients.max_pipeline", "too large"));
        }
        let bd = BackendConfig::default();
        let b = &f.backend;
        let client_tls = backend_tls(&b.tls, o)?;
        if client_tls.is_some() && backend_mode.addresses().iter().any(|a| a.is_unix()) {
            return Err(invalid(
                "backend.tls",
                "TLS towards a Unix socket: Redis serves TLS on TCP ports only",
            ));
        }
        let backend = BackendConfig {
            connections_per_node: positive(
                "backend.connections_per_node",
                b.connections_per_node,
                bd.connections_per_node,
            )?,
            connector: Connector::new(
                backend_credentials(b, o)?,
                ms(b.connect_timeout_ms, bd.connector.connect_timeout()),
            )
            .with_tls(client_tls),
            read_timeout: ms(b.read_timeout_ms, bd.read_timeout),
            queue_depth: positive("backend.queue_depth", b.queue_depth, bd.queue_depth)?,
            max_in_flight: positive("backend.max_in_flight", b.max_in_flight, bd.max_in_flight)?,
            backoff_min: ms(b.backoff_min_ms, bd.backoff_min),
            backoff_max: ms(b.backoff_max_ms, bd.backoff_max),
            limits,
            max_private_per_node: positive(
                "backend.max_private_per_node",
                b.max_private_per_node,
                bd.max_private_per_node,
            )?,
            warm_private_per_node: b.warm_private_per_node.unwrap_or(bd.warm_private_per_node),
            replica_links: match (&backend_mode, session.read_from.uses_replicas()) {
                (_, false) => ReplicaLinks::Off,
                (BackendMode::Cluster { .. }, true) => ReplicaLinks::ReadOnly,
                (_, true) => ReplicaLinks::Plain,
            },
        };
        if backend.warm_private_per_node > 64 {
            return Err(invalid(
                "backend.warm_private_per_node",
                "must be at most 64",
            ));
        }
        if backend.connections_per_node > 64 {
            return Err(invalid(
                "backend.connections_per_node",
                "must be at most 64",
            ));
        }
        if backend.connector.connect_timeout().is_zero() || backend.read_timeout.is_zero() {
            return Err(invalid("backend timeouts", "must be above zero"));
        }
        if backend.backoff_min > backend.backoff_max {
            return Err(invalid(
                "backend.backoff_min_ms",
                "must not exceed backoff_max_ms",
            ));
        }
        let reads_default = ReadsConfig::default();
        let reads = ReadsConfig {
            max_replica_lag: ms(f.reads.max_replica_lag_ms, reads_default.max_replica_lag),
            check_interval: ms(f.reads.check_interval_ms, reads_default.check_interval),
        };
        if reads.check_interval < Duration::from_millis(50) {
            return Err(invalid("reads.check_interval_ms", "must be at least 50"));
        }
        let rd = RefreshConfig::default();
        let t = &f.topology;
        let refresh = RefreshConfig {
            interval: ms(t.refresh_interval_ms, rd.interval),
            debounce: ms(t.refresh_debounce_ms, rd.debounce),
            min_gap: ms(t.refresh_min_gap_ms, rd.min_gap),
        };
        if refresh.interval < Duration::from_millis(100) {
            return Err(invalid(
                "topology.refresh_interval_ms",
                "must be at least 100",
            ));
        }
        let log = o.log.clone().or(f.log).unwrap_or_else(|| "info".into());
        // The filter the binary installs: checked here so that --check-config refuses what
        // start-up would.
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log) {
            return Err(invalid("log", format!("'{log}' is not a log filter: {e}")));
        }
        if f.admin.token.as_deref() == Some("") {
            return Err(invalid(
                "admin.token",
                "is empty; remove the line to leave the admin endpoint without authentication",
            ));
        }
        let tls = tls_listen(&f.tls, o)?;
        let admin_tls = if o.admin_tls || f.admin.tls == Some(true) {
            let Some(t) = &tls else {
                return Err(invalid(
                    "admin.tls",
                    "HTTPS on the admin listener uses the TLS listener's certificate: set [tls] listen, cert_file and key_file (--tls-listen, --tls-cert, --tls-key)",
                ));
            };
            let files = ServerFiles {
                client_ca: None,
                ..t.files.clone()
            };
            Some(
                crate::tls::server_config(&files, t.cert.clone())
                    .map_err(|e| invalid("admin.tls", e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Config {
            listen,
            unix_socket: unix_socket(
                o.unix_socket.clone().or(f.unix_socket),
                o.unix_socket_perm.clone().or(f.unix_socket_perm),
            )?,
            backend_mode,
            log,
            threads: match o.threads.or(f.threads).unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n if n > 256 => return Err(invalid("threads", "must be at most 256")),
                n => n,
            },
            io: match o.io.clone().or(f.io.clone()).as_deref() {
                None | Some("epoll") => IoModel::Epoll,
                Some("uring") => IoModel::Uring,
                Some(_) => return Err(invalid("io", "must be \"epoll\" or \"uring\"")),
            },
            session,
            backend,
            refresh,
            discovery_timeout: ms(t.discovery_timeout_ms, Duration::from_secs(2)),
            startup_timeout: ms(t.startup_timeout_ms, Duration::from_secs(10)),
            drain_timeout: ms(c.drain_timeout_ms, Duration::from_secs(5)),
            config_check: zero_is_off(f.config_check_ms, Some(5000)).map(Duration::from_millis),
            admin: match o.admin.clone().or(f.admin.listen.clone()) {
                None => None,
                Some(a) => Some(AdminConfig {
                    listen: a.parse().map_err(|_| {
                        invalid(
                            "admin.listen",
                            format!("'{a}' is not an ip:port socket address"),
                        )
                    })?,
                    token: f.admin.token.clone(),
                    info_interval: ms(f.admin.info_interval_ms, Duration::from_secs(5))
                        .max(Duration::from_millis(100)),
                    handshake_timeout: tls
                        .as_ref()
                        .map_or(Duration::from_secs(10), |t| t.handshake_timeout),
                    tls: admin_tls,
                    ready_requires: match f.admin.ready_requires.as_deref() {
                        None => Default::default(),
                        Some(name) => crate::admin::readiness::ReadyRequires::parse(name)
                            .ok_or_else(|| {
                                invalid(
                                    "admin.ready_requires",
                                    format!(
                                        "'{name}' is not a readiness requirement (one of {})",
                                        crate::admin::readiness::ReadyRequires::NAMES.join(", ")
                                    ),
                                )
                            })?,
                    },
                }),
            },
            tls,
            zones: zone_map(&f.zones, &o.zone_map)?,
            reads,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|cause| ConfigError::Parse {
            path: "test".into(),
            cause: Box::new(cause),
        })?;
        Config::from_file(f, &Overrides::default())
    }

    #[test]
    fn should_accept_a_minimal_file_with_defaults() {
        let c = parse("seeds = [\"127.0.0.1:7000\"]").map_err(|e| e.to_string());
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn should_close_idle_clients_only_when_a_timeout_is_set() {
        let idle = |extra: &str| {
            parse(&format!("seeds = [\"a:1\"]\n{extra}"))
                .map(|c| c.session.idle_timeout)
                .map_err(|e| e.to_string())
        };
        assert_eq!(idle(""), Ok(None), "Redis' default: timeout 0");
        assert_eq!(idle("[clients]\nidle_timeout_ms = 0"), Ok(None));
        assert_eq!(
            idle("[clients]\nidle_timeout_ms = 1500"),
            Ok(Some(Duration::from_millis(1500)))
        );
    }

    #[test]
    fn should_refuse_unknown_fields_and_bad_values() {
        assert!(parse("seeds = [\"a:1\"]\nnope = 1").is_err());
        assert!(parse("seeds = []").is_err());
        assert!(parse("seeds = [\"noport\"]").is_err());
        assert!(parse("seeds = [\"a:1\"]\nmulti_key = \"loose\"").is_err());
        assert!(parse("seeds = [\"a:1\"]\n[backend]\nconnections_per_node = 0").is_err());
        assert!(parse("seeds = [\"a:1\"]\nlisten = \"localhost\"").is_err());
        assert!(parse("seeds = [\"a:1\"]\n[clients]\nmax_redirects = 1001").is_err());
        assert!(parse("seeds = [\"a:1\"]\n[clients]\nmax_tryagain = 70000").is_err());
        let budgets = parse("seeds = [\"a:1\"]\n[clients]\nmax_redirects = 1000\nmax_tryagain = 0")
            .map(|c| (c.session.max_redirects, c.session.max_tryagain))
            .map_err(|e| e.to_string());
        assert_eq!(budgets, Ok((1000, 0)));
    }

    #[test]
    fn should_read_sentinel_and_standalone_modes() {
        let c = parse(
            "mode = \"sentinel\"\nsentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"mymaster\"",
        )
        .map(|c| c.backend_mode)
        .map_err(|e| e.to_string());
        assert!(
            matches!(c, Ok(BackendMode::Sentinel { ref master_name, .. }) if master_name == "mymaster"),
            "{c:?}"
        );
        assert!(parse("mode = \"sentinel\"\nsentinels = [\"127.0.0.1:26379\"]").is_err());
        let c = parse("mode = \"standalone\"\nserver = \"127.0.0.1:6379\"")
            .map(|c| c.backend_mode)
            .map_err(|e| e.to_string());
        assert_eq!(
            c,
            Ok(BackendMode::Standalone {
                server: "127.0.0.1:6379".into()
            })
        );
        assert!(parse("mode = \"proxy\"").is_err());
    }

    #[test]
    fn should_let_flags_override_the_file() {
        let f: FileConfig =
            toml::from_str("seeds = [\"a:1\"]\nlisten = \"127.0.0.1:1\"").unwrap_or_default();
        let o = Overrides {
            listen: Some("127.0.0.1:2".into()),
            seeds: vec!["b:2".into()],
            ..Overrides::default()
        };
        let c = Config::from_file(f, &o).map_err(|e| e.to_string());
        assert_eq!(c.as_ref().map(|c| c.listen.port()), Ok(2));
        assert_eq!(
            c.map(|c| c.backend_mode),
            Ok(BackendMode::Cluster {
                seeds: vec!["b:2".into()]
            })
        );
    }
}
