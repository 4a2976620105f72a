//! Transactions (MULTI/EXEC/DISCARD/WATCH) and blocking commands (BLPOP, BZPOPMIN, XREAD BLOCK)
//! through slotgate against a real cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use redis::{Commands, Value};
use support::{Cluster, Proxy, Redis};

fn blocked_clients(cluster: &Cluster) -> u64 {
    cluster
        .masters()
        .iter()
        .map(|m| {
            m.info_field("clients", "blocked_clients")
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn transactions_behave_as_redis_within_one_slot() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();

    // A transaction on one slot runs atomically and answers EXEC's array.
    let (n, v): (i64, String) = redis::pipe()
        .atomic()
        .incr("{acct}balance", 5)
        .set("{acct}owner", "ann")
        .ignore()
        .get("{acct}owner")
        .query(&mut c)
        .unwrap();
    assert_eq!((n, v.as_str()), (5, "ann"));
    let owner = cluster.owner_of_slot(slotgate::router::key_slot(b"acct"));
    assert_eq!(
        owner.calls("exec"),
        1,
        "one MULTI..EXEC on the slot's master"
    );

    // A command for another slot is refused at queue time and EXEC aborts, as Redis does.
    let _: Value = redis::cmd("MULTI").query(&mut c).unwrap();
    let q: Value = redis::cmd("SET")
        .arg("{acct}x")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(q, Value::SimpleString("QUEUED".into()));
    let e = redis::cmd("SET")
        .arg("{other}y")
        .arg(1)
        .query::<Value>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same slot"), "{e}");
    let e = redis::cmd("EXEC")
        .query::<Value>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("EXECABORT") || e.contains("Transaction discarded"),
        "{e}"
    );
    assert_eq!(c.get::<_, Option<i64>>("{acct}x").unwrap(), None);

    // DISCARD, nesting and EXEC/DISCARD without MULTI.
    let _: Value = redis::cmd("MULTI").query(&mut c).unwrap();
    let e = redis::cmd("MULTI")
        .query::<Value>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MULTI calls can not be nested"), "{e}");
    let _: Value = redis::cmd("SET")
        .arg("{acct}x")
        .arg(2)
        .query(&mut c)
        .unwrap();
    let _: Value = redis::cmd("DISCARD").query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<i64>>("{acct}x").unwrap(), None);
    assert!(
        redis::cmd("EXEC")
            .query::<Value>(&mut c)
            .unwrap_err()
            .to_string()
            .contains("EXEC without MULTI")
    );
    assert!(
        redis::cmd("DISCARD")
            .query::<Value>(&mut c)
            .unwrap_err()
            .to_string()
            .contains("DISCARD without MULTI")
    );

    // WATCH: a conflicting write by another client makes EXEC return null.
    let mut other = proxy.conn();
    let _: () = c.set("{acct}w", 1).unwrap();
    let _: Value = redis::cmd("WATCH").arg("{acct}w").query(&mut c).unwrap();
    let seen: i64 = c.get("{acct}w").unwrap();
    let _: () = other.set("{acct}w", 100).unwrap();
    let _: Value = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("SET")
        .arg("{acct}w")
        .arg(seen + 1)
        .query(&mut c)
        .unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, Value::Nil, "WATCH conflict aborts");
    assert_eq!(c.get::<_, i64>("{acct}w").unwrap(), 100);
    // ...and without a conflict it commits.
    let _: Value = redis::cmd("WATCH").arg("{acct}w").query(&mut c).unwrap();
    let _: Value = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("INCR").arg("{acct}w").query(&mut c).unwrap();
    let r: Vec<i64> = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, vec![101]);
    // WATCH of keys in two slots is refused like any cross-slot request.
    let e = redis::cmd("WATCH")
        .arg("{a}1")
        .arg("{b}2")
        .query::<Value>(&mut c)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same slot"), "{e}");

    // A client that leaves mid-transaction leaves nothing behind.
    {
        let mut gone = proxy.conn();
        let _: Value = redis::cmd("MULTI").query(&mut gone).unwrap();
        let _: Value = redis::cmd("SET")
            .arg("{acct}left")
            .arg(1)
            .query(&mut gone)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.get::<_, Option<i64>>("{acct}left").unwrap(), None);

    // redis-py's default pipeline is a transaction.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
p = r.pipeline()
p.set("{py}a", 1); p.incr("{py}a"); p.get("{py}a")
assert p.execute() == [True, 2, "2"], "pipeline"
with r.pipeline() as p:
    p.watch("{py}a")
    v = int(p.get("{py}a"))
    p.multi(); p.set("{py}a", v * 10)
    assert p.execute() == [True]
