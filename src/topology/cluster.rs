//! Redis Cluster as a topology source: asks a node for `CLUSTER SHARDS` (falling back to
//! `CLUSTER SLOTS` on servers without it) over a short-lived control connection.
//!
//! Only nodes whose `health` is `online` serve a shard. A layout that does not cover all 16384
//! slots is an error, so the caller keeps its last good map. Control replies are bounded by the
//! reply scanner (depth 16) before redis-protocol decodes them; this module must never decode
//! unbounded bytes.

use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;

use super::control::{Control, field, int, join_host_port, redis_version, text};
use super::{Layout, ShardLayout, TopologySource};
use crate::backend::{Connector, NodeAddr};
use crate::error::TopologyError;
use crate::router::SLOTS;

const CLUSTER_SHARDS: &[u8] = b"*2\r\n$7\r\nCLUSTER\r\n$6\r\nSHARDS\r\n";
const CLUSTER_SLOTS: &[u8] = b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nSLOTS\r\n";
const INFO_SERVER: &[u8] = b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n";

/// Learns a Redis Cluster's layout from its nodes.
#[derive(Debug, Clone)]
pub struct ClusterSource {
    seeds: Vec<NodeAddr>,
    timeout: Duration,
    /// How the nodes are reached, as the data path reaches them.
    via: Connector,
}

impl ClusterSource {
    pub fn new(seeds: Vec<NodeAddr>, timeout: Duration, via: Connector) -> Self {
        Self {
            seeds,
            timeout,
            via,
        }
    }

    /// Asks one node for the layout.
    pub async fn query(&self, addr: &NodeAddr) -> Result<Layout, TopologyError> {
        let fut = async {
            let mut conn = Control::connect(addr, &self.via).await?;
            let frame = conn.call(CLUSTER_SHARDS, "CLUSTER SHARDS").await?;
            let mut layout = match frame {
                OwnedFrame::Error(e) if e.contains("unknown subcommand") => {
                    let frame = conn.call(CLUSTER_SLOTS, "CLUSTER SLOTS").await?;
                    parse_slots(&frame, addr)?
                }
                other => parse_shards(&other, addr, self.via.is_tls())?,
            };
            if let Ok(info) = conn.call(INFO_SERVER, "INFO").await {
                layout.version = redis_version(&info);
            }
            Ok(layout)
        };
        let layout = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| TopologyError::Unreachable {
                addr: addr.clone(),
                reason: format!("no answer within {:?}", self.timeout),
            })??;
        let covered = layout.covered();
        if covered != SLOTS {
            return Err(TopologyError::Incomplete {
                addr: addr.clone(),
                covered,
            });
        }
        Ok(layout)
    }
}

impl TopologySource for ClusterSource {
    async fn discover(&self, candidates: &[NodeAddr]) -> Result<Layout, TopologyError> {
        let mut tried: Vec<&NodeAddr> = Vec::new();
        let mut errors = Vec::new();
        for addr in candidates.iter().chain(self.seeds.iter()) {
            if tried.contains(&addr) {
                continue;
            }
            tried.push(addr);
            match self.query(addr).await {
                Ok(layout) => return Ok(layout),
                Err(e) => errors.push(e),
            }
        }
        Err(TopologyError::NoNodeAnswered(errors))
    }

    fn seeds(&self) -> &[NodeAddr] {
        &self.seeds
    }
}

/// The address a node is reached at: its `endpoint` (or `ip`) and `port`, or over TLS its
/// `tls-port` (a node with `tls-cluster yes` and `port 0` announces no other). A node that
/// announces no usable endpoint (`?` or empty) is reached at the host of the node we asked.
fn node_addr(kv: &[OwnedFrame], asked: &NodeAddr, tls: bool) -> Option<NodeAddr> {
    let port_of = |name: &str| field(kv, name).and_then(int).filter(|&p| p > 0);
    let port = if tls {
        port_of("tls-port").or_else(|| port_of("port"))
    } else {
        port_of("port")
    }?;
    let host = field(kv, "endpoint")
        .and_then(text)
        .filter(|h| !h.is_empty() && h != "?")
        .or_else(|| {
            field(kv, "ip")
                .and_then(text)
                .filter(|h| !h.is_empty() && h != "?")
        })
        .or_else(|| asked.host().map(str::to_string))?;
    join_host_port(&host, port)
}

