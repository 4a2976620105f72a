//! Replica reads on a zoned cluster: 3 masters on 127.0.0.1 (zone a), each with a replica on
//! 127.0.0.2 (zone b) and one on 127.0.0.3 (zone c); slotgate runs in zone b. Where reads land
//! is read from every node's own `INFO commandstats`; faults are real (SIGKILL).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Commands;
use support::{Cluster, Proxy, Redis, TempConf, wait_until};

const ZONES: [&str; 6] = [
    "--zone-map",
    "a=127.0.0.1/32",
    "--zone-map",
    "b=127.0.0.2/32",
    "--zone-map",
    "c=127.0.0.3/32",
];

/// slotgate's arguments for `same-zone` reads from zone b, with quick refreshes and checks
/// (the config file lives as long as the `TempConf`).
fn same_zone_b() -> (TempConf, Vec<String>) {
    same_zone_b_with(QUICK)
}

/// Quick refreshes and replica checks.
const QUICK: &str = "[topology]\nrefresh_interval_ms = 300\n[reads]\ncheck_interval_ms = 200\n";

/// [`same_zone_b`] with another config file.
fn same_zone_b_with(conf: &str) -> (TempConf, Vec<String>) {
    let conf = TempConf::new(conf);
    let mut args: Vec<String> = [
        "--config",
        conf.path(),
        "--zone",
        "b",
        "--read-from",
        "same-zone",
    ]
    .map(String::from)
    .to_vec();
    args.extend(ZONES.map(String::from));
    (conf, args)
}

fn proxy_field(proxy: &Proxy, field: &str) -> u64 {
    proxy
        .info_field(field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from INFO"))
}

/// Waits until slotgate lists `n` replicas, each online and serving reads.
fn wait_serving(proxy: &Proxy, n: usize) {
    wait_until(
        "every replica serving reads",
        Duration::from_secs(30),
        || {
            proxy
                .nodes_section()
                .iter()
                .filter(|l| l.contains("reads=serving") && l.contains("replication=online"))
                .count()
                == n
        },
    );
}

fn master_port_of(replica: &Redis) -> u16 {
    replica
        .info_field("replication", "master_port")
        .and_then(|p| p.parse().ok())
        .unwrap()
}

fn reset_stats(cluster: &Cluster) {
    for n in cluster.nodes.iter().filter(|n| n.is_running()) {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut n.conn())
            .unwrap();
    }
}

/// Keys whose slots the master on `port` serves.
fn keys_of(cluster: &Cluster, port: u16, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("rk:{i}"))
        .filter(|k| {
            cluster
                .owner_of_slot(slotgate::router::key_slot(k.as_bytes()))
                .port
                == port
        })
        .take(n)
        .collect()
}

/// Writes `keys` (value = key) through the proxy and waits until every replica has them.
fn write_all(proxy: &Proxy, cluster: &Cluster, keys: &[String]) {
    let mut c = proxy.conn();
    for k in keys {
        let _: () = c.set(k, k).unwrap();
    }
    for m in cluster.masters() {
        let _: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(5000)
            .query(&mut m.conn())
            .unwrap();
    }
}

/// Waits until `reads` has grown by `more`.
fn wait_for_more(reads: &AtomicU64, more: u64) {
    let target = reads.load(Ordering::Relaxed) + more;
    wait_until("reads to go on", Duration::from_secs(30), || {
        reads.load(Ordering::Relaxed) >= target
    });
}

/// Reads `keys` in a loop from another thread until told to stop: (reads, errors, wrong values,
/// the slowest read).
struct Reader {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<(u64, Vec<String>, Duration)>,
}

