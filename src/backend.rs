//! Backend nodes: the only way a session talks to a Redis node.
//!
//! A [`Node`] owns a small, fixed set of shared, pipelined connections per [`Dialect`] (the
//! protocol, RESP2 or RESP3, and the database a connection's handshake selected; the RESP2
//! database 0 set is opened at once, the others when a session first needs them) on each worker
//! thread; a session always uses the same one per node, on its own worker, so its commands to
//! one node stay in order and never cross threads. A session's own (private) connections come
//! from [`Node::private`], a few opened ahead of need (`warm`). Requests are queued on a bounded
//! channel; a full queue or a node known to be down fails fast. [`Backends`] keeps one `Node` per address across topology snapshots. Nothing here
//! decides routing, and nothing here blocks a session on a slow node beyond the queue bound.

pub mod address;
pub mod connection;
pub mod connector;
pub mod liveness;
pub mod stream;
pub mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::mailbox::{self, SendError};
pub use address::{AddrError, Endpoint, NodeAddr};
pub use connector::{Connector, Credentials, Secret};
use warm::{Warm, WarmPool};

use crate::error::BackendError;
use crate::metrics::{ErrorKind, NodeMetrics};
use crate::protocol::Limits;
use crate::protocol::encode::Proto;
use crate::workers::{self, Workers};

/// What a connection speaks once its handshake is done: the protocol (`HELLO 3` for RESP3) and
/// the database (`SELECT`). Sessions in different dialects never share a connection, so a
/// client's `SELECT 2` cannot move another client's keys to database 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dialect {
    pub proto: Proto,
    pub db: u32,
}

impl Dialect {
    /// A new Redis connection's: RESP2, database 0.
    pub const DEFAULT: Dialect = Dialect {
        proto: Proto::Resp2,
        db: 0,
    };

    pub fn resp(proto: Proto) -> Dialect {
        Dialect { proto, db: 0 }
    }
}

/// Where a reply goes: the session's reply channel and the tag that places it.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub tx: mailbox::Sender<BackendReply>,
    pub tag: u64,
}

/// A reply (or failure) for one request, tagged as the session asked.
#[derive(Debug)]
pub struct BackendReply {
    pub tag: u64,
    pub result: Result<Bytes, BackendError>,
}

impl ReplyTo {
    pub fn send(self, result: Result<Bytes, BackendError>) {
        // A closed channel means the client left; its replies are no longer wanted.
        let _ = self.tx.send(BackendReply {
            tag: self.tag,
            result,
        });
    }
}

/// One request for a backend: the frame to write, whether `ASKING` goes first, where the reply
/// goes.
#[derive(Debug)]
pub struct BackendRequest {
    pub frame: Bytes,
    /// Send `ASKING` first (its `+OK` is discarded).
    pub asking: bool,
    /// Replies `frame` produces before the one wanted, discarded (a buffered transaction's
    /// `+OK` and `+QUEUED`s before `EXEC`'s reply).
    pub skip: u32,
    pub reply_to: ReplyTo,
}

impl BackendRequest {
    /// A request that produces exactly one reply.
    pub fn new(frame: Bytes, reply_to: ReplyTo) -> Self {
        BackendRequest {
            frame,
            asking: false,
            skip: 0,
            reply_to,
        }
    }
}

/// What a node is to slotgate. A node that changes role (a failover) becomes a new [`Node`]
/// with new connections, so a request meant for a master can never be queued on the
/// connections of what is now a replica, nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves every request of its slots.
    Master,
    /// Serves reads that a read policy sends it, never a write.
    Replica,
}

/// A replica's replication, as the replica checker last read it from its master's `INFO
/// replication`. Only `Syncing` and `Lagging` keep reads away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Replication {
    /// Not checked yet, or its master cannot be asked (down: the replica is then the freshest
    /// copy there is, and keeps serving).
    Unknown = 0,
    /// Connected to its master and within the lag limit.
    Online = 1,
    /// Not connected to its master, or still in its initial sync (or loading it).
    Syncing = 2,
    /// Further behind its master than `max_replica_lag_ms`.
    Lagging = 3,
}

