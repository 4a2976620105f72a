//! Keyspace notifications across a cluster. Redis publishes `__keyspace@<db>__:<key>` and
//! `__keyevent@<db>__:<event>` on the node that holds the key only (they do not cross the
//! cluster bus, unlike PUBLISH), so a client subscribed through slotgate's one subscriber
//! connection would see one master's events. For every channel or pattern a client subscribes
//! to that can name such a channel, slotgate subscribes it also on every other master, on one
//! connection per master, and merges their events into the client's stream.
//!
//! The client sees one server: the other connections' confirmations are hidden, and the
//! subscriber connection's frames are held back until every other master confirmed, so that
//! once the client has its confirmation no event of any master is missed. Those connections
//! forward only keyspace and keyevent messages: anything else (a PUBLISH, which every node
//! delivers) already comes from the subscriber connection and must never reach the client twice.
//! This module never routes by itself: the session gives it the masters.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, warn};

use super::shard_channels::Resubscribe;
use super::subscriptions::{bulk, kind_and_name};
use super::tag::{self, FORGET, Tag};
use crate::backend::{BackendReply, BackendRequest, Node, NodeAddr, PrivateLink, ReplyTo};
use crate::error::BackendError;
use crate::mailbox;
use crate::protocol::encode::Proto;
use crate::protocol::{ReplyKind, Request};

/// The channel prefixes Redis publishes keyspace notifications under.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// Longest the subscriber connection's frames are held for a master that has not confirmed
/// (a stalled node): then they go on, and that master's events come when it answers.
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// Most subscriber frames held while waiting for confirmations.
const HOLD_FRAMES: usize = 10_000;

/// Repair rounds (one per retry tick of the session, 200 ms) before giving up for now.
const MAX_ATTEMPTS: u32 = 150;

/// Whether `channel` is a keyspace or keyevent notification channel.
pub fn is_event_channel(channel: &[u8]) -> bool {
    PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// Whether a glob pattern (Redis' `stringmatchlen` syntax: `*`, `?`, `[...]`, `\x`) can match
/// some keyspace or keyevent channel. Conservative: a character class counts as matching, since
/// the frames are checked again when they arrive ([`is_event_channel`]). Linear: a `*` ends the
/// walk.
pub fn may_match_events(pattern: &[u8]) -> bool {
    PREFIXES.iter().any(|p| may_match_prefix(pattern, p))
}

fn may_match_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    let mut i = 0;
    for &want in prefix {
        match pattern.get(i) {
            None => return false,
            Some(b'*') => return true,
            Some(b'?') => i += 1,
            Some(b'[') => {
                // Skip the class to its closing `]` (an escaped one does not close it).
                i += 1;
                while let Some(&c) = pattern.get(i) {
                    i += if c == b'\\' { 2 } else { 1 };
                    if c == b']' {
                        break;
                    }
                }
            }
            Some(b'\\') => {
                if pattern.get(i + 1) != Some(&want) {
                    return false;
                }
                i += 2;
            }
            Some(&c) => {
                if c != want {
                    return false;
                }
                i += 1;
            }
        }
    }
    true
}

/// The channel a `message` or `pmessage` frame (RESP2 or RESP3 push) was published on.
fn message_channel(frame: &[u8]) -> Option<&[u8]> {
    let (rest, pattern) = if let Some(r) = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))
    {
        (r, false)
    } else {
        let r = frame
            .strip_prefix(b"*4\r\n")
            .or_else(|| frame.strip_prefix(b">4\r\n"))?;
        (r, true)
    };
    let (kind, rest) = bulk(rest)?;
    let rest = match (kind?, pattern) {
        (b"message", false) => rest,
        (b"pmessage", true) => bulk(rest)?.1,
        _ => return None,
    };
    bulk(rest)?.0
}

/// What to do with a frame of one of these connections.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// An event: give it to the client.
    Forward(Bytes),
    /// Slotgate's own business (a confirmation, a message every node delivers).
    Hide,
    /// The connection broke: subscribe that master again later.
    Lost,
}

/// Which of the two kinds of subscription a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channels,
    Patterns,
}

/// Where the connections go: every master of `all` but `primary`, the subscriber connection's,
/// speaking `proto` and answering on `tx`.
pub struct Masters<'a> {
    pub all: &'a [Arc<Node>],
    pub primary: &'a NodeAddr,
    pub proto: Proto,
    pub tx: &'a mailbox::Sender<BackendReply>,
}

