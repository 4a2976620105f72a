//! The registry of slotgate's own clients, for `CLIENT LIST` and `CLIENT KILL`: who is
//! connected, since when, under which name, and how to stop each session; and what their
//! buffers hold against the memory budget (`memory_budget`), closing the largest past it.
//!
//! A lock is taken on connect, disconnect, SETNAME, LIST, KILL and an eviction only; never per
//! request. It must never list or kill a backend's clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::backend::BackendReply;
use crate::command::Table;
use crate::mailbox;
use tracing::warn;

use super::memory_budget::{self, MemoryBudget};

use super::tag::{DRAIN, KILL, PAUSE, RECONFIGURE, RESUME, Tag, UNBLOCK};

/// Wakes a session with a signal (`tag`); a session that has gone is no one's concern.
fn signal(wake: &mailbox::Sender<BackendReply>, tag: Tag) {
    let _ = wake.send(BackendReply {
        tag,
        result: Ok(Bytes::new()),
    });
}

#[derive(Debug)]
struct Registered {
    addr: Peer,
    laddr: Option<Peer>,
    fd: i32,
    name: Option<Vec<u8>>,
    /// The protocol the client chose (HELLO): 2 or 3.
    resp: u8,
    /// The database the client selected.
    db: u32,
    /// The user it is logged in as.
    user: String,
    since: Instant,
    wake: mailbox::Sender<BackendReply>,
    live: Arc<Live>,
}

/// What a session updates on every request without taking the registry's lock: one relaxed
/// store, on a line only its own thread writes.
#[derive(Debug)]
pub struct Live {
    /// The [`crate::command::Entry::id`] of the last command, `NONE` before the first.
    cmd: AtomicU32,
    /// Bytes the session's own buffers hold, as last charged to the memory budget.
    mem: AtomicUsize,
    /// Set (to `mem` then) when the budget closed this client: bytes counted as being freed.
    evicted: AtomicUsize,
}

impl Live {
    const NONE: u32 = u32::MAX;

    #[inline]
    pub fn set_command(&self, id: u16) {
        self.cmd.store(u32::from(id), Ordering::Relaxed);
    }
}

/// Where a client is connected: for CLIENT LIST.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub peer: Peer,
    pub local: Option<Peer>,
    /// The socket's file descriptor (-1 when there is none, as for Redis' fake clients).
    pub fd: i32,
}

/// One end of a client's connection: a TCP address, or the Unix socket listener (whose path
/// the registry holds once, and CLIENT LIST shows as Redis shows a Unix-socket client,
/// `path:0`). Copy and no larger than a `SocketAddr`: every idle client keeps two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix,
}

impl Peer {
    /// The address's IP, for what is kept per client address (the AUTH throttle); every client
    /// of a Unix socket counts as one address, `::`.
    pub fn ip(&self) -> std::net::IpAddr {
        match self {
            Peer::Tcp(a) => a.ip(),
            Peer::Unix => std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Unix => f.write_str("unix-socket"),
        }
    }
}

#[derive(Debug, Default)]
pub struct ClientRegistry {
    /// The Unix socket listener's path, for the clients connected through it.
    unix_socket: Option<Arc<str>>,
    clients: Mutex<BTreeMap<u64, Registered>>,
    /// CLIENT UNBLOCK requests not yet taken by the session they name.
    unblocks: Mutex<Vec<Unblock>>,
    /// What every client's buffers hold, against `clients.memory_budget_bytes`.
    pub budget: MemoryBudget,
}

/// `CLIENT UNBLOCK id TIMEOUT|ERROR`, on its way to the session of client `id`: that session
/// sends it to the node it is blocked on, naming its own connection there, with the asking
/// client's reply address, so the node's `:1`/`:0` answers the asker and the blocked command
/// gets the node's own timeout or error reply.
#[derive(Debug)]
pub struct Unblock {
    pub target: u64,
    pub error: bool,
    pub reply_to: crate::backend::ReplyTo,
}

/// Which clients `CLIENT KILL` targets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KillFilter {
    pub id: Option<u64>,
    pub addr: Option<String>,
    /// The client asking, spared unless `SKIPME no`.
    pub skip: Option<u64>,
}

