//! The proxy's own lifecycle against a real cluster: on SIGTERM slotgate turns `/ready` to
//! 503 at once (the admin listener answering through the drain), stops accepting,
//! lets every client receive the replies it is owed, closes them and exits 0 within the drain
//! timeout, with its sessions spread over several worker threads; with an idle timeout set, it
//! closes idle clients as Redis' `timeout` does, and only those.
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

use support::{Cluster, Proxy, TempConf, read_reply};

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
    let admin = support::free_port();
    let mut proxy = Proxy::cluster(
        &cluster,
        &["--threads", "3", "--admin", &format!("127.0.0.1:{admin}")],
    );
    assert_eq!(ready(admin), Some(200));
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
    let started = std::time::Instant::now();
    proxy.send_signal("TERM");
    // /ready turns 503 at once and answers so while the replies are owed (an orchestrator
    // takes the pod out of rotation while it drains).
    let mut during_drain = None;
    while started.elapsed() < Duration::from_millis(250) {
        during_drain = ready(admin);
        if during_drain == Some(503) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(during_drain, Some(503), "/ready while draining");
    let (status, took) = proxy
        .wait_exit(started, Duration::from_secs(15))
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

/// The status `/ready` answers on the admin listener at `port`, `None` when nothing answers.
fn ready(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// Sends one command on a raw socket and reads its reply.
fn ask(s: &mut TcpStream, frame: &[u8]) -> redis_protocol::resp2::types::OwnedFrame {
    s.write_all(frame).unwrap();
    read_reply(s, &mut Vec::new())
}

/// Whether the proxy closed `s`: a read that ends the stream (or a reset), not a timeout.
fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", &b[..n]),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn idle_clients_are_closed_after_the_idle_timeout_and_only_they() {
    use redis_protocol::resp2::types::OwnedFrame;
    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    let pong = || OwnedFrame::SimpleString(b"PONG".to_vec());
    let cluster = Cluster::start(3, 0);
    let conf = TempConf::new("[clients]\nidle_timeout_ms = 500\n");
    let proxy = Proxy::cluster(&cluster, &["--config", conf.path()]);
    // Without the setting, as in Redis (`timeout 0`), nobody is closed.
    let plain = Proxy::cluster(&cluster, &[]);

    // A client that asks for 32 MB and never reads it: more than the sockets hold, so the rest
    // waits in slotgate, and the client is idle (Redis closes such a client too). The value is
    // stored through the untimed proxy before any timed client opens: storing it can take
    // longer than the timeout, and every timed client would be idle meanwhile.
    const BIG: usize = 32 << 20;
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; BIG])
        .query(&mut plain.conn())
        .unwrap();

    let mut idle = proxy.raw();
    assert_eq!(ask(&mut idle, PING), pong());
    let mut never_asked = proxy.raw();
    let mut busy = proxy.raw();
    let mut subscriber = proxy.raw();
    ask(&mut subscriber, b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n");
    let mut blocked = proxy.raw();
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$5\r\njobs1\r\n$1\r\n0\r\n")
        .unwrap();
    let mut untimed = plain.raw();
    assert_eq!(ask(&mut untimed, PING), pong());
    let mut non_reader = proxy.raw();
    non_reader
        .write_all(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n")
        .unwrap();

    // Two seconds, four timeouts: the busy client pings every 100 ms meanwhile.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert_eq!(ask(&mut busy, PING), pong());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed(&mut idle), "an idle client is closed");
    assert!(
        closed(&mut never_asked),
        "a client that never sent anything is closed"
    );
    let mut got = 0;
    let mut chunk = vec![0u8; 1 << 20];
    non_reader
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    loop {
        match non_reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the client that does not read is still open ({got} bytes): {e}"),
        }
    }
    assert!(
        got < BIG,
        "closed before its reply was through ({got} of {BIG} bytes)"
    );
    assert_eq!(ask(&mut busy, PING), pong(), "an active client stays");
    assert_eq!(
        ask(&mut untimed, PING),
        pong(),
        "no timeout unless configured"
    );

    // The subscriber and the blocked client waited all along and are still served.
    let mut c = proxy.conn();
    // The count is the publishing master's receivers (0 when the subscriber is on another
    // master); the cluster bus delivers the message either way.
    let n: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hi")
        .query(&mut c)
        .unwrap();
    assert!(n <= 1, "{n}");
    assert_eq!(
        read_reply(&mut subscriber, &mut Vec::new()),
        OwnedFrame::Array(vec![
            OwnedFrame::BulkString(b"message".to_vec()),
            OwnedFrame::BulkString(b"news".to_vec()),
            OwnedFrame::BulkString(b"hi".to_vec()),
        ])
    );
    let _: i64 = redis::cmd("LPUSH")
        .arg("jobs1")
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        read_reply(&mut blocked, &mut Vec::new()),
        OwnedFrame::Array(vec![
            OwnedFrame::BulkString(b"jobs1".to_vec()),
            OwnedFrame::BulkString(b"x".to_vec()),
        ])
    );
}