struct EventLink {
    link: PrivateLink,
    tag: Tag,
    /// Subscription confirmations still to come.
    awaiting: usize,
}

/// A session's keyspace event connections. Most sessions never subscribe to keyspace events:
/// until one does, this is one pointer.
#[derive(Default)]
pub struct KeyspaceEvents(Option<Box<State>>);

#[derive(Default)]
struct State {
    /// The client's subscriptions that can name an event channel.
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    /// One per master other than the subscriber connection's.
    links: Vec<EventLink>,
    next_tag: u64,
    /// Subscriber connection frames held until every link confirmed.
    held: VecDeque<Bytes>,
    holding_since: Option<Instant>,
    /// Repair rounds since every master last had a connection.
    attempts: u32,
}

impl KeyspaceEvents {
    /// Whether the client has any subscription that needs the other masters.
    pub fn is_active(&self) -> bool {
        self.0.is_some()
    }

    /// A client's SUBSCRIBE or PSUBSCRIBE (`Kind` says which), after it went to the subscriber
    /// connection at `primary`: its names that can be event channels are subscribed on every
    /// other master of `to` too. See [`Self::repair`] for what it returns.
    pub fn subscribe(&mut self, kind: Kind, req: &Request, to: &Masters<'_>) -> Resubscribe {
        let names: Vec<&[u8]> = (1..req.argc())
            .filter_map(|i| req.arg(i))
            .filter(|n| match kind {
                Kind::Channels => is_event_channel(n),
                Kind::Patterns => may_match_events(n),
            })
            .collect();
        if names.is_empty() {
            return Resubscribe::Done;
        }
        let s = self.0.get_or_insert_with(Box::default);
        let set = match kind {
            Kind::Channels => &mut s.channels,
            Kind::Patterns => &mut s.patterns,
        };
        set.extend(names.iter().map(|n| n.to_vec()));
        let frame = command(kind, true, &names);
        for l in &mut s.links {
            l.send(frame.clone(), names.len(), to.tx);
        }
        s.attempts = 0;
        s.round(to)
    }

    /// A client's UNSUBSCRIBE or PUNSUBSCRIBE: the names it leaves (all of that kind when it
    /// names none) are left on the other masters too; with no subscription left, their
    /// connections close. Returns the subscriber frames that were held, to be given to the
    /// client now.
    pub fn unsubscribe(
        &mut self,
        kind: Kind,
        req: &Request,
        tx: &mailbox::Sender<BackendReply>,
    ) -> VecDeque<Bytes> {
        let Some(s) = &mut self.0 else {
            return VecDeque::new();
        };
        let set = match kind {
            Kind::Channels => &mut s.channels,
            Kind::Patterns => &mut s.patterns,
        };
        let leaving: Vec<Vec<u8>> = if req.argc() <= 1 {
            std::mem::take(set).into_iter().collect()
        } else {
            (1..req.argc())
                .filter_map(|i| req.arg(i))
                .filter(|n| set.remove(*n))
                .map(<[u8]>::to_vec)
                .collect()
        };
        if !leaving.is_empty() {
            let frame = command(kind, false, &leaving);
            for l in &mut s.links {
                l.send(frame.clone(), 0, tx);
            }
        }
        if s.channels.is_empty() && s.patterns.is_empty() {
            return self.clear();
        }
        VecDeque::new()
    }

    /// Closes every connection; returns the held subscriber frames.
    pub fn clear(&mut self) -> VecDeque<Bytes> {
        self.0.take().map(|s| s.held).unwrap_or_default()
    }

    /// A subscriber connection frame: the frames to give the client now, in order (none while
    /// some master has not confirmed yet: the frame is held).
    pub fn hold(&mut self, frame: Bytes, now: Instant) -> VecDeque<Bytes> {
        let mut out = self.released(now);
        match &mut self.0 {
            Some(s) if s.holding_since.is_some() => s.held.push_back(frame),
            _ => out.push_back(frame),
        }
        out
    }

