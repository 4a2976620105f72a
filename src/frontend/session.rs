//! One client connection: parse every buffered request, dispatch each to its node(s) at once,
//! and write replies strictly in request order, many per write.
//!
//! Each request takes a place in an ordered queue (bounded by `max_pipeline`; the session stops
//! reading from the client while it is full; `place`). Backend replies come back tagged with
//! their place on one channel; MOVED, ASK and TRYAGAIN are followed invisibly to the client
//! (`redirects`). Transactions (`multi_exec`) and pub/sub (`pubsub`) are the session's too. A
//! session must never answer out of order, drop or duplicate a request, or follow more
//! redirects than its budget.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Buf;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::buffers::{self, Spare};
use super::client_reply::ClientReply;
use super::client_stream::ClientStream;
use super::io_signal::IoSignal;
use super::keyspace_events::KeyspaceEvents;
use super::local::{self, ClientState};
use super::shard_channels::ShardChannels;
use super::subscriptions::Subscriptions;
use super::transaction::Transaction;
use super::{Context, MultiKeyPolicy};
use crate::backend::{BackendReply, BackendRequest, Dialect, Node, PrivateLink, ReplyTo};
use crate::command::{self, Entry, KeyPositions, Local, Merge, Rejection, Route, multi};
use crate::mailbox;
use crate::metrics::CommandMetrics;
use crate::protocol::encode;
use crate::protocol::{ReplyKind, Request, RequestParser};
use crate::topology::Topology;

mod colocate;
mod hold;
mod multi_exec;
mod place;
mod pubsub;
mod recent_writes;
mod redirects;
mod timeouts;

use crate::frontend::tag::{FORGET, PART_BITS, PART_MASK, Tagged, classify, is_part, part as tag};
use place::{Combine, Fanout, Gather, PartState, QueuePlace, Split, Via, merge_fanout};

type TopologyCache = arc_swap::Cache<Arc<arc_swap::ArcSwap<Topology>>, Arc<Topology>>;

/// How a split request is sent: how its replies merge, the key step, and whether its parts
/// are reads a read policy may place.
#[derive(Debug, Clone, Copy)]
struct SplitOf {
    merge: Merge,
    step: u8,
    read: bool,
}

struct Session {
    ctx: Arc<Context>,
    /// The read policy sends reads to replicas (held here: read on every keyed request).
    replica_reads: bool,
    /// With `read_your_writes_ms`: the slots this client wrote lately, whose reads go to the
    /// master.
    /// Boxed: most sessions have none, and each idle client carries the place.
    recent_writes: Option<Box<recent_writes::RecentWrites>>,
    client: ClientState,
    parser: RequestParser,
    queue: VecDeque<QueuePlace>,
    /// Sequence number of `queue[0]`.
    base: u64,
    tx: mailbox::Sender<BackendReply>,
    topo: TopologyCache,
    out: BytesMut,
    /// Connections of this session's own (blocking commands, WATCH), a few at most.
    privates: Vec<PrivateLink>,
    /// The transaction being queued between MULTI and EXEC.
    txn: Option<Box<Transaction>>,
    /// Set by WATCH: the watched keys' slot (`None` when the backend has no slots). Commands for
    /// it go on the private connection holding the WATCH until EXEC, DISCARD or UNWATCH.
    watching: Option<Option<u16>>,
    /// The command being dispatched, for the queue place it takes.
    current: Option<(&'static CommandMetrics, Option<Instant>)>,
    /// The pub/sub connection while the client has subscriptions.
    subscriber: Option<PrivateLink>,
    /// What the client is subscribed to, to subscribe again after a failover.
    /// Boxed, and `None` until the first subscription frame: an idle client's memory.
    subs: Option<Box<Subscriptions>>,
    /// Shared-connection requests of this round, per node and protocol; sent at its end.
    outbox: Vec<(Arc<Node>, Dialect, Vec<BackendRequest>)>,
    outbox_dirty: bool,
    last_lookup: command::LastLookup,
    /// Shard channels (SSUBSCRIBE): a subscriber connection per master that owns some.
    shards: ShardChannels,
    /// Keyspace notifications: a connection to every other master while the client subscribes
    /// to them (`keyspace_events`).
    keyspace: KeyspaceEvents,
    /// Re-subscription attempts since the subscriber connection was lost.
    resub_attempts: u32,
    /// Close at once, without waiting for unread replies (a subscriber that stopped reading).
    abort: bool,
    /// The first sequence number of each batch of requests parsed together (one client write,
    /// as a rule) whose first reply is not yet in `out`.
    burst_starts: VecDeque<u64>,
    /// `out` holds replies of more than one such batch: write it now.
    out_mixed: bool,
    /// Bytes of finished replies waiting in `queue` behind one still unanswered.
    ready_bytes: usize,
    /// What CLIENT LIST shows of this session that changes per request.
    live: Arc<super::clients::Live>,
    /// CLIENT REPLY OFF/SKIP: which queue places get no reply; boxed, and `None` while there
    /// are none (an idle client's memory, and the one test each reply costs).
    client_reply: Option<Box<ClientReply>>,
    /// Parts waiting for a master (the failover hold), while any are.
    hold: Option<Arc<hold::Hold>>,
    /// Bytes of its own buffers this session last charged to the memory budget.
    charged: usize,
    /// Signals the poll loop acts on when it would sleep ([`Signals`]): one test there for
    /// all of them.
    signals: Signals,
}

/// Signals a session acts on in its poll loop rather than where their tag arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signals(u8);

impl Signals {
    /// slotgate is draining: read no more, answer what is owed, close.
    const DRAIN: u8 = 1;
    /// A reload gave the session a new configuration: the loop takes its limits again.
    const RECONFIGURED: u8 = 2;
    /// The operator paused the clients: take no more requests, and answer the pause once
    /// nothing but blocking commands is outstanding on a private connection.
    const PAUSE: u8 = 4;
    /// The pause is answered and in force: no request is taken.
    const PAUSED: u8 = 8;
    /// The pause ended.
    const RESUME: u8 = 16;

    #[inline(always)]
    fn any(self) -> bool {
        self.0 != 0
    }

    fn set(&mut self, which: u8) {
        self.0 |= which;
    }

    fn has(self, which: u8) -> bool {
        self.0 & which != 0
    }

