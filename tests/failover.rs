//! A master killed with SIGKILL under load: its replica is promoted and slotgate recovers on its
//! own, with errors bounded to the outage and no acknowledged write lost.
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
fn proxy_recovers_on_its_own_after_a_master_is_killed() {
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
    assert!(proxy.log().contains("topology changed"));
}
