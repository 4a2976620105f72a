//! What a reply means for the part of a request that got it: MOVED, ASK, TRYAGAIN, READONLY,
//! NOSCRIPT for a script slotgate holds, a read a read policy placed that failed where it went,
//! and a failover hold for a part its master failed without running it.
//!
//! [`next_step`] reads the reply's first line only and returns the complete action; the session
//! carries it out. It must never follow a redirect more times than the budget it is given, nor
//! send a write anywhere a second time after a failure.

use crate::backend::NodeAddr;

/// A redirect parsed from an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED <slot> <host:port>`: the slot lives elsewhere for good.
    Moved { slot: u16, addr: NodeAddr },
    /// `-ASK <slot> <host:port>`: ask that node once, with `ASKING` first.
    Ask { slot: u16, addr: NodeAddr },
    /// `-TRYAGAIN ...`: a multi-key request during resharding; retry later.
    TryAgain,
    /// `-READONLY ...`: a write reached a node that is a replica now (a demoted master). The
    /// write did not run; learn the new master and send it there.
    ReadOnly,
}

/// Parses the redirect in an error reply's bytes (`-MOVED 3999 127.0.0.1:6381\r\n`).
pub fn parse(reply: &[u8]) -> Option<Redirect> {
    let line = reply.strip_prefix(b"-")?;
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    if line.starts_with(b"TRYAGAIN") {
        return Some(Redirect::TryAgain);
    }
    if line.starts_with(b"READONLY ") {
        return Some(Redirect::ReadOnly);
    }
    let (moved, rest) = if let Some(r) = line.strip_prefix(b"MOVED ") {
        (true, r)
    } else if let Some(r) = line.strip_prefix(b"ASK ") {
        (false, r)
    } else {
        return None;
    };
    let rest = std::str::from_utf8(rest).ok()?;
    let (slot, addr) = rest.split_once(' ')?;
    let slot: u16 = slot
        .parse()
        .ok()
        .filter(|&s: &u16| (s as usize) < super::SLOTS)?;
    // A node reports TCP addresses only; anything else is no redirect slotgate can follow.
    let addr = NodeAddr::tcp(addr).ok()?;
    Some(if moved {
        Redirect::Moved { slot, addr }
    } else {
        Redirect::Ask { slot, addr }
    })
}

/// How many redirects a request has followed, and the most it may follow. MOVED/ASK and
/// TRYAGAIN have separate budgets: a slot being migrated can answer TRYAGAIN for as long as its
/// keys take to move, which says nothing about a redirect loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub redirects: u16,
    pub max_redirects: u16,
    pub retries: u16,
    pub max_retries: u16,
}

/// What the session knows of a part when its reply (or failure) comes back: everything the
/// decision depends on besides the reply itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartFacts {
    pub budget: Budget,
    /// Sent on the session's own connection (a blocking command, under WATCH): that connection
    /// is tied to the session, so a READONLY there is the client's to see.
    pub private: bool,
    /// A read a read policy placed, not yet sent a second time: a failure where it went is worth
    /// one try at the next candidate. Never true for a write.
    pub may_reread: bool,
    /// An EVALSHA whose script body slotgate holds, not yet repaired once: a NOSCRIPT is
    /// answered by loading the script on that node and running the EVALSHA again.
    pub may_load_script: bool,
    /// The part may wait for a new master (the failover hold): it goes to its slot's master on
    /// a shared connection, and its hold (when it had one) has time left.
    pub may_hold: bool,
    /// The command only reads: running it twice changes nothing.
    pub read_only: bool,
    /// Sent on a private connection to a node that has since left the topology: slotgate
    /// unblocked what was blocked there (a switch to other backends, a failover).
    pub node_left: bool,
}

/// How a request failed without a reply, as far as running it again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused before it was written: the node is known down (`node_failed`), or no master is
    /// known for it.
    Unsent { node_failed: bool },
    /// The node's queue is full: refused before it was written, and failed fast.
    Overloaded,
    /// The connection broke after the request may have been written.
    Lost,
    /// No reply in time, or a reply that is not RESP: the node may have run it.
    Late,
    /// One of slotgate's own limits (private connections per node).
    Limit,
}

impl Failure {
    /// The node failed the request, rather than slotgate's own limits or an empty topology: a
    /// read that failed this way is worth sending to another node.
    pub fn node_failed(self) -> bool {
        match self {
            Failure::Unsent { node_failed } => node_failed,
            Failure::Overloaded | Failure::Lost | Failure::Late => true,
            Failure::Limit => false,
        }
    }
}

