//! Where a node listens: a typed address, TCP (`host:port`) or a Unix socket (`unix:/path`),
//! used by data connections, control connections, the topology snapshot, redirects and errors
//! alike, so that nothing passes a node around as loose text.
//!
//! An address is checked when it is made: from the config ([`NodeAddr::parse`], either kind)
//! or from what a node reports ([`NodeAddr::tcp`], TCP only: a `MOVED`, `CLUSTER SHARDS` or a
//! Sentinel can never make slotgate open a local socket file). This module must never resolve
//! names or touch the network; TLS is the [`super::Connector`]'s, applied to TCP addresses.

use std::borrow::Borrow;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The prefix of a Unix socket address in slotgate's text form.
const UNIX: &str = "unix:";

/// A node's address. Cloning costs a reference count. Its text form (`Display`, `Deref`) is
/// canonical, so two addresses are equal exactly when their texts are, and a map keyed by
/// addresses can be searched with a `&str`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(Arc<str>);

/// What an address names, to open a connection to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// A TCP `host:port`; `host` without IPv6 brackets.
    Tcp { host: &'a str, port: u16 },
    /// A Unix socket file.
    Unix(&'a Path),
}

/// Why a text is not a node address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("'{0}' is not host:port (or unix:/path)")]
    Malformed(String),
    #[error("'{0}' has no valid port (1-65535)")]
    Port(String),
    #[error("'{0}': a Unix socket path must be absolute")]
    RelativePath(String),
    #[error("'{0}': a node reported a Unix socket; only TCP addresses are taken from nodes")]
    NotTcp(String),
}

impl NodeAddr {
    /// An address from the config: `host:port`, `[v6]:port`, `unix:/path` or `/path`.
    pub fn parse(text: &str) -> Result<NodeAddr, AddrError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix(UNIX).or_else(|| {
            // A bare absolute path is a socket file, as redis-cli's `-s` takes it.
            text.starts_with('/').then_some(text)
        }) {
            if !path.starts_with('/') {
                return Err(AddrError::RelativePath(text.to_string()));
            }
            return Ok(NodeAddr(Arc::from(format!("{UNIX}{path}"))));
        }
        NodeAddr::tcp(text)
    }

    /// A TCP address, as nodes report them (`MOVED 1 10.0.0.1:6379`, `CLUSTER SHARDS`,
    /// `SENTINEL` replies).
    pub fn tcp(text: &str) -> Result<NodeAddr, AddrError> {
        if text.starts_with(UNIX) || text.starts_with('/') {
            return Err(AddrError::NotTcp(text.to_string()));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err(AddrError::Malformed(text.to_string()));
        };
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let bare = bracketed.unwrap_or(host);
        if bare.is_empty() || bare.contains(['[', ']', ' ', '/']) {
            return Err(AddrError::Malformed(text.to_string()));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(AddrError::Port(text.to_string())),
        };
        Ok(NodeAddr::canonical(bare, port))
    }

    /// A TCP address of `host` (a name or an IP as nodes report it, IPv6 with or without
    /// brackets) and `port`.
    pub fn from_host_port(host: &str, port: u16) -> Result<NodeAddr, AddrError> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if bare.is_empty() || bare.contains(['[', ']', ' ', '/']) || port == 0 {
            return Err(AddrError::Malformed(format!("{host}:{port}")));
        }
        Ok(NodeAddr::canonical(bare, port))
    }

    /// The text form: IPv6 hosts in brackets (Redis writes them bare in `MOVED`: the port
    /// follows the last colon, so that is unambiguous).
    fn canonical(host: &str, port: u16) -> NodeAddr {
        NodeAddr(Arc::from(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }))
    }

    /// What to connect to.
    pub fn endpoint(&self) -> Endpoint<'_> {
        if let Some(path) = self.0.strip_prefix(UNIX) {
            return Endpoint::Unix(Path::new(path));
        }
        // Checked when made: a host and a port are there.
        let (host, port) = self.0.rsplit_once(':').unwrap_or((&self.0, "0"));
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Endpoint::Tcp {
            host,
            port: port.parse().unwrap_or(0),
        }
    }

    /// The host to connect to and to check a TLS certificate against; `None` for a socket file.
    pub fn host(&self) -> Option<&str> {
        match self.endpoint() {
            Endpoint::Tcp { host, .. } => Some(host),
            Endpoint::Unix(_) => None,
        }
    }

    pub fn is_unix(&self) -> bool {
        self.0.starts_with(UNIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NodeAddr {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeAddr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeAddr {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for NodeAddr {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

/// Tests write addresses as literals; a malformed one is a mistake in the test.
#[cfg(test)]
impl From<&str> for NodeAddr {
    fn from(text: &str) -> NodeAddr {
        NodeAddr::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_addresses_keep_their_text_and_name_host_and_port() {
        let a = NodeAddr::parse("127.0.0.1:6379").unwrap();
        assert_eq!(a.as_str(), "127.0.0.1:6379");
        assert_eq!(
            a.endpoint(),
            Endpoint::Tcp {
                host: "127.0.0.1",
                port: 6379
            }
        );
        let v6 = NodeAddr::tcp("[::1]:7000").unwrap();
        assert_eq!(
            v6.endpoint(),
            Endpoint::Tcp {
                host: "::1",
                port: 7000
            }
        );
        assert_eq!(v6.host(), Some("::1"));
        assert_eq!(
            NodeAddr::from_host_port("::1", 7000).unwrap().as_str(),
            "[::1]:7000"
        );
        assert_eq!(
            NodeAddr::from_host_port("10.0.0.1", 6380).unwrap().as_str(),
            "10.0.0.1:6380"
        );
        assert!(!a.is_unix());
    }

    #[test]
    fn unix_sockets_come_from_the_config_only() {
        let a = NodeAddr::parse("unix:/run/redis.sock").unwrap();
        assert_eq!(a.endpoint(), Endpoint::Unix(Path::new("/run/redis.sock")));
        assert_eq!(NodeAddr::parse("/run/redis.sock").unwrap(), a);
        assert_eq!(a.as_str(), "unix:/run/redis.sock");
        assert_eq!(a.host(), None);
        assert!(a.is_unix());
        assert_eq!(
            NodeAddr::parse("unix:redis.sock"),
            Err(AddrError::RelativePath("unix:redis.sock".into()))
        );
        // A node can never point slotgate at a socket file.
        assert!(matches!(
            NodeAddr::tcp("unix:/run/redis.sock"),
            Err(AddrError::NotTcp(_))
        ));
        assert!(matches!(NodeAddr::tcp("/x"), Err(AddrError::NotTcp(_))));
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_reason() {
        // Redis writes an IPv6 node bare in MOVED.
        assert_eq!(NodeAddr::tcp("::1:6379").unwrap().as_str(), "[::1]:6379");
        for bad in ["", "host", ":6379", "[::1", "a b:1"] {
            assert!(
                matches!(NodeAddr::parse(bad), Err(AddrError::Malformed(_))),
                "{bad}"
            );
        }
        for bad in ["h:0", "h:65536", "h:x", "h:"] {
            assert!(
                matches!(NodeAddr::parse(bad), Err(AddrError::Port(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_map_of_addresses_is_searched_with_text() {
        let mut m = std::collections::HashMap::new();
        m.insert(NodeAddr::parse("a:1").unwrap(), 1);
        assert_eq!(m.get("a:1"), Some(&1));
        assert_eq!(format!("{:?}", NodeAddr::parse("a:1").unwrap()), "\"a:1\"");
    }
}