/// Parses a `CLUSTER SHARDS` reply (RESP2 shape: shards as flat key/value arrays).
pub fn parse_shards(
    frame: &OwnedFrame,
    asked: &NodeAddr,
    tls: bool,
) -> Result<Layout, TopologyError> {
    let malformed = || TopologyError::Malformed {
        addr: asked.clone(),
        what: "CLUSTER SHARDS",
    };
    let shards = match frame {
        OwnedFrame::Array(a) => a,
        OwnedFrame::Error(e) if e.starts_with(crate::error::CLUSTER_DISABLED) => {
            return Err(TopologyError::NotCluster {
                addr: asked.clone(),
            });
        }
        OwnedFrame::Error(e) => {
            return Err(TopologyError::ErrorReply {
                addr: asked.clone(),
                what: "CLUSTER SHARDS",
                reply: e.clone(),
            });
        }
        _ => return Err(malformed()),
    };
    let mut layout = Layout::default();
    for shard in shards {
        let OwnedFrame::Array(kv) = shard else {
            return Err(malformed());
        };
        let Some(OwnedFrame::Array(slots)) = field(kv, "slots") else {
            return Err(malformed());
        };
        let Some(OwnedFrame::Array(nodes)) = field(kv, "nodes") else {
            return Err(malformed());
        };
        let mut ranges = Vec::new();
        for pair in slots.chunks(2) {
            let (Some(lo), Some(hi)) = (pair.first().and_then(int), pair.get(1).and_then(int))
            else {
                return Err(malformed());
            };
            if lo < 0 || hi < lo || hi >= SLOTS as i64 {
                return Err(malformed());
            }
            ranges.push((lo as u16, hi as u16));
        }
        let mut master = None;
        let mut replicas = Vec::new();
        for node in nodes {
            let OwnedFrame::Array(nkv) = node else {
                return Err(malformed());
            };
            let online = field(nkv, "health").and_then(text).as_deref() == Some("online");
            let Some(addr) = node_addr(nkv, asked, tls) else {
                continue;
            };
            match field(nkv, "role").and_then(text).as_deref() {
                Some("master") if online => master = Some(addr),
                Some("replica") if online => replicas.push(addr),
                _ => {}
            }
        }
        if let Some(master) = master
            && !ranges.is_empty()
        {
            layout.shards.push(ShardLayout {
                master,
                replicas,
                ranges,
            });
        }
    }
    Ok(layout)
}

