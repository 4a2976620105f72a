//! The memory the failover hold may take per shard (`clients.failover_hold_max_bytes`): every
//! part a master failed into the hold is charged, with its frame, to that master (the shard that
//! failed it) until it leaves the hold, sent or given up; a part that would take a shard past
//! its limit is not held but fails at once with the error it came back with. One dead shard
//! under many clients therefore holds a bounded amount, and the other shards' requests are never
//! refused for it.
//!
//! Only the hold's own path touches it (a part failing into the hold, a part leaving it), never
//! the path of a request that is answered. It must never refuse a part while its shard is
//! under the limit, nor forget a charge: what [`HoldBudget::admit`] charged,
//! [`HoldBudget::release`] gives back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::NodeAddr;

/// What a held part costs beside its frame (its place in the hold).
pub const PART_OVERHEAD: usize = 128;

/// Bytes held per shard, against one limit for each.
#[derive(Debug)]
pub struct HoldBudget {
    /// `usize::MAX` when there is no limit; a reload may change it.
    limit: std::sync::atomic::AtomicUsize,
    /// Bytes held, by the master that failed the parts (`None`: no master was known).
    held: Mutex<HashMap<Option<NodeAddr>, usize>>,
    /// Parts failed at once because their shard's hold was full (INFO).
    pub refused: AtomicU64,
}

impl Default for HoldBudget {
    fn default() -> Self {
        HoldBudget::new(None)
    }
}

impl HoldBudget {
    pub fn new(limit: Option<usize>) -> Self {
        HoldBudget {
            limit: std::sync::atomic::AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            held: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        }
    }

    /// A reload's new limit, for the bytes charged from now on (those held stay held).
    pub fn set_limit(&self, limit: Option<usize>) {
        self.limit.store(
            limit.unwrap_or(usize::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Charges `bytes` to `shard` when they fit under its limit; false (and counted) when not.
    pub fn admit(&self, shard: Option<&NodeAddr>, bytes: usize) -> bool {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        // A refusal needs bytes held already, so it leaves no empty entry behind.
        let now = held.entry(shard.cloned()).or_insert(0);
        let limit = self.limit.load(std::sync::atomic::Ordering::Relaxed);
        if !fits(*now, bytes, limit) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        *now += bytes;
        true
    }

    /// Gives back what [`Self::admit`] charged to `shard`.
    pub fn release(&self, shard: Option<&NodeAddr>, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let key = shard.cloned();
        if let Some(now) = held.get_mut(&key) {
            *now = now.saturating_sub(bytes);
            if *now == 0 {
                held.remove(&key);
            }
        }
    }

    /// Bytes held over all shards (INFO).
    pub fn total(&self) -> usize {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.values().sum()
    }
}

/// Whether `bytes` more fit beside the `held` ones under `limit`. A part larger than the whole
/// limit fits only into an empty hold, so that one big request is held rather than refused
/// for its size alone.
fn fits(held: usize, bytes: usize, limit: usize) -> bool {
    held == 0 || held.saturating_add(bytes) <= limit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> NodeAddr {
        NodeAddr::tcp(s).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn should_fit_under_the_limit_and_not_past_it() {
        assert!(fits(0, 10, 100));
        assert!(fits(90, 10, 100));
        assert!(!fits(91, 10, 100));
        // One part larger than the limit is held alone, not refused for its size.
        assert!(fits(0, 1_000, 100));
        assert!(!fits(1, 1_000, 100));
        assert!(fits(usize::MAX - 1, 1, usize::MAX));
    }

    #[test]
    fn should_keep_each_shard_to_its_own_limit() {
        let (a, b) = (addr("a:1"), addr("b:1"));
        let budget = HoldBudget::new(Some(100));
        assert!(budget.admit(Some(&a), 60));
        assert!(!budget.admit(Some(&a), 60), "a is full");
        assert!(budget.admit(Some(&b), 60), "b has its own limit");
        assert!(budget.admit(None, 60), "so do parts no master failed");
        assert_eq!(budget.refused.load(Ordering::Relaxed), 1);
        assert_eq!(budget.total(), 180);
        budget.release(Some(&a), 60);
        assert!(budget.admit(Some(&a), 60), "room again once released");
        budget.release(Some(&a), 60);
        budget.release(Some(&b), 60);
        budget.release(None, 60);
        assert_eq!(budget.total(), 0);
        assert!(
            budget
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        );
    }

    #[test]
    fn should_not_limit_without_a_limit() {
        let a = addr("a:1");
        let budget = HoldBudget::new(None);
        assert!(budget.admit(Some(&a), usize::MAX / 2));
        assert!(budget.admit(Some(&a), usize::MAX / 2));
    }
}
