//! `--io uring` against a real 3-master cluster: every plaintext TCP socket (clients' and
//! nodes') goes through the workers' io_uring rings, and a mixed load behaves as on epoll:
//! pipelines over every master, values of megabytes both ways, MGET and MSET split over the
//! masters, a subscriber hearing a message, a BLPOP woken by a push from another client, a
//! transaction, clients that leave with replies in flight, and 2 workers. The whole suite
//! runs on io_uring too in CI (a second pass with `SLOTGATE_IO=uring`, deploy/test.sh).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use support::{Cluster, Proxy};

#[test]
fn a_mixed_load_through_io_uring_equals_epoll() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &["--io", "uring", "--threads", "2"]);
    let log = proxy.log();
    assert!(log.contains("plaintext TCP sockets on io_uring"), "{log}");

    // Pipelines of 200 commands over every master, from 8 clients at once.
    std::thread::scope(|scope| {
        for c in 0..8 {
            let proxy = &proxy;
            scope.spawn(move || {
                let mut conn = proxy.conn();
                for round in 0..20 {
                    let mut pipe = redis::pipe();
                    for i in 0..200 {
                        pipe.cmd("SET")
                            .arg(format!("k{c}:{round}:{i}"))
                            .arg(i)
                            .ignore();
                    }
                    for i in 0..200 {
                        pipe.cmd("GET").arg(format!("k{c}:{round}:{i}"));
                    }
                    let got: Vec<i64> = pipe.query(&mut conn).unwrap();
                    assert_eq!(got, (0..200).collect::<Vec<i64>>());
                }
            });
        }
    });

    let mut c = proxy.conn();
    // Values larger than a receive buffer and than one send, both ways.
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert!(back == big);

    // Split over the masters.
    let keys: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for k in &keys {
        mset.arg(k).arg(format!("v-{k}"));
    }
    let () = mset.query(&mut c).unwrap();
    let got: Vec<String> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
    assert_eq!(
        got,
        keys.iter().map(|k| format!("v-{k}")).collect::<Vec<_>>()
    );

    // A subscriber, and a blocked client woken by another's push.
    let mut sub = proxy.raw();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.write_all(b"SUBSCRIBE news\r\n").unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        support::frame_texts(&support::read_reply(&mut sub, &mut buf)),
        ["subscribe", "news", "1"]
    );
    let blocked = std::thread::spawn({
        let mut b = proxy.conn();
        move || -> Vec<String> { redis::cmd("BLPOP").arg("q").arg(10).query(&mut b).unwrap() }
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hi")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        support::frame_texts(&support::read_reply(&mut sub, &mut buf)),
        ["message", "news", "hi"]
    );
    let _: i64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("job")
        .query(&mut c)
        .unwrap();
    assert_eq!(blocked.join().unwrap(), ["q", "job"]);

    // A transaction.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("{t}x")
        .cmd("INCRBY")
        .arg("{t}x")
        .arg(2)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 3));

    // Clients that leave with replies in flight, a hundred times: slotgate serves on, and
    // closes each.
    let connected = |c: &mut redis::Connection| -> String {
        let info: String = redis::cmd("INFO").arg("clients").query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .unwrap()
            .trim()
            .to_string()
    };
    let before = connected(&mut c);
    for _ in 0..100 {
        let mut raw = proxy.raw();
        raw.write_all(b"GET big\r\nGET big\r\n").unwrap();
        let mut first = [0u8; 64];
        let _ = raw.read(&mut first).unwrap();
    }
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    support::wait_until("the left clients are gone", Duration::from_secs(10), || {
        connected(&mut c) == before
    });
}