impl Reader {
    fn start(proxy: &Proxy, keys: Vec<String>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let mut c = proxy.conn();
        let (s, r) = (stop.clone(), reads.clone());
        let handle = std::thread::spawn(move || {
            let (mut errors, mut wrong, mut slowest) = (0, Vec::new(), Duration::ZERO);
            while !s.load(Ordering::Relaxed) {
                for k in &keys {
                    let t = Instant::now();
                    match c.get::<_, Option<String>>(k) {
                        Ok(Some(v)) if &v == k => {}
                        Ok(v) => wrong.push(format!("{k} = {v:?}")),
                        Err(e) => {
                            errors += 1;
                            if wrong.len() < 20 {
                                wrong.push(format!("{k}: {e}"));
                            }
                        }
                    }
                    slowest = slowest.max(t.elapsed());
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            (errors, wrong, slowest)
        });
        Reader {
            stop,
            reads,
            handle,
        }
    }

    fn wait_reads(&self, more: u64) {
        wait_for_more(&self.reads, more);
    }

    fn stop(self) -> (u64, Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

#[test]
fn same_zone_reads_land_on_the_local_replicas_and_survive_replica_and_master_kills() {
    // Redis refuses every read of a cluster whose state is fail (a master down, its slots not
    // yet taken over) unless told otherwise: a deployment that wants reads through a master
    // outage sets this, and so does this test.
    let mut cluster = Cluster::start_zoned_with(
        3,
        &["127.0.0.2", "127.0.0.3"],
        &["--cluster-allow-reads-when-down", "yes"],
    );
    let (_conf, args) = same_zone_b();
    let proxy = Proxy::cluster(
        &cluster,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    wait_serving(&proxy, 6);

    // 1. Reads go to the zone-b replicas, and only reads: writes to the masters.
    let masters: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    let keys: Vec<String> = masters
        .iter()
        .flat_map(|&p| keys_of(&cluster, p, 20))
        .collect();
    reset_stats(&cluster);
    write_all(&proxy, &cluster, &keys);
    let mut c = proxy.conn();
    for k in &keys {
        assert_eq!(c.get::<_, String>(k).unwrap(), *k);
    }
    // A split read: every part to the zone-b replica of its slot.
    let got: Vec<String> = c.mget(&keys).unwrap();
    assert_eq!(got, keys);
    for n in &cluster.nodes {
        let (gets, mgets, sets) = (n.calls("get"), n.calls("mget"), n.calls("set"));
        match n.ip.as_str() {
            "127.0.0.2" => {
                assert_eq!(gets, 20, "{}: GETs of its shard", n.addr());
                assert!(mgets > 0, "{}: no MGET part", n.addr());
            }
            "127.0.0.1" => {
                assert_eq!((gets, mgets), (0, 0), "{}: a master read", n.addr());
                assert_eq!(sets, 20, "{}: SETs of its shard", n.addr());
            }
            _ => assert_eq!((gets, mgets), (0, 0), "{}: a zone-c read", n.addr()),
        }
    }
    // One placed read per GET and per MGET part (a part per slot).
    let mut slots: Vec<u16> = keys
        .iter()
        .map(|k| slotgate::router::key_slot(k.as_bytes()))
        .collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(
        proxy_field(&proxy, "proxy_reads_local_replica"),
        (keys.len() + slots.len()) as u64
    );
    assert_eq!(proxy_field(&proxy, "proxy_reads_master"), 0);

    // 2. Kill a zone-b replica under a read load: its shard's reads move to the zone-c
    //    replica, and the readers see no error.
    let victim_port = cluster
        .nodes
        .iter()
        .find(|n| n.ip == "127.0.0.2" && master_port_of(n) == masters[0])
        .unwrap()
        .port;
    let shard0 = keys_of(&cluster, masters[0], 20);
    let reader = Reader::start(&proxy, shard0.clone());
    reader.wait_reads(200);
    cluster.node_mut(victim_port).kill();
    reader.wait_reads(2000);
    let (errors, wrong, slowest) = reader.stop();
    assert_eq!(errors, 0, "read errors after a replica kill: {wrong:?}");
    assert!(wrong.is_empty(), "{wrong:?}");
    let zone_c = cluster
        .nodes
        .iter()
        .find(|n| n.is_running() && n.ip == "127.0.0.3" && master_port_of(n) == masters[0])
        .unwrap();
    assert!(zone_c.calls("get") > 0, "the zone-c replica took no reads");
    eprintln!(
        "replica kill: slowest read {slowest:?}, reads that passed over a down replica: {}",
        proxy_field(&proxy, "proxy_read_skips_down")
    );

    // 3. SIGKILL a master whose replicas are alive: its slots' reads keep succeeding through
    //    the outage and the failover that follows.
    let victim_master = masters[1];
    let shard1 = keys_of(&cluster, victim_master, 20);
    let reader = Reader::start(&proxy, shard1);
    reader.wait_reads(200);
    let killed = Instant::now();
    cluster.node_mut(victim_master).kill();
    wait_until("a replica promoted", Duration::from_secs(30), || {
        cluster
            .nodes
            .iter()
            .filter(|n| n.is_running() && n.ip != "127.0.0.1")
            .any(|n| n.info_field("replication", "role").as_deref() == Some("master"))
    });
    let promoted_after = killed.elapsed();
    reader.wait_reads(2000);
    let (errors, wrong, slowest) = reader.stop();
    assert_eq!(errors, 0, "read errors across a master kill: {wrong:?}");
    assert!(wrong.is_empty(), "{wrong:?}");
    eprintln!("master kill: promoted after {promoted_after:?}, slowest read {slowest:?}");
    eprintln!(
        "reads sent again elsewhere: {}",
        proxy_field(&proxy, "proxy_reads_retried")
    );
}

#[test]
fn sentinel_reads_go_to_the_same_zone_replica_and_survive_a_failover() {
    let g = support::SentinelGroup::start_zoned(&["127.0.0.2", "127.0.0.3"], 3, 1000);
    g.wait_steady();
    let (_conf, args) = same_zone_b();
    let proxy = Proxy::sentinel(
        &g.sentinel_addrs(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    wait_serving(&proxy, 2);
    let master = g.node(g.master_port());
    let keys: Vec<String> = (0..50).map(|i| format!("sk:{i}")).collect();
    let mut c = proxy.conn();
    for k in &keys {
        let _: () = c.set(k, k).unwrap();
    }
    let _: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query(&mut master.conn())
        .unwrap();
    for n in &g.nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query(&mut n.conn())
            .unwrap();
    }
    for k in &keys {
        assert_eq!(c.get::<_, String>(k).unwrap(), *k);
    }
    for n in &g.nodes {
        let want = if n.ip == "127.0.0.2" { 50 } else { 0 };
        assert_eq!(n.calls("get"), want, "{}", n.addr());
    }

    // A failover under a read load: no read fails, writes follow the new master.
    let reader = Reader::start(&proxy, keys.clone());
    reader.wait_reads(200);
    g.failover();
    reader.wait_reads(2000);
    let (errors, wrong, slowest) = reader.stop();
    assert_eq!(
        errors, 0,
        "read errors across a Sentinel failover: {wrong:?}"
    );
    assert!(wrong.is_empty(), "{wrong:?}");
    eprintln!("sentinel failover: slowest read {slowest:?}");
    wait_until("a write on the new master", Duration::from_secs(10), || {
        c.set::<_, _, ()>("after", "1").is_ok()
    });
    assert_eq!(
        g.node(g.master_port())
            .conn()
            .get::<_, String>("after")
            .unwrap(),
        "1"
    );
}

/// Reads a counter through the proxy in a loop, checking that it never goes back, while a writer
/// increments it: (reads, read errors, values that went back, writes, write errors).
struct Counter {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    reader: std::thread::JoinHandle<(u64, Vec<String>)>,
    writer: std::thread::JoinHandle<(u64, u64)>,
}

impl Counter {
    fn start(proxy: &Proxy, key: &str) -> Counter {
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let (mut r, mut w) = (proxy.conn(), proxy.conn());
        let (s, n, k) = (stop.clone(), reads.clone(), key.to_string());
        let reader = std::thread::spawn(move || {
            let (mut last, mut errors, mut back) = (0i64, 0, Vec::new());
            while !s.load(Ordering::Relaxed) {
                match r.get::<_, Option<i64>>(&k) {
                    Ok(v) => {
                        let v = v.unwrap_or(0);
                        if v < last {
                            back.push(format!("{v} after {last}"));
                        }
                        last = last.max(v);
                    }
                    Err(_) => errors += 1,
                }
                n.fetch_add(1, Ordering::Relaxed);
            }
            (errors, back)
        });
        let (s, k) = (stop.clone(), key.to_string());
        let writer = std::thread::spawn(move || {
            let (mut writes, mut errors) = (0, 0);
            while !s.load(Ordering::Relaxed) {
                match w.incr::<_, _, i64>(&k, 1) {
                    Ok(_) => writes += 1,
                    Err(_) => errors += 1,
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (writes, errors)
        });
        Counter {
            stop,
            reads,
            reader,
            writer,
        }
    }

    fn wait_reads(&self, more: u64) {
        wait_for_more(&self.reads, more);
    }

    /// (read errors, values that went back, writes, write errors).
    fn stop(self) -> (u64, Vec<String>, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (read_errors, back) = self.reader.join().unwrap();
        let (writes, write_errors) = self.writer.join().unwrap();
        (read_errors, back, writes, write_errors)
    }
}

#[test]
fn a_stalled_replica_is_skipped_until_it_catches_up_and_read_your_writes_reads_the_master() {
    let cluster = Cluster::start_zoned(3, &["127.0.0.2", "127.0.0.3"]);
    let (_conf, args) = same_zone_b_with(
        "[topology]\nrefresh_interval_ms = 300\n[backend]\nread_timeout_ms = 1000\n\
         [reads]\ncheck_interval_ms = 200\nmax_replica_lag_ms = 1000\n",
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::cluster(&cluster, &args);
    wait_serving(&proxy, 6);

    // 1. SIGSTOP the zone-b replica of the counter's shard for 3 s under a read and a write
    //    load: no error, the counter never goes back, and once the replica has caught up it
    //    serves reads again.
    let key = "stall:counter";
    let owner = cluster
        .owner_of_slot(slotgate::router::key_slot(key.as_bytes()))
        .port;
    let stalled = cluster
        .nodes
        .iter()
        .find(|n| n.ip == "127.0.0.2" && master_port_of(n) == owner)
        .unwrap()
        .port;
    let load = Counter::start(&proxy, key);
    load.wait_reads(300);
    let addr = cluster.node(stalled).addr();
    cluster.node(stalled).signal("STOP");
    // Whether slotgate stopped offering the replica for reads while it was stopped: its own
    // checks mark it unfit, or the cluster flags it failed and it leaves the topology (which
    // of the two comes first is a race of two one-second timers).
    let mut avoided = false;
    let stall = Instant::now();
    while stall.elapsed() < Duration::from_secs(3) {
        let nodes = proxy.nodes_section();
        let line = nodes.iter().find(|l| l.contains(&format!("addr={addr},")));
        avoided |= !nodes.is_empty() && line.is_none_or(|l| !l.contains("reads=serving"));
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.node(stalled).signal("CONT");
    assert!(
        avoided,
        "the stopped replica was offered for reads throughout its stall"
    );
    wait_until(
        "the replica to serve again",
        Duration::from_secs(20),
        || {
            proxy
                .nodes_section()
                .iter()
                .any(|l| l.contains(&format!("addr={addr},")) && l.contains("reads=serving"))
        },
    );
    let before = cluster.node(stalled).calls("get");
    load.wait_reads(500);
    let (read_errors, back, writes, write_errors) = load.stop();
    assert_eq!(
        (read_errors, write_errors),
        (0, 0),
        "errors through a replica stall"
    );
    assert!(back.is_empty(), "the counter went back: {back:?}");
    assert!(writes > 100, "{writes} writes");
    let skips: Vec<u64> = ["down", "syncing", "lagging"]
        .iter()
        .map(|r| proxy_field(&proxy, &format!("proxy_read_skips_{r}")))
        .collect();
    eprintln!("replica stall: reads passed over it (down, syncing, lagging): {skips:?}");
    assert!(
        cluster.node(stalled).calls("get") > before,
        "the replica got no reads after it caught up"
    );

    // 2. Read your writes: with both replicas of a shard stopped, a client that writes a key
    //    and reads it at once reads it from the master (never waiting on a stopped replica).
    let (_ryw, args) = same_zone_b_with(
        "[backend]\nread_timeout_ms = 1000\n[reads]\ncheck_interval_ms = 200\n\
         read_your_writes_ms = 2000\n",
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::cluster(&cluster, &args);
    wait_serving(&proxy, 6);
    let owner = cluster
        .owner_of_slot(slotgate::router::key_slot(b"ryw:key"))
        .port;
    let replicas: Vec<u16> = cluster
        .nodes
        .iter()
        .filter(|n| n.ip != "127.0.0.1" && master_port_of(n) == owner)
        .map(|n| n.port)
        .collect();
    let mut c = proxy.conn();
    let _: () = c.set("ryw:key", "0").unwrap();
    for &p in &replicas {
        cluster.node(p).signal("STOP");
    }
    let mut slowest = Duration::ZERO;
    for i in 1..=100 {
        let _: () = c.set("ryw:key", i).unwrap();
        let t = Instant::now();
        assert_eq!(c.get::<_, i64>("ryw:key").unwrap(), i);
        slowest = slowest.max(t.elapsed());
    }
    for &p in &replicas {
        cluster.node(p).signal("CONT");
    }
    assert!(
        slowest < Duration::from_millis(500),
        "a read waited on a stopped replica: {slowest:?}"
    );
    assert!(cluster.node(owner).calls("get") >= 100);
}

#[test]
fn nearest_moves_reads_away_from_a_replica_made_slow() {
    let cluster = Cluster::start_zoned(3, &["127.0.0.2", "127.0.0.3"]);
    let conf = TempConf::new(QUICK);
    let proxy = Proxy::cluster(
        &cluster,
        &["--config", conf.path(), "--read-from", "nearest"],
    );
    wait_serving(&proxy, 6);
    let owner = cluster.masters()[0].port;
    let keys = keys_of(&cluster, owner, 20);
    write_all(&proxy, &cluster, &keys);
    let slow = cluster
        .nodes
        .iter()
        .find(|n| n.ip == "127.0.0.2" && master_port_of(n) == owner)
        .unwrap();
    // Four clients, so that ties spread over the shard's three nodes.
    let readers: Vec<Reader> = (0..4)
        .map(|_| Reader::start(&proxy, keys.clone()))
        .collect();
    for r in &readers {
        r.wait_reads(100);
    }
    // The replica answers in bursts: stopped 40 ms, running 10 ms, for 3 s.
    let before = slow.calls("get");
    let shard_gets = |cluster: &Cluster| -> u64 {
        cluster
            .nodes
            .iter()
            .filter(|n| {
                n.port == owner
                    || n.info_field("replication", "master_port") == Some(owner.to_string())
            })
            .map(|n| n.calls("get"))
            .sum()
    };
    let shard_before = shard_gets(&cluster);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        slow.signal("STOP");
        std::thread::sleep(Duration::from_millis(40));
        slow.signal("CONT");
        std::thread::sleep(Duration::from_millis(10));
    }
    let slow_share =
        (slow.calls("get") - before) as f64 / (shard_gets(&cluster) - shard_before).max(1) as f64;
    let mut errors = 0;
    for r in readers {
        let (e, wrong, _) = r.stop();
        errors += e;
        assert!(wrong.iter().all(|w| !w.contains(" = ")), "{wrong:?}");
    }
    assert_eq!(errors, 0);
    eprintln!(
        "nearest: the slow replica served {:.1}% of its shard's reads",
        slow_share * 100.0
    );
    assert!(
        slow_share < 0.15,
        "the slow replica kept {:.0}% of the reads",
        slow_share * 100.0
    );
}
