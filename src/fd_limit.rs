//! The open-files limit slotgate needs for `max_clients`, raised at start as Redis raises its
//! own (`adjustOpenFilesLimit`): the soft limit goes up to `max_clients` plus a reserve for
//! backend connections, listeners and files, within the hard limit; when even the hard limit
//! is too low, `max_clients` is lowered to what fits, with Redis' warning. Otherwise a client
//! past the limit would meet `accept` failing instead of Redis' "max number of clients"
//! error, and a backend connection could fail for want of a descriptor.
//!
//! The decision is the pure [`plan`]; this module must never lower a limit, nor leave
//! `max_clients` above what the descriptors allow.

use tracing::{info, warn};

/// Descriptors kept for what is not a client: backend connections (shared, private, warm,
/// control), listeners, the admin endpoint, log and certificate files.
pub const RESERVED_FDS: u64 = 256;

/// What to do with the open-files limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set, when it must rise.
    pub raise_to: Option<u64>,
    /// The clients that fit in the limit slotgate will have.
    pub max_clients: usize,
}

/// The plan for `max_clients`, given the soft and hard limits (`None`: unlimited).
pub fn plan(soft: Option<u64>, hard: Option<u64>, max_clients: usize) -> Plan {
    let want = (max_clients as u64).saturating_add(RESERVED_FDS);
    let soft_now = soft.unwrap_or(u64::MAX);
    if soft_now >= want {
        return Plan {
            raise_to: None,
            max_clients,
        };
    }
    let reachable = hard.unwrap_or(u64::MAX).min(want);
    let limit = reachable.max(soft_now);
    let fits = usize::try_from(limit.saturating_sub(RESERVED_FDS))
        .unwrap_or(usize::MAX)
        .clamp(1, max_clients);
    Plan {
        raise_to: (limit > soft_now).then_some(limit),
        max_clients: fits,
    }
}

/// Raises the process' open-files limit for `max_clients`; the clients that fit (fewer than
/// asked only when the hard limit is too low, with a warning saying so).
pub fn adjust(max_clients: usize) -> usize {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let mut p = plan(now.current, now.maximum, max_clients);
    if let Some(to) = p.raise_to {
        let new = Rlimit {
            current: Some(to),
            maximum: now.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => info!(
                open_files = to,
                "raised the open files limit for max_clients"
            ),
            Err(e) => {
                warn!(error = %e, wanted = to, "cannot raise the open files limit");
                p = plan(now.current, now.current, max_clients);
            }
        }
    }
    if p.max_clients < max_clients {
        warn!(
            requested = max_clients,
            max_clients = p.max_clients,
            open_files = now
                .maximum
                .unwrap_or(u64::MAX)
                .max(now.current.unwrap_or(0)),
            "max_clients has been reduced to compensate for a low open files limit; if you need more, raise 'ulimit -n'"
        );
    }
    p.max_clients
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soft_limit_that_suffices_is_left_alone() {
        assert_eq!(
            plan(Some(20_000), Some(20_000), 10_000),
            Plan {
                raise_to: None,
                max_clients: 10_000
            }
        );
        assert_eq!(plan(None, None, 10_000).raise_to, None);
    }

    #[test]
    fn a_low_soft_limit_rises_to_what_the_clients_need() {
        assert_eq!(
            plan(Some(1024), Some(1 << 20), 10_000),
            Plan {
                raise_to: Some(10_000 + RESERVED_FDS),
                max_clients: 10_000
            }
        );
        assert_eq!(
            plan(Some(1024), None, 10_000).raise_to,
            Some(10_000 + RESERVED_FDS)
        );
    }

    #[test]
    fn a_low_hard_limit_lowers_max_clients_to_what_fits() {
        assert_eq!(
            plan(Some(1024), Some(4096), 10_000),
            Plan {
                raise_to: Some(4096),
                max_clients: 4096 - RESERVED_FDS as usize
            }
        );
        // Even the soft limit is the most there is.
        assert_eq!(
            plan(Some(1024), Some(1024), 10_000),
            Plan {
                raise_to: None,
                max_clients: 1024 - RESERVED_FDS as usize
            }
        );
    }

    #[test]
    fn a_limit_below_the_reserve_still_lets_one_client_in() {
        assert_eq!(plan(Some(64), Some(64), 10_000).max_clients, 1);
    }
}