    /// Whether `which` was set; it is not any more.
    fn take(&mut self, which: u8) -> bool {
        let had = self.has(which);
        self.0 &= !which;
        had
    }
}

/// Most private connections one session keeps.
const MAX_PRIVATE_PER_SESSION: usize = 4;

/// Rounds of the session's poll loop before it yields to other tasks.
const POLL_BUDGET: usize = 32;
/// Stop reading requests while this many reply bytes wait for a slow client.
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Size of a read buffer a session allocates itself (when the worker has no spare to lend).
const READ_START: usize = 16 * 1024;
/// Ready replies are held for the rest of their batch only while fewer bytes than this wait.
const HOLD_BYTES: usize = 64 * 1024;

/// The proxy user a client's TLS certificate logged it in as, with the configuration that
/// user's number is in (boxed where it is passed: every session's future holds the place).
pub struct CertificateUser {
    pub user: u16,
    pub config: Arc<super::SessionConfig>,
}

/// Runs a session until the client leaves, sends QUIT, breaks the protocol, or shutdown.
///
/// One task, one hand-written poll loop: read and dispatch every buffered request, take every
/// reply that has arrived, write the finished front of the queue, and sleep only when none of
/// these can make progress.
pub async fn run(
    mut stream: ClientStream,
    ctx: Arc<Context>,
    id: u64,
    at: super::clients::Endpoint,
    certificate_user: Option<Box<CertificateUser>>,
) {
    let (tx, mut rx) = mailbox::channel();
    let live = ctx.clients.register(id, at, tx.clone());
    // After registering: from here on a drain reaches the session as a signal (`Drain`), and
    // so does a reload (`Reconfigure`); one that came before is caught up with below.
    let drained = ctx.draining.load(Ordering::SeqCst);
    let config = match &certificate_user {
        Some(c) => c.config.clone(),
        None => ctx.config.load_full(),
    };
    let mut client = ClientState::new(id, config);
    client.peer = Some(at.peer.ip());
    if let Some(user) = certificate_user.map(|c| c.user) {
        client.certificate_user = Some(user);
        client.log_in(user, &ctx);
    }
    let config = &client.config;
    let replica_reads = config.read_from.uses_replicas();
    let recent_writes = config
        .read_your_writes
        .filter(|_| replica_reads)
        .map(|w| Box::new(recent_writes::RecentWrites::new(w)));
    let parser = RequestParser::new(config.limits);
    let mut s = Session {
        replica_reads,
        recent_writes,
        client,
        parser,
        // One place is all a client that waits for each reply needs; pipelines grow it.
        queue: VecDeque::with_capacity(1),
        base: 0,
        tx,
        topo: ctx.topology.cache(),
        out: BytesMut::new(),
        privates: Vec::new(),
        txn: None,
        watching: None,
        current: None,
        subscriber: None,
        subs: None,
        resub_attempts: 0,
        shards: ShardChannels::default(),
        keyspace: KeyspaceEvents::default(),
        outbox: Vec::new(),
        outbox_dirty: false,
        last_lookup: command::LastLookup::default(),
        abort: false,
        burst_starts: VecDeque::new(),
        out_mixed: false,
        ready_bytes: 0,
        live,
        client_reply: None,
        hold: None,
        charged: 0,
        signals: Signals(if drained { Signals::DRAIN } else { 0 }),
        ctx,
    };
    if !Arc::ptr_eq(&s.client.config, &s.ctx.config.load()) {
        // A reload came between the configuration's load and the registration.
        s.reconfigure();
    }
    // No buffer of the session's own until it holds a partial request or unread replies: the
    // worker lends one for each poll (`buffers`).
    let mut rbuf = BytesMut::new();
    let mut replies: Vec<BackendReply> = Vec::new();
    let mut eof = false;
    // Byte counts are added to the shared counters in chunks and when the session goes idle,
    // not per read.
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let mut max_pipeline = s.client.config.max_pipeline.max(1);
    if s.ctx.client_pause.is_paused() {
        // Registered during a pause: not counted in it, so nothing to answer.
        s.signals.set(Signals::PAUSED);
        max_pipeline = 0;
    }
    // Whether `rbuf` may hold a complete request not yet parsed: parsing again without new
    // bytes would only find the same partial request.
    let mut unparsed = false;
    // The client socket is polled with `io_waker`, so a wake by a backend reply does not make
    // the session poll a socket that already said Pending (see `io_signal`).
    let (io, io_waker) = IoSignal::new();
    // The socket's last read said Pending and its readiness has not fired since.
    let mut read_waiting = false;
    // The task waker `io` holds, to skip re-arming it on every poll.
    let mut armed: Option<std::task::Waker> = None;
    // Bytes already added to the shared counters (with `bytes_in + bytes_out`, every byte the
    // socket moved: what the idle-timeout watch, when one is set, looks at).
    let mut bytes_flushed: u64 = 0;
    let mut idle = s.client.config.idle_timeout.map(timeouts::IdleWatch::new);
    let mut request_watch = s
        .client
        .config
        .request_timeout
        .map(timeouts::RequestWatch::new);
    // Bytes were written to a TLS stream and not yet flushed (see the write below); a TCP
    // stream's flush does nothing, so it is never called.
    let tls = stream.is_tls();
    let mut unflushed = false;

    let clean = poll_fn(|cx| {
        // The reply queue was drained with the task registered: only a send can fill it.
        let mut rx_parked = rx.is_parked();
        if !armed.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            io.arm(cx.waker());
            armed = Some(cx.waker().clone());
        }
        for _ in 0..POLL_BUDGET {
            if io.take_fired() {
                read_waiting = false;
            }
            let mut io_cx = TaskContext::from_waker(&io_waker);
            // Whether the socket may hold more than this round read.
            let mut read_more = false;
            if !read_waiting && s.may_read(eof, max_pipeline) {
                // A read that empties the socket is followed by one that says Pending (and
                // registers the signal); with tokio's sockets that second one costs no syscall.
                for _ in 0..2 {
                    if rbuf.capacity() == 0 {
                        // Borrowed only to read: a wake by a backend reply needs no read buffer.
                        buffers::borrow(Spare::Read, &mut rbuf);
                        if rbuf.capacity() == 0 {
                            rbuf = BytesMut::with_capacity(READ_START);
                        }
                    }
                    let want = s.parser.want().saturating_sub(rbuf.len()).max(4096);
                    rbuf.reserve(want);
                    match tokio_util::io::poll_read_buf(
                        Pin::new(&mut stream),
                        &mut io_cx,
                        &mut rbuf,
                    ) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            eof = true;
                            break;
                        }
                        Poll::Ready(Ok(n)) => {
                            bytes_in += n as u64;
                            unparsed = true;
                            read_more = true;
                        }
                        Poll::Pending => {
                            read_waiting = true;
                            read_more = false;
                            break;
                        }
                    }
                }
            }
            // Requests already read wait while the client leaves its replies unread.
            if unparsed && s.out.len() < OUT_HIGH_WATER {
                let before = s.next_seq();
                unparsed = s.dispatch_buffered(&mut rbuf, max_pipeline);
                let parsed = s.next_seq() - before;
                if parsed > 0 {
                    s.burst_starts.push_back(before);
                    if crate::metrics::enabled() {
                        s.ctx.pipeline_depth.record(parsed as f64);
                    }
                }
            }
            if !rx_parked {
                match rx.poll_drain(cx, &mut replies, 256) {
                    Poll::Ready((n, parked)) => {
                        for r in replies.drain(..) {
                            s.on_reply(r);
                        }
                        rx_parked = parked || n == 0;
                    }
                    Poll::Pending => rx_parked = true,
                }
            }
            s.flush_outbox();
            s.collect_ready();
            while !s.out.is_empty() && !s.hold_output() {
                match Pin::new(&mut stream).poll_write(&mut io_cx, &s.out) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(n)) => {
                        s.out.advance(n);
                        bytes_out += n as u64;
                        unflushed = tls;
                    }
                    Poll::Pending => break,
                }
            }
            // A TLS stream may keep the last records of a write until flushed; a Pending flush
            // is retried when the socket is writable.
            if unflushed && s.out.is_empty() {
                match Pin::new(&mut stream).poll_flush(&mut io_cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Pending => {}
                }
            }
            if s.out.is_empty() {
                s.out_mixed = false;
            }
            if s.queue.is_empty() && s.out.is_empty() && (s.client.closing || eof) {
                return Poll::Ready(true);
            }
            if s.abort {
                return Poll::Ready(false);
            }
            // A client that left while blocked (BLPOP 0) would keep its connection blocked for
            // ever; Redis frees such a client at once, and so does slotgate.
            if eof && s.waits_on_private() {
                return Poll::Ready(false);
            }
            if bytes_in + bytes_out >= BYTES_FLUSH {
                bytes_flushed += bytes_in + bytes_out;
                s.flush_bytes(&mut bytes_in, &mut bytes_out);
            }
            // Another round only when a source can have more without waking the task: every
            // source that said Pending (or drained with the task registered) will wake it.
            let progress = read_more
                || !rx_parked
                || (unparsed && s.queue.len() < max_pipeline && s.out.len() < OUT_HIGH_WATER)
                || (!read_waiting && s.may_read(eof, max_pipeline));
            if !progress {
                // A drain and a reload come as signals: nothing to poll on every wake.
                if s.signals.any() {
                    if s.signals.take(Signals::RECONFIGURED) {
                        let c = &s.client.config;
                        max_pipeline = if s.signals.has(Signals::PAUSE | Signals::PAUSED) {
                            0
                        } else {
                            c.max_pipeline.max(1)
                        };
                        idle = c.idle_timeout.map(timeouts::IdleWatch::new);
                        request_watch = c.request_timeout.map(timeouts::RequestWatch::new);
                        continue;
                    }
                    if s.signals.has(Signals::DRAIN) && !eof {
                        eof = true;
                        continue;
                    }
                    if s.signals.take(Signals::RESUME) {
                        s.signals.take(Signals::PAUSE | Signals::PAUSED);
                        max_pipeline = s.client.config.max_pipeline.max(1);
                        continue;
                    }
                    if s.signals.has(Signals::PAUSE) {
                        // Nothing more is taken from the client from now on.
                        if max_pipeline != 0 {
                            max_pipeline = 0;
                            continue;
                        }
                        // What it sent is on its way (the outbox is flushed): answered once
                        // a write on its own connection (an EXEC under WATCH) came back too.
                        if !s.writes_on_private() {
                            s.signals.take(Signals::PAUSE);
                            s.signals.set(Signals::PAUSED);
                            s.ctx.client_pause.answered(s.client.id);
                        }
                    }
                }
                if let Some(w) = &mut idle {
                    // Replies the client does not read are no reason to keep it: Redis closes
                    // such a client too. Replies still to come from a node are.
                    let waiting = !s.queue.is_empty() || s.subscribed();
                    if w.expired(cx, bytes_flushed + bytes_in + bytes_out, waiting) {
                        debug!(client = s.client.id, "closing idle client");
                        return Poll::Ready(false);
                    }
                }
                // Going idle: what it moved shows in INFO now, not only after 64 KB.
                if s.queue.is_empty() && bytes_in + bytes_out > 0 {
                    bytes_flushed += bytes_in + bytes_out;
                    s.flush_bytes(&mut bytes_in, &mut bytes_out);
                }
                s.give_back_buffers(&mut rbuf);
                // What the session keeps of its own while it sleeps: at pipeline 1 nothing,
                // and no partial request, so neither the budget nor the clock is looked at.
                let own = s.own_bytes(&rbuf);
                if (own | s.charged) != 0 || request_watch.as_ref().is_some_and(|w| w.running()) {
                    s.recharge(own);
                    if let Some(w) = &mut request_watch {
                        // Bytes the parser has seen and could not make a request of yet.
                        let partial = !unparsed && !rbuf.is_empty();
                        if w.expired(cx, partial, s.next_seq()) {
                            s.close_for_request_timeout(rbuf.len());
                            return Poll::Ready(false);
                        }
                    }
                }
                return Poll::Pending;
            }
        }
        s.give_back_buffers(&mut rbuf);
        let own = s.own_bytes(&rbuf);
        s.recharge(own);
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    s.ctx.clients.unregister(id);
    // Gone: it sends nothing more, as a paused session.
    s.ctx.client_pause.answered(id);
    s.flush_bytes(&mut bytes_in, &mut bytes_out);
    if clean {
        let _ = stream.shutdown().await;
    }
}

