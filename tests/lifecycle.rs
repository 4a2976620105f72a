//! The proxy's own lifecycle against a real cluster: on SIGTERM slotgate stops accepting,
//! lets every client receive the replies it is owed, closes them and exits 0 within the drain
//! timeout, with its sessions spread over several worker threads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::{Cluster, Proxy, read_reply};

/// A script that keeps its master busy for about 300 ms, then answers `done`.
const SLOW: &str = "local s = redis.call('TIME') \
    while true do \
      local n = redis.call('TIME') \
      if (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > 300000 then break end \
    end \
    return 'done'";

#[test]
fn sigterm_drains_outstanding_replies_then_exits() {
    let cluster = Cluster::start(3, 0);
    let mut proxy = Proxy::cluster(&cluster, &["--threads", "3"]);
    // Clients on every worker, each with a slow request in flight when the signal comes.
    let mut clients: Vec<TcpStream> = (0..6).map(|_| proxy.raw()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let key = format!("drain:{i}");
        let frame = format!(
            "*4\r\n$4\r\nEVAL\r\n${}\r\n{SLOW}\r\n$1\r\n1\r\n${}\r\n{key}\r\n",
            SLOW.len(),
            key.len()
        );
        c.write_all(frame.as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let (status, took) = proxy
        .terminate(Duration::from_secs(15))
        .expect("slotgate exits after SIGTERM");
    assert!(status.success(), "{status}");
    // Two 300 ms scripts queue on each master: the exit waited for them, and no longer.
    assert!(
        took > Duration::from_millis(300) && took < Duration::from_secs(6),
        "drained in {took:?}"
    );

    // Every client got the reply it was owed, then the end of the connection.
    for c in &mut clients {
        let mut buf = Vec::new();
        let reply = read_reply(c, &mut buf);
        assert_eq!(
            reply,
            redis_protocol::resp2::types::OwnedFrame::BulkString(b"done".to_vec())
        );
        let mut rest = [0u8; 16];
        assert_eq!(c.read(&mut rest).unwrap_or(0), 0, "closed after its reply");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", proxy.port)).is_err(),
        "nothing listens after the exit"
    );
    let log = proxy.log();
    assert!(log.contains("draining"), "{log}");
}
