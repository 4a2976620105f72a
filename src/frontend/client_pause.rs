//! The operator's pause of every client (`POST /pause`, for a migration's switch): sessions
//! take no request (they neither read nor parse; what clients send waits in their sockets) until
//! the pause ends, and each says when what it sent before is on its way to the nodes, so that
//! the admin endpoint knows when nothing more will leave. Requests that arrive meanwhile are
//! read after the pause under the configuration and topology then in force: a reload during
//! the pause (another topology, other key families) applies to all of them.
//!
//! This module keeps the pause's state and who has still to answer; it never touches a
//! session or a connection. A pause never outlasts its limit (the admin endpoint's timer).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::clients::ClientRegistry;

/// Whether the clients are paused, and the sessions that have still to answer the pause.
#[derive(Debug, Default)]
pub struct ClientPause {
    paused: AtomicBool,
    /// Pauses begun, so that a limit's timer ends only its own pause.
    epoch: AtomicU64,
    waiting: Mutex<HashSet<u64>>,
}

impl ClientPause {
    /// Whether the clients are paused now (a session that starts checks it once).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Pauses every client: the pause's number, or `None` when one is in force already.
    pub fn begin(&self, clients: &ClientRegistry) -> Option<u64> {
        if self.paused.swap(true, Ordering::SeqCst) {
            return None;
        }
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        // Under the lock from before the first signal: an answer never comes before its id.
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.clear();
        waiting.extend(clients.pause_all());
        Some(epoch)
    }

    /// Session `id` takes no more requests, and what it sent is on its way (or it is gone).
    pub fn answered(&self, id: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        waiting.remove(&id);
    }

    /// How many sessions have still to answer the pause.
    pub fn unanswered(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Ends the pause (the one numbered `epoch`, if given): whether one ended.
    pub fn end(&self, clients: &ClientRegistry, epoch: Option<u64>) -> bool {
        if epoch.is_some_and(|e| e != self.epoch.load(Ordering::SeqCst)) {
            return false;
        }
        if !self.paused.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        clients.resume_all();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_pause_once_and_end_only_its_own_pause() {
        let (pause, clients) = (ClientPause::default(), ClientRegistry::default());
        let first = pause.begin(&clients).unwrap();
        assert!(pause.is_paused());
        assert_eq!(pause.begin(&clients), None, "one pause at a time");
        assert!(
            !pause.end(&clients, Some(first + 1)),
            "another pause's timer"
        );
        assert!(pause.end(&clients, Some(first)));
        assert!(!pause.is_paused());
        assert!(!pause.end(&clients, None), "nothing to end");
        let second = pause.begin(&clients).unwrap();
        assert!(second > first);
        assert!(
            !pause.end(&clients, Some(first)),
            "the first pause's timer, late"
        );
        assert!(pause.is_paused());
    }

    #[test]
    fn should_count_who_has_still_to_answer() {
        let (pause, clients) = (ClientPause::default(), ClientRegistry::default());
        pause.begin(&clients);
        assert_eq!(pause.unanswered(), 0, "no client registered");
        pause.waiting.lock().unwrap().extend([1, 2]);
        pause.answered(1);
        pause.answered(7);
        assert_eq!(pause.unanswered(), 1);
        pause.answered(2);
        assert_eq!(pause.unanswered(), 0);
    }
}
