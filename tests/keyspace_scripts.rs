//! Keyspace-wide commands and scripts across a real 3-master cluster: SCAN with a cursor that
//! carries the master, KEYS merged from every master, SCRIPT LOAD/EXISTS/FLUSH and FUNCTION LOAD
//! on every master, EVALSHA and FCALL routed by key; a script's deeply nested reply relayed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use redis::Value;
use support::{Cluster, Proxy};

#[test]
fn scan_keys_and_scripts_span_every_master() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.set(format!("scan:{i}"), i).ignore();
    }
    pipe.set("other", 1).ignore();
    let () = pipe.query(&mut c).unwrap();

    // SCAN visits every key exactly once, across all masters, honouring MATCH and COUNT.
    let mut seen = Vec::new();
    let mut cursor = 0u64;
    let mut calls = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("scan:*")
            .arg("COUNT")
            .arg(200)
            .query(&mut c)
            .unwrap();
        seen.extend(keys);
        calls += 1;
        cursor = next;
        if cursor == 0 {
            break;
        }
        assert!(calls < 10_000, "SCAN does not end");
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 5000, "every key once");
    assert_eq!(unique.len(), 5000, "no key twice");
    assert!(
        redis::cmd("SCAN")
            .arg("nope")
            .query::<Value>(&mut c)
            .unwrap_err()
            .to_string()
            .contains("invalid cursor")
    );

    // KEYS merges every master's answer.
    let keys: Vec<String> = redis::cmd("KEYS").arg("scan:1*").query(&mut c).unwrap();
    let expected = (0..5000).filter(|i| i.to_string().starts_with('1')).count();
    assert_eq!(keys.len(), expected);

    // SCRIPT LOAD reaches every master, so EVALSHA works for keys in any slot.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('GET', KEYS[1])")
        .query(&mut c)
        .unwrap();
    for key in ["scan:1", "scan:2", "scan:3", "other"] {
        let _: Option<String> = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .query(&mut c)
            .unwrap();
    }
    for m in cluster.masters() {
        let exists: Vec<i64> = redis::cmd("SCRIPT")
            .arg("EXISTS")
            .arg(&sha)
            .query(&mut m.conn())
            .unwrap();
        assert_eq!(exists, vec![1], "loaded on {}", m.addr());
    }
    // A script that only one master has does not "exist" through slotgate.
    let lonely: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return 42")
        .query(&mut cluster.masters()[0].conn())
        .unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg(&lonely)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);
    // A node that lost its script cache (restarted, promoted, new owner of the slot) answers
    // NOSCRIPT; slotgate loads the script there and runs the EVALSHA again.
    let owner = cluster.owner_of_slot(slotgate::router::key_slot(b"scan:1"));
    let _: Value = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut owner.conn())
        .unwrap();
    let v: Option<String> = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("scan:1")
        .query(&mut c)
        .unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut owner.conn())
        .unwrap();
    assert_eq!(exists, vec![1], "reloaded on the node");
    // A script slotgate never saw still gets Redis' NOSCRIPT.
    let e = redis::cmd("EVALSHA")
        .arg("0000000000000000000000000000000000000000")
        .arg(0)
        .query::<Value>(&mut c);
    let e = e.unwrap_err().to_string();
    assert!(
        e.to_lowercase().contains("noscript") || e.contains("No matching script"),
        "{e}"
    );
    let _: Value = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![0]);

    // Functions: FUNCTION LOAD on every master, FCALL by key.
    let lib = "#!lua name=slotgatelib\nredis.register_function('echoarg', function(keys, args) return args[1] end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "slotgatelib");
    for key in ["a", "b", "c"] {
        let v: String = redis::cmd("FCALL")
            .arg("echoarg")
            .arg(1)
            .arg(key)
            .arg("hi")
            .query(&mut c)
            .unwrap();
        assert_eq!(v, "hi");
    }

    // redis-py's register_script: EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA again.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
incr_by = r.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
assert incr_by(keys=["{q}counter"], args=[5]) == 5
assert incr_by(keys=["other-slot"], args=[2]) == 2
print("redis-py scripts ok")
"#;
    support::run_python(script, proxy.port);
}

fn q(n: &support::Redis, args: &[&str]) -> Value {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut n.conn()).unwrap()
}

