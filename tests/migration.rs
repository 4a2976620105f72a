//! The migration from one Redis server to a 3-master cluster, as an operator does it with
//! `deploy/migrate.py`, under a read/write load through slotgate: no client error, and every
//! key (written before or during the migration, deleted, with a TTL, of every type) is on the
//! cluster afterwards as the clients left it. A first attempt that fails at the reload (a
//! broken new config) puts slotgate back on the old server without a client error either.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Cluster, Proxy, Redis, TempConf};

const STRINGS: u64 = 2000;
const HASHES: u64 = 200;
const LISTS: u64 = 200;
const EXPIRING: u64 = 300;
const DOOMED: u64 = 400;
const TOKEN: &str = "t0ken";

/// What a client of the load saw: its errors, and the writes slotgate acknowledged (the key
/// and the value it must hold; `None` for a key it deleted).
type Seen = (Vec<String>, Vec<(String, Option<String>)>);

/// One client of the load, one request at a time (`t` 0-1: SET new keys and INCR a counter;
/// 2: read the preloaded strings; 3: delete the doomed keys and push on lists; 5: MSET and MGET
/// of two keys in different slots), or (`t` 4) pipelines of 10 SETs and GETs.
fn client(url: String, t: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let (mut errors, mut acked) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            match t {
                0 | 1 if i.is_multiple_of(2) => {
                    let key = format!("mig:w{t}:{i}");
                    match redis::cmd("SET").arg(&key).arg(i).query::<()>(&mut c) {
                        Ok(()) => acked.push((key, Some(i.to_string()))),
                        Err(e) => errors.push(format!("SET {key}: {e}")),
                    }
                }
                0 | 1 => {
                    let key = format!("mig:counter:{t}");
                    match redis::cmd("INCR").arg(&key).query::<u64>(&mut c) {
                        Ok(v) => acked.push((key, Some(v.to_string()))),
                        Err(e) => errors.push(format!("INCR {key}: {e}")),
                    }
                }
                2 => {
                    let k = (i * 7919) % STRINGS;
                    match redis::cmd("GET")
                        .arg(format!("mig:s:{k}"))
                        .query::<Option<u64>>(&mut c)
                    {
                        Ok(Some(v)) if v == k => {}
                        other => errors.push(format!("mig:s:{k} read {other:?}")),
                    }
                }
                3 if i.is_multiple_of(2) && i / 2 < DOOMED => {
                    let key = format!("mig:d:{}", i / 2);
                    match redis::cmd("DEL").arg(&key).query::<u64>(&mut c) {
                        Ok(1) => acked.push((key, None)),
                        other => errors.push(format!("DEL {key}: {other:?}")),
                    }
                }
                3 => {
                    let key = format!("mig:l:{}", i % LISTS);
                    if let Err(e) = redis::cmd("RPUSH").arg(&key).arg(i).query::<u64>(&mut c) {
                        errors.push(format!("RPUSH {key}: {e}"));
                    }
                }
                5 => {
                    // Two keys of different slots in one command: split on the cluster.
                    let (a, b) = (format!("mig:ma:{i}"), format!("mig:mb:{i}"));
                    let mset = redis::cmd("MSET")
                        .arg(&a)
                        .arg(i)
                        .arg(&b)
                        .arg(i)
                        .query::<()>(&mut c);
                    let mget = redis::cmd("MGET")
                        .arg(&a)
                        .arg(&b)
                        .query::<Vec<Option<u64>>>(&mut c);
                    match (mset, mget) {
                        (Ok(()), Ok(v)) if v == vec![Some(i), Some(i)] => {
                            acked.push((a, Some(i.to_string())));
                            acked.push((b, Some(i.to_string())));
                        }
                        other => errors.push(format!("MSET/MGET {i}: {other:?}")),
                    }
                }
                _ => {
                    let mut p = redis::pipe();
                    for j in 0..10 {
                        let key = format!("mig:p:{}", (i * 10 + j) % 300);
                        p.cmd("SET").arg(&key).arg(i).ignore();
                        p.cmd("GET").arg(&key);
                    }
                    match p.query::<Vec<u64>>(&mut c) {
                        Ok(v) if v.iter().all(|&x| x == i) => {
                            for j in 0..10 {
                                let key = format!("mig:p:{}", (i * 10 + j) % 300);
                                acked.push((key, Some(i.to_string())));
                            }
                        }
                        other => errors.push(format!("pipeline {i}: {other:?}")),
                    }
                }
            }
            i += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (errors, acked)
    })
}