impl Replication {
    fn from_u8(v: u8) -> Replication {
        match v {
            1 => Replication::Online,
            2 => Replication::Syncing,
            3 => Replication::Lagging,
            _ => Replication::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Replication::Unknown => "unknown",
            Replication::Online => "online",
            Replication::Syncing => "syncing",
            Replication::Lagging => "lagging",
        }
    }

    /// Whether a replica in this state may serve reads.
    pub fn serves_reads(self) -> bool {
        matches!(self, Replication::Unknown | Replication::Online)
    }
}

/// Whether replicas get connections, and how they are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplicaLinks {
    /// No read policy sends anything to a replica: no connections (the default).
    #[default]
    Off,
    /// Plain connections (Sentinel and standalone replicas serve reads as they are).
    Plain,
    /// Connections that send `READONLY` first (Redis Cluster replicas).
    ReadOnly,
}

/// Settings shared by every backend connection.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Shared connections per node and protocol on each worker thread.
    pub connections_per_node: usize,
    /// How the nodes are reached and logged in to (its connect timeout included); the
    /// control connections use the same one.
    pub connector: Connector,
    pub read_timeout: Duration,
    pub queue_depth: usize,
    pub max_in_flight: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub limits: Limits,
    /// Most private connections (blocking commands, WATCH) per node at once.
    pub max_private_per_node: usize,
    /// Private connections kept open and idle per node and dialect, ready for a session's
    /// first blocking command (`warm`): for masters from the start, for any node once it used
    /// one. 0 opens each when needed.
    pub warm_private_per_node: usize,
    /// Whether replicas get connections of their own.
    pub replica_links: ReplicaLinks,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            connections_per_node: 1,
            connector: Connector::default(),
            read_timeout: Duration::from_secs(5),
            queue_depth: 4096,
            max_in_flight: 8192,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            limits: Limits::default(),
            max_private_per_node: 256,
            warm_private_per_node: 2,
            replica_links: ReplicaLinks::Off,
        }
    }
}

/// Counters every backend connection adds to (read by INFO).
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests written to backends.
    pub requests: AtomicU64,
    /// `write` calls that carried them: requests / writes is the coalescing factor.
    pub writes: AtomicU64,
    /// Replies read.
    pub replies: AtomicU64,
    /// Connections (re)established.
    pub connects: AtomicU64,
}

/// What a connection reports to: the process-wide counters and its node's handles.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub stats: Arc<BackendStats>,
    pub node: Arc<NodeMetrics>,
}

/// Connection state as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    Connecting = 0,
    Up = 1,
    Down = 2,
}

/// The sending side of one backend connection.
#[derive(Debug)]
pub struct Link {
    /// Requests sent but not yet taken by the connection task, at most `depth` of them.
    tx: mailbox::Sender<BackendRequest>,
    depth: usize,
    state: Arc<AtomicU8>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The connection task finishes what it holds, then ends.
        self.tx.close();
    }
}

impl Link {
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Relaxed) {
            0 => LinkState::Connecting,
            1 => LinkState::Up,
            _ => LinkState::Down,
        }
    }
}

/// A backend Redis node.
#[derive(Debug)]
pub struct Node {
    addr: NodeAddr,
    role: Role,
    /// Permits for private connections.
    private_slots: Arc<Semaphore>,
    /// Private connections opened ahead of need (they take a permit when handed out).
    warm: WarmPool,
    /// The connections of [`Dialect::DEFAULT`], opened with the node.
    default: Vec<Link>,
    /// Every other dialect's, opened when a session first uses it.
    others: Mutex<HashMap<Dialect, Arc<Vec<Link>>>>,
    /// The node left the topology: its connections are closed and no new ones open.
    retired: AtomicBool,
    /// Its shared connections' place after the node it replaced (taken when it is retired, so
    /// that only the connections still hold `ours`).
    turn: Mutex<Option<connection::Turn>>,
    /// Cancelled once its shared connections have all ended after it was retired: where a
    /// node replacing it at the same address opens its own.
    drained: tokio_util::sync::CancellationToken,
    /// Cancelled with `retired`: ends the sessions' subscriber connections to the node, so
    /// that they subscribe again where the topology in force says (after a failover, a
    /// migration or a reload of the backends' settings).
    retiring: tokio_util::sync::CancellationToken,
    /// A master Sentinel is failing over away from ([`Node::pause`]): sends fail fast and
    /// unsent ([`BackendError::FailingOver`]), so the sessions' failover hold keeps them for
    /// the new master.
    paused: AtomicBool,
    /// Pauses begun, so that a pause's timer ends only its own pause.
    pauses: AtomicU64,
    /// A replica's [`Replication`] (always `Unknown` for a master).
    replication: AtomicU8,
    /// A replica's lag behind its master in milliseconds, as last read (`u64::MAX`: unknown).
    lag_ms: AtomicU64,
    config: Arc<BackendConfig>,
    tel: Telemetry,
    workers: Arc<Workers>,
}