/// Session byte counts go to the shared counters once this many have accumulated.
const BYTES_FLUSH: u64 = 64 * 1024;

impl Session {
    /// Whether the session takes more requests from the client now: not after end of input or
    /// QUIT, and not while its queue or unwritten replies are at their bounds.
    fn may_read(&self, eof: bool, max_pipeline: usize) -> bool {
        !eof && !self.client.closing
            && self.queue.len() < max_pipeline
            && self.out.len() < OUT_HIGH_WATER
    }

    /// Empty buffers go back to the worker at the end of every poll.
    #[inline]
    fn give_back_buffers(&mut self, rbuf: &mut BytesMut) {
        buffers::give_back(Spare::Read, rbuf);
        buffers::give_back(Spare::Write, &mut self.out);
    }

    /// Bytes the session holds of its own once its buffers are given back: a partial request,
    /// replies the client has not read.
    #[inline]
    fn own_bytes(&self, rbuf: &BytesMut) -> usize {
        rbuf.capacity() + self.out.capacity() + self.ready_bytes
    }

    /// Charges what the session holds of its own to the memory budget, when it changed.
    #[inline]
    fn recharge(&mut self, own: usize) {
        if own != self.charged {
            self.ctx.clients.charge(&self.live, self.charged, own);
            self.charged = own;
        }
    }