/// Parses a `CLUSTER SLOTS` reply: `[start, end, [ip, port, id], [replica...]...]` per range.
pub fn parse_slots(frame: &OwnedFrame, asked: &NodeAddr) -> Result<Layout, TopologyError> {
    let malformed = || TopologyError::Malformed {
        addr: asked.clone(),
        what: "CLUSTER SLOTS",
    };
    let OwnedFrame::Array(ranges) = frame else {
        return Err(malformed());
    };
    let mut layout = Layout::default();
    for r in ranges {
        let OwnedFrame::Array(items) = r else {
            return Err(malformed());
        };
        let (Some(lo), Some(hi)) = (items.first().and_then(int), items.get(1).and_then(int)) else {
            return Err(malformed());
        };
        if lo < 0 || hi < lo || hi >= SLOTS as i64 {
            return Err(malformed());
        }
        let addr_of = |f: &OwnedFrame| -> Option<NodeAddr> {
            let OwnedFrame::Array(n) = f else { return None };
            let host = n
                .first()
                .and_then(text)
                .filter(|h| !h.is_empty() && h != "?");
            let host = host.or_else(|| asked.host().map(str::to_string))?;
            join_host_port(&host, n.get(1).and_then(int)?)
        };
        let Some(master) = items.get(2).and_then(addr_of) else {
            return Err(malformed());
        };
        let replicas: Vec<NodeAddr> = items.iter().skip(3).filter_map(addr_of).collect();
        match layout.shards.iter_mut().find(|s| s.master == master) {
            Some(s) => s.ranges.push((lo as u16, hi as u16)),
            None => layout.shards.push(ShardLayout {
                master,
                replicas,
                ranges: vec![(lo as u16, hi as u16)],
            }),
        }
    }
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> OwnedFrame {
        redis_protocol::resp2::decode::decode(wire)
            .ok()
            .flatten()
            .map(|(f, _)| f)
            .unwrap_or(OwnedFrame::Null)
    }

    fn node(id: &str, port: i64, role: &str, health: &str) -> String {
        format!(
            "*14\r\n$2\r\nid\r\n${}\r\n{id}\r\n$4\r\nport\r\n:{port}\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n${}\r\n{health}\r\n",
            id.len(),
            role.len(),
            health.len()
        )
    }

    #[test]
    fn over_tls_a_node_is_reached_at_its_tls_port() {
        let kv = |pairs: &[(&str, OwnedFrame)]| -> Vec<OwnedFrame> {
            pairs
                .iter()
                .flat_map(|(k, v)| [OwnedFrame::BulkString(k.as_bytes().to_vec()), v.clone()])
                .collect()
        };
        let ip = || OwnedFrame::BulkString(b"10.0.0.5".to_vec());
        let both = kv(&[
            ("port", OwnedFrame::Integer(6379)),
            ("tls-port", OwnedFrame::Integer(6380)),
            ("ip", ip()),
        ]);
        assert_eq!(
            node_addr(&both, &"x:1".into(), false).as_deref(),
            Some("10.0.0.5:6379")
        );
        assert_eq!(
            node_addr(&both, &"x:1".into(), true).as_deref(),
            Some("10.0.0.5:6380")
        );
        // `port 0` with `tls-cluster yes`: only the TLS port is usable.
        let tls_only = kv(&[
            ("port", OwnedFrame::Integer(0)),
            ("tls-port", OwnedFrame::Integer(6380)),
            ("ip", ip()),
        ]);
        assert_eq!(
            node_addr(&tls_only, &"x:1".into(), true).as_deref(),
            Some("10.0.0.5:6380")
        );
        assert_eq!(node_addr(&tls_only, &"x:1".into(), false), None);
        // A node without a TLS port, over TLS: its port (TLS on the main port).
        let plain = kv(&[("port", OwnedFrame::Integer(6379)), ("ip", ip())]);
        assert_eq!(
            node_addr(&plain, &"x:1".into(), true).as_deref(),
            Some("10.0.0.5:6379")
        );
    }

    #[test]
    fn should_parse_cluster_shards_and_skip_failed_nodes() {
        let wire = format!(
            "*2\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:8191\r\n$5\r\nnodes\r\n*2\r\n{}{}*4\r\n$5\r\nslots\r\n*2\r\n:8192\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n{}{}",
            node("a", 7000, "master", "online"),
            node("b", 7001, "replica", "online"),
            node("c", 7002, "master", "fail"),
            node("d", 7003, "replica", "online"),
        );
        let layout = parse_shards(
            &decode_all(wire.as_bytes()),
            &"127.0.0.1:7000".into(),
            false,
        )
        .unwrap_or_default();
        assert_eq!(layout.shards.len(), 1);
        assert_eq!(layout.shards[0].master, "127.0.0.1:7000");
        assert_eq!(
            layout.shards[0].replicas,
            vec![NodeAddr::from("127.0.0.1:7001")]
        );
        assert_eq!(layout.covered(), 8192);
    }

    #[test]
    fn should_parse_cluster_slots() {
        let wire = b"*1\r\n*4\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$1\r\na\r\n*3\r\n$0\r\n\r\n:7001\r\n$1\r\nb\r\n";
        let layout = parse_slots(&decode_all(wire), &"10.0.0.9:7000".into()).unwrap_or_default();
        assert_eq!(layout.shards.len(), 1);
        assert_eq!(layout.shards[0].master, "127.0.0.1:7000");
        assert_eq!(
            layout.shards[0].replicas,
            vec![NodeAddr::from("10.0.0.9:7001")]
        );
        assert_eq!(layout.covered(), SLOTS);
    }

    #[test]
    fn should_reject_out_of_range_slots() {
        let wire = b"*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n";
        assert!(parse_slots(&decode_all(wire), &"x:1".into()).is_err());
    }
}