impl Node {
    /// A node whose shared connections open once `after` is cancelled (the node it replaces at
    /// this address has no shared connection left).
    fn new(
        addr: NodeAddr,
        role: Role,
        config: Arc<BackendConfig>,
        stats: Arc<BackendStats>,
        workers: Arc<Workers>,
        after: tokio_util::sync::CancellationToken,
    ) -> Node {
        let tel = Telemetry {
            stats,
            node: Arc::new(NodeMetrics::new(&addr)),
        };
        let drained = tokio_util::sync::CancellationToken::new();
        let turn = connection::Turn {
            after,
            _ours: Arc::new(drained.clone().drop_guard()),
        };
        let readonly = Self::readonly(role, &config);
        let default = Self::links(
            &addr,
            Dialect::DEFAULT,
            readonly,
            &config,
            &tel,
            &workers,
            &turn,
        );
        let node = Node {
            private_slots: Arc::new(Semaphore::new(config.max_private_per_node.max(1))),
            warm: WarmPool::new(config.warm_private_per_node),
            addr,
            role,
            default,
            others: Mutex::new(HashMap::new()),
            retired: AtomicBool::new(false),
            turn: Mutex::new(Some(turn)),
            drained,
            retiring: tokio_util::sync::CancellationToken::new(),
            paused: AtomicBool::new(false),
            pauses: AtomicU64::new(0),
            replication: AtomicU8::new(Replication::Unknown as u8),
            lag_ms: AtomicU64::new(u64::MAX),
            config,
            tel,
            workers,
        };
        if role == Role::Master {
            node.warm_up(Dialect::DEFAULT, node.workers.handle(0));
        }
        node
    }

    /// A connection of its own for one session (blocking commands, WATCH), bounded per node.
    /// It has no read timeout and never reconnects: state tied to it (a WATCH, a blocked client)
    /// must not silently move to a new connection.
    /// One opened ahead of need is handed out when there is one, and another opened in its
    /// place.
    pub fn private(&self, dialect: Dialect) -> Result<PrivateLink, BackendError> {
        let permit = self.private_permit()?;
        let here = tokio::runtime::Handle::current();
        let (link, id) = match self.warm.take(dialect) {
            Some(w) => (w.link, w.id),
            None => self.spawn_private(dialect, &here),
        };
        self.warm_up(dialect, &here);
        Ok(self.private_link(link, permit, id))
    }

    /// Whether the node left the topology.
    pub fn is_retired(&self) -> bool {
        self.retiring.is_cancelled()
    }

    fn spawn_private(
        &self,
        dialect: Dialect,
        on: &tokio::runtime::Handle,
    ) -> (Link, Arc<AtomicU64>) {
        connection::spawn_private(
            on,
            self.addr.clone(),
            dialect,
            self.config.clone(),
            self.tel.clone(),
            self.retiring.clone(),
        )
    }

    /// Opens, on `on`, the idle private connections of `dialect` the pool lacks (none once the
    /// node left the topology).
    fn warm_up(&self, dialect: Dialect, on: &tokio::runtime::Handle) {
        if self.retired.load(Ordering::Relaxed) {
            return;
        }
        self.warm.fill(dialect, || {
            let (link, id) = self.spawn_private(dialect, on);
            Warm { link, id }
        });
    }

    /// A pub/sub connection for one session: like [`Self::private`], and every frame it reads
    /// (subscription replies, messages) goes to `pushes`; it ends as a lost one when the node
    /// is retired, so that the session subscribes again where the topology says. Pub/sub does not depend on the
    /// database, so only the protocol is chosen.
    pub fn subscriber(&self, proto: Proto, pushes: ReplyTo) -> Result<PrivateLink, BackendError> {
        let permit = self.private_permit()?;
        let link = connection::spawn_subscriber(
            self.addr.clone(),
            Dialect::resp(proto),
            self.config.clone(),
            self.tel.clone(),
            pushes,
            self.retiring.clone(),
        );
        Ok(self.private_link(link, permit, Arc::default()))
    }