    /// A request stopped short for longer than `clients.request_timeout_ms`: the client is
    /// closed (a slowloris), with a log line.
    #[cold]
    fn close_for_request_timeout(&mut self, held: usize) {
        warn!(
            client = self.client.id,
            held,
            "closing client: its partial request waited past the request timeout (clients.request_timeout_ms)"
        );
        self.ctx
            .stats
            .request_timeouts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A reload: the session takes the configuration now in force. The limits the poll loop
    /// keeps are taken when it next would sleep ([`Signals::RECONFIGURED`]); a client whose
    /// user is gone is closed, with a log line.
    #[cold]
    fn reconfigure(&mut self) {
        let config = self.ctx.config.load_full();
        if Arc::ptr_eq(&config, &self.client.config) {
            return;
        }
        let gone = self.client.reconfigure(config.clone()) == super::local::Reconfigured::UserGone;
        // As Redis 7.2 does: a subscriber whose user may no longer use one of its channels or
        // patterns is closed too.
        let why = if gone {
            Some("the user it is logged in as was removed by a reload")
        } else if let (Some(rules), Some(subs)) = (&self.client.rules, &self.subs)
            && !rules.all_channels()
            && !rules.may_subscribe(subs.channels(), subs.patterns())
        {
            Some("a reload took away a channel it is subscribed to")
        } else {
            None
        };
        if let Some(why) = why {
            warn!(client = self.client.id, "closing client: {why}");
            self.close_now();
            return;
        }
        self.parser.set_limits(config.limits);
        self.replica_reads = config.read_from.uses_replicas();
        // Slots written lately stay pinned under a new window, and when nothing remembered
        // them (read your writes or replica reads just turned on) every slot is, for one
        // window: a read right after its write must not go to a replica because a reload came
        // between them.
        match (
            config.read_your_writes.filter(|_| self.replica_reads),
            &mut self.recent_writes,
        ) {
            (None, r) => *r = None,
            (Some(window), Some(r)) => r.set_window(window),
            (Some(window), r) => {
                *r = Some(Box::new(recent_writes::RecentWrites::pinning_all(
                    window,
                    Instant::now(),
                )))
            }
        }
        self.signals.set(Signals::RECONFIGURED);
    }

    /// Closes the client at once, its unwritten replies dropped.
    fn close_now(&mut self) {
        self.abort = true;
        self.client.closing = true;
    }

    fn flush_bytes(&self, bytes_in: &mut u64, bytes_out: &mut u64) {
        self.ctx.stats.bytes_in.add(std::mem::take(bytes_in));
        self.ctx.stats.bytes_out.add(std::mem::take(bytes_out));
    }

    /// Hands the requests gathered this round to their nodes, one queue operation per node.
    fn flush_outbox(&mut self) {
        if !std::mem::take(&mut self.outbox_dirty) {
            return;
        }
        for (node, dialect, reqs) in &mut self.outbox {
            if !reqs.is_empty() {
                node.send_batch(*dialect, self.client.id, reqs);
            }
        }
        if self.outbox.len() > 8 {
            // Forget nodes this session has stopped using (a topology change).
            self.outbox.clear();
        }
    }

    /// Whether some outstanding request is on a private connection (a blocking command).
    /// Whether a request other than a blocking command is outstanding on a private connection
    /// (an EXEC under WATCH, a WATCH): one a pause waits for.
    fn writes_on_private(&self) -> bool {
        let table = self.ctx.table;
        self.queue.iter().any(|slot| match slot {
            QueuePlace::Waiting { combine, parts, .. } => parts.iter().enumerate().any(|(i, p)| {
                p.private
                    && !combine.answered(i)
                    && !table
                        .spec_of(p.command)
                        .is_some_and(|s| s.has(command::flags::BLOCKING))
            }),
            QueuePlace::Ready(_) => false,
        })
    }

    fn waits_on_private(&self) -> bool {
        self.queue.iter().any(|slot| match slot {
            QueuePlace::Waiting { combine, parts, .. } => parts
                .iter()
                .enumerate()
                .any(|(i, p)| p.private && !combine.answered(i)),
            QueuePlace::Ready(_) => false,
        })
    }

    /// Parses and dispatches every complete request in `rbuf`, up to the pipeline bound. True
    /// when it stopped at the bound, with requests perhaps still buffered.
    fn dispatch_buffered(&mut self, rbuf: &mut BytesMut, max_pipeline: usize) -> bool {
        let mut batch = buffers::take_batch();
        let mut more = false;
        let mut commands = 0u64;
        while !self.client.closing {
            let room = max_pipeline.saturating_sub(self.queue.len());
            if room == 0 {
                more = true;
                break;
            }
            match self.parser.parse_many(rbuf, &mut batch, room) {
                Ok(()) if batch.is_empty() => break,
                Ok(()) => {
                    if batch.len() == 1 {
                        // One request per read (pipeline 1): taken without a drain.
                        if let Some(req) = batch.pop() {
                            commands += 1;
                            self.dispatch_request(req);
                        }
                    } else {
                        for req in batch.drain(..) {
                            // After QUIT (or a fatal error) nothing more runs, as in Redis.
                            if self.client.closing {
                                break;
                            }
                            commands += 1;
                            self.dispatch_request(req);
                        }
                    }
                    if rbuf.is_empty() {
                        break;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "protocol error from client");
                    self.push_error(&format!("ERR {e}"));
                    self.client.closing = true;
                }
            }
        }
        buffers::give_batch(batch);
        // One shared-counter update per read, not per command.
        self.ctx
            .stats
            .commands
            .fetch_add(commands, Ordering::Relaxed);
        more
    }

    fn push_ready(&mut self, bytes: Bytes) {
        if let Some((cmd, _)) = self.current.take()
            && ReplyKind::of(&bytes) == ReplyKind::Error
        {
            cmd.errors.increment(1);
        }
        self.queue_ready(bytes);
    }

    /// Appends a finished reply to the queue, counted among the bytes held for the client.
    fn queue_ready(&mut self, reply: Bytes) {
        self.ready_bytes += reply.len();
        self.queue.push_back(QueuePlace::Ready(reply));
    }

    /// Takes a queue place for a request that went to backends.
    fn push_waiting(&mut self, combine: Combine, parts: SmallVec<[PartState; 1]>) {
        let (cmd, started) = match self.current.take() {
            Some((c, t)) => (Some(c), t),
            None => (None, None),
        };
        self.queue.push_back(QueuePlace::Waiting {
            combine,
            parts,
            cmd,
            started,
        });
    }

    /// A command refused before it ran (not logged in, not permitted): EXEC's refusal also
    /// discards the transaction, and says so as Redis does.
    fn push_refusal(&mut self, entry: &Entry, msg: &str) {
        if entry.spec.name != "exec" {
            return self.push_error(msg);
        }
        self.txn = None;
        let reason = msg.strip_prefix("ERR ").unwrap_or(msg);
        self.push_error(&format!(
            "EXECABORT Transaction discarded because of: {reason}"
        ));
    }

    fn push_error(&mut self, msg: &str) {
        let mut b = BytesMut::new();
        encode::error(&mut b, msg);
        self.push_ready(b.freeze());
    }

    fn reject(&mut self, r: Rejection) {
        if matches!(r, Rejection::CrossSlot { .. }) {
            self.ctx
                .stats
                .crossslot_rejected
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut b = BytesMut::new();
        encode::error_bytes(&mut b, &r.wire());
        self.push_ready(b.freeze());
    }

    fn next_seq(&self) -> u64 {
        self.base + self.queue.len() as u64
    }

    /// Runs one request: under key families through the copy of [`Self::dispatch`] that
    /// renames their keys, else through the one that has no such step at all.
    #[inline(always)]
    fn dispatch_request(&mut self, req: Request) {
        if self.client.config.families.is_some() {
            self.dispatch::<true>(req)
        } else {
            self.dispatch::<false>(req)
        }
    }

    fn dispatch<const FAMILIES: bool>(&mut self, req: Request) {
        let table = self.ctx.table;
        let entry = match self.last_lookup.lookup(table, &req) {
            Ok(e) => {
                self.live.set_command(e.id);
                // Without a recorder every handle is a no-op: skip them and the clock.
                self.current = crate::metrics::enabled().then(|| {
                    let m = e.metrics();
                    m.calls.increment(1);
                    (m, Some(Instant::now()))
                });
                e
            }
            Err(r) => {
                if let Some(t) = &mut self.txn {
                    t.abort();
                }
                return self.reject(r);
            }
        };
        // After the unknown-command and arity checks, as in Redis.
        if !self.client.authenticated && !entry.spec.has(command::flags::NO_AUTH) {
            return self.push_refusal(entry, crate::access::NOAUTH);
        }
        // Commands one may send before logging in (AUTH, HELLO, QUIT, RESET) are never denied,
        // as in Redis.
        if !self.client.unrestricted
            && !entry.spec.has(command::flags::NO_AUTH)
            && let Err(denial) = self.permitted(entry, &req)
        {
            // As Redis: the transaction being queued fails at EXEC.
            if let Some(t) = &mut self.txn {
                t.abort();
            }
            let msg = match denial {
                crate::access::Denial::Command => format!(
                    "NOPERM this user has no permissions to run the '{}' command",
                    entry.spec.name
                ),
                crate::access::Denial::Keys => crate::access::NOPERM_KEYS.to_string(),
                crate::access::Denial::Channels => crate::access::NOPERM_CHANNELS.to_string(),
            };
            return self.push_refusal(entry, &msg);
        }
        if FAMILIES {
            // Checked for permission under the application's key names, stored under the
            // families' (`colocate`).
            return self.dispatch_in_families(entry, req);
        }
        self.route_request(entry, req);
    }

    /// A request under key families: its family keys renamed as stored, routed as any
    /// request; a command whose reply names keys has its reply's names restored.
    #[cold]
    #[inline(never)]
    fn dispatch_in_families(&mut self, entry: &'static command::Entry, req: Request) {
        let Some(families) = self.client.config.families.clone() else {
            return self.route_request(entry, req);
        };
        let req = colocate::rewrite(&families, entry, &req).unwrap_or(req);
        let direct = self.txn.is_none() && !self.subscribed();
        if direct && entry.spec.name == "keys" {
            // Under the pattern as sent (keys of no family) and under each family's tag.
            let Some(pattern) = req.arg(1) else {
                return self.route_request(entry, req);
            };
            let mut frames = vec![req.raw().clone()];
            for t in families.tags() {
                let tagged = [t, pattern].concat();
                frames.push(Request::from_args(&[&b"KEYS"[..], &tagged]).into_raw());
            }
            return self.keys_in_families(entry.id, frames);
        }
        // SCAN's MATCH is applied here, to the names as the application knows them.
        let (req, matching) = match colocate::without_match(entry.spec.name, &req) {
            Some((plain, pattern)) if direct => (plain, Some(pattern)),
            _ => (req, None),
        };
        let restore_at = crate::families::reply_names(entry.spec.name).map(|_| self.next_seq());
        self.route_request(entry, req);
        if let Some(seq) = restore_at {
            self.restore_names_of(seq, matching);
        }
    }

    /// KEYS under key families: each of `frames` (the pattern as sent, and under each
    /// family's tag) on every master, the names concatenated, restored and given once.
    #[cold]
    fn keys_in_families(&mut self, command: u16, frames: Vec<Bytes>) {
        let seq = self.next_seq();
        let masters: Vec<Arc<Node>> = self.topo.load().masters().to_vec();
        if masters.is_empty() {
            return self.push_error("CLUSTERDOWN The cluster is down");
        }
        let dialect = self.client.dialect();
        let parts: SmallVec<[PartState; 1]> = frames
            .iter()
            .flat_map(|f| masters.iter().map(move |m| (m, f)))
            .map(|(m, f)| PartState::new(f.clone(), command, None, Some(m.clone()), dialect))
            .collect();
        self.send_fanout(seq, Merge::Concat, parts);
    }

    /// The reply of the request at `seq`, if it is a single part still waiting, goes through
    /// [`Self::complete`], which restores the key names in it, instead of out as it stands.
    /// With `matching` (a SCAN sent without its MATCH), only the restored names that match.
    #[cold]
    #[inline(never)]
    fn restore_names_of(&mut self, seq: u64, matching: Option<Bytes>) {
        let Some(QueuePlace::Waiting { combine, .. }) =
            self.queue.get_mut(seq.wrapping_sub(self.base) as usize)
        else {
            return;
        };
        match (&*combine, matching) {
            (Combine::Single, matching) => *combine = Combine::Restore(matching.map(Box::new)),
            (&Combine::Scan { index, masters }, Some(p)) => {
                *combine = Combine::ScanMatch(Box::new((index, masters, p)));
            }
            _ => {}
        }
    }

    /// EXEC's reply at `seq`, if it is still waiting, has the key names of the elements
    /// `names` lists restored (`colocate::restore_exec`).
    #[cold]
    #[inline(never)]
    pub(super) fn restore_exec_names(
        &mut self,
        seq: u64,
        names: Vec<(u32, crate::families::ReplyNames)>,
    ) {
        if let Some(QueuePlace::Waiting { combine, .. }) =
            self.queue.get_mut(seq.wrapping_sub(self.base) as usize)
            && matches!(combine, Combine::Single)
        {
            *combine = Combine::RestoreExec(Box::new(place::ExecNames(names)));
        }
    }

    /// Runs a request that may run: by its route (locally, queued in a transaction, to its
    /// slot's master, split, to every master).
    #[inline(always)]
    fn route_request(&mut self, entry: &'static command::Entry, req: Request) {
        let resp2 = self.client.proto == crate::protocol::encode::Proto::Resp2;
        if resp2 && self.subscribed() {
            match entry.route {
                Route::PubSub | Route::Local(Local::Quit | Local::Reset) => {}
                // A subscribed RESP2 client gets PING's pub/sub-shaped reply from the node, in
                // order after the confirmations before it.
                Route::Local(Local::Ping) if self.subscriber.is_some() => {
                    return self.send_on_subscriber(&req);
                }
                Route::Local(Local::Ping) if self.shards.ping(&req, &self.tx) => {
                    self.current = None;
                    return;
                }
                Route::Local(Local::Ping) => {}
                _ => {
                    return self.push_error(&format!(
                        "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
                        entry.spec.name
                    ));
                }
            }
        }
        if self.txn.is_some()
            && !matches!(
                entry.route,
                Route::Transaction(_) | Route::Local(Local::Quit | Local::Reset)
            )
        {
            return self.queue_in_transaction(entry, &req);
        }
        match entry.route {
            Route::Local(l) => self.local(l, &req),
            Route::Transaction(t) => self.transaction(t, entry, &req),
            Route::Scan => self.scan(entry.id, &req),
            Route::PubSub => self.pubsub(entry, &req),
            Route::Blocking => match self.slot_for(entry, &req) {
                Ok(slot) => self.send_single_via(
                    entry.id,
                    req.raw().clone(),
                    slot,
                    Via::private(self.client.dialect()),
                ),
                Err(r) => self.reject(r),
            },
            Route::Refuse(reason) => self.reject(Rejection::Refused {
                name: command::display_name(entry.spec.name),
                reason,
            }),
            Route::AnyMaster => self.send_single(entry.id, req.into_raw(), None),
            Route::Publish => self.publish(entry.id, req.into_raw()),
            Route::AllMasters(merge) => self.send_all_masters(entry.id, req.into_raw(), merge),
            Route::Keyed | Route::Split { .. } => {
                if is_blocking_stream_read(entry.spec.name, &req) {
                    return match self.slot_for(entry, &req) {
                        Ok(slot) => self.send_single_via(
                            entry.id,
                            req.raw().clone(),
                            slot,
                            Via::private(self.client.dialect()),
                        ),
                        Err(r) => self.reject(r),
                    };
                }
                if let Some(watched) = self.watching {
                    // Commands for the watched slot stay on the connection holding the WATCH,
                    // in order with it.
                    if let Ok(slot) = self.slot_for(entry, &req)
                        && slot == watched
                    {
                        return self.send_single_via(
                            entry.id,
                            req.raw().clone(),
                            slot,
                            Via::private(self.client.dialect()),
                        );
                    }
                }
                // A read under a read policy may go to a replica.
                let read = self.replica_reads && entry.spec.has(command::flags::READONLY);
                if !self.topo.load().slotted {
                    // One master holds every key: no slots, no CROSSSLOT, nothing to split.
                    // An EVAL's body is remembered all the same: a new master after a
                    // failover lacks the scripts the old one cached.
                    if entry.caches_script {
                        return self.eval(entry, &req);
                    }
                    return self.send_keyed(entry.id, req.into_raw(), None, read);
                }
                if entry.route == Route::Keyed
                    && let Some(key) = entry.single_key.and_then(|i| req.arg(i))
                {
                    let slot = crate::router::key_slot(key);
                    return self.send_keyed(entry.id, req.into_raw(), Some(slot), read);
                }
                // Past the single-key path: a command with several keys, or numkeys (EVAL).
                if entry.caches_script {
                    return self.eval(entry, &req);
                }
                let mut keys = KeyPositions::new();
                command::key_positions(entry.spec, &req, &mut keys);
                let mut slots = command::KeySlots::new();
                match command::key_slots(&req, &keys, &mut slots) {
                    Ok(slot) => self.send_keyed(entry.id, req.into_raw(), slot, read),
                    Err(command::CrossSlot) => match entry.route {
                        Route::Split { merge, step }
                            if self.client.config.multi_key == MultiKeyPolicy::Split =>
                        {
                            let how = SplitOf { merge, step, read };
                            self.send_split(entry, &req, &keys, &slots, how)
                        }
                        _ => self.reject(command::cross_slot(&slots)),
                    },
                }
            }
        }
    }

    /// PUBLISH, to the pub/sub master (where the subscriber connections are).
    #[inline(never)]
    fn publish(&mut self, command: u16, frame: Bytes) {
        self.send_single(command, frame, Some(crate::router::PUBSUB_SLOT))
    }

    /// EVAL and EVAL_RO (the keyed path sends them here once it knows they are not single-key
    /// commands, in every mode): sent as a keyed request (never split), its part marked so
    /// that its reply, once it shows the node cached the script, makes slotgate remember it.
    #[inline(never)]
    fn eval(&mut self, entry: &Entry, req: &Request) {
        let slot = match self.slot_for(entry, req) {
            Ok(slot) => slot,
            Err(r) => return self.reject(r),
        };
        // (Under WATCH of this slot the keyed path kept it on the WATCH's connection.)
        // EVAL_RO is a read a read policy may place on a replica.
        let read = self.replica_reads && entry.spec.has(command::flags::READONLY);
        self.send_keyed(entry.id, req.raw().clone(), slot, read);
        // The send took this request's place, the last in the queue.
        if let Some(QueuePlace::Waiting { combine, .. }) = self.queue.back_mut()
            && matches!(combine, Combine::Single)
        {
            *combine = Combine::Eval;
        }
    }

    /// Sends a keyed request: a read under a read policy as the policy chooses, anything else
    /// to the master of `slot`.
    #[inline(always)]
    fn send_keyed(&mut self, command: u16, frame: Bytes, slot: Option<u16>, read: bool) {
        if self.replica_reads {
            self.send_placed(command, frame, slot, read)
        } else {
            self.send_single(command, frame, slot)
        }
    }

    /// Under a read policy that uses replicas: a read where the policy places it (or to the
    /// master, when the client wrote its slot within `read_your_writes_ms`), a write to the
    /// master, remembered for read-your-writes.
    #[inline(never)]
    fn send_placed(&mut self, command: u16, frame: Bytes, slot: Option<u16>, read: bool) {
        // Asked for writes too: it remembers them.
        let pinned = self.pinned_to_master(slot, read);
        if read && !pinned {
            self.send_read(command, frame, slot)
        } else {
            self.send_single(command, frame, slot)
        }
    }

    /// Whether a request for `slot` goes to the master for read-your-writes: a write is
    /// remembered (and goes there anyway), a read of a slot written within the window goes
    /// there. Always false without `read_your_writes_ms`.
    fn pinned_to_master(&mut self, slot: Option<u16>, read: bool) -> bool {
        let Some(recent) = &mut self.recent_writes else {
            return false;
        };
        // An unslotted topology has one master: everything is "slot 0".
        let slot = slot.unwrap_or(0);
        let now = Instant::now();
        if !read {
            recent.wrote(slot, now);
            return true;
        }
        recent.pins(slot, now)
    }

    /// Sends a read to the node the read policy chooses for `slot` (a replica or the master),
    /// remembering which, so that a failure there is retried once elsewhere. Kept out of line:
    /// the master path (every GET without a read policy) stays as short as it was.
    #[inline(never)]
    fn send_read(&mut self, command: u16, frame: Bytes, slot: Option<u16>) {
        let seq = self.next_seq();
        let dialect = self.client.dialect();
        let mut parts = SmallVec::new();
        parts.push(PartState::new(frame.clone(), command, slot, None, dialect));
        self.push_waiting(Combine::Single, parts);
        // Behind this slot's held parts (earlier writes), to the master, as they go.
        if self.hold.is_some()
            && self.queue_behind_hold(tag(seq, 0), &frame, slot, Via::shared(dialect))
        {
            return;
        }
        // As on the master path: the node borrowed from the snapshot into the outbox.
        let id = self.client.id;
        match read_target(&mut self.topo, &self.client.config, id, slot, None) {
            Some(t) => {
                if let Some(QueuePlace::Waiting { parts, .. }) = self.queue.back_mut()
                    && let Some(part) = parts.first_mut()
                {
                    part.read_at = Some(t.at);
                }
                self.ctx.stats.count_read(t.placement, t.skipped);
                let req = backend_request(&self.tx, tag(seq, 0), frame, false, 0);
                queue_shared(
                    &mut self.outbox,
                    &mut self.outbox_dirty,
                    t.node,
                    dialect,
                    req,
                );
            }
            None => self.fail_part(tag(seq, 0), "CLUSTERDOWN Hash slot not served"),
        }
    }

    /// Sends a whole request to the master of `slot` (any master when `None`).
    fn send_single(&mut self, command: u16, frame: Bytes, slot: Option<u16>) {
        self.send_single_via(command, frame, slot, Via::shared(self.client.dialect()))
    }

    fn send_single_via(&mut self, command: u16, frame: Bytes, slot: Option<u16>, via: Via) {
        let seq = self.next_seq();
        let mut part = PartState::new(frame.clone(), command, slot, None, via.dialect);
        part.private = via.private;
        part.skip = via.skip;
        let mut parts = SmallVec::new();
        parts.push(part);
        self.push_waiting(Combine::Single, parts);
        if via.private {
            return match self.route(slot) {
                Some(n) => self.send_to(&n, tag(seq, 0), frame, false, via),
                None => self.fail_part(tag(seq, 0), "CLUSTERDOWN Hash slot not served"),
            };
        }
        // Behind this slot's held parts, while a failover hold has some.
        if self.hold.is_some() && self.queue_behind_hold(tag(seq, 0), &frame, slot, via) {
            return;
        }
        // The usual path: into the outbox, the node borrowed from the topology snapshot (a
        // reference is taken only when the outbox first meets the node).
        let master = crate::router::node_for(self.topo.load(), slot, self.client.id);
        match master {
            Some(node) => queue_shared(
                &mut self.outbox,
                &mut self.outbox_dirty,
                node,
                via.dialect,
                backend_request(&self.tx, tag(seq, 0), frame, false, via.skip),
            ),
            None => self.fail_part(tag(seq, 0), "CLUSTERDOWN Hash slot not served"),
        }
    }

    /// SCAN over every master in turn: the low 8 bits of the cursor name the master (in address
    /// order), the rest is that master's own cursor.
    fn scan(&mut self, command: u16, req: &Request) {
        if !self.topo.load().slotted {
            return self.send_single(command, req.raw().clone(), None);
        }
        let cursor = req
            .arg(1)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u64>().ok());
        let Some(cursor) = cursor else {
            return self.push_error("ERR invalid cursor");
        };
        let mut masters: Vec<Arc<Node>> = self.topo.load().masters().to_vec();
        if masters.len() > 256 {
            return self
                .push_error("ERR slotgate: SCAN through slotgate supports up to 256 masters");
        }
        masters.sort_by(|a, b| a.addr().cmp(b.addr()));
        let index = (cursor & 0xFF) as usize;
        let Some(node) = masters.get(index).cloned() else {
            return self.push_error("ERR invalid cursor");
        };
        let node_cursor = (cursor >> 8).to_string();
        let mut frame = BytesMut::new();
        encode::array_header(&mut frame, req.argc());
        frame.extend_from_slice(req.arg_wire(0).unwrap_or_default());
        encode::bulk(&mut frame, node_cursor.as_bytes());
        for i in 2..req.argc() {
            frame.extend_from_slice(req.arg_wire(i).unwrap_or_default());
        }
        let frame = frame.freeze();
        let seq = self.next_seq();
        let mut parts = SmallVec::new();
        let dialect = self.client.dialect();
        parts.push(PartState::new(
            frame.clone(),
            command,
            None,
            Some(node.clone()),
            dialect,
        ));
        self.push_waiting(
            Combine::Scan {
                index: index as u32,
                masters: masters.len() as u32,
            },
            parts,
        );
        self.send_to(&node, tag(seq, 0), frame, false, Via::shared(dialect));
    }

    /// The slot all of `req`'s keys hash to (`None`: no keys, or a backend without slots).
    fn slot_for(&mut self, entry: &Entry, req: &Request) -> Result<Option<u16>, Rejection> {
        if !self.topo.load().slotted {
            return Ok(None);
        }
        let mut keys = KeyPositions::new();
        match entry.single_key {
            // GET, SET, HGET...: the one key, without the key-spec walk.
            Some(i) if req.argc() > i => keys.push(i as u32),
            _ => command::key_positions(entry.spec, req, &mut keys),
        }
        command::common_slot(req, &keys)
    }

    /// Whether the logged-in user may run `req` (checked only for users with limits: the
    /// command, then its keys, then its channels, as Redis checks them).
    #[inline]
    fn permitted(&self, entry: &Entry, req: &Request) -> Result<(), crate::access::Denial> {
        use crate::access::Denial;
        let Some(user) = self.client.rules.as_deref() else {
            return Err(Denial::Command);
        };
        if !user.may_run(entry.id) {
            return Err(Denial::Command);
        }
        let pubsub = entry.spec.has(command::flags::PUBSUB);
        if !user.all_keys() {
            // GET, SET, HGET...: the one key, checked where it is.
            if let Some((i, access)) = command::single_key_access(entry, req) {
                if !user.may_use_key(req.arg_or_empty(i), access) {
                    return Err(Denial::Keys);
                }
                if !pubsub {
                    return Ok(());
                }
            }
        } else if !pubsub || user.all_channels() {
            return Ok(());
        }
        let mut keys = SmallVec::<[(u32, u8); 8]>::new();
        if !user.all_keys() {
            command::key_access(entry, req, &mut keys);
        }
        let args = |range: std::ops::Range<usize>| range.filter_map(|i| req.arg(i));
        let none = || args(0..0);
        // The channels a command names, as Redis' ACL reads them.
        // Only pub/sub commands name channels: the name is looked at for those alone.
        let (channels, patterns) = if !entry.spec.has(command::flags::PUBSUB) {
            (none(), none())
        } else {
            match entry.spec.name {
                "publish" | "spublish" => (args(1..2.min(req.argc())), none()),
                "subscribe" | "ssubscribe" => (args(1..req.argc()), none()),
                "psubscribe" => (none(), args(1..req.argc())),
                _ => (none(), none()),
            }
        };
        user.check(
            entry.id,
            keys.iter()
                .filter_map(|&(i, access)| Some((req.arg(i as usize)?, access))),
            channels,
            patterns,
        )
    }

    /// After a `SELECT`: the session's private connections (a WATCH, a blocking command's)
    /// select the same database, as one Redis connection would, after whatever they still
    /// run; shared connections are chosen by database (`Dialect`) and need nothing.
    fn privates_follow_db(&mut self) {
        let db = self.client.db.to_string();
        let frame = Request::from_args(&[&b"SELECT"[..], db.as_bytes()])
            .raw()
            .clone();
        for link in self.privates.iter().filter(|p| p.is_usable()) {
            link.send(backend_request(&self.tx, FORGET, frame.clone(), false, 0));
        }
    }

    /// The session's private connection to `node`, opened on first use.
    fn private_link(
        &mut self,
        node: &Arc<Node>,
    ) -> Result<&PrivateLink, crate::error::BackendError> {
        // A connection to a node that left the topology takes nothing more.
        self.privates.retain(|p| p.is_usable() && !p.is_retired());
        let idx = match self.privates.iter().position(|p| p.addr() == node.addr()) {
            Some(i) => i,
            None => {
                if self.privates.len() >= MAX_PRIVATE_PER_SESSION {
                    self.privates.remove(0);
                }
                self.privates.push(node.private(self.client.dialect())?);
                self.privates.len() - 1
            }
        };
        self.privates
            .get(idx)
            .ok_or_else(|| crate::error::BackendError::Lost(node.addr().clone()))
    }

    fn send_split(
        &mut self,
        entry: &Entry,
        req: &Request,
        keys: &[u32],
        slots: &[u16],
        how: SplitOf,
    ) {
        let SplitOf { merge, step, read } = how;
        let seq = self.next_seq();
        let Some(split) = multi::split(req, keys, slots, step) else {
            return self.reject(Rejection::WrongArity(entry.spec.name.to_string()));
        };
        if split.len() > (1 << PART_BITS) {
            return self.push_error("ERR slotgate: too many slots in one request");
        }
        let dialect = self.client.dialect();
        let mut parts: SmallVec<[PartState; 1]> = split
            .iter()
            .map(|p| PartState::new(p.request.clone(), entry.id, Some(p.slot), None, dialect))
            .collect();
        // Sent before the queue place is taken: shared sends wait in the outbox and failures
        // come back through the reply queue, so no reply can arrive before the place exists.
        let id = self.client.id;
        for (i, p) in split.iter().enumerate() {
            // Behind this slot's held parts, while a failover hold has some.
            if self.hold.is_some()
                && self.queue_behind_hold(
                    tag(seq, i),
                    &p.request,
                    Some(p.slot),
                    Via::shared(dialect),
                )
            {
                continue;
            }
            let pinned = self.pinned_to_master(Some(p.slot), read);
            let target = if read && !pinned {
                read_target(&mut self.topo, &self.client.config, id, Some(p.slot), None)
                    .map(|t| (Some((t.at, t.placement, t.skipped)), t.node.clone()))
            } else {
                self.route(Some(p.slot)).map(|n| (None, n))
            };
            match target {
                Some((read_at, node)) => {
                    if let Some((at, placement, skipped)) = read_at {
                        if let Some(part) = parts.get_mut(i) {
                            part.read_at = Some(at);
                        }
                        self.ctx.stats.count_read(placement, skipped);
                    }
                    let via = Via::shared(dialect);
                    self.send_to(&node, tag(seq, i), p.request.clone(), false, via)
                }
                None => self.fail_part(tag(seq, i), "CLUSTERDOWN Hash slot not served"),
            }
        }
        let gather = Gather::new(split.len());
        self.push_waiting(
            Combine::Split(Box::new(Split {
                merge,
                parts: split,
                keys: keys.len(),
                gather,
            })),
            parts,
        );
    }

    fn send_all_masters(&mut self, command: u16, frame: Bytes, merge: Merge) {
        let seq = self.next_seq();
        let mut masters: Vec<Arc<Node>> = self.topo.load().masters().to_vec();
        if masters.is_empty() {
            return self.push_error("CLUSTERDOWN The cluster is down");
        }
        let dialect = self.client.dialect();
        let mut parts: SmallVec<[PartState; 1]> = masters
            .iter()
            .map(|m| PartState::new(frame.clone(), command, None, Some(m.clone()), dialect))
            .collect();
        if merge == Merge::RandomKey {
            // Each master's key count too, to weigh its key by: DBSIZE on the same connection.
            let dbsize = Bytes::from_static(b"*1\r\n$6\r\nDBSIZE\r\n");
            let n = masters.len();
            masters.extend_from_within(..);
            parts.extend(
                masters.iter().skip(n).map(|m| {
                    PartState::new(dbsize.clone(), command, None, Some(m.clone()), dialect)
                }),
            );
        }
        let gather = Gather::new(parts.len());
        if merge == Merge::AnyOk {
            return self.kill_on_every_master(seq, &masters, frame, parts, gather);
        }
        self.send_fanout(seq, merge, parts);
    }

    /// Queues the place of a fan-out whose `parts` each name their node, then sends each part
    /// there on the shared connections.
    fn send_fanout(&mut self, seq: u64, merge: Merge, parts: SmallVec<[PartState; 1]>) {
        let dialect = self.client.dialect();
        let targets: SmallVec<[(Option<Arc<Node>>, Bytes); 8]> = parts
            .iter()
            .map(|p| (p.node.clone(), p.request.clone()))
            .collect();
        let gather = Gather::new(parts.len());
        self.push_waiting(
            Combine::AllMasters(Box::new(Fanout {
                merge,
                gather,
                _links: Vec::new(),
            })),
            parts,
        );
        for (i, (node, frame)) in targets.into_iter().enumerate() {
            match node {
                Some(m) => self.send_to(&m, tag(seq, i), frame, false, Via::shared(dialect)),
                None => self.fail_part(tag(seq, i), "CLUSTERDOWN The cluster is down"),
            }
        }
    }

    /// SCRIPT KILL and FUNCTION KILL, on a new connection to each master: a busy node serves
    /// them (Redis lets them through while a script runs), but a shared connection may be the
    /// one whose EVAL is the busy script, its later requests waiting behind it.
    #[cold]
    fn kill_on_every_master(
        &mut self,
        seq: u64,
        masters: &[Arc<Node>],
        frame: Bytes,
        mut parts: SmallVec<[PartState; 1]>,
        gather: Gather,
    ) {
        let dialect = self.client.dialect();
        // Replies reach the session's mailbox, read after this place is queued.
        let mut links = Vec::with_capacity(masters.len());
        for (i, m) in masters.iter().enumerate() {
            let req = backend_request(&self.tx, tag(seq, i), frame.clone(), false, 0);
            match m.private(dialect) {
                Ok(link) => {
                    link.send(req);
                    links.push(link);
                }
                Err(e) => req.reply_to.send(Err(e)),
            }
        }
        for p in &mut parts {
            p.private = true;
        }
        self.push_waiting(
            Combine::AllMasters(Box::new(Fanout {
                merge: Merge::AnyOk,
                gather,
                _links: links,
            })),
            parts,
        );
    }

    /// The master for `slot`, or a master chosen by client id for keyless requests.
    fn route(&mut self, slot: Option<u16>) -> Option<Arc<Node>> {
        crate::router::node_for(self.topo.load(), slot, self.client.id).cloned()
    }

    fn send_to(&mut self, node: &Arc<Node>, tag: u64, frame: Bytes, asking: bool, via: Via) {
        let req = backend_request(&self.tx, tag, frame, asking, via.skip);
        if !via.private {
            let dialect = via.dialect;
            return queue_shared(&mut self.outbox, &mut self.outbox_dirty, node, dialect, req);
        }
        if node.is_paused() {
            // Tied to this node's connection, it cannot wait in the hold for another master.
            return req
                .reply_to
                .send(Err(crate::error::BackendError::FailingOver(
                    node.addr().clone(),
                )));
        }
        match self.private_link(node) {
            Ok(link) => link.send(req),
            Err(e) => req.reply_to.send(Err(e)),
        }
    }

    fn fail_part(&mut self, tag: u64, msg: &str) {
        let mut b = BytesMut::new();
        encode::error(&mut b, msg);
        let _ = self.tx.send(BackendReply {
            tag,
            result: Ok(b.freeze()),
        });
    }

    fn on_reply(&mut self, r: BackendReply) {
        // The usual reply first: a plain answer (not an error, so no redirect) to a one-part
        // request whose latency nobody records goes out as it stands.
        let idx = (r.tag >> PART_BITS).wrapping_sub(self.base) as usize;
        match r.result {
            Ok(reply)
                if is_part(r.tag)
                    && r.tag & PART_MASK == 0
                    && reply.first() != Some(&b'-')
                    && self.is_whole(idx) =>
            {
                self.answer(idx, reply)
            }
            result => self.on_reply_slow(BackendReply { tag: r.tag, result }),
        }
    }

    /// Whether queue entry `idx` is a one-part request without metrics, still waiting: its
    /// reply is its answer.
    #[inline(always)]
    fn is_whole(&self, idx: usize) -> bool {
        matches!(
            self.queue.get(idx),
            Some(QueuePlace::Waiting {
                combine: Combine::Single,
                parts,
                cmd: None,
                ..
            }) if parts.len() == 1
        )
    }

    /// Every other reply: subscriber frames and the session's own signals (by tag), errors
    /// (redirects, TRYAGAIN, NOSCRIPT, lost connections), parts of split and fan-out requests,
    /// and replies whose latency is recorded.
    fn on_reply_slow(&mut self, r: BackendReply) {
        match classify(r.tag) {
            Tagged::Part { .. } => self.on_part_reply(r),
            Tagged::Shard(t) => self.on_shard_push(t, r.result),
            Tagged::Keyspace(t) => self.on_keyspace_push(t, r.result),
            Tagged::Push => match r.result {
                Ok(frame) => self.on_push(frame),
                Err(_) => {
                    // The subscriber connection broke (its node failed): subscribe again on a
                    // node that is up, invisibly to the client.
                    self.subscriber = None;
                    if self.subs.as_ref().is_some_and(|s| !s.is_empty()) {
                        self.resub_attempts = 0;
                        self.ctx.topology.request_refresh(None);
                        self.schedule_resubscribe();
                    }
                }
            },
            Tagged::Resubscribe => self.resubscribe(),
            // CLIENT KILL: close now, as Redis does.
            Tagged::Kill => self.close_now(),
            Tagged::Unblock => self.unblocked_by_others(),
            Tagged::Drain => self.signals.set(Signals::DRAIN),
            Tagged::Reconfigure => self.reconfigure(),
            Tagged::Pause => self.signals.set(Signals::PAUSE),
            Tagged::Resume => self.signals.set(Signals::RESUME),
            Tagged::Forget => {}
        }
    }

    /// Part `part_idx` of queue entry `idx` answered `reply`: the entry's reply once every part
    /// has answered.
    fn complete(&mut self, idx: usize, part_idx: usize, reply: Bytes) {
        let Some(QueuePlace::Waiting { combine, parts, .. }) = self.queue.get_mut(idx) else {
            return;
        };
        let names = self
            .client
            .config
            .families
            .as_ref()
            .zip(parts.first())
            .and_then(|(f, p)| {
                let name = self.ctx.table.name_of(p.command)?;
                Some((f.clone(), crate::families::reply_names(name)?))
            });
        let matching = match &*combine {
            Combine::Restore(Some(p)) => Some((**p).clone()),
            Combine::ScanMatch(m) => Some(m.2.clone()),
            // KEYS: a stored name the pattern as sent found is the application's only if its
            // own name matches too.
            Combine::AllMasters(_) if names.is_some() => parts
                .first()
                .and_then(|p| crate::protocol::request::arg_of(&p.request, 1))
                .map(Bytes::copy_from_slice),
            _ => None,
        };
        let done = match combine {
            Combine::Single | Combine::Restore(_) => reply,
            Combine::RestoreExec(elements) => match &self.client.config.families {
                Some(families) => colocate::restore_exec(families, &elements.0, reply),
                None => reply,
            },
            Combine::ScanMatch(m) => {
                let mut b = BytesMut::new();
                multi::rewrite_scan_reply(&reply, m.0 as usize, m.1 as usize, &mut b);
                b.freeze()
            }
            Combine::Eval => {
                if let Some(part) = parts.first() {
                    place::remember_eval(&self.ctx, part, &reply);
                }
                reply
            }
            Combine::Scan { index, masters } => {
                let mut b = BytesMut::new();
                multi::rewrite_scan_reply(&reply, *index as usize, *masters as usize, &mut b);
                b.freeze()
            }
            Combine::Split(split) => {
                if !split.gather.keep(part_idx, reply) {
                    return;
                }
                let replies = split.gather.take();
                let mut b = BytesMut::new();
                let with = multi::MergeWith {
                    parts: &split.parts,
                    total_keys: split.keys,
                    ..multi::MergeWith::replies_only(self.client.proto)
                };
                multi::merge(split.merge, with, &replies, &mut b);
                b.freeze()
            }
            Combine::AllMasters(fanout) => {
                if !fanout.gather.keep(part_idx, reply) {
                    return;
                }
                let replies = fanout.gather.take();
                merge_fanout(&self.ctx, self.client.proto, fanout.merge, &replies, parts)
            }
        };
        // Key names in the reply as the application knows them.
        let done = match names {
            Some((families, names)) => {
                colocate::restore(&families, names, done, matching.as_deref())
            }
            None => done,
        };
        // The entry is still in place: merging does not touch the queue.
        if let Some(QueuePlace::Waiting { cmd, started, .. }) = self.queue.get_mut(idx)
            && let Some(c) = cmd.take()
        {
            if let Some(t) = started {
                c.duration.record(t.elapsed());
            }
            if ReplyKind::of(&done) == ReplyKind::Error {
                c.errors.increment(1);
            }
        }
        self.answer(idx, done);
    }

    /// Moves every finished reply at the front of the queue into the output buffer.
    fn collect_ready(&mut self) {
        while let Some(QueuePlace::Ready(_)) = self.queue.front() {
            if let Some(QueuePlace::Ready(b)) = self.queue.pop_front() {
                self.ready_bytes -= b.len();
                self.emit_front(&b);
            }
        }
    }

    /// The final reply of queue entry `idx`: straight to the output when the entry is the
    /// oldest (the usual case: one request in flight, or replies arriving in order), else kept
    /// in its place until the ones before it are answered.
    fn answer(&mut self, idx: usize, reply: Bytes) {
        if idx == 0 {
            self.queue.pop_front();
            self.emit_front(&reply);
        } else if let Some(slot) = self.queue.get_mut(idx) {
            self.ready_bytes += reply.len();
            *slot = QueuePlace::Ready(reply);
            if self.out.len() + self.ready_bytes > self.output_limit() {
                self.close_for_output_limit();
            }
        }
    }

    /// `clients.output_buffer_limit_bytes` (`usize::MAX` when there is none). Read from the
    /// configuration where it is needed, which is only past a reply already waiting in `out`.
    #[inline]
    fn output_limit(&self) -> usize {
        self.client.config.output_buffer_limit.unwrap_or(usize::MAX)
    }

    /// The client holds more unread replies than the output buffer limit allows: it is closed
    /// at once, its replies dropped, as Redis closes a client past `client-output-buffer-limit`.
    #[cold]
    fn close_for_output_limit(&mut self) {
        if self.abort {
            return;
        }
        warn!(
            client = self.client.id,
            held = self.out.len() + self.ready_bytes,
            limit = self.output_limit(),
            "closing client: its unread replies are past the output buffer limit (clients.output_buffer_limit_bytes)"
        );
        self.ctx
            .stats
            .output_limit_closes
            .fetch_add(1, Ordering::Relaxed);
        self.close_now();
    }

    /// Appends the reply of the entry just taken off the front of the queue to the output.
    fn emit_front(&mut self, reply: &[u8]) {
        if self.burst_starts.front() == Some(&self.base) {
            self.burst_starts.pop_front();
            self.out_mixed |= !self.out.is_empty();
        }
        if self.out.capacity() == 0 {
            // Borrowed only when there is a reply to write.
            buffers::borrow(Spare::Write, &mut self.out);
        }
        // Past the limit, but never for the one reply a drained buffer takes: a single large
        // value still goes through.
        if !self.out.is_empty()
            && self.out.len() + self.ready_bytes + reply.len() > self.output_limit()
        {
            self.close_for_output_limit();
        }
        let silenced = self.client_reply.is_some() && self.silenced_front();
        if !self.abort && !silenced {
            self.out.extend_from_slice(reply);
        }
        self.base += 1;
    }

    /// A command slotgate answers itself.
    #[inline(never)]
    fn local(&mut self, l: Local, req: &Request) {
        if l == Local::ClientReply {
            return self.client_reply(req);
        }
        if l == Local::ClientUnblock {
            return self.client_unblock(req);
        }
        let mut b = BytesMut::new();
        let db = self.client.db;
        local::answer(l, req, &mut self.client, &self.ctx, &mut b);
        self.push_ready(b.freeze());
        if self.client.db != db && l == Local::Select {
            self.privates_follow_db();
        }
        if l == Local::Reset {
            // RESET's own reply is the place just taken.
            let at = self.next_seq() - 1;
            self.change_client_reply(|r| r.reset(at));
            self.txn = None;
            self.watching = None;
            self.privates.clear();
            self.subscriber = None;
            self.subs = None;
            self.shards.clear();
            self.keyspace.clear();
        }
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: its reply comes from the node client `id` is blocked
    /// on (`:1`), or is `:0` (no such client, not blocked, or the asking client itself).
    fn client_unblock(&mut self, req: &Request) {
        if req.argc() > 4 {
            // Redis names the subcommand as the client wrote it.
            let sub = String::from_utf8_lossy(req.arg(1).unwrap_or_default()).into_owned();
            return self.push_error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{sub}'. Try CLIENT HELP."
            ));
        }
        let Some(target) = req
            .arg(2)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<u64>().ok())
        else {
            return self.push_error("ERR value is not an integer or out of range");
        };
        let error = match req.arg(3) {
            None => false,
            Some(m) if m.eq_ignore_ascii_case(b"timeout") => false,
            Some(m) if m.eq_ignore_ascii_case(b"error") => true,
            Some(_) => {
                return self.push_error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
        };
        let seq = self.next_seq();
        // No entry number: nothing judges this part's reply by its command (a node's `:1`/`:0`,
        // never a redirect, never a script).
        let command = u16::MAX;
        let mut parts = SmallVec::new();
        parts.push(PartState::new(
            req.raw().clone(),
            command,
            None,
            None,
            self.client.dialect(),
        ));
        self.push_waiting(Combine::Single, parts);
        let reply_to = crate::backend::ReplyTo {
            tx: self.tx.clone(),
            tag: tag(seq, 0),
        };
        let u = super::clients::Unblock {
            target,
            error,
            reply_to,
        };
        // A client sending a command is not blocked (in Redis its blocking command ran first).
        if target == self.client.id {
            return u.reply_to.send(Ok(Bytes::from_static(b":0\r\n")));
        }
        if let Err(u) = self.ctx.clients.unblock(u) {
            u.reply_to.send(Ok(Bytes::from_static(b":0\r\n")));
        }
    }

