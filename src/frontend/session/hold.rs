//! The failover hold: parts of a session's requests that their master failed without running
//! them (the node down or paused for a Sentinel failover, no master known, `CLUSTERDOWN`,
//! `LOADING`; a read whose connection broke) wait here, in the order they failed, until a master for their slot is reachable,
//! and are then sent there; when `failover_hold_ms` has passed since a part first failed, the
//! failure it came back with is delivered. Requests the session sends meanwhile for a slot
//! that has parts held queue behind them, so a client's writes to one key run in its order.
//!
//! One task per session with held parts releases them; it polls the topology (asking for
//! refreshes while a master is missing) and ends when nothing is held. What is held is bounded
//! by the session's own pipeline limit: a session never has more parts outstanding. The hold
//! must never send a part that may have run (a write the node may have received is not held),
//! and never let a later part of a slot leave before an earlier one.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::backend::{BackendReply, BackendRequest, Dialect, NodeAddr, ReplyTo};
use crate::error::BackendError;
use crate::frontend::Context;
use crate::mailbox;

/// A moment on the hold's clock: milliseconds since the first hold of the process, wrapping
/// after 49 days (compared by wrapping difference, so a hold shorter than 24 days is judged
/// right across the wrap). Small, so that a part can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Deadline(u32);

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl Deadline {
    /// `after` from now.
    pub(super) fn after(after: Duration) -> Deadline {
        Deadline(Self::now_ms().wrapping_add(after.as_millis() as u32))
    }

    /// Whether the moment has come.
    pub(super) fn passed(self) -> bool {
        (self.0.wrapping_sub(Self::now_ms()) as i32) <= 0
    }

    /// The moment as an instant.
    pub(super) fn instant(self) -> Instant {
        let left = self.0.wrapping_sub(Self::now_ms()) as i32;
        Instant::now() + Duration::from_millis(left.max(0) as u64)
    }

    fn now_ms() -> u32 {
        let epoch = *EPOCH.get_or_init(Instant::now);
        epoch.elapsed().as_millis() as u32
    }
}

/// How often the release task looks at the topology.
const POLL: Duration = Duration::from_millis(10);

/// One part waiting for a master.
#[derive(Debug)]
pub(super) struct Held {
    /// The part's tag in the session's replies.
    pub(super) tag: u64,
    pub(super) slot: Option<u16>,
    pub(super) frame: Bytes,
    pub(super) dialect: Dialect,
    pub(super) skip: u32,
    /// The master that failed it; `None` for a part queued behind held ones without failing.
    pub(super) from: Option<NodeAddr>,
    /// Not sent before this (a master that answered CLUSTERDOWN is not asked again at once).
    pub(super) not_before: Instant,
    /// When the hold gives up on it.
    pub(super) until: Instant,
    /// What it came back with, delivered when the hold gives up.
    pub(super) failure: Result<Bytes, BackendError>,
    /// What it is charged to its shard's hold budget (0 for a part queued behind).
    pub(super) charge: usize,
}

/// What to do with the oldest held part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Release {
    /// Its slot has a master it may go to: send it there.
    Send,
    /// Out of time with no master to go to: deliver its failure.
    GiveUp,
    /// Wait for the topology (it and every part behind it).
    Wait,
}

/// The decision for a held part: `target` is its slot's master now (its address and whether
/// its connections are up). A part goes to a master other than the one that failed it (a
/// promoted replica), or to the same one once it is up again (a restart); a part that never
/// failed goes to whatever master its slot has, as any request would.
pub(super) fn release(
    from: Option<&NodeAddr>,
    target: Option<(&NodeAddr, bool)>,
    (not_before, until): (Instant, Instant),
    now: Instant,
) -> Release {
    if now < not_before {
        return Release::Wait;
    }
    match (target, from) {
        (Some((to, up)), Some(from)) if to != from || up => Release::Send,
        (Some(_), None) => Release::Send,
        _ if now >= until => Release::GiveUp,
        _ => Release::Wait,
    }
}

/// What [`Hold::queue_behind`] did with a new part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Behind {
    /// Queued behind its slot's held parts.
    Queued,
    /// Nothing is held for its slot: it goes as usual.
    SlotFree,
    /// The hold has ended: it goes as usual, and the session lets the hold go.
    Done,
}

/// A session's held parts, shared with the task releasing them.
#[derive(Debug, Default)]
pub(super) struct Hold {
    state: Mutex<HoldState>,
}

#[derive(Debug, Default)]
struct HoldState {
    parts: VecDeque<Box<Held>>,
    /// The release task has ended: a new hold starts a new one.
    done: bool,
}