/// Whether node `n` has the script `sha` (SCRIPT EXISTS on the node itself).
fn has_script(n: &support::Redis, sha: &str) -> bool {
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(sha)
        .query(&mut n.conn())
        .unwrap();
    exists == vec![1]
}

#[test]
fn evalsha_is_repaired_on_the_node_a_redirect_led_to() {
    let cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    // No periodic refresh: the map stays stale until a redirect says otherwise.
    let conf = support::TempConf::new("[topology]\nrefresh_interval_ms = 600000\n");
    let proxy = Proxy::cluster(&cluster, &["--config", conf.path()]);
    let mut c = proxy.conn();
    let body = "return redis.call('GET', KEYS[1])";
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(body)
        .query(&mut c)
        .unwrap();
    let evalsha = |c: &mut redis::Connection, key: &str| {
        redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .query::<Option<String>>(c)
            .map_err(|e| e.to_string())
    };

    // MOVED, then NOSCRIPT: a replica without the script is promoted behind slotgate's back.
    let _: () = redis::cmd("SET")
        .arg("moved:k")
        .arg("v1")
        .query(&mut c)
        .unwrap();
    assert_eq!(evalsha(&mut c, "moved:k"), Ok(Some("v1".into())));
    let slot = slotgate::router::key_slot(b"moved:k");
    let master = cluster.owner_of_slot(slot).port;
    let replica = cluster
        .nodes
        .iter()
        .find(|n| {
            n.info_field("replication", "master_port").as_deref() == Some(&master.to_string())
        })
        .unwrap()
        .port;
    q(cluster.node(replica), &["SCRIPT", "FLUSH"]);
    q(cluster.node(replica), &["CLUSTER", "FAILOVER"]);
    support::wait_until("the replica promoted", Duration::from_secs(20), || {
        cluster
            .node(replica)
            .info_field("replication", "role")
            .as_deref()
            == Some("master")
            && cluster.owner_of_slot(slot).port == replica
    });
    assert_eq!(evalsha(&mut c, "moved:k"), Ok(Some("v1".into())));
    assert!(
        has_script(cluster.node(replica), &sha),
        "loaded on the new master"
    );

    // ASK, then NOSCRIPT: the key's slot is being imported by a node without the script.
    let key = "ask:k";
    let slot = slotgate::router::key_slot(key.as_bytes());
    let from = cluster.owner_of_slot(slot).port;
    let to = cluster
        .masters()
        .into_iter()
        .find(|m| m.port != from)
        .unwrap()
        .port;
    let (from_id, to_id) = (cluster.node(from).node_id(), cluster.node(to).node_id());
    let s = slot.to_string();
    q(
        cluster.node(to),
        &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id],
    );
    q(
        cluster.node(from),
        &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id],
    );
    q(cluster.node(to), &["SCRIPT", "FLUSH"]);
    // The key is on neither node, so the source answers ASK.
    assert_eq!(evalsha(&mut c, key), Ok(None));
    assert!(
        has_script(cluster.node(to), &sha),
        "loaded on the importing node"
    );
}

/// What Redis sends for a Lua table that holds itself: 7,995 nested arrays around an error.
const SELF_HOLDING_TABLE: &str = "local a={};local b={a};a[1]=b;return a";

