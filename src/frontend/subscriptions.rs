//! What a client is subscribed to on its channel and pattern connection (shard channels are
//! `shard_channels`'), learned from the subscription frames its subscriber
//! connection returns, so that slotgate can subscribe again on another node when that connection
//! is lost (a failover) without the client noticing.
//!
//! Pure state: it reads frames and builds the commands to resend; it must never send anything,
//! and it must only hide from the client the confirmations of its own re-subscription.

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};

use crate::protocol::Request;

#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: BTreeSet<Vec<u8>>,
    patterns: BTreeSet<Vec<u8>>,
    /// Confirmations of a re-subscription still to be hidden.
    suppress: usize,
}

/// `[kind, name, count]` of a subscription frame, RESP2 (`*3`) or RESP3 push (`>3`).
pub fn kind_and_name(frame: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let rest = frame
        .strip_prefix(b"*3\r\n")
        .or_else(|| frame.strip_prefix(b">3\r\n"))?;
    let (kind, rest) = bulk(rest)?;
    let (name, _) = bulk(rest)?;
    Some((kind?, name))
}

/// One bulk string at the front of `b`: its data (`None` for `$-1`) and what follows.
pub(super) fn bulk(b: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let rest = b.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&c| c == b'\r')?;
    let len: i64 = std::str::from_utf8(rest.get(..cr)?).ok()?.parse().ok()?;
    let after = rest.get(cr + 2..)?;
    if len < 0 {
        return Some((None, after));
    }
    let len = usize::try_from(len).ok()?;
    Some((Some(after.get(..len)?), after.get(len + 2..)?))
}

impl Subscriptions {
    /// Updates the state from a frame of the subscriber connection; false when the frame is a
    /// confirmation of slotgate's own re-subscription, which the client must not see.
    pub fn observe(&mut self, frame: &[u8]) -> bool {
        let Some((kind, name)) = kind_and_name(frame) else {
            return true;
        };
        let (set, subscribing) = match kind {
            b"subscribe" => (&mut self.channels, true),
            b"psubscribe" => (&mut self.patterns, true),
            b"unsubscribe" => (&mut self.channels, false),
            b"punsubscribe" => (&mut self.patterns, false),
            _ => return true,
        };
        match (subscribing, name) {
            (true, Some(n)) => {
                set.insert(n.to_vec());
                if self.suppress > 0 {
                    self.suppress -= 1;
                    return false;
                }
            }
            (false, Some(n)) => {
                set.remove(n);
            }
            (false, None) => set.clear(),
            (true, None) => {}
        }
        true
    }

    /// The channels subscribed to (SUBSCRIBE).
    pub fn channels(&self) -> impl Iterator<Item = &[u8]> {
        self.channels.iter().map(Vec::as_slice)
    }

    /// The patterns subscribed to (PSUBSCRIBE).
    pub fn patterns(&self) -> impl Iterator<Item = &[u8]> {
        self.patterns.iter().map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }

    /// The commands that subscribe a fresh connection to everything again; their
    /// confirmations will be hidden.
    pub fn resubscribe(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        for (cmd, set) in [
            ("SUBSCRIBE", &self.channels),
            ("PSUBSCRIBE", &self.patterns),
        ] {
            if set.is_empty() {
                continue;
            }
            let mut args: Vec<&[u8]> = vec![cmd.as_bytes()];
            args.extend(set.iter().map(|c| c.as_slice()));
            out.extend_from_slice(Request::from_args(&args).raw());
        }
        self.suppress = self.channels.len() + self.patterns.len();
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: &str, name: Option<&str>, n: i64) -> Vec<u8> {
        let name = name.map_or("$-1\r\n".to_string(), |n| {
            format!("${}\r\n{n}\r\n", n.len())
        });
        format!("*3\r\n${}\r\n{kind}\r\n{name}:{n}\r\n", kind.len()).into_bytes()
    }

    #[test]
    fn should_track_subscriptions_and_hide_only_resubscription_confirmations() {
        let mut s = Subscriptions::default();
        assert!(s.observe(&frame("subscribe", Some("a"), 1)));
        assert!(s.observe(&frame("psubscribe", Some("p*"), 2)));
        assert!(s.observe(&b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"[..]));
        let again = s.resubscribe();
        assert_eq!(
            &again[..],
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\np*\r\n"
        );
        assert!(!s.observe(&frame("subscribe", Some("a"), 1)));
        assert!(!s.observe(&frame("psubscribe", Some("p*"), 2)));
        assert!(s.observe(&frame("subscribe", Some("b"), 3)));
        assert!(s.observe(&frame("unsubscribe", None, 2)));
        assert!(s.observe(&frame("punsubscribe", Some("p*"), 0)));
        assert!(s.is_empty());
    }
}
