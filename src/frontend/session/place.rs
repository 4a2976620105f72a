//! A request's place in the session's reply queue: the parts it went out in and how their
//! replies combine into the one the client gets (the tags that name a place in backend replies
//! are `frontend::tag`'s).
//!
//! Pure state and pure merging: this module must never send anything or write to the client.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::super::{Context, local};
use crate::backend::{Dialect, Node, PrivateLink};
use crate::command::multi::{self, MergeWith};
use crate::command::{Merge, table};
use crate::metrics::CommandMetrics;
use crate::protocol::encode;

/// Parts of one request that went to backends.
#[derive(Debug)]
pub(super) struct PartState {
    pub(super) request: Bytes,
    /// The command the part carries, as its table entry's number ([`Entry::id`]; EXEC for a
    /// transaction sent whole): what a reply is judged by, so nothing parses `request` again.
    pub(super) command: u16,
    /// The slot the part routes by (`None` for fan-outs to a fixed node).
    pub(super) slot: Option<u16>,
    /// The node the part goes to when it is not routed by slot: a fan-out's fixed node, or the
    /// node the last MOVED or ASK sent it to.
    pub(super) node: Option<Arc<Node>>,
    /// The last redirect was an ASK: a command sent again to `node` needs `ASKING` first.
    pub(super) asking: bool,
    /// A NOSCRIPT was repaired once already (the script loaded on the node, the part sent
    /// again); a second NOSCRIPT is the client's.
    pub(super) script_loaded: bool,
    /// Sent on the session's private connection to the node (blocking commands, WATCH).
    pub(super) private: bool,
    /// The protocol and database the client had when it sent the request: a redirect or retry
    /// sends the part again in them, whatever the client selected since.
    pub(super) dialect: Dialect,
    /// Replies the frame produces before the wanted one (a buffered transaction).
    pub(super) skip: u32,
    pub(super) redirects: u16,
    pub(super) retries: u16,
    /// A read sent under a read policy: the candidate of its shard it went to (0 is the
    /// master), so that a retry after a failure goes to another. `None` for everything else.
    pub(super) read_at: Option<u8>,
    /// The read was sent again once already, after a failure.
    pub(super) reread: bool,
    /// When the failover hold gives up on the part, once it was held (on the hold's clock,
    /// [`super::hold::Deadline`]: four bytes keep a queue place within 128).
    pub(super) hold_until: Option<super::hold::Deadline>,
}

impl PartState {
    pub(super) fn new(
        request: Bytes,
        command: u16,
        slot: Option<u16>,
        node: Option<Arc<Node>>,
        dialect: Dialect,
    ) -> Self {
        PartState {
            request,
            command,
            slot,
            node,
            asking: false,
            script_loaded: false,
            private: false,
            dialect,
            skip: 0,
            redirects: 0,
            retries: 0,
            read_at: None,
            reread: false,
            hold_until: None,
        }
    }
}

/// The argument naming a script in `part`'s request ([`table::script_arg`]: an EVALSHA's SHA1,
/// a SCRIPT LOAD's body), found by the command the part carries.
pub(super) fn script_arg<'p>(ctx: &Context, part: &'p PartState) -> Option<&'p [u8]> {
    let i = table::script_arg(ctx.table.name_of(part.command)?)?;
    crate::protocol::request::arg_of(&part.request, i)
}

/// After an EVAL's reply: remembers the script's body when the node cached it, as Redis does
/// for any script that compiled: the reply is a value, or an error the running script raised
/// (Redis names the script's SHA1 in it). A compile error, BUSY, or an error of slotgate's
/// own means no node holds it.
pub(super) fn remember_eval(ctx: &Context, part: &PartState, reply: &[u8]) {
    let Some(body) = crate::protocol::request::arg_of(&part.request, 1) else {
        return;
    };
    let sha = crate::frontend::scripts::sha1_hex(body);
    let cached = reply.first() != Some(&b'-')
        || reply
            .windows(sha.len() + 8)
            .any(|w| w.starts_with(b"script: ") && w.ends_with(sha.as_bytes()));
    if cached {
        ctx.scripts.remember(&sha, body);
    }
}

/// How a part travels: on a shared pipelined connection of its dialect, or on the session's
/// own (which follows the session's database itself).
#[derive(Debug, Clone, Copy)]
pub(super) struct Via {
    pub(super) private: bool,
    pub(super) skip: u32,
    pub(super) dialect: Dialect,
}

