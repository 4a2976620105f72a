//! A master killed with SIGKILL under load: its replica is promoted and slotgate recovers on its
//! own. The failover hold makes the outage a pause: no read fails, a write fails only if it was
//! in flight when the kill landed, pipelined writes to one key run in their order, and no
//! acknowledged write is lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Commands;
use support::{Cluster, Proxy};

#[test]
fn a_killed_master_is_a_pause_no_read_fails_and_pipelined_writes_keep_their_order() {
    let mut cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let proxy = Proxy::cluster(&cluster, &[]);
    // The victim owns the slot of "{victim}".
    let victim_port = cluster
        .owner_of_slot(slotgate::router::key_slot(b"victim"))
        .port;

    let stop = Arc::new(AtomicBool::new(false));
    let url = proxy.url();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{{victim}}:{i}");
                match c.set::<_, _, ()>(&key, i) {
                    Ok(()) => acked.push((Instant::now(), i)),
                    Err(e) => errors.push((Instant::now(), e.to_string())),
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (acked, errors)
        })
    };
    // A reader of the victim's keys, timing each read.
    let reader = {
        let (stop, url) = (stop.clone(), proxy.url());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let (mut took, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match c.get::<_, Option<u64>>("{victim}:0") {
                    Ok(_) => took.push(t.elapsed()),
                    Err(e) => errors.push(e.to_string()),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (took, errors)
        })
    };
    // A pipelining writer: ten RPUSHes of one list per round trip, numbered in order.
    let pusher = {
        let (stop, url) = (stop.clone(), proxy.url());
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let (mut acked, mut failed_rounds, mut n) = (Vec::new(), 0u32, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                for i in n..n + 10 {
                    pipe.cmd("RPUSH").arg("{victim}:list").arg(i);
                }
                match pipe.query::<Vec<redis::Value>>(&mut c) {
                    Ok(_) => acked.extend(n..n + 10),
                    Err(_) => failed_rounds += 1,
                }
                n += 10;
                std::thread::sleep(Duration::from_millis(5));
            }
            (acked, failed_rounds)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let killed_at = Instant::now();
    cluster.node_mut(victim_port).kill();

    // Wait for a replica to take over in the cluster itself.
    support::wait_until("replica promoted", Duration::from_secs(30), || {
        cluster.masters().len() == 3
    });
    let promoted_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.join().unwrap();
    let (mut took, read_errors) = reader.join().unwrap();
    let (pushed, failed_rounds) = pusher.join().unwrap();
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    eprintln!(
        "failover hold: {} reads, {} read errors, p99 {p99:?}, max {:?}; {} write errors; {} pipelined rounds failed",
        took.len(),
        read_errors.len(),
        took.last().unwrap(),
        errors.len(),
        failed_rounds
    );
    // Reads are held and sent again; a write fails only if it was in flight at the kill (one
    // at a time per client here).
    assert!(read_errors.is_empty(), "read errors: {read_errors:?}");
    assert!(errors.len() <= 1, "write errors: {errors:?}");
    assert!(
        failed_rounds <= 1,
        "{failed_rounds} pipelined rounds failed"
    );

    // Recovered: the first acknowledged write after the last error (a write already in flight
    // when the kill landed may still have been answered before the node died).
    let last_error = errors.last().map(|(t, _)| *t);
    let first_ok_after_kill = acked
        .iter()
        .find(|(t, _)| *t > killed_at && last_error.is_none_or(|e| *t > e))
        .map(|(t, _)| *t)
        .unwrap();
    let recovery = first_ok_after_kill.saturating_duration_since(killed_at);
    eprintln!(
        "failover: {} errors; recovered {:?} after the kill ({:?} after promotion was visible); cluster promoted after {:?}",
        errors.len(),
        recovery,
        first_ok_after_kill.saturating_duration_since(promoted_at),
        promoted_at - killed_at,
    );
    for (_, e) in errors.iter().take(3) {
        eprintln!("  error seen: {e}");
    }
    assert!(first_ok_after_kill > killed_at);
    // Errors happen only during the outage, never after the proxy has recovered.
    if let Some(last) = last_error {
        assert!(last <= first_ok_after_kill, "error after recovery");
        assert!(
            last <= promoted_at + Duration::from_secs(2),
            "errors went on after promotion"
        );
    }
    assert!(
        recovery < Duration::from_secs(15),
        "recovery took {recovery:?}"
    );

    // Every acknowledged write is on the new master (replication is asynchronous, so writes
    // acknowledged in the last moments before the kill may be lost by Redis itself; count them).
    let mut c = proxy.conn();
    let mut lost = 0;
    for (t, i) in &acked {
        let v: Option<u64> = c.get(format!("{{victim}}:{i}")).unwrap();
        if v != Some(*i) {
            assert!(
                *t < killed_at,
                "write {i} acknowledged after the kill is missing"
            );
            lost += 1;
        }
    }
    eprintln!(
        "failover: {} acknowledged writes, {lost} lost by asynchronous replication before the kill",
        acked.len()
    );
    // The pipelined pushes ran in their order: the list is increasing, and holds every
    // acknowledged one acknowledged after the kill.
    let list: Vec<u64> = c.lrange("{victim}:list", 0, -1).unwrap();
    assert!(
        list.windows(2).all(|w| w[0] < w[1]),
        "pushes out of order: {list:?}"
    );
    let missing = pushed.iter().filter(|i| !list.contains(i)).count();
    eprintln!(
        "failover: {} pushes acknowledged, {missing} missing",
        pushed.len()
    );
    assert!(
        missing <= 10 * 2,
        "{missing} acknowledged pushes missing (at most the rounds just before the kill)"
    );
    let holds: u64 = proxy
        .info_field("proxy_failover_holds")
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!("failover: {holds} request parts held");
    assert!(holds > 0);
    assert!(proxy.log().contains("topology changed"));
}