fn migrate(
    old: &Redis,
    cluster: &Cluster,
    admin: u16,
    config: &str,
    new_config: &str,
    extra: &[&str],
) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/migrate.py"))
        .args(extra)
        .args(["--from", &old.addr(), "--to", &cluster.seeds()[0]])
        .args(["--admin", &format!("http://127.0.0.1:{admin}")])
        .args([
            "--token",
            TOKEN,
            "--config",
            config,
            "--new-config",
            new_config,
        ])
        .args(["--slotgate", env!("CARGO_BIN_EXE_slotgate")])
        .output()
        .unwrap()
}

/// The connection to the cluster master that owns `key` (`owners`: each slot's master's port).
fn owner<'a>(
    masters: &'a mut HashMap<u16, redis::Connection>,
    owners: &[u16],
    key: &str,
) -> &'a mut redis::Connection {
    let slot = slotgate::router::key_slot(key.as_bytes());
    masters.get_mut(&owners[usize::from(slot)]).unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Before a migration: the old server, the new 3-master cluster, slotgate's config file in
/// front of the server (with an admin listener) and the cluster's config (without a file).
struct Before {
    old: Redis,
    cluster: Cluster,
    admin: u16,
    admin_conf: String,
    file: TempConf,
    cluster_conf: String,
}

fn before() -> Before {
    let old = Redis::start(&[]);
    let cluster = Cluster::start(3, 0);
    let admin = support::free_port();
    let admin_conf = format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n");
    let file = TempConf::new(&format!(
        "mode = \"standalone\"\nserver = \"{}\"\nconfig_check_ms = 0\n{admin_conf}",
        old.addr()
    ));
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let cluster_conf = format!(
        "mode = \"cluster\"\nseeds = [{}]\nconfig_check_ms = 0\n{admin_conf}",
        seeds.join(", ")
    );
    Before {
        old,
        cluster,
        admin,
        admin_conf,
        file,
        cluster_conf,
    }
}

