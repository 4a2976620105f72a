//! Error replies to a part of a request: MOVED, ASK, TRYAGAIN, READONLY after a failover,
//! NOSCRIPT for a script slotgate loaded, and lost connections; and a read a read policy placed
//! that failed where it went (sent once more, to the next candidate). Each is followed or retried
//! within the part's budget, invisibly to the client, or delivered as Redis gave it.
//!
//! A part must never be sent twice at once, a write never sent to a second node after a
//! failure; a part must never follow more redirects or retries than its budget, or lose its
//! place in the reply queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tracing::debug;

use super::Session;
use super::place::{QueuePlace, Via};
use crate::backend::connection::ASKING;
use crate::backend::{BackendReply, BackendRequest, Dialect, Node, ReplyTo};
use crate::frontend::Context;
use crate::frontend::tag::PART_BITS;
use crate::protocol::{Request, RequestParser, encode};
use crate::router::{Budget, RedirectDecision, decide};

/// What to do after a backend reply, decided while the queue is borrowed.
enum Action {
    /// The reply is final: it answers its part.
    Deliver(Bytes),
    Resend {
        tag: u64,
        node: Arc<Node>,
        frame: Bytes,
        asking: bool,
        via: Via,
    },
    Rediscover {
        tag: u64,
        slot: Option<u16>,
        frame: Bytes,
        dialect: Dialect,
    },
    RetryLater {
        tag: u64,
        slot: Option<u16>,
        node: Option<Arc<Node>>,
        frame: Bytes,
        attempt: u32,
        via: Via,
    },
}

/// After READONLY, how long (in polls) to wait for a new master before sending again.
const REDISCOVER_POLLS: u32 = 200;

const REDISCOVER_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Longest wait between two TRYAGAIN retries.
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// For an EVALSHA/EVALSHA_RO `request` whose script slotgate knows, the `SCRIPT LOAD` frame
/// that puts it back on a node.
fn script_repair(ctx: &Context, request: &Bytes) -> Option<Bytes> {
    let mut buf = BytesMut::from(&request[..]);
    let req = RequestParser::new(ctx.config.limits)
        .parse(&mut buf)
        .ok()??;
    let name = req.arg(0)?;
    if !name.eq_ignore_ascii_case(b"evalsha") && !name.eq_ignore_ascii_case(b"evalsha_ro") {
        return None;
    }
    let body = ctx.scripts.body(req.arg(1)?)?;
    Some(
        Request::from_args(&[&b"SCRIPT"[..], b"LOAD", &body])
            .raw()
            .clone(),
    )
}

/// Whether a read that got `result` is worth sending to another candidate: the node failed it
/// (down, overloaded, connection lost or timed out, a malformed reply), or a replica could not
/// serve it (`-LOADING` its data set, `-MASTERDOWN` with `replica-serve-stale-data no`).
fn worth_another_read(result: &Result<Bytes, crate::error::BackendError>) -> bool {
    use crate::error::BackendError as E;
    match result {
        Ok(reply) => reply.starts_with(b"-LOADING") || reply.starts_with(b"-MASTERDOWN"),
        Err(E::Down(_) | E::Overloaded(_) | E::Lost(_) | E::Timeout(..) | E::Protocol(..)) => true,
        Err(E::TooManyPrivate(_) | E::NoMaster) => false,
    }
}

