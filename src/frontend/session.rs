//! One client connection: parse every buffered request, dispatch each to its node(s) at once,
//! and write replies strictly in request order, many per write.
//!
//! Each request takes a place in an ordered queue (bounded by `max_pipeline`; the session stops
//! reading from the client while it is full). Backend replies come back tagged with their place
//! on one channel; MOVED, ASK and TRYAGAIN are followed here, invisibly to the client. A session
//! must never answer out of order, drop or duplicate a request, or follow more redirects than its
//! budget.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::local::{self, ClientState};
use super::{Context, MultiKeyPolicy};
use crate::backend::{BackendReply, BackendRequest, Node, ReplyTo};
use crate::command::{self, KeyPositions, Merge, Rejection, Route, multi};
use crate::protocol::encode;
use crate::protocol::{Request, RequestParser};
use crate::router::{Budget, RedirectDecision, decide};
use crate::topology::Topology;

/// Parts of one request that went to backends.
#[derive(Debug)]
struct PartState {
    request: Bytes,
    /// The slot the part routes by (`None` for fan-outs to a fixed node).
    slot: Option<u16>,
    node: Option<Arc<Node>>,
    redirects: u32,
    retries: u32,
    reply: Option<Bytes>,
}

#[derive(Debug)]
enum Combine {
    Single,
    Split {
        merge: Merge,
        parts: Vec<multi::Part>,
        keys: usize,
    },
    AllMasters(Merge),
}

#[derive(Debug)]
enum SlotState {
    Ready(Bytes),
    Waiting {
        combine: Combine,
        parts: SmallVec<[PartState; 1]>,
        remaining: usize,
    },
}

/// What to do after a backend reply, decided while the queue is borrowed.
enum Action {
    None,
    Resend {
        tag: u64,
        node: Arc<Node>,
        frame: Bytes,
        asking: bool,
    },
    Rediscover {
        tag: u64,
        slot: Option<u16>,
        frame: Bytes,
    },
    RetryLater {
        tag: u64,
        slot: Option<u16>,
        node: Option<Arc<Node>>,
        frame: Bytes,
        attempt: u32,
    },
}

type TopologyCache = arc_swap::Cache<Arc<arc_swap::ArcSwap<Topology>>, Arc<Topology>>;

struct Session {
    ctx: Arc<Context>,
    client: ClientState,
    parser: RequestParser,
    queue: VecDeque<SlotState>,
    /// Sequence number of `queue[0]`.
    base: u64,
    tx: mpsc::UnboundedSender<BackendReply>,
    topo: TopologyCache,
    out: BytesMut,
}

const PART_BITS: u32 = 16;
/// After READONLY, how long (in polls) to wait for a new master before sending again.
const REDISCOVER_POLLS: u32 = 200;
const REDISCOVER_POLL: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest wait between two TRYAGAIN retries.
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

fn tag(seq: u64, part: usize) -> u64 {
    (seq << PART_BITS) | part as u64
}

/// Rounds of the session's poll loop before it yields to other tasks.
const POLL_BUDGET: usize = 32;
/// Stop reading requests while this many reply bytes wait for a slow client.
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;

