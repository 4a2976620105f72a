//! The queues of the request path: many senders, one receiving task.
//!
//! Sessions queue requests for a backend connection, and connections queue replies for a
//! session. Both are a mutex-guarded `Vec` and the receiver's waker: a send is one uncontended
//! lock and a push, and wakes the receiver only when it is asleep; the receiver takes everything
//! queued by swapping vectors, so their capacity is reused and nothing is allocated per message.
//! A send can be bounded (it then fails fast, handing the item back). This module must never
//! block, and must never wake a receiver that is already awake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

struct State<T> {
    items: Vec<T>,
    waker: Option<Waker>,
    closed: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    /// The receiver went to sleep and must be woken by the next send. Written only under the
    /// lock; read without it by the receiver, to skip a poll that would find nothing.
    parked: AtomicBool,
}

impl<T> Shared<T> {
    /// Registers `task` to be woken by the next send; `s` is this queue's locked state.
    fn park(&self, s: &mut State<T>, task: &Waker) {
        match &s.waker {
            Some(w) if w.will_wake(task) => {}
            _ => s.waker = Some(task.clone()),
        }
        self.parked.store(true, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the state half-updated (every update is
        // a single push, swap or flag), so a poisoned lock is still sound to use.
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Why a send failed; the item comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<T> {
    /// The receiver is gone or the queue was closed.
    Closed(T),
    /// A bounded send found the queue at its bound.
    Full(T),
}

/// The sending side; clones share the queue.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

/// The receiving side; dropping it closes the queue.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Receiver")
    }
}

/// A new, empty, open queue.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: Vec::new(),
            waker: None,
            closed: false,
        }),
        parked: AtomicBool::new(false),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

impl<T> Sender<T> {
    /// Queues `item`; fails only when the queue is closed.
    pub fn send(&self, item: T) -> Result<(), T> {
        self.push(item, usize::MAX).map_err(|e| match e {
            SendError::Closed(t) | SendError::Full(t) => t,
        })
    }

    /// Queues `item` unless `bound` items already wait.
    pub fn send_bounded(&self, item: T, bound: usize) -> Result<(), SendError<T>> {
        self.push(item, bound)
    }

    fn push(&self, item: T, bound: usize) -> Result<(), SendError<T>> {
        let mut slot = Some(item);
        let result = self.with_room(1, bound, |items| items.extend(slot.take()));
        match (result, slot) {
            (Err(SendError::Closed(())), Some(item)) => Err(SendError::Closed(item)),
            (Err(SendError::Full(())), Some(item)) => Err(SendError::Full(item)),
            _ => Ok(()),
        }
    }

    /// Queues every item of `items` (leaving it empty) under one lock, waking the receiver once.
    /// False, keeping them, only when the queue is closed.
    pub fn send_many(&self, items: &mut Vec<T>) -> bool {
        self.send_many_bounded(items, usize::MAX).is_ok()
    }

    /// Like [`Self::send_many`], unless the queue would then hold more than `bound` items: then
    /// nothing is queued and `items` is left as it was.
    pub fn send_many_bounded(&self, items: &mut Vec<T>, bound: usize) -> Result<(), SendError<()>> {
        let n = items.len();
        self.with_room(n, bound, |queued| {
            if queued.is_empty() {
                std::mem::swap(queued, items);
            } else {
                queued.append(items);
            }
        })
    }

    /// Runs `put` on the queue under the lock if it is open and has room for `n` more items
    /// within `bound`, then wakes the receiver if it sleeps; otherwise does not run it.
    fn with_room(
        &self,
        n: usize,
        bound: usize,
        put: impl FnOnce(&mut Vec<T>),
    ) -> Result<(), SendError<()>> {
        let mut s = self.shared.lock();
        if s.closed {
            return Err(SendError::Closed(()));
        }
        if s.items.len().saturating_add(n) > bound {
            return Err(SendError::Full(()));
        }
        put(&mut s.items);
        if self.shared.parked.load(Ordering::Relaxed) {
            self.shared.parked.store(false, Ordering::Release);
            // Woken under the lock, by reference: no waker clone per send. A wake only
            // schedules the task (it never polls it here), so nothing can re-enter this lock.
            if let Some(w) = &s.waker {
                w.wake_by_ref();
            }
        }
        Ok(())
    }

    /// Whether `other` sends to the same queue.
    pub fn same_queue(&self, other: &Sender<T>) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    /// Closes the queue from the sending side: the receiver takes what is queued, then sees
    /// the end.
    pub fn close(&self) {
        let waker = {
            let mut s = self.shared.lock();
            s.closed = true;
            self.shared.parked.store(false, Ordering::Release);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// Moves up to `max` queued items into `out` (which should be empty, so that the two
    /// vectors' buffers are swapped rather than copied). `Ready(0)` means closed and drained;
    /// `Pending` registers the task to be woken by the next send.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<usize> {
        self.take(cx, out, max, false).map(|(n, _)| n)
    }

    /// Like [`Self::poll_recv_many`], and when it takes the last queued item it also registers
    /// the task, as `Pending` does: `Ready((n, true))` means the next send wakes the task, so the
    /// receiver need not poll again to go to sleep (`false`: more may be queued, or the queue is
    /// closed). For a receiver that drains on every wake; one that yields between takes (to let
    /// senders batch up) would be woken by every first send.
    pub fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
    ) -> Poll<(usize, bool)> {
        self.take(cx, out, max, true)
    }