    fn private_permit(&self) -> Result<OwnedSemaphorePermit, BackendError> {
        self.private_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| BackendError::TooManyPrivate(self.addr.clone()))
    }

    fn private_link(
        &self,
        link: Link,
        permit: OwnedSemaphorePermit,
        backend_id: Arc<AtomicU64>,
    ) -> PrivateLink {
        PrivateLink {
            addr: self.addr.clone(),
            link,
            _permit: permit,
            backend_id,
            retiring: self.retiring.clone(),
        }
    }

    /// Whether this node's shared connections send `READONLY` (a cluster replica's).
    fn readonly(role: Role, config: &BackendConfig) -> bool {
        role == Role::Replica && config.replica_links == ReplicaLinks::ReadOnly
    }

    /// `connections_per_node` connections on each worker, worker by worker.
    fn links(
        addr: &NodeAddr,
        dialect: Dialect,
        readonly: bool,
        config: &Arc<BackendConfig>,
        tel: &Telemetry,
        workers: &Workers,
        turn: &connection::Turn,
    ) -> Vec<Link> {
        let per = config.connections_per_node.max(1);
        (0..workers.len() * per)
            .map(|i| {
                connection::spawn(
                    workers.handle(i / per),
                    addr.clone(),
                    dialect,
                    config.clone(),
                    tel.clone(),
                    readonly,
                    turn.clone(),
                )
            })
            .collect()
    }

    /// The connection of `links` that `session` uses on the calling worker.
    fn pick<'l>(&self, links: &'l [Link], session: u64) -> Option<&'l Link> {
        links.get(self.link_slot(session))
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// A replica's replication state, as last checked.
    pub fn replication(&self) -> Replication {
        Replication::from_u8(self.replication.load(Ordering::Relaxed))
    }

    /// A replica's lag in milliseconds, when known.
    pub fn lag_ms(&self) -> Option<u64> {
        let v = self.lag_ms.load(Ordering::Relaxed);
        (v != u64::MAX).then_some(v)
    }

    /// Records what the replica checker read (the lag, when its master said).
    pub fn set_replication(&self, state: Replication, lag_ms: Option<u64>) {
        self.replication.store(state as u8, Ordering::Relaxed);
        self.lag_ms
            .store(lag_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Where, among a node's connections of the default dialect, the one `session` uses on
    /// the calling worker is: the same place in every node (they share one configuration).
    #[inline]
    pub fn link_slot(&self, session: u64) -> usize {
        let per = self.config.connections_per_node.max(1);
        let worker = workers::current().min(self.workers.len().saturating_sub(1));
        worker * per + (session % per as u64) as usize
    }

    /// Whether the connection at `slot` ([`Self::link_slot`]) can take a request now.
    #[inline]
    pub fn serving_at(&self, slot: usize) -> bool {
        self.default
            .get(slot)
            .is_some_and(|l| l.state() != LinkState::Down)
    }

    /// The figure reads choose by among equal nodes: the moving average of the reply latency
    /// times (outstanding requests + 1), in nanoseconds; lower is better.
    #[inline]
    pub fn load_score(&self) -> u64 {
        let m = &self.tel.node;
        m.latency_ewma_nanos()
            .saturating_mul(m.outstanding().saturating_add(1))
    }

    /// Stops sending to this master for at most `limit`: Sentinel is failing it over (it has
    /// chosen the replica to promote), and a write it took from now on would be dropped when it
    /// is demoted. Sends fail fast and unsent until [`Self::resume`], the limit, or the node's
    /// retirement (the new master is published; the old one is a new `Node` if it is ever a
    /// master again). Sessions send nothing on their private connections to it meanwhile (a
    /// blocking command or a WATCH fails with [`BackendError::FailingOver`]: it cannot be held,
    /// being tied to this node).
    pub fn pause(self: &Arc<Self>, limit: Duration) {
        let pause = self.pauses.fetch_add(1, Ordering::Relaxed) + 1;
        self.paused.store(true, Ordering::Release);
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if let Some(node) = node.upgrade()
                && node.pauses.load(Ordering::Relaxed) == pause
                && node.paused.swap(false, Ordering::AcqRel)
            {
                warn!(node = %node.addr, ?limit, "pause not ended in time (no failover or switch came): sending to the master again");
            }
        });
    }

    /// Ends a pause: the failover was given up and the master stays.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }

    /// Whether sends are paused for a failover.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Waits until every request queued on this node's shared connections before the call
    /// has been answered (or has failed): a `PING` goes through each connection, in order
    /// behind what it holds, also while the node is paused. With the clients paused
    /// (`POST /pause`), nothing reaches it afterwards, so once this returns `true` the node has
    /// run everything slotgate sent it on them. `false` when `limit` passed first.
    pub async fn barrier(&self, limit: Duration) -> bool {
        const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
        let (tx, mut rx) = mailbox::channel();
        let mut links: Vec<&mailbox::Sender<BackendRequest>> =
            self.default.iter().map(|l| &l.tx).collect();
        let others: Vec<Arc<Vec<Link>>> = match self.others.lock() {
            Ok(g) => g.values().cloned().collect(),
            Err(poisoned) => poisoned.into_inner().values().cloned().collect(),
        };
        links.extend(others.iter().flat_map(|ls| ls.iter().map(|l| &l.tx)));
        let mut expected = 0usize;
        for link in links {
            let reply_to = ReplyTo {
                tx: tx.clone(),
                tag: expected as u64,
            };
            // A closed connection holds nothing; it hands the request back (answered at once).
            if let Err(req) = link.send(BackendRequest::new(Bytes::from_static(PING), reply_to)) {
                drop(req);
                continue;
            }
            expected += 1;
        }
        drop(tx);
        let all = async {
            for _ in 0..expected {
                if rx.recv().await.is_none() {
                    break;
                }
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Queues `req` on the connection this session uses for this node. Fails fast, handing the
    /// request back through its `ReplyTo`, when the node is down, paused, or its queue is full.
    pub fn send(&self, dialect: Dialect, session: u64, req: BackendRequest) {
        self.with_link(dialect, session, |link| {
            let Some(link) = link else {
                return req.reply_to.send(Err(self.unusable()));
            };
            match link.tx.send_bounded(req, link.depth) {
                Ok(()) => {}
                Err(SendError::Full(req)) => {
                    self.tel.node.error(ErrorKind::Overloaded, 1);
                    req.reply_to
                        .send(Err(BackendError::Overloaded(self.addr.clone())));
                }
                Err(SendError::Closed(req)) => req
                    .reply_to
                    .send(Err(BackendError::Down(self.addr.clone()))),
            }
        })
    }

    /// Runs `f` with the connection `session` uses for `dialect` on the calling worker, or
    /// `None` when it is down or the node is paused ([`Self::unusable`] says which).
    #[inline]
    fn with_link<R>(
        &self,
        dialect: Dialect,
        session: u64,
        f: impl FnOnce(Option<&Link>) -> R,
    ) -> R {
        let other;
        let links: &[Link] = if dialect == Dialect::DEFAULT {
            &self.default
        } else {
            other = self.links_of(dialect);
            &other
        };
        f(self
            .pick(links, session)
            .filter(|l| l.state() != LinkState::Down && !self.paused.load(Ordering::Relaxed)))
    }

    /// Why [`Self::with_link`] found no connection to use.
    #[cold]
    fn unusable(&self) -> BackendError {
        if self.paused.load(Ordering::Relaxed) {
            BackendError::FailingOver(self.addr.clone())
        } else {
            BackendError::Down(self.addr.clone())
        }
    }

    /// The connections of a dialect other than the default, opened on first use.
    fn links_of(&self, dialect: Dialect) -> Arc<Vec<Link>> {
        let mut guard = match self.others.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.retired.load(Ordering::Relaxed) {
            return Arc::new(Vec::new());
        }
        let Some(turn) = lock(&self.turn).clone() else {
            return Arc::new(Vec::new());
        };
        guard
            .entry(dialect)
            .or_insert_with(|| {
                Arc::new(Self::links(
                    &self.addr,
                    dialect,
                    Self::readonly(self.role, &self.config),
                    &self.config,
                    &self.tel,
                    &self.workers,
                    &turn,
                ))
            })
            .clone()
    }

    /// Queues every request of `reqs` (leaving it empty) on the connection this session uses,
    /// under one lock; like [`Self::send`], fails them all fast when the node is down or the
    /// queue would overflow.
    pub fn send_batch(&self, dialect: Dialect, session: u64, reqs: &mut Vec<BackendRequest>) {
        let failure = self.with_link(dialect, session, |link| {
            let Some(link) = link else {
                return Some(self.unusable());
            };
            match link.tx.send_many_bounded(reqs, link.depth) {
                Ok(()) => None,
                Err(SendError::Full(())) => {
                    self.tel
                        .node
                        .error(ErrorKind::Overloaded, reqs.len() as u64);
                    Some(BackendError::Overloaded(self.addr.clone()))
                }
                Err(SendError::Closed(())) => Some(BackendError::Down(self.addr.clone())),
            }
        });
        if let Some(failure) = failure {
            for req in reqs.drain(..) {
                req.reply_to.send(Err(failure.clone()));
            }
        }
    }

    /// Closes every shared connection: each finishes what it holds, then ends. Sends that
    /// follow fail fast as to a node that is down.
    fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        // From now on only the connections hold the node's place: `drained` is cancelled when
        // the last of them ends.
        lock(&self.turn).take();
        self.retiring.cancel();
        self.warm.clear();
        for link in &self.default {
            link.tx.close();
        }
        let others = match self.others.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for link in others.values().flat_map(|links| links.iter()) {
            link.tx.close();
        }
    }

    /// The node's metric handles.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.tel.node
    }

    /// True when every connection of the default dialect is up and sends are not paused.
    pub fn is_up(&self) -> bool {
        !self.is_paused() && self.default.iter().all(|l| l.state() == LinkState::Up)
    }
}