/// Runs a session until the client leaves, sends QUIT, breaks the protocol, or shutdown.
///
/// One task, one hand-written poll loop: read and dispatch every buffered request, take every
/// reply that has arrived, write the finished front of the queue, and sleep only when none of
/// these can make progress.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ctx: Arc<Context>,
    id: u64,
    shutdown: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut s = Session {
        client: ClientState::new(id),
        parser: RequestParser::new(ctx.config.limits),
        queue: VecDeque::with_capacity(64),
        base: 0,
        tx,
        topo: ctx.topology.cache(),
        out: BytesMut::with_capacity(16 * 1024),
        ctx,
    };
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut replies: Vec<BackendReply> = Vec::with_capacity(64);
    let mut eof = false;
    let max_pipeline = s.ctx.config.max_pipeline.max(1);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut watching = false;

    let clean = poll_fn(|cx| {
        // A source that said Pending has registered this task's waker; polling it again in the
        // same round only costs instructions.
        let mut rx_idle = false;
        let mut read_idle = false;
        for _ in 0..POLL_BUDGET {
            let mut progress = false;
            s.dispatch_buffered(&mut rbuf, max_pipeline);
            if !rx_idle {
                match rx.poll_recv_many(cx, &mut replies, 256) {
                    Poll::Ready(n) if n > 0 => {
                        for r in replies.drain(..) {
                            s.on_reply(r);
                        }
                        progress = true;
                    }
                    _ => rx_idle = true,
                }
            }
            s.collect_ready();
            while !s.out.is_empty() {
                match Pin::new(&mut stream).poll_write(cx, &s.out) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(n)) => {
                        s.out.advance(n);
                        progress = true;
                    }
                    Poll::Pending => break,
                }
            }
            if s.out.is_empty() && s.out.capacity() > 1024 * 1024 {
                s.out = BytesMut::with_capacity(16 * 1024);
            }
            if s.queue.is_empty() && s.out.is_empty() && (s.client.closing || eof) {
                return Poll::Ready(true);
            }
            let can_read = !eof
                && !s.client.closing
                && s.queue.len() < max_pipeline
                && s.out.len() < OUT_HIGH_WATER;
            if can_read && !read_idle {
                let want = s.parser.want().saturating_sub(rbuf.len()).max(4096);
                rbuf.reserve(want);
                match tokio_util::io::poll_read_buf(Pin::new(&mut stream), cx, &mut rbuf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(_)) => progress = true,
                    Poll::Pending => read_idle = true,
                }
            }
            if !progress {
                // The cancellation future is polled once to register, then only once the
                // proxy is draining: polling it on every wake costs more than a request.
                if !eof && (!watching || s.ctx.draining.load(Ordering::Relaxed)) {
                    watching = true;
                    if cancelled.as_mut().poll(cx).is_ready() {
                        eof = true;
                        continue;
                    }
                }
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    if clean {
        let _ = stream.shutdown().await;
    }
}