/// The hold keeps a bounded amount per shard (`failover_hold_max_bytes`): past it, requests
/// for the dead shard fail at once with the error they came back with, while the part already
/// held still reaches the promoted replica.
#[test]
fn a_full_hold_fails_further_requests_for_the_dead_shard_at_once() {
    let mut cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    // One byte: the first part held fills the dead shard's hold (a part fits an empty hold
    // whatever its size); every later one is refused while it waits.
    let conf = support::TempConf::new(
        "[clients]\nfailover_hold_ms = 20000\nfailover_hold_max_bytes = 1\n",
    );
    let proxy = Proxy::cluster(&cluster, &["--config", conf.path()]);
    let victim_port = cluster
        .owner_of_slot(slotgate::router::key_slot(b"victim"))
        .port;
    // Connections first, so that the clients only send once the master is gone.
    let mut clients: Vec<redis::Connection> = (0..10).map(|_| proxy.conn()).collect();
    let mut first = clients.remove(0);
    cluster.node_mut(victim_port).kill();
    std::thread::sleep(Duration::from_millis(300));
    let held = std::thread::spawn(move || {
        first
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let t = Instant::now();
        let r = first.set::<_, _, ()>("{victim}:held", 1);
        (r.map_err(|e| e.to_string()), t.elapsed())
    });
    // Until the first is held (not asked of INFO: its fan-out to the dead master would wait
    // in the hold too).
    std::thread::sleep(Duration::from_millis(500));
    assert!(!held.is_finished(), "the first is held");
    for (i, c) in clients.iter_mut().enumerate() {
        let t = Instant::now();
        let r = c.set::<_, _, ()>(format!("{{victim}}:{i}"), i);
        let e = r
            .expect_err("refused: the shard's hold is full")
            .to_string();
        assert!(e.contains("is unreachable"), "{e}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "refused at once: {:?}",
            t.elapsed()
        );
    }
    // The held one waited for the promotion and ran there.
    let (r, took) = held.join().unwrap();
    assert_eq!(r, Ok(()));
    // (INFO only now: its part for the dead master would have been refused too.)
    assert_eq!(
        proxy.info_field("proxy_failover_holds_refused").as_deref(),
        Some("9")
    );
    assert!(took > Duration::from_millis(500), "{took:?}");
    let v: u64 = proxy.conn().get("{victim}:held").unwrap();
    assert_eq!(v, 1);
    assert_eq!(
        proxy.info_field("proxy_failover_held_bytes").as_deref(),
        Some("0")
    );
    // Other shards were never refused: a key elsewhere answers as usual.
    let other = key_not_on(&cluster, victim_port);
    let () = proxy.conn().set(&other, 7).unwrap();
}

/// Reads a read policy would send to a replica, and the parts of a split command, wait behind
/// the client's held writes of their slot: after a held SET, a GET and an MGET of the key read
/// the new value from the promoted replica, not the old one from the replica that is still up.
#[test]
fn reads_and_split_parts_wait_behind_a_held_write_of_their_slot() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::cluster(&cluster, &["--read-from", "prefer-replica"]);
    let victim_port = cluster
        .owner_of_slot(slotgate::router::key_slot(b"victim"))
        .port;
    let other = key_not_on(&cluster, victim_port);
    let mut c = proxy.conn();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let () = c.set("{victim}:k", "old").unwrap();
    let () = c.set(&other, "o").unwrap();
    cluster.wait_replicas_synced();
    cluster.node_mut(victim_port).kill();
    std::thread::sleep(Duration::from_millis(300));
    // The SET first, alone, so that it is held before the reads arrive.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$10\r\n{victim}:k\r\n$3\r\nnew\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mget = format!(
        "*3\r\n$4\r\nMGET\r\n$10\r\n{{victim}}:k\r\n${}\r\n{other}\r\n",
        other.len()
    );
    raw.write_all(b"*2\r\n$3\r\nGET\r\n$10\r\n{victim}:k\r\n")
        .unwrap();
    raw.write_all(mget.as_bytes()).unwrap();
    let want = b"+OK\r\n$3\r\nnew\r\n*2\r\n$3\r\nnew\r\n$1\r\no\r\n";
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want.len() {
        let n = raw.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // The GET and the MGET's part of the held slot waited behind the SET.
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A key whose slot the master on `port` does not own.
fn key_not_on(cluster: &Cluster, port: u16) -> String {
    (0..1000)
        .map(|i| format!("other:{i}"))
        .find(|k| {
            cluster
                .owner_of_slot(slotgate::router::key_slot(k.as_bytes()))
                .port
                != port
        })
        .unwrap()
}
