//! Wiring: builds the backends, learns the first topology, starts the refresher and the
//! listener, and owns graceful shutdown (stop accepting, let sessions finish their replies,
//! give up after the drain deadline). The only module that knows every other; it must never hold
//! request-path logic of its own, nor exit with sessions still owed replies before the deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admin::Admin;
use crate::backend::Backends;
use crate::command::Table;
use crate::config::{BackendMode, Config};
use crate::error::TopologyError;
use crate::frontend::{self, Context, ProxyStats};
use crate::topology::cluster::ClusterSource;
use crate::topology::refresh::{self, RefreshStats};
use crate::topology::sentinel::SentinelSource;
use crate::topology::standalone::StandaloneSource;
use crate::topology::{AnySource, Layout, Topology, TopologyHandle, TopologySource};
use crate::workers::Workers;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: std::io::Error,
    },
    #[error("cannot listen on the Unix socket {0}")]
    UnixBind(#[from] crate::frontend::unix_listener::UnixBindError),
    #[error("cannot listen on {addr} for the admin endpoint: {cause}")]
    AdminBind {
        addr: SocketAddr,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: std::io::Error,
    },
    #[error("cannot listen on {addr} for TLS clients: {cause}")]
    TlsBind {
        addr: SocketAddr,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: std::io::Error,
    },
    /// Caught by the config check first; kept so that start-up never trusts it.
    #[error("clients.deny_commands names '{0}', which is not a Redis 7.0 command")]
    DeniedCommand(String),
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    #[error("could not learn the topology from {seeds:?} within {waited:?}: {cause}")]
    Discovery {
        seeds: Vec<crate::backend::NodeAddr>,
        waited: Duration,
        /// Part of the message, not a `source()`: the chain would print it twice.
        cause: TopologyError,
    },
}

/// A running proxy: its address and the token that stops it.
pub struct Running {
    pub local_addr: SocketAddr,
    /// The Unix socket's file, removed when slotgate stops.
    unix_socket: Option<crate::frontend::unix_listener::SocketFile>,
    shutdown: CancellationToken,
    /// Stops the admin listener, after the drain: `/ready` answers 503 throughout it.
    admin_stop: CancellationToken,
    ctx: Arc<Context>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains sessions (bounded by the drain timeout) and returns.
    pub async fn stop(self) {
        self.ctx
            .draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // After the flag: a session registering meanwhile sees it (`drain_all`).
        self.ctx.clients.drain_all();
        self.shutdown.cancel();
        let _ = self.done.await;
        self.admin_stop.cancel();
        drop(self.unix_socket);
    }
}