impl Session {
    /// The reply (or failure) for part `r.tag` of a queue place: an answer completes the part;
    /// an error is followed, retried or delivered.
    pub(super) fn on_part_reply(&mut self, r: BackendReply) {
        let seq = r.tag >> PART_BITS;
        let part_idx = (r.tag & ((1 << PART_BITS) - 1)) as usize;
        let Some(idx) = seq.checked_sub(self.base) else {
            return;
        };
        let (max_redirects, max_retries) =
            (self.ctx.config.max_redirects, self.ctx.config.max_tryagain);
        let action;
        {
            let Some(QueuePlace::Waiting { combine, parts, .. }) = self.queue.get_mut(idx as usize)
            else {
                return;
            };
            if combine.answered(part_idx) {
                return;
            }
            let Some(part) = parts.get_mut(part_idx) else {
                return;
            };
            // A read a read policy placed, that failed where it went (the node down, the
            // connection lost or timed out, a replica still loading or cut off from its
            // master): sent once more, to the next candidate. Never a write: only reads get
            // `read_at`.
            if let Some(at) = part.read_at
                && !part.reread
                && worth_another_read(&r.result)
            {
                let next = super::read_target(
                    &mut self.topo,
                    &self.ctx.config,
                    self.client.id,
                    part.slot,
                    Some(at),
                );
                if let Some(t) = next {
                    part.reread = true;
                    part.read_at = Some(t.at);
                    self.ctx.stats.reads_retried.fetch_add(1, Ordering::Relaxed);
                    self.ctx.stats.count_read(t.placement);
                    if let Err(e) = &r.result
                        && e.suggests_refresh()
                    {
                        self.ctx.topology.request_refresh(None);
                    }
                    let (node, frame, via) = (t.node.clone(), part.request.clone(), Via::of(part));
                    return self.send_to(&node, r.tag, frame, false, via);
                }
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
            if reply.first() != Some(&b'-') {
                // Not an error, so neither a redirect nor NOSCRIPT.
                return self.complete(idx as usize, part_idx, reply);
            }
            // EVALSHA of a script this node lacks, but that was loaded through slotgate: load it
            // on the node that answered (where the last redirect, if any, sent the part) and run
            // the EVALSHA again, once, counted against the redirect budget.
            if reply.starts_with(b"-NOSCRIPT")
                && !part.script_loaded
                && part.redirects < max_redirects
                && let Some(load) = script_repair(&self.ctx, &part.request)
            {
                part.script_loaded = true;
                part.redirects += 1;
                let node = part.node.clone().or_else(|| {
                    crate::router::node_for(self.topo.load(), part.slot, self.client.id).cloned()
                });
                if let Some(node) = node {
                    let mut frame = BytesMut::from(&load[..]);
                    if part.asking {
                        frame.extend_from_slice(ASKING);
                    }
                    frame.extend_from_slice(&part.request);
                    let via = Via {
                        skip: part.skip + 1 + u32::from(part.asking),
                        ..Via::of(part)
                    };
                    let (tag, frame) = (r.tag, frame.freeze());
                    return self.send_to(&node, tag, frame, false, via);
                }
            }
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
            let via = Via::of(part);
            // A private part's READONLY is delivered: its connection is tied to the session.
            let decision = match decision {
                RedirectDecision::Rediscover if part.private => RedirectDecision::Deliver,
                d => d,
            };
            action = match decision {
                RedirectDecision::Deliver => Action::Deliver(reply),
                RedirectDecision::FollowMoved { slot, addr } => {
                    self.ctx
                        .stats
                        .redirects_moved
                        .fetch_add(1, Ordering::Relaxed);
                    part.redirects += 1;
                    let node = self.ctx.backends.node(&addr);
                    (part.node, part.asking) = (Some(node.clone()), false);
                    // The master it names serves it from now on, read or not.
                    part.read_at = None;
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
                            via,
                        }
                    } else {
                        Action::Resend {
                            tag: r.tag,
                            node,
                            frame: part.request.clone(),
                            asking: false,
                            via,
                        }
                    }
                }
                RedirectDecision::FollowAsk { addr } => {
                    self.ctx.stats.redirects_ask.fetch_add(1, Ordering::Relaxed);
                    part.redirects += 1;
                    let node = self.ctx.backends.node(&addr);
                    (part.node, part.asking) = (Some(node.clone()), true);
                    part.read_at = None;
                    Action::Resend {
                        tag: r.tag,
                        node,
                        frame: part.request.clone(),
                        asking: true,
                        via,
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
                        dialect: part.dialect,
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
                        via,
                    }
                }
            };
        }
        match action {
            Action::Deliver(reply) => self.complete(idx as usize, part_idx, reply),
            Action::Rediscover {
                tag,
                slot,
                frame,
                dialect,
            } => {
                // The refused write did not run. Wait (bounded) for the refresher to publish a
                // new master, then send it there.
                let handle = self.ctx.topology.clone();
                let (id, tx) = (self.client.id, self.tx.clone());
                let epoch = handle.load_full().epoch;
                tokio::spawn(async move {
                    for _ in 0..REDISCOVER_POLLS {
                        if handle.load_full().epoch != epoch {
                            break;
                        }
                        tokio::time::sleep(REDISCOVER_POLL).await;
                    }
                    let topo = handle.load_full();
                    let node = crate::router::node_for(&topo, slot, id);
                    let reply_to = ReplyTo { tx, tag };
                    match node {
                        Some(node) => node.send(dialect, id, BackendRequest::new(frame, reply_to)),
                        None => reply_to.send(Err(crate::error::BackendError::NoMaster)),
                    }
                });
            }
            Action::Resend {
                tag,
                node,
                frame,
                asking,
                via,
            } => self.send_to(&node, tag, frame, asking, via),
            Action::RetryLater {
                tag,
                slot,
                node,
                frame,
                attempt,
                via,
            } => {
                let node = match node {
                    Some(n) => Some(n),
                    None => self.route(slot),
                };
                let Some(node) = node else {
                    return self.fail_part(tag, "CLUSTERDOWN Hash slot not served");
                };
                if via.private {
                    // The private connection lives in the session: resend now, in order.
                    return self.send_to(&node, tag, frame, false, via);
                }
                let (dialect, id, tx) = (via.dialect, self.client.id, self.tx.clone());
                // Back off exponentially, capped: a migration batch usually moves within a few tries.
                let delay = (self.ctx.config.tryagain_delay
                    * 2u32.saturating_pow(attempt.saturating_sub(1).min(6)))
                .min(MAX_RETRY_DELAY);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    node.send(dialect, id, BackendRequest::new(frame, ReplyTo { tx, tag }));
                });
            }
        }
    }
}
