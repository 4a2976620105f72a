//! MULTI/EXEC and WATCH for a session: commands queued between MULTI and EXEC are checked as
//! Redis checks them (including CROSSSLOT) and sent at EXEC as one frame to one slot's master;
//! a WATCH holds a private connection until EXEC, DISCARD or UNWATCH.
//!
//! A transaction must never run on a connection that lost its WATCH, and never span two slots.

use bytes::{Bytes, BytesMut};

use super::Session;
use super::place::Via;
use crate::command::{Entry, Local, Rejection, Route, Txn, flags};
use crate::frontend::tag::FORGET;
use crate::protocol::{Request, encode};

impl Session {
    /// A command arriving between MULTI and EXEC: checked now (Redis' queue-time errors,
    /// CROSSSLOT), answered `+QUEUED`, sent at EXEC.
    pub(super) fn queue_in_transaction(&mut self, entry: &Entry, req: &Request) {
        let name = entry.spec.name;
        if entry.spec.has(flags::NO_MULTI) {
            // Redis' own refusal (SAVE, SHUTDOWN, SUBSCRIBE, WATCH ...), which also makes EXEC
            // abort.
            if let Some(t) = &mut self.txn {
                t.abort();
            }
            return self.push_error("ERR Command not allowed inside a transaction");
        }
        let allowed = matches!(
            entry.route,
            Route::Keyed
                | Route::Split { .. }
                | Route::AnyMaster
                | Route::Publish
                | Route::Blocking
                | Route::Local(Local::Ping | Local::Echo)
        );
        if !allowed {
            if let Some(t) = &mut self.txn {
                t.abort();
            }
            return self.push_error(&format!(
                "ERR '{name}' cannot be used inside MULTI through slotgate"
            ));
        }
        let slot = match entry.route {
            Route::Keyed | Route::Split { .. } | Route::Blocking => {
                match self.slot_for(entry, req) {
                    Ok(s) => s,
                    Err(r) => {
                        if let Some(t) = &mut self.txn {
                            t.abort();
                        }
                        return self.reject(r);
                    }
                }
            }
            _ => None,
        };
        // Under key families, the key names this command's reply carries are restored in
        // EXEC's reply.
        let names =
            (self.client.config.families.as_ref()).and_then(|_| crate::families::reply_names(name));
        let watched = self.watching.flatten();
        let Some(txn) = &mut self.txn else { return };
        let conflict = txn
            .bind(slot)
            .err()
            .map(|c| (c.bound, c.other))
            .or(match (watched, slot) {
                (Some(w), Some(s)) if w != s => Some((w, s)),
                _ => None,
            });
        if let Some((a, b)) = conflict {
            txn.abort();
            return self.reject(Rejection::CrossSlot {
                slots: format!("{a}, {b}"),
            });
        }
        txn.queue(req.raw(), names);
        let mut b = BytesMut::new();
        encode::simple(&mut b, "QUEUED");
        self.push_ready(b.freeze());
    }

    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH.
    pub(super) fn transaction(&mut self, t: Txn, entry: &Entry, req: &Request) {
        let mut b = BytesMut::new();
        match t {
            Txn::Multi => {
                if self.txn.is_some() {
                    return self.push_error("ERR MULTI calls can not be nested");
                }
                self.txn = Some(Box::default());
                encode::ok(&mut b);
                self.push_ready(b.freeze());
            }
            Txn::Exec => {
                let Some(txn) = self.txn.take() else {
                    return self.push_error("ERR EXEC without MULTI");
                };
                let watched = self.watching.take();
                if txn.is_aborted() {
                    if let Some(w) = watched {
                        self.forget_watch(w);
                    }
                    return self
                        .push_error("EXECABORT Transaction discarded because of previous errors.");
                }
                let slot = txn.slot().or(watched.flatten());
                let exec = txn.into_exec();
                // The place EXEC's reply takes.
                let seq = self.next_seq();
                let via = if let Some(w) = watched {
                    // The WATCH lives on one private connection; if that is gone, so is the
                    // WATCH, and running the transaction would ignore it: answer as a failed
                    // WATCH does, with a null reply, and let the client retry. So too when its
                    // node is paused (Sentinel is failing it over):
                    // the transaction cannot run there, and nowhere else under the WATCH.
                    let holder = self
                        .route(w)
                        .filter(|n| !n.is_paused())
                        .map(|n| n.addr().clone());
                    let alive = holder.is_some_and(|a| {
                        self.privates
                            .iter()
                            .any(|p| *p.addr() == a && p.is_usable())
                    });
                    if !alive {
                        encode::null_array(&mut b, self.client.proto);
                        return self.push_ready(b.freeze());
                    }
                    Via::private(self.client.dialect())
                } else {
                    Via::shared(self.client.dialect())
                };
                let skip = exec.skip;
                self.send_single_via(entry.id, exec.frame, slot, Via { skip, ..via });
                if !exec.names.is_empty() {
                    self.restore_exec_names(seq, exec.names);
                }
            }
            Txn::Discard => {
                if self.txn.take().is_none() {
                    return self.push_error("ERR DISCARD without MULTI");
                }
                if let Some(w) = self.watching.take() {
                    self.forget_watch(w);
                }
                encode::ok(&mut b);
                self.push_ready(b.freeze());
            }
            Txn::Watch => {
                if self.txn.is_some() {
                    return self.push_error("ERR WATCH inside MULTI is not allowed");
                }
                let slot = match self.slot_for(entry, req) {
                    Ok(s) => s,
                    Err(r) => return self.reject(r),
                };
                if let Some(w) = self.watching
                    && let (Some(a), Some(b)) = (w, slot)
                    && a != b
                {
                    return self.reject(Rejection::CrossSlot {
                        slots: format!("{a}, {b}"),
                    });
                }
                self.watching = Some(slot);
                self.send_single_via(
                    entry.id,
                    req.raw().clone(),
                    slot,
                    Via::private(self.client.dialect()),
                );
            }
            Txn::Unwatch => match self.watching.take() {
                Some(w) => {
                    let via = Via::private(self.client.dialect());
                    self.send_single_via(entry.id, req.raw().clone(), w, via)
                }
                None => {
                    encode::ok(&mut b);
                    self.push_ready(b.freeze());
                }
            },
        }
    }

    /// Clears a WATCH the client no longer needs, without a place in the reply queue.
    fn forget_watch(&mut self, slot: Option<u16>) {
        if let Some(node) = self.route(slot) {
            self.send_to(
                &node,
                FORGET,
                Bytes::from_static(b"*1\r\n$7\r\nUNWATCH\r\n"),
                false,
                Via::private(self.client.dialect()),
            );
        }
    }
}