async fn first_layout(source: &AnySource, config: &Config) -> Result<Layout, AppError> {
    let deadline = Instant::now() + config.startup_timeout;
    loop {
        match source.discover(&[]).await {
            Ok(l) => return Ok(l),
            Err(e) if e.is_misconfiguration() || Instant::now() >= deadline => {
                return Err(AppError::Discovery {
                    seeds: config.backend_mode.addresses(),
                    waited: config.startup_timeout,
                    cause: e,
                });
            }
            Err(e) => {
                warn!(error = %e, "topology not available yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        }
    }
}

/// The topology source `config` names, its connections opened as the backends' are.
fn source_for(config: &Config) -> AnySource {
    let to_nodes = config.backend.connector.clone();
    match &config.backend_mode {
        BackendMode::Cluster { seeds } => AnySource::Cluster(ClusterSource::new(
            seeds.clone(),
            config.discovery_timeout,
            to_nodes,
        )),
        BackendMode::Sentinel {
            sentinels,
            master_name,
            auth,
        } => AnySource::Sentinel(
            SentinelSource::new(
                sentinels.clone(),
                master_name.clone(),
                to_nodes.with_credentials(auth.clone()),
                to_nodes,
                config.discovery_timeout,
            )
            .with_failover_pause(config.session.failover_hold),
        ),
        BackendMode::Standalone { server } => AnySource::Standalone(StandaloneSource::new(
            server.clone(),
            config.discovery_timeout,
            to_nodes,
        )),
    }
}

/// Binds, discovers and starts serving; returns once clients can connect. With `reload`
/// (where the configuration came from, and the file as read), SIGHUP and the admin
/// listener's `POST /reload` reload it; without, SIGHUP reloads the TLS certificate only.
pub async fn start(
    mut config: Config,
    reload: Option<(crate::reload::ConfigSource, crate::config::FileConfig)>,
) -> Result<Running, AppError> {
    let as_read = config.clone();
    config.session.max_clients = crate::fd_limit::adjust(config.session.max_clients);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|cause| AppError::Bind {
            addr: config.listen,
            cause,
        })?;
    let local_addr = listener.local_addr().map_err(|cause| AppError::Bind {
        addr: config.listen,
        cause,
    })?;
    let unix = match &config.unix_socket {
        Some(u) => Some(crate::frontend::unix_listener::bind(&u.path, u.perm)?),
        None => None,
    };
    let tls_listener = match &config.tls {
        Some(t) => Some(
            TcpListener::bind(t.listen)
                .await
                .map_err(|cause| AppError::TlsBind {
                    addr: t.listen,
                    cause,
                })?,
        ),
        None => None,
    };
    let admin_listener = match &config.admin {
        Some(a) => {
            Some(
                TcpListener::bind(a.listen)
                    .await
                    .map_err(|cause| AppError::AdminBind {
                        addr: a.listen,
                        cause,
                    })?,
            )
        }
        None => None,
    };
    // The recorder goes in before any metric handle exists (nodes, the command table). Without
    // an admin endpoint nobody could read it, so none is installed and every handle is a no-op.
    let prometheus = match &config.admin {
        None => None,
        Some(_) => match crate::metrics::install() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!(error = %e, "metrics recorder not installed");
                None
            }
        },
    };
    if config.io == crate::config::IoModel::Uring {
        match crate::uring::enable() {
            Ok(()) => tracing::info!("plaintext TCP sockets on io_uring"),
            Err(e) => warn!(error = %e, "io_uring unavailable: plaintext TCP sockets on epoll"),
        }
    }
    let workers = Arc::new(if config.threads <= 1 {
        Workers::single()
    } else {
        Workers::start(config.threads).map_err(AppError::Workers)?
    });
    let backends = Arc::new(Backends::new(config.backend.clone(), workers.clone()));
    let source = source_for(&config);
    let layout = first_layout(&source, &config).await?;
    let topology = Topology::build(&layout, &backends, Arc::new(config.zones.clone()), 1);
    info!(
        source = source.kind(),
        masters = %topology.masters().iter().map(|m| &**m.addr()).collect::<Vec<_>>().join(","),
        version = %topology.version,
        "learned the topology"
    );
    let (handle, hints) = TopologyHandle::new(topology);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let refresh_stats = Arc::new(RefreshStats::default());
    if config.session.read_from.uses_replicas() {
        info!(
            read_from = config.session.read_from.as_str(),
            zone = config.session.zone.as_deref().unwrap_or("(none)"),
            "reads may go to replicas"
        );
    }
    // Always: a reload may turn replica reads on. Without replica nodes (no read policy that
    // uses them) a check looks at the snapshot and asks nothing.
    tokio::spawn(crate::topology::replica_health::run(
        handle.clone(),
        backends.clone(),
        config.reads,
        shutdown.clone(),
    ));
    // A reload's new topology source, for the refresher.
    let (switch_source, switches) = tokio::sync::mpsc::channel::<AnySource>(4);
    tokio::spawn(refresh::run(
        source,
        handle.clone(),
        backends.clone(),
        hints,
        switches,
        config.refresh,
        refresh_stats.clone(),
        shutdown.clone(),
    ));
    let ctx = Arc::new(Context {
        table: Box::leak(Box::new(
            Table::redis70_with(config.session.fleet_writes)
                .without(&config.session.deny_commands)
                .map_err(AppError::DeniedCommand)?,
        )),
        topology: handle,
        backends,
        config: arc_swap::ArcSwap::from_pointee(config.session.clone()),
        stats: ProxyStats::default(),
        refresh: refresh_stats,
        started: Instant::now(),
        next_client_id: AtomicU64::new(1),
        draining: AtomicBool::new(false),
        scripts: Default::default(),
        hold_budget: crate::frontend::hold_budget::HoldBudget::new(
            config.session.failover_hold_max_bytes,
        ),
        clients: crate::frontend::clients::ClientRegistry::new(
            config.session.memory_budget,
            unix.as_ref()
                .map(|(_, file)| file.path().display().to_string().into()),
        ),
        client_pause: Default::default(),
        pipeline_depth: metrics::histogram!(crate::metrics::names::PIPELINE_DEPTH),
        workers: workers.clone(),
        auth_throttle: crate::access::AuthThrottle::new(
            config.session.max_auth_failures_per_minute,
            std::time::Duration::from_secs(60),
        ),
        own_server: crate::command::multi::OwnServer {
            tcp_port: local_addr.port(),
            process_id: std::process::id(),
            executable: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            clients: None,
        },
    });
    let certificate = config.tls.as_ref().map(|t| t.cert.clone());
    let switch: crate::reload::SwitchSource = Box::new(move |c: &Config| {
        let source = source_for(c);
        info!(source = source.kind(), "the topology source changes");
        switch_source.try_send(source).is_ok()
    });
    let (source, file) = reload.unwrap_or_else(|| {
        let none = crate::reload::ConfigSource {
            path: None,
            overrides: Default::default(),
            set_log: None,
        };
        (none, Default::default())
    });
    let reloader = Arc::new(crate::reload::Reloader::new(
        source,
        file,
        as_read,
        crate::reload::Handles {
            ctx: ctx.clone(),
            certificate,
            switch,
        },
    ));
    tokio::spawn(watch_reloads(
        reloader.clone(),
        config.config_check,
        shutdown.clone(),
    ));
    let admin_stop = CancellationToken::new();
    if let (Some(listener), Some(a)) = (admin_listener, &config.admin) {
        let admin = Admin::new(
            ctx.clone(),
            prometheus,
            a.token.clone(),
            a.ready_requires,
            reloader,
        );
        info!(listen = %a.listen, "admin endpoint ready");
        tokio::spawn(
            admin
                .clone()
                .poll_backends(a.info_interval, shutdown.clone()),
        );
        let https = a.tls.clone().map(|c| (c, a.handshake_timeout));
        tokio::spawn(crate::admin::serve(
            listener,
            https,
            admin,
            admin_stop.clone(),
        ));
    }
    let mut doors = vec![frontend::Door {
        listener: frontend::Listener::Tcp(listener),
        tls: None,
    }];
    if let (Some(listener), Some(t)) = (tls_listener, &config.tls) {
        info!(listen = %t.listen, mutual = t.files.client_ca.is_some(), "TLS listener ready");
        tokio::spawn(watch_certificate(
            t.cert.clone(),
            t.reload_check,
            shutdown.clone(),
        ));
        doors.push(frontend::Door {
            listener: frontend::Listener::Tcp(listener),
            tls: Some(frontend::TlsDoor {
                acceptor: tokio_rustls::TlsAcceptor::from(t.server.clone()),
                handshake_timeout: t.handshake_timeout,
                user_from_cn: t.user_from_cn,
            }),
        });
    }
    let unix_socket = unix.map(|(listener, file)| {
        info!(path = %file.path().display(), "Unix socket listener ready");
        doors.push(frontend::Door {
            listener: frontend::Listener::Unix(listener),
            tls: None,
        });
        file
    });
    let drain = config.drain_timeout;
    let token = shutdown.clone();
    let serve_ctx = ctx.clone();
    let done = tokio::spawn(async move {
        frontend::serve(doors, serve_ctx, token, tracker.clone()).await;
        tracker.close();
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            warn!(?drain, "drain deadline passed; closing remaining clients");
        }
        workers.stop();
    });
    info!(listen = %local_addr, "slotgate ready");
    Ok(Running {
        local_addr,
        unix_socket,
        shutdown,
        admin_stop,
        ctx,
        done,
    })
}