impl ClientRegistry {
    /// A registry whose clients' buffers together may hold `budget` bytes (`None`: any), with
    /// the path of the Unix socket listener when there is one.
    pub fn new(budget: Option<usize>, unix_socket: Option<Arc<str>>) -> Self {
        ClientRegistry {
            budget: MemoryBudget::new(budget),
            unix_socket,
            ..Default::default()
        }
    }

    /// A client's address as CLIENT LIST shows it: `ip:port`, or `path:0` for a Unix socket.
    fn shown(&self, peer: &Peer) -> String {
        match peer {
            Peer::Tcp(a) => a.to_string(),
            Peer::Unix => format!("{}:0", self.unix_socket.as_deref().unwrap_or_default()),
        }
    }

    /// Session `live` now holds `new` bytes of its own instead of `old`; past the budget, the
    /// clients holding the most are told to close.
    pub fn charge(&self, live: &Live, old: usize, new: usize) {
        live.mem.store(new, Ordering::Relaxed);
        if self.budget.recharge(old, new) {
            self.evict();
        }
    }

    /// Closes the clients holding the most until the rest fit the budget, as Redis evicts
    /// clients past `maxmemory-clients`; one log line each.
    #[cold]
    fn evict(&self) {
        let Ok(m) = self.clients.lock() else { return };
        // Under the lock: another eviction may have covered the excess meanwhile.
        let excess = self.budget.excess();
        if excess == 0 {
            return;
        }
        let mut holdings: Vec<(u64, usize)> = m
            .iter()
            .filter(|(_, c)| c.live.evicted.load(Ordering::Relaxed) == 0)
            .map(|(id, c)| (*id, c.live.mem.load(Ordering::Relaxed)))
            .collect();
        for id in memory_budget::victims(&mut holdings, excess) {
            let Some(c) = m.get(&id) else { continue };
            let held = c.live.mem.load(Ordering::Relaxed).max(1);
            c.live.evicted.store(held, Ordering::Relaxed);
            self.budget.closing(held);
            warn!(
                client = id,
                addr = %c.addr,
                held,
                total = self.budget.total(),
                budget = self.budget.limit().unwrap_or(0),
                "closing client: clients' buffers are past the memory budget (clients.memory_budget_bytes); it holds the most"
            );
            signal(&c.wake, KILL);
        }
    }

    /// Registers a session; what it updates per request is in the [`Live`] returned.
    pub fn register(
        &self,
        id: u64,
        at: Endpoint,
        wake: mailbox::Sender<BackendReply>,
    ) -> Arc<Live> {
        let live = Arc::new(Live {
            cmd: AtomicU32::new(Live::NONE),
            mem: AtomicUsize::new(0),
            evicted: AtomicUsize::new(0),
        });
        if let Ok(mut m) = self.clients.lock() {
            m.insert(
                id,
                Registered {
                    addr: at.peer,
                    laddr: at.local,
                    fd: at.fd,
                    name: None,
                    resp: 2,
                    db: 0,
                    user: "default".into(),
                    since: Instant::now(),
                    wake,
                    live: live.clone(),
                },
            );
        }
        live
    }

    pub fn unregister(&self, id: u64) {
        let gone = self.clients.lock().ok().and_then(|mut m| m.remove(&id));
        if let Some(c) = gone {
            // What it held goes back to the budget, and so does the credit of its eviction.
            self.budget
                .recharge(c.live.mem.swap(0, Ordering::Relaxed), 0);
            let freeing = c.live.evicted.swap(0, Ordering::Relaxed);
            if freeing > 0 {
                self.budget.closed(freeing);
            }
        }
        // A client that left is blocked no more.
        for u in self.take_unblocks(id) {
            u.reply_to.send(Ok(Bytes::from_static(b":0\r\n")));
        }
    }

    /// Records what HELLO, SETNAME and RESET change: the name and the protocol.
    pub fn set_identity(&self, id: u64, name: Option<Vec<u8>>, resp: u8) {
        if let Ok(mut m) = self.clients.lock()
            && let Some(c) = m.get_mut(&id)
        {
            c.name = name;
            c.resp = resp;
        }
    }

    /// Records the user a client logged in as.
    pub fn set_user(&self, id: u64, user: &str) {
        if let Ok(mut m) = self.clients.lock()
            && let Some(c) = m.get_mut(&id)
        {
            c.user.clear();
            c.user.push_str(user);
        }
    }

