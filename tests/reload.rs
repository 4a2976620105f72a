//! Live reload against a real 3+3 cluster: the config file is changed under a pipelined load
//! and slotgate is told with SIGHUP or `POST /reload`. Users, passwords, client limits and the
//! read policy change at once; connected clients keep their connections (one whose user was
//! removed is closed, as Redis does); no request of the load fails; a file that does not
//! validate is refused whole and the one in force stays; what needs a restart is named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::{Cluster, Proxy, TempConf};

/// The config file: the cluster's seeds and the admin listener, then `rest`; reloaded on
/// SIGHUP and `POST /reload` only (no file watch).
fn conf(cluster: &Cluster, admin: u16, rest: &str) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "mode = \"cluster\"\nseeds = [{}]\nconfig_check_ms = 0\n{rest}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"t0ken\"\n",
        seeds.join(", ")
    )
}

const V1: &str = "\
[clients]
requirepass = \"pw1\"
max_clients = 200
[reads]
from = \"prefer-replica\"
[[users]]
name = \"alice\"
rules = \"on >apw ~* +@all\"
[[users]]
name = \"carol\"
rules = \"on >cpw ~* +@all\"
";

/// The users changed (carol removed, bob added, alice read-only), the default password
/// rotated, a lower client limit, another read policy among the replica ones, slotgate's zone
/// and a zone map.
const V2: &str = "\
zone = \"here\"
[clients]
requirepass = \"pw2\"
max_clients = 150
[reads]
from = \"nearest\"
[[users]]
name = \"alice\"
rules = \"on >apw ~* +@read +ping\"
[[users]]
name = \"bob\"
rules = \"on >bpw ~* +@all\"
[[zones]]
name = \"here\"
nodes = [\"127.0.0.1/32\"]
";

fn log_in(proxy: &Proxy, user: &str, password: &str) -> redis::RedisResult<redis::Connection> {
    let mut c = redis::Client::open(proxy.url())?.get_connection()?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    redis::cmd("AUTH")
        .arg(user)
        .arg(password)
        .query::<()>(&mut c)?;
    Ok(c)
}

/// Pipelines of 20 SETs and GETs (logged in to slotgate as `default` with `password`, if
/// any), one after another, until `stop`: the number of pipelines, and every error or wrong
/// value seen.
fn load(
    proxy: &Proxy,
    stop: Arc<AtomicBool>,
    t: usize,
    password: Option<&str>,
) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    let mut c = match password {
        Some(p) => log_in(proxy, "default", p).unwrap(),
        None => proxy.conn(),
    };
    std::thread::spawn(move || {
        let (mut rounds, mut errors) = (0u64, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let mut p = redis::pipe();
            for i in 0..10 {
                let key = format!("reload:{t}:{}", (rounds * 10 + i) % 500);
                p.cmd("SET").arg(&key).arg(rounds).ignore();
                p.cmd("GET").arg(&key);
            }
            match p.query::<Vec<u64>>(&mut c) {
                Ok(v) if v.iter().all(|&x| x == rounds) => {}
                Ok(v) => errors.push(format!("wrong values {v:?} in round {rounds}")),
                Err(e) => errors.push(e.to_string()),
            }
            rounds += 1;
        }
        (rounds, errors)
    })
}

/// Stops the loads and asserts that none saw an error: how many pipelines they sent.
fn stop_loads(stop: &AtomicBool, loads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>) -> u64 {
    stop.store(true, Ordering::Relaxed);
    let mut rounds = 0;
    for l in loads {
        let (r, errors) = l.join().unwrap();
        assert!(errors.is_empty(), "the load saw {errors:?}");
        rounds += r;
    }
    rounds
}