    /// Held frames that may go to the client now (every master confirmed, or the hold ran out).
    pub fn released(&mut self, now: Instant) -> VecDeque<Bytes> {
        let Some(s) = &mut self.0 else {
            return VecDeque::new();
        };
        let waiting = s.links.iter().any(|l| l.awaiting > 0);
        let expired = s
            .holding_since
            .is_some_and(|t| now.duration_since(t) >= HOLD_LIMIT || s.held.len() >= HOLD_FRAMES);
        if waiting && !expired {
            return VecDeque::new();
        }
        if waiting {
            warn!("a master did not confirm keyspace event subscriptions in time; going on");
            for l in &mut s.links {
                l.awaiting = 0;
            }
        }
        s.holding_since = None;
        std::mem::take(&mut s.held)
    }

    /// Whether frames are held (the session then checks again on its retry timer).
    pub fn is_holding(&self) -> bool {
        self.0.as_ref().is_some_and(|s| s.holding_since.is_some())
    }

    /// A frame (or the end) of the connection tagged `tag`.
    pub fn on_frame(&mut self, tag: Tag, result: Result<Bytes, BackendError>) -> Frame {
        let Some(s) = &mut self.0 else {
            return Frame::Hide;
        };
        let Some(pos) = s.links.iter().position(|l| l.tag == tag) else {
            return Frame::Hide;
        };
        let frame = match result {
            Ok(f) => f,
            Err(e) => {
                let l = s.links.remove(pos);
                debug!(node = %l.link.addr(), error = %e, "lost a keyspace event connection");
                s.attempts = 0;
                return Frame::Lost;
            }
        };
        if message_channel(&frame).is_some_and(is_event_channel) {
            return Frame::Forward(frame);
        }
        let Some(l) = s.links.get_mut(pos) else {
            return Frame::Hide;
        };
        if ReplyKind::of(&frame) == ReplyKind::Error {
            // An error answers a whole command; the count it stood for is unknown here.
            warn!(node = %l.link.addr(), reply = %String::from_utf8_lossy(&frame).trim_end(),
                "a master refused keyspace event subscriptions");
            l.awaiting = 0;
        } else if let Some((b"subscribe" | b"psubscribe", _)) = kind_and_name(&frame) {
            l.awaiting = l.awaiting.saturating_sub(1);
        }
        Frame::Hide
    }

    /// Opens the connections missing for `to` (the subscriber connection's master needs
    /// none) and closes those of nodes that are no longer masters: `Done` when
    /// every master has one and nothing is held, `Again` to be called again later, `GaveUp`
    /// after `MAX_ATTEMPTS` rounds without a connection to every master (tried again at the
    /// client's next subscription or a lost connection).
    pub fn repair(&mut self, to: &Masters<'_>) -> Resubscribe {
        match &mut self.0 {
            Some(s) => s.round(to),
            None => Resubscribe::Done,
        }
    }
}

impl EventLink {
    fn send(&mut self, frame: Bytes, confirmations: usize, tx: &mailbox::Sender<BackendReply>) {
        self.awaiting += confirmations;
        self.link.send(BackendRequest::new(
            frame,
            ReplyTo {
                tx: tx.clone(),
                tag: FORGET,
            },
        ));
    }
}

impl State {
    /// See [`KeyspaceEvents::repair`].
    fn round(&mut self, to: &Masters<'_>) -> Resubscribe {
        let complete = self.reconcile(to);
        self.start_holding();
        if complete {
            self.attempts = 0;
            return if self.holding_since.is_some() {
                Resubscribe::Again
            } else {
                Resubscribe::Done
            };
        }
        self.attempts += 1;
        if self.attempts >= MAX_ATTEMPTS {
            warn!(
                "found no connection to every master for keyspace events; some events are missed"
            );
            Resubscribe::GaveUp
        } else {
            Resubscribe::Again
        }
    }

    /// Opens and closes connections for `masters`: true when every one but `primary` has one.
    fn reconcile(&mut self, to: &Masters<'_>) -> bool {
        let wanted = |a: &NodeAddr| a != to.primary && to.all.iter().any(|m| m.addr() == a);
        self.links.retain(|l| wanted(l.link.addr()));
        let mut complete = true;
        for m in to.all {
            if m.addr() == to.primary || self.links.iter().any(|l| l.link.addr() == m.addr()) {
                continue;
            }
            if !m.is_up() {
                complete = false;
                continue;
            }
            let t = tag::keyspace(self.next_tag);
            self.next_tag += 1;
            let link = match m.subscriber(
                to.proto,
                ReplyTo {
                    tx: to.tx.clone(),
                    tag: t,
                },
            ) {
                Ok(link) => link,
                Err(e) => {
                    debug!(node = %m.addr(), error = %e, "no keyspace event connection");
                    complete = false;
                    continue;
                }
            };
            let mut l = EventLink {
                link,
                tag: t,
                awaiting: 0,
            };
            for (kind, set) in [
                (Kind::Channels, &self.channels),
                (Kind::Patterns, &self.patterns),
            ] {
                if !set.is_empty() {
                    let names: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
                    l.send(command(kind, true, &names), names.len(), to.tx);
                }
            }
            self.links.push(l);
        }
        complete
    }

