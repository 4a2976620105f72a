//! One multiplexed, pipelined connection to a backend node.
//!
//! A single task owns the socket. It takes queued requests from many sessions, appends them to
//! one write buffer (so many requests leave in one `write`), and matches replies to requests in
//! FIFO order with the reply scanner. It reconnects with exponential backoff and, while a node
//! is down, fails queued requests at once. It must never reorder replies, never hold more than
//! `max_in_flight` requests, and never buffer more than one write batch beyond that.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::Poll;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::liveness::{self, Probe, Verdict};
use super::stream::BackendStream;
use super::{BackendConfig, BackendReply, BackendRequest, Link, LinkState, ReplyTo, Telemetry};
use super::{Dialect, NodeAddr};
use crate::error::BackendError;
use crate::mailbox;
use crate::metrics::ErrorKind;
use crate::protocol::encode::{self, Proto};
use crate::protocol::{Limits, ReplyScanner};

/// The frame that lets the next command on a connection act on a slot being imported (the
/// node answers `+OK`, which is never delivered).
pub const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const HELLO3: &[u8] = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n";
const READONLY: &[u8] = b"*1\r\n$8\r\nREADONLY\r\n";
/// Stop taking new requests while this much is still unwritten.
const WRITE_HIGH_WATER: usize = 256 * 1024;
const READ_CHUNK: usize = 32 * 1024;
/// Past this many unwritten bytes, write at once instead of waiting for more requests.
const COALESCE_LIMIT: usize = 64 * 1024;
/// How many times in a row the task yields while new requests keep arriving before it writes.
const MAX_DEFERS: u8 = 3;
/// Rounds of the poll loop before yielding to other tasks.
const POLL_BUDGET: usize = 64;

/// Replies read in one batch, handed to their sessions with one queue operation per run of
/// consecutive replies for the same session (a pipelining client's replies come in runs).
struct Deliveries {
    to: Option<mailbox::Sender<BackendReply>>,
    items: Vec<BackendReply>,
}

impl Deliveries {
    fn push(&mut self, to: ReplyTo, result: Result<Bytes, BackendError>) {
        match &self.to {
            Some(tx) if tx.same_queue(&to.tx) => {}
            _ => {
                self.flush();
                self.to = Some(to.tx);
            }
        }
        self.items.push(BackendReply {
            tag: to.tag,
            result,
        });
    }

    fn flush(&mut self) {
        if let Some(tx) = self.to.take() {
            // A closed queue means the client left; its replies are no longer wanted.
            if !tx.send_many(&mut self.items) {
                self.items.clear();
            }
        }
    }
}

/// The task's side of a link: the channel requests arrive on, and what it reports back.
struct Queue {
    rx: mailbox::Receiver<BackendRequest>,
    /// For a subscriber connection: where every frame read goes.
    pushes: Option<ReplyTo>,
    /// Where a private connection reports the node's `CLIENT ID` for it once open.
    backend_id: Option<Arc<AtomicU64>>,
    /// For a subscriber connection: cancelled when its node leaves the topology, which ends
    /// the connection as a lost one (its session subscribes again where the topology says).
    /// For a private one: a command blocked on it is unblocked (`CLIENT UNBLOCK id ERROR`), and
    /// its session sends it again where the topology says.
    retired: Option<CancellationToken>,
}

#[derive(Debug)]
enum Pending {
    /// A request written at the time given (nanoseconds since the connection's epoch), waiting
    /// for its reply.
    Reply(ReplyTo, u64),
    /// A reply nobody waits for: the `+OK` of an `ASKING` sent before a redirected request, or
    /// the `+OK`/`+QUEUED` replies of a buffered transaction before its `EXEC`.
    Skip,
}

/// Whether a connection is shared (pipelined, timed out, reconnecting), private to a session,
/// or a session's pub/sub subscriber connection (every frame it reads goes to the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Shared,
    Private,
    Subscriber,
}