    /// CLIENT UNBLOCK requests from other clients naming this one: each is sent to the node
    /// this session is blocked on, naming its private connection there (`CLIENT ID`, asked when
    /// it opened), with the asker's reply address; the node unblocks the command, which gets
    /// the node's own timeout or error reply. Not blocked: `:0` to the asker.
    fn unblocked_by_others(&mut self) {
        for u in self.ctx.clients.take_unblocks(self.client.id) {
            let blocked = self.queue.iter().find_map(|place| match place {
                QueuePlace::Waiting { combine, parts, .. } => {
                    parts.iter().enumerate().find_map(|(i, p)| {
                        let blocking = self
                            .ctx
                            .table
                            .name_of(p.command)
                            .and_then(|n| self.ctx.table.get(n.as_bytes()))
                            .is_some_and(|e| e.spec.has(command::flags::BLOCKING));
                        (p.private && blocking && !combine.answered(i)).then(|| {
                            p.node.clone().or_else(|| {
                                crate::router::node_for(self.topo.load(), p.slot, self.client.id)
                                    .cloned()
                            })
                        })
                    })
                }
                QueuePlace::Ready(_) => None,
            });
            let target = blocked.flatten().and_then(|node| {
                let id = self
                    .privates
                    .iter()
                    .find(|l| l.addr() == node.addr())
                    .and_then(|l| l.backend_id())?;
                Some((node, id))
            });
            let Some((node, id)) = target else {
                u.reply_to.send(Ok(Bytes::from_static(b":0\r\n")));
                continue;
            };
            let id = id.to_string();
            let mode: &[u8] = if u.error { b"ERROR" } else { b"TIMEOUT" };
            let frame =
                Request::from_args(&[&b"CLIENT"[..], b"UNBLOCK", id.as_bytes(), mode]).into_raw();
            node.send(
                self.client.dialect(),
                self.client.id,
                BackendRequest::new(frame, u.reply_to),
            );
        }
    }