/// Runs until SIGINT or SIGTERM, then drains.
pub async fn run(
    config: Config,
    reload: Option<(crate::reload::ConfigSource, crate::config::FileConfig)>,
) -> Result<(), AppError> {
    let running = start(config, reload).await?;
    wait_for_signal().await;
    info!("shutting down: draining clients");
    running.stop().await;
    Ok(())
}

/// Reloads the TLS listener's certificate when its files change (checked every `every`); a
/// file that does not load leaves the certificate in use, with the reason logged. SIGHUP
/// reloads it too ([`watch_reloads`]).
async fn watch_certificate(
    cert: Arc<crate::tls::ServerCert>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        };
        match cert.reload(false) {
            Ok(crate::tls::Reload::Reloaded) => info!("TLS certificate reloaded"),
            Ok(crate::tls::Reload::Unchanged) => {}
            Err(e) => warn!(error = %e, "TLS certificate not reloaded; keeping the one in use"),
        }
    }
}

/// SIGHUP, and a change of the config file seen within `check`: the configuration file and
/// the TLS certificate are read again ([`crate::reload`]).
async fn watch_reloads(
    reloader: Arc<crate::reload::Reloader>,
    check: Option<Duration>,
    shutdown: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    if hup.is_none() {
        warn!("cannot watch SIGHUP: reloads only through the admin listener and file changes");
    }
    let mut tick = check.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        let checked = async {
            match tick.as_mut() {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        let by = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => "SIGHUP",
            _ = checked => {
                if !reloader.file_changed() {
                    continue;
                }
                "file change"
            }
        };
        let _ = crate::reload::reload_and_log(&reloader, by);
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
