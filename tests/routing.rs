//! Routing and pipelining through slotgate against a real 3-master/3-replica cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::io::Write;

use redis::Commands;
use support::{Cluster, Proxy, read_reply};

fn key(i: usize) -> String {
    match i % 4 {
        0 => format!("{{user{}}}.profile.{i}", i % 97),
        1 => format!("{{user{}}}.k{i}", i % 97),
        _ => format!("key:{i}:{}", i * 7919),
    }
}

#[test]
fn ten_thousand_keys_land_on_their_slot_owner_and_read_back() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();
    let n = 10_000;
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.set(key(i), format!("v{i}")).ignore();
    }
    let () = pipe.query(&mut c).unwrap();

    // Read back through the proxy, in one pipeline.
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.get(key(i));
    }
    let got: Vec<String> = pipe.query(&mut c).unwrap();
    for (i, v) in got.iter().enumerate() {
        assert_eq!(v, &format!("v{i}"));
    }

    // Check directly on each node: every key is on the master that owns its slot.
    let mut by_owner: HashMap<u16, Vec<usize>> = HashMap::new();
    let owners = cluster.slot_owner_ports();
    for i in 0..n {
        let owner = owners[slotgate::router::key_slot(key(i).as_bytes()) as usize];
        by_owner.entry(owner).or_default().push(i);
    }
    assert_eq!(by_owner.len(), 3, "keys spread over all three masters");
    for (port, keys) in by_owner {
        let node = cluster.nodes.iter().find(|n| n.port == port).unwrap();
        let mut direct = node.conn();
        let mut pipe = redis::pipe();
        for &i in &keys {
            pipe.get(key(i));
        }
        let got: Vec<Option<String>> = pipe.query(&mut direct).unwrap();
        for (&i, v) in keys.iter().zip(got) {
            assert_eq!(v, Some(format!("v{i}")), "key {} on node {port}", key(i));
        }
    }
}

#[test]
fn one_write_of_mixed_commands_gets_every_reply_in_order_and_many_clients_at_once() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::cluster(&cluster, &[]);

    // 5,000 mixed commands over many slots in a single write.
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for i in 0..5_000usize {
        let k = key(i);
        match i % 5 {
            0 => {
                wire.extend(
                    format!(
                        "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n${}\r\n{i}\r\n",
                        k.len(),
                        i.to_string().len()
                    )
                    .bytes(),
                );
                expect.push("OK".to_string());
            }
            1 => {
                wire.extend(
                    format!(
                        "*2\r\n$4\r\nINCR\r\n${}\r\nctr:{i}\r\n",
                        4 + i.to_string().len()
                    )
                    .bytes(),
                );
                expect.push("1".to_string());
            }
            2 => {
                wire.extend(b"*1\r\n$4\r\nPING\r\n");
                expect.push("PONG".to_string());
            }
            3 => {
                wire.extend(
                    format!(
                        "*2\r\n$6\r\nEXISTS\r\n${}\r\n{}\r\n",
                        key(i - 3).len(),
                        key(i - 3)
                    )
                    .bytes(),
                );
                expect.push("1".to_string());
            }
            _ => {
                wire.extend(
                    format!(
                        "*2\r\n$3\r\nGET\r\n${}\r\n{}\r\n",
                        key(i - 4).len(),
                        key(i - 4)
                    )
                    .bytes(),
                );
                expect.push((i - 4).to_string());
            }
        }
    }
    let mut s = proxy.raw();
    s.write_all(&wire).unwrap();
    let mut buf = Vec::new();
    for (i, want) in expect.iter().enumerate() {
        let got = read_reply(&mut s, &mut buf);
        let got = match got {
            redis_protocol::resp2::types::OwnedFrame::SimpleString(b)
            | redis_protocol::resp2::types::OwnedFrame::BulkString(b) => {
                String::from_utf8(b).unwrap()
            }
            redis_protocol::resp2::types::OwnedFrame::Integer(n) => n.to_string(),
            other => panic!("reply {i}: {other:?}"),
        };
        assert_eq!(&got, want, "reply {i}");
    }

    // 32 concurrent clients, each pipelining its own keys.
    let url = proxy.url();
    let handles: Vec<_> = (0..32)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                for round in 0..20 {
                    let mut pipe = redis::pipe();
                    for j in 0..50 {
                        pipe.set(format!("t{t}:{j}"), round * 1000 + j).ignore();
                        pipe.get(format!("t{t}:{j}"));
                    }
                    let got: Vec<i64> = pipe.query(&mut c).unwrap();
                    let want: Vec<i64> = (0..50).map(|j| round * 1000 + j).collect();
                    assert_eq!(got, want);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let mut c = proxy.conn();
    let total: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let direct: i64 = cluster
        .masters()
        .iter()
        .map(|m| redis::cmd("DBSIZE").query::<i64>(&mut m.conn()).unwrap())
        .sum();
    assert_eq!(total, direct);
    let _: () = c.set("last", 1).unwrap();
}

#[test]
fn a_pipeline_over_every_master_is_answered_in_one_write() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    // 30 GETs of missing keys over many slots (so on every master), sent in one write: the
    // replies come from three connections at different moments, and slotgate holds the ready
    // ones until the batch is whole, so one read sees all of them.
    let keys: Vec<String> = (0..30).map(|i| format!("missing:{i}")).collect();
    let slots: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| redis_protocol::redis_keyslot(k.as_bytes()))
        .collect();
    assert!(slots.iter().any(|&s| s < 5461) && slots.iter().any(|&s| s > 10922));
    let mut wire = Vec::new();
    for k in &keys {
        wire.extend(format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).bytes());
    }
    let want = "$-1\r\n".repeat(keys.len());
    let mut s = proxy.raw();
    for round in 0..20 {
        s.write_all(&wire).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            want,
            "round {round}: the first read got only part of the pipeline's replies"
        );
    }
}
