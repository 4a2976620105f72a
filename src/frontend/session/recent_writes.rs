//! Read your writes (`read_your_writes_ms`): the slots a client wrote within the window, so that
//! its reads of them go to the master, which has the write, rather than to a replica, which may
//! not have it yet.
//!
//! Bounded: it remembers at most [`CAPACITY`] slots; a client that writes more within one
//! window has every read pinned to the master until the window after its last write ends. It
//! must never let a read of a slot written within the window go to a replica.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most slots remembered one by one.
pub(super) const CAPACITY: usize = 32;

#[derive(Debug)]
pub(super) struct RecentWrites {
    window: Duration,
    /// Slots written, each with the end of its window, oldest first.
    slots: VecDeque<(u16, Instant)>,
    /// Every read is pinned to the master until then (more slots written than remembered).
    all_until: Option<Instant>,
}

impl RecentWrites {
    pub(super) fn new(window: Duration) -> RecentWrites {
        RecentWrites {
            window,
            slots: VecDeque::new(),
            all_until: None,
        }
    }

    /// For a client whose writes until `now` were not remembered (a reload turned read your
    /// writes or replica reads on): every read is pinned to the master for one window, since
    /// any slot may have been written an instant ago, even with the write still in flight.
    pub(super) fn pinning_all(window: Duration, now: Instant) -> RecentWrites {
        RecentWrites {
            all_until: Some(now + window),
            ..RecentWrites::new(window)
        }
    }

    /// The client wrote `slot` at `now`.
    pub(super) fn wrote(&mut self, slot: u16, now: Instant) {
        let until = now + self.window;
        self.expire(now);
        if let Some(s) = self.slots.iter_mut().find(|(s, _)| *s == slot) {
            s.1 = until;
            return;
        }
        if self.slots.len() == CAPACITY {
            self.all_until = Some(until);
            self.slots.pop_front();
        }
        self.slots.push_back((slot, until));
    }

    /// Whether a read of `slot` at `now` must go to the master.
    pub(super) fn pins(&mut self, slot: u16, now: Instant) -> bool {
        self.expire(now);
        self.all_until.is_some() || self.slots.iter().any(|&(s, _)| s == slot)
    }

    /// A reload's new window: slots written from now on are pinned this long; those already
    /// pinned keep the end they have.
    pub(super) fn set_window(&mut self, window: Duration) {
        self.window = window;
    }

    /// Forgets the windows that ended.
    fn expire(&mut self, now: Instant) {
        // At most CAPACITY entries.
        self.slots.retain(|&(_, until)| until > now);
        if self.all_until.is_some_and(|t| t <= now) {
            self.all_until = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_millis(100);

    #[test]
    fn writes_not_remembered_pin_every_read_for_one_window() {
        let t0 = Instant::now();
        let mut r = RecentWrites::pinning_all(W, t0);
        assert!(r.pins(3, t0 + W / 2));
        assert!(!r.pins(3, t0 + W));
    }

    #[test]
    fn a_written_slot_is_pinned_for_the_window_and_others_are_not() {
        let t0 = Instant::now();
        let mut r = RecentWrites::new(W);
        r.wrote(7, t0);
        assert!(r.pins(7, t0 + Duration::from_millis(99)));
        assert!(!r.pins(8, t0));
        assert!(!r.pins(7, t0 + W));
    }

    #[test]
    fn a_second_write_renews_the_window() {
        let t0 = Instant::now();
        let mut r = RecentWrites::new(W);
        r.wrote(7, t0);
        r.wrote(7, t0 + Duration::from_millis(80));
        assert!(r.pins(7, t0 + Duration::from_millis(150)));
        assert!(!r.pins(7, t0 + Duration::from_millis(181)));
    }

    #[test]
    fn more_slots_than_remembered_pin_every_read_for_the_window() {
        let t0 = Instant::now();
        let mut r = RecentWrites::new(W);
        for slot in 0..=CAPACITY as u16 {
            r.wrote(slot, t0);
        }
        // Slot 0 was forgotten one by one, yet its read still goes to the master.
        assert!(r.pins(0, t0 + Duration::from_millis(50)));
        assert!(r.pins(9999, t0 + Duration::from_millis(50)));
        assert!(!r.pins(0, t0 + W));
    }
}
