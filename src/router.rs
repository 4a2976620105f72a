//! Pure routing decisions, no I/O: which slot a key hashes to, which node a request goes to in a
//! snapshot ([`node_for`]), and the complete action for a part
//! after its reply ([`next_step`]: a MOVED, ASK, TRYAGAIN, READONLY, NOSCRIPT or a failed read).
//!
//! Everything here is a function of its arguments. It must never touch a socket, a lock, a
//! clock or the global topology.

pub mod redirect;
pub mod slot;
pub mod target;

pub use redirect::{Budget, Failure, Outcome, PartAction, PartFacts, Redirect, next_step};

/// Channel pub/sub (SUBSCRIBE, PSUBSCRIBE, PUBLISH; not shard channels) goes to this slot's
/// master. Redis Cluster delivers a message to subscribers on every node, but PUBLISH counts
/// only the receivers on the node it ran on: with the subscriber connections and PUBLISH on one
/// master, the count through slotgate is exact (and through every slotgate with the same map).
pub const PUBSUB_SLOT: u16 = 0;
pub use slot::{SLOTS, key_slot};
pub use target::{Placement, ReadFrom, ReadTarget, Skipped, node_for, read_node};
