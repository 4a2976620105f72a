//! The byte stream of one client: TCP, or TLS over TCP (rustls), as one type
//! (`backend::stream::Stream` with a rustls server stream), so the session is compiled once:
//! a second instantiation of the session for TLS made the compiler stop inlining the request
//! path's callees.
//!
//! This module only names the type; it must never parse, buffer or log what the stream carries.

use tokio::net::TcpStream;

pub type ClientStream = crate::backend::stream::Stream<tokio_rustls::server::TlsStream<TcpStream>>;