impl Hold {
    /// Adds `held` behind the parts already held; hands it back when the release task has
    /// ended (the session then starts a new hold).
    pub(super) fn push(&self, held: Box<Held>) -> Result<(), Box<Held>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            return Err(held);
        }
        s.parts.push_back(held);
        Ok(())
    }

    /// Queues the part `make` builds behind the parts held for `slot`, when there are any: a
    /// new request for a held slot must not overtake them. `Behind::Done` once the release
    /// task has ended (nothing is held any more).
    pub(super) fn queue_behind(&self, slot: Option<u16>, make: impl FnOnce() -> Held) -> Behind {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.done {
            return Behind::Done;
        }
        if !s.parts.iter().any(|h| h.slot == slot) {
            return Behind::SlotFree;
        }
        s.parts.push_back(Box::new(make()));
        Behind::Queued
    }

    /// Starts a hold with `first`, and the task releasing it on the current runtime.
    pub(super) fn start(
        first: Box<Held>,
        ctx: Arc<Context>,
        session: u64,
        tx: mailbox::Sender<BackendReply>,
    ) -> Arc<Hold> {
        let hold = Arc::new(Hold::default());
        hold.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .parts
            .push_back(first);
        tokio::spawn(run(hold.clone(), ctx, session, tx));
        hold
    }
}

/// The release task: every `POLL`, sends or gives up on held parts from the oldest on, and
/// stops at the first that must wait.
async fn run(hold: Arc<Hold>, ctx: Arc<Context>, session: u64, tx: mailbox::Sender<BackendReply>) {
    let topology = &ctx.topology;
    loop {
        tokio::time::sleep(POLL).await;
        let topo = topology.load_full();
        let now = Instant::now();
        let waiting = {
            let mut s = hold.state.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(front) = s.parts.front() {
                let node = crate::router::node_for(&topo, front.slot, session);
                let target = node.map(|n| (n.addr(), n.is_up()));
                let window = (front.not_before, front.until);
                let decision = release(front.from.as_ref(), target, window, now);
                if decision == Release::Wait {
                    break;
                }
                let Some(h) = s.parts.pop_front() else { break };
                ctx.hold_budget.release(h.from.as_ref(), h.charge);
                let reply_to = ReplyTo {
                    tx: tx.clone(),
                    tag: h.tag,
                };
                match (decision, node) {
                    (Release::Send, Some(node)) => {
                        let mut req = BackendRequest::new(h.frame, reply_to);
                        req.skip = h.skip;
                        node.send(h.dialect, session, req);
                    }
                    _ => {
                        ctx.stats
                            .failover_holds_expired
                            .fetch_add(1, Ordering::Relaxed);
                        reply_to.send(h.failure);
                    }
                }
            }
            if s.parts.is_empty() {
                s.done = true;
                return;
            }
            true
        };
        if waiting {
            // A master is missing or down: look again (the refresher debounces).
            topology.request_refresh(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> NodeAddr {
        NodeAddr::tcp(s).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn should_tell_a_deadline_to_come_from_one_passed() {
        assert!(!Deadline::after(Duration::from_secs(60)).passed());
        assert!(Deadline::after(Duration::ZERO).passed());
        let d = Deadline::after(Duration::from_secs(60)).instant();
        assert!(d > Instant::now() + Duration::from_secs(59));
    }

    #[test]
    fn should_send_to_a_promoted_master() {
        let (old, new, now) = (addr("a:1"), addr("b:1"), Instant::now());
        let later = now + Duration::from_secs(1);
        assert_eq!(
            release(Some(&old), Some((&new, false)), (now, later), now),
            Release::Send
        );
    }

    #[test]
    fn should_send_to_the_same_master_once_it_is_up_again() {
        let (old, now) = (addr("a:1"), Instant::now());
        let later = now + Duration::from_secs(1);
        assert_eq!(
            release(Some(&old), Some((&old, true)), (now, later), now),
            Release::Send
        );
        assert_eq!(
            release(Some(&old), Some((&old, false)), (now, later), now),
            Release::Wait
        );
    }

    #[test]
    fn should_wait_without_a_master_and_give_up_when_out_of_time() {
        let (old, now) = (addr("a:1"), Instant::now());
        let later = now + Duration::from_secs(1);
        assert_eq!(release(Some(&old), None, (now, later), now), Release::Wait);
        assert_eq!(release(Some(&old), None, (now, now), now), Release::GiveUp);
        assert_eq!(
            release(Some(&old), Some((&old, false)), (now, now), now),
            Release::GiveUp
        );
    }

    #[test]
    fn should_wait_out_the_pause_after_a_master_answered() {
        let (old, now) = (addr("a:1"), Instant::now());
        let pause = now + Duration::from_millis(100);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            release(Some(&old), Some((&old, true)), (pause, later), now),
            Release::Wait
        );
        assert_eq!(
            release(Some(&old), Some((&old, true)), (pause, later), pause),
            Release::Send
        );
    }

    #[test]
    fn should_send_a_part_queued_behind_to_whatever_master_its_slot_has() {
        let (old, now) = (addr("a:1"), Instant::now());
        assert_eq!(
            release(None, Some((&old, false)), (now, now), now),
            Release::Send
        );
        assert_eq!(release(None, None, (now, now), now), Release::GiveUp);
    }
}
