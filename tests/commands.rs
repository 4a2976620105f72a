//! Multi-key split and merge, CROSSSLOT, local commands, protocol negotiation and limits,
//! through slotgate against a real cluster (and a standalone Redis as the reference).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use redis::Value;
use support::{Cluster, Proxy, Redis};

fn run(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn raw_roundtrip(s: &mut std::net::TcpStream, send: &[u8]) -> Vec<u8> {
    s.write_all(send).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn multi_key_commands_match_a_single_redis_and_crossslot_reaches_no_backend() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = Redis::start(&[]);
    let mut p = proxy.conn();
    let mut r = reference.conn();

    let script: Vec<Vec<&str>> = vec![
        vec![
            "MSET", "a", "1", "b", "2", "c", "3", "{t}x", "4", "{t}y", "5",
        ],
        vec!["MGET", "a", "b", "nope", "c", "{t}x", "{t}y", "a"],
        vec!["EXISTS", "a", "b", "nope", "a", "{t}x"],
        vec!["TOUCH", "a", "b", "nope"],
        vec!["SADD", "set1", "m"],
        vec!["MGET", "a", "set1", "b"],
        vec!["DEL", "a", "nope", "{t}x", "set1"],
        vec!["MGET", "a", "b", "c", "{t}x", "{t}y"],
        vec!["UNLINK", "b", "c", "{t}y", "zzz"],
        vec!["MGET", "b", "c"],
        vec!["MSET", "only", "1"],
        vec!["MSET", "a"],
        vec!["MGET"],
        vec!["DEL"],
        // Flagged admin, yet harmless: it runs on a master as on one Redis.
        vec!["PFSELFTEST"],
    ];
    for cmd in &script {
        let want = run(&mut r, cmd).map_err(|e| e.to_string());
        let got = run(&mut p, cmd).map_err(|e| e.to_string());
        assert_eq!(got, want, "{cmd:?}");
    }

    // An MGET of 10 keys in one slot is one backend command.
    let keys: Vec<String> = (0..10).map(|i| format!("{{one}}k{i}")).collect();
    let owner = cluster.owner_of_slot(slotgate::router::key_slot(b"one"));
    let before = owner.calls("mget");
    let mut mget = redis::cmd("MGET");
    for k in &keys {
        mget.arg(k);
    }
    let _: Vec<Option<String>> = mget.query(&mut p).unwrap();
    assert_eq!(owner.calls("mget") - before, 1);

    // Cross-slot commands that may not be split are refused before any backend sees them.
    let refused: Vec<Vec<&str>> = vec![
        vec!["RENAME", "foo", "bar"],
        vec!["MSETNX", "foo", "1", "bar", "2"],
        vec!["SUNIONSTORE", "dst", "foo", "bar"],
        vec!["SMOVE", "foo", "bar", "m"],
        vec!["EVAL", "return 1", "2", "foo", "bar"],
        vec!["LMOVE", "foo", "bar", "LEFT", "RIGHT"],
    ];
    for cmd in &refused {
        let err = run(&mut p, cmd).unwrap_err().to_string();
        assert!(
            err.contains("CrossSlot")
                && err.contains("Keys in request don't hash to the same slot"),
            "{cmd:?}: {err}"
        );
        assert!(err.contains("hash tag"), "{err}");
    }
    for node in &cluster.nodes {
        for c in ["rename", "msetnx", "sunionstore", "smove", "eval", "lmove"] {
            assert_eq!(node.calls(c), 0, "{c} reached {}", node.addr());
        }
    }
    // The same commands within one slot go through.
    let ok = run(
        &mut p,
        &["EVAL", "return KEYS[1]..KEYS[2]", "2", "{u}a", "{u}b"],
    )
    .unwrap();
    assert_eq!(ok, Value::BulkString(b"{u}a{u}b".to_vec()));
    let keyless = run(&mut p, &["EVAL", "return 7", "0"]).unwrap();
    assert_eq!(keyless, Value::Int(7));

    // Fleet-wide writes are refused by default and reach every master when allowed.
    let e = run(&mut p, &["FLUSHALL"]).unwrap_err().to_string();
    assert!(e.contains("fleet_writes"), "{e}");
    let conf = std::env::temp_dir().join(format!("slotgate-fleet-{}.toml", std::process::id()));
    std::fs::write(&conf, "[clients]\nfleet_writes = true\n").unwrap();
    let fleet = Proxy::cluster(&cluster, &["--config", conf.to_str().unwrap()]);
    let mut f = fleet.conn();
    assert_eq!(
        run(
            &mut f,
            &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]
        )
        .unwrap(),
        Value::Okay
    );
    for m in cluster.masters() {
        let v: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query(&mut m.conn())
            .unwrap();
        assert_eq!(v[1], "allkeys-lru", "{}", m.addr());
    }
    assert_eq!(run(&mut f, &["FLUSHALL"]).unwrap(), Value::Okay);
    assert_eq!(run(&mut f, &["DBSIZE"]).unwrap(), Value::Int(0));
    let e = run(&mut p, &["SLOWLOG", "RESET"]).unwrap_err().to_string();
    assert!(e.contains("fleet_writes"), "{e}");
    assert_eq!(run(&mut f, &["SLOWLOG", "RESET"]).unwrap(), Value::Okay);
    for m in cluster.masters() {
        let n: i64 = redis::cmd("SLOWLOG")
            .arg("LEN")
            .query(&mut m.conn())
            .unwrap();
        assert_eq!(n, 0, "{}", m.addr());
    }
    let _ = std::fs::remove_file(&conf);

    // Strict policy: MGET across slots is refused as Redis Cluster would.
    let strict = Proxy::cluster(&cluster, &["--multi-key", "strict"]);
    let mut s = strict.conn();
    let err = run(&mut s, &["MGET", "a", "b"]).unwrap_err().to_string();
    assert!(err.contains("CrossSlot"), "{err}");
    assert!(run(&mut s, &["MGET", "{t}a", "{t}b"]).is_ok());
}

