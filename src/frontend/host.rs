//! Runs a worker's client sessions inside one task: each session is a future in a
//! `FuturesUnordered`, with a waker of its own, polled only when woken.
//!
//! A tokio task per session paid the scheduler's whole price (task state transitions, run queue,
//! poll harness) on each of the two wakes a request costs at pipeline 1: about 440 of some
//! 4,700 user-space instructions per GET. Inside one host task a session's wake is a queue push,
//! and the host's own wake is shared by every session woken in the same turn of the reactor. A
//! session that panics is caught here and ends alone, as a spawned task would. This module must
//! never poll a session that was not woken, and never let one session end another.

use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::Poll;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tracing::error;

use crate::mailbox;
use crate::workers::Workers;

/// A session as the host holds it.
type SessionFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The door to one worker's host task.
#[derive(Debug, Clone)]
pub struct SessionHost {
    tx: mailbox::Sender<SessionFuture>,
}

/// Sessions taken from the door per poll, before the sessions already running get their turn.
const ARRIVALS_PER_POLL: usize = 64;

impl SessionHost {
    /// Starts the host task of worker `index`.
    pub fn start(workers: &Workers, index: usize) -> SessionHost {
        let (tx, rx) = mailbox::channel();
        workers.spawn_on(index, run(rx));
        SessionHost { tx }
    }

    /// Runs `session` on this host's worker until it ends. False when the host is gone (its
    /// worker stopped), and the session was dropped unpolled.
    pub fn run(&self, session: impl Future<Output = ()> + Send + 'static) -> bool {
        self.tx.send(Box::pin(session)).is_ok()
    }
}

async fn run(mut door: mailbox::Receiver<SessionFuture>) {
    let mut sessions: FuturesUnordered<SessionFuture> = FuturesUnordered::new();
    let mut arrived = Vec::new();
    poll_fn(|cx| {
        let mut open = true;
        loop {
            match door.poll_recv_many(cx, &mut arrived, ARRIVALS_PER_POLL) {
                Poll::Ready(0) => {
                    open = false;
                    break;
                }
                Poll::Ready(_) => sessions.extend(arrived.drain(..)),
                Poll::Pending => break,
            }
        }
        // Polls the woken sessions; `Pending` once none is left to poll (or after a turn long
        // enough that other tasks deserve theirs), `None` when there are no sessions at all.
        // A session that panics is caught here, once per turn rather than once per session poll:
        // `FuturesUnordered` drops the future whose poll unwound and stays usable, so the turn
        // goes on with the others.
        loop {
            match std::panic::catch_unwind(AssertUnwindSafe(|| sessions.poll_next_unpin(cx))) {
                Ok(Poll::Ready(Some(()))) => {}
                Ok(_) => break,
                Err(_) => error!("a client session panicked; its client is disconnected"),
            }
        }
        if !open && sessions.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn should_run_sessions_to_the_end_and_survive_a_panicking_one() {
        let workers = Workers::single();
        let host = SessionHost::start(&workers, 0);
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..10u64 {
            let done = done.clone();
            assert!(host.run(async move {
                tokio::time::sleep(std::time::Duration::from_millis(i * 3)).await;
                done.fetch_add(1, Ordering::Relaxed);
            }));
        }
        assert!(host.run(async {
            panic!("a session that panics");
        }));
        let late = done.clone();
        assert!(host.run(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            late.fetch_add(1, Ordering::Relaxed);
        }));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while done.load(Ordering::Relaxed) < 11 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("every session but the panicking one finishes");
    }
}
