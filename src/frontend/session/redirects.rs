//! Error replies to a part of a request: MOVED, ASK, TRYAGAIN, READONLY after a failover,
//! NOSCRIPT for a script slotgate loaded, and lost connections; a read a read policy placed
//! that failed where it went (sent once more, to the next candidate); and a part its master
//! failed without running it, held for a master (`hold`; within its shard's hold budget,
//! `hold_budget`, else delivered at once). Each is followed or retried within
//! the part's budget, invisibly to the client, or delivered as Redis gave it.
//!
//! A part must never be sent twice at once, a write never sent to a second node after a
//! failure; a part must never follow more redirects or retries than its budget, or lose its
//! place in the reply queue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::Session;
use super::hold::{Behind, Deadline, Held, Hold};
use super::place::{QueuePlace, Via};
use crate::backend::connection::ASKING;
use crate::backend::{BackendReply, BackendRequest, Dialect, Node, ReplyTo};
use crate::error::BackendError;
use crate::frontend::Context;
use crate::frontend::hold_budget::PART_OVERHEAD;
use crate::frontend::tag::PART_BITS;
use crate::protocol::{Request, encode};
use crate::router::{Budget, Outcome, PartAction, PartFacts, next_step};

/// How the session carries out a part's [`PartAction`], gathered while the queue is borrowed.
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
        attempt: u16,
        via: Via,
    },
    Hold(Box<Held>),
}

/// A part's result as its final answer: a node's reply as it is, a failure as its error (counted,
/// and a refresh asked for when it suggests one).
fn delivered(ctx: &Context, result: Result<Bytes, BackendError>) -> Action {
    match result {
        Ok(reply) => Action::Deliver(reply),
        Err(e) => {
            ctx.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
            if e.suggests_refresh() {
                ctx.topology.request_refresh(None);
            }
            let mut b = BytesMut::new();
            encode::error(&mut b, &e.to_string());
            Action::Deliver(b.freeze())
        }
    }
}

/// After READONLY, how long (in polls) to wait for a new master before sending again.
const REDISCOVER_POLLS: u32 = 200;

const REDISCOVER_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// How long a part held after a master's CLUSTERDOWN or LOADING waits before it is sent again,
/// having been held `held_for` already: 10 ms at first, then half the time held so far, at most
/// 100 ms. With `cluster-require-full-coverage` every master answers CLUSTERDOWN from the moment
/// a failed master is marked FAIL until it learns of the promotion, a few milliseconds after the
/// promoted replica itself; a part asked again soon rides that out with little delay, and a long
/// outage costs each held part ten requests a second.
fn reply_hold_pause(held_for: std::time::Duration) -> std::time::Duration {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(10);
    const MOST: std::time::Duration = std::time::Duration::from_millis(100);
    (held_for / 2).clamp(FIRST, MOST)
}

/// Longest wait between two TRYAGAIN retries.
const MAX_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