#[test]
fn local_commands_negotiation_and_limits_answer_like_redis() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &["--max-clients", "20"]);
    let mut c = proxy.conn();
    assert_eq!(
        run(&mut c, &["PING"]).unwrap(),
        Value::SimpleString("PONG".into())
    );
    assert_eq!(
        run(&mut c, &["PING", "hi"]).unwrap(),
        Value::BulkString(b"hi".to_vec())
    );
    assert_eq!(
        run(&mut c, &["ECHO", "x y"]).unwrap(),
        Value::BulkString(b"x y".to_vec())
    );
    assert_eq!(run(&mut c, &["SELECT", "0"]).unwrap(), Value::Okay);
    assert!(
        run(&mut c, &["SELECT", "1"])
            .unwrap_err()
            .to_string()
            .contains("SELECT is not allowed in cluster mode")
    );
    assert_eq!(
        run(&mut c, &["CLIENT", "SETNAME", "worker-1"]).unwrap(),
        Value::Okay
    );
    assert_eq!(
        run(&mut c, &["CLIENT", "GETNAME"]).unwrap(),
        Value::BulkString(b"worker-1".to_vec())
    );
    assert!(matches!(
        run(&mut c, &["CLIENT", "ID"]).unwrap(),
        Value::Int(_)
    ));
    assert_eq!(
        run(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).unwrap(),
        Value::Okay
    );
    assert!(
        run(&mut c, &["CLUSTER", "INFO"])
            .unwrap_err()
            .to_string()
            .contains("cluster support disabled")
    );
    assert_eq!(
        run(&mut c, &["CLUSTER", "KEYSLOT", "foo"]).unwrap(),
        Value::Int(12182)
    );
    let err = run(&mut c, &["NOSUCH", "a"]).unwrap_err().to_string();
    assert!(
        err.contains("unknown command 'NOSUCH', with args beginning with: 'a'"),
        "{err}"
    );
    let err = run(&mut c, &["GET"]).unwrap_err().to_string();
    assert!(
        err.contains("wrong number of arguments for 'get' command"),
        "{err}"
    );
    let err = run(&mut c, &["WAIT", "1", "0"]).unwrap_err().to_string();
    assert!(err.contains("'wait' is not supported by slotgate"), "{err}");
    // RANDOMKEY finds a key on any master, and null only when all are empty.
    let _: () = redis::cmd("SET")
        .arg("only-key")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        run(&mut c, &["RANDOMKEY"]).unwrap(),
        Value::BulkString(b"only-key".to_vec())
    );
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(
        info.contains("redis_version:7.")
            && info.contains("maxmemory_policy:")
            && info.contains("# Proxy"),
        "{info}"
    );
    assert!(info.contains("redis_mode:standalone") && !info.contains("cluster_enabled:1"));
    // One worker thread per CPU by default (thread per core).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        info.contains(&format!("proxy_worker_threads:{cpus}\r\n")),
        "{info}"
    );
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut c).unwrap();
    assert!(count > 200);
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query(&mut c)
        .unwrap();
    assert_eq!(policy[0], "maxmemory-policy");

    // HELLO 3 switches the session to RESP3: map reply, RESP3 nulls from the backend.
    let mut s = proxy.raw();
    let hello = raw_roundtrip(&mut s, b"HELLO 3\r\n");
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert!(String::from_utf8_lossy(&hello).contains("standalone"));
    assert_eq!(
        raw_roundtrip(&mut s, b"*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n"),
        b"_\r\n"
    );
    assert_eq!(raw_roundtrip(&mut s, b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$1\r\nf\r\n$1\r\nv\r\n*2\r\n$7\r\nHGETALL\r\n$7\r\nmissing\r\n"), b":1\r\n%0\r\n");
    assert_eq!(
        raw_roundtrip(&mut s, b"HELLO 2\r\nGET missing\r\n")[..4],
        *b"*14\r"
    );
    assert!(raw_roundtrip(&mut s, b"HELLO 4\r\n").starts_with(b"-NOPROTO"));
    // With no proxy users, authentication answers exactly as a Redis with the default ACL
    // (the `default` user has no password) answers it.
    let reference = Redis::start(&[]);
    let mut r = std::net::TcpStream::connect(reference.addr()).unwrap();
    for probe in [
        &b"AUTH default anything\r\n"[..],
        b"AUTH someone else\r\n",
        b"AUTH onlypassword\r\n",
        b"HELLO 3 AUTH someone else\r\n",
    ] {
        assert_eq!(
            raw_roundtrip(&mut s, probe),
            raw_roundtrip(&mut r, probe),
            "{}",
            String::from_utf8_lossy(probe)
        );
    }
    let hello = raw_roundtrip(&mut s, b"HELLO 3 AUTH default x SETNAME app\r\n");
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(
        raw_roundtrip(&mut s, b"CLIENT GETNAME\r\n"),
        b"$3\r\napp\r\n"
    );
    // Inline commands with quotes are understood as Redis understands them.
    assert_eq!(
        raw_roundtrip(&mut s, b"SET \"in line\" 'v 1'\r\nGET \"in line\"\r\n"),
        b"+OK\r\n$3\r\nv 1\r\n"
    );
    assert_eq!(raw_roundtrip(&mut s, b"QUIT\r\n"), b"+OK\r\n");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "QUIT closes the connection"
    );

    // A protocol error gets Redis' error and a closed connection; the proxy keeps serving.
    let mut s = proxy.raw();
    let reply = raw_roundtrip(&mut s, b"*1\r\n$-7\r\n");
    assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0);
    let mut s = proxy.raw();
    let deep = b"*1\r\n".repeat(100_000);
    let reply = raw_roundtrip(&mut s, &deep);
    assert!(reply.starts_with(b"-ERR Protocol error: expected '$', got '*'"));
    let mut s = proxy.raw();
    let reply = raw_roundtrip(&mut s, b"*1\r\n$999999999999\r\n");
    assert_eq!(reply, b"-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(
        run(&mut proxy.conn(), &["PING"]).unwrap(),
        Value::SimpleString("PONG".into())
    );

    // Connections beyond --max-clients are refused with Redis' error.
    let held: Vec<_> = (0..25).map(|_| proxy.raw()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = 0;
    for mut h in held {
        h.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = h.read(&mut buf)
            && buf[..n].starts_with(b"-ERR max number of clients reached")
        {
            refused += 1;
        }
    }
    assert!(refused >= 5, "refused {refused}");
}