#[test]
fn a_single_server_is_migrated_to_a_cluster_under_load_with_every_key_and_no_client_error() {
    let Before {
        old,
        cluster,
        admin,
        admin_conf,
        file,
        cluster_conf,
    } = before();
    let new_file = TempConf::new(&cluster_conf);
    // A cluster that does not answer: the switch never happens.
    let nowhere = format!("seeds = [\"127.0.0.1:{}\"]", support::free_port());
    let dead_file = TempConf::new(&format!(
        "mode = \"cluster\"\n{nowhere}\nconfig_check_ms = 0\n{admin_conf}"
    ));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);

    // The application's data, written through slotgate to the old server.
    let mut c = proxy.conn();
    let mut p = redis::pipe();
    for k in 0..STRINGS {
        p.cmd("SET").arg(format!("mig:s:{k}")).arg(k).ignore();
    }
    for k in 0..HASHES {
        p.cmd("HSET")
            .arg(format!("mig:h:{k}"))
            .arg("a")
            .arg(k)
            .arg("b")
            .arg(k * 2)
            .ignore();
    }
    for k in 0..LISTS {
        p.cmd("RPUSH").arg(format!("mig:l:{k}")).arg(k).ignore();
    }
    for k in 0..EXPIRING {
        p.cmd("SET")
            .arg(format!("mig:t:{k}"))
            .arg(k)
            .arg("EX")
            .arg(3600)
            .ignore();
    }
    for k in 0..DOOMED {
        p.cmd("SET").arg(format!("mig:d:{k}")).arg(k).ignore();
    }
    let () = p.query(&mut c).unwrap();

    // A subscriber, whose subscription must follow the switch.
    let mut sub_conn = proxy.conn();
    sub_conn
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("mig:events").unwrap();

    // A client blocked on the old server for as long as it takes: it must be woken by a push
    // that reaches the cluster after the switch.
    let url = proxy.url();
    let blocked = std::thread::spawn(move || {
        let mut b = redis::Client::open(url).unwrap().get_connection().unwrap();
        b.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        redis::cmd("BLPOP")
            .arg("mig:blocked")
            .arg(0)
            .query::<(String, String)>(&mut b)
    });

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|t| client(proxy.url(), t, stop.clone()))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // A first attempt whose new config names a cluster that does not answer: the script puts
    // the old config back and slotgate goes back to the old server, which has every write.
    let out = migrate(
        &old,
        &cluster,
        admin,
        file.path(),
        dead_file.path(),
        &["--pause-ms", "1500"],
    );
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("old config file put back and reloaded (200)"),
        "{said}"
    );
    assert!(
        said.contains("slotgate resumed on the old server (200)"),
        "{said}"
    );
    // A new config that does not validate is refused before anything starts.
    let broken = TempConf::new("mode = \"ring\"\n");
    let out = migrate(&old, &cluster, admin, file.path(), broken.path(), &[]);
    let said = text(&out);
    assert!(!out.status.success() && said.contains("'ring'"), "{said}");
    let mut oc = old.conn();
    let calls_before: u64 = old.calls("set");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        old.calls("set") > calls_before,
        "slotgate writes to the old server again"
    );

    // The migration, again: the cluster holds the first attempt's stale copy, which the script
    // refuses unless told to empty it.
    let out = migrate(&old, &cluster, admin, file.path(), new_file.path(), &[]);
    let said = text(&out);
    assert!(
        !out.status.success() && said.contains("--flush-cluster"),
        "{said}"
    );
    let log_before = proxy.log().len();
    let out = migrate(
        &old,
        &cluster,
        admin,
        file.path(),
        new_file.path(),
        &["--flush-cluster"],
    );
    let said = text(&out);
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("switched:"), "{said}");
    let switched_calls = old.calls("set") + old.calls("incr");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let mut last: HashMap<String, Option<String>> = HashMap::new();
    let mut writes = 0;
    for t in clients {
        let (errors, acked) = t.join().unwrap();
        assert!(errors.is_empty(), "clients saw {errors:?}");
        writes += acked.len();
        for (k, v) in acked {
            last.insert(k, v);
        }
    }
    assert_eq!(
        old.calls("set") + old.calls("incr"),
        switched_calls,
        "nothing reaches the old server after the switch"
    );
    assert!(proxy.log().contains("clients paused by the operator"));
    assert!(
        !proxy.log()[log_before..].contains("ended by its limit"),
        "the script resumed the clients"
    );

    // The blocked client was moved too: a push to the cluster wakes it.
    let _: u64 = redis::cmd("RPUSH")
        .arg("mig:blocked")
        .arg("after")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        blocked.join().unwrap().unwrap(),
        ("mig:blocked".to_string(), "after".to_string())
    );

    // The subscriber was moved to the cluster: a message published there reaches it.
    let mut heard = None;
    for n in 0..50 {
        let _: u64 = redis::cmd("PUBLISH")
            .arg("mig:events")
            .arg(n)
            .query(&mut c)
            .unwrap();
        if let Ok(msg) = sub.get_message() {
            heard = Some(msg.get_payload::<u64>().unwrap());
            break;
        }
    }
    assert!(
        heard.is_some(),
        "the subscriber hears messages published after the switch"
    );

    // Every key as the clients left it, read from the cluster's masters directly.
    let owners = cluster.slot_owner_ports();
    let mut masters: HashMap<u16, redis::Connection> = cluster
        .masters()
        .iter()
        .map(|m| {
            let port = m.addr().rsplit(':').next().unwrap().parse().unwrap();
            (port, m.conn())
        })
        .collect();
    for (key, v) in &last {
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(owner(&mut masters, &owners, key))
            .unwrap();
        assert_eq!(&got, v, "{key} on the cluster");
    }
    for k in 0..STRINGS {
        let key = format!("mig:s:{k}");
        let got: Option<u64> = redis::cmd("GET")
            .arg(&key)
            .query(owner(&mut masters, &owners, &key))
            .unwrap();
        assert_eq!(got, Some(k), "{key}");
    }
    for k in 0..HASHES {
        let key = format!("mig:h:{k}");
        let got: HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(&key)
            .query(owner(&mut masters, &owners, &key))
            .unwrap();
        assert_eq!(
            got,
            HashMap::from([("a".into(), k), ("b".into(), k * 2)]),
            "{key}"
        );
    }
    for k in 0..LISTS {
        let key = format!("mig:l:{k}");
        let lrange = |c: &mut redis::Connection| -> Vec<String> {
            redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(c)
                .unwrap()
        };
        let (got, was) = (lrange(owner(&mut masters, &owners, &key)), lrange(&mut oc));
        // Pushes after the switch are on the cluster only: the old server's list is its start.
        assert!(
            got.starts_with(&was) && got.len() >= was.len(),
            "{key}: {got:?} against {was:?}"
        );
    }
    for k in 0..EXPIRING {
        let key = format!("mig:t:{k}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query(owner(&mut masters, &owners, &key))
            .unwrap();
        assert!(
            ttl > 3_000_000 && ttl <= 3_600_000,
            "{key} has a TTL of {ttl} ms"
        );
    }
    // Every key the old server still has is on the cluster, unless a client deleted it since.
    let old_keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut oc).unwrap();
    for key in &old_keys {
        let there: bool = redis::cmd("EXISTS")
            .arg(key)
            .query(owner(&mut masters, &owners, key))
            .unwrap();
        let deleted = last.get(key).is_some_and(|v| v.is_none());
        assert_eq!(there, !deleted, "{key} of the old server on the cluster");
    }
    let keys = old_keys.len();
    eprintln!(
        "{writes} writes acknowledged under load, {} keys as last written and the old server's {keys} keys checked on the cluster",
        last.len()
    );
}

