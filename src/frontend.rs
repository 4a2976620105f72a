//! Client-facing side: the listener, its accept loop with the connection limit, and the shared
//! [`Context`] every session reads.
//!
//! The accept loop refuses connections beyond `max_clients` with Redis' own error and never
//! blocks on a session. Sessions live in `frontend/session.rs`; local command answers in
//! `frontend/local.rs`.

pub mod buffers;
pub mod client_pause;
pub mod client_reply;
pub mod client_stream;
pub mod clients;
pub mod hold_budget;
pub mod host;
pub mod io_signal;
pub mod keyspace_events;
pub mod local;
pub mod memory_budget;
pub mod scripts;
pub mod session;
pub mod shard_channels;
pub mod subscriptions;
pub mod tag;
pub mod transaction;
pub mod unix_listener;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::backend::Backends;
use crate::command::Table;
use crate::protocol::Limits;
use crate::topology::TopologyHandle;
use crate::topology::refresh::RefreshStats;

/// What sessions do with multi-key commands whose keys span slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiKeyPolicy {
    /// MGET, MSET, DEL, UNLINK, EXISTS, TOUCH are split per slot and merged.
    Split,
    /// Every multi-key command across slots gets CROSSSLOT, as in Redis Cluster.
    Strict,
}

/// Settings every session follows.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub limits: Limits,
    /// Most requests a client may have outstanding before the proxy stops reading from it.
    pub max_pipeline: usize,
    pub max_clients: usize,
    /// Most MOVED/ASK/TRYAGAIN a request follows before its error reaches the client.
    pub max_redirects: u16,
    /// Most TRYAGAIN retries of one request (with backoff from `tryagain_delay` to 100 ms).
    pub max_tryagain: u16,
    pub tryagain_delay: Duration,
    /// How long a request its master failed without running it waits for a master of its
    /// slot (a failover, a restart) before the failure reaches the client; `None` delivers it
    /// at once.
    pub failover_hold: Option<Duration>,
    pub multi_key: MultiKeyPolicy,
    /// FLUSHALL, FLUSHDB and CONFIG SET/RESETSTAT/REWRITE go to every master instead of being
    /// refused.
    pub fleet_writes: bool,
    /// Close a client that has sent and received nothing for this long, as Redis' `timeout`
    /// does (never one a node still owes a reply, blocked or subscribed; one that does not read
    /// its replies is idle). `None`: never (Redis' default, `timeout 0`).
    pub idle_timeout: Option<Duration>,
    /// Who may log in (`requirepass`).
    pub access: crate::access::Access,
    /// Commands no client may run (answered as unknown), checked against the table.
    pub deny_commands: Vec<String>,
    /// Failed AUTHs one address may make per minute before its AUTHs close the connection;
    /// 0: no limit.
    pub max_auth_failures_per_minute: u32,
    /// Most reply bytes held for one client that has not read them, besides the reply being
    /// added (so one large value still goes through): past it the client is closed, as
    /// Redis' `client-output-buffer-limit` does. `None`: no limit.
    pub output_buffer_limit: Option<usize>,
    /// Most bytes every client's buffers hold together before the clients holding the most
    /// are closed, as Redis' `maxmemory-clients`. `None`: no budget.
    pub memory_budget: Option<usize>,
    /// Most bytes of requests the failover hold keeps for one shard; past it they fail at
    /// once. `None`: no limit.
    pub failover_hold_max_bytes: Option<usize>,
    /// Close a client whose partial request has waited this long for the rest of its bytes
    /// (a slowloris holds connections so); a request that completes restarts the clock.
    /// `None`: never.
    pub request_timeout: Option<Duration>,
    /// The zone slotgate runs in (`zone`, `--zone`, `SLOTGATE_ZONE`): replica reads prefer
    /// nodes there; INFO shows it.
    pub zone: Option<String>,
    /// Where reads may go (`[reads] from`, `--read-from`).
    pub read_from: crate::router::ReadFrom,
    /// After a client writes a slot, its reads of that slot go to the master for this long
    /// (`[reads] read_your_writes_ms`, `--read-your-writes-ms`; `None`: off).
    pub read_your_writes: Option<Duration>,
    /// Key families (`[[colocate]]`): their keys are stored under their family's hash tag,
    /// rewritten in requests and restored in replies; `None` without any.
    pub families: Option<Arc<crate::families::Families>>,
}