    /// Whether the reply at the front (place `base`) is one CLIENT REPLY OFF or SKIP silenced.
    #[cold]
    fn silenced_front(&mut self) -> bool {
        let base = self.base;
        let mut silent = false;
        self.change_client_reply(|r| silent = base >= r.first_silent() && r.is_silent(base));
        silent
    }

    /// Applies `f` to the CLIENT REPLY state, which exists only while it silences something.
    fn change_client_reply(&mut self, f: impl FnOnce(&mut ClientReply)) {
        let r = self.client_reply.get_or_insert_with(Box::default);
        f(r);
        if r.is_empty() {
            self.client_reply = None;
        }
    }

    /// `CLIENT REPLY ON|OFF|SKIP`: OFF and SKIP take no place in the queue (they have no reply);
    /// ON answers `+OK`, which is sent even when it ends OFF.
    fn client_reply(&mut self, req: &Request) {
        let mode = req.arg(2).unwrap_or_default();
        let next = self.next_seq();
        if mode.eq_ignore_ascii_case(b"off") {
            self.current = None;
            self.change_client_reply(|r| r.off(next));
        } else if mode.eq_ignore_ascii_case(b"skip") {
            self.current = None;
            self.change_client_reply(|r| r.skip(next));
        } else if mode.eq_ignore_ascii_case(b"on") {
            self.change_client_reply(|r| r.on(next));
            self.push_ready(Bytes::from_static(b"+OK\r\n"));
        } else {
            self.push_error("ERR syntax error");
        }
    }