/// How a part came back from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'r> {
    /// The node's reply, whole.
    Reply(&'r [u8]),
    /// No reply: the request failed, as the [`Failure`] says.
    Failed(Failure),
}

/// The complete action for a part after its reply: the session carries it out and decides
/// nothing more (it only finds the next read candidate, which needs the snapshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAction {
    /// Give the reply (or the failure as an error reply) to the client as it is.
    Deliver,
    /// Send the read to the next candidate of its shard, once. When there is none, the session
    /// asks again with `may_reread` false.
    ReadElsewhere,
    /// Load the script on the node that answered, then send the EVALSHA again there; counts as
    /// a redirect.
    LoadScript,
    /// Send again to the node named, patch the slot map, ask for a refresh. `backoff`: the part
    /// was redirected before (owners not converged yet, a SETSLOT NODE still propagating), so
    /// wait a moment before sending.
    FollowMoved {
        slot: u16,
        addr: NodeAddr,
        backoff: bool,
    },
    /// Send `ASKING` + the request to the node named, leave the map alone.
    FollowAsk { addr: NodeAddr },
    /// Wait, then send again to the same slot owner (TRYAGAIN).
    RetryLater,
    /// Ask for a topology refresh, then send again to whichever master the map names (READONLY:
    /// the write did not run).
    Rediscover,
    /// The master failed the part without running it (down, no master known, CLUSTERDOWN,
    /// LOADING), or it is a read whose connection broke: hold it until a master for its slot is
    /// reachable (a failover, a restart), then send it there, after the session's earlier held
    /// parts; when the hold's time is up, deliver what came back.
    Hold,
    /// A blocking command slotgate unblocked (`-UNBLOCKED`) because its node left the
    /// topology: it did not run; send it again, as it was, to its slot's master now.
    SendAgain,
}

/// Replies that say the master did not run the command and may serve it soon: the cluster is
/// down for its slot (a failover in progress), or a restarted master still loads its data.
fn master_not_serving_yet(reply: &[u8]) -> bool {
    reply.starts_with(b"-CLUSTERDOWN") || reply.starts_with(b"-LOADING")
}

/// Replies that say a replica could not serve a read: still loading its data set, or cut off
/// from its master with `replica-serve-stale-data no`.
fn replica_could_not_serve(reply: &[u8]) -> bool {
    reply.starts_with(b"-LOADING") || reply.starts_with(b"-MASTERDOWN")
}

