//! A scripted fake node, for replies a real Redis cannot be made to give on demand: a backend
//! that answers with bytes that are not RESP, or with arrays that never close. slotgate answers
//! the client with an error, drops that connection, reconnects, and keeps serving. A complete
//! reply nested beyond `max_reply_depth` fails its own request only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::Proxy;

/// Answers INFO (discovery) properly, PING with PONG, and GET with `bad` bytes.
fn fake_node(
    bad: &'static [u8],
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    connections.fetch_add(1, Ordering::Relaxed);
                    std::thread::spawn(move || serve(s, bad));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, handle)
}

fn serve(mut s: TcpStream, bad: &'static [u8]) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((frame, used))) = redis_protocol::resp2::decode::decode(&buf) {
            buf.drain(..used);
            let text = match &frame {
                redis_protocol::resp2::types::OwnedFrame::Array(items) => items
                    .iter()
                    .filter_map(|i| match i {
                        redis_protocol::resp2::types::OwnedFrame::BulkString(b) => {
                            Some(String::from_utf8_lossy(b).to_uppercase())
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            };
            let reply: Vec<u8> = if text.contains("INFO") {
                let body = "# Server\r\nredis_version:7.0.15\r\n";
                format!("${}\r\n{body}\r\n", body.len()).into_bytes()
            } else if text.contains("PING") {
                b"+PONG\r\n".to_vec()
            } else {
                bad.to_vec()
            };
            if s.write_all(&reply).is_err() {
                return;
            }
        }
    }
}

/// The error `GET k` gets (it must get one).
fn get_error(c: &mut redis::Connection) -> String {
    redis::cmd("GET")
        .arg("k")
        .query::<Option<String>>(c)
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_and_too_deep_backend_replies_become_client_errors_not_crashes() {
    for bad in [
        &b"?garbage\r\n"[..],
        // Arrays that never close, past the hard limit of a million levels.
        &b"*1\r\n".repeat(1_000_001).leak()[..],
        &b"$99999999999999\r\n"[..],
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (port, handle) = fake_node(bad, stop.clone(), connections.clone());
        let proxy = Proxy::spawn(&["--standalone".to_string(), format!("127.0.0.1:{port}")]);
        let mut c = proxy.conn();
        for _ in 0..3 {
            let e = get_error(&mut c);
            assert!(e.contains("malformed reply"), "{e}");
            // Past the reconnect backoff, the next request gets a fresh connection.
            std::thread::sleep(Duration::from_millis(300));
        }
        // The proxy process is alive and still answers.
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        assert!(
            connections.load(Ordering::Relaxed) >= 3,
            "the bad connection was dropped and reopened"
        );
        assert!(proxy.log().contains("malformed reply"), "{}", proxy.log());
        stop.store(true, Ordering::Relaxed);
        drop(proxy);
        handle.join().unwrap();
    }
}

#[test]
fn a_complete_reply_beyond_the_depth_limit_fails_its_request_and_keeps_the_connection() {
    let mut deep = b"*1\r\n".repeat(12_000);
    deep.extend_from_slice(b":1\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicUsize::new(0));
    let (port, handle) = fake_node(deep.leak(), stop.clone(), connections.clone());
    let proxy = Proxy::spawn(&["--standalone".to_string(), format!("127.0.0.1:{port}")]);
    let mut c = proxy.conn();
    // Every worker's connection opened (they open with the node, each on its own time).
    assert!(get_error(&mut c).contains("nested deeper"));
    std::thread::sleep(Duration::from_millis(500));
    let before = connections.load(Ordering::Relaxed);
    for _ in 0..3 {
        let e = get_error(&mut c);
        assert!(e.contains("nested deeper than 10000 levels"), "{e}");
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
    }
    assert_eq!(
        connections.load(Ordering::Relaxed),
        before,
        "no connection was dropped or opened"
    );
    stop.store(true, Ordering::Relaxed);
    drop(proxy);
    handle.join().unwrap();
}
