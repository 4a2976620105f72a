//! The admin endpoint against a live slotgate in front of a real 3+3 cluster: per-node latency
//! series whose counts match the requests sent, /ready through a master kill and failover,
//! bearer-token auth, and dashboards and alert rules that only use metric names slotgate emits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use support::{Cluster, Proxy, TempConf};

/// A plain HTTP/1.1 GET: (status, body).
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    support::http(port, "GET", path, token)
}

/// `name{labels}` → value, from the Prometheus text format.
fn scrape(port: u16, token: &str) -> HashMap<String, f64> {
    let (status, body) = get(port, "/metrics", Some(token));
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("slotgate_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(str::to_string).unwrap_or(n)
            });
        names.insert(base);
    }
    names
}

#[test]
fn admin_endpoint_reports_per_node_latency_readiness_and_guards_with_a_token() {
    let mut cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let admin_port = support::free_port();
    let conf = std::env::temp_dir().join(format!("slotgate-admin-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        "[admin]\ntoken = \"s3cret\"\ninfo_interval_ms = 300\n[topology]\nrefresh_interval_ms = 500\n",
    )
    .unwrap();
    let proxy = Proxy::cluster(
        &cluster,
        &[
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
            "--config",
            conf.to_str().unwrap(),
            // Zones: slotgate's own, and the nodes' from the map (first match wins).
            "--zone",
            "zone-b",
            "--zone-map",
            "zone-x=10.0.0.0/8",
            "--zone-map",
            "zone-a=127.0.0.0/8,.example.internal",
        ],
    );

    // The strict form of /ready, on a second slotgate.
    let strict_port = support::free_port();
    let strict_conf = TempConf::new(
        "[admin]\nready_requires = \"all-slots\"\n[topology]\nrefresh_interval_ms = 500\n",
    );
    let strict = Proxy::cluster(
        &cluster,
        &[
            "--admin",
            &format!("127.0.0.1:{strict_port}"),
            "--config",
            strict_conf.path(),
        ],
    );

    // Token: /health is open, everything else needs the bearer token.
    assert_eq!(
        get(admin_port, "/health", None),
        (200, "OK\nslots_reachable=16384 of 16384\n".into())
    );
    assert_eq!(get(admin_port, "/metrics", None).0, 401);
    assert_eq!(get(admin_port, "/metrics", Some("wrong")).0, 401);
    assert_eq!(
        get(admin_port, "/ready", Some("s3cret")),
        (200, "ready\n".into())
    );

    // Traffic with known keys: each node's latency series counts exactly its requests.
    let mut c = proxy.conn();
    let owners = cluster.slot_owner_ports();
    let mut sent: HashMap<u16, u64> = HashMap::new();
    for i in 0..3000 {
        let key = format!("obs:{i}");
        let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut c).unwrap();
        *sent
            .entry(owners[slotgate::router::key_slot(key.as_bytes()) as usize])
            .or_default() += 1;
    }
    let m = scrape(admin_port, "s3cret");
    for (port, n) in &sent {
        let series =
            format!("slotgate_backend_request_duration_seconds_count{{node=\"127.0.0.1:{port}\"}}");
        assert_eq!(m.get(&series).copied(), Some(*n as f64), "{series}");
        let reqs = format!("slotgate_backend_requests_total{{node=\"127.0.0.1:{port}\"}}");
        assert_eq!(m.get(&reqs).copied(), Some(*n as f64), "{reqs}");
    }
    let latency_series = m
        .keys()
        .filter(|k| k.starts_with("slotgate_backend_request_duration_seconds_count{"))
        .count();
    assert_eq!(latency_series, 3, "one latency series per backend master");
    assert_eq!(
        m.get("slotgate_commands_total{command=\"set\"}").copied(),
        Some(3000.0)
    );
    assert_eq!(m.get("slotgate_ready").copied(), Some(1.0));
    assert!(
        m.get("slotgate_admin_unauthorized_total")
            .copied()
            .unwrap_or(0.0)
            >= 2.0
    );
    assert!(
        m.keys()
            .any(|k| k.starts_with("slotgate_command_duration_seconds_bucket{command=\"set\",le=")),
        "buckets, not summaries"
    );

    // INFO over RESP carries per-node latency and health; /topology the same as JSON.
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(
        info.contains("# Nodes") && info.contains("p99_us="),
        "{info}"
    );
    // Every node is on 127.0.0.1: zone-a, masters and replicas; slotgate says its own zone.
    // Redis 7.0 reports a replica as "loading" in CLUSTER SHARDS until gossip carries its
    // replication offset, so the replicas come with a later refresh.
    support::wait_until(
        "the replicas in the topology",
        Duration::from_secs(15),
        || {
            let (_, t) = get(admin_port, "/topology", Some("s3cret"));
            let t: serde_json::Value = serde_json::from_str(&t).unwrap();
            t["shards"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|s| s["replicas"].as_array().is_some_and(|r| !r.is_empty()))
            })
        },
    );
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("proxy_zone:zone-b"), "{info}");
    assert_eq!(info.matches(",zone=zone-a\r\n").count(), 6, "{info}");
    assert_eq!(
        info.matches("role=replica,zone=zone-a").count(),
        3,
        "{info}"
    );
    let (status, topo) = get(admin_port, "/topology", Some("s3cret"));
    assert_eq!(status, 200);
    let topo: serde_json::Value = serde_json::from_str(&topo).unwrap();
    assert_eq!(topo["shards"].as_array().unwrap().len(), 3);
    assert!(topo["shards"][0]["master"]["latency_p99_us"].is_u64());
    assert_eq!(topo["zone"], "zone-b");
    for shard in topo["shards"].as_array().unwrap() {
        assert_eq!(shard["master"]["zone"], "zone-a");
        assert_eq!(shard["replicas"][0]["zone"], "zone-a");
    }
    support::wait_until("INFO poll of the backends", Duration::from_secs(10), || {
        scrape(admin_port, "s3cret")
            .keys()
            .any(|k| k.starts_with("slotgate_backend_used_memory_bytes{"))
    });

    // Kill a master: the node's error and connection metrics move, /health and
    // slotgate_slots_reachable report the partial coverage, /ready stays 200 (one shard down
    // must not take every sidecar out of rotation) but turns 503 where all slots are required;
    // after the replica takes over, both are 200 and every slot reachable again.
    let victim = cluster
        .owner_of_slot(slotgate::router::key_slot(b"obs:0"))
        .port;
    cluster.node_mut(victim).kill();
    let node = format!("127.0.0.1:{victim}");
    // The SET that makes slotgate meet the dead node is held (the failover hold) until the
    // replica takes over: sent on a connection of its own that does not wait for it.
    let mut poke = proxy.conn();
    poke.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut strict_poke = redis::Client::open(format!("redis://127.0.0.1:{}", strict.port))
        .unwrap()
        .get_connection()
        .unwrap();
    strict_poke
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // A SET of the victim's key through each slotgate, so that both meet the dead node.
    let set = |conns: [&mut redis::Connection; 2]| {
        for c in conns {
            let _ = redis::cmd("SET").arg("obs:0").arg(1).query::<()>(c);
        }
    };
    support::wait_until(
        "the strict /ready to turn 503",
        Duration::from_secs(10),
        || {
            set([&mut poke, &mut strict_poke]);
            get(strict_port, "/ready", None).0 == 503
                && get(admin_port, "/health", None).1.contains(&node)
        },
    );
    let (_, why) = get(strict_port, "/ready", None);
    assert!(
        why.starts_with("not ready: ")
            && why.contains("slots have a reachable master")
            && why.contains(&node),
        "{why}"
    );
    assert_eq!(
        get(admin_port, "/ready", Some("s3cret")),
        (200, "ready\n".into()),
        "one shard down leaves slotgate ready"
    );
    let health = get(admin_port, "/health", None).1;
    assert!(
        health.starts_with("OK\nslots_reachable=")
            && health.contains(&format!("masters_unreachable={node}")),
        "{health}"
    );
    let m = scrape(admin_port, "s3cret");
    let reachable = m.get("slotgate_slots_reachable").copied().unwrap_or(0.0);
    assert!(
        reachable > 0.0 && reachable < 16384.0,
        "slotgate_slots_reachable {reachable}"
    );
    let errors: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("slotgate_backend_errors_total{") && k.contains(&node))
        .map(|(_, v)| v)
        .sum();
    assert!(errors > 0.0, "errors recorded for {node}");
    assert_eq!(
        m.get(&format!("slotgate_backend_connected{{node=\"{node}\"}}"))
            .copied(),
        Some(0.0)
    );
    support::wait_until(
        "/ready back to 200 after failover",
        Duration::from_secs(30),
        || {
            set([&mut c, &mut strict_poke]);
            get(strict_port, "/ready", None).0 == 200
                && get(admin_port, "/health", None).1 == "OK\nslots_reachable=16384 of 16384\n"
        },
    );
    std::thread::sleep(Duration::from_millis(500));

    // The dashboard and the alert rules use only names slotgate defines and emits.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability");
    let live = metric_names_in(&get(admin_port, "/metrics", Some("s3cret")).1);
    for file in ["grafana-dashboard.json", "slotgate-alerts.yml"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = metric_names_in(&text);
        assert!(!used.is_empty());
        for name in &used {
            assert!(
                slotgate::metrics::names::ALL.contains(&name.as_str()),
                "{file}: {name} is not a slotgate metric"
            );
            assert!(
                live.contains(name),
                "{file}: {name} is not in a live scrape"
            );
        }
    }
    let _ = std::fs::remove_file(&conf);
}
