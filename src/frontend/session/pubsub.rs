//! Pub/sub for a session: its channel and pattern subscriber connection, shard channel
//! connections, keyspace event connections to the other masters, frames from them taking places
//! in the reply queue, and subscribing again elsewhere when a connection is lost.
//!
//! A subscriber's frames must never overtake a reply to an earlier request, and messages must
//! never pile up without bound for a client that does not read them.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use tracing::debug;

use super::Session;
use crate::backend::{BackendReply, BackendRequest, ReplyTo};
use crate::command::Entry;
use crate::frontend::keyspace_events::{Frame as KeyspaceFrame, Kind, Masters};
use crate::frontend::shard_channels::{Frame as ShardFrame, Resubscribe};
use crate::frontend::tag::{FORGET, PUSH, RESUBSCRIBE};
use crate::protocol::Request;

/// Reply bytes, and frames, a subscriber may leave unread before it is disconnected.
const PUBSUB_OUTPUT_LIMIT: usize = 32 * 1024 * 1024;

const PUBSUB_BACKLOG_LIMIT: usize = 100_000;

/// How often, and how many times, a lost subscriber connection is retried (30 s in all).
const RESUBSCRIBE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

const RESUBSCRIBE_ATTEMPTS: u32 = 150;

/// Whether a frame of the channel and pattern connection is an unsubscribe reply that leaves no
/// subscription (`[unsubscribe|punsubscribe, channel, 0]`, RESP2 or RESP3).
fn ends_subscriptions(frame: &[u8]) -> bool {
    let Some(rest) = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))
    else {
        return false;
    };
    // Shard channels have connections of their own (`shard_channels`).
    let kinds: [&[u8]; 2] = [b"$11\r\nunsubscribe\r\n", b"$12\r\npunsubscribe\r\n"];
    kinds.iter().any(|k| rest.starts_with(k)) && frame.ends_with(b":0\r\n")
}

impl Session {
    /// SUBSCRIBE and friends: sent on the subscriber connection (opened on first use, to the
    /// pub/sub master where PUBLISH goes too, or for shard channels to the channels' slot
    /// master); the node's frames come back as pushes.
    pub(super) fn pubsub(&mut self, entry: &Entry, req: &Request) {
        if matches!(entry.spec.name, "ssubscribe" | "sunsubscribe") {
            return self.shard_pubsub(entry, req);
        }
        if self.subscriber.is_none() {
            let Some(node) = self.route(Some(crate::router::PUBSUB_SLOT)) else {
                return self.push_error("CLUSTERDOWN Hash slot not served");
            };
            let pushes = ReplyTo {
                tx: self.tx.clone(),
                tag: PUSH,
            };
            match node.subscriber(self.client.proto, pushes) {
                Ok(link) => self.subscriber = Some(link),
                Err(e) => return self.push_error(&e.to_string()),
            }
        }
        self.send_on_subscriber(req);
        self.follow_keyspace_events(entry, req);
    }

    /// Keyspace notifications come from the master that holds the key: subscriptions that can
    /// name them are made on every master (`keyspace_events`).
    fn follow_keyspace_events(&mut self, entry: &Entry, req: &Request) {
        let (kind, subscribing) = match entry.spec.name {
            "subscribe" => (Kind::Channels, true),
            "psubscribe" => (Kind::Patterns, true),
            "unsubscribe" => (Kind::Channels, false),
            "punsubscribe" => (Kind::Patterns, false),
            _ => return,
        };
        if !subscribing {
            let held = self.keyspace.unsubscribe(kind, req, &self.tx);
            return self.push_frames(held);
        }
        let topo = self.topo.load().clone();
        let Some(primary) = self.subscriber.as_ref().map(|l| l.addr().clone()) else {
            return;
        };
        if !topo.slotted {
            return;
        }
        let to = Masters {
            all: topo.masters(),
            primary: &primary,
            proto: self.client.proto,
            tx: &self.tx,
        };
        let round = self.keyspace.subscribe(kind, req, &to);
        if round == Resubscribe::Again {
            self.schedule_resubscribe();
        }
    }