/// Starts a shared connection task for `addr` on the runtime `on` and returns its sending side.
pub(super) fn spawn(
    on: &tokio::runtime::Handle,
    addr: NodeAddr,
    dialect: Dialect,
    config: Arc<BackendConfig>,
    tel: Telemetry,
    readonly: bool,
    turn: Turn,
) -> Link {
    spawn_kind(
        on,
        addr,
        Open {
            dialect,
            readonly,
            client_id: false,
        },
        config,
        tel,
        Ends::Shared(turn),
    )
}

/// Orders a node's shared connections after those of the node it replaces at the same address
/// (a reload's new backend settings, a node back in the topology): they open only once every
/// shared connection of the old node has ended, having answered what it held, so that no
/// request a client sends to the new node overtakes one it sent to the old node before.
#[derive(Debug, Clone)]
pub(super) struct Turn {
    /// Cancelled once the old node's shared connections have all ended (at once: no old node).
    pub(super) after: CancellationToken,
    /// Held, never read, by this node's shared connections and by the node until it is
    /// retired: when the last lets go, the successor's `after` is cancelled.
    pub(super) _ours: Arc<tokio_util::sync::DropGuard>,
}

/// Starts a private connection: no read timeout (a blocked client may wait for ever), no
/// reconnect (a WATCH must not move silently to another connection).
pub(super) fn spawn_private(
    on: &tokio::runtime::Handle,
    addr: NodeAddr,
    dialect: Dialect,
    config: Arc<BackendConfig>,
    tel: Telemetry,
    retired: CancellationToken,
) -> (Link, Arc<AtomicU64>) {
    let open = Open {
        // The node's id for this connection, so that CLIENT UNBLOCK can name it there.
        client_id: true,
        ..Open::plain(dialect)
    };
    let id = Arc::new(AtomicU64::new(0));
    let link = spawn_kind(
        on,
        addr,
        open,
        config,
        tel,
        Ends::Private(id.clone(), retired),
    );
    (link, id)
}

/// Starts a subscriber connection: private, and every frame it reads (subscription replies,
/// messages) goes to `pushes` in the order read.
pub(super) fn spawn_subscriber(
    addr: NodeAddr,
    dialect: Dialect,
    config: Arc<BackendConfig>,
    tel: Telemetry,
    pushes: ReplyTo,
    retired: CancellationToken,
) -> Link {
    let on = tokio::runtime::Handle::current();
    spawn_kind(
        &on,
        addr,
        Open::plain(dialect),
        config,
        tel,
        Ends::Subscriber(pushes, retired),
    )
}

/// What a connection of each kind reports back besides replies.
enum Ends {
    Shared(Turn),
    /// The node's `CLIENT ID` for the connection goes here once it is open; the token unblocks
    /// a command blocked on it when the node is retired.
    Private(Arc<AtomicU64>, CancellationToken),
    /// Every frame read goes here; the token ends the connection when the node is retired.
    Subscriber(ReplyTo, CancellationToken),
}

fn spawn_kind(
    on: &tokio::runtime::Handle,
    addr: NodeAddr,
    open: Open,
    config: Arc<BackendConfig>,
    tel: Telemetry,
    ends: Ends,
) -> Link {
    let (kind, pushes, backend_id, retired, turn) = match ends {
        Ends::Shared(turn) => (Kind::Shared, None, None, None, Some(turn)),
        Ends::Private(id, retired) => (Kind::Private, None, Some(id), Some(retired), None),
        Ends::Subscriber(to, retired) => (Kind::Subscriber, Some(to), None, Some(retired), None),
    };
    let dialect = open.dialect;
    let (tx, rx) = mailbox::channel();
    let state = Arc::new(AtomicU8::new(LinkState::Connecting as u8));
    let link_state = state.clone();
    let depth = config.queue_depth.max(1);
    let span = info_span!("backend", node = %addr, proto = ?dialect.proto, db = dialect.db);
    let queue = Queue {
        rx,
        pushes,
        backend_id,
        retired,
    };
    let connection = async move {
        if let Some(turn) = &turn {
            // The old node's connections answer what they hold first; a node that does not
            // answer is not waited for longer than its requests could be.
            let most = config.read_timeout + config.backoff_max;
            let _ = tokio::time::timeout(most, turn.after.cancelled()).await;
        }
        run(addr, open, config, queue, state, tel, kind).await;
        drop(turn);
    };
    on.spawn(connection.instrument(span));
    Link {
        tx,
        depth,
        state: link_state,
    }
}