/// A session's own connection to one node; dropping it closes the connection and frees its
/// permit.
#[derive(Debug)]
pub struct PrivateLink {
    addr: NodeAddr,
    link: Link,
    _permit: OwnedSemaphorePermit,
    /// The node's `CLIENT ID` for this connection once it is open (0 before; always 0 for a
    /// subscriber connection).
    backend_id: Arc<AtomicU64>,
    /// The node's retirement ([`Node::is_retired`]).
    retiring: tokio_util::sync::CancellationToken,
}

impl PrivateLink {
    /// Whether its node left the topology: a command blocked on it was unblocked, and nothing
    /// should be sent on it any more.
    pub fn is_retired(&self) -> bool {
        self.retiring.is_cancelled()
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The node's id for this connection (`CLIENT ID`), once it is open.
    pub fn backend_id(&self) -> Option<u64> {
        Some(self.backend_id.load(Ordering::Relaxed)).filter(|&id| id != 0)
    }

    /// False once the connection failed; the session then drops it.
    pub fn is_usable(&self) -> bool {
        self.link.state() != LinkState::Down
    }

    pub fn send(&self, req: BackendRequest) {
        if !self.is_usable() {
            req.reply_to
                .send(Err(BackendError::Lost(self.addr.clone())));
            return;
        }

        if let Err(req) = self.link.tx.send(req) {
            req.reply_to
                .send(Err(BackendError::Lost(self.addr.clone())));
        }
    }
}

/// Every backend node slotgate knows, by role and address. Nodes outlive topology snapshots,
/// so a refresh that keeps a node in its role keeps its connections.
#[derive(Debug)]
pub struct Backends {
    /// The settings new nodes take; a reload replaces them ([`Backends::replace_config`]).
    config: arc_swap::ArcSwap<BackendConfig>,
    workers: Arc<Workers>,
    masters: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    replicas: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    /// Retired nodes whose shared connections may still answer what they hold, by address:
    /// a new node there opens its own once they ended (see [`connection::Turn`]).
    draining: Mutex<HashMap<NodeAddr, tokio_util::sync::CancellationToken>>,
    stats: Arc<BackendStats>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Backends {
    pub fn new(config: BackendConfig, workers: Arc<Workers>) -> Backends {
        Backends {
            config: arc_swap::ArcSwap::from_pointee(config),
            workers,
            masters: Mutex::new(HashMap::new()),
            replicas: Mutex::new(HashMap::new()),
            draining: Mutex::new(HashMap::new()),
            stats: Arc::new(BackendStats::default()),
        }
    }

    /// The master at `addr`, created (and its connections started) on first use.
    pub fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        self.get_or_open(&self.masters, addr, Role::Master)
    }