    fn start_holding(&mut self) {
        if self.holding_since.is_none() && self.links.iter().any(|l| l.awaiting > 0) {
            self.holding_since = Some(Instant::now());
        }
    }
}

/// `[P]SUBSCRIBE names...` or `[P]UNSUBSCRIBE names...`.
fn command<N: AsRef<[u8]>>(kind: Kind, subscribe: bool, names: &[N]) -> Bytes {
    let verb: &[u8] = match (kind, subscribe) {
        (Kind::Channels, true) => b"SUBSCRIBE",
        (Kind::Patterns, true) => b"PSUBSCRIBE",
        (Kind::Channels, false) => b"UNSUBSCRIBE",
        (Kind::Patterns, false) => b"PUNSUBSCRIBE",
    };
    let mut args: Vec<&[u8]> = Vec::with_capacity(names.len() + 1);
    args.push(verb);
    args.extend(names.iter().map(AsRef::as_ref));
    let mut out = BytesMut::new();
    out.extend_from_slice(Request::from_args(&args).raw());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_tell_event_channels() {
        assert!(is_event_channel(b"__keyspace@0__:k"));
        assert!(is_event_channel(b"__keyevent@0__:set"));
        assert!(!is_event_channel(b"__keys"));
        assert!(!is_event_channel(b"news"));
    }

    #[test]
    fn should_tell_patterns_that_may_match_event_channels() {
        for p in [
            "*",
            "__key*",
            "__keyspace@0__:*",
            "__keyevent@*",
            "__k?y*",
            "__key[se]*",
            "__keys[p]ace@0__:k",
            "\\_\\_keyevent@0__:set",
            "__keyspace@",
            // A `*` ends the walk: what follows it is not checked.
            "_*x",
        ] {
            assert!(may_match_events(p.as_bytes()), "{p}");
        }
        for p in ["news*", "__key", "__kex*", "\\*", "", "__keyspace"] {
            assert!(!may_match_events(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn should_find_the_channel_of_messages_only() {
        assert_eq!(
            message_channel(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n"),
            Some(&b"ch"[..])
        );
        assert_eq!(
            message_channel(b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$2\r\nch\r\n$1\r\nm\r\n"),
            Some(&b"ch"[..])
        );
        assert_eq!(
            message_channel(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
            None
        );
        assert_eq!(message_channel(b"*4\r\n$7\r\nmessage\r\n"), None);
        assert_eq!(message_channel(b"+PONG\r\n"), None);
    }

    #[test]
    fn should_build_subscription_commands() {
        assert_eq!(
            &command(Kind::Patterns, true, &[&b"__key*"[..]])[..],
            b"*2\r\n$10\r\nPSUBSCRIBE\r\n$6\r\n__key*\r\n"
        );
        assert_eq!(
            &command(Kind::Channels, false, &[b"a".to_vec(), b"b".to_vec()])[..],
            b"*3\r\n$11\r\nUNSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"
        );
    }

    #[test]
    fn should_pass_frames_through_while_nothing_is_awaited() {
        let mut k = KeyspaceEvents::default();
        let f = Bytes::from_static(b"+x\r\n");
        let g = Bytes::from_static(b"+y\r\n");
        let now = Instant::now();
        assert_eq!(k.hold(f.clone(), now), VecDeque::from([f.clone()]));
        let mut s = State::default();
        s.held.push_back(f.clone());
        s.holding_since = Some(now);
        k.0 = Some(Box::new(s));
        assert!(k.is_holding());
        // Nothing awaited: the held frames go at once, before the new one, and nothing more
        // is held.
        assert_eq!(k.hold(g.clone(), now), VecDeque::from([f, g.clone()]));
        assert!(!k.is_holding());
        assert_eq!(k.hold(g.clone(), now), VecDeque::from([g]));
    }
}
