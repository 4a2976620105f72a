//! The slotgate binary: parse flags, load and validate the config, set up logging, run. The only
//! place `anyhow` is used; it must never hold proxy logic (that lives in the library).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use slotgate::backend::Secret;
use slotgate::config::{Config, Overrides};

/// slotgate: one Redis endpoint in front of a Redis Cluster, a Sentinel-watched master, or one
/// server.
///
/// Plain Redis clients connect to slotgate as if it were a single server. In front of a cluster
/// (--seed) it routes each command to the master that owns its keys' slot, follows MOVED/ASK, and
/// splits MGET/MSET/DEL across slots; in front of Sentinels (--sentinel, --master-name) it follows
/// the master through failovers; --standalone fronts one server. Flags override the config file.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// TOML config file (see conf/ for examples).
    #[arg(short, long, value_name = "FILE", env = "SLOTGATE_CONFIG")]
    config: Option<PathBuf>,

    /// GET an admin URL (http://HOST:PORT/PATH, /health when no path) and exit: 0 on 200, 1
    /// otherwise; a container health check for images with no HTTP client.
    #[arg(long, value_name = "URL")]
    probe: Option<String>,

    /// Validate FILE and exit: 0 when valid, 1 with the reason when not.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,

    /// Address to accept clients on [default: 127.0.0.1:6380].
    #[arg(short, long, value_name = "IP:PORT", env = "SLOTGATE_LISTEN")]
    listen: Option<String>,

    /// Accept clients on this Unix socket too (an absolute path; a stale socket file is
    /// replaced, a live one is not).
    #[arg(long, value_name = "PATH")]
    unix_socket: Option<String>,

    /// The Unix socket file's permissions, in octal [default: 700].
    #[arg(long, value_name = "MODE")]
    unix_socket_perm: Option<String>,

    /// Cluster mode: a cluster node to learn the topology from; repeat for several.
    #[arg(short, long = "seed", value_name = "HOST:PORT")]
    seeds: Vec<String>,

    /// Sentinel mode: a Sentinel to ask for the master; repeat for several.
    #[arg(long = "sentinel", value_name = "HOST:PORT")]
    sentinels: Vec<String>,

    /// Sentinel mode: the master's name as the Sentinels know it.
    #[arg(long, value_name = "NAME")]
    master_name: Option<String>,

    /// Standalone mode: the one Redis server to front (HOST:PORT, or unix:/PATH for a server's
    /// Unix socket on this host).
    #[arg(long, value_name = "HOST:PORT|unix:/PATH")]
    standalone: Option<String>,

    /// Multi-key commands across slots: "split" (split and merge MGET/MSET/DEL/UNLINK/EXISTS/TOUCH)
    /// or "strict" (CROSSSLOT, as Redis Cluster does).
    #[arg(long, value_name = "POLICY")]
    multi_key: Option<String>,

    /// Most client connections at once.
    #[arg(long, value_name = "N")]
    max_clients: Option<usize>,

    /// Worker threads, each a single-threaded runtime with its own backend connections (0: one
    /// per CPU; 1: everything on one thread).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// How plaintext TCP sockets are driven: "epoll" (default) or "uring" (one io_uring ring per
    /// worker; epoll, with a log line, where the kernel refuses io_uring).
    #[arg(long, value_name = "epoll|uring", env = "SLOTGATE_IO")]
    io: Option<String>,

    /// Admin HTTP listener: /metrics, /health, /ready, /topology.
    #[arg(long, value_name = "IP:PORT", env = "SLOTGATE_ADMIN")]
    admin: Option<String>,

    /// Serve the admin listener over HTTPS with the TLS listener's certificate (--tls-cert).
    #[arg(long)]
    admin_tls: bool,

    /// The ACL user to log in to every Redis node as (AUTH user password); unset: the default
    /// user.
    #[arg(long, value_name = "NAME")]
    backend_user: Option<String>,

    /// The password for AUTH on every node connection (requirepass, or the user's). Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SLOTGATE_BACKEND_PASSWORD",
        hide_env_values = true
    )]
    backend_password: Option<String>,

    /// The password clients must AUTH with (Redis' requirepass, for the default user). Prefer
    /// the environment variable: a flag shows in the process list.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "SLOTGATE_REQUIREPASS",
        hide_env_values = true
    )]
    requirepass: Option<String>,

    /// The zone (or region) slotgate runs in; in Kubernetes, set SLOTGATE_ZONE from the node's
    /// topology.kubernetes.io/zone label.
    #[arg(long, value_name = "NAME", env = "SLOTGATE_ZONE")]
    zone: Option<String>,

    /// Which zone nodes are in: NAME=CIDR[,CIDR or .host.suffix...]; repeatable, first match
    /// wins.
    #[arg(long = "zone-map", value_name = "NAME=CIDR,...")]
    zone_map: Vec<String>,

    /// Where reads may go: master (default), prefer-replica, same-zone, same-zone-or-master or
    /// nearest; writes always go to the master.
    #[arg(long, value_name = "POLICY")]
    read_from: Option<String>,

    /// After a client writes a slot, its reads of that slot go to the master for this long
    /// (0: off, the default).
    #[arg(long, value_name = "MS")]
    read_your_writes_ms: Option<u64>,

    /// A TLS listener for clients, beside --listen; needs --tls-cert and --tls-key.
    #[arg(long, value_name = "IP:PORT")]
    tls_listen: Option<String>,

    /// The TLS listener's certificate chain (PEM); reloaded when it changes or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,

    /// The TLS listener's private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,

    /// Require client certificates from this CA (PEM) on the TLS listener (mutual TLS).
    #[arg(long, value_name = "FILE")]
    tls_client_ca: Option<String>,

    /// Connect to the nodes (and Sentinels) over TLS; needs --backend-ca.
    #[arg(long)]
    backend_tls: bool,

    /// CA bundle (PEM) the nodes' certificates must chain to.
    #[arg(long, value_name = "FILE")]
    backend_ca: Option<String>,

    /// Client certificate (PEM) for nodes that require one (tls-auth-clients yes).
    #[arg(long, value_name = "FILE")]
    backend_cert: Option<String>,

    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    backend_key: Option<String>,

    /// The name the nodes' certificates must carry, when not the host connected to.
    #[arg(long, value_name = "NAME")]
    backend_sni: Option<String>,

    /// Log filter (e.g. info, debug, slotgate=trace); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,

    /// Print the supported-commands page (Markdown) generated from the command table and exit.
    #[arg(long)]
    commands: bool,

    /// Print the key families (`[[colocate]]`, presets expanded) of a config file as JSON and
    /// exit: what `deploy/colocate.py` moves.
    #[arg(long, value_name = "FILE")]
    families: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.commands {
        print!(
            "{}",
            slotgate::command::Table::redis70().supported_commands_page()
        );
        return ExitCode::SUCCESS;
    }
    if let Some(url) = &cli.probe {
        return match slotgate::admin::probe::probe(url, std::time::Duration::from_secs(3)) {
            Ok(200) => ExitCode::SUCCESS,
            Ok(code) => {
                eprintln!("slotgate: {url} answered {code}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("slotgate: probe failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slotgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: cli.listen,
        unix_socket: cli.unix_socket,
        unix_socket_perm: cli.unix_socket_perm,
        seeds: cli.seeds,
        sentinels: cli.sentinels,
        master_name: cli.master_name,
        standalone: cli.standalone,
        multi_key: cli.multi_key,
        max_clients: cli.max_clients,
        log: cli.log,
        threads: cli.threads,
        io: cli.io,
        admin: cli.admin,
        admin_tls: cli.admin_tls,
        backend_user: cli.backend_user,
        backend_password: cli.backend_password.as_deref().map(Secret::new),
        backend_tls: cli.backend_tls,
        backend_ca: cli.backend_ca,
        backend_cert: cli.backend_cert,
        backend_key: cli.backend_key,
        backend_sni: cli.backend_sni,
        requirepass: cli.requirepass.as_deref().map(Secret::new),
        zone: cli.zone,
        zone_map: cli.zone_map,
        read_from: cli.read_from,
        read_your_writes_ms: cli.read_your_writes_ms,
        tls_listen: cli.tls_listen,
        tls_cert: cli.tls_cert,
        tls_key: cli.tls_key,
        tls_client_ca: cli.tls_client_ca,
    };
    if let Some(path) = &cli.families {
        let config = Config::load(Some(path), &overrides)?;
        let families: Vec<serde_json::Value> = config
            .session
            .families
            .iter()
            .flat_map(|f| f.describe())
            .map(|(name, keys)| serde_json::json!({ "name": name, "keys": keys }))
            .collect();
        println!("{}", serde_json::json!({ "families": families }));
        return Ok(());
    }
    if let Some(path) = cli.check_config {
        Config::load(Some(&path), &overrides)?;
        println!("{}: ok", path.display());
        return Ok(());
    }
    let (file, config) = Config::load_with_file(cli.config.as_deref(), &overrides)
        .context("invalid configuration")?;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env();
    // RUST_LOG, when set, chooses the filter; a reload then leaves it alone.
    let env_chose = from_env.is_ok();
    let filter = from_env
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .context("invalid log filter")?;
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter_reloading();
    let filter_handle = subscriber.reload_handle();
    subscriber.init();
    let set_log: Option<slotgate::reload::SetLog> = (!env_chose).then(|| {
        Box::new(move |f: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(f).map_err(|e| e.to_string())?;
            filter_handle.reload(filter).map_err(|e| e.to_string())
        }) as slotgate::reload::SetLog
    });
    let reload = slotgate::reload::ConfigSource {
        path: cli.config.clone(),
        overrides,
        set_log,
    };
    // This thread's runtime is worker 0; `app` starts the other workers (thread per core).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(slotgate::app::run(config, Some((reload, file))))?;
    Ok(())
}