impl Session {
    /// Parses and dispatches every complete request in `rbuf`, up to the pipeline bound.
    fn dispatch_buffered(&mut self, rbuf: &mut BytesMut, max_pipeline: usize) {
        while self.queue.len() < max_pipeline && !self.client.closing {
            match self.parser.parse(rbuf) {
                Ok(Some(req)) => self.dispatch(req),
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "protocol error from client");
                    self.push_error(&format!("ERR {e}"));
                    self.client.closing = true;
                }
            }
        }
    }

    fn push_ready(&mut self, bytes: Bytes) {
        self.queue.push_back(SlotState::Ready(bytes));
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
        self.push_error(&r.to_string());
    }

    fn next_seq(&self) -> u64 {
        self.base + self.queue.len() as u64
    }

    fn dispatch(&mut self, req: Request) {
        self.ctx.stats.commands.fetch_add(1, Ordering::Relaxed);
        let table = self.ctx.table;
        let entry = match command::lookup(table, &req) {
            Ok(e) => e,
            Err(r) => return self.reject(r),
        };
        match entry.route {
            Route::Local(l) => {
                let mut b = BytesMut::new();
                local::answer(l, &req, &mut self.client, &self.ctx, &mut b);
                self.push_ready(b.freeze());
            }
            Route::Refuse(reason) => self.reject(Rejection::Refused {
                name: entry.spec.name.to_string(),
                reason,
            }),
            Route::AnyMaster => self.send_single(req.raw().clone(), None),
            Route::AllMasters(merge) => self.send_all_masters(req.raw().clone(), merge),
            Route::Keyed | Route::Split { .. } => {
                if is_blocking_stream_read(entry.spec.name, &req) {
                    return self.reject(Rejection::Refused {
                        name: entry.spec.name.to_string(),
                        reason: "blocking commands are not supported yet (they need a dedicated backend connection)",
                    });
                }
                if !self.topo.load().slotted {
                    // One master holds every key: no slots, no CROSSSLOT, nothing to split.
                    return self.send_single(req.raw().clone(), None);
                }
                let mut keys = KeyPositions::new();
                command::key_positions(entry.spec, &req, &mut keys);
                match command::common_slot(&req, &keys) {
                    Ok(slot) => self.send_single(req.raw().clone(), slot),
                    Err(r) => match entry.route {
                        Route::Split { merge, step }
                            if self.ctx.config.multi_key == MultiKeyPolicy::Split =>
                        {
                            self.send_split(&req, &keys, merge, step)
                        }
                        _ => self.reject(r),
                    },
                }
            }
        }
    }

    /// Sends a whole request to the master of `slot` (any master when `None`).
    fn send_single(&mut self, frame: Bytes, slot: Option<u16>) {
        let seq = self.next_seq();
        let node = self.route(slot);
        let mut parts = SmallVec::new();
        parts.push(PartState {
            request: frame.clone(),
            slot,
            node: None,
            redirects: 0,
            retries: 0,
            reply: None,
        });
        self.queue.push_back(SlotState::Waiting {
            combine: Combine::Single,
            parts,
            remaining: 1,
        });
        match node {
            Some(n) => self.send_to(&n, tag(seq, 0), frame, false),
            None => self.fail_part(tag(seq, 0), "CLUSTERDOWN Hash slot not served"),
        }
    }

    fn send_split(&mut self, req: &Request, keys: &[u32], merge: Merge, step: u8) {
        let seq = self.next_seq();
        let split = multi::split(req, keys, step);
        if split.len() > (1 << PART_BITS) {
            return self.push_error("ERR slotgate: too many slots in one request");
        }
        let parts: SmallVec<[PartState; 1]> = split
            .iter()
            .map(|p| PartState {
                request: p.request.clone(),
                slot: Some(p.slot),
                node: None,
                redirects: 0,
                retries: 0,
                reply: None,
            })
            .collect();
        let sends: Vec<(u16, Bytes)> = split.iter().map(|p| (p.slot, p.request.clone())).collect();
        let n = parts.len();
        self.queue.push_back(SlotState::Waiting {
            combine: Combine::Split {
                merge,
                parts: split,
                keys: keys.len(),
            },
            parts,
            remaining: n,
        });
        for (i, (slot, frame)) in sends.into_iter().enumerate() {
            match self.route(Some(slot)) {
                Some(node) => self.send_to(&node, tag(seq, i), frame, false),
                None => self.fail_part(tag(seq, i), "CLUSTERDOWN Hash slot not served"),
            }
        }
    }

    fn send_all_masters(&mut self, frame: Bytes, merge: Merge) {
        let seq = self.next_seq();
        let masters: Vec<Arc<Node>> = self.topo.load().masters().to_vec();
        if masters.is_empty() {
            return self.push_error("CLUSTERDOWN The cluster is down");
        }
        let parts: SmallVec<[PartState; 1]> = masters
            .iter()
            .map(|m| PartState {
                request: frame.clone(),
                slot: None,
                node: Some(m.clone()),
                redirects: 0,
                retries: 0,
                reply: None,
            })
            .collect();
        self.queue.push_back(SlotState::Waiting {
            combine: Combine::AllMasters(merge),
            parts,
            remaining: masters.len(),
        });
        for (i, m) in masters.iter().enumerate() {
            self.send_to(m, tag(seq, i), frame.clone(), false);
        }
    }

    /// The master for `slot`, or a master chosen by client id for keyless requests.
    fn route(&mut self, slot: Option<u16>) -> Option<Arc<Node>> {
        let topo = self.topo.load();
        match slot {
            Some(s) => topo.master_for_slot(s).cloned(),
            None => {
                let masters = topo.masters();
                if masters.is_empty() {
                    return None;
                }
                masters
                    .get((self.client.id % masters.len() as u64) as usize)
                    .cloned()
            }
        }
    }

    fn send_to(&self, node: &Arc<Node>, tag: u64, frame: Bytes, asking: bool) {
        node.send(
            self.client.proto,
            self.client.id,
            BackendRequest {
                frame,
                asking,
                reply_to: ReplyTo {
                    tx: self.tx.clone(),
                    tag,
                },
            },
        );
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
        let seq = r.tag >> PART_BITS;
        let part_idx = (r.tag & ((1 << PART_BITS) - 1)) as usize;
        let Some(idx) = seq.checked_sub(self.base) else {
            return;
        };
        let (max_redirects, max_retries) =
            (self.ctx.config.max_redirects, self.ctx.config.max_tryagain);
        let action;
        {
            let Some(SlotState::Waiting {
                parts, remaining, ..
            }) = self.queue.get_mut(idx as usize)
            else {
                return;
            };
            let Some(part) = parts.get_mut(part_idx) else {
                return;
            };
            if part.reply.is_some() {
                return;
            }
            let reply = match r.result {
                Err(e) => {
                    self.ctx
                        .stats
                        .backend_errors
                        .fetch_add(1, Ordering::Relaxed);
                    if e.suggests_refresh() {
                        self.ctx.topology.request_refresh(None);
                    }
                    let mut b = BytesMut::new();
                    encode::error(&mut b, &e.to_string());
                    b.freeze()
                }
                Ok(bytes) => bytes,
            };
            let decision = decide(
                &reply,
                Budget {
                    redirects: part.redirects,
                    max_redirects,
                    retries: part.retries,
                    max_retries,
                },
            );
            if decision != RedirectDecision::Deliver || part.redirects > 0 {
                debug!(redirects = part.redirects, ?decision, reply = %String::from_utf8_lossy(&reply).trim_end(), "redirect");
            }
            action = match decision {
                RedirectDecision::Deliver => {
                    part.reply = Some(reply);
                    *remaining -= 1;
                    Action::None
                }
                RedirectDecision::FollowMoved { slot, addr } => {
                    self.ctx
                        .stats
                        .redirects_moved
                        .fetch_add(1, Ordering::Relaxed);
                    part.redirects += 1;
                    let node = self.ctx.backends.node(&addr);
                    self.ctx.topology.patch_slot(slot, node.clone());
                    self.ctx.topology.request_refresh(Some(node.addr()));
                    if part.redirects > 1 {
                        // Bouncing between nodes: the slot's owners have not converged yet
                        // (a SETSLOT NODE still propagating). Give them a moment.
                        Action::RetryLater {
                            tag: r.tag,
                            slot: None,
                            node: Some(node),
                            frame: part.request.clone(),
                            attempt: part.redirects,
                        }
                    } else {
                        Action::Resend {
                            tag: r.tag,
                            node,
                            frame: part.request.clone(),
                            asking: false,
                        }
                    }
                }
                RedirectDecision::FollowAsk { addr } => {
                    self.ctx.stats.redirects_ask.fetch_add(1, Ordering::Relaxed);
                    part.redirects += 1;
                    Action::Resend {
                        tag: r.tag,
                        node: self.ctx.backends.node(&addr),
                        frame: part.request.clone(),
                        asking: true,
                    }
                }
                RedirectDecision::Rediscover => {
                    self.ctx
                        .stats
                        .redirects_readonly
                        .fetch_add(1, Ordering::Relaxed);
                    part.redirects += 1;
                    self.ctx.topology.request_refresh(None);
                    Action::Rediscover {
                        tag: r.tag,
                        slot: part.slot,
                        frame: part.request.clone(),
                    }
                }
                RedirectDecision::RetryLater => {
                    self.ctx
                        .stats
                        .redirects_tryagain
                        .fetch_add(1, Ordering::Relaxed);
                    part.retries += 1;
                    Action::RetryLater {
                        tag: r.tag,
                        slot: part.slot,
                        node: part.node.clone(),
                        frame: part.request.clone(),
                        attempt: part.retries,
                    }
                }
            };
        }
        match action {
            Action::None => self.complete_if_done(idx as usize),
            Action::Rediscover { tag, slot, frame } => {
                // The refused write did not run. Wait (bounded) for the refresher to publish a
                // new master, then send it there.
                let handle = self.ctx.topology.clone();
                let (proto, id, tx) = (self.client.proto, self.client.id, self.tx.clone());
                let epoch = handle.load_full().epoch;
                tokio::spawn(async move {
                    for _ in 0..REDISCOVER_POLLS {
                        if handle.load_full().epoch != epoch {
                            break;
                        }
                        tokio::time::sleep(REDISCOVER_POLL).await;
                    }
                    let topo = handle.load_full();
                    let node = match slot {
                        Some(s) => topo.master_for_slot(s),
                        None => topo
                            .masters()
                            .get((id % topo.masters().len().max(1) as u64) as usize),
                    };
                    let reply_to = ReplyTo { tx, tag };
                    match node {
                        Some(node) => node.send(
                            proto,
                            id,
                            BackendRequest {
                                frame,
                                asking: false,
                                reply_to,
                            },
                        ),
                        None => reply_to.send(Err(crate::error::BackendError::NoMaster)),
                    }
                });
            }
            Action::Resend {
                tag,
                node,
                frame,
                asking,
            } => self.send_to(&node, tag, frame, asking),
            Action::RetryLater {
                tag,
                slot,
                node,
                frame,
                attempt,
            } => {
                let node = match node {
                    Some(n) => Some(n),
                    None => self.route(slot),
                };
                let Some(node) = node else {
                    return self.fail_part(tag, "CLUSTERDOWN Hash slot not served");
                };
                let (proto, id, tx) = (self.client.proto, self.client.id, self.tx.clone());
                // Back off exponentially, capped: a migration batch usually moves within a few tries.
                let delay = (self.ctx.config.tryagain_delay
                    * 2u32.saturating_pow(attempt.saturating_sub(1).min(6)))
                .min(MAX_RETRY_DELAY);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    node.send(
                        proto,
                        id,
                        BackendRequest {
                            frame,
                            asking: false,
                            reply_to: ReplyTo { tx, tag },
                        },
                    );
                });
            }
        }
    }

    fn complete_if_done(&mut self, idx: usize) {
        let Some(slot) = self.queue.get_mut(idx) else {
            return;
        };
        let SlotState::Waiting {
            combine,
            parts,
            remaining,
        } = slot
        else {
            return;
        };
        if *remaining > 0 {
            return;
        }
        if let (Combine::Single, [part]) = (&*combine, parts.as_mut_slice()) {
            *slot = SlotState::Ready(part.reply.take().unwrap_or_default());
            return;
        }
        let replies: SmallVec<[Bytes; 4]> = parts
            .iter_mut()
            .map(|p| p.reply.take().unwrap_or_default())
            .collect();
        let done = match combine {
            Combine::Single => replies.into_iter().next().unwrap_or_default(),
            Combine::Split { merge, parts, keys } => {
                let mut b = BytesMut::new();
                multi::merge(*merge, parts, &replies, *keys, &mut b);
                b.freeze()
            }
            Combine::AllMasters(Merge::Info) => {
                let section = local::proxy_info_section(&self.ctx);
                let mut b = BytesMut::new();
                match multi::merge_info(&replies, &section) {
                    Ok(text) => encode::verbatim(&mut b, self.client.proto, text.as_bytes()),
                    Err(e) => b.extend_from_slice(&e),
                }
                b.freeze()
            }
            Combine::AllMasters(merge) => {
                let mut b = BytesMut::new();
                multi::merge(*merge, &[], &replies, 0, &mut b);
                b.freeze()
            }
        };
        *slot = SlotState::Ready(done);
    }

    /// Moves every finished reply at the front of the queue into the output buffer.
    fn collect_ready(&mut self) {
        while let Some(SlotState::Ready(_)) = self.queue.front() {
            if let Some(SlotState::Ready(b)) = self.queue.pop_front() {
                self.out.extend_from_slice(&b);
            }
            self.base += 1;
        }
    }
}

/// XREAD/XREADGROUP with BLOCK would hold a shared connection; they are refused until blocking
/// commands get connections of their own.
fn is_blocking_stream_read(name: &str, req: &Request) -> bool {
    if name != "xread" && name != "xreadgroup" {
        return false;
    }
    (1..req.argc()).any(|i| req.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"BLOCK")))
}