assert r.get("{py}a") == "20"
print("redis-py transactions ok")
"#;
    support::run_python(script, proxy.port);

    // Commands Redis flags no-multi (SAVE, SHUTDOWN, SYNC) are refused at queue time with
    // Redis' own error, and EXEC then aborts: the same answers as a redis-server's.
    let answers = |c: &mut redis::Connection| -> Vec<String> {
        let mut out = Vec::new();
        for cmd in [
            &["MULTI"][..],
            &["SET", "{nm}k", "1"],
            &["SAVE"],
            &["SHUTDOWN", "NOSAVE"],
            &["EXEC"],
        ] {
            let mut q = redis::cmd(cmd[0]);
            for a in &cmd[1..] {
                q.arg(*a);
            }
            out.push(match q.query::<Value>(c) {
                Ok(v) => format!("{v:?}"),
                Err(e) => format!("{:?} {}", e.code(), e.detail().unwrap_or_default()),
            });
        }
        out
    };
    let through = answers(&mut proxy.conn());
    let direct = answers(
        &mut cluster
            .owner_of_slot(slotgate::router::key_slot(b"nm"))
            .conn(),
    );
    assert_eq!(through, direct);
    assert!(
        through[2].contains("Command not allowed inside a transaction"),
        "{through:?}"
    );
}

#[test]
fn blocking_commands_get_their_own_connections_and_never_stall_others() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();

    // Timeouts behave as in Redis.
    let t = Instant::now();
    let r: Value = redis::cmd("BLPOP")
        .arg("empty")
        .arg(0.3)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    assert!(
        t.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t.elapsed()
    );
    let r: Value = redis::cmd("BZPOPMIN")
        .arg("emptyz")
        .arg(0.1)
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    // The same client keeps working after a blocking command.
    let _: () = c.set("after-block", 1).unwrap();

    // A reply ahead of a blocking command in one pipeline is written at once, as Redis does,
    // not held until the blocking command returns.
    let mut raw = proxy.raw();
    let t = Instant::now();
    std::io::Write::write_all(
        &mut raw,
        b"*3\r\n$3\r\nSET\r\n$4\r\n{q}a\r\n$1\r\n1\r\n*3\r\n$5\r\nBLPOP\r\n$7\r\n{q}list\r\n$3\r\n0.6\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"+OK\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    let n = std::io::Read::read(&mut raw, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"*-1\r\n");
    assert!(
        t.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );

    // 100 clients blocked on 100 lists: the rest of the proxy keeps serving.
    let waiters: Vec<_> = (0..100)
        .map(|i| {
            let url = proxy.url();
            std::thread::spawn(move || {
                let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
                w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let r: (String, String) = redis::cmd("BLPOP")
                    .arg(format!("queue:{i}"))
                    .arg(20)
                    .query(&mut w)
                    .unwrap();
                r
            })
        })
        .collect();
    support::wait_until("100 blocked clients", Duration::from_secs(10), || {
        blocked_clients(&cluster) == 100
    });

    // A GET workload while they are blocked, against the same workload with nobody blocked.
    let bench = |port: u16| -> f64 {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port.to_string(),
                "-t",
                "get",
                "-n",
                "20000",
                "-c",
                "20",
                "--csv",
                "-r",
                "1000",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("\"GET\""))
            .unwrap_or_else(|| panic!("{text}"));
        line.split(',')
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap()
    };
    let with_blocked = bench(proxy.port);

    // Pushes wake the right client.
    for i in 0..100 {
        let _: () = c.rpush(format!("queue:{i}"), format!("job-{i}")).unwrap();
    }
    for (i, w) in waiters.into_iter().enumerate() {
        let (list, job) = w.join().unwrap();
        assert_eq!((list, job), (format!("queue:{i}"), format!("job-{i}")));
    }
    let without = bench(proxy.port);
    eprintln!(
        "GET throughput through slotgate: {with_blocked:.0} req/s with 100 clients blocked in BLPOP, {without:.0} req/s with none (ratio {:.2})",
        with_blocked / without
    );
    assert!(
        with_blocked > without * 0.5,
        "blocked clients slowed others: {with_blocked} vs {without}"
    );

    // XREAD BLOCK and a client that disconnects while blocked releases its connection.
    let t = Instant::now();
    let r: Value = redis::cmd("XREAD")
        .arg("BLOCK")
        .arg(200)
        .arg("STREAMS")
        .arg("s1")
        .arg("$")
        .query(&mut c)
        .unwrap();
    assert_eq!(r, Value::Nil);
    assert!(t.elapsed() >= Duration::from_millis(180));
    {
        let mut gone = proxy.raw();
        std::io::Write::write_all(
            &mut gone,
            b"*3\r\n$5\r\nBLPOP\r\n$5\r\nnever\r\n$1\r\n0\r\n",
        )
        .unwrap();
        support::wait_until("the BLPOP to block", Duration::from_secs(5), || {
            blocked_clients(&cluster) == 1
        });
    }
    support::wait_until(
        "disconnect to release the blocked connection",
        Duration::from_secs(5),
        || blocked_clients(&cluster) == 0,
    );

    // Private connections per node are bounded; beyond the bound a clear error, fast.
    let conf = support::TempConf::new("[backend]\nmax_private_per_node = 2\n");
    let small = Proxy::cluster(&cluster, &["--config", conf.path()]);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut s = small.raw();
            std::io::Write::write_all(&mut s, b"*3\r\n$5\r\nBLPOP\r\n$3\r\n{x}\r\n$1\r\n0\r\n")
                .unwrap();
            s
        })
        .collect();
    support::wait_until("two blocked", Duration::from_secs(5), || {
        blocked_clients(&cluster) == 2
    });
    let e = redis::cmd("BLPOP")
        .arg("{x}")
        .arg(0)
        .query::<Value>(&mut small.conn())
        .unwrap_err()
        .to_string();
    assert!(e.contains("too many blocked or watching clients"), "{e}");
    drop(held);
}