/// Sends `EVAL SELF_HOLDING_TABLE 0` on a new connection to `port` and reads its whole reply,
/// which ends with Redis' `-ERR reached lua stack limit` (or slotgate's error, when shallower).
fn eval_deep(port: u16) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let script = SELF_HOLDING_TABLE;
    let req = format!(
        "*3\r\n$4\r\nEVAL\r\n${}\r\n{script}\r\n$1\r\n0\r\n",
        script.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while !(got.ends_with(b"stack limit\r\n")
        || got.starts_with(b"-ERR slotgate") && got.ends_with(b"\r\n"))
    {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_deeply_nested_reply_is_relayed_and_one_beyond_the_limit_fails_its_client_alone() {
    let server = support::Redis::start(&[]);
    let want = eval_deep(server.port);
    assert_eq!(nesting(&want), 7995, "Redis nests that deep");
    // Relayed byte for byte under the default limit.
    let proxy = Proxy::spawn(&["--standalone".into(), server.addr()]);
    assert_eq!(eval_deep(proxy.port), want);

    // Under a lower limit: that client gets an error, while another client's pipeline on the
    // same (single) backend connection is answered in full, and the connection stays.
    let conf = support::TempConf::new(
        "[limits]\nmax_reply_depth = 100\n[backend]\nconnections_per_node = 1\n",
    );
    let strict = Proxy::spawn(&[
        "--standalone".into(),
        server.addr(),
        "--config".into(),
        conf.path().into(),
    ]);
    let mut other = strict.conn();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut other)
        .unwrap();
    // Every worker's connection opened (they open with the node, each on its own time).
    std::thread::sleep(Duration::from_millis(500));
    let connects = strict.info_field("backend_connects");
    let reader = {
        let url = strict.url();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            for _ in 0..200 {
                let mut pipe = redis::pipe();
                for _ in 0..50 {
                    pipe.get("k");
                }
                let got: Vec<String> = pipe.query(&mut c).unwrap();
                assert!(got.iter().all(|v| v == "v"), "{got:?}");
            }
        })
    };
    for _ in 0..5 {
        let got = eval_deep(strict.port);
        assert_eq!(
            String::from_utf8_lossy(&got),
            "-ERR slotgate: the reply was nested deeper than 100 levels (limits.max_reply_depth) and was dropped\r\n"
        );
    }
    reader.join().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut other).unwrap();
    assert_eq!(v, "v");
    assert_eq!(
        strict.info_field("backend_connects"),
        connects,
        "the connection stayed"
    );
}

/// How many `*1` array headers a reply holds.
fn nesting(reply: &[u8]) -> usize {
    reply.windows(4).filter(|w| w == b"*1\r\n").count()
}

/// `args` on a connection, as text: the value or the error, so that replies compare whole.
fn answer(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    match cmd.query::<Value>(c) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn scripts_run_with_eval_exist_for_evalsha_on_every_master_until_flushed() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = support::Redis::start(&[]);
    let (mut p, mut r) = (proxy.conn(), reference.conn());
    let ok = "return KEYS[1]";
    let bad = "return (";
    let raises = "return redis.call('nosuch')";
    let sha = |b: &str| {
        // What SCRIPT LOAD names it, asked of the reference (and not kept there).
        let s: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(b)
            .query(&mut reference.conn())
            .unwrap();
        s
    };
    let (ok_sha, bad_sha, raises_sha) = (sha(ok), "a".repeat(40), sha(raises));
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut r).unwrap();
    // Keys on each master, so the EVALSHAs meet masters the EVAL never reached.
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let mut steps: Vec<Vec<&str>> = vec![
        vec!["SCRIPT", "EXISTS", &ok_sha, &raises_sha],
        vec!["EVAL", ok, "1", &keys[0]],
        vec!["EVAL", bad, "0"],
        vec!["EVAL", raises, "0"],
        vec!["SCRIPT", "EXISTS", &ok_sha, &bad_sha, &raises_sha],
    ];
    for k in &keys {
        steps.push(vec!["EVALSHA", &ok_sha, "1", k]);
    }
    steps.extend([
        vec!["SCRIPT", "EXISTS", &ok_sha],
        vec!["SCRIPT", "FLUSH"],
        vec!["SCRIPT", "EXISTS", &ok_sha, &raises_sha],
        vec!["EVALSHA", &ok_sha, "1", &keys[1]],
    ]);
    for step in &steps {
        let (got, want) = (answer(&mut p, step), answer(&mut r, step));
        // A script's error names the node's own line; compare up to it.
        let cut = |s: &str| s.split(" script: ").next().unwrap_or_default().to_string();
        assert_eq!(cut(&got), cut(&want), "{step:?}");
    }
}