    /// Records the database a client selected.
    pub fn set_db(&self, id: u64, db: u32) {
        if let Ok(mut m) = self.clients.lock()
            && let Some(c) = m.get_mut(&id)
        {
            c.db = db;
        }
    }

    /// `CLIENT LIST` lines (the fields a proxy knows; the others as Redis prints them for an
    /// idle client), optionally only the given ids.
    pub fn list(&self, ids: Option<&[u64]>, table: &Table) -> String {
        let Ok(m) = self.clients.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for (id, c) in m.iter() {
            if ids.is_some_and(|ids| !ids.contains(id)) {
                continue;
            }
            let name = c
                .name
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let laddr = c.laddr.map(|a| self.shown(&a)).unwrap_or_default();
            let cmd = u16::try_from(c.live.cmd.load(Ordering::Relaxed))
                .ok()
                .and_then(|i| table.name_of(i))
                .unwrap_or("NULL");
            out.push_str(&format!(
                "id={id} addr={} laddr={laddr} fd={} name={name} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi=-1 cmd={cmd} user={} redir=-1 resp={}\n",
                self.shown(&c.addr),
                c.fd,
                c.since.elapsed().as_secs(),
                c.db,
                c.user,
                c.resp,
            ));
        }
        out
    }

    /// Hands `u` to the session of client `u.target`; `Err(u)` when there is no such client.
    pub fn unblock(&self, u: Unblock) -> Result<(), Unblock> {
        let Ok(m) = self.clients.lock() else {
            return Err(u);
        };
        let Some(c) = m.get(&u.target) else {
            return Err(u);
        };
        let wake = c.wake.clone();
        drop(m);
        if let Ok(mut q) = self.unblocks.lock() {
            q.push(u);
        }
        signal(&wake, UNBLOCK);
        Ok(())
    }

    /// The CLIENT UNBLOCK requests naming client `id`, taken.
    pub fn take_unblocks(&self, id: u64) -> Vec<Unblock> {
        let Ok(mut q) = self.unblocks.lock() else {
            return Vec::new();
        };
        q.extract_if(.., |u| u.target == id).collect()
    }

    /// Tells every session that slotgate is draining. A session registered after this call
    /// sees [`super::Context::draining`] set, which is stored before it.
    pub fn drain_all(&self) {
        self.signal_all(DRAIN);
    }

    /// A reload's new memory budget; clients past a lowered one are closed at once, as at
    /// any charge past it.
    pub fn set_memory_budget(&self, limit: Option<usize>) {
        self.budget.set_limit(limit);
        if self.budget.excess() > 0 {
            self.evict();
        }
    }

    /// Tells every session that a reload changed the configuration ([`super::Context::config`],
    /// stored before this call). A session registered after it started with the new one.
    pub fn reconfigure_all(&self) {
        self.signal_all(RECONFIGURE);
    }

    /// Tells every session that the clients are paused (its flag set before this call): the
    /// ids told, for the sessions to answer (a session registered after it starts paused).
    pub fn pause_all(&self) -> Vec<u64> {
        let Ok(m) = self.clients.lock() else {
            return Vec::new();
        };
        for c in m.values() {
            signal(&c.wake, PAUSE);
        }
        m.keys().copied().collect()
    }

    /// Tells every session that the pause ended (its flag cleared before this call).
    pub fn resume_all(&self) {
        self.signal_all(RESUME);
    }

    fn signal_all(&self, tag: Tag) {
        let Ok(m) = self.clients.lock() else { return };
        for c in m.values() {
            signal(&c.wake, tag);
        }
    }

    /// Stops the sessions matching `filter`; how many.
    pub fn kill(&self, filter: &KillFilter) -> usize {
        let Ok(m) = self.clients.lock() else { return 0 };
        let mut n = 0;
        for (id, c) in m.iter() {
            if filter.id.is_some_and(|f| f != *id)
                || filter
                    .addr
                    .as_deref()
                    .is_some_and(|a| *a != self.shown(&c.addr))
                || filter.skip == Some(*id)
            {
                continue;
            }
            signal(&c.wake, KILL);
            n += 1;
        }
        n
    }
}
