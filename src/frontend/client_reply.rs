//! `CLIENT REPLY ON|OFF|SKIP` for one client: which of its reply-queue places get no reply, as
//! spans of place numbers (a session numbers every place it queues, in request order).
//!
//! Pure state, as Redis keeps it per client: `OFF` silences every reply from the next place on
//! until an `ON` (whose `+OK` is sent), `SKIP` silences the next place only (not while `OFF`),
//! `RESET` ends `OFF` but not a pending `SKIP`. `OFF` and `SKIP` themselves take no place (they
//! have no reply). This module must never decide anything but whether a place is silent; the
//! session still collects and drops those replies in order, so nothing overtakes anything.

use std::collections::VecDeque;

/// Silent spans of place numbers, `[start, end)`, in order and disjoint; an `end` of
/// `u64::MAX` is the span `OFF` opened and no `ON` has closed yet.
#[derive(Debug, Default)]
pub struct ClientReply {
    spans: VecDeque<(u64, u64)>,
}

const OPEN: u64 = u64::MAX;

impl ClientReply {
    /// The first place that may be silent: [`Self::is_silent`] need only be asked from there on.
    pub fn first_silent(&self) -> u64 {
        self.spans.front().map_or(OPEN, |&(start, _)| start)
    }

    /// Nothing is or will be silent.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn off_now(&self) -> bool {
        self.spans.back().is_some_and(|&(_, end)| end == OPEN)
    }

    /// `CLIENT REPLY OFF`, `next` being the place the next request will take.
    pub fn off(&mut self, next: u64) {
        if self.off_now() {
            return;
        }
        // A pending SKIP of that place is part of the silence now.
        if self.spans.back() == Some(&(next, next + 1)) {
            self.spans.pop_back();
        }
        self.spans.push_back((next, OPEN));
    }

    /// `CLIENT REPLY SKIP`: the next request's reply is not sent (nothing changes while `OFF`).
    pub fn skip(&mut self, next: u64) {
        if self.off_now() || self.spans.back() == Some(&(next, next + 1)) {
            return;
        }
        self.spans.push_back((next, next + 1));
    }

    /// `CLIENT REPLY ON` at place `at`: its own `+OK` is sent, and so is everything after.
    pub fn on(&mut self, at: u64) {
        if self.spans.back() == Some(&(at, at + 1)) {
            self.spans.pop_back();
        }
        self.end_off(at);
    }

    /// `RESET` at place `at`: ends `OFF` (its `+RESET` is sent) but, as in Redis, not a `SKIP`
    /// that already applies to it.
    pub fn reset(&mut self, at: u64) {
        self.end_off(at);
    }

    fn end_off(&mut self, at: u64) {
        if let Some(last) = self.spans.back_mut()
            && last.1 == OPEN
        {
            if last.0 >= at {
                self.spans.pop_back();
            } else {
                last.1 = at;
            }
        }
    }

    /// Whether the reply of `place` is dropped. Places are asked in increasing order: spans
    /// that end before `place` are forgotten.
    pub fn is_silent(&mut self, place: u64) -> bool {
        while let Some(&(start, end)) = self.spans.front() {
            if end <= place {
                self.spans.pop_front();
                continue;
            }
            return start <= place;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of the places `0..n` are silent.
    fn silent(r: &mut ClientReply, n: u64) -> Vec<u64> {
        (0..n).filter(|&p| r.is_silent(p)).collect()
    }

    #[test]
    fn off_silences_every_reply_until_on_whose_ok_is_sent() {
        // OFF | SET (0) | GET (1) | ON (2) | GET (3)
        let mut r = ClientReply::default();
        r.off(0);
        assert_eq!(r.first_silent(), 0);
        r.on(2);
        assert_eq!(silent(&mut r, 4), [0, 1]);
        assert_eq!(r.first_silent(), OPEN);
    }

    #[test]
    fn off_then_on_at_once_silences_nothing() {
        let mut r = ClientReply::default();
        r.off(5);
        r.on(5);
        assert_eq!(silent(&mut r, 8), Vec::<u64>::new());
    }

    #[test]
    fn skip_silences_the_next_reply_only_and_twice_is_once() {
        // SKIP | GET (0) | GET (1)
        let mut r = ClientReply::default();
        r.skip(0);
        assert_eq!(silent(&mut r, 2), [0]);
        // SKIP | SKIP | GET (0) | GET (1): as Redis, one reply is skipped.
        let mut r = ClientReply::default();
        r.skip(0);
        r.skip(0);
        assert_eq!(silent(&mut r, 2), [0]);
    }

    #[test]
    fn skip_while_off_changes_nothing_and_off_takes_in_a_pending_skip() {
        // OFF | SKIP | GET (0) | ON (1) | PING (2)
        let mut r = ClientReply::default();
        r.off(0);
        r.skip(0);
        r.on(1);
        assert_eq!(silent(&mut r, 3), [0]);
        // SKIP | OFF | GET (0) | GET (1): still off.
        let mut r = ClientReply::default();
        r.skip(0);
        r.off(0);
        assert_eq!(silent(&mut r, 2), [0, 1]);
        assert!(r.is_silent(1_000));
    }

    #[test]
    fn on_cancels_a_pending_skip_of_itself() {
        // SKIP | ON (0) | PING (1): both answered, as Redis does.
        let mut r = ClientReply::default();
        r.skip(0);
        r.on(0);
        assert_eq!(silent(&mut r, 2), Vec::<u64>::new());
    }

    #[test]
    fn reset_ends_off_but_not_a_skip_of_itself() {
        // OFF | GET (0) | RESET (1) | PING (2)
        let mut r = ClientReply::default();
        r.off(0);
        r.reset(1);
        assert_eq!(silent(&mut r, 3), [0]);
        // SKIP | RESET (0) | PING (1): RESET's reply is skipped.
        let mut r = ClientReply::default();
        r.skip(0);
        r.reset(0);
        assert_eq!(silent(&mut r, 2), [0]);
    }

    #[test]
    fn spans_behind_the_places_written_are_forgotten() {
        let mut r = ClientReply::default();
        r.skip(1);
        r.skip(3);
        r.off(6);
        r.on(8);
        assert_eq!(silent(&mut r, 10), [1, 3, 6, 7]);
        assert_eq!(r.first_silent(), OPEN);
        assert!(r.spans.is_empty());
    }
}