    /// The replica at `addr`, created on first use; `None` when replicas get no connections
    /// (no read policy sends them anything).
    pub fn replica(&self, addr: &NodeAddr) -> Option<Arc<Node>> {
        (self.config.load().replica_links != ReplicaLinks::Off)
            .then(|| self.get_or_open(&self.replicas, addr, Role::Replica))
    }

    fn get_or_open(
        &self,
        map: &Mutex<HashMap<NodeAddr, Arc<Node>>>,
        addr: &NodeAddr,
        role: Role,
    ) -> Arc<Node> {
        let mut nodes = lock(map);
        if let Some(n) = nodes.get(addr) {
            return n.clone();
        }
        let addr = addr.clone();
        let after = lock(&self.draining).remove(&addr).unwrap_or_else(|| {
            let none = tokio_util::sync::CancellationToken::new();
            none.cancel();
            none
        });
        let node = Arc::new(Node::new(
            addr.clone(),
            role,
            self.config.load_full(),
            self.stats.clone(),
            self.workers.clone(),
            after,
        ));
        nodes.insert(addr, node.clone());
        node
    }

    /// Forgets the masters not in `masters` and the replicas not in `replicas`, and closes
    /// their shared connections now, although a session may still hold the node for a moment
    /// (its outbox): a node that left its role (a demoted master) keeps no connection open in
    /// it. A node needed again later is a new one, with new connections.
    pub fn retain(&self, masters: &[NodeAddr], replicas: &[NodeAddr]) {
        for (map, keep) in [(&self.masters, masters), (&self.replicas, replicas)] {
            lock(map).retain(|addr, node| {
                let kept = keep.iter().any(|k| k == addr);
                if !kept {
                    self.retire(node);
                }
                kept
            });
        }
    }