    /// Whether the replies in `out` may wait for the next one, to reach the client in one
    /// write with it: they and the next reply answer requests the client sent in one write, the
    /// next reply is a backend round trip away on a shared connection (not a blocking command,
    /// not a retry after TRYAGAIN or a redirect, which may wait for a timer), the client is not
    /// subscribed (messages are never held), and little waits.
    /// A client that sent a pipeline reads it whole anyway; one write instead of one per node
    /// saves it and slotgate a wake and a syscall per piece.
    fn hold_output(&self) -> bool {
        !self.out.is_empty()
            && !self.out_mixed
            && self.out.len() < HOLD_BYTES
            && self.burst_starts.front() != Some(&self.base)
            && match self.queue.front() {
                Some(QueuePlace::Waiting { parts, .. }) => parts
                    .iter()
                    .all(|p| !p.private && p.retries == 0 && p.redirects == 0),
                _ => false,
            }
            && !self.subscribed()
    }
}

/// Initial room of a session's request list for one node.
const OUTBOX_START: usize = 4;

/// A request for a backend connection, answered to `tx` under `tag`.
fn backend_request(
    tx: &mailbox::Sender<BackendReply>,
    tag: u64,
    frame: Bytes,
    asking: bool,
    skip: u32,
) -> BackendRequest {
    BackendRequest {
        frame,
        asking,
        skip,
        reply_to: ReplyTo {
            tx: tx.clone(),
            tag,
        },
    }
}

