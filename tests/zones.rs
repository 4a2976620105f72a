//! Zones on one machine: a cluster whose masters listen on 127.0.0.1 (zone a) and whose replicas
//! listen on, and announce, 127.0.0.2 (zone b) and 127.0.0.3 (zone c); slotgate maps them by
//! address range and says each node's zone in INFO. Replica reads will choose by these zones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::Duration;

use redis::Commands;
use support::{Cluster, Proxy, TempConf, wait_until};

#[test]
fn nodes_on_three_loopback_addresses_are_placed_in_their_zones() {
    let cluster = Cluster::start_zoned(3, &["127.0.0.2", "127.0.0.3"]);
    // A quick refresh: Redis 7.0 lists a fresh replica as loading in CLUSTER SHARDS at first.
    let conf = TempConf::new("[topology]\nrefresh_interval_ms = 300\n");
    let proxy = Proxy::cluster(
        &cluster,
        &[
            "--config",
            conf.path(),
            "--zone",
            "b",
            "--zone-map",
            "a=127.0.0.1",
            "--zone-map",
            "b=127.0.0.2/32",
            "--zone-map",
            "c=127.0.0.3/32,.zone-c.internal",
        ],
    );
    let mut c = proxy.conn();
    let nodes = || proxy.nodes_section();
    wait_until("every replica listed", Duration::from_secs(20), || {
        nodes()
            .iter()
            .filter(|l| l.contains("role=replica"))
            .count()
            == 6
    });
    let lines = nodes();
    for l in lines.iter().filter(|l| l.contains("role=master")) {
        assert!(
            l.contains("addr=127.0.0.1:") && l.ends_with(",zone=a"),
            "{l}"
        );
    }
    for shard in 0..3 {
        let mut zones: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("node{shard}_replica")))
            .map(|l| l.rsplit_once("zone=").unwrap().1)
            .collect();
        zones.sort_unstable();
        assert_eq!(zones, ["b", "c"], "{lines:?}");
    }
    for l in lines.iter().filter(|l| l.contains("addr=127.0.0.2:")) {
        assert!(l.ends_with("zone=b"), "{l}");
    }
    let info: String = redis::cmd("INFO").arg("proxy").query(&mut c).unwrap();
    assert!(info.contains("proxy_zone:b"), "{info}");
    // Reads and writes still go to the masters.
    let _: () = c.set("zoned", "1").unwrap();
    assert_eq!(c.get::<_, String>("zoned").unwrap(), "1");
}
