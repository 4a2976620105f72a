//! A session's shard channels (SSUBSCRIBE): one subscriber connection per master that owns some
//! of them, and the repairs that keep the client subscribed while the cluster changes.
//!
//! A shard channel lives on its slot's master. When that slot moves away (Redis 7 then sends the
//! client an unasked `sunsubscribe`) or the master's connection breaks, slotgate hides it and
//! subscribes again at the slot's new master, hiding that confirmation too: the client keeps
//! receiving and sees nothing. Confirmation counts are rewritten to the client's total, as one
//! server would count them. This module never routes by itself (the session gives it nodes) and
//! must never show the client a frame of its own repairs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::subscriptions::kind_and_name;
use crate::backend::{BackendReply, BackendRequest, Node, NodeAddr, PrivateLink, ReplyTo};
use crate::error::BackendError;
use crate::mailbox;
use crate::protocol::encode::{self, Proto};
use crate::protocol::{ReplyKind, Request};

// Where the replies to slotgate's own re-subscriptions go: nowhere (their frames come back
// tagged as the connection's).
use super::tag::FORGET;

struct ShardLink {
    link: PrivateLink,
    tag: u64,
    /// The channels this connection confirmed.
    channels: BTreeSet<Vec<u8>>,
    /// SSUBSCRIBEs sent and not fully confirmed, oldest first: their channels and how many
    /// confirmations came. An error frame answers the oldest.
    pending: VecDeque<(Vec<Vec<u8>>, usize)>,
}

impl ShardLink {
    /// Sends `frame`; what it produces comes back as frames of this connection, so its own
    /// reply is not waited for.
    fn send(&self, frame: Bytes, tx: &mailbox::Sender<BackendReply>) {
        self.link.send(BackendRequest::new(
            frame,
            ReplyTo {
                tx: tx.clone(),
                tag: FORGET,
            },
        ));
    }

    fn send_subscribe(
        &mut self,
        frame: Bytes,
        channels: Vec<Vec<u8>>,
        tx: &mailbox::Sender<BackendReply>,
    ) {
        self.send(frame, tx);
        self.pending.push_back((channels, 0));
    }
}

/// What to do with a frame read by a shard subscriber connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Give it to the client.
    Forward(Bytes),
    /// Slotgate's own business; the client must not see it.
    Hide,
    /// A channel was dropped by its node (its slot moved): refresh the topology and subscribe
    /// again later.
    Lost,
}

/// What a re-subscription round did.
#[derive(Debug, PartialEq, Eq)]
pub enum Resubscribe {
    /// Nothing is left to repair.
    Done,
    /// Some channels still wait for their slot's new master: try again later.
    Again,
    /// Gave up: no master could be found for some channels in time.
    GaveUp,
}

/// The node a re-subscription goes to and the channels it carries.
type Planned = (Arc<Node>, Vec<Vec<u8>>);

/// A session's shard channels. Most sessions never SSUBSCRIBE: until one does, this is one
/// pointer, and `clear` gives the state's memory back.
#[derive(Default)]
pub struct ShardChannels(Option<Box<ShardState>>);

#[derive(Default)]
struct ShardState {
    links: Vec<ShardLink>,
    next_tag: u64,
    /// What the client is subscribed to, as it sees it.
    subscribed: BTreeSet<Vec<u8>>,
    /// Channels dropped by their node, with the node that dropped them, to subscribe again.
    lost: BTreeMap<Vec<u8>, Option<NodeAddr>>,
    /// Channels slotgate subscribed again; their confirmations are hidden.
    resubscribing: BTreeSet<Vec<u8>>,
    /// Channels the client asked to leave; their `sunsubscribe` frames are the client's.
    leaving: BTreeSet<Vec<u8>>,
    /// Channels of a client SSUBSCRIBE that met a redirect (slotgate's map was stale), sent
    /// again at the new owner; their confirmations are the client's.
    client_retry: BTreeSet<Vec<u8>>,
    attempts: u32,
}

/// A subscription frame `[kind, name, count]` as one server would send it.
fn frame(proto: Proto, kind: &[u8], name: Option<&[u8]>, count: usize) -> Bytes {
    let mut b = BytesMut::new();
    match proto {
        Proto::Resp2 => encode::array_header(&mut b, 3),
        Proto::Resp3 => b.extend_from_slice(b">3\r\n"),
    }
    encode::bulk(&mut b, kind);
    match name {
        Some(n) => encode::bulk(&mut b, n),
        None => encode::null(&mut b, proto),
    }
    encode::integer(&mut b, count as i64);
    b.freeze()
}

