//! The budget for what all clients together make slotgate buffer (`clients.memory_budget_bytes`,
//! as Redis 7's `maxmemory-clients`): each session charges its own buffers (a partial request,
//! replies the client has not read) to one total when they change; past the budget, the
//! clients holding the most are closed, largest first, until the rest fits, as Redis evicts
//! clients.
//!
//! A session charges only at the end of a poll and only when what it holds changed: at
//! pipeline 1 a session holds no buffer of its own between polls, so nothing is charged per
//! request. This module must never close a client while the total is within the budget, nor
//! more clients than the excess needs: the bytes of clients already told to close count as
//! freed.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The total the sessions charge, and the budget it must stay within.
#[derive(Debug)]
pub struct MemoryBudget {
    /// `usize::MAX` when there is no budget; a reload may change it.
    limit: AtomicUsize,
    total: AtomicUsize,
    /// Bytes of clients told to close that have not closed yet.
    freeing: AtomicUsize,
    /// Clients closed for the budget (INFO `evicted_clients`).
    pub evicted: AtomicU64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget::new(None)
    }
}

impl MemoryBudget {
    pub fn new(limit: Option<usize>) -> Self {
        MemoryBudget {
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            total: AtomicUsize::new(0),
            freeing: AtomicUsize::new(0),
            evicted: AtomicU64::new(0),
        }
    }

    /// The budget, if there is one.
    pub fn limit(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::Relaxed);
        (limit != usize::MAX).then_some(limit)
    }

    /// A reload's new budget.
    pub fn set_limit(&self, limit: Option<usize>) {
        self.limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// Bytes charged by every session now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Moves one session's charge from `old` to `new` bytes; whether the clients are now past
    /// the budget (the caller then evicts).
    #[inline]
    pub fn recharge(&self, old: usize, new: usize) -> bool {
        let total = if new >= old {
            self.total.fetch_add(new - old, Ordering::Relaxed) + (new - old)
        } else {
            self.total.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
        };
        total.saturating_sub(self.freeing.load(Ordering::Relaxed))
            > self.limit.load(Ordering::Relaxed)
    }

    /// How many bytes past the budget the clients not already closing hold.
    pub fn excess(&self) -> usize {
        self.total()
            .saturating_sub(self.freeing.load(Ordering::Relaxed))
            .saturating_sub(self.limit.load(Ordering::Relaxed))
    }

    /// A client holding `bytes` was told to close.
    pub fn closing(&self, bytes: usize) {
        self.freeing.fetch_add(bytes, Ordering::Relaxed);
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }

    /// A client that was told to close (holding `freeing` bytes then) has closed.
    pub fn closed(&self, freeing: usize) {
        self.freeing.fetch_sub(freeing, Ordering::Relaxed);
    }
}

/// Which clients to close for `excess` bytes: the largest holdings first, until their bytes
/// cover it (all of them when they cannot). `holdings` is (client id, bytes); it is sorted.
pub fn victims(holdings: &mut [(u64, usize)], excess: usize) -> Vec<u64> {
    let mut out = Vec::new();
    if excess == 0 {
        return out;
    }
    holdings.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut freed = 0usize;
    for &(id, bytes) in holdings.iter() {
        if freed >= excess || bytes == 0 {
            break;
        }
        freed += bytes;
        out.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_the_budget_nobody_is_closed() {
        let b = MemoryBudget::new(Some(100));
        assert!(!b.recharge(0, 60));
        assert!(!b.recharge(0, 40));
        assert_eq!(b.excess(), 0);
        assert!(victims(&mut [(1, 60), (2, 40)], b.excess()).is_empty());
    }

    #[test]
    fn past_the_budget_the_largest_go_first_and_only_as_many_as_the_excess_needs() {
        let b = MemoryBudget::new(Some(100));
        b.recharge(0, 50);
        b.recharge(0, 30);
        assert!(b.recharge(0, 40));
        assert_eq!(b.excess(), 20);
        assert_eq!(victims(&mut [(1, 50), (2, 30), (3, 40)], 20), vec![1]);
        assert_eq!(victims(&mut [(1, 5), (2, 10), (3, 8)], 15), vec![2, 3]);
    }

    #[test]
    fn clients_already_closing_count_as_freed() {
        let b = MemoryBudget::new(Some(100));
        assert!(b.recharge(0, 150));
        b.closing(150);
        assert_eq!(b.excess(), 0);
        assert!(!b.recharge(0, 10));
        // It closes: its charge and its credit go together.
        b.recharge(150, 0);
        b.closed(150);
        assert_eq!(b.total(), 10);
        assert_eq!(b.excess(), 0);
        assert_eq!(b.evicted.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn holdings_that_cannot_cover_the_excess_all_go_and_empty_ones_never() {
        assert_eq!(victims(&mut [(1, 5), (2, 0), (3, 8)], 100), vec![3, 1]);
    }

    #[test]
    fn without_a_budget_nothing_is_ever_past_it() {
        let b = MemoryBudget::new(None);
        assert!(!b.recharge(0, usize::MAX / 2));
        assert_eq!(b.limit(), None);
        assert_eq!(b.excess(), 0);
    }

    #[test]
    fn a_shrinking_charge_lowers_the_total() {
        let b = MemoryBudget::new(Some(100));
        assert!(b.recharge(0, 120));
        assert!(!b.recharge(120, 70));
        assert_eq!(b.total(), 70);
    }
}