/// Decides the complete action for a part that came back as `outcome`, given what is known of
/// it.
pub fn next_step(outcome: Outcome<'_>, facts: PartFacts) -> PartAction {
    let reply = match outcome {
        Outcome::Failed(f) if f.node_failed() && facts.may_reread => {
            return PartAction::ReadElsewhere;
        }
        // Never written, or a read whose connection broke: sending it again runs it once.
        Outcome::Failed(Failure::Unsent { .. }) if facts.may_hold => return PartAction::Hold,
        Outcome::Failed(Failure::Lost) if facts.may_hold && facts.read_only => {
            return PartAction::Hold;
        }
        Outcome::Failed(_) => return PartAction::Deliver,
        Outcome::Reply(reply) => reply,
    };
    if reply.first() != Some(&b'-') {
        return PartAction::Deliver;
    }
    if facts.node_left && reply.starts_with(b"-UNBLOCKED") {
        return PartAction::SendAgain;
    }
    if facts.may_reread && replica_could_not_serve(reply) {
        return PartAction::ReadElsewhere;
    }
    if facts.may_hold && master_not_serving_yet(reply) {
        return PartAction::Hold;
    }
    let budget = facts.budget;
    if facts.may_load_script
        && reply.starts_with(b"-NOSCRIPT")
        && budget.redirects < budget.max_redirects
    {
        return PartAction::LoadScript;
    }
    let Some(redirect) = parse(reply) else {
        return PartAction::Deliver;
    };
    match redirect {
        Redirect::TryAgain if budget.retries < budget.max_retries => PartAction::RetryLater,
        Redirect::TryAgain => PartAction::Deliver,
        // A demoted master: worth one retry after rediscovery, never a loop; on a private
        // connection the client's.
        Redirect::ReadOnly if budget.redirects == 0 && !facts.private => PartAction::Rediscover,
        Redirect::ReadOnly => PartAction::Deliver,
        _ if budget.redirects >= budget.max_redirects => PartAction::Deliver,
        Redirect::Moved { slot, addr } => PartAction::FollowMoved {
            slot,
            addr,
            backoff: budget.redirects > 0,
        },
        Redirect::Ask { addr, .. } => PartAction::FollowAsk { addr },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(redirects: u16, retries: u16) -> PartFacts {
        PartFacts {
            budget: Budget {
                redirects,
                max_redirects: 5,
                retries,
                max_retries: 5,
            },
            private: false,
            may_reread: false,
            may_load_script: false,
            may_hold: false,
            read_only: false,
            node_left: false,
        }
    }

    fn holdable(facts: PartFacts) -> PartFacts {
        PartFacts {
            may_hold: true,
            ..facts
        }
    }

    fn reply(r: &[u8], facts: PartFacts) -> PartAction {
        next_step(Outcome::Reply(r), facts)
    }

    fn read(facts: PartFacts) -> PartFacts {
        PartFacts {
            may_reread: true,
            ..facts
        }
    }

    #[test]
    fn should_follow_moved_and_patch_the_slot() {
        assert_eq!(
            reply(b"-MOVED 3999 127.0.0.1:6381\r\n", b(0, 0)),
            PartAction::FollowMoved {
                slot: 3999,
                addr: "127.0.0.1:6381".into(),
                backoff: false,
            }
        );
    }

    #[test]
    fn should_back_off_on_a_second_moved() {
        assert_eq!(
            reply(b"-MOVED 3999 127.0.0.1:6381\r\n", b(1, 0)),
            PartAction::FollowMoved {
                slot: 3999,
                addr: "127.0.0.1:6381".into(),
                backoff: true,
            }
        );
    }

    #[test]
    fn should_follow_ask_once_without_updating_the_map() {
        assert_eq!(
            reply(b"-ASK 1 10.0.0.1:7000\r\n", b(0, 0)),
            PartAction::FollowAsk {
                addr: "10.0.0.1:7000".into()
            }
        );
    }

    #[test]
    fn should_retry_later_on_tryagain() {
        assert_eq!(
            reply(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                b(1, 0)
            ),
            PartAction::RetryLater
        );
    }

    #[test]
    fn should_deliver_when_the_budget_is_spent() {
        assert_eq!(reply(b"-MOVED 1 a:1\r\n", b(5, 0)), PartAction::Deliver);
        assert_eq!(reply(b"-TRYAGAIN x\r\n", b(0, 5)), PartAction::Deliver);
    }

    #[test]
    fn should_rediscover_once_after_readonly() {
        let r = b"-READONLY You can't write against a read only replica.\r\n";
        assert_eq!(reply(r, b(0, 0)), PartAction::Rediscover);
        assert_eq!(reply(r, b(1, 0)), PartAction::Deliver);
    }

    #[test]
    fn should_deliver_readonly_on_a_private_connection() {
        let r = b"-READONLY You can't write against a read only replica.\r\n";
        let private = PartFacts {
            private: true,
            ..b(0, 0)
        };
        assert_eq!(reply(r, private), PartAction::Deliver);
    }

    #[test]
    fn should_keep_tryagain_and_redirect_budgets_apart() {
        assert_eq!(reply(b"-TRYAGAIN x\r\n", b(5, 0)), PartAction::RetryLater);
        assert_eq!(
            reply(b"-ASK 1 a:1\r\n", b(0, 5)),
            PartAction::FollowAsk { addr: "a:1".into() }
        );
    }

    #[test]
    fn should_deliver_clusterdown_and_other_errors() {
        let down = b"-CLUSTERDOWN The cluster is down\r\n";
        assert_eq!(reply(down, b(0, 0)), PartAction::Deliver);
        assert_eq!(reply(b"-ERR wrong\r\n", b(0, 0)), PartAction::Deliver);
        assert_eq!(reply(b"+OK\r\n", b(0, 0)), PartAction::Deliver);
        assert_eq!(reply(b"+OK\r\n", read(b(0, 0))), PartAction::Deliver);
    }

    #[test]
    fn should_deliver_malformed_redirects() {
        assert_eq!(reply(b"-MOVED 99999 a:1\r\n", b(0, 0)), PartAction::Deliver);
        assert_eq!(reply(b"-MOVED x a:1\r\n", b(0, 0)), PartAction::Deliver);
        assert_eq!(reply(b"-MOVED 1\r\n", b(0, 0)), PartAction::Deliver);
    }

    #[test]
    fn should_read_elsewhere_after_a_node_failure_of_a_placed_read() {
        let failed = Outcome::Failed(Failure::Lost);
        assert_eq!(next_step(failed, read(b(0, 0))), PartAction::ReadElsewhere);
        // Before any hold: the next replica is tried first.
        let down = Outcome::Failed(Failure::Unsent { node_failed: true });
        assert_eq!(
            next_step(down, holdable(read(b(0, 0)))),
            PartAction::ReadElsewhere
        );
    }

    #[test]
    fn should_deliver_a_failure_of_a_write_or_of_a_read_tried_twice() {
        let failed = Outcome::Failed(Failure::Lost);
        assert_eq!(next_step(failed, b(0, 0)), PartAction::Deliver);
        let late = Outcome::Failed(Failure::Late);
        assert_eq!(next_step(late, b(0, 0)), PartAction::Deliver);
    }

    #[test]
    fn should_deliver_a_failure_of_slotgates_own_limits() {
        let failed = Outcome::Failed(Failure::Limit);
        assert_eq!(next_step(failed, read(b(0, 0))), PartAction::Deliver);
        assert_eq!(next_step(failed, holdable(b(0, 0))), PartAction::Deliver);
    }

    #[test]
    fn should_hold_a_part_never_sent_to_a_down_master_or_for_want_of_one() {
        for node_failed in [true, false] {
            let unsent = Outcome::Failed(Failure::Unsent { node_failed });
            assert_eq!(next_step(unsent, holdable(b(0, 0))), PartAction::Hold);
            // Out of hold time (or not holdable): the failure is the client's.
            assert_eq!(next_step(unsent, b(0, 0)), PartAction::Deliver);
        }
    }

    #[test]
    fn should_send_again_a_command_unblocked_because_its_node_left() {
        let unblocked = Outcome::Reply(b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n");
        let left = PartFacts {
            node_left: true,
            private: true,
            ..b(0, 0)
        };
        assert_eq!(next_step(unblocked, left), PartAction::SendAgain);
        // Unblocked by a client's own CLIENT UNBLOCK: the client's to see.
        let here = PartFacts {
            private: true,
            ..b(0, 0)
        };
        assert_eq!(next_step(unblocked, here), PartAction::Deliver);
        let other = Outcome::Reply(b"-ERR other\r\n");
        assert_eq!(next_step(other, left), PartAction::Deliver);
    }

    #[test]
    fn should_hold_a_read_whose_connection_broke_but_never_a_write() {
        let lost = Outcome::Failed(Failure::Lost);
        let read_only = PartFacts {
            read_only: true,
            ..holdable(b(0, 0))
        };
        assert_eq!(next_step(lost, read_only), PartAction::Hold);
        assert_eq!(next_step(lost, holdable(b(0, 0))), PartAction::Deliver);
    }

    #[test]
    fn should_deliver_a_late_reply_and_a_full_queue_without_holding() {
        let read_only = PartFacts {
            read_only: true,
            ..holdable(b(0, 0))
        };
        for f in [Failure::Late, Failure::Overloaded] {
            assert_eq!(
                next_step(Outcome::Failed(f), read_only),
                PartAction::Deliver
            );
        }
    }

    #[test]
    fn should_hold_clusterdown_and_loading_from_a_master() {
        let down = b"-CLUSTERDOWN The cluster is down\r\n";
        let loading = b"-LOADING Redis is loading the dataset in memory\r\n";
        assert_eq!(reply(down, holdable(b(0, 0))), PartAction::Hold);
        assert_eq!(reply(loading, holdable(b(0, 0))), PartAction::Hold);
        assert_eq!(
            reply(b"-ERR wrong\r\n", holdable(b(0, 0))),
            PartAction::Deliver
        );
    }

    #[test]
    fn should_read_elsewhere_when_a_replica_is_loading_or_cut_off() {
        let loading = b"-LOADING Redis is loading the dataset in memory\r\n";
        let masterdown = b"-MASTERDOWN Link with MASTER is down\r\n";
        assert_eq!(reply(loading, read(b(0, 0))), PartAction::ReadElsewhere);
        assert_eq!(reply(masterdown, read(b(0, 0))), PartAction::ReadElsewhere);
        assert_eq!(reply(loading, b(0, 0)), PartAction::Deliver);
    }

    #[test]
    fn should_follow_a_moved_from_a_replica() {
        assert!(matches!(
            reply(b"-MOVED 7 a:1\r\n", read(b(0, 0))),
            PartAction::FollowMoved { slot: 7, .. }
        ));
    }

    #[test]
    fn should_load_a_known_script_once_within_the_budget() {
        let noscript = b"-NOSCRIPT No matching script. Please use EVAL.\r\n";
        let known = PartFacts {
            may_load_script: true,
            ..b(0, 0)
        };
        assert_eq!(reply(noscript, known), PartAction::LoadScript);
        assert_eq!(reply(noscript, b(0, 0)), PartAction::Deliver);
        let spent = PartFacts {
            may_load_script: true,
            ..b(5, 0)
        };
        assert_eq!(reply(noscript, spent), PartAction::Deliver);
    }
}