#[test]
fn client_list_and_kill_cover_slotgates_own_clients() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut admin = proxy.conn();
    let mut victim = proxy.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("victim")
        .query(&mut victim)
        .unwrap();
    let victim_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut victim).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut admin).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("id={victim_id} ")) && l.contains("name=victim")),
        "{list}"
    );
    assert_eq!(list.lines().count(), 2, "{list}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(victim_id)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 1);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        redis::cmd("PING").query::<String>(&mut victim).is_err(),
        "the killed client is disconnected"
    );
    let e = run(&mut admin, &["CLIENT", "KILL", "127.0.0.1:1"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("No such client"), "{e}");
    // SKIPME yes (the default) spares the caller.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(999_999)
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 0);
    assert_eq!(
        run(&mut admin, &["PING"]).unwrap(),
        Value::SimpleString("PONG".into())
    );
}

#[test]
fn per_node_diagnostics_merge_over_every_master() {
    let cluster = Cluster::start(3, 0);
    for m in cluster.masters() {
        run(
            &mut m.conn(),
            &["CONFIG", "SET", "slowlog-log-slower-than", "0"],
        )
        .unwrap();
        run(
            &mut m.conn(),
            &["CONFIG", "SET", "latency-monitor-threshold", "1"],
        )
        .unwrap();
    }
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut p = proxy.conn();
    for i in 0..30 {
        run(&mut p, &["SET", &format!("diag:{i}"), "v"]).unwrap();
    }
    // SLOWLOG LEN sums the masters; SLOWLOG GET holds every master's entries, newest first.
    let direct: i64 = cluster
        .masters()
        .iter()
        .map(|m| {
            redis::cmd("SLOWLOG")
                .arg("LEN")
                .query::<i64>(&mut m.conn())
                .unwrap()
        })
        .sum();
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut p).unwrap();
    assert!(len >= direct && len <= direct + 6, "{len} vs {direct}");
    let entries: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(5)
        .query(&mut p)
        .unwrap();
    assert!(
        entries.len() > 5 && entries.len() <= 15,
        "{}",
        entries.len()
    );
    let times: Vec<i64> = entries
        .iter()
        .map(|e| match e {
            Value::Array(f) => match f[1] {
                Value::Int(t) => t,
                _ => panic!("{f:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // Text diagnostics name each master; LATENCY LATEST is an array of events.
    let doctor: String = redis::cmd("MEMORY").arg("DOCTOR").query(&mut p).unwrap();
    for m in cluster.masters() {
        assert!(
            doctor.contains(&format!("--- master {} ---", m.addr())),
            "{doctor}"
        );
    }
    assert!(matches!(
        run(&mut p, &["LATENCY", "LATEST"]).unwrap(),
        Value::Array(_)
    ));
    assert!(matches!(
        run(&mut p, &["MEMORY", "PURGE"]).unwrap(),
        Value::Okay
    ));
    let help: Vec<String> = redis::cmd("PUBSUB").arg("HELP").query(&mut p).unwrap();
    assert!(help.iter().any(|l| l.contains("NUMSUB")), "{help:?}");

    // What cannot be merged exactly is refused by name, with the reason.
    for cmd in [
        ["MEMORY", "STATS"],
        ["LATENCY", "HISTOGRAM"],
        ["CLIENT", "TRACKING"],
    ] {
        let mut args = cmd.to_vec();
        if cmd[1] == "TRACKING" {
            args.push("on");
        }
        let e = run(&mut p, &args).unwrap_err().to_string();
        assert!(e.contains("not supported by slotgate"), "{cmd:?}: {e}");
    }
}

/// The state of `keys` on a connection, read one key at a time (no split involved).
fn state(c: &mut redis::Connection, keys: &[&str]) -> Vec<Option<String>> {
    keys.iter()
        .map(|k| redis::cmd("GET").arg(*k).query(c).unwrap())
        .collect()
}

#[test]
fn split_commands_with_any_argument_count_answer_as_redis_or_send_nothing() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = Redis::start(&[]);
    let mut p = proxy.conn();
    p.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut other = proxy.conn();
    other
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut r = reference.conn();
    // Keys on every master, two sharing a slot.
    let pool = ["a", "b", "c", "d", "{t}x", "{t}y", "foo", "bar"];
    let names = ["MGET", "MSET", "MSETNX", "DEL", "UNLINK", "EXISTS", "TOUCH"];
    let mut seed: u64 = 0x5107_6a7e;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for case in 0..300 {
        let name = names[next(names.len() as u64) as usize];
        let argc = next(8) as usize;
        let values: Vec<String> = (0..argc).map(|i| format!("v{case}-{i}")).collect();
        let mut cmd: Vec<&str> = vec![name];
        for (i, v) in values.iter().enumerate() {
            // MSET-like commands alternate key and value; the others take keys only.
            let is_value = name.starts_with("MSET") && i % 2 == 1;
            cmd.push(if is_value {
                v
            } else {
                pool[next(pool.len() as u64) as usize]
            });
        }
        let before = state(&mut p, &pool);
        let want = run(&mut r, &cmd).map_err(|e| e.to_string());
        let got = run(&mut p, &cmd).map_err(|e| e.to_string());
        if got != want {
            // The one allowed difference: a command Redis Cluster refuses across slots is
            // refused whole, and nothing reached a node.
            let e = got.as_ref().unwrap_err();
            assert!(e.contains("CrossSlot"), "{cmd:?}: {got:?} vs {want:?}");
            assert_eq!(state(&mut p, &pool), before, "{cmd:?} wrote something");
            for (k, v) in pool.iter().zip(&before) {
                match v {
                    Some(v) => run(&mut r, &["SET", k, v]).unwrap(),
                    None => run(&mut r, &["DEL", k]).unwrap(),
                };
            }
        }
        assert_eq!(state(&mut p, &pool), state(&mut r, &pool), "after {cmd:?}");
        // Another client's requests on the same shared connections are unaffected.
        let pong: String = redis::cmd("PING").query(&mut other).unwrap();
        assert_eq!(pong, "PONG");
        let _: Vec<Option<String>> = redis::cmd("MGET").arg(&pool).query(&mut other).unwrap();
    }
    // The issue's reproduction: Redis' arity error, nothing written.
    let _: Value = run(&mut p, &["DEL", "a", "b"]).unwrap();
    let e = run(&mut p, &["MSET", "a", "1", "b"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wrong number of arguments for 'mset' command"),
        "{e}"
    );
    assert_eq!(state(&mut p, &["a", "b"]), vec![None, None]);
}

#[test]
fn rejections_echo_what_the_client_sent_as_redis_does() {
    let redis = Redis::start(&[]);
    let proxy = Proxy::spawn(&["--standalone".to_string(), redis.addr()]);
    let long = "x".repeat(200);
    let frames: Vec<Vec<u8>> = vec![
        b"*3\r\n$5\r\nNO\xffPE\r\n$3\r\na\xfeb\r\n$1\r\nc\r\n".to_vec(),
        format!("*3\r\n$4\r\nnope\r\n$200\r\n{long}\r\n$3\r\nabc\r\n").into_bytes(),
        b"*2\r\n$4\r\nnope\r\n$3\r\na\0b\r\n".to_vec(),
        b"*2\r\n$6\r\nCLIENT\r\n$5\r\nbo\xffgus\r\n".to_vec(),
        b"*2\r\n$6\r\nOBJECT\r\n$4\r\nnope\r\n".to_vec(),
    ];
    let mut r = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let mut p = proxy.raw();
    for f in &frames {
        assert_eq!(
            raw_roundtrip(&mut p, f),
            raw_roundtrip(&mut r, f),
            "{:?}",
            String::from_utf8_lossy(f)
        );
    }
    // A refused subcommand is named as Redis names it in prose.
    let e = run(&mut proxy.conn(), &["CLIENT", "TRACKING", "on"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'CLIENT TRACKING' is not supported by slotgate"),
        "{e}"
    );
}

fn section_names(info: &str) -> Vec<String> {
    info.lines()
        .filter_map(|l| l.strip_prefix("# "))
        .map(|s| s.trim().to_lowercase())
        .collect()
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn info_answers_the_sections_asked_for_and_describes_slotgate_itself() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = Redis::start(&[]);
    let mut c = proxy.conn();
    let info = |c: &mut redis::Connection, args: &[&str]| -> String {
        let mut cmd = redis::cmd("INFO");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query(c).unwrap()
    };
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).unwrap();
    for (args, want_proxy) in [
        (&[][..], true),
        (&["default"][..], true),
        (&["all"][..], true),
        (&["everything"][..], true),
        (&["proxy"][..], true),
        (&["nodes"][..], true),
        (&["keyspace"][..], false),
        (&["server", "clients"][..], false),
    ] {
        let got = section_names(&info(&mut c, args));
        let has = got.contains(&"proxy".to_string()) && got.contains(&"nodes".to_string());
        assert_eq!(has, want_proxy, "INFO {args:?}: {got:?}");
        // Redis' own sections are those a Redis answers for the same arguments.
        let mut want = section_names(&info(&mut reference.conn(), args));
        if want_proxy {
            want.push("proxy".into());
            want.push("nodes".into());
        }
        let mut got = got;
        got.sort();
        want.sort();
        assert_eq!(got, want, "INFO {args:?}");
    }
    let server = info(&mut c, &["server"]);
    assert_eq!(
        field(&server, "tcp_port"),
        Some(proxy.port.to_string().as_str())
    );
    assert_eq!(
        field(&server, "process_id"),
        Some(proxy.pid().to_string().as_str())
    );
    assert!(
        field(&server, "executable").unwrap().ends_with("slotgate"),
        "{server}"
    );
    // Light traffic shows in the byte counts at once.
    let mut other = proxy.conn();
    let _: String = redis::cmd("PING").query(&mut other).unwrap();
    let p = info(&mut c, &["proxy"]);
    assert!(
        field(&p, "proxy_client_received_bytes")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{p}"
    );
    assert!(
        field(&p, "proxy_client_sent_bytes")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0,
        "{p}"
    );
}

#[test]
fn client_list_and_info_describe_each_client_as_redis_does() {
    let redis = Redis::start(&[]);
    let proxy = Proxy::spawn(&["--standalone".to_string(), redis.addr()]);
    let mut s = proxy.raw();
    let hello = raw_roundtrip(&mut s, b"HELLO 3\r\n");
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let _ = raw_roundtrip(&mut s, b"SET k v\r\n");
    let info = raw_roundtrip(&mut s, b"CLIENT INFO\r\n");
    let info = String::from_utf8_lossy(&info).to_string();
    // RESP3 answers with a verbatim string, as Redis does.
    assert!(info.starts_with('='), "{info}");
    let field = |line: &str, k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    assert_eq!(field(&info, "resp").as_deref(), Some("3"), "{info}");
    assert_eq!(
        field(&info, "cmd").as_deref(),
        Some("client|info"),
        "{info}"
    );
    assert!(
        field(&info, "fd").unwrap().parse::<i32>().unwrap() > 2,
        "{info}"
    );
    // Another client sees this one's last command in CLIENT LIST.
    let _ = raw_roundtrip(&mut s, b"GET k\r\n");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut proxy.conn())
        .unwrap();
    let line = list
        .lines()
        .find(|l| l.contains("resp=3"))
        .expect("the HELLO 3 client");
    assert_eq!(field(line, "cmd").as_deref(), Some("get"), "{line}");
    // The same commands on Redis itself give the same shapes.
    let mut r = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    for cmd in [
        &b"CLIENT NO-EVICT maybe\r\n"[..],
        b"CLIENT NO-EVICT on\r\n",
        b"CLIENT INFO extra\r\n",
    ] {
        let want = raw_roundtrip(&mut r, cmd);
        let got = raw_roundtrip(&mut s, cmd);
        assert_eq!(
            String::from_utf8_lossy(&got).starts_with('-'),
            String::from_utf8_lossy(&want).starts_with('-'),
            "{}: {} vs {}",
            String::from_utf8_lossy(cmd),
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
    }
    // redis-py's client_info() parses slotgate's answer.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), protocol=3)
r.set("x", "1")
info = r.client_info()
assert info["resp"] == "3" and int(info["fd"]) > 2, info
print("client_info ok")
"#;
    support::run_python(script, proxy.port);
}

/// Sends `cmds` in one write, then `CLIENT REPLY ON` and `ECHO end`, and reads every byte up
/// to the end marker.
fn replies_of(port: u16, cmds: &[&str]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut wire = Vec::new();
    for c in cmds.iter().chain(&["CLIENT REPLY ON", "ECHO end"]) {
        let args: Vec<&str> = c.split(' ').collect();
        wire.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            wire.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    }
    s.write_all(&wire).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"$3\r\nend\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn client_reply_off_and_skip_drop_replies_as_redis_does() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = Redis::start(&[]);
    let sequences: &[&[&str]] = &[
        &[
            "CLIENT REPLY OFF",
            "SET a 1",
            "GET a",
            "CLIENT REPLY ON",
            "GET a",
        ],
        &["CLIENT REPLY SKIP", "GET a", "GET a"],
        &["CLIENT REPLY SKIP", "CLIENT REPLY SKIP", "GET a", "GET a"],
        &[
            "CLIENT REPLY OFF",
            "CLIENT REPLY SKIP",
            "GET a",
            "CLIENT REPLY ON",
            "PING",
        ],
        &["CLIENT REPLY SKIP", "CLIENT REPLY ON", "PING"],
        &["CLIENT REPLY FOO", "PING"],
        &["CLIENT REPLY OFF", "CLIENT REPLY FOO", "NOSUCH", "GET"],
        &["CLIENT REPLY", "PING"],
        &["CLIENT REPLY skip", "MULTI", "GET a", "EXEC"],
        &["CLIENT REPLY OFF", "RESET", "PING"],
        &["CLIENT REPLY SKIP", "RESET", "PING"],
        // Replies from three masters (and a split MGET) arriving in any order, a blocking pop
        // on its own connection timing out while silenced, a fan-out.
        &[
            "SET b 2",
            "CLIENT REPLY OFF",
            "SET c 3",
            "MGET a b c",
            "BLPOP nolist 0.1",
            "DBSIZE",
            "CLIENT REPLY ON",
            "MGET a b c",
            "CLIENT REPLY SKIP",
            "MGET a b c",
            "GET b",
        ],
    ];
    for seq in sequences {
        // The reference starts every sequence from the same data as the cluster.
        let _: () = redis::cmd("FLUSHALL").query(&mut reference.conn()).unwrap();
        for m in cluster.masters() {
            let _: () = redis::cmd("FLUSHALL").query(&mut m.conn()).unwrap();
        }
        assert_eq!(
            replies_of(proxy.port, seq),
            replies_of(reference.port, seq),
            "{seq:?}"
        );
    }
    // Inside MULTI, Redis queues it and then writes a malformed EXEC reply (an array header
    // without its elements); slotgate refuses it at queue time and the transaction aborts.
    let got = replies_of(
        proxy.port,
        &["MULTI", "CLIENT REPLY OFF", "SET a 1", "EXEC"],
    );
    assert!(
        got.contains("cannot be used inside MULTI") && got.contains("-EXECABORT"),
        "{got}"
    );
}

#[test]
fn randomkey_draws_keys_from_masters_as_often_as_they_hold_them() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();
    let owners = cluster.slot_owner_ports();
    let owner = |k: &str| owners[slotgate::router::key_slot(k.as_bytes()) as usize];
    let ports: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    // 900 keys on the first master, 100 on the second, none on the third.
    let (mut big, mut small) = (Vec::new(), Vec::new());
    for i in 0.. {
        let k = format!("rk{i}");
        if owner(&k) == ports[0] && big.len() < 900 {
            big.push(k);
        } else if owner(&k) == ports[1] && small.len() < 100 {
            small.push(k);
        }
        if big.len() == 900 && small.len() == 100 {
            break;
        }
    }
    let mut pipe = redis::pipe();
    for k in big.iter().chain(&small) {
        pipe.set(k, 1).ignore();
    }
    let () = pipe.query(&mut c).unwrap();
    let mut from_big = 0;
    for _ in 0..1000 {
        let k: String = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
        assert!(big.contains(&k) || small.contains(&k), "{k}");
        from_big += usize::from(owner(&k) == ports[0]);
    }
    // On one Redis, 90% of draws would be of the first 900 keys (binomial: 900 +- 30 in 1000).
    assert!(
        (800..=970).contains(&from_big),
        "{from_big} of 1000 from the 900 keys"
    );
    // An empty keyspace gives a null.
    for m in cluster.masters() {
        let _: () = redis::cmd("FLUSHALL").query(&mut m.conn()).unwrap();
    }
    let none: Option<String> = redis::cmd("RANDOMKEY").query(&mut c).unwrap();
    assert_eq!(none, None);
}

#[test]
fn info_counts_blocked_clients_and_errors_over_every_master() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let owners = cluster.slot_owner_ports();
    let ports: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    // A key on each master.
    let keys: Vec<String> = ports
        .iter()
        .map(|p| {
            (0..)
                .map(|i| format!("info{i}"))
                .find(|k| owners[slotgate::router::key_slot(k.as_bytes()) as usize] == *p)
                .unwrap()
        })
        .collect();
    let field = |c: &mut redis::Connection, section: &str, name: &str| -> String {
        let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let mut c = proxy.conn();
    // One client blocked on each master, as three clients of one Redis would be.
    let blocked: Vec<_> = keys
        .iter()
        .map(|k| {
            let (url, k) = (proxy.url(), format!("{{{k}}}:list"));
            std::thread::spawn(move || {
                let mut b = redis::Client::open(url).unwrap().get_connection().unwrap();
                let _: Option<(String, String)> =
                    redis::cmd("BLPOP").arg(&k).arg(3).query(&mut b).unwrap();
            })
        })
        .collect();
    support::wait_until("three blocked clients", Duration::from_secs(5), || {
        field(&mut c, "clients", "blocked_clients") == "3"
    });
    // slotgate's own clients: this one and the three blocked.
    assert_eq!(field(&mut c, "clients", "connected_clients"), "4");
    // An error on each master: one Redis would count three.
    for k in &keys {
        let _: () = redis::cmd("SET").arg(k).arg("s").query(&mut c).unwrap();
        let e = redis::cmd("LPUSH").arg(k).arg("x").query::<i64>(&mut c);
        assert!(e.is_err());
    }
    assert_eq!(
        field(&mut c, "errorstats", "errorstat_WRONGTYPE"),
        "count=3"
    );
    for t in blocked {
        t.join().unwrap();
    }
}