impl Session {
    /// The reply (or failure) for part `r.tag` of a queue place: an answer completes the part;
    /// an error is followed, retried or delivered.
    pub(super) fn on_part_reply(&mut self, r: BackendReply) {
        let seq = r.tag >> PART_BITS;
        let part_idx = (r.tag & ((1 << PART_BITS) - 1)) as usize;
        let Some(idx) = seq.checked_sub(self.base) else {
            return;
        };
        let (max_redirects, max_retries) = (
            self.client.config.max_redirects,
            self.client.config.max_tryagain,
        );
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
            let outcome = match &r.result {
                // Not an error, so neither a redirect nor anything else to act on.
                Ok(reply) if reply.first() != Some(&b'-') => {
                    return self.complete(idx as usize, part_idx, r.result.unwrap_or_default());
                }
                Ok(reply) => Outcome::Reply(reply),
                Err(e) => Outcome::Failed(e.failure()),
            };
            // The body of an EVALSHA's script, when a NOSCRIPT came back and slotgate holds it.
            let script_body = match outcome {
                Outcome::Reply(reply) if reply.starts_with(b"-NOSCRIPT") && !part.script_loaded => {
                    super::place::script_arg(&self.ctx, part)
                        .and_then(|sha| self.ctx.scripts.body(sha))
                }
                _ => None,
            };
            let mut facts = PartFacts {
                budget: Budget {
                    redirects: part.redirects,
                    max_redirects,
                    retries: part.retries,
                    max_retries,
                },
                private: part.private,
                may_reread: part.read_at.is_some() && !part.reread,
                may_load_script: script_body.is_some(),
                may_hold: self.client.config.failover_hold.is_some()
                    && !part.private
                    && part.node.is_none()
                    && part.hold_until.is_none_or(|until| !until.passed()),
                read_only: self
                    .ctx
                    .table
                    .spec_of(part.command)
                    .is_some_and(|s| s.has(crate::command::flags::READONLY)),
                // A session blocks on one private connection at a time.
                node_left: part.private && self.privates.iter().any(|p| p.is_retired()),
            };
            let mut step = next_step(outcome, facts);
            if step == PartAction::ReadElsewhere {
                // A read a read policy placed, that failed where it went: sent once more, to
                // the next candidate, if its shard has one.
                let next = super::read_target(
                    &mut self.topo,
                    &self.client.config,
                    self.client.id,
                    part.slot,
                    part.read_at,
                );
                if let Some(t) = next {
                    part.reread = true;
                    part.read_at = Some(t.at);
                    self.ctx.stats.reads_retried.fetch_add(1, Ordering::Relaxed);
                    self.ctx.stats.count_read(t.placement, t.skipped);
                    if let Err(e) = &r.result
                        && e.suggests_refresh()
                    {
                        self.ctx.topology.request_refresh(None);
                    }
                    let (node, frame, via) = (t.node.clone(), part.request.clone(), Via::of(part));
                    return self.send_to(&node, r.tag, frame, false, via);
                }
                facts.may_reread = false;
                step = next_step(outcome, facts);
            }
            if step != PartAction::Deliver || part.redirects > 0 {
                let reply = match outcome {
                    Outcome::Reply(reply) => String::from_utf8_lossy(reply),
                    Outcome::Failed { .. } => "(connection failed)".into(),
                };
                debug!(redirects = part.redirects, ?step, reply = %reply.trim_end(), "redirect");
            }
            let via = Via::of(part);
            action = match step {
                PartAction::Deliver | PartAction::ReadElsewhere => delivered(&self.ctx, r.result),
                PartAction::LoadScript => {
                    // Load the script on the node that answered (where the last redirect, if
                    // any, sent the part) and run the EVALSHA again there, once.
                    part.script_loaded = true;
                    part.redirects += 1;
                    let node = part.node.clone().or_else(|| {
                        crate::router::node_for(self.topo.load(), part.slot, self.client.id)
                            .cloned()
                    });
                    match (node, script_body) {
                        (Some(node), Some(body)) => {
                            let load = Request::from_args(&[&b"SCRIPT"[..], b"LOAD", &body]);
                            let mut frame = BytesMut::from(&load.raw()[..]);
                            if part.asking {
                                frame.extend_from_slice(ASKING);
                            }
                            frame.extend_from_slice(&part.request);
                            let via = Via {
                                skip: part.skip + 1 + u32::from(part.asking),
                                ..via
                            };
                            Action::Resend {
                                tag: r.tag,
                                node,
                                frame: frame.freeze(),
                                asking: false,
                                via,
                            }
                        }
                        _ => Action::Deliver(r.result.unwrap_or_default()),
                    }
                }
                PartAction::FollowMoved {
                    slot,
                    addr,
                    backoff,
                } => {
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
                    if backoff {
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
                PartAction::FollowAsk { addr } => {
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
                PartAction::SendAgain => {
                    let topo = self.ctx.topology.load_full();
                    match crate::router::node_for(&topo, part.slot, self.client.id) {
                        Some(node) => {
                            part.redirects += 1;
                            Action::Resend {
                                tag: r.tag,
                                node: node.clone(),
                                frame: part.request.clone(),
                                asking: false,
                                via,
                            }
                        }
                        None => delivered(&self.ctx, r.result),
                    }
                }
                PartAction::Rediscover => {
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
                PartAction::Hold => {
                    self.ctx
                        .stats
                        .failover_holds
                        .fetch_add(1, Ordering::Relaxed);
                    let now = tokio::time::Instant::now();
                    let hold = self.client.config.failover_hold.unwrap_or_default();
                    let until = part
                        .hold_until
                        .get_or_insert_with(|| Deadline::after(hold))
                        .instant();
                    let held_for = hold.saturating_sub(until.saturating_duration_since(now));
                    // The master that failed it: the one the error names, else the slot's.
                    let from = match &r.result {
                        Err(e) => e.node().cloned(),
                        Ok(_) => {
                            crate::router::node_for(self.topo.load(), part.slot, self.client.id)
                                .map(|n| n.addr().clone())
                        }
                    };
                    // A master that answered (CLUSTERDOWN, LOADING) is asked again after a
                    // pause; one that is down, as soon as the topology offers a master.
                    let not_before = if r.result.is_ok() {
                        now + reply_hold_pause(held_for)
                    } else {
                        now
                    };
                    let charge = part.request.len() + PART_OVERHEAD;
                    if !self.ctx.hold_budget.admit(from.as_ref(), charge) {
                        let refused = self.ctx.hold_budget.refused.load(Ordering::Relaxed);
                        if refused.is_power_of_two() {
                            warn!(
                                shard = ?from.as_ref().map(|a| a.to_string()),
                                refused,
                                "the failover hold of this shard is full (clients.failover_hold_max_bytes): failing requests at once"
                            );
                        }
                        delivered(&self.ctx, r.result)
                    } else {
                        Action::Hold(Box::new(Held {
                            tag: r.tag,
                            slot: part.slot,
                            frame: part.request.clone(),
                            dialect: part.dialect,
                            skip: part.skip,
                            from,
                            not_before,
                            until,
                            failure: r.result,
                            charge,
                        }))
                    }
                }
                PartAction::RetryLater => {
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
            Action::Hold(held) => self.hold(held),
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
                let delay = (self.client.config.tryagain_delay
                    * 2u32.saturating_pow(u32::from(attempt.saturating_sub(1).min(6))))
                .min(MAX_RETRY_DELAY);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    node.send(dialect, id, BackendRequest::new(frame, ReplyTo { tx, tag }));
                });
            }
        }
    }

    /// Holds `held` behind the session's parts already held, starting a hold when none runs.
    fn hold(&mut self, held: Box<Held>) {
        let held = match &self.hold {
            Some(hold) => match hold.push(held) {
                Ok(()) => return,
                Err(back) => back,
            },
            None => held,
        };
        self.hold = Some(Hold::start(
            held,
            self.ctx.clone(),
            self.client.id,
            self.tx.clone(),
        ));
    }

    /// While a hold runs: queues a new part for `slot` behind the parts held for that slot, so
    /// that it does not overtake them; false when none is held for it (the part goes as usual).
    pub(super) fn queue_behind_hold(
        &mut self,
        tag: u64,
        frame: &Bytes,
        slot: Option<u16>,
        via: Via,
    ) -> bool {
        let Some(hold) = &self.hold else {
            return false;
        };
        let until = self.client.config.failover_hold.unwrap_or_default();
        let behind = hold.queue_behind(slot, || {
            let now = tokio::time::Instant::now();
            Held {
                tag,
                slot,
                frame: frame.clone(),
                dialect: via.dialect,
                skip: via.skip,
                from: None,
                not_before: now,
                until: now + until,
                failure: Err(BackendError::NoMaster),
                charge: 0,
            }
        });
        match behind {
            Behind::Queued => true,
            Behind::SlotFree => false,
            Behind::Done => {
                self.hold = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::reply_hold_pause;

    #[test]
    fn should_ask_a_master_that_said_clusterdown_again_soon_then_less_often() {
        let ms = Duration::from_millis;
        // First held: soon, for the moments every master says CLUSTERDOWN around a promotion.
        assert_eq!(reply_hold_pause(ms(0)), ms(10));
        assert_eq!(reply_hold_pause(ms(20)), ms(10));
        // Then half the time held so far...
        assert_eq!(reply_hold_pause(ms(60)), ms(30));
        // ...and never less often than ten times a second.
        assert_eq!(reply_hold_pause(ms(5_000)), ms(100));
    }
}
