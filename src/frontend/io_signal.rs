//! A waker that remembers it fired: lets a session tell "the client's socket became ready" apart
//! from "a reply arrived" when its task wakes.
//!
//! A task has one waker, so a session woken by a backend reply cannot know whether its client
//! socket also became readable; without that knowledge it polls the socket on every wake, and a
//! poll that finds nothing re-registers the waker (about 200 instructions, once per request at
//! pipeline 1). The session instead hands this waker to every client-socket poll: readiness sets
//! the flag, then wakes the task. A socket that said Pending need not be polled again until the
//! flag is set. This type must never lose a wake: the task waker is always woken after the flag
//! is set, and a stale flag only costs one extra poll.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

/// The flag and the task to wake; shared by the session and the I/O driver's registration.
#[derive(Default)]
pub struct IoSignal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl IoSignal {
    /// A new signal and the waker to give the socket.
    pub fn new() -> (Arc<IoSignal>, Waker) {
        let signal = Arc::new(IoSignal::default());
        let waker = Waker::from(signal.clone());
        (signal, waker)
    }

    /// Makes `task` the one woken by readiness; call on every poll of the task, before the
    /// socket is polled.
    pub fn arm(&self, task: &Waker) {
        let mut slot = self.lock();
        match &*slot {
            Some(w) if w.will_wake(task) => {}
            _ => *slot = Some(task.clone()),
        }
    }

    /// Whether readiness was signalled since the last call; clears the flag. Take it before
    /// polling the socket, so that a readiness signalled during the polls is seen next time.
    pub fn take_fired(&self) -> bool {
        self.fired.swap(false, Ordering::AcqRel)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        // The slot is replaced whole or read; a panic elsewhere cannot leave it half-written.
        match self.task.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Wake for IoSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(w) = &*self.lock() {
            w.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::counting_waker;

    #[test]
    fn should_set_the_flag_and_wake_the_armed_task() {
        let (signal, waker) = IoSignal::new();
        let (count, task) = counting_waker();
        signal.arm(&task);
        assert!(!signal.take_fired());
        waker.wake_by_ref();
        assert_eq!(count.load(Ordering::Relaxed), 1);
        // A clone given away (as the I/O driver keeps one) wakes the same task, by value too.
        let given = waker.clone();
        given.wake();
        assert_eq!(count.load(Ordering::Relaxed), 2);
        assert!(signal.take_fired());
        assert!(!signal.take_fired(), "taking clears the flag");
    }

    #[test]
    fn should_wake_the_newest_task_waker() {
        let (signal, waker) = IoSignal::new();
        let (first, first_task) = counting_waker();
        let (second, second_task) = counting_waker();
        signal.arm(&first_task);
        signal.arm(&second_task);
        waker.wake_by_ref();
        assert_eq!(first.load(Ordering::Relaxed), 0);
        assert_eq!(second.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn should_flag_a_readiness_that_came_before_any_task() {
        let (signal, waker) = IoSignal::new();
        waker.wake();
        assert!(signal.take_fired());
    }
}