/// INFO's `proxy_read_from`, asked as `default` with `password`.
fn read_from(proxy: &Proxy, password: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("proxy")
        .query(&mut log_in(proxy, "default", password).unwrap())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("proxy_read_from:"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn users_limits_and_read_policy_change_under_a_pipelined_load_without_a_client_error() {
    let cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let admin = support::free_port();
    let file = TempConf::new(&conf(&cluster, admin, V1));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    assert_eq!(read_from(&proxy, "pw1"), "prefer-replica");

    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..4)
        .map(|t| load(&proxy, stop.clone(), t, Some("pw1")))
        .collect();
    let mut alice = log_in(&proxy, "alice", "apw").unwrap();
    let mut carol = log_in(&proxy, "carol", "cpw").unwrap();
    let () = redis::cmd("SET")
        .arg("reload:a")
        .arg(1)
        .query(&mut alice)
        .unwrap();
    assert!(
        log_in(&proxy, "bob", "bpw").is_err(),
        "bob is not a user yet"
    );
    std::thread::sleep(Duration::from_millis(500));

    std::fs::write(file.path(), conf(&cluster, admin, V2)).unwrap();
    proxy.send_signal("HUP");
    support::wait_until("the reload logged", Duration::from_secs(10), || {
        proxy.log().contains("configuration reloaded")
    });
    std::thread::sleep(Duration::from_millis(500));

    // Users: bob logs in, carol's connection is closed, alice keeps hers under her new rules.
    let mut bob = log_in(&proxy, "bob", "bpw").unwrap();
    let () = redis::cmd("SET")
        .arg("reload:b")
        .arg(2)
        .query(&mut bob)
        .unwrap();
    assert!(
        redis::cmd("PING").query::<String>(&mut carol).is_err(),
        "carol's user was removed: her connection is closed"
    );
    assert!(log_in(&proxy, "carol", "cpw").is_err());
    let e = redis::cmd("SET")
        .arg("reload:a")
        .arg(3)
        .query::<()>(&mut alice)
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    assert_eq!(
        redis::cmd("GET")
            .arg("reload:a")
            .query::<u64>(&mut alice)
            .unwrap(),
        1
    );
    // The default password rotated: the new one logs in, the old one no longer does.
    assert!(log_in(&proxy, "default", "pw2").is_ok());
    let e = log_in(&proxy, "default", "pw1").err().unwrap();
    assert_eq!(e.code(), Some("WRONGPASS"), "{e}");
    assert_eq!(read_from(&proxy, "pw2"), "nearest");
    // Every node INFO lists is in the new zone.
    let info: String = redis::cmd("INFO")
        .query(&mut log_in(&proxy, "default", "pw2").unwrap())
        .unwrap();
    let nodes: Vec<&str> = info.lines().filter(|l| l.contains(":addr=")).collect();
    assert!(nodes.len() >= 3, "{info}");
    assert!(nodes.iter().all(|l| l.ends_with("zone=here")), "{nodes:?}");
    assert!(info.contains("proxy_zone:here"), "{info}");

    // A file that does not validate is refused whole: the one in force stays.
    std::fs::write(
        file.path(),
        conf(
            &cluster,
            admin,
            &V2.replace("max_clients = 150", "max_clients = \"many\"")
                .replace("bpw", "new"),
        ),
    )
    .unwrap();
    proxy.send_signal("HUP");
    support::wait_until("the refusal logged", Duration::from_secs(10), || {
        proxy.log().contains("configuration not reloaded")
    });
    assert!(log_in(&proxy, "bob", "bpw").is_ok(), "the old users stay");
    assert!(log_in(&proxy, "bob", "new").is_err());

    // POST /reload: the token is needed; what needs a restart is named and keeps its value.
    std::fs::write(
        file.path(),
        conf(
            &cluster,
            admin,
            &format!("threads = 3\n{}", V2.replace("nearest", "prefer-replica")),
        ),
    )
    .unwrap();
    assert_eq!(support::http(admin, "POST", "/reload", None).0, 401);
    assert_eq!(support::http(admin, "GET", "/reload", Some("t0ken")).0, 405);
    let (status, body) = support::http(admin, "POST", "/reload", Some("t0ken"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"applied\":[\"reads\"]"), "{body}");
    assert!(body.contains("threads"), "{body}");
    assert_eq!(read_from(&proxy, "pw2"), "prefer-replica");

    std::thread::sleep(Duration::from_millis(300));
    let rounds = stop_loads(&stop, loads);
    eprintln!("{rounds} pipelines of 20 requests through three reloads, no error");
    assert!(rounds > 50, "{rounds} pipelines");
}

#[test]
fn a_changed_file_lowers_limits_for_the_clients_already_connected_and_new_ones() {
    // One server is enough for the clients' limits.
    let redis = support::Redis::start(&[]);
    // Reloaded when the file changes (checked every 100 ms), without a signal.
    let base = format!(
        "mode = \"standalone\"\nserver = \"{}\"\nconfig_check_ms = 100\n",
        redis.addr()
    );
    let file = TempConf::new(&base);
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let mut c = proxy.conn();
    let () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; 1000])
        .query(&mut c)
        .unwrap();
    // Four clients in all, `c` included, before the reload.
    let mut held: Vec<TcpStream> = (0..3).map(|_| proxy.raw()).collect();
    for s in &mut held {
        s.write_all(b"PING\r\n").unwrap();
        let mut b = [0u8; 7];
        s.read_exact(&mut b).unwrap();
    }
    let reload = |text: String, n: usize| {
        // Another length: a change seen even within the file system's time granularity.
        std::fs::write(file.path(), format!("{text}{}\n", "#".repeat(n))).unwrap();
        support::wait_until("the reload logged", Duration::from_secs(10), || {
            proxy
                .log()
                .matches("configuration reloaded by=\"file change\"")
                .count()
                == n
        });
    };
    reload(
        format!("{base}[clients]\nmax_clients = 4\noutput_buffer_limit_bytes = 100000\n"),
        1,
    );
    // The limit is four and four are connected: the next one gets Redis' error.
    let mut extra = proxy.raw();
    let mut b = [0u8; 64];
    let n = extra.read(&mut b).unwrap_or(0);
    let line = String::from_utf8_lossy(&b[..n]);
    assert!(
        line.starts_with("-ERR max number of clients reached"),
        "{line:?}"
    );
    // The output buffer limit reaches a client connected before it: 20,000 unread replies of
    // 1 KB (more than the kernel's socket buffers take, however they grow, on epoll and on
    // io_uring) close it, and the others are served.
    let mut reader = held.pop().unwrap();
    reader.write_all(&b"GET big\r\n".repeat(20_000)).unwrap();
    support::wait_until("the output limit close", Duration::from_secs(10), || {
        proxy.log().contains("past the output buffer limit")
    });
    assert_eq!(
        redis::cmd("GET")
            .arg("big")
            .query::<Vec<u8>>(&mut c)
            .unwrap()
            .len(),
        1000
    );
    // An idle timeout reaches the clients already connected.
    reload(format!("{base}[clients]\nidle_timeout_ms = 300\n"), 2);
    let idle = &mut held[0];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Closed (a read of 0 bytes), not merely silent (a read that times out).
    assert!(
        matches!(idle.read(&mut b), Ok(0)),
        "the idle client is closed"
    );
}