    /// A round of the retry timer for keyspace event connections: held frames that may go,
    /// connections to open.
    fn repair_keyspace_events(&mut self) {
        if !self.keyspace.is_active() {
            return;
        }
        let held = self.keyspace.released(Instant::now());
        self.push_frames(held);
        // Without a subscriber connection, its own repair ticks the timer.
        let Some(primary) = self.subscriber.as_ref().map(|l| l.addr().clone()) else {
            return;
        };
        let topo = self.topo.load().clone();
        let to = Masters {
            all: topo.masters(),
            primary: &primary,
            proto: self.client.proto,
            tx: &self.tx,
        };
        let round = self.keyspace.repair(&to);
        if round == Resubscribe::Again {
            self.schedule_resubscribe();
        }
    }

    /// A frame (or the end) of a keyspace event connection.
    pub(super) fn on_keyspace_push(
        &mut self,
        tag: u64,
        result: Result<Bytes, crate::error::BackendError>,
    ) {
        let now = Instant::now();
        match self.keyspace.on_frame(tag, result) {
            KeyspaceFrame::Forward(f) => {
                let out = self.keyspace.hold(f, now);
                self.push_frames(out);
            }
            KeyspaceFrame::Hide => {}
            KeyspaceFrame::Lost => {
                // Its master failed or left: learn the new one and subscribe there.
                self.ctx.topology.request_refresh(None);
                self.schedule_resubscribe();
            }
        }
        let held = self.keyspace.released(now);
        self.push_frames(held);
    }

    fn push_frames(&mut self, frames: VecDeque<Bytes>) {
        for f in frames {
            self.push_frame(f);
        }
    }

    /// SSUBSCRIBE at the channels' slot master; SUNSUBSCRIBE where the channels are held.
    fn shard_pubsub(&mut self, entry: &Entry, req: &Request) {
        self.current = None;
        if entry.spec.name == "sunsubscribe" {
            for f in self.shards.unsubscribe(req, self.client.proto, &self.tx) {
                self.queue_ready(f);
            }
            return;
        }
        let slot = match self.slot_for(entry, req) {
            Ok(s) => s,
            Err(r) => return self.reject(r),
        };
        let Some(node) = self.route(slot) else {
            return self.push_error("CLUSTERDOWN Hash slot not served");
        };
        if let Err(e) = self
            .shards
            .subscribe(req, &node, self.client.proto, &self.tx)
        {
            self.push_error(&e.to_string());
        }
    }

    /// Whether the client is in subscribed mode (or entering it).
    pub(super) fn subscribed(&self) -> bool {
        self.subscriber.is_some() || self.shards.has_links() || !self.shards.is_empty()
    }

