//! The session's clocks: Redis' idle `timeout`, and the partial-request timeout that closes a
//! slowloris. Both look at counts the session keeps anyway (bytes moved, requests parsed), so
//! neither adds work per request; each holds one timer (the request timeout's made when it
//! first sees a partial request). They must
//! never close a client a node still owes a reply (idle), nor one whose requests complete
//! (request timeout).

use std::future::Future;
use std::pin::Pin;
use std::task::Context as TaskContext;
use std::time::Duration;

/// Redis' `timeout` for one session. A timer looks at the bytes the socket has moved (counted
/// anyway: nothing is added per request) every quarter of the timeout, and the client is idle
/// once four checks in a row saw no change while it waited for nothing: idle for at least the
/// timeout and at most a quarter more.
pub struct IdleWatch {
    every: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    seen: u64,
    quiet: u32,
}

/// Checks without activity that make a client idle.
const IDLE_CHECKS: u32 = 4;

impl IdleWatch {
    pub fn new(timeout: Duration) -> Self {
        let every = (timeout / IDLE_CHECKS).max(Duration::from_millis(1));
        IdleWatch {
            every,
            timer: Box::pin(tokio::time::sleep(every)),
            seen: 0,
            quiet: 0,
        }
    }

    /// Polls the timer (registering the task) and says whether the client has been idle for
    /// the whole timeout. `activity` is the socket's count of bytes moved; `waiting` is true
    /// while a node still owes the client a reply (a blocked command too) or the client is
    /// subscribed (never idle then).
    pub fn expired(&mut self, cx: &mut TaskContext<'_>, activity: u64, waiting: bool) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            if activity == self.seen && !waiting {
                self.quiet += 1;
                if self.quiet >= IDLE_CHECKS {
                    return true;
                }
            } else {
                self.quiet = 0;
                self.seen = activity;
            }
            let next = tokio::time::Instant::now() + self.every;
            self.timer.as_mut().reset(next);
        }
        false
    }
}

/// Bytes of a request that stopped short: the clock runs from when the session first saw the
/// partial request, and restarts whenever a request completes, so a client trickling one
/// request byte by byte is closed after `timeout` however often a byte comes, while one that
/// pipelines (always a partial request at the end of a read) never is.
pub struct RequestWatch {
    timeout: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The count of requests parsed when the clock started; `None` while it is stopped.
    since: Option<u64>,
}

impl RequestWatch {
    pub fn new(timeout: Duration) -> Self {
        RequestWatch {
            timeout,
            timer: None,
            since: None,
        }
    }

    /// Whether the clock runs (a partial request was seen and has not completed).
    #[inline]
    pub fn running(&self) -> bool {
        self.since.is_some()
    }

    /// Called when the session goes to sleep. `partial`: its buffer holds the start of a
    /// request it could not parse yet; `parsed`: the requests it has parsed so far. Polls the
    /// timer while one runs (registering the task) and says whether the partial request has
    /// waited the whole timeout.
    pub fn expired(&mut self, cx: &mut TaskContext<'_>, partial: bool, parsed: u64) -> bool {
        if !partial {
            self.since = None;
            return false;
        }
        if self.since != Some(parsed) {
            self.since = Some(parsed);
            let at = tokio::time::Instant::now() + self.timeout;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_ready())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn cx() -> TaskContext<'static> {
        TaskContext::from_waker(Waker::noop())
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_request_that_stays_partial_expires_after_the_timeout() {
        let mut w = RequestWatch::new(Duration::from_millis(100));
        assert!(!w.expired(&mut cx(), true, 5));
        tokio::time::advance(Duration::from_millis(60)).await;
        // More bytes of the same request: the clock does not restart.
        assert!(!w.expired(&mut cx(), true, 5));
        tokio::time::advance(Duration::from_millis(50)).await;
        assert!(w.expired(&mut cx(), true, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_request_restarts_the_clock() {
        let mut w = RequestWatch::new(Duration::from_millis(100));
        assert!(!w.expired(&mut cx(), true, 5));
        tokio::time::advance(Duration::from_millis(90)).await;
        assert!(!w.expired(&mut cx(), true, 6));
        tokio::time::advance(Duration::from_millis(90)).await;
        assert!(!w.expired(&mut cx(), true, 6));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(w.expired(&mut cx(), true, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn no_partial_request_stops_the_clock() {
        let mut w = RequestWatch::new(Duration::from_millis(100));
        assert!(!w.expired(&mut cx(), true, 5));
        tokio::time::advance(Duration::from_millis(90)).await;
        assert!(!w.expired(&mut cx(), false, 5));
        // A new partial request (the same count: it follows a whole buffer) starts afresh.
        assert!(!w.expired(&mut cx(), true, 5));
        tokio::time::advance(Duration::from_millis(90)).await;
        assert!(!w.expired(&mut cx(), true, 5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_client_expires_after_four_quiet_checks_and_a_waiting_one_never() {
        let mut w = IdleWatch::new(Duration::from_millis(100));
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(25)).await;
            assert!(!w.expired(&mut cx(), 0, false));
        }
        tokio::time::advance(Duration::from_millis(25)).await;
        assert!(w.expired(&mut cx(), 0, false));
        let mut w = IdleWatch::new(Duration::from_millis(100));
        for _ in 0..8 {
            tokio::time::advance(Duration::from_millis(25)).await;
            assert!(!w.expired(&mut cx(), 0, true));
        }
    }
}
