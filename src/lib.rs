//! slotgate: a cluster-aware Redis proxy.
//!
//! The request path, left to right:
//!
//! ```text
//! client bytes ─▶ protocol::RequestParser ─▶ command::lookup / key_positions ─▶ router::key_slot
//!     ─▶ topology snapshot (slot → master) ─▶ backend::Node (shared pipelined connection)
//!     ─▶ protocol::ReplyScanner ─▶ session (MOVED/ASK/TRYAGAIN, merge) ─▶ replies in order
//! ```
//!
//! Modules, one noun each:
//! - [`protocol`]: RESP request parser, reply scanner, encoders; every length has a limit.
//! - [`command`]: the command table (generated from Redis' `COMMAND`), keys, multi-key split/merge.
//! - [`router`]: pure decisions: key → slot, what a redirect means.
//! - [`topology`]: immutable slot-map snapshots, the cluster source, the refresher.
//! - [`backend`]: nodes and their multiplexed, pipelined connections.
//! - [`frontend`]: the listener, client sessions, locally answered commands.
//! - [`access`]: who may log in (`requirepass`), AUTH's answers.
//! - [`tls`]: TLS configurations from PEM files.
//! - [`config`]: validated configuration; [`reload`]: what a new config file changes live;
//!   [`error`]: typed errors; [`app`]: wiring and shutdown.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        reason = "tests assert with panics and index fixed fixtures"
    )
)]

pub mod access;
pub mod admin;
pub mod app;
pub mod backend;
pub mod command;
pub mod config;
pub mod error;
pub mod families;
pub mod fd_limit;
pub mod frontend;
pub mod mailbox;
pub mod metrics;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod tls;
pub mod topology;
pub mod uring;
pub mod workers;
pub mod zones;
