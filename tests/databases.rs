//! SELECT in front of one server (standalone and Sentinel modes): every database works as in
//! Redis, and sessions on different databases stay apart although they share backend
//! connections. Compared with a real redis-server wherever Redis has an answer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use support::{Proxy, Redis, SentinelGroup, read_reply};

/// A command as RESP, from its arguments.
fn frame(args: &[&str]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    f
}

/// Sends every command in one write and reads their replies.
fn pipeline(s: &mut TcpStream, cmds: &[&[&str]]) -> Vec<OwnedFrame> {
    let mut all = Vec::new();
    for c in cmds {
        all.extend(frame(c));
    }
    s.write_all(&all).unwrap();
    let mut buf = Vec::new();
    cmds.iter().map(|_| read_reply(s, &mut buf)).collect()
}

fn ask(s: &mut TcpStream, args: &[&str]) -> OwnedFrame {
    pipeline(s, &[args]).remove(0)
}

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn bulk(s: &str) -> OwnedFrame {
    OwnedFrame::BulkString(s.as_bytes().to_vec())
}

fn ok() -> OwnedFrame {
    OwnedFrame::SimpleString(b"OK".to_vec())
}

#[test]
fn select_works_in_standalone_mode_and_keeps_databases_apart() {
    let server = Redis::start(&["--databases", "8"]);
    // One worker, one shared connection per dialect: every client below shares them.
    let proxy = Proxy::spawn(&[
        "--standalone".to_string(),
        server.addr(),
        "--threads".to_string(),
        "1".to_string(),
    ]);
    let direct_port: u16 = server.addr().rsplit(':').next().unwrap().parse().unwrap();

    // The same answers as the server itself, for good and bad arguments.
    for arg in [
        "0",
        "7",
        "8",
        "-1",
        "4294967296",
        "99999999999999999999",
        "abc",
        "01",
        "+1",
        "",
    ] {
        let want = ask(&mut raw(direct_port), &["SELECT", arg]);
        let got = ask(&mut raw(proxy.port), &["SELECT", arg]);
        assert_eq!(got, want, "SELECT {arg:?}");
    }

    // Two clients on different databases, interleaved on the same shared connections.
    let mut a = raw(proxy.port);
    let mut b = raw(proxy.port);
    assert_eq!(ask(&mut a, &["SELECT", "1"]), ok());
    for i in 0..50 {
        let (va, vb) = (format!("a{i}"), format!("b{i}"));
        let ra = pipeline(&mut a, &[&["SET", "k", &va], &["GET", "k"]]);
        let rb = pipeline(&mut b, &[&["SET", "k", &vb], &["GET", "k"]]);
        assert_eq!(ra, vec![ok(), bulk(&va)]);
        assert_eq!(rb, vec![ok(), bulk(&vb)]);
    }
    let mut d = raw(direct_port);
    assert_eq!(ask(&mut d, &["GET", "k"]), bulk("b49"));
    assert_eq!(
        pipeline(&mut d, &[&["SELECT", "1"], &["GET", "k"]]),
        vec![ok(), bulk("a49")]
    );

    // A pipeline that changes database midway: each command runs in the database selected
    // before it, as on one Redis connection.
    assert_eq!(
        pipeline(
            &mut b,
            &[
                &["SET", "p", "zero"],
                &["SELECT", "2"],
                &["GET", "p"],
                &["SET", "p", "two"],
                &["SELECT", "0"],
                &["GET", "p"],
                &["DBSIZE"],
            ]
        ),
        vec![
            ok(),
            ok(),
            OwnedFrame::Null,
            ok(),
            ok(),
            bulk("zero"),
            OwnedFrame::Integer(2),
        ]
    );
    assert_eq!(
        pipeline(&mut d, &[&["SELECT", "2"], &["GET", "p"]]),
        vec![ok(), bulk("two")]
    );

    // CLIENT LIST shows the database, RESET goes back to 0.
    let list = match ask(&mut a, &["CLIENT", "INFO"]) {
        OwnedFrame::BulkString(t) => String::from_utf8(t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert!(list.contains(" db=1 "), "{list}");
    assert_eq!(
        pipeline(&mut a, &[&["RESET"], &["GET", "k"]]),
        vec![OwnedFrame::SimpleString(b"RESET".to_vec()), bulk("b49")]
    );

    // MOVE and SWAPDB reach the server.
    assert_eq!(
        pipeline(
            &mut a,
            &[&["SET", "m", "v"], &["MOVE", "m", "3"], &["EXISTS", "m"]]
        ),
        vec![ok(), OwnedFrame::Integer(1), OwnedFrame::Integer(0)]
    );
    assert_eq!(
        pipeline(
            &mut a,
            &[&["SWAPDB", "3", "4"], &["SELECT", "4"], &["GET", "m"]]
        ),
        vec![ok(), ok(), bulk("v")]
    );

    // A WATCH made in one database holds across SELECT, and the transaction runs in the
    // database selected when it is sent, as in Redis.
    let mut w = raw(proxy.port);
    assert_eq!(
        pipeline(
            &mut w,
            &[
                &["WATCH", "wk"],
                &["SELECT", "5"],
                &["MULTI"],
                &["SET", "wk", "in5"],
                &["EXEC"],
            ]
        ),
        vec![
            ok(),
            ok(),
            ok(),
            OwnedFrame::SimpleString(b"QUEUED".to_vec()),
            OwnedFrame::Array(vec![ok()]),
        ]
    );
    assert_eq!(
        pipeline(&mut d, &[&["SELECT", "5"], &["GET", "wk"]]),
        vec![ok(), bulk("in5")]
    );
    // The WATCH is kept on the key of database 0: a write there aborts the transaction.
    assert_eq!(
        pipeline(
            &mut w,
            &[&["SELECT", "0"], &["WATCH", "wk"], &["SELECT", "5"]]
        ),
        vec![ok(), ok(), ok()]
    );
    assert_eq!(
        pipeline(&mut d, &[&["SELECT", "0"], &["SET", "wk", "changed"]]),
        vec![ok(), ok()]
    );
    assert_eq!(
        pipeline(&mut w, &[&["MULTI"], &["SET", "wk", "again"], &["EXEC"]]),
        vec![
            ok(),
            OwnedFrame::SimpleString(b"QUEUED".to_vec()),
            OwnedFrame::Null
        ]
    );

    // A blocked client in database 6 is woken by a push to database 6 only.
    let mut blocked = raw(proxy.port);
    assert_eq!(ask(&mut blocked, &["SELECT", "6"]), ok());
    blocked.write_all(&frame(&["BLPOP", "q", "0"])).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut pusher = raw(proxy.port);
    assert_eq!(
        pipeline(
            &mut pusher,
            &[
                &["LPUSH", "q", "db0"],
                &["SELECT", "6"],
                &["LPUSH", "q", "db6"]
            ]
        ),
        vec![OwnedFrame::Integer(1), ok(), OwnedFrame::Integer(1)]
    );
    assert_eq!(
        read_reply(&mut blocked, &mut Vec::new()),
        OwnedFrame::Array(vec![bulk("q"), bulk("db6")])
    );
    // The blocked client's own connection followed it: its next commands still run in 6.
    assert_eq!(ask(&mut blocked, &["BLPOP", "q", "0.1"]), OwnedFrame::Null);
    assert_eq!(
        pipeline(&mut d, &[&["SELECT", "0"], &["LLEN", "q"]]),
        vec![ok(), OwnedFrame::Integer(1)]
    );
    assert_eq!(ask(&mut blocked, &["SELECT", "1"]), ok());
    assert_eq!(
        pipeline(&mut blocked, &[&["BLPOP", "k2", "0.1"], &["GET", "k"]]),
        vec![OwnedFrame::Null, bulk("a49")]
    );
    // SELECT inside MULTI is refused whole, as before (documented in COMMANDS.md).
    let r = pipeline(&mut b, &[&["MULTI"], &["SELECT", "1"], &["EXEC"]]);
    assert_eq!(
        r,
        vec![
            ok(),
            OwnedFrame::Error("ERR 'select' cannot be used inside MULTI through slotgate".into()),
            OwnedFrame::Error("EXECABORT Transaction discarded because of previous errors.".into()),
        ]
    );
}

#[test]
fn select_works_in_sentinel_mode_with_the_masters_database_count() {
    let group = SentinelGroup::start(0, 1, 5000);
    let proxy = Proxy::sentinel(&group.sentinel_addrs(), &[]);
    let mut c = raw(proxy.port);
    // The group's master has Redis' default 16 databases.
    assert_eq!(
        pipeline(
            &mut c,
            &[
                &["SELECT", "15"],
                &["SET", "s", "15"],
                &["SELECT", "16"],
                &["GET", "s"]
            ]
        ),
        vec![
            ok(),
            ok(),
            OwnedFrame::Error("ERR DB index is out of range".into()),
            bulk("15"),
        ]
    );
    let mut d = group.node(group.master_port()).conn();
    let v: Option<String> = redis::cmd("GET").arg("s").query(&mut d).unwrap();
    assert_eq!(v, None, "database 0 untouched");
    let _: () = redis::cmd("SELECT").arg(15).query(&mut d).unwrap();
    let v: Option<String> = redis::cmd("GET").arg("s").query(&mut d).unwrap();
    assert_eq!(v.as_deref(), Some("15"));
}