impl Via {
    pub(super) fn shared(dialect: Dialect) -> Via {
        Via {
            private: false,
            skip: 0,
            dialect,
        }
    }

    pub(super) fn private(dialect: Dialect) -> Via {
        Via {
            private: true,
            skip: 0,
            dialect,
        }
    }

    /// How `part` was sent, to send it again the same way.
    pub(super) fn of(part: &PartState) -> Via {
        Via {
            private: part.private,
            skip: part.skip,
            dialect: part.dialect,
        }
    }
}

/// How a request's reply is made from its parts' replies. Kept small (the rare many-part
/// kinds are boxed): queue places are moved on every request.
#[derive(Debug)]
pub(super) enum Combine {
    Single,
    /// A single part whose reply names keys of key families, restored to the application's
    /// names (`colocate`); with a pattern, a SCAN sent without its MATCH, whose restored names
    /// are matched here.
    Restore(Option<Box<Bytes>>),
    /// EXEC under key families: the key names in the replies of the queued commands at these
    /// places restored.
    RestoreExec(Box<ExecNames>),
    /// A SCAN step under key families sent without its MATCH: its cursor rewritten as
    /// [`Combine::Scan`]'s, its names restored, then matched against the pattern.
    ScanMatch(Box<(u32, u32, Bytes)>),
    /// An EVAL: its reply tells whether the node cached the script (see [`remember_eval`]).
    Eval,
    Split(Box<Split>),
    AllMasters(Box<Fanout>),
    /// A SCAN step on master `index` of `masters`: its cursor is rewritten in the reply.
    Scan {
        index: u32,
        masters: u32,
    },
}

/// The elements of EXEC's reply that carry key names (by place among the queued commands),
/// and where each carries them. Boxed in [`Combine`] as a thin pointer.
#[derive(Debug)]
pub(super) struct ExecNames(pub(super) Vec<(u32, crate::families::ReplyNames)>);

/// A multi-key command split per slot.
#[derive(Debug)]
pub(super) struct Split {
    pub(super) merge: Merge,
    pub(super) parts: Vec<multi::Part>,
    pub(super) keys: usize,
    pub(super) gather: Gather,
}

/// A command sent to every master.
#[derive(Debug)]
pub(super) struct Fanout {
    pub(super) merge: Merge,
    pub(super) gather: Gather,
    /// Connections of this request's own (SCRIPT KILL, FUNCTION KILL), held (never read) until
    /// it is answered: a shared connection may be the one stuck behind the very script to kill.
    pub(super) _links: Vec<PrivateLink>,
}

/// The replies of a request sent in several parts, kept until the last one arrives.
#[derive(Debug)]
pub(super) struct Gather {
    pub(super) replies: Vec<Option<Bytes>>,
    pub(super) remaining: usize,
}

impl Gather {
    pub(super) fn new(parts: usize) -> Self {
        Gather {
            replies: vec![None; parts],
            remaining: parts,
        }
    }

    pub(super) fn answered(&self, part: usize) -> bool {
        self.replies.get(part).is_some_and(Option::is_some)
    }

    /// Keeps part `part`'s reply (a second reply for a part is dropped); true once every part
    /// has answered.
    pub(super) fn keep(&mut self, part: usize, reply: Bytes) -> bool {
        if let Some(slot @ None) = self.replies.get_mut(part) {
            *slot = Some(reply);
            self.remaining -= 1;
        }
        self.remaining == 0
    }

    /// The replies in part order.
    pub(super) fn take(&mut self) -> SmallVec<[Bytes; 4]> {
        self.replies
            .iter_mut()
            .map(|r| r.take().unwrap_or_default())
            .collect()
    }
}

impl Combine {
    /// Whether part `part` has already answered (only many-part requests keep replies: a
    /// one-part request is answered as soon as its reply arrives).
    pub(super) fn answered(&self, part: usize) -> bool {
        match self {
            Combine::Split(s) => s.gather.answered(part),
            Combine::AllMasters(f) => f.gather.answered(part),
            Combine::Single
            | Combine::Restore(_)
            | Combine::RestoreExec(_)
            | Combine::ScanMatch(_)
            | Combine::Eval
            | Combine::Scan { .. } => false,
        }
    }
}

/// One request's place in the reply queue, in request order: its reply ready to write, or the
/// parts it still waits for.
#[derive(Debug)]
pub(super) enum QueuePlace {
    Ready(Bytes),
    Waiting {
        combine: Combine,
        parts: SmallVec<[PartState; 1]>,
        /// The command's metric handles and when it arrived (when metrics are on), for its latency.
        cmd: Option<&'static CommandMetrics>,
        started: Option<Instant>,
    },
}

