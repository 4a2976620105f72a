//! A plain request/reply connection for control commands (`CLUSTER SHARDS`, `SENTINEL ...`,
//! `ROLE`, `INFO`) and Sentinel subscriptions, separate from the data path's shared connections.
//!
//! Every reply is bounded by the reply scanner (depth 16, a size cap) before redis-protocol
//! decodes it; this module must never hand unbounded or deeply nested bytes to the decoder.

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::stream::BackendStream;
use crate::backend::{Connector, NodeAddr};
use crate::error::TopologyError;
use crate::protocol::{Limits, ReplyScanner, Request};

/// Largest control reply accepted.
pub const MAX_CONTROL_REPLY: usize = 64 * 1024 * 1024;

pub struct Control {
    addr: NodeAddr,
    stream: BackendStream,
    buf: BytesMut,
}

impl Control {
    /// Connects to `addr` as `via` says (its transport, its credentials: `AUTH` first, whose
    /// refusal is the error).
    pub async fn connect(addr: &NodeAddr, via: &Connector) -> Result<Control, TopologyError> {
        let stream = via.connect(addr).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                // What rustls says of a refused handshake.
                TopologyError::Tls {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }
            } else {
                TopologyError::Unreachable {
                    addr: addr.clone(),
                    reason: e.to_string(),
                }
            }
        })?;
        let mut c = Control {
            addr: addr.clone(),
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
        };
        if let Some(auth) = via.auth_frame() {
            match c.call(&auth, "AUTH").await? {
                OwnedFrame::SimpleString(ok) if ok == b"OK" => {}
                OwnedFrame::Error(e) => {
                    return Err(TopologyError::Auth {
                        addr: addr.clone(),
                        reply: e.to_string(),
                    });
                }
                _ => return Err(c.malformed("AUTH")),
            }
        }
        Ok(c)
    }

    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Sends `args` as one command and reads its reply.
    pub async fn command(
        &mut self,
        args: &[&str],
        what: &'static str,
    ) -> Result<OwnedFrame, TopologyError> {
        let req = Request::from_args(args);
        self.call(req.raw(), what).await
    }

    /// Writes `req` (already RESP) and reads its reply. A server that wants a password
    /// slotgate was not given answers every command `-NOAUTH`: that is an error saying so.
    pub async fn call(
        &mut self,
        req: &[u8],
        what: &'static str,
    ) -> Result<OwnedFrame, TopologyError> {
        let write = async {
            self.stream.write_all(req).await?;
            // A TLS stream may hold the last record until flushed.
            self.stream.flush().await
        };
        write.await.map_err(|e| TopologyError::Unreachable {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        match self.read_frame(what).await? {
            OwnedFrame::Error(e) if e.starts_with("NOAUTH") => Err(TopologyError::Auth {
                addr: self.addr.clone(),
                reply: format!(
                    "{e} (the server wants a password: set --backend-password, SLOTGATE_BACKEND_PASSWORD or [backend] password)"
                ),
            }),
            frame => Ok(frame),
        }
    }

    /// Reads the next reply, or the next pushed message of a subscription.
    pub async fn read_frame(&mut self, what: &'static str) -> Result<OwnedFrame, TopologyError> {
        let limits = Limits {
            max_reply_depth: 16,
            max_bulk_len: MAX_CONTROL_REPLY,
            ..Limits::default()
        };
        let mut scanner = ReplyScanner::new(limits);
        let n = loop {
            match scanner.scan(&self.buf) {
                Ok(Some(n)) => break n,
                Ok(None) => {}
                Err(_) => return Err(self.malformed(what)),
            }
            if self.buf.len() > MAX_CONTROL_REPLY {
                return Err(self.malformed(what));
            }
            let read = self.stream.read_buf(&mut self.buf).await.map_err(|e| {
                TopologyError::Unreachable {
                    addr: self.addr.clone(),
                    reason: e.to_string(),
                }
            })?;
            if read == 0 {
                return Err(TopologyError::Unreachable {
                    addr: self.addr.clone(),
                    reason: "connection closed".into(),
                });
            }
        };
        let reply = self.buf.split_to(n);
        match decode(&reply) {
            Ok(Some((frame, _))) => Ok(frame),
            _ => Err(self.malformed(what)),
        }
    }

    fn malformed(&self, what: &'static str) -> TopologyError {
        TopologyError::Malformed {
            addr: self.addr.clone(),
            what,
        }
    }
}

/// The text of a string or integer frame.
pub fn text(f: &OwnedFrame) -> Option<String> {
    match f {
        OwnedFrame::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        OwnedFrame::SimpleString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        OwnedFrame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An integer frame, or a string holding one.
pub fn int(f: &OwnedFrame) -> Option<i64> {
    match f {
        OwnedFrame::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// Looks a field up in a flat `[k, v, k, v, ...]` array.
pub fn field<'f>(kv: &'f [OwnedFrame], name: &str) -> Option<&'f OwnedFrame> {
    kv.chunks(2)
        .find(|p| p.first().and_then(text).as_deref() == Some(name))
        .and_then(|p| p.get(1))
}

/// `host:port`, with IPv6 hosts in brackets.
pub fn join_host_port(host: &str, port: i64) -> Option<NodeAddr> {
    NodeAddr::from_host_port(host, u16::try_from(port).ok()?).ok()
}

/// The node's `databases` setting, or `None` when `CONFIG GET` is refused (renamed or denied,
/// as managed services do) or answers something else.
pub async fn databases(c: &mut Control) -> Option<u32> {
    let reply = c
        .command(&["CONFIG", "GET", "databases"], "CONFIG GET databases")
        .await
        .ok()?;
    match &reply {
        OwnedFrame::Array(kv) => field(kv, "databases")
            .and_then(int)
            .and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }
}

/// The `redis_version` in an `INFO` reply.
pub fn redis_version(info: &OwnedFrame) -> Option<String> {
    text(info)?.lines().find_map(|l| {
        l.strip_prefix("redis_version:")
            .map(|v| v.trim().to_string())
    })
}
