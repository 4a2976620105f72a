//! Live resharding under load: slots move between masters by hand (SETSLOT IMPORTING/MIGRATING,
//! MIGRATE, SETSLOT NODE) so that clients hit both ASK and MOVED; no client sees an error and no
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
use std::time::Duration;

use redis::Commands;
use support::{Cluster, Proxy};

const TAGS: [&str; 4] = ["h0", "h1", "h2", "h3"];

#[test]
fn clients_see_no_error_and_lose_no_write_while_slots_move() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let url = proxy.url();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut written = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let tag = TAGS[(i as usize + w) % TAGS.len()];
                    let key = format!("{{{tag}}}:w{w}:{i}");
                    c.set::<_, _, ()>(&key, i)
                        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
                    let v: u64 = c.get(&key).unwrap_or_else(|e| panic!("GET {key}: {e}"));
                    assert_eq!(v, i);
                    // Re-read an older key: it may have moved since it was written.
                    if let Some((k, old)) = written.get(written.len().saturating_sub(50)) {
                        let v: u64 = c.get(k).unwrap_or_else(|e| panic!("GET {k}: {e}"));
                        assert_eq!(v, *old);
                    }
                    // A multi-key write and read within one tag, and one across tags.
                    let k2 = format!("{{{tag}}}:pair:w{w}");
                    let () = redis::cmd("MSET")
                        .arg(&key)
                        .arg(i)
                        .arg(&k2)
                        .arg(i)
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("MSET: {e}"));
                    let other = format!("{{{}}}:w{w}:x", TAGS[(i as usize + w + 1) % TAGS.len()]);
                    let got: Vec<Option<u64>> = redis::cmd("MGET")
                        .arg(&key)
                        .arg(&other)
                        .arg(&k2)
                        .query(&mut c)
                        .unwrap_or_else(|e| panic!("MGET: {e}"));
                    assert_eq!(got[0], Some(i));
                    assert_eq!(got[2], Some(i));
                    written.push((key, i));
                    i += 1;
                }
                written
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Move each tag's slot to the next master, twice round.
    let ports: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    for round in 0..2 {
        for tag in TAGS {
            let slot = slotgate::router::key_slot(tag.as_bytes());
            let from_port = cluster.owner_of_slot(slot).port;
            let to_port = ports
                [(ports.iter().position(|&p| p == from_port).unwrap() + 1 + round) % ports.len()];
            if to_port == from_port {
                continue;
            }
            support::move_slot(
                &cluster,
                slot,
                cluster.node(from_port),
                cluster.node(to_port),
            );
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    let mut c = proxy.conn();
    for w in workers {
        let written = w.join().expect("a client saw an error");
        total += written.len();
        for (k, v) in written {
            let got: u64 = c.get(&k).unwrap();
            assert_eq!(got, v, "{k}");
        }
    }
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    let stat = |name: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    eprintln!(
        "resharding: {total} keys written, MOVED {} ASK {} TRYAGAIN {}",
        stat("proxy_redirects_moved"),
        stat("proxy_redirects_ask"),
        stat("proxy_redirects_tryagain")
    );
    assert!(total > 100);
    assert!(stat("proxy_redirects_moved") > 0, "MOVED exercised");
    assert!(stat("proxy_redirects_ask") > 0, "ASK exercised");
}