/// Keys the readers of the source switch read, each holding its own number.
const SWITCH_KEYS: u64 = 500;

#[test]
fn a_standalone_server_is_replaced_by_a_cluster_under_load_without_a_client_error() {
    let old = support::Redis::start(&[]);
    let cluster = Cluster::start(3, 0);
    let file = TempConf::new(&format!(
        "mode = \"standalone\"\nserver = \"{}\"\nconfig_check_ms = 0\n",
        old.addr()
    ));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let mut c = proxy.conn();
    let mut mset = redis::cmd("MSET");
    for k in 0..SWITCH_KEYS {
        mset.arg(format!("switch:r:{k}")).arg(k);
    }
    let () = mset.query(&mut c).unwrap();
    // The operator copies the data into the new cluster (the server keeps its keys).
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "import", &cluster.seeds()[0]])
        .args(["--cluster-from", &old.addr(), "--cluster-copy"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Two readers of the copied keys and two writers of new ones, one request at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, url) = (stop.clone(), proxy.url());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let (mut errors, mut acked) = (Vec::new(), Vec::new());
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sent = std::time::Instant::now();
                    if t < 2 {
                        let key = format!("switch:w{t}:{i}");
                        match redis::cmd("SET").arg(&key).arg(i).query::<()>(&mut c) {
                            Ok(()) => acked.push((sent, key, i)),
                            Err(e) => errors.push(e.to_string()),
                        }
                    } else {
                        let k = (i * 7919 + t) % SWITCH_KEYS;
                        match redis::cmd("GET")
                            .arg(format!("switch:r:{k}"))
                            .query::<Option<u64>>(&mut c)
                        {
                            Ok(Some(v)) if v == k => {}
                            other => errors.push(format!("switch:r:{k} read {other:?}")),
                        }
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                (errors, acked)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    std::fs::write(
        file.path(),
        format!(
            "mode = \"cluster\"\nseeds = [{}]\nconfig_check_ms = 0\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    proxy.send_signal("HUP");
    support::wait_until("the cluster in use", Duration::from_secs(10), || {
        proxy.log().contains("the new topology source answered")
    });
    let switched = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);

    let mut old_conn = redis::Client::open(format!("redis://{}/", old.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    let (mut after, mut before) = (0, 0);
    for t in threads {
        let (errors, acked) = t.join().unwrap();
        assert!(errors.is_empty(), "clients saw {errors:?}");
        for (sent, key, v) in acked {
            // Through slotgate, which now routes to the cluster.
            let got: Option<u64> = redis::cmd("GET").arg(&key).query(&mut c).unwrap();
            if sent > switched {
                assert_eq!(
                    got,
                    Some(v),
                    "{key}, written after the switch, is on the cluster"
                );
                after += 1;
            } else if got != Some(v) {
                // Written before the switch: on the old server (moving such writes is the
                // migration's part, not the switch's).
                let there: Option<u64> = redis::cmd("GET").arg(&key).query(&mut old_conn).unwrap();
                assert_eq!(there, Some(v), "{key} is on neither side");
                before += 1;
            }
        }
    }
    eprintln!(
        "{after} writes after the switch on the cluster, {before} before it on the old server"
    );
    assert!(after > 50, "{after} writes after the switch");
    // A multi-key command across slots now meets the cluster's rule.
    let e = redis::cmd("RENAME")
        .arg("switch:r:1")
        .arg("switch:r:2")
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("CROSSSLOT"), "{e}");
}

/// Runs `cmd` on every node of `conns`.
fn on_every_node(conns: &mut [redis::Connection], cmd: &redis::Cmd) {
    for c in conns {
        let _: redis::Value = cmd.query(c).unwrap();
    }
}

#[test]
fn the_nodes_password_is_rotated_under_a_pipelined_load_without_a_client_error() {
    let cluster = Cluster::start_with(3, 0, &[], Some("pw1"));
    // Opened now, with the old password, and kept: still logged in when it is gone.
    let mut nodes: Vec<redis::Connection> = cluster.nodes.iter().map(|n| n.conn()).collect();
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let conf = |password: &str, per_node: usize| {
        format!(
            "mode = \"cluster\"\nseeds = [{}]\nconfig_check_ms = 0\n[backend]\npassword = \"{password}\"\nconnections_per_node = {per_node}\n",
            seeds.join(", ")
        )
    };
    let file = TempConf::new(&conf("pw1", 1));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..4)
        .map(|t| load(&proxy, stop.clone(), t, None))
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // The operator's rotation: the nodes take both passwords, slotgate is given the new one,
    // the nodes drop the old one.
    on_every_node(
        &mut nodes,
        redis::cmd("ACL").arg("SETUSER").arg("default").arg(">pw2"),
    );
    std::fs::write(file.path(), conf("pw2", 2)).unwrap();
    proxy.send_signal("HUP");
    support::wait_until("the reload logged", Duration::from_secs(10), || {
        proxy.log().contains("configuration reloaded")
    });
    assert!(proxy.log().contains("\"backend\""), "{}", proxy.log());
    std::thread::sleep(Duration::from_millis(700));
    on_every_node(
        &mut nodes,
        redis::cmd("ACL").arg("SETUSER").arg("default").arg("<pw1"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let rounds = stop_loads(&stop, loads);
    eprintln!("{rounds} pipelines of 20 requests through the rotation, no error");

    // Every connection a node has is closed: slotgate opens new ones, which only the new
    // password logs in.
    on_every_node(
        &mut nodes,
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes"),
    );
    // A moment for slotgate to see its connections closed (a write sent on one as it closes
    // would fail: it may have run).
    std::thread::sleep(Duration::from_millis(300));
    let mut c = proxy.conn();
    for i in 0..20 {
        let key = format!("rotated:{i}");
        let () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
        assert_eq!(redis::cmd("GET").arg(&key).query::<u32>(&mut c).unwrap(), i);
    }
    assert!(!proxy.log().contains("WRONGPASS"), "{}", proxy.log());
}

/// GETs each node has served (its own `INFO commandstats`), replicas' summed.
fn replica_gets(cluster: &Cluster) -> u64 {
    cluster
        .nodes
        .iter()
        .filter(|n| n.info_field("replication", "role").as_deref() == Some("slave"))
        .map(|n| {
            n.info_field("commandstats", "cmdstat_get")
                .and_then(|v| {
                    v.split(',')
                        .find_map(|f| f.strip_prefix("calls="))
                        .and_then(|c| c.parse().ok())
                })
                .unwrap_or(0)
        })
        .sum()
}

/// A config file for `cluster` reading from `reads`, with read your writes (2 s).
fn reads_conf(cluster: &Cluster, reads: &str) -> String {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "mode = \"cluster\"\nseeds = [{}]\nconfig_check_ms = 0\n[reads]\nfrom = \"{reads}\"\nread_your_writes_ms = 2000\n",
        seeds.join(", ")
    )
}

#[test]
fn replica_reads_are_turned_on_and_off_by_a_reload() {
    let cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    // Read your writes: the writers' GETs of what they just wrote stay on the masters.
    let conf = |reads: &str| reads_conf(&cluster, reads);
    let file = TempConf::new(&conf("master"));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let mut c = proxy.conn();
    let mut mset = redis::cmd("MSET");
    for k in 0..200 {
        mset.arg(format!("static:{k}")).arg(k);
    }
    let () = mset.query(&mut c).unwrap();
    cluster.wait_replicas_synced();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loads: Vec<_> = (0..2)
        .map(|t| load(&proxy, stop.clone(), t, None))
        .collect();
    // A reader of keys nobody writes now: what replicas serve once reads may go there.
    loads.push({
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut rounds, mut errors) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let k = rounds % 200;
                match redis::cmd("GET")
                    .arg(format!("static:{k}"))
                    .query::<u64>(&mut c)
                {
                    Ok(v) if v == k => {}
                    other => errors.push(format!("static:{k} read {other:?}")),
                }
                rounds += 1;
            }
            (rounds, errors)
        })
    });
    let reload = |reads: &str, n: usize| {
        std::fs::write(file.path(), conf(reads)).unwrap();
        proxy.send_signal("HUP");
        support::wait_until("the reload logged", Duration::from_secs(10), || {
            proxy.log().matches("configuration reloaded").count() == n
        });
    };
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(replica_gets(&cluster), 0, "master-only reads");

    reload("prefer-replica", 1);
    // Once the replica checker has found them fit, the replicas take the reader's GETs.
    support::wait_until("GETs served by replicas", Duration::from_secs(10), || {
        replica_gets(&cluster) > 100
    });
    reload("master", 2);
    std::thread::sleep(Duration::from_millis(300));
    let before = replica_gets(&cluster);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(replica_gets(&cluster), before, "master-only reads again");
    let rounds = stop_loads(&stop, loads);
    eprintln!("{rounds} pipelines and reads, replica reads on and off, no error");
}