    fn take(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<T>,
        max: usize,
        park_when_drained: bool,
    ) -> Poll<(usize, bool)> {
        let mut s = self.shared.lock();
        if s.items.is_empty() {
            if s.closed {
                return Poll::Ready((0, false));
            }
            self.shared.park(&mut s, cx.waker());
            return Poll::Pending;
        }
        let n = s.items.len().min(max.max(1));
        if n == s.items.len() {
            if out.is_empty() {
                std::mem::swap(&mut s.items, out);
            } else {
                out.append(&mut s.items);
            }
            if park_when_drained && !s.closed {
                self.shared.park(&mut s, cx.waker());
                return Poll::Ready((n, true));
            }
        } else {
            out.extend(s.items.drain(..n));
        }
        Poll::Ready((n, false))
    }

    /// Whether the receiver is still registered and nothing was sent (nor the queue closed)
    /// since: a poll now would only find the queue empty. Costs no lock.
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::Acquire)
    }

    /// The next item, waiting for it; `None` once closed and drained.
    pub async fn recv(&mut self) -> Option<T> {
        let mut one = Vec::with_capacity(1);
        std::future::poll_fn(|cx| self.poll_recv_many(cx, &mut one, 1)).await;
        one.pop()
    }

    /// Refuses further sends and returns what was queued.
    pub fn close(&mut self) -> Vec<T> {
        let mut s = self.shared.lock();
        s.closed = true;
        std::mem::take(&mut s.items)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Senders learn at once that nobody will read what they send.
        self.close();
    }
}

/// A waker that counts its wakes, for tests of wake-ups here and in the session's I/O signal.
#[cfg(test)]
pub(crate) fn counting_waker() -> (Arc<std::sync::atomic::AtomicUsize>, Waker) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Count(Arc<AtomicUsize>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let count = Arc::new(AtomicUsize::new(0));
    (count.clone(), Waker::from(Arc::new(Count(count))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn should_deliver_in_order_and_wake_a_parked_receiver_once() {
        let (tx, mut rx) = channel();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Pending);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 1, "one wake for two sends");
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Ready(2));
        assert_eq!(out, [1, 2]);
        out.clear();
        // Not parked: a send does not wake.
        tx.send(3).unwrap();
        assert_eq!(count.load(Ordering::Relaxed), 1);
        tx.send(4).unwrap();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 1), Poll::Ready(1));
        assert_eq!(out, [3]);
        out.clear();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Ready(1));
        assert_eq!(out, [4]);
    }

    #[test]
    fn should_stay_registered_after_a_drain() {
        let (tx, mut rx) = channel();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        // A partial take leaves items queued: not registered.
        assert_eq!(rx.poll_drain(&mut cx, &mut out, 2), Poll::Ready((2, false)));
        assert_eq!(rx.poll_drain(&mut cx, &mut out, 2), Poll::Ready((1, true)));
        assert_eq!(out, [1, 2, 3]);
        assert!(rx.is_parked());
        tx.send(4).unwrap();
        assert!(!rx.is_parked(), "a send ends the parking");
        tx.send(5).unwrap();
        assert_eq!(
            count.load(Ordering::Relaxed),
            1,
            "the first send after a drain wakes"
        );
        out.clear();
        assert_eq!(rx.poll_drain(&mut cx, &mut out, 8), Poll::Ready((2, true)));
        assert!(rx.is_parked());
        tx.close();
        assert!(!rx.is_parked());
        assert_eq!(count.load(Ordering::Relaxed), 2, "so does a close");
        assert_eq!(rx.poll_drain(&mut cx, &mut out, 8), Poll::Ready((0, false)));
        // Items queued before a close are taken, and the receiver is told not to sleep.
        let (tx, mut rx) = channel();
        tx.send(1).unwrap();
        tx.close();
        out.clear();
        assert_eq!(rx.poll_drain(&mut cx, &mut out, 8), Poll::Ready((1, false)));
    }

    #[test]
    fn should_see_a_close_while_parked() {
        let (tx, mut rx) = channel::<u8>();
        let (count, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Pending);
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Pending);
        tx.close();
        assert_eq!(
            count.load(Ordering::Relaxed),
            1,
            "the close wakes the receiver"
        );
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Ready(0));
    }

    #[test]
    fn should_bound_and_close() {
        let (tx, mut rx) = channel();
        tx.send_bounded(1, 1).unwrap();
        assert_eq!(tx.send_bounded(2, 1), Err(SendError::Full(2)));
        let mut more = vec![5, 6];
        assert_eq!(tx.send_many_bounded(&mut more, 2), Err(SendError::Full(())));
        assert_eq!(more, [5, 6], "a refused batch is left whole");
        assert!(tx.same_queue(&tx.clone()));
        tx.close();
        assert_eq!(tx.send(3), Err(3));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = Vec::new();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Ready(1));
        out.clear();
        assert_eq!(rx.poll_recv_many(&mut cx, &mut out, 8), Poll::Ready(0));
        drop(rx);
        let (tx, rx) = channel::<u8>();
        drop(rx);
        assert_eq!(tx.send(1), Err(1));
    }
}
