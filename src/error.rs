//! The proxy's error types, each saying which side failed and whether a retry is safe.
//!
//! Errors become a RESP error line once, at the session, through `Display`. Nothing in the
//! library may ever match on error text; callers match on these variants.

use std::time::Duration;

use crate::backend::NodeAddr;
use crate::protocol::ProtocolError;
use crate::router::Failure;

/// A request that could not be completed by a backend node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The node is known down: the request was refused before it was written.
    #[error("ERR slotgate: backend {0} is unreachable")]
    Down(NodeAddr),
    /// The node's queue is full: the request was refused before it was written.
    #[error("ERR slotgate: backend {0} is overloaded (queue full)")]
    Overloaded(NodeAddr),
    /// The connection broke after the request may have been written.
    #[error("ERR slotgate: connection to backend {0} lost")]
    Lost(NodeAddr),
    /// No reply within the read timeout; the connection is closed.
    #[error("ERR slotgate: backend {0} did not reply within {1:?}")]
    Timeout(NodeAddr, Duration),
    /// Every private connection to the node is in use.
    #[error("ERR slotgate: too many blocked or watching clients on backend {0}")]
    TooManyPrivate(NodeAddr),
    /// No master is known for the request (the topology has none right now).
    #[error("ERR slotgate: no master available")]
    NoMaster,
    /// The node is a master Sentinel is failing over away from: the request was refused
    /// before it was written, so that no write reaches a master about to be demoted.
    #[error("ERR slotgate: backend {0} is being failed over")]
    FailingOver(NodeAddr),
    /// The node sent bytes that are not RESP; the connection is closed.
    #[error("ERR slotgate: backend {0} sent a malformed reply ({1})")]
    Protocol(NodeAddr, ProtocolError),
}

impl BackendError {
    /// What the failure means for sending the request again: whether it was written at all,
    /// and whether the node or slotgate failed it.
    pub fn failure(&self) -> Failure {
        use BackendError as E;
        match self {
            E::Down(_) | E::FailingOver(_) => Failure::Unsent { node_failed: true },
            E::NoMaster => Failure::Unsent { node_failed: false },
            E::Overloaded(_) => Failure::Overloaded,
            E::Lost(_) => Failure::Lost,
            E::Timeout(..) | E::Protocol(..) => Failure::Late,
            E::TooManyPrivate(_) => Failure::Limit,
        }
    }

    /// The node the failure names, when it names one.
    pub fn node(&self) -> Option<&NodeAddr> {
        use BackendError as E;
        match self {
            E::Down(a) | E::Overloaded(a) | E::Lost(a) | E::TooManyPrivate(a) => Some(a),
            E::FailingOver(a) => Some(a),
            E::Timeout(a, _) | E::Protocol(a, _) => Some(a),
            E::NoMaster => None,
        }
    }

    /// True when the node itself seems gone, so the topology is worth refreshing (a failover
    /// in progress is being followed already).
    pub fn suggests_refresh(&self) -> bool {
        !matches!(
            self,
            BackendError::Overloaded(_) | BackendError::FailingOver(_)
        )
    }
}

/// Why a topology could not be learned from a node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TopologyError {
    #[error("cannot reach {addr}: {reason}")]
    Unreachable { addr: NodeAddr, reason: String },
    #[error("{addr} answered {what} with an error: {reply}")]
    ErrorReply {
        addr: NodeAddr,
        what: &'static str,
        reply: String,
    },
    #[error("{addr} sent an unreadable {what} reply")]
    Malformed { addr: NodeAddr, what: &'static str },
    #[error("the slot map from {addr} covers {covered} of 16384 slots")]
    Incomplete { addr: NodeAddr, covered: usize },
    #[error(
        "{addr} is not in cluster mode (cluster support disabled): use --standalone {addr}, or mode = \"standalone\" and server = \"{addr}\" in the config file"
    )]
    NotCluster { addr: NodeAddr },
    /// The TLS handshake failed: the server's certificate is not trusted or not for that name,
    /// or it refused slotgate's.
    #[error("TLS with {addr} failed: {reason}")]
    Tls { addr: NodeAddr, reason: String },
    /// The server refused the credentials slotgate presented, or wants some it was not given.
    #[error("{addr} refused slotgate's login: {reply}")]
    Auth { addr: NodeAddr, reply: String },
    #[error("no node answered: {}", join(.0))]
    NoNodeAnswered(Vec<TopologyError>),
}

fn join(errors: &[TopologyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl TopologyError {
    /// Whether asking again cannot help, because slotgate's configuration is wrong for every
    /// node asked: servers without cluster support (the wrong mode), or a login they refuse.
    pub fn is_misconfiguration(&self) -> bool {
        match self {
            TopologyError::NotCluster { .. }
            | TopologyError::Auth { .. }
            | TopologyError::Tls { .. } => true,
            TopologyError::NoNodeAnswered(errors) => {
                !errors.is_empty() && errors.iter().all(TopologyError::is_misconfiguration)
            }
            _ => false,
        }
    }
}

/// The error a Redis without cluster support gives to CLUSTER commands.
pub const CLUSTER_DISABLED: &str = "ERR This instance has cluster support disabled";
