//! Unix sockets against a real redis-server: slotgate reaches a server through its
//! `unixsocket` (shared, private and subscriber connections alike, and the control connection
//! that learns the topology), and refuses a socket address it cannot use with the reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use redis::Commands;
use support::{Certs, Proxy, Redis, TempConf, free_port, run_until_exit};

#[test]
fn a_server_behind_its_unix_socket_is_fronted_in_full() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sg-unix-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("redis.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    let server = Redis::start_on(port, &["--unixsocket", &sock_s, "--unixsocketperm", "700"]);
    let proxy = Proxy::spawn(&["--standalone".into(), format!("unix:{sock_s}")]);
    let mut c = proxy.conn();

    // Plain commands and a pipeline.
    let _: () = c.set("k", "v").unwrap();
    let v: String = c.get("k").unwrap();
    assert_eq!(v, "v");
    let mut pipe = redis::pipe();
    for _ in 0..100 {
        pipe.incr("n", 1);
    }
    let counts: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(counts, (1..=100).collect::<Vec<_>>());

    // A transaction.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("t", 1)
        .incr("t", 1)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 2));

    // A blocking pop (a private connection), served by a push from another client.
    let pusher = {
        let url = proxy.url();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut p = redis::Client::open(url).unwrap().get_connection().unwrap();
            let _: i64 = p.lpush("q", "job").unwrap();
        })
    };
    let popped: (String, String) = redis::cmd("BLPOP").arg("q").arg(5).query(&mut c).unwrap();
    assert_eq!(popped, ("q".to_string(), "job".to_string()));
    pusher.join().unwrap();

    // Pub/sub (a subscriber connection).
    let mut sub_conn = proxy.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let receivers: i64 = c.publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    let msg = sub.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");

    // Every connection slotgate holds to the server is on the socket: the server lists them
    // with the `U` flag; only the harness's own connection (which asks) is TCP.
    let mut admin = server.conn();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    let (unix, tcp): (Vec<&str>, Vec<&str>) = list.lines().partition(|l| {
        l.split(' ')
            .any(|f| f.starts_with("flags=") && f.contains('U'))
    });
    assert!(
        unix.len() >= 3,
        "shared, blocking and subscriber connections: {list}"
    );
    assert_eq!(tcp.len(), 1, "only the harness's connection is TCP: {list}");
    assert!(tcp[0].contains("cmd=client|list"), "{list}");

    // The address shows as the socket in slotgate's own reports.
    assert!(
        proxy
            .nodes_section()
            .iter()
            .any(|l| l.contains(&format!("unix:{sock_s}"))),
        "{:?}",
        proxy.nodes_section()
    );
    drop(sub);
    drop(proxy);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_socket_address_slotgate_cannot_use_is_refused_with_the_reason() {
    // A relative path: refused when the config is read.
    let (ok, _, text) = run_until_exit(
        &["--standalone", "unix:redis.sock", "--listen", "127.0.0.1:0"],
        10,
    );
    assert!(
        !ok && text.contains("a Unix socket path must be absolute"),
        "{text}"
    );
    // TLS towards a socket file: Redis serves none there, so the config says so.
    let certs = Certs::generate();
    let (ok, _, text) = run_until_exit(
        &[
            "--standalone",
            "unix:/run/redis.sock",
            "--backend-tls",
            "--backend-ca",
            &certs.path("ca.crt"),
            "--check-config",
            "/dev/null",
        ],
        10,
    );
    assert!(!ok && text.contains("TLS towards a Unix socket"), "{text}");
    // No server behind the path: start-up gives up naming it and the cause.
    let conf = TempConf::new("[topology]\nstartup_timeout_ms = 500\n");
    let missing = format!("/tmp/sg-none-{}/redis.sock", std::process::id());
    let (ok, _, text) = run_until_exit(
        &[
            "--standalone",
            &format!("unix:{missing}"),
            "--listen",
            "127.0.0.1:0",
            "--config",
            conf.path(),
        ],
        10,
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("unix:{missing}")) && text.contains("No such file or directory"),
        "{text}"
    );
}