/// Runs a script that loops until killed on a new connection to `port` (in a thread), kills it
/// with SCRIPT KILL once the node is busy, and returns what the killer, the script's caller, a
/// second SCRIPT KILL and a FUNCTION KILL got.
fn kill_a_busy_script(port: u16) -> Vec<String> {
    let url = format!("redis://127.0.0.1:{port}/");
    let caller = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            answer(
                &mut c,
                &["EVAL", "local i = 0 while true do i = i + 1 end", "0"],
            )
        })
    };
    // The node answers others (and takes SCRIPT KILL) once the script ran 100 ms; until the
    // script has started, a kill finds nothing to kill (NOTBUSY) and is tried again.
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    let killed = loop {
        std::thread::sleep(Duration::from_millis(100));
        let got = answer(&mut c, &["SCRIPT", "KILL"]);
        if !got.contains("NotBusy") || std::time::Instant::now() > deadline {
            break got;
        }
    };
    let caller_got = caller.join().unwrap();
    // A script's error names the node's own line; compare up to it.
    let caller_got = caller_got
        .split(" script: ")
        .next()
        .unwrap_or_default()
        .to_string();
    vec![
        killed,
        caller_got,
        answer(&mut c, &["SCRIPT", "KILL"]),
        answer(&mut c, &["FUNCTION", "KILL"]),
    ]
}

#[test]
fn script_kill_reaches_the_busy_master_and_answers_as_redis() {
    let busy = ["--busy-reply-threshold", "100"];
    let cluster = Cluster::start_with(3, 0, &busy, None);
    let proxy = Proxy::cluster(&cluster, &[]);
    let reference = support::Redis::start(&busy);
    let want = kill_a_busy_script(reference.port);
    assert!(
        want[0].contains("ok") && want[1].contains("killed"),
        "{want:?}"
    );
    assert_eq!(kill_a_busy_script(proxy.port), want);
}

/// A script that runs `ms` milliseconds by the node's clock, then answers "done".
fn script_running(ms: u64) -> String {
    format!(
        "local s = redis.call('TIME') repeat local n = redis.call('TIME') \
         until (n[1] - s[1]) * 1000000 + (n[2] - s[2]) > {} return 'done'",
        ms * 1000
    )
}

/// Runs the script on `url` in a thread; meanwhile, once the node is busy, a second client's GET
/// of `key` (on the script's node): returns what the caller and the second client got.
fn run_long_script_beside_a_get(url: &str, ms: u64, key: &str) -> (String, String) {
    let caller = {
        let url = url.to_string();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            answer(&mut c, &["EVAL", &script_running(ms), "1", "{long}k"])
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut other = redis::Client::open(url).unwrap().get_connection().unwrap();
    let got = answer(&mut other, &["GET", key]);
    (caller.join().unwrap(), got)
}

#[test]
fn a_node_running_a_long_script_is_busy_not_dead() {
    let busy = ["--busy-reply-threshold", "100"];
    let cluster = Cluster::start_with(3, 0, &busy, None);
    // The script runs four read timeouts; one worker, so the other client's GET shares the
    // script's connection to that node.
    let conf = support::TempConf::new("[backend]\nread_timeout_ms = 500\n");
    let proxy = Proxy::cluster(&cluster, &["--config", conf.path(), "--threads", "1"]);
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("{long}v")
        .arg("1")
        .query(&mut c)
        .unwrap();

    // One Redis: the caller gets its answer; another client meanwhile gets -BUSY.
    let reference = support::Redis::start(&busy);
    let (caller, other) = run_long_script_beside_a_get(&reference.url(), 2000, "{long}v");
    assert_eq!(caller, "bulk-string('\"done\"')");
    assert!(other.contains("BUSY"), "{other}");

    // Through slotgate the caller gets its answer too, not a timeout; the other client's GET,
    // behind the script on the same connection, waits for it and is answered (not -BUSY: see
    // COMMANDS.md), and the connection stays up for everyone.
    let (caller, other) = run_long_script_beside_a_get(&proxy.url(), 2000, "{long}v");
    assert_eq!(caller, "bulk-string('\"done\"')");
    assert_eq!(other, "bulk-string('\"1\"')");
    assert_eq!(answer(&mut c, &["GET", "{long}v"]), "bulk-string('\"1\"')");

    // A stalled node is still given up on: a read timeout and a silent probe (another).
    let node = cluster.owner_of_slot(cluster.keyslot("{long}v"));
    node.signal("STOP");
    let t = std::time::Instant::now();
    let got = answer(&mut c, &["GET", "{long}v"]);
    let waited = t.elapsed();
    node.signal("CONT");
    assert!(got.contains("did not reply"), "{got}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}
