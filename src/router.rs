//! Pure routing decisions, no I/O: which slot a key hashes to, which node a request goes to in a
//! snapshot ([`node_for`]), and what to do with a MOVED, ASK or TRYAGAIN reply.
//!
//! Everything here is a function of its arguments. It must never touch a socket, a lock, a
//! clock or the global topology.

pub mod redirect;
pub mod slot;
pub mod target;

pub use redirect::{Budget, Redirect, RedirectDecision, decide};
pub use slot::{SLOTS, key_slot};
pub use target::{Placement, ReadFrom, ReadTarget, node_for, read_node};