impl ShardChannels {
    /// True when the client has no shard channel.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.subscribed.is_empty())
    }

    /// Whether a connection is open (the client is, or is becoming, subscribed).
    pub fn has_links(&self) -> bool {
        self.0.as_ref().is_some_and(|s| !s.links.is_empty())
    }

    /// Forgets every shard channel and closes their connections.
    pub fn clear(&mut self) {
        self.0 = None;
    }

    fn state(&mut self) -> &mut ShardState {
        self.0.get_or_insert_with(Box::default)
    }

    /// SSUBSCRIBE (all channels of one slot, checked by the caller) on `node`'s connection.
    pub fn subscribe(
        &mut self,
        req: &Request,
        node: &Arc<Node>,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Result<(), BackendError> {
        self.state().subscribe(req, node, proto, tx)
    }

    /// SUNSUBSCRIBE: see [`ShardState::unsubscribe`].
    pub fn unsubscribe(
        &mut self,
        req: &Request,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Vec<Bytes> {
        self.state().unsubscribe(req, proto, tx)
    }

    /// PING while subscribed on a RESP2 connection: on a shard connection, so that its reply
    /// keeps its place after earlier confirmations. False when there is none.
    pub fn ping(&self, req: &Request, tx: &mailbox::Sender<BackendReply>) -> bool {
        self.0.as_ref().is_some_and(|s| s.ping(req, tx))
    }

    /// A frame read by the connection tagged `tag`.
    pub fn on_frame(&mut self, tag: u64, frame_bytes: Bytes, proto: Proto) -> Frame {
        match &mut self.0 {
            Some(s) => s.on_frame(tag, frame_bytes, proto),
            None => Frame::Hide,
        }
    }

    /// The connection tagged `tag` broke: see [`ShardState::on_link_lost`].
    pub fn on_link_lost(&mut self, tag: u64) -> bool {
        self.0.as_mut().is_some_and(|s| s.on_link_lost(tag))
    }

    /// Subscribes the lost channels again: see [`ShardState::resubscribe`].
    pub fn resubscribe(
        &mut self,
        route: impl FnMut(&[u8]) -> Option<Arc<Node>>,
        max_attempts: u32,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Resubscribe {
        match &mut self.0 {
            Some(s) => s.resubscribe(route, max_attempts, proto, tx),
            None => Resubscribe::Done,
        }
    }
}

impl ShardState {
    fn link_for(
        &mut self,
        node: &Arc<Node>,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Result<usize, BackendError> {
        Ok(
            match self.links.iter().position(|l| l.link.addr() == node.addr()) {
                Some(p) => p,
                None => {
                    let tag = super::tag::shard(self.next_tag);
                    self.next_tag += 1;
                    let link = node.subscriber(
                        proto,
                        ReplyTo {
                            tx: tx.clone(),
                            tag,
                        },
                    )?;
                    self.links.push(ShardLink {
                        link,
                        tag,
                        channels: BTreeSet::new(),
                        pending: VecDeque::new(),
                    });
                    self.links.len() - 1
                }
            },
        )
    }

    /// SSUBSCRIBE (all channels of one slot, checked by the caller) on `node`'s connection.
    pub fn subscribe(
        &mut self,
        req: &Request,
        node: &Arc<Node>,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Result<(), BackendError> {
        let mut channels = Vec::with_capacity(req.argc().saturating_sub(1));
        for i in 1..req.argc() {
            if let Some(ch) = req.arg(i) {
                // The client wants it now: no longer slotgate's to repair.
                self.lost.remove(ch);
                self.leaving.remove(ch);
                self.client_retry.remove(ch);
                channels.push(ch.to_vec());
            }
        }
        let pos = self.link_for(node, proto, tx)?;
        if let Some(link) = self.links.get_mut(pos) {
            link.send_subscribe(req.raw().clone(), channels, tx);
        }
        Ok(())
    }

    /// SUNSUBSCRIBE: sent to the connections holding the channels; the frames for channels no
    /// connection holds (never subscribed, or waiting to be subscribed again) are returned to
    /// be answered at once, as one server would answer them.
    pub fn unsubscribe(
        &mut self,
        req: &Request,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Vec<Bytes> {
        let named: Vec<Vec<u8>> = (1..req.argc())
            .filter_map(|i| req.arg(i).map(<[u8]>::to_vec))
            .collect();
        let all = named.is_empty();
        let wanted: Vec<Vec<u8>> = if all {
            self.subscribed.iter().cloned().collect()
        } else {
            named
        };
        if all && wanted.is_empty() {
            return vec![frame(proto, b"sunsubscribe", None, 0)];
        }
        let mut local = Vec::new();
        let mut send_to: BTreeSet<usize> = BTreeSet::new();
        for ch in &wanted {
            match self.links.iter().position(|l| l.channels.contains(ch)) {
                Some(i) => {
                    self.leaving.insert(ch.clone());
                    send_to.insert(i);
                }
                None => {
                    self.lost.remove(ch);
                    self.resubscribing.remove(ch);
                    self.client_retry.remove(ch);
                    self.subscribed.remove(ch);
                    local.push(frame(
                        proto,
                        b"sunsubscribe",
                        Some(ch),
                        self.subscribed.len(),
                    ));
                }
            }
        }
        for i in send_to {
            let Some(l) = self.links.get(i) else { continue };
            let mut args: Vec<&[u8]> = vec![b"SUNSUBSCRIBE"];
            args.extend(
                wanted
                    .iter()
                    .filter(|c| l.channels.contains(*c))
                    .map(Vec::as_slice),
            );
            l.send(Request::from_args(&args).raw().clone(), tx);
        }
        local
    }

    /// PING while subscribed on a RESP2 connection: on a shard connection, so that its reply
    /// keeps its place after earlier confirmations. False when there is none.
    pub fn ping(&self, req: &Request, tx: &mailbox::Sender<BackendReply>) -> bool {
        let Some(l) = self.links.last() else {
            return false;
        };
        l.send(req.raw().clone(), tx);
        true
    }

    /// A frame read by the connection tagged `tag`.
    pub fn on_frame(&mut self, tag: u64, frame_bytes: Bytes, proto: Proto) -> Frame {
        let Some(pos) = self.links.iter().position(|l| l.tag == tag) else {
            return Frame::Hide;
        };
        if ReplyKind::of(&frame_bytes) == ReplyKind::Error {
            return self.on_error(pos, frame_bytes);
        }
        let Some((kind, name)) = kind_and_name(&frame_bytes) else {
            return Frame::Forward(frame_bytes);
        };
        let (kind, name) = (kind.to_vec(), name.map(<[u8]>::to_vec));
        let Some(link) = self.links.get_mut(pos) else {
            return Frame::Hide;
        };
        match (kind.as_slice(), name) {
            (b"ssubscribe", Some(ch)) => {
                if let Some(front) = link.pending.front_mut() {
                    front.1 += 1;
                    if front.1 >= front.0.len() {
                        link.pending.pop_front();
                    }
                }
                link.channels.insert(ch.clone());
                self.subscribed.insert(ch.clone());
                self.client_retry.remove(&ch);
                if self.resubscribing.remove(&ch) {
                    if self.resubscribing.is_empty() {
                        self.drop_idle_links();
                    }
                    return Frame::Hide;
                }
                Frame::Forward(frame(proto, &kind, Some(&ch), self.subscribed.len()))
            }
            (b"sunsubscribe", Some(ch)) => {
                link.channels.remove(&ch);
                let out = if self.leaving.remove(&ch) {
                    self.subscribed.remove(&ch);
                    Frame::Forward(frame(proto, &kind, Some(&ch), self.subscribed.len()))
                } else if self.subscribed.contains(&ch) {
                    // Not asked for: the node no longer serves the channel's slot.
                    self.lost.insert(ch, Some(link.link.addr().clone()));
                    self.attempts = 0;
                    Frame::Lost
                } else {
                    Frame::Hide
                };
                self.drop_idle_links();
                out
            }
            // Each connection answers a bare SUNSUBSCRIBE it has nothing for; slotgate
            // answers for the whole client instead.
            (b"sunsubscribe", None) => Frame::Hide,
            _ => Frame::Forward(frame_bytes),
        }
    }

    /// An error frame: the answer to the oldest SSUBSCRIBE pending on link `pos`. A redirect
    /// (the slot is not that node's: slotgate's map was stale) sends its channels again once the
    /// map has been refreshed, the client's as the client's; any other error is the client's.
    fn on_error(&mut self, pos: usize, frame_bytes: Bytes) -> Frame {
        let Some(link) = self.links.get_mut(pos) else {
            return Frame::Hide;
        };
        let Some((channels, _)) = link.pending.pop_front() else {
            return Frame::Forward(frame_bytes);
        };
        let addr = link.link.addr().clone();
        let redirected = crate::router::redirect::parse(&frame_bytes).is_some()
            || frame_bytes.starts_with(b"-CLUSTERDOWN");
        let mut clients = false;
        for ch in channels {
            let repair = self.resubscribing.remove(&ch);
            clients |= !repair;
            if redirected {
                if !repair {
                    self.client_retry.insert(ch.clone());
                }
                self.lost.insert(ch, Some(addr.clone()));
            }
        }
        if redirected {
            self.attempts = 0;
            Frame::Lost
        } else if clients {
            Frame::Forward(frame_bytes)
        } else {
            Frame::Hide
        }
    }

    /// Closes connections left with no channel and nothing pending.
    fn drop_idle_links(&mut self) {
        let leaving = &self.leaving;
        let resubscribing = &self.resubscribing;
        self.links.retain(|l| {
            !l.channels.is_empty()
                || !l.pending.is_empty()
                || leaving.iter().any(|c| l.channels.contains(c))
                || !resubscribing.is_empty()
        });
    }

    /// The connection tagged `tag` broke: its channels are to be subscribed again elsewhere.
    /// True when there is something to repair.
    pub fn on_link_lost(&mut self, tag: u64) -> bool {
        let Some(pos) = self.links.iter().position(|l| l.tag == tag) else {
            return false;
        };
        let l = self.links.remove(pos);
        let addr = l.link.addr().clone();
        // The client's SSUBSCRIBEs still unanswered go again elsewhere, as the client's.
        for (channels, _) in &l.pending {
            for ch in channels {
                if !self.resubscribing.contains(ch) && !l.channels.contains(ch) {
                    self.client_retry.insert(ch.clone());
                    self.lost.insert(ch.clone(), Some(addr.clone()));
                }
            }
        }
        for ch in l.channels {
            if self.leaving.remove(&ch) {
                self.subscribed.remove(&ch);
            } else {
                self.lost.insert(ch, Some(addr.clone()));
            }
        }
        // Re-subscriptions in flight on that connection are lost with it.
        let pending: Vec<Vec<u8>> = self.resubscribing.iter().cloned().collect();
        for ch in pending {
            if !self.links.iter().any(|l| l.channels.contains(&ch)) {
                self.resubscribing.remove(&ch);
                self.lost.insert(ch, Some(addr.clone()));
            }
        }
        self.attempts = 0;
        !self.lost.is_empty()
    }

    /// Subscribes the lost channels again at their slot's master as `route` names it now,
    /// waiting while it still names the node that dropped them (up to `max_attempts` rounds).
    pub fn resubscribe(
        &mut self,
        mut route: impl FnMut(&[u8]) -> Option<Arc<Node>>,
        max_attempts: u32,
        proto: Proto,
        tx: &mailbox::Sender<BackendReply>,
    ) -> Resubscribe {
        if self.lost.is_empty() {
            return Resubscribe::Done;
        }
        self.attempts += 1;
        let last_try = self.attempts >= max_attempts;
        // Channels by the node and slot they go to now (one SSUBSCRIBE per slot).
        let mut plan: BTreeMap<(NodeAddr, u16), Planned> = BTreeMap::new();
        for (ch, dropped_by) in &self.lost {
            let Some(node) = route(ch).filter(|n| n.is_up()) else {
                continue;
            };
            if dropped_by.as_ref() == Some(node.addr()) && !last_try {
                continue;
            }
            let slot = crate::router::key_slot(ch);
            plan.entry((node.addr().clone(), slot))
                .or_insert_with(|| (node.clone(), Vec::new()))
                .1
                .push(ch.clone());
        }
        for (node, channels) in plan.into_values() {
            let Ok(pos) = self.link_for(&node, proto, tx) else {
                continue;
            };
            let mut args: Vec<&[u8]> = vec![b"SSUBSCRIBE"];
            args.extend(channels.iter().map(Vec::as_slice));
            let frame = Request::from_args(&args).raw().clone();
            for ch in &channels {
                self.lost.remove(ch);
                // A client's own channel keeps its confirmation for the client.
                if !self.client_retry.contains(ch) {
                    self.resubscribing.insert(ch.clone());
                }
            }
            if let Some(link) = self.links.get_mut(pos) {
                link.send_subscribe(frame, channels, tx);
            }
        }
        match (self.lost.is_empty(), last_try) {
            (true, _) => Resubscribe::Done,
            (false, false) => Resubscribe::Again,
            (false, true) => Resubscribe::GaveUp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_build_subscription_frames_like_redis() {
        assert_eq!(
            &frame(Proto::Resp2, b"sunsubscribe", None, 0)[..],
            b"*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(
            &frame(Proto::Resp3, b"ssubscribe", Some(b"c"), 2)[..],
            b">3\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n:2\r\n"
        );
    }

    #[test]
    fn should_answer_a_bare_sunsubscribe_without_channels_locally() {
        let (tx, _rx) = mailbox::channel();
        let mut s = ShardChannels::default();
        let out = s.unsubscribe(&Request::from_args(&["SUNSUBSCRIBE"]), Proto::Resp2, &tx);
        assert_eq!(out.len(), 1);
        let out = s.unsubscribe(
            &Request::from_args(&["SUNSUBSCRIBE", "a"]),
            Proto::Resp2,
            &tx,
        );
        assert_eq!(
            &out[0][..],
            b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\na\r\n:0\r\n"
        );
    }
}
