//! Telling a busy node from a stalled one. When a shared connection's oldest reply is later than
//! `read_timeout`, the connection asks the node on a fresh connection of its own: a node that
//! runs a long script or function answers `-BUSY` (after its `busy-reply-threshold`), and is
//! alive: the connection keeps waiting, as the script's caller would on one Redis. A node that
//! answers something else was slow (its answer follows the late reply); one that answers nothing
//! within [`probe_timeout`] (a quarter of `read_timeout`), and let this connection read nothing
//! meanwhile, is stalled or gone, and the connection gives up: a stalled node costs at most
//! 1.25 `read_timeout`.
//!
//! The probe is short because a busy node answers it at once: a reply `read_timeout` late waits
//! behind a script that has run at least that long, and Redis answers `-BUSY` as soon as a
//! script has run `busy-reply-threshold` (5 s, like slotgate's default `read_timeout`). With a
//! `read_timeout` below the node's threshold a busy node looks stalled, as before the probe.
//!
//! The probe only reads the node's answer; the decision is [`verdict`], a pure function. A probe
//! never carries a client's request.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connection::{Open, open};
use super::{BackendConfig, Dialect, NodeAddr};
use crate::protocol::ReplyScanner;

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// What the node said to a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `-BUSY ...`: it runs a script or function and answers other clients meanwhile.
    Busy,
    /// Any other answer: it serves clients.
    Alive,
    /// No answer in time, or no connection.
    Silent,
}

/// What a connection whose reply is late does after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The node is alive: wait another `read_timeout` from now.
    Wait,
    /// The node is stalled, or answers others but not this connection: fail what it holds.
    GiveUp,
}

/// The decision: `progressed` says whether the connection read a reply since its reply was
/// found late (a slow command finished while the probe waited behind it).
pub fn verdict(probe: Probe, progressed: bool) -> Verdict {
    match (probe, progressed) {
        (Probe::Busy, _) | (_, true) => Verdict::Wait,
        // Answering a new connection but not this one: the connection, not the node, is stuck.
        (Probe::Alive, false) => Verdict::GiveUp,
        (Probe::Silent, false) => Verdict::GiveUp,
    }
}

/// How long a probe may take, connection and handshake included: a quarter of `read_timeout`,
/// at least 10 ms.
pub fn probe_timeout(read_timeout: Duration) -> Duration {
    (read_timeout / 4).max(Duration::from_millis(10))
}

/// Opens a connection to `addr` (its handshake: `AUTH` is allowed while a script runs), sends
/// `PING` and classifies the answer; at most [`probe_timeout`] for all of it.
pub async fn probe(addr: NodeAddr, config: Arc<BackendConfig>) -> Probe {
    let ask = async {
        let (mut s, _) = open(&addr, Open::plain(Dialect::DEFAULT), &config)
            .await
            .ok()?;
        s.write_all(PING).await.ok()?;
        s.flush().await.ok()?;
        let mut buf = BytesMut::with_capacity(256);
        let mut scanner = ReplyScanner::new(config.limits);
        loop {
            if let Some(n) = scanner.scan(&buf).ok()? {
                let reply = buf.get(..n)?;
                return Some(if reply.starts_with(b"-BUSY") {
                    Probe::Busy
                } else {
                    Probe::Alive
                });
            }
            if s.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
        }
    };
    match tokio::time::timeout(probe_timeout(config.read_timeout), ask).await {
        Ok(Some(p)) => p,
        Ok(None) | Err(_) => Probe::Silent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_wait_for_a_busy_node_whatever_the_connection_read() {
        assert_eq!(verdict(Probe::Busy, false), Verdict::Wait);
        assert_eq!(verdict(Probe::Busy, true), Verdict::Wait);
    }

    #[test]
    fn should_wait_for_a_slow_node_that_answered_meanwhile() {
        assert_eq!(verdict(Probe::Alive, true), Verdict::Wait);
    }

    #[test]
    fn should_give_up_on_a_connection_the_node_does_not_answer() {
        assert_eq!(verdict(Probe::Alive, false), Verdict::GiveUp);
    }

    #[test]
    fn should_give_up_on_a_silent_node() {
        assert_eq!(verdict(Probe::Silent, false), Verdict::GiveUp);
    }

    #[test]
    fn should_probe_for_a_quarter_of_the_read_timeout_and_never_less_than_10ms() {
        assert_eq!(
            probe_timeout(Duration::from_secs(5)),
            Duration::from_millis(1250)
        );
        assert_eq!(
            probe_timeout(Duration::from_millis(20)),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn should_wait_on_a_connection_that_read_replies_whatever_the_probe_met() {
        // A probe refused (the node at maxclients) says nothing against replies that came.
        assert_eq!(verdict(Probe::Silent, true), Verdict::Wait);
    }
}
