//! Pure routing decisions, no I/O: which slot a key hashes to, which node a request goes to in a
//! snapshot ([`node_for`]), and the complete action for a part
//! after its reply ([`next_step`]: a MOVED, ASK, TRYAGAIN, READONLY, NOSCRIPT or a failed read).
//!
//! Everything here is a function of its arguments. It must never touch a socket, a lock, a
//! clock or the global topology.

pub mod redirect;
pub mod slot;
pub mod target;

pub use redirect::{Budget, Outcome, PartAction, PartFacts, Redirect, next_step};
pub use slot::{SLOTS, key_slot};
pub use target::{Placement, ReadFrom, ReadTarget, Skipped, node_for, read_node};