#[test]
fn a_subscriber_whose_channel_a_reload_takes_away_is_closed_and_the_others_stay() {
    let redis = support::Redis::start(&[]);
    let base = format!(
        "mode = \"standalone\"\nserver = \"{}\"\nconfig_check_ms = 0\n",
        redis.addr()
    );
    let users = |channels: &str| {
        format!("{base}[[users]]\nname = \"sub\"\nrules = \"on >spw ~* {channels} +@all\"\n")
    };
    let file = TempConf::new(&users("&news:*"));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let subscriber = |channel: &str| {
        let mut s = proxy.raw();
        write!(s, "AUTH sub spw\r\nSUBSCRIBE {channel}\r\n").unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains(channel) {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed before subscribing");
            got.extend_from_slice(&b[..n]);
        }
        s
    };
    let mut kept = subscriber("news:1");
    let mut dropped = subscriber("news:2");
    std::fs::write(file.path(), users("&news:1")).unwrap();
    proxy.send_signal("HUP");
    support::wait_until("the reload logged", Duration::from_secs(10), || {
        proxy.log().contains("configuration reloaded")
    });
    dropped
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut b = [0u8; 256];
    // Closed (a read of 0 bytes), not merely silent (a read that times out).
    assert!(
        matches!(dropped.read(&mut b), Ok(0)),
        "news:2 is no longer sub's: the subscriber is closed"
    );
    let n: u32 = redis::cmd("PUBLISH")
        .arg("news:1")
        .arg("hello")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(n, 1, "the news:1 subscriber is still there");
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("hello") {
        let n = kept.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
}

/// A reload that changes the backends' settings (here the read policy, which gives replicas
/// connections of their own) replaces every node with a new one at the same address: a client's
/// request sent to the new node must never overtake one it sent to the old node just before.
/// Four clients pipeline SETs each followed by a GET of the same key while the read policy is
/// reloaded 16 times; every GET must read its own SET (read your writes keeps them on the
/// masters). Before the new nodes waited for the old ones, a GET read the value from 50 rounds
/// earlier in one run of three.
#[test]
fn a_reload_of_the_backends_settings_keeps_each_clients_order() {
    let cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let conf = |reads: &str| reads_conf(&cluster, reads);
    let file = TempConf::new(&conf("master"));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..4)
        .map(|t| load(&proxy, stop.clone(), t, None))
        .collect();
    for n in 0..16 {
        let reads = if n % 2 == 0 {
            "prefer-replica"
        } else {
            "master"
        };
        std::fs::write(file.path(), conf(reads)).unwrap();
        proxy.send_signal("HUP");
        std::thread::sleep(Duration::from_millis(250));
    }
    let rounds = stop_loads(&stop, loads);
    eprintln!("{rounds} pipelines across 16 reloads, every GET read its own SET");
}