/// The reply of a command every master answered: `replies` and `parts` in master order.
pub(super) fn merge_fanout(
    ctx: &Context,
    proto: encode::Proto,
    merge: Merge,
    replies: &[Bytes],
    parts: &[PartState],
) -> Bytes {
    let mut b = BytesMut::new();
    match merge {
        Merge::Same => {
            // SCRIPT LOAD through slotgate: remember the body, to load it again on a node that
            // lost it (a NOSCRIPT repair).
            if let (Some(first), Some(part)) = (replies.first(), parts.first())
                && ctx.table.name_of(part.command) == Some("script|load")
                && let Some(body) = script_arg(ctx, part)
                && let Some(sha) = multi::bulk_text(first)
            {
                ctx.scripts.remember(&sha, body);
            }
            multi::merge(merge, MergeWith::replies_only(proto), replies, &mut b);
        }
        Merge::RandomKey => {
            let with = MergeWith {
                random: fastrand::u64(..),
                ..MergeWith::replies_only(proto)
            };
            multi::merge(merge, with, replies, &mut b);
        }
        Merge::AllExist => {
            // SCRIPT EXISTS sha...: what every master has, or slotgate can load where missing.
            let held: SmallVec<[bool; 8]> = parts
                .first()
                .map(|p| {
                    (2..)
                        .map_while(|i| crate::protocol::request::arg_of(&p.request, i))
                        .map(|sha| ctx.scripts.body(sha).is_some())
                        .collect()
                })
                .unwrap_or_default();
            let with = MergeWith {
                held: &held,
                ..MergeWith::replies_only(proto)
            };
            multi::merge(merge, with, replies, &mut b);
        }
        Merge::AllOk => {
            multi::merge(merge, MergeWith::replies_only(proto), replies, &mut b);
            // SCRIPT FLUSH done on every master: the bodies slotgate held are gone there too.
            if b.starts_with(b"+OK")
                && parts
                    .first()
                    .is_some_and(|p| ctx.table.name_of(p.command) == Some("script|flush"))
            {
                ctx.scripts.clear();
            }
        }
        Merge::Info => {
            let asked = parts
                .first()
                .map(|p| multi::InfoSections::of(&p.request))
                .unwrap_or_default();
            let section = if asked.proxy {
                local::proxy_info_section(ctx)
            } else {
                String::new()
            };
            // The client's view: slotgate's own clients and commands.
            let own = multi::OwnServer {
                clients: Some((
                    ctx.stats.connections_current.load(Ordering::Relaxed),
                    ctx.stats.commands.load(Ordering::Relaxed),
                )),
                ..ctx.own_server.clone()
            };
            let with = MergeWith {
                proxy_section: &section,
                own_server: Some(&own),
                ..MergeWith::replies_only(proto)
            };
            multi::merge(merge, with, replies, &mut b);
        }
        Merge::Text => {
            let nodes: SmallVec<[&str; 4]> = parts
                .iter()
                .map(|p| p.node.as_ref().map_or("?", |n| &**n.addr()))
                .collect();
            let with = MergeWith {
                nodes: &nodes,
                ..MergeWith::replies_only(proto)
            };
            multi::merge(merge, with, replies, &mut b);
        }
        merge => multi::merge(merge, MergeWith::replies_only(proto), replies, &mut b),
    }
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_gather_replies_in_part_order_and_drop_a_second_reply_for_a_part() {
        let mut g = Gather::new(3);
        assert!(!g.answered(1));
        assert!(!g.keep(2, Bytes::from_static(b":3\r\n")));
        assert!(
            !g.keep(2, Bytes::from_static(b":99\r\n")),
            "a duplicate completes nothing"
        );
        assert!(g.answered(2));
        assert!(!g.keep(0, Bytes::from_static(b":1\r\n")));
        assert!(g.keep(1, Bytes::from_static(b":2\r\n")));
        let replies = g.take();
        assert_eq!(&replies[..], &[&b":1\r\n"[..], b":2\r\n", b":3\r\n"]);
        assert!(!g.answered(5), "a part that does not exist never answered");
    }

    #[test]
    fn should_keep_queue_places_small() {
        // Every request moves its queue place in and out of the queue: past 128 bytes each move
        // is a memcpy call instead of a few register moves.
        let size = std::mem::size_of::<QueuePlace>();
        assert!(size <= 128, "{size} bytes");
    }
}