/// What a connection's handshake sets up: its dialect, and `READONLY` (a cluster replica's
/// connections, so that it serves reads of its master's slots instead of redirecting them).
#[derive(Debug, Clone, Copy)]
pub(super) struct Open {
    dialect: Dialect,
    readonly: bool,
    /// Ask `CLIENT ID` (a private connection: CLIENT UNBLOCK names it by that id).
    client_id: bool,
}

impl Open {
    pub(super) fn plain(dialect: Dialect) -> Open {
        Open {
            dialect,
            readonly: false,
            client_id: false,
        }
    }
}

async fn run(
    addr: NodeAddr,
    open_as: Open,
    config: Arc<BackendConfig>,
    mut rx: Queue,
    state: Arc<AtomicU8>,
    tel: Telemetry,
    kind: Kind,
) {
    let mut backoff = config.backoff_min;
    let mut failures = 0u32;
    loop {
        match open(&addr, open_as, &config).await {
            Ok((stream, id)) => {
                if let (Some(id), Some(to)) = (id, &rx.backend_id) {
                    to.store(id, Ordering::Relaxed);
                }
                state.store(LinkState::Up as u8, Ordering::Relaxed);
                tel.stats.connects.fetch_add(1, Ordering::Relaxed);
                tel.node.connects.increment(1);
                tel.node.connected.increment(1.0);
                backoff = config.backoff_min;
                if failures > 0 {
                    info!(failures, "backend reachable again");
                }
                failures = 0;
                debug!("connected");
                let served = match (rx.retired.clone(), rx.backend_id.clone()) {
                    (Some(retired), id) => {
                        let serving = serve(stream, &mut rx, &addr, &config, &tel, kind);
                        tokio::pin!(serving);
                        tokio::select! {
                            served = &mut serving => served,
                            () = retired.cancelled() => match id {
                                None => Err(BackendError::Lost(addr.clone())),
                                Some(id) => {
                                    let id = id.load(Ordering::Relaxed);
                                    tokio::spawn(unblock(addr.clone(), id, config.clone()));
                                    serving.await
                                }
                            },
                        }
                    }
                    (None, _) => serve(stream, &mut rx, &addr, &config, &tel, kind).await,
                };
                match served {
                    Ok(()) => {
                        tel.node.connected.decrement(1.0);
                        return;
                    }
                    Err(e) if kind != Kind::Shared => {
                        debug!(error = %e, "private connection closed");
                        if let Some(to) = &rx.pushes {
                            // The subscriber's session learns that its subscriptions are gone.
                            to.clone().send(Err(e));
                        }
                    }
                    Err(e) => warn!(error = %e, "backend connection closed"),
                }
            }
            Err(e) if kind != Kind::Shared => {
                debug!(error = %e, "private connection failed");
                if let Some(to) = &rx.pushes {
                    to.clone().send(Err(e));
                }
            }
            // The first failure is worth a warning; the retries that follow are not.
            Err(e) if failures == 0 => {
                warn!(error = %e, "backend connect failed; retrying with backoff")
            }
            Err(e) => debug!(error = %e, failures, "backend still unreachable"),
        }
        if state.load(Ordering::Relaxed) == LinkState::Up as u8 {
            tel.node.connected.decrement(1.0);
        }
        state.store(LinkState::Down as u8, Ordering::Relaxed);
        failures = failures.saturating_add(1);
        if kind != Kind::Shared {
            // Never reconnect: fail whatever is queued and end; the session drops the link.
            for req in rx.rx.close() {
                req.reply_to.send(Err(BackendError::Lost(addr.clone())));
            }
            return;
        }
        let deadline = Instant::now() + backoff;
        loop {
            tokio::select! {
                req = rx.rx.recv() => match req {
                    Some(req) => {
                        tel.node.error(ErrorKind::Down, 1);
                        req.reply_to.send(Err(BackendError::Down(addr.clone())));
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Unblocks the private connection the node knows as `id` (a command blocked there: its node
/// left the topology, and pushes go elsewhere now), from a connection of its own: the blocked
/// command answers `-UNBLOCKED`, and did not run. Harmless on a connection that is not blocked
/// (the node answers 0).
async fn unblock(addr: NodeAddr, id: u64, config: Arc<BackendConfig>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if id == 0 {
        return;
    }
    let Ok((mut s, _)) = open(&addr, Open::plain(Dialect::DEFAULT), &config).await else {
        debug!("could not unblock a private connection of a retired node");
        return;
    };
    let id = id.to_string();
    let cmd = format!(
        "*4\r\n$6\r\nCLIENT\r\n$7\r\nUNBLOCK\r\n${}\r\n{id}\r\n$5\r\nERROR\r\n",
        id.len()
    );
    let mut reply = [0u8; 64];
    let asked = async {
        s.write_all(cmd.as_bytes()).await?;
        s.read(&mut reply).await
    };
    if let Err(e) = tokio::time::timeout(config.read_timeout, asked)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        debug!(error = %e, "could not unblock a private connection of a retired node");
    }
}

/// Connects and runs the handshake: `AUTH` when credentials are set, then what the dialect
/// needs: `HELLO 3` for RESP3 (its reply must be a map), `SELECT db` for a database other than
/// 0, then `READONLY` for a cluster replica's, then `CLIENT ID` for a private connection.
/// Every command's reply must be the one expected (`+OK`, a map, an integer); all are written
/// at once and their replies read in order. A refused handshake is logged with the server's
/// reply, which never holds the password. Returns the stream and the node's id for it when
/// asked.
pub(super) async fn open(
    addr: &NodeAddr,
    open_as: Open,
    config: &BackendConfig,
) -> Result<(BackendStream, Option<u64>), BackendError> {
    let dialect = open_as.dialect;
    let mut s = config
        .connector
        .connect(addr)
        .await
        .map_err(|_| BackendError::Down(addr.clone()))?;
    let mut setup = BytesMut::new();
    let mut expect: Vec<Expect> = Vec::with_capacity(3);
    if let Some(auth) = config.connector.auth_frame() {
        setup.extend_from_slice(&auth);
        expect.push(Expect::Ok("AUTH"));
    }
    if dialect.proto == Proto::Resp3 {
        setup.extend_from_slice(HELLO3);
        expect.push(Expect::Map("HELLO 3"));
    }
    if dialect.db != 0 {
        let db = dialect.db.to_string();
        encode::array_header(&mut setup, 2);
        encode::bulk(&mut setup, b"SELECT");
        encode::bulk(&mut setup, db.as_bytes());
        expect.push(Expect::Ok("SELECT"));
    }
    if open_as.readonly {
        setup.extend_from_slice(READONLY);
        expect.push(Expect::Ok("READONLY"));
    }
    if open_as.client_id {
        setup.extend_from_slice(b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n");
        expect.push(Expect::Integer("CLIENT ID"));
    }
    if expect.is_empty() {
        return Ok((s, None));
    }
    let mut id = None;
    let handshake = async {
        s.write_all(&setup).await?;
        s.flush().await?;
        let mut buf = BytesMut::with_capacity(1024);
        let mut scanner = ReplyScanner::new(config.limits);
        for want in &expect {
            let n = loop {
                if let Some(n) = scanner.scan(&buf).map_err(std::io::Error::other)? {
                    break n;
                }
                if s.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed",
                    ));
                }
            };
            let reply = buf.split_to(n);
            scanner = ReplyScanner::new(config.limits);
            if let Expect::Integer(_) = want {
                id = reply
                    .strip_prefix(b":")
                    .and_then(|r| std::str::from_utf8(r).ok())
                    .and_then(|r| r.trim_end().parse::<u64>().ok());
            }
            if !want.accepts(&reply) {
                return Err(std::io::Error::other(format!(
                    "{} answered {}",
                    want.command(),
                    String::from_utf8_lossy(reply.get(..reply.len().min(200)).unwrap_or(&[]))
                        .trim_end()
                )));
            }
        }
        Ok(())
    };
    match tokio::time::timeout(config.read_timeout, handshake).await {
        Ok(Ok(())) => Ok((s, id)),
        Ok(Err(e)) => {
            warn!(error = %e, "backend refused the connection handshake");
            Err(BackendError::Down(addr.clone()))
        }
        Err(_) => Err(BackendError::Timeout(addr.clone(), config.read_timeout)),
    }
}

/// The reply a handshake command must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A RESP3 map (`HELLO`).
    Map(&'static str),
    /// `+OK`.
    Ok(&'static str),
    /// An integer (`CLIENT ID`), or any error: a node running a long script answers `-BUSY`
    /// to it, and the connection must open even so (it may carry the SCRIPT KILL); it then
    /// has no id, and CLIENT UNBLOCK cannot name it.
    Integer(&'static str),
}

impl Expect {
    fn accepts(self, reply: &[u8]) -> bool {
        match self {
            Expect::Map(_) => reply.first() == Some(&b'%'),
            Expect::Ok(_) => reply == b"+OK\r\n",
            Expect::Integer(_) => matches!(reply.first(), Some(b':' | b'-')),
        }
    }

    fn command(self) -> &'static str {
        match self {
            Expect::Map(c) | Expect::Ok(c) | Expect::Integer(c) => c,
        }
    }
}

/// The replies of one read (`chunk`, each ending at its offset in `ends`) with each reply nested
/// beyond the limit replaced by an error for its request alone; `ends` is updated to match.
#[cold]
fn replace_too_deep(chunk: &Bytes, ends: &mut [usize], limits: Limits) -> Bytes {
    let error = format!(
        "-ERR slotgate: the reply was nested deeper than {} levels (limits.max_reply_depth) and was dropped\r\n",
        limits.max_reply_depth
    );
    let mut out = BytesMut::with_capacity(chunk.len());
    let mut start = 0;
    for end in ends.iter_mut() {
        let reply = chunk.get(start..*end).unwrap_or_default();
        start = *end;
        // Each slice is one complete reply the connection's scanner accepted.
        let mut scanner = ReplyScanner::relaying(limits);
        if let Ok(Some(_)) = scanner.scan(reply)
            && scanner.take_too_deep()
        {
            warn!(
                bytes = reply.len(),
                limit = limits.max_reply_depth,
                "dropped a reply nested deeper than limits.max_reply_depth"
            );
            out.extend_from_slice(error.as_bytes());
        } else {
            out.extend_from_slice(reply);
        }
        *end = out.len();
    }
    out.freeze()
}

/// Runs one established connection until it breaks (`Err`) or every sender is gone (`Ok`).
async fn serve(
    mut stream: BackendStream,
    rx: &mut Queue,
    addr: &NodeAddr,
    config: &Arc<BackendConfig>,
    tel: &Telemetry,
    kind: Kind,
) -> Result<(), BackendError> {
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut inflight: VecDeque<Pending> = VecDeque::with_capacity(256);
    // A reply nested beyond the limit is read to its end and replaced by an error for its one
    // request; the connection and the other requests on it go on.
    let mut scanner = ReplyScanner::relaying(config.limits);
    let mut batch: Vec<BackendRequest> = Vec::with_capacity(64);
    let mut deliveries = Deliveries {
        to: None,
        items: Vec::with_capacity(64),
    };
    // End offsets of the complete replies found in one read.
    let mut ends: Vec<usize> = Vec::with_capacity(64);
    let mut rx_closed = false;
    let mut need_flush = false;
    // How many times this task yielded in a row to gather more requests before writing.
    let mut deferred = 0u8;
    // The read timeout runs from the last reply (or from the first request after an idle spell).
    // The timer is re-armed lazily, when it fires early, instead of on every read: resetting a
    // tokio timer costs more than the reply it would follow.
    let mut last_progress = Instant::now();
    // Request times are kept as nanoseconds since this instant: one clock conversion per batch,
    // and a subtraction per reply.
    let epoch = last_progress;
    let ticks = |t: Instant| t.saturating_duration_since(epoch).as_nanos() as u64;
    let timer = tokio::time::sleep(config.read_timeout);
    tokio::pin!(timer);
    // A reply found late: the probe asking the node whether it is busy, and when it was sent.
    let mut probe: Option<(tokio::sync::oneshot::Receiver<Probe>, Instant)> = None;
    // A read policy chooses nodes by their load: only then is it measured.
    let track_load = config.replica_links != super::ReplicaLinks::Off;

    let result = poll_fn(|cx| {
        // Sources that said Pending this round have our waker; skip them until the next wake.
        let mut rx_idle = false;
        let mut read_idle = false;
        for _ in 0..POLL_BUDGET {
            let mut progress = false;

            if !rx_idle
                && !rx_closed
                && inflight.len() < config.max_in_flight
                && wbuf.len() < WRITE_HIGH_WATER
            {
                let room = (config.max_in_flight - inflight.len()).min(256);
                match rx.rx.poll_recv_many(cx, &mut batch, room) {
                    Poll::Ready(0) => rx_closed = true,
                    Poll::Ready(n) => {
                        tel.stats.requests.fetch_add(n as u64, Ordering::Relaxed);
                        tel.node.requests.increment(n as u64);
                        tel.node
                            .requests_seen
                            .fetch_add(n as u64, Ordering::Relaxed);
                        let now = Instant::now();
                        if inflight.is_empty() {
                            last_progress = now;
                        }
                        let sent = ticks(now);
                        for req in batch.drain(..) {
                            if req.asking {
                                wbuf.put_slice(ASKING);
                                inflight.push_back(Pending::Skip);
                            }
                            for _ in 0..req.skip {
                                inflight.push_back(Pending::Skip);
                            }
                            wbuf.put_slice(&req.frame);
                            if rx.pushes.is_none() {
                                inflight.push_back(Pending::Reply(req.reply_to, sent));
                            }
                        }
                        if track_load && rx.pushes.is_none() {
                            tel.node.awaiting.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        progress = true;
                        if deferred < MAX_DEFERS && wbuf.len() < COALESCE_LIMIT {
                            // Let the other sessions woken by the same readiness event run first,
                            // so their requests leave in this same write: a self-wake puts this
                            // task at the back of the run queue.
                            deferred += 1;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    }
                    Poll::Pending => rx_idle = true,
                }
            }

            if !wbuf.is_empty() {
                deferred = 0;
                match Pin::new(&mut stream).poll_write(cx, &wbuf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(BackendError::Lost(addr.clone())));
                    }
                    Poll::Ready(Ok(n)) => {
                        tel.stats.writes.fetch_add(1, Ordering::Relaxed);
                        wbuf.advance(n);
                        need_flush = true;
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if need_flush && wbuf.is_empty() {
                match Pin::new(&mut stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => need_flush = false,
                    Poll::Ready(Err(_)) => {
                        return Poll::Ready(Err(BackendError::Lost(addr.clone())));
                    }
                    Poll::Pending => {}
                }
            }

            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(READ_CHUNK);
            }
            let read = if read_idle {
                Poll::Pending
            } else {
                tokio_util::io::poll_read_buf(Pin::new(&mut stream), cx, &mut rbuf)
            };
            match read {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                    return Poll::Ready(Err(BackendError::Lost(addr.clone())));
                }
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    // Find every complete reply first, then split them off the buffer at once:
                    // one split and cheap slices instead of a split per reply.
                    ends.clear();
                    let mut scanned = 0usize;
                    let failure = loop {
                        match scanner.scan(rbuf.get(scanned..).unwrap_or_default()) {
                            Ok(Some(n)) => {
                                scanned += n;
                                ends.push(scanned);
                            }
                            Ok(None) => break None,
                            Err(e) => break Some(e),
                        }
                    };
                    let mut chunk = rbuf.split_to(scanned).freeze();
                    // Asked once per read, not per reply; only then is the read rewritten.
                    if scanner.take_too_deep() {
                        chunk = replace_too_deep(&chunk, &mut ends, config.limits);
                    }
                    let now = Instant::now();
                    let now_ticks = ticks(now);
                    let mut start = 0;
                    let mut answered = 0u64;
                    for &end in &ends {
                        let reply = chunk.slice(start..end);
                        start = end;
                        if let Some(to) = &rx.pushes {
                            to.clone().send(Ok(reply));
                            continue;
                        }
                        match inflight.pop_front() {
                            Some(Pending::Reply(to, sent)) => {
                                answered += 1;
                                let took = now_ticks.saturating_sub(sent);
                                tel.node.observe_nanos(took);
                                if track_load {
                                    tel.node.observe_load(took);
                                }
                                deliveries.push(to, Ok(reply));
                            }
                            Some(Pending::Skip) => {}
                            None if reply.first() == Some(&b'>') => {
                                debug!("ignoring a push message on a shared connection");
                            }
                            None => {
                                deliveries.flush();
                                warn!("reply with no request outstanding");
                                return Poll::Ready(Err(BackendError::Lost(addr.clone())));
                            }
                        }
                    }
                    deliveries.flush();
                    if track_load && answered > 0 {
                        tel.node.awaiting.fetch_sub(answered, Ordering::Relaxed);
                    }
                    if let Some(e) = failure {
                        return Poll::Ready(Err(BackendError::Protocol(addr.clone(), e)));
                    }
                    tel.stats
                        .replies
                        .fetch_add(ends.len() as u64, Ordering::Relaxed);
                    last_progress = now;
                }
                Poll::Pending => read_idle = true,
            }

            if rx_closed && inflight.is_empty() && wbuf.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if rx_closed && kind != Kind::Shared {
                // The session is gone: closing the socket is what unblocks the node's side
                // (a BLPOP 0 would otherwise hold it for ever).
                return Poll::Ready(Ok(()));
            }
            if !progress {
                if kind == Kind::Shared && !inflight.is_empty() {
                    // The timer is never armed later than `deadline` (progress only moves it
                    // on), so it fires on time or early; early means re-arm and wait.
                    if let Some((answer, late_since)) = &mut probe {
                        let Poll::Ready(answer) = Pin::new(answer).poll(cx) else {
                            return Poll::Pending;
                        };
                        let answer = answer.unwrap_or(Probe::Silent);
                        let progressed = last_progress > *late_since;
                        probe = None;
                        match liveness::verdict(answer, progressed) {
                            Verdict::Wait => {
                                if answer == Probe::Busy {
                                    debug!("the node runs a script: waiting on");
                                    last_progress = Instant::now();
                                }
                                timer.as_mut().reset(last_progress + config.read_timeout);
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                            Verdict::GiveUp => {
                                return Poll::Ready(Err(BackendError::Timeout(
                                    addr.clone(),
                                    config.read_timeout,
                                )));
                            }
                        }
                    }
                    let deadline = last_progress + config.read_timeout;
                    if timer.as_mut().poll(cx).is_ready() {
                        let now = Instant::now();
                        if now < deadline {
                            timer.as_mut().reset(deadline);
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        // Late: ask the node on a connection of its own before giving up.
                        let (tell, answer) = tokio::sync::oneshot::channel();
                        let (to, with) = (addr.clone(), config.clone());
                        tokio::spawn(async move {
                            let _ = tell.send(liveness::probe(to, with).await);
                        });
                        probe = Some((answer, now));
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;

    if let Err(e) = &result {
        let kind = match e {
            BackendError::Timeout(..) => ErrorKind::Timeout,
            BackendError::Protocol(..) => ErrorKind::Protocol,
            _ => ErrorKind::Connection,
        };
        let mut failed = 0;
        for p in inflight.drain(..) {
            if let Pending::Reply(to, _) = p {
                failed += 1;
                to.send(Err(e.clone()));
            }
        }
        if track_load {
            tel.node.awaiting.fetch_sub(failed, Ordering::Relaxed);
        }
        tel.node.error(kind, failed.max(1));
        let _ = stream.shutdown().await;
    }
    result
}
