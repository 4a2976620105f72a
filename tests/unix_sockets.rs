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
    blpop_woken_by_a_push(&mut c, &proxy);

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

/// Clients through slotgate's own Unix socket (`--unix-socket`, `--unix-socket-perm`), in front
/// of a 3-master cluster: a stale socket file from a crash is replaced, the mode is applied,
/// pipelines, a transaction, a blocking pop and pub/sub work over it, CLIENT LIST shows the
/// client as Redis shows a Unix-socket client, a second slotgate does not steal the live socket,
/// and a plain file at the path is never removed.
#[test]
fn clients_are_served_over_slotgates_own_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = support::Cluster::start(3, 0);
    let dir =
        std::env::temp_dir().join(format!("sg-listen-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("slotgate.sock");
    let sock_s = sock.to_string_lossy().into_owned();
    // A stale socket file, as a killed slotgate leaves it.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let proxy = Proxy::cluster(
        &cluster,
        &["--unix-socket", &sock_s, "--unix-socket-perm", "770"],
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o770);
    let url = format!("redis+unix://{sock_s}");
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();

    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    // A pipeline over keys of every master, and a split MGET.
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.set(format!("p:{i}"), i).ignore();
    }
    pipe.mget((0..100).map(|i| format!("p:{i}")).collect::<Vec<_>>());
    let (got,): (Vec<i64>,) = pipe.query(&mut c).unwrap();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    // A transaction.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("{t}a", 1)
        .incr("{t}b", 2)
        .query(&mut c)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    // CLIENT LIST names the socket as Redis does for its own Unix-socket clients.
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.contains(&format!("addr={sock_s}:0 laddr={sock_s}:0")),
        "{list}"
    );
    // A blocking pop over the socket, woken by a push over TCP.
    blpop_woken_by_a_push(&mut c, &proxy);
    // Pub/sub over the socket.
    let mut sub = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut ps = sub.as_pubsub();
    ps.subscribe("news").unwrap();
    let receivers: i64 = proxy.conn().publish("news", "hello").unwrap();
    assert_eq!(receivers, 1);
    let msg = ps.get_message().unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
    drop(ps);

    // A second slotgate does not take the live socket over.
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let start_on = |path: &str| {
        run_until_exit(
            &[
                "--seed",
                &seed,
                "--listen",
                "127.0.0.1:0",
                "--unix-socket",
                path,
            ],
            20,
        )
    };
    let (ok, _, text) = start_on(&sock_s);
    assert!(
        !ok && text.contains("another process is listening on it"),
        "{text}"
    );
    assert_eq!(
        c.get::<_, String>("k").unwrap(),
        "v",
        "the first still serves"
    );

    // A plain file at the path is left alone.
    let plain = dir.join("plain");
    std::fs::write(&plain, b"keep").unwrap();
    let (ok, _, text) = start_on(&plain.to_string_lossy());
    assert!(!ok && text.contains("is not a socket"), "{text}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");
    // A relative path and a bad mode are refused when the config is read.
    let (ok, _, text) = run_until_exit(
        &[
            "--standalone",
            "127.0.0.1:1",
            "--unix-socket",
            "s.sock",
            "--check-config",
            "/dev/null",
        ],
        10,
    );
    assert!(!ok && text.contains("is not an absolute path"), "{text}");
    let (ok, _, text) = run_until_exit(
        &[
            "--standalone",
            "127.0.0.1:1",
            "--unix-socket",
            "/tmp/s.sock",
            "--unix-socket-perm",
            "999",
            "--check-config",
            "/dev/null",
        ],
        10,
    );
    assert!(!ok && text.contains("not a file mode in octal"), "{text}");
    drop(c);
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A BLPOP on `c`, answered by a push another client sends through `proxy`'s TCP port 200 ms
/// later.
fn blpop_woken_by_a_push(c: &mut redis::Connection, proxy: &Proxy) {
    let pusher = {
        let url = proxy.url();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut p = redis::Client::open(url).unwrap().get_connection().unwrap();
            let _: i64 = p.lpush("q", "job").unwrap();
        })
    };
    let popped: (String, String) = redis::cmd("BLPOP").arg("q").arg(5).query(c).unwrap();
    assert_eq!(popped, ("q".to_string(), "job".to_string()));
    pusher.join().unwrap();
}