/// A pause holds every client's requests where they are (in its socket): a transaction under
/// WATCH, a blocking pop, a MULTI/EXEC and plain commands all wait, nothing reaches the server,
/// and on `/resume` they run in order, as if nothing happened; a pause ends by itself after
/// its limit.
#[test]
fn a_pause_holds_every_request_until_it_ends() {
    let server = Redis::start(&[]);
    let admin = support::free_port();
    let file = TempConf::new(&format!(
        "mode = \"standalone\"\nserver = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n",
        server.addr()
    ));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let (mut watcher, mut plain, mut blocker) = (proxy.conn(), proxy.conn(), proxy.conn());
    let () = redis::cmd("WATCH").arg("w").query(&mut watcher).unwrap();
    let () = redis::cmd("MULTI").query(&mut watcher).unwrap();
    let () = redis::cmd("SET")
        .arg("w")
        .arg(1)
        .query(&mut watcher)
        .unwrap();

    let (status, body) = support::http(admin, "POST", "/pause?ms=20000", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&server.addr()), "{body}");
    let exec = std::thread::spawn(move || {
        redis::cmd("EXEC")
            .query::<Option<Vec<String>>>(&mut watcher)
            .unwrap()
    });
    let popped = std::thread::spawn(move || {
        redis::cmd("BLPOP")
            .arg("q")
            .arg(5)
            .query::<Option<(String, String)>>(&mut blocker)
            .unwrap()
    });
    let held = std::thread::spawn(move || {
        let mut p = redis::pipe();
        p.atomic().cmd("INCR").arg("n").cmd("INCR").arg("n");
        let v: (u64, u64) = p.query(&mut plain).unwrap();
        let got: u64 = redis::cmd("INCR").arg("n").query(&mut plain).unwrap();
        (v, got)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.calls("incr"),
        0,
        "nothing reaches the server while paused"
    );
    assert_eq!(server.calls("exec"), 0);
    assert_eq!(server.calls("blpop"), 0);
    // One pause at a time.
    assert_eq!(support::http(admin, "POST", "/pause", Some(TOKEN)).0, 409);
    let (status, body) = support::http(admin, "POST", "/resume", Some(TOKEN));
    assert_eq!((status, body.trim()), (200, r#"{"resumed":true}"#));
    assert_eq!(
        held.join().unwrap(),
        ((1, 2), 3),
        "held requests ran in order"
    );
    assert_eq!(
        exec.join().unwrap(),
        Some(vec!["OK".to_string()]),
        "the watched key did not change"
    );
    std::thread::sleep(Duration::from_millis(100));
    let _: u64 = redis::cmd("RPUSH")
        .arg("q")
        .arg("x")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(popped.join().unwrap(), Some(("q".into(), "x".into())));

    // A pause ends by itself after its limit.
    let (status, _) = support::http(admin, "POST", "/pause?ms=300", Some(TOKEN));
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    let _: u64 = redis::cmd("INCR")
        .arg("n")
        .query(&mut proxy.conn())
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.log().contains("ended by its limit"));

    // Without the token, with GET, or for no time, no pause.
    assert_eq!(support::http(admin, "POST", "/pause", None).0, 401);
    assert_eq!(support::http(admin, "GET", "/pause", Some(TOKEN)).0, 405);
    let (status, _) = support::http(admin, "POST", "/pause?ms=0", Some(TOKEN));
    assert_eq!(status, 400);
    let (status, body) = support::http(admin, "POST", "/resume", Some(TOKEN));
    assert_eq!((status, body.trim()), (200, r#"{"resumed":false}"#));
}

/// The migration applies the new config's key families as it imports: an RQ application's
/// keys arrive under their stored names, writes made meanwhile too, and the family's multi-key
/// commands work on the cluster from the first request after the switch.
#[test]
fn a_migration_applies_the_key_families_of_the_new_config() {
    let Before {
        old,
        cluster,
        admin,
        file,
        cluster_conf,
        ..
    } = before();
    let new_file = TempConf::new(&format!("{cluster_conf}[[colocate]]\npreset = \"rq\"\n"));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let mut c = proxy.conn();
    for i in 0..100 {
        let () = redis::cmd("SET")
            .arg(format!("rq:job:{i}"))
            .arg(i)
            .arg("EX")
            .arg(3600)
            .query(&mut c)
            .unwrap();
        let () = redis::cmd("SET")
            .arg(format!("plain:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (stop, url) = (stop.clone(), proxy.url());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let (mut errors, mut acked) = (Vec::new(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                match redis::cmd("RPUSH")
                    .arg("rq:queue:default")
                    .arg(acked)
                    .query::<u64>(&mut c)
                {
                    Ok(_) => acked += 1,
                    Err(e) => errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (errors, acked)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = migrate(&old, &cluster, admin, file.path(), new_file.path(), &[]);
    let said = text(&out);
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (errors, acked) = pusher.join().unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    cluster.assert_in_family("rq", "rq:", "rq:job:", 100, 100);
    let len: u64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut c)
        .unwrap();
    assert_eq!(len, acked, "every push is on the cluster");
    let ttl: i64 = redis::cmd("PTTL").arg("rq:job:7").query(&mut c).unwrap();
    assert!(ttl > 3_000_000, "{ttl}");
    let moved: Option<String> = redis::cmd("LMOVE")
        .arg("rq:queue:default")
        .arg("rq:queue:other")
        .arg("LEFT")
        .arg("LEFT")
        .query(&mut c)
        .unwrap();
    assert_eq!(moved.as_deref(), Some("0"));
}