/// Holds `req` for `node`'s shared connection until the end of the session's round, so that
/// requests for one node leave together.
/// Where a read of `slot` goes under the session configuration's read policy, from slotgate's
/// zone (`exclude`: the candidate a first attempt failed on).
fn read_target<'t>(
    topo: &'t mut TopologyCache,
    config: &crate::frontend::SessionConfig,
    client: u64,
    slot: Option<u16>,
    exclude: Option<u8>,
) -> Option<crate::router::ReadTarget<'t>> {
    let here = config.zone.as_deref();
    crate::router::read_node(topo.load(), slot, config.read_from, here, client, exclude)
}

fn queue_shared(
    outbox: &mut Vec<(Arc<Node>, Dialect, Vec<BackendRequest>)>,
    dirty: &mut bool,
    node: &Arc<Node>,
    dialect: Dialect,
    req: BackendRequest,
) {
    let pos = outbox
        .iter()
        .position(|(n, d, _)| Arc::ptr_eq(n, node) && *d == dialect);
    match pos.and_then(|i| outbox.get_mut(i)) {
        Some((_, _, reqs)) => reqs.push(req),
        None => {
            // Room for a round's requests: the vector later trades places with the
            // connection's queue, and one that started at one slot would grow there.
            let mut reqs = Vec::with_capacity(OUTBOX_START);
            reqs.push(req);
            outbox.push((node.clone(), dialect, reqs));
        }
    }
    *dirty = true;
}

/// XREAD/XREADGROUP with BLOCK would hold a shared connection, so they take a private one.
/// The name test is inlined (every keyed request makes it); the argument scan is not.
#[inline(always)]
fn is_blocking_stream_read(name: &str, req: &Request) -> bool {
    (name == "xread" || name == "xreadgroup") && has_block_argument(req)
}

#[inline(never)]
fn has_block_argument(req: &Request) -> bool {
    (1..req.argc()).any(|i| req.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"BLOCK")))
}