/// A job-queue-shaped workload (what BullMQ-style libraries do): producers add jobs with a Lua
/// script over `{queue}`-tagged keys, workers take them with BZPOPMIN and acknowledge with
/// another script; meanwhile a RESP3 client (redis-rs with protocol=resp3) reads maps.
#[test]
fn job_queue_workload_and_a_resp3_client_run_without_error() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let add = "redis.call('HSET', KEYS[2] .. ARGV[1], 'data', ARGV[2]); \
               return redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])";
    let ack = "redis.call('DEL', KEYS[2] .. ARGV[1]); return redis.call('INCR', KEYS[3])";
    let jobs = 300;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let url = proxy.url();
            std::thread::spawn(move || {
                let mut w = redis::Client::open(url).unwrap().get_connection().unwrap();
                w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut done = 0;
                loop {
                    let r: Option<(String, String, f64)> = redis::cmd("BZPOPMIN")
                        .arg("{queue}wait")
                        .arg(1)
                        .query(&mut w)
                        .unwrap();
                    let Some((_, id, _)) = r else { return done };
                    let _: i64 = redis::cmd("EVAL")
                        .arg(ack)
                        .arg(3)
                        .arg("{queue}wait")
                        .arg("{queue}job:")
                        .arg("{queue}done")
                        .arg(&id)
                        .query(&mut w)
                        .unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    let mut p = proxy.conn();
    for i in 0..jobs {
        let _: i64 = redis::cmd("EVAL")
            .arg(add)
            .arg(2)
            .arg("{queue}wait")
            .arg("{queue}job:")
            .arg(format!("j{i}"))
            .arg("payload")
            .arg(i)
            .query(&mut p)
            .unwrap();
    }
    let done: i64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, jobs);
    assert_eq!(p.get::<_, i64>("{queue}done").unwrap(), jobs);

    let mut r3 = redis::Client::open(format!("{}?protocol=resp3", proxy.url()))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("h3")
        .arg("f")
        .arg("v")
        .query(&mut r3)
        .unwrap();
    let v: Value = redis::cmd("HGETALL").arg("h3").query(&mut r3).unwrap();
    assert!(
        matches!(v, Value::Map(ref m) if m.len() == 1),
        "a RESP3 map: {v:?}"
    );
    let v: Value = redis::cmd("GET").arg("missing").query(&mut r3).unwrap();
    assert_eq!(v, Value::Nil);
}

/// `args` as text: the value or the error, so that replies compare whole.
fn said(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<redis::Value>(c) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("error: {e}"),
    }
}

/// CLIENT UNBLOCK of a client blocked in BLPOP (TIMEOUT, then ERROR), of an idle one, of no
/// client, and with bad arguments, through `url`: what the blocked client and the asker got.
fn unblock_story(url: &str) -> Vec<String> {
    let mut asker = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut out = Vec::new();
    let mut blocked_conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut blocked_conn)
        .unwrap();
    let id = id.to_string();
    for mode in [None, Some("ERROR")] {
        let waiter = std::thread::spawn(move || {
            let got = said(&mut blocked_conn, &["BLPOP", "{q}unblock", "0"]);
            (got, blocked_conn)
        });
        let mut args = vec!["CLIENT", "UNBLOCK", &id];
        args.extend(mode);
        // Until the BLPOP has reached its node, there is nothing to unblock (`:0`): ask again.
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = loop {
            std::thread::sleep(Duration::from_millis(100));
            let got = said(&mut asker, &args);
            if got != "int(0)" || Instant::now() > deadline {
                break got;
            }
        };
        out.push(got);
        let (got, conn) = waiter.join().unwrap();
        out.push(got);
        blocked_conn = conn;
    }
    for args in [
        &["CLIENT", "UNBLOCK", &id][..],
        &["CLIENT", "UNBLOCK", "999999"],
        &["CLIENT", "UNBLOCK", "x"],
        &["CLIENT", "UNBLOCK", &id, "FOO"],
        &["CLIENT", "UNBLOCK", &id, "TIMEOUT", "more"],
    ] {
        out.push(said(&mut asker, args));
    }
    drop(blocked_conn);
    out
}

