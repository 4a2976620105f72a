//! Private connections opened ahead of need: a few per node and [`Dialect`], connected and
//! handshaken while idle, so that a session's first blocking command or WATCH leaves at once
//! instead of behind a connect, where another client's later write would overtake it.
//!
//! The pool only holds connections; the node decides when to take and when to fill. It never
//! hands out a connection that is down, and never holds more than its size per dialect.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use super::{Dialect, Link, LinkState};

/// An idle private connection and the slot its node-side `CLIENT ID` lands in.
#[derive(Debug)]
pub struct Warm {
    pub link: Link,
    pub id: Arc<AtomicU64>,
}

/// Up to `size` idle private connections per dialect.
#[derive(Debug)]
pub struct WarmPool {
    size: usize,
    links: Mutex<HashMap<Dialect, VecDeque<Warm>>>,
}

impl WarmPool {
    pub fn new(size: usize) -> WarmPool {
        WarmPool {
            size,
            links: Mutex::new(HashMap::new()),
        }
    }

    /// A connection of `dialect` that is not down, preferring one that is up (its handshake
    /// done) over one still connecting; the down ones are dropped.
    pub fn take(&self, dialect: Dialect) -> Option<Warm> {
        let mut all = self.lock();
        let q = all.get_mut(&dialect)?;
        q.retain(|w| w.link.state() != LinkState::Down);
        let pos = q
            .iter()
            .position(|w| w.link.state() == LinkState::Up)
            .unwrap_or(0);
        q.remove(pos)
    }

    /// Opens (with `open`) as many connections of `dialect` as it lacks.
    pub fn fill(&self, dialect: Dialect, mut open: impl FnMut() -> Warm) {
        if self.size == 0 {
            return;
        }
        let mut all = self.lock();
        let q = all.entry(dialect).or_default();
        q.retain(|w| w.link.state() != LinkState::Down);
        while q.len() < self.size {
            q.push_back(open());
        }
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Idle connections of `dialect` (down ones included until the next take or fill).
    pub fn len(&self, dialect: Dialect) -> usize {
        self.lock().get(&dialect).map_or(0, VecDeque::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Dialect, VecDeque<Warm>>> {
        // A panic elsewhere while holding the lock leaves the map whole: keep using it.
        self.links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU8;

    use super::*;
    use crate::mailbox;

    fn warm(state: LinkState) -> Warm {
        let (tx, _rx) = mailbox::channel();
        Warm {
            link: Link {
                tx,
                depth: 1,
                state: Arc::new(AtomicU8::new(state as u8)),
            },
            id: Arc::default(),
        }
    }

    #[test]
    fn should_fill_to_its_size_and_hand_out_up_connections_first() {
        let pool = WarmPool::new(2);
        let d = Dialect::DEFAULT;
        let mut states = vec![LinkState::Up, LinkState::Connecting];
        pool.fill(d, || warm(states.pop().unwrap()));
        assert_eq!(pool.len(d), 2);
        let first = pool.take(d).unwrap();
        assert_eq!(first.link.state(), LinkState::Up);
        let second = pool.take(d).unwrap();
        assert_eq!(second.link.state(), LinkState::Connecting);
        assert!(pool.take(d).is_none());
        assert!(
            pool.take(Dialect::resp(crate::protocol::encode::Proto::Resp3))
                .is_none()
        );
    }

    #[test]
    fn should_drop_down_connections_and_replace_them() {
        let pool = WarmPool::new(2);
        let d = Dialect::DEFAULT;
        pool.fill(d, || warm(LinkState::Down));
        assert!(
            pool.take(d).is_none(),
            "a down connection is never handed out"
        );
        let mut opened = 0;
        pool.fill(d, || {
            opened += 1;
            warm(LinkState::Up)
        });
        assert_eq!(opened, 2);
        pool.fill(d, || unreachable!("full"));
        pool.clear();
        assert_eq!(pool.len(d), 0);
    }

    #[test]
    fn should_hold_nothing_when_sized_zero() {
        let pool = WarmPool::new(0);
        pool.fill(Dialect::DEFAULT, || unreachable!("size 0 opens nothing"));
        assert!(pool.take(Dialect::DEFAULT).is_none());
    }
}