/// A proxy serves many applications, so unlike Redis' `normal 0 0 0` the default is a bound.
pub const DEFAULT_OUTPUT_BUFFER_LIMIT: usize = 256 * 1024 * 1024;

/// The memory budget's default: four clients at the output buffer limit.
pub const DEFAULT_MEMORY_BUDGET: usize = 1024 * 1024 * 1024;

/// The failover hold's default limit per shard: 64 MiB is 100,000 SETs of a 500-byte value, a
/// thousand clients pipelining 100 each, and a sixteenth of the memory budget.
pub const DEFAULT_FAILOVER_HOLD_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The request timeout's default: 30 s is 17 MB/s for a request of the default 512 MiB limit,
/// and far longer than any client takes to write a request it has.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The failover hold's default: Redis Cluster's default `cluster-node-timeout` (15 s), after
/// which a replica is promoted, and a margin for the election.
pub const DEFAULT_FAILOVER_HOLD: Duration = Duration::from_secs(20);

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_pipeline: 1024,
            max_clients: 10_000,
            max_redirects: 5,
            max_tryagain: 100,
            tryagain_delay: Duration::from_millis(20),
            failover_hold: Some(DEFAULT_FAILOVER_HOLD),
            multi_key: MultiKeyPolicy::Split,
            fleet_writes: false,
            idle_timeout: None,
            output_buffer_limit: Some(DEFAULT_OUTPUT_BUFFER_LIMIT),
            memory_budget: Some(DEFAULT_MEMORY_BUDGET),
            failover_hold_max_bytes: Some(DEFAULT_FAILOVER_HOLD_MAX_BYTES),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            access: crate::access::Access::default(),
            deny_commands: Vec::new(),
            max_auth_failures_per_minute: 60,
            zone: None,
            read_from: crate::router::ReadFrom::Master,
            read_your_writes: None,
            families: None,
        }
    }
}

/// A counter that every worker adds to on a cache line of its own (no line bouncing between
/// workers on the request path); reading it sums them.
#[derive(Debug, Default)]
pub struct StripedCounter {
    stripes: [Stripe; STRIPES],
}

/// Stripes of a [`StripedCounter`]; workers beyond share them.
const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Stripe(AtomicU64);