    /// The settings in force.
    pub fn config(&self) -> Arc<BackendConfig> {
        self.config.load_full()
    }

    /// A reload's new settings: every node is forgotten, so that the next snapshot's nodes are
    /// new ones, opened and logged in with `config`, each opening its shared connections once
    /// the old node at its address has none left (see [`connection::Turn`]). Returns the old
    /// nodes, for the caller to retire ([`Backends::retire_replaced`]) once the new snapshot is
    /// in force: a session that took a node from the old snapshot an instant before still
    /// queues to it, and the old node sends that (before the new one sends anything) instead of
    /// refusing it to be sent again after the session's later requests. Once retired, a node's
    /// shared connections close when what is in flight on them is answered (a session's private
    /// connections stay until it lets them go); requests that meet a retired node fail unsent
    /// and are held for the new one, as in a failover.
    pub fn replace_config(&self, config: BackendConfig) -> Vec<Arc<Node>> {
        self.config.store(Arc::new(config));
        let mut old = Vec::new();
        for map in [&self.masters, &self.replicas] {
            old.extend(lock(map).drain().map(|(_, node)| node));
        }
        self.draining(old.iter().map(Arc::as_ref));
        old
    }

    /// Retires the nodes a reload replaced ([`Backends::replace_config`]).
    pub fn retire_replaced(nodes: Vec<Arc<Node>>) {
        for node in nodes {
            node.retire();
        }
    }

    /// Retires `node`, and remembers until its shared connections ended that a new node at its
    /// address must wait for them.
    fn retire(&self, node: &Node) {
        node.retire();
        self.draining([node]);
    }

    /// Remembers `nodes` as draining: a new node at one's address opens its shared connections
    /// once that node's have ended (those that already did are forgotten).
    fn draining<'n>(&self, nodes: impl IntoIterator<Item = &'n Node>) {
        let mut draining = lock(&self.draining);
        draining.retain(|_, drained| !drained.is_cancelled());
        for node in nodes {
            draining.insert(node.addr.clone(), node.drained.clone());
        }
    }

    pub fn stats(&self) -> &BackendStats {
        &self.stats
    }
}