    pub(super) fn schedule_resubscribe(&self) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RESUBSCRIBE_EVERY).await;
            let _ = tx.send(BackendReply {
                tag: RESUBSCRIBE,
                result: Ok(Bytes::new()),
            });
        });
    }

    /// Opens a new subscriber connection and subscribes it to everything the client had:
    /// shard channels at their slot's master, the rest at the pub/sub master (or, while it is
    /// down, any master that is up).
    pub(super) fn resubscribe(&mut self) {
        self.resubscribe_channels();
        self.repair_keyspace_events();
    }

    fn resubscribe_channels(&mut self) {
        let topo = self.topo.load().clone();
        let route = |ch: &[u8]| {
            let slot = topo.slotted.then(|| crate::router::key_slot(ch));
            // Unslotted: the one master (client 0 picks the first).
            crate::router::node_for(&topo, slot, 0).cloned()
        };
        match self
            .shards
            .resubscribe(route, RESUBSCRIBE_ATTEMPTS, self.client.proto, &self.tx)
        {
            Resubscribe::Done => {}
            Resubscribe::Again => self.schedule_resubscribe(),
            Resubscribe::GaveUp => {
                self.push_error(
                    "ERR slotgate: lost shard channels and found no master to subscribe them again",
                );
                self.client.closing = true;
            }
        }
        if self.subscriber.is_some() || self.subs.as_ref().is_none_or(|s| s.is_empty()) {
            return;
        }
        self.resub_attempts += 1;
        // The pub/sub master, where PUBLISH goes; while it is down (a failover), any master
        // that is up, so that messages keep coming (counts are then exact again once the
        // client subscribes anew).
        let node = crate::router::node_for(&topo, Some(crate::router::PUBSUB_SLOT), 0)
            .filter(|m| m.is_up())
            .or_else(|| topo.masters().iter().find(|m| m.is_up()))
            .cloned();
        let Some(node) = node else {
            if self.resub_attempts >= RESUBSCRIBE_ATTEMPTS {
                self.push_error("ERR slotgate: lost the subscriber connection and found no master to subscribe again");
                self.client.closing = true;
            } else {
                self.schedule_resubscribe();
            }
            return;
        };
        let pushes = ReplyTo {
            tx: self.tx.clone(),
            tag: PUSH,
        };
        match node.subscriber(self.client.proto, pushes) {
            Ok(link) => {
                let frames = self.subs.get_or_insert_with(Box::default).resubscribe();
                link.send(BackendRequest::new(
                    frames,
                    ReplyTo {
                        tx: self.tx.clone(),
                        tag: FORGET,
                    },
                ));
                debug!(node = %node.addr(), "subscribed again after losing the subscriber connection");
                self.subscriber = Some(link);
            }
            Err(_) => self.schedule_resubscribe(),
        }
    }

    pub(super) fn send_on_subscriber(&mut self, req: &Request) {
        self.current = None;
        if let Some(link) = &self.subscriber {
            link.send(BackendRequest::new(
                req.raw().clone(),
                ReplyTo {
                    tx: self.tx.clone(),
                    tag: FORGET,
                },
            ));
        }
    }

    /// A frame from the subscriber connection: it takes the next place in the reply queue, so
    /// it follows every reply to an earlier request. A count of 0 in an unsubscribe reply ends
    /// subscribed mode and closes the connection.
    pub(super) fn on_push(&mut self, frame: Bytes) {
        if !self.subs.get_or_insert_with(Box::default).observe(&frame) {
            return;
        }
        if ends_subscriptions(&frame) {
            self.subscriber = None;
        }
        if self.keyspace.is_active() {
            let out = self.keyspace.hold(frame, Instant::now());
            return self.push_frames(out);
        }
        self.push_frame(frame);
    }

    /// A frame from a shard channel connection.
    pub(super) fn on_shard_push(
        &mut self,
        tag: u64,
        result: Result<Bytes, crate::error::BackendError>,
    ) {
        let lost = match result {
            Ok(frame) => match self.shards.on_frame(tag, frame, self.client.proto) {
                ShardFrame::Forward(f) => {
                    self.push_frame(f);
                    false
                }
                ShardFrame::Hide => false,
                ShardFrame::Lost => true,
            },
            Err(_) => self.shards.on_link_lost(tag),
        };
        if lost {
            // The channel's slot moved, or its master failed: learn the new owner now and
            // subscribe there, invisibly to the client.
            self.ctx.topology.request_refresh_now(None);
            self.schedule_resubscribe();
        }
    }

    /// Appends a subscriber connection's frame to the reply queue (after every reply to an
    /// earlier request).
    fn push_frame(&mut self, frame: Bytes) {
        // Key names in keyspace notifications as the application knows them.
        let frame = match &self.client.config.families {
            Some(families) => super::colocate::restore_event(families, frame),
            None => frame,
        };
        // A subscriber that does not read its messages is disconnected, as Redis does with
        // `client-output-buffer-limit pubsub`: messages must not pile up without bound.
        if self.out.len() > PUBSUB_OUTPUT_LIMIT || self.queue.len() > PUBSUB_BACKLOG_LIMIT {
            if self.subscriber.take().is_some() {
                tracing::warn!(
                    client = self.client.id,
                    "closing a subscriber that does not read its messages"
                );
            }
            self.shards.clear();
            self.keyspace.clear();
            self.client.closing = true;
            self.abort = true;
            return;
        }
        self.queue_ready(frame);
    }
}
