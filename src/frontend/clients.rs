//! The registry of slotgate's own clients, for `CLIENT LIST` and `CLIENT KILL`: who is
//! connected, since when, under which name, and how to stop each session.
//!
//! A lock is taken on connect, disconnect, SETNAME, LIST and KILL only; never per request. It
//! must never list or kill a backend's clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;

use crate::backend::{BackendReply, mailbox};

/// The tag that tells a session it was killed.
pub const KILL: u64 = u64::MAX - 3;

#[derive(Debug)]
struct Registered {
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    name: Option<Vec<u8>>,
    since: Instant,
    wake: mailbox::Sender<BackendReply>,
}

#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: Mutex<BTreeMap<u64, Registered>>,
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
    pub fn register(
        &self,
        id: u64,
        addr: SocketAddr,
        laddr: Option<SocketAddr>,
        wake: mailbox::Sender<BackendReply>,
    ) {
        if let Ok(mut m) = self.clients.lock() {
            m.insert(
                id,
                Registered {
                    addr,
                    laddr,
                    name: None,
                    since: Instant::now(),
                    wake,
                },
            );
        }
    }

    pub fn unregister(&self, id: u64) {
        if let Ok(mut m) = self.clients.lock() {
            m.remove(&id);
        }
    }

    pub fn set_name(&self, id: u64, name: Option<Vec<u8>>) {
        if let Ok(mut m) = self.clients.lock()
            && let Some(c) = m.get_mut(&id)
        {
            c.name = name;
        }
    }

    /// `CLIENT LIST` lines (the fields a proxy knows; the others as Redis prints them for an
    /// idle client), optionally only the given ids.
    pub fn list(&self, ids: Option<&[u64]>) -> String {
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
            let laddr = c.laddr.map(|a| a.to_string()).unwrap_or_default();
            out.push_str(&format!(
                "id={id} addr={} laddr={laddr} fd=-1 name={name} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 cmd=NULL user=default redir=-1 resp=2\n",
                c.addr,
                c.since.elapsed().as_secs(),
            ));
        }
        out
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
                    .is_some_and(|a| a != c.addr.to_string())
                || filter.skip == Some(*id)
            {
                continue;
            }
            let _ = c.wake.send(BackendReply {
                tag: KILL,
                result: Ok(Bytes::new()),
            });
            n += 1;
        }
        n
    }
}
