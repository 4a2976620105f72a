//! What a reply means for the part of a request that got it: MOVED, ASK, TRYAGAIN, READONLY,
//! NOSCRIPT for a script slotgate holds, a read a read policy placed that failed where it went.
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
}

/// How a part came back from its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'r> {
    /// The node's reply, whole.
    Reply(&'r [u8]),
    /// No reply: the connection failed. `node_failed` when the node itself failed the request
    /// (down, overloaded, lost, timed out, malformed), not slotgate's own limits.
    Failed { node_failed: bool },
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
        Outcome::Failed { node_failed } if node_failed && facts.may_reread => {
            return PartAction::ReadElsewhere;
        }
        Outcome::Failed { .. } => return PartAction::Deliver,
        Outcome::Reply(reply) => reply,
    };
    if reply.first() != Some(&b'-') {
        return PartAction::Deliver;
    }
    if facts.may_reread && replica_could_not_serve(reply) {
        return PartAction::ReadElsewhere;
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
        let failed = Outcome::Failed { node_failed: true };
        assert_eq!(next_step(failed, read(b(0, 0))), PartAction::ReadElsewhere);
    }

    #[test]
    fn should_deliver_a_failure_of_a_write_or_of_a_read_tried_twice() {
        let failed = Outcome::Failed { node_failed: true };
        assert_eq!(next_step(failed, b(0, 0)), PartAction::Deliver);
    }

    #[test]
    fn should_deliver_a_failure_of_slotgates_own_limits() {
        let failed = Outcome::Failed { node_failed: false };
        assert_eq!(next_step(failed, read(b(0, 0))), PartAction::Deliver);
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