impl StripedCounter {
    pub fn add(&self, n: u64) {
        if let Some(s) = self.stripes.get(crate::workers::current() % STRIPES) {
            s.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Counters for INFO's `# Proxy` section.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections_received: AtomicU64,
    pub connections_current: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub commands: AtomicU64,
    pub redirects_moved: AtomicU64,
    pub redirects_ask: AtomicU64,
    pub redirects_tryagain: AtomicU64,
    pub redirects_readonly: AtomicU64,
    /// Request parts held for a master (the failover hold), and those whose hold ran out.
    pub failover_holds: AtomicU64,
    pub failover_holds_expired: AtomicU64,
    pub crossslot_rejected: AtomicU64,
    pub backend_errors: AtomicU64,
    /// Bytes read from and written to clients (sessions add what they moved each time they
    /// go idle, and every 64 KB while busy).
    pub bytes_in: StripedCounter,
    pub bytes_out: StripedCounter,
    /// Clients closed for holding more unread replies than the output buffer limit.
    pub output_limit_closes: AtomicU64,
    /// Clients closed because a partial request waited past `clients.request_timeout_ms`.
    pub request_timeouts: AtomicU64,
    /// TLS clients whose handshake failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// AUTH and HELLO AUTH refused.
    pub auth_failures: AtomicU64,
    /// Reads a read policy placed: on a replica in slotgate's zone, on one elsewhere, on the
    /// master; and reads sent again elsewhere after a failure.
    pub reads_local_replica: AtomicU64,
    pub reads_remote_replica: AtomicU64,
    pub reads_master: AtomicU64,
    pub reads_retried: AtomicU64,
    /// Replicas read decisions passed over, by why ([`crate::router::Skipped`]).
    pub read_skips_down: AtomicU64,
    pub read_skips_syncing: AtomicU64,
    pub read_skips_lagging: AtomicU64,
}

impl ProxyStats {
    /// Counts a read placed by a read policy, and the replicas it passed over.
    pub fn count_read(&self, placement: crate::router::Placement, skipped: crate::router::Skipped) {
        use crate::router::Placement;
        for (c, n) in [
            (&self.read_skips_down, skipped.down),
            (&self.read_skips_syncing, skipped.syncing),
            (&self.read_skips_lagging, skipped.lagging),
        ] {
            if n > 0 {
                c.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
        let c = match placement {
            Placement::LocalReplica => &self.reads_local_replica,
            Placement::RemoteReplica => &self.reads_remote_replica,
            Placement::Master => &self.reads_master,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything a session needs, shared by all of them.
#[derive(Debug)]
pub struct Context {
    pub table: &'static Table,
    pub topology: Arc<TopologyHandle>,
    pub backends: Arc<Backends>,
    /// The clients' settings in force: a session takes its own copy when it starts and a new
    /// one when a reload tells it to (`tag::RECONFIGURE`); the accept path and INFO read this.
    pub config: arc_swap::ArcSwap<SessionConfig>,
    pub stats: ProxyStats,
    pub refresh: Arc<RefreshStats>,
    pub started: Instant,
    pub next_client_id: AtomicU64,
    /// Set before the shutdown token is cancelled and sessions are told (`drain_all`), so a
    /// session starting meanwhile sees it; sessions need not poll the token on
    /// every wake.
    pub draining: AtomicBool,
    /// Scripts loaded through slotgate, for NOSCRIPT repair.
    pub scripts: scripts::ScriptCache,
    /// What the failover hold keeps, per shard, against `clients.failover_hold_max_bytes`.
    pub hold_budget: hold_budget::HoldBudget,
    /// slotgate's own clients, for CLIENT LIST and CLIENT KILL.
    pub clients: clients::ClientRegistry,
    /// The operator's pause of every client (`POST /pause`).
    pub client_pause: client_pause::ClientPause,
    /// Requests parsed from one client read: how deep clients pipeline.
    pub pipeline_depth: metrics::Histogram,
    /// The worker threads sessions are spread over.
    pub workers: Arc<crate::workers::Workers>,
    /// Failed AUTHs per client address.
    pub auth_throttle: crate::access::AuthThrottle,
    /// What INFO's `# Server` says of slotgate itself (its port, process id, executable).
    pub own_server: crate::command::multi::OwnServer,
}

/// A new client's socket on its way to its worker: still registered with this thread's reactor,
/// or taken out of it for another worker's.
enum Handoff {
    HereTcp(TcpStream),
    HereUnix(UnixStream),
    MovedTcp(std::net::TcpStream),
    MovedUnix(std::os::unix::net::UnixStream),
}

/// A socket clients connect to: TCP, or a Unix socket file (whose path the client registry
/// holds, for CLIENT LIST).
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A client's socket as accepted.
enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<(Accepted, clients::Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Accepted::Tcp(s), clients::Peer::Tcp(peer)))
            }
            Listener::Unix(l) => Ok((Accepted::Unix(l.accept().await?.0), clients::Peer::Unix)),
        }
    }
}

impl Accepted {
    async fn refuse(mut self, line: &'static [u8]) {
        let _ = match &mut self {
            Accepted::Tcp(s) => s.write_all(line).await,
            Accepted::Unix(s) => s.write_all(line).await,
        };
    }

    /// The address the client connected to, for CLIENT LIST's `laddr`; Nagle off on TCP.
    fn local(&self) -> Option<clients::Peer> {
        match self {
            Accepted::Tcp(s) => {
                let _ = s.set_nodelay(true);
                s.local_addr().ok().map(clients::Peer::Tcp)
            }
            Accepted::Unix(_) => Some(clients::Peer::Unix),
        }
    }

    fn fd(&self) -> i32 {
        match self {
            Accepted::Tcp(s) => std::os::fd::AsRawFd::as_raw_fd(s),
            Accepted::Unix(s) => std::os::fd::AsRawFd::as_raw_fd(s),
        }
    }

    /// Still in this thread's reactor, for a session on this worker.
    fn here(self) -> Handoff {
        match self {
            Accepted::Tcp(s) => Handoff::HereTcp(s),
            Accepted::Unix(s) => Handoff::HereUnix(s),
        }
    }

    /// Out of this thread's reactor, for another worker's.
    fn into_std(self) -> std::io::Result<Handoff> {
        match self {
            Accepted::Tcp(s) => s.into_std().map(Handoff::MovedTcp),
            Accepted::Unix(s) => s.into_std().map(Handoff::MovedUnix),
        }
    }
}

impl Handoff {
    /// The socket registered with the current worker's reactor.
    fn arrive(self) -> std::io::Result<Accepted> {
        match self {
            Handoff::HereTcp(s) => Ok(Accepted::Tcp(s)),
            Handoff::HereUnix(s) => Ok(Accepted::Unix(s)),
            Handoff::MovedTcp(s) => TcpStream::from_std(s).map(Accepted::Tcp),
            Handoff::MovedUnix(s) => UnixStream::from_std(s).map(Accepted::Unix),
        }
    }
}

/// A listening socket and how its clients talk: plain RESP, or RESP inside TLS (TCP only).
pub struct Door {
    pub listener: Listener,
    pub tls: Option<TlsDoor>,
}

/// A TLS listener's acceptor and how long a client may take over its handshake.
#[derive(Clone)]
pub struct TlsDoor {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshake_timeout: Duration,
    /// Log a client in as the proxy user its certificate's subject CN names (mutual TLS).
    pub user_from_cn: bool,
}

/// The proxy user a client certificate names by its subject CN, when that user exists and is
/// on; a certificate naming no such user logs nobody in (the client authenticates as usual).
/// With the user comes the configuration its number is in, for the session to start with.
fn certificate_user(
    tls: &TlsDoor,
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
    peer: clients::Peer,
    ctx: &Context,
) -> Option<Box<session::CertificateUser>> {
    if !tls.user_from_cn {
        return None;
    }
    let cert = stream.get_ref().1.peer_certificates()?.first()?;
    let Some(cn) = crate::tls::subject_common_name(cert) else {
        info!(%peer, "client certificate without a common name: no user from it");
        return None;
    };
    let config = ctx.config.load_full();
    let Some(user) = config.access.certificate_user(cn.as_bytes()) else {
        info!(%peer, cn = %cn, "client certificate names no enabled user: not logged in");
        return None;
    };
    Some(Box::new(session::CertificateUser { user, config }))
}

/// The TLS handshake of a new client, bounded by the door's timeout; `None` (counted and
/// logged) when it fails. With the stream comes the user its certificate logs in, if any.
async fn tls_handshake(
    tls: &TlsDoor,
    stream: TcpStream,
    peer: clients::Peer,
    ctx: &Context,
) -> Option<(
    client_stream::ClientStream,
    Option<Box<session::CertificateUser>>,
)> {
    let handshake = tokio::time::timeout(tls.handshake_timeout, tls.acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(stream)) => {
            let user = certificate_user(tls, &stream, peer, ctx);
            Some((client_stream::ClientStream::Tls(Box::new(stream)), user))
        }
        Ok(Err(e)) => {
            ctx.stats
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            info!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            ctx.stats
                .tls_handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            info!(%peer, timeout = ?tls.handshake_timeout, "TLS handshake timed out");
            None
        }
    }
}

/// Accepts clients on every door until `shutdown`, one session each, run by its worker's
/// session host and tracked by `tracker` for drain.
pub async fn serve(
    doors: Vec<Door>,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let hosts: Arc<Vec<host::SessionHost>> = Arc::new(
        (0..ctx.workers.len())
            .map(|i| host::SessionHost::start(&ctx.workers, i))
            .collect(),
    );
    let loops = doors.into_iter().map(|door| {
        accept_loop(
            door,
            hosts.clone(),
            ctx.clone(),
            shutdown.clone(),
            tracker.clone(),
        )
    });
    futures_util::future::join_all(loops).await;
}

async fn accept_loop(
    door: Door,
    hosts: Arc<Vec<host::SessionHost>>,
    ctx: Arc<Context>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let listener = door.listener;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        ctx.stats
            .connections_received
            .fetch_add(1, Ordering::Relaxed);
        let current = ctx.stats.connections_current.load(Ordering::Relaxed);
        let max_clients = ctx.config.load().max_clients;
        if current >= max_clients as u64 {
            ctx.stats
                .connections_rejected
                .fetch_add(1, Ordering::Relaxed);
            warn!(%peer, max = max_clients, "refusing client: max number of clients reached");
            tokio::spawn(stream.refuse(b"-ERR max number of clients reached\r\n"));
            continue;
        }
        let local = stream.local();
        ctx.stats
            .connections_current
            .fetch_add(1, Ordering::Relaxed);
        let id = ctx.next_client_id.fetch_add(1, Ordering::Relaxed);
        let ctx2 = ctx.clone();
        let tls = door.tls.clone();
        // The session runs on a worker of its own choosing, in turn; a socket moving to
        // another worker leaves this thread's reactor for that worker's.
        let worker = ctx.workers.next_worker();
        let handoff = if worker == crate::workers::current() {
            stream.here()
        } else {
            match stream.into_std() {
                Ok(h) => h,
                Err(e) => {
                    warn!(%peer, error = %e, "cannot hand the client to a worker");
                    ctx.stats
                        .connections_current
                        .fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            }
        };
        let session = async move {
            // The opening's state (the handshake) overlaps the session's in this future's
            // memory: each idle client pays for the larger only (tests/client_memory.rs).
            let opened = match handoff.arrive() {
                Ok(stream) => {
                    let fd = stream.fd();
                    match (stream, tls) {
                        (Accepted::Tcp(s), None) if crate::uring::enabled() => {
                            match crate::uring::UringTcp::from_tokio(s) {
                                Ok(s) => Some((client_stream::ClientStream::Uring(s), fd, None)),
                                Err(e) => {
                                    warn!(error = %e, "cannot put the client on io_uring");
                                    None
                                }
                            }
                        }
                        (Accepted::Tcp(s), None) => {
                            Some((client_stream::ClientStream::Tcp(s), fd, None))
                        }
                        // On the session's worker, as any other future: a client that never
                        // finishes its handshake holds no worker, only its place under
                        // max_clients.
                        (Accepted::Tcp(s), Some(tls)) => tls_handshake(&tls, s, peer, &ctx2)
                            .await
                            .map(|(s, user)| (s, fd, user)),
                        // A Unix socket's door has no TLS.
                        (Accepted::Unix(s), _) => {
                            Some((client_stream::ClientStream::Unix(s), fd, None))
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %e, "cannot register the client on its worker");
                    None
                }
            };
            if let Some((stream, fd, user)) = opened {
                debug!("client connected");
                let at = clients::Endpoint { peer, local, fd };
                // One await of the session, as for a plaintext client: the session's poll
                // stays the only thing between the host and the request path.
                session::run(stream, ctx2.clone(), id, at, user).await;
                debug!("client gone");
            }
            ctx2.stats
                .connections_current
                .fetch_sub(1, Ordering::Relaxed);
        }
        // At debug level only: a span per session costs each idle client about 350 bytes
        // (tests/client_memory.rs); the info and warn lines a session writes name the client.
        .instrument(debug_span!("session", id, %peer));
        let started = hosts
            .get(worker)
            .is_some_and(|h| h.run(tracker.track_future(session)));
        if !started {
            warn!(%peer, worker, "cannot hand the client to its worker: the worker has stopped");
            ctx.stats
                .connections_current
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}