#[test]
fn client_unblock_reaches_the_node_a_client_is_blocked_on() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = Redis::start(&[]);
    let want = unblock_story(&reference.url());
    assert_eq!(want[0], "int(1)", "{want:?}");
    assert_eq!(unblock_story(&proxy.url()), want);
}

/// Rounds of 20 in which a new client's BLPOP, written before another client's LPUSH and LPOP
/// on the same list, gets the element (Redis hands a pushed element to a blocked client, so the
/// other's LPOP finds nothing): the BLPOP reached the node first.
fn first_blpop_served(addr: &str) -> usize {
    use std::io::{Read, Write};
    let mut other = std::net::TcpStream::connect(addr).unwrap();
    let mut served = 0;
    for round in 0..20 {
        let list = format!("first-blpop-{round}");
        let mut waiter = std::net::TcpStream::connect(addr).unwrap();
        waiter
            .write_all(format!("BLPOP {list} 5\r\n").as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_micros(300));
        other
            .write_all(format!("LPUSH {list} x\r\nLPOP {list}\r\n").as_bytes())
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") || got.iter().filter(|&&b| b == b'\n').count() < 2 {
            let mut chunk = [0u8; 256];
            let n = other.read(&mut chunk).unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        if got == b":1\r\n$-1\r\n" {
            served += 1;
        } else {
            // Overtaken: the waiter still waits; end it.
            let _ = waiter.shutdown(std::net::Shutdown::Both);
        }
    }
    served
}

/// The node's connection ids (`CLIENT LIST`) and the id of the one blocked in `cmd`, if any.
fn node_connections(node: &Redis, cmd: &str) -> (Vec<u64>, Option<u64>) {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut node.conn())
        .unwrap();
    let id = |l: &str| {
        l.split(' ')
            .find_map(|f| f.strip_prefix("id="))
            .and_then(|v| v.parse().ok())
    };
    let ids = list.lines().filter_map(id).collect();
    let blocked = list
        .lines()
        .find(|l| l.contains(&format!("cmd={cmd}")) && l.contains("flags=b"))
        .and_then(id);
    (ids, blocked)
}

#[test]
fn a_new_clients_first_blocking_command_is_not_overtaken() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let list = "warm-list";
    let node = cluster.owner_of_slot(cluster.keyslot(list));
    // The connection a new client's first BLPOP runs on was open before the client came.
    let mut before = Vec::new();
    support::wait_until(
        "idle private connections open",
        Duration::from_secs(10),
        || {
            before = node_connections(node, "blpop").0;
            // Its shared connection, the control connection and two idle private ones (the
            // CLIENT LIST's own connection counts too).
            before.len() >= 5
        },
    );
    let mut waiter = proxy.raw();
    std::io::Write::write_all(&mut waiter, format!("BLPOP {list} 5\r\n").as_bytes()).unwrap();
    let mut on = None;
    support::wait_until("the BLPOP blocked", Duration::from_secs(10), || {
        on = node_connections(node, "blpop").1;
        on.is_some()
    });
    assert!(
        before.contains(&on.unwrap()),
        "BLPOP ran on {on:?}, opened after {before:?}"
    );
    // Another takes its place.
    support::wait_until(
        "the idle pool filled again",
        Duration::from_secs(10),
        || node_connections(node, "blpop").0.len() > before.len(),
    );

    // Another client's later LPUSH then LPOP: the element goes to the BLPOP first, as on one
    // Redis (measured over 20 new clients, each writing BLPOP 300 µs before the other's LPUSH:
    // `cargo test --test transactions_blocking first_blocking -- --nocapture` prints how many
    // got theirs, through slotgate and on one redis-server).
    let mut c = proxy.conn();
    let n: i64 = c.lpush(list, "x").unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        support::read_reply(&mut waiter, &mut Vec::new()),
        redis_protocol::resp2::types::OwnedFrame::Array(vec![
            redis_protocol::resp2::types::OwnedFrame::BulkString(list.into()),
            redis_protocol::resp2::types::OwnedFrame::BulkString(b"x".to_vec()),
        ])
    );
    let single = Redis::start(&[]);
    let redis_served = first_blpop_served(&single.addr());
    let served = first_blpop_served(&proxy.addr());
    eprintln!("first BLPOP served: redis {redis_served}/20, slotgate {served}/20");
}
