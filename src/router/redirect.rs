//! What a MOVED, ASK, TRYAGAIN or CLUSTERDOWN error reply means for the request that got it.
//!
//! `decide` reads the reply's first line only and returns an enum; the session acts on it.
//! It must never follow a redirect more times than the budget it is given.

/// A redirect parsed from an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED <slot> <host:port>`: the slot lives elsewhere for good.
    Moved { slot: u16, addr: String },
    /// `-ASK <slot> <host:port>`: ask that node once, with `ASKING` first.
    Ask { slot: u16, addr: String },
    /// `-TRYAGAIN ...`: a multi-key request during resharding; retry later.
    TryAgain,
    /// `-READONLY ...`: a write reached a node that is a replica now (a demoted master). The
    /// write did not run; learn the new master and send it there.
    ReadOnly,
}

/// What the session does with a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectDecision {
    /// Not a redirect, or the budget is spent: hand the reply to the client as it is.
    Deliver,
    /// Send again to the node named, patch the slot map, ask for a refresh.
    FollowMoved { slot: u16, addr: String },
    /// Send `ASKING` + the request to the node named, leave the map alone.
    FollowAsk { addr: String },
    /// Wait, then send again to the same slot owner.
    RetryLater,
    /// Ask for a topology refresh, then send again to whichever master the map names.
    Rediscover,
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
    if addr.is_empty() || addr.contains(' ') {
        return None;
    }
    let addr = addr.to_string();
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
    pub redirects: u32,
    pub max_redirects: u32,
    pub retries: u32,
    pub max_retries: u32,
}

/// Decides what to do with `reply`, given the request's redirect budget.
pub fn decide(reply: &[u8], budget: Budget) -> RedirectDecision {
    if reply.first() != Some(&b'-') {
        return RedirectDecision::Deliver;
    }
    let Some(redirect) = parse(reply) else {
        return RedirectDecision::Deliver;
    };
    match redirect {
        Redirect::TryAgain if budget.retries < budget.max_retries => RedirectDecision::RetryLater,
        Redirect::TryAgain => RedirectDecision::Deliver,
        // A demoted master: worth one retry after rediscovery, never a loop.
        Redirect::ReadOnly if budget.redirects == 0 => RedirectDecision::Rediscover,
        Redirect::ReadOnly => RedirectDecision::Deliver,
        _ if budget.redirects >= budget.max_redirects => RedirectDecision::Deliver,
        Redirect::Moved { slot, addr } => RedirectDecision::FollowMoved { slot, addr },
        Redirect::Ask { addr, .. } => RedirectDecision::FollowAsk { addr },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(redirects: u32, retries: u32) -> Budget {
        Budget {
            redirects,
            max_redirects: 5,
            retries,
            max_retries: 5,
        }
    }

    #[test]
    fn should_follow_moved_and_patch_the_slot() {
        assert_eq!(
            decide(b"-MOVED 3999 127.0.0.1:6381\r\n", b(0, 0)),
            RedirectDecision::FollowMoved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            }
        );
    }

    #[test]
    fn should_follow_ask_once_without_updating_the_map() {
        assert_eq!(
            decide(b"-ASK 1 10.0.0.1:7000\r\n", b(0, 0)),
            RedirectDecision::FollowAsk {
                addr: "10.0.0.1:7000".into()
            }
        );
    }

    #[test]
    fn should_retry_later_on_tryagain() {
        assert_eq!(
            decide(
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                b(1, 0)
            ),
            RedirectDecision::RetryLater
        );
    }

    #[test]
    fn should_deliver_when_the_budget_is_spent() {
        assert_eq!(
            decide(b"-MOVED 1 a:1\r\n", b(5, 0)),
            RedirectDecision::Deliver
        );
        assert_eq!(
            decide(b"-TRYAGAIN x\r\n", b(0, 5)),
            RedirectDecision::Deliver
        );
    }

    #[test]
    fn should_rediscover_once_after_readonly() {
        let reply = b"-READONLY You can't write against a read only replica.\r\n";
        assert_eq!(decide(reply, b(0, 0)), RedirectDecision::Rediscover);
        assert_eq!(decide(reply, b(1, 0)), RedirectDecision::Deliver);
    }

    #[test]
    fn should_keep_tryagain_and_redirect_budgets_apart() {
        assert_eq!(
            decide(b"-TRYAGAIN x\r\n", b(5, 0)),
            RedirectDecision::RetryLater
        );
        assert_eq!(
            decide(b"-ASK 1 a:1\r\n", b(0, 5)),
            RedirectDecision::FollowAsk { addr: "a:1".into() }
        );
    }

    #[test]
    fn should_deliver_clusterdown_and_other_errors() {
        assert_eq!(
            decide(b"-CLUSTERDOWN The cluster is down\r\n", b(0, 0)),
            RedirectDecision::Deliver
        );
        assert_eq!(
            decide(b"-ERR wrong\r\n", b(0, 0)),
            RedirectDecision::Deliver
        );
        assert_eq!(decide(b"+OK\r\n", b(0, 0)), RedirectDecision::Deliver);
    }

    #[test]
    fn should_deliver_malformed_redirects() {
        assert_eq!(
            decide(b"-MOVED 99999 a:1\r\n", b(0, 0)),
            RedirectDecision::Deliver
        );
        assert_eq!(
            decide(b"-MOVED x a:1\r\n", b(0, 0)),
            RedirectDecision::Deliver
        );
        assert_eq!(decide(b"-MOVED 1\r\n", b(0, 0)), RedirectDecision::Deliver);
    }
}
