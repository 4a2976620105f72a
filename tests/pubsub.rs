//! Pub/sub through slotgate against a real cluster: SUBSCRIBE/PSUBSCRIBE with messages published
//! through slotgate, the subscribed-mode command rules, leaving subscribed mode, shard channels,
//! RESP3 pushes, and redis-py's PubSub.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use support::{Cluster, Proxy, read_reply};

fn texts(f: &OwnedFrame) -> Vec<String> {
    support::frame_texts(f)
}

fn send(s: &mut TcpStream, line: &str) {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
}

#[test]
fn subscribers_receive_messages_and_follow_redis_rules() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    send(&mut sub, "SUBSCRIBE news sports");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["subscribe", "news", "1"]
    );
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["subscribe", "sports", "2"]
    );
    send(&mut sub, "PSUBSCRIBE spo*");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["psubscribe", "spo*", "3"]
    );

    // Messages published through slotgate (to any master; the cluster spreads them) arrive.
    let mut c = proxy.conn();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("news")
        .arg("hello")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["message", "news", "hello"]
    );
    let _: i64 = redis::cmd("PUBLISH")
        .arg("sports")
        .arg("goal")
        .query(&mut c)
        .unwrap();
    let mut got = vec![
        texts(&read_reply(&mut sub, &mut buf)),
        texts(&read_reply(&mut sub, &mut buf)),
    ];
    got.sort();
    assert_eq!(
        got,
        vec![
            vec!["message", "sports", "goal"],
            vec!["pmessage", "spo*", "sports", "goal"]
        ]
    );

    // PUBLISH counts the receivers exactly, whichever client sends it (clients' keyless
    // commands spread over the masters; PUBLISH goes where the subscriber connections are), and
    // a second subscriber to the same pattern leaves NUMPAT at one pattern, as on one Redis.
    let mut other = proxy.raw();
    let mut obuf = Vec::new();
    send(&mut other, "PSUBSCRIBE spo*");
    assert_eq!(
        texts(&read_reply(&mut other, &mut obuf)),
        ["psubscribe", "spo*", "1"]
    );
    for _ in 0..6 {
        let mut fresh = proxy.conn();
        let n: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("count")
            .query(&mut fresh)
            .unwrap();
        assert_eq!(n, 1, "news has one subscriber");
        let n: i64 = redis::cmd("PUBLISH")
            .arg("sports")
            .arg("count")
            .query(&mut fresh)
            .unwrap();
        assert_eq!(
            n, 3,
            "sports: one channel subscriber, two pattern subscribers"
        );
        let numpat: i64 = redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query(&mut fresh)
            .unwrap();
        assert_eq!(numpat, 1);
        for _ in 0..3 {
            read_reply(&mut sub, &mut buf);
        }
        read_reply(&mut other, &mut obuf);
    }
    drop(other);

    // In subscribed mode a RESP2 client may only (un)subscribe, PING, QUIT or RESET.
    send(&mut sub, "GET x");
    let e = texts(&read_reply(&mut sub, &mut buf));
    assert!(e[0].contains("Can't execute 'get'"), "{e:?}");
    send(&mut sub, "PING");
    assert_eq!(texts(&read_reply(&mut sub, &mut buf)), ["pong", ""]);

    // Unsubscribing from everything leaves subscribed mode.
    send(&mut sub, "UNSUBSCRIBE");
    let mut unsubs = [
        texts(&read_reply(&mut sub, &mut buf)),
        texts(&read_reply(&mut sub, &mut buf)),
    ];
    unsubs.sort();
    assert_eq!(unsubs[0][0], "unsubscribe");
    send(&mut sub, "PUNSUBSCRIBE");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["punsubscribe", "spo*", "0"]
    );
    send(&mut sub, "SET x 1");
    assert_eq!(texts(&read_reply(&mut sub, &mut buf)), ["OK"]);

    // Shard channels: SSUBSCRIBE on the channel's slot master, SPUBLISH routed by slot.
    let mut ssub = proxy.raw();
    let mut sbuf = Vec::new();
    send(&mut ssub, "SSUBSCRIBE {orders}created");
    assert_eq!(
        texts(&read_reply(&mut ssub, &mut sbuf)),
        ["ssubscribe", "{orders}created", "1"]
    );
    let n: i64 = redis::cmd("SPUBLISH")
        .arg("{orders}created")
        .arg("o-1")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1, "the shard subscriber is on the slot's master");
    assert_eq!(
        texts(&read_reply(&mut ssub, &mut sbuf)),
        ["smessage", "{orders}created", "o-1"]
    );

    // RESP3: messages are pushes, and other commands work while subscribed.
    let mut r3 = proxy.raw();
    r3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    r3.write_all(b"HELLO 3\r\nSUBSCRIBE alerts\r\n").unwrap();
    let mut raw = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&raw).contains("alerts\r\n:1\r\n")
        && std::time::Instant::now() < deadline
    {
        let mut chunk = [0u8; 4096];
        let n = std::io::Read::read(&mut r3, &mut chunk).unwrap();
        raw.extend_from_slice(&chunk[..n]);
    }
    assert!(
        String::from_utf8_lossy(&raw).contains(">3\r\n$9\r\nsubscribe\r\n$6\r\nalerts\r\n:1\r\n"),
        "{}",
        String::from_utf8_lossy(&raw)
    );

    // redis-py's PubSub.
    let script = r#"
import sys, time, redis
r = redis.Redis(port=int(sys.argv[1]), decode_responses=True)
p = r.pubsub()
p.subscribe("py-chan")
assert p.get_message(timeout=2)["type"] == "subscribe"
time.sleep(0.1)
r.publish("py-chan", "hi")
m = p.get_message(timeout=2)
assert m and m["type"] == "message" and m["data"] == "hi", m
p.close()
print("redis-py pubsub ok")
"#;
    support::run_python(script, proxy.port);
}

#[test]
fn subscriptions_survive_the_failover_of_their_node() {
    let mut cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    send(&mut sub, "SUBSCRIBE alerts");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["subscribe", "alerts", "1"]
    );

    // The master holding slotgate's subscriber connection dies.
    let holder = cluster
        .masters()
        .iter()
        .find(|m| {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut m.conn())
                .unwrap();
            list.lines()
                .any(|l| l.contains("cmd=subscribe") && l.contains("flags=P"))
        })
        .map(|m| m.port)
        .expect("a master holds the subscription");
    // A shard channel on the same master, on another client.
    let shard = (0..100)
        .map(|i| format!("{{f{i}}}jobs"))
        .find(|ch| cluster.owner_of_slot(cluster.keyslot(ch)).port == holder)
        .unwrap();
    let mut ssub = proxy.raw();
    let mut sbuf = Vec::new();
    send(&mut ssub, &format!("SSUBSCRIBE {shard}"));
    assert_eq!(
        texts(&read_reply(&mut ssub, &mut sbuf)),
        ["ssubscribe", shard.as_str(), "1"]
    );
    cluster.node_mut(holder).kill();
    support::wait_until("a replica to be promoted", Duration::from_secs(30), || {
        cluster.masters().len() == 3
    });

    // Messages published after the failover reach the client, which saw nothing of it.
    sub.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut c = proxy.conn();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut first = None;
    while first.is_none() && std::time::Instant::now() < deadline {
        let _ = redis::cmd("PUBLISH")
            .arg("alerts")
            .arg("after-failover")
            .query::<i64>(&mut c);
        let mut chunk = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(&mut sub, &mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
            if let Ok(Some((frame, used))) = redis_protocol::resp2::decode::decode(&buf) {
                buf.drain(..used);
                first = Some(texts(&frame));
            }
        }
    }
    assert_eq!(
        first,
        Some(vec![
            "message".to_string(),
            "alerts".to_string(),
            "after-failover".to_string()
        ])
    );
    // The shard channel followed its slot to the promoted replica.
    let mut pc = proxy.conn();
    wait_for_frame(
        &mut ssub,
        &mut sbuf,
        || {
            let _ = redis::cmd("SPUBLISH")
                .arg(&shard)
                .arg("after-failover")
                .query::<i64>(&mut pc);
        },
        &["smessage", &shard, "after-failover"],
    );
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected_not_buffered_without_bound() {
    let cluster = Cluster::start(3, 0);
    // slotgate's own bound is under test: the nodes' pubsub output limit (32 MB) is lifted, or
    // on a loaded machine a node could cut slotgate's subscriber connection first (slotgate
    // then subscribes again and the client never learns it lost messages).
    for m in cluster.masters() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("client-output-buffer-limit")
            .arg("pubsub 0 0 0")
            .query(&mut m.conn())
            .unwrap();
    }
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    send(&mut sub, "SUBSCRIBE firehose");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["subscribe", "firehose", "1"]
    );
    // 96 MiB of messages while the subscriber reads nothing.
    let mut c = proxy.conn();
    let payload = vec![b'x'; 1024 * 1024];
    for _ in 0..96 {
        let _: i64 = redis::cmd("PUBLISH")
            .arg("firehose")
            .arg(&payload[..])
            .query(&mut c)
            .unwrap();
    }
    // Reading now finds the connection closed after at most the limit plus socket buffers.
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut total = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    loop {
        match std::io::Read::read(&mut sub, &mut chunk) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) => panic!("the slow subscriber was not disconnected: {e} after {total} bytes"),
        }
    }
    assert!(
        total < 64 * 1024 * 1024,
        "{total} bytes buffered for a subscriber that did not read"
    );
    // The proxy still serves everyone else.
    let _: () = redis::cmd("SET")
        .arg("still")
        .arg("up")
        .query(&mut c)
        .unwrap();
}

/// SPUBLISH `msg` on `ch` through slotgate: one subscriber receives it, on `sub`.
fn spublish_reaches(
    c: &mut redis::Connection,
    sub: &mut TcpStream,
    buf: &mut Vec<u8>,
    ch: &str,
    msg: &str,
) {
    let n: i64 = redis::cmd("SPUBLISH").arg(ch).arg(msg).query(c).unwrap();
    assert_eq!(n, 1);
    assert_eq!(texts(&read_reply(sub, buf)), ["smessage", ch, msg]);
}

/// Fails unless a connection on `node` is subscribed to a shard channel.
fn assert_holds_shard_subscription(node: &support::Redis) {
    let holders: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut node.conn())
        .unwrap();
    assert!(
        holders.lines().any(|l| l.contains("cmd=ssubscribe")),
        "the new owner holds the subscription: {holders}"
    );
}

/// Reads frames until one satisfies `want`, failing on any `sunsubscribe` the client did not
/// ask for; `poke` runs between reads (it publishes).
fn wait_for_frame(
    sub: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut poke: impl FnMut(),
    want: &[&str],
) -> Vec<Vec<String>> {
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while std::time::Instant::now() < deadline {
        poke();
        let mut chunk = [0u8; 4096];
        if let Ok(n) = std::io::Read::read(sub, &mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        while let Ok(Some((frame, used))) = redis_protocol::resp2::decode::decode(buf) {
            buf.drain(..used);
            let t = texts(&frame);
            assert_ne!(
                t[0], "sunsubscribe",
                "the client saw slotgate's repair: {t:?}"
            );
            let done = t == want;
            seen.push(t);
            if done {
                sub.set_read_timeout(None).unwrap();
                return seen;
            }
        }
    }
    panic!("never got {want:?}; saw {seen:?}");
}

#[test]
fn shard_channels_span_masters_follow_slot_moves_and_pubsub_introspection_merges() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    // Two shard channels whose slots live on different masters.
    let names: Vec<String> = (0..50).map(|i| format!("{{t{i}}}events")).collect();
    let first = names[0].clone();
    let owner = |ch: &str| cluster.owner_of_slot(cluster.keyslot(ch)).port;
    let second = names
        .iter()
        .find(|n| owner(n) != owner(&first))
        .unwrap()
        .clone();
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    send(&mut sub, &format!("SSUBSCRIBE {first}"));
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["ssubscribe", first.as_str(), "1"]
    );
    send(&mut sub, &format!("SSUBSCRIBE {second}"));
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["ssubscribe", second.as_str(), "2"],
        "counts are the client's total, as one server counts them"
    );
    let mut plain = proxy.raw();
    let mut pbuf = Vec::new();
    send(&mut plain, "SUBSCRIBE news");
    read_reply(&mut plain, &mut pbuf);
    send(&mut plain, "PSUBSCRIBE n*");
    read_reply(&mut plain, &mut pbuf);

    // PUBSUB introspection sees every master's subscribers.
    let mut c = proxy.conn();
    let mut shard_channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("SHARDCHANNELS")
        .query(&mut c)
        .unwrap();
    shard_channels.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(shard_channels, expected);
    let counts: Vec<redis::Value> = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(&first)
        .arg(&second)
        .arg("nobody")
        .query(&mut c)
        .unwrap();
    let counts: Vec<String> = counts
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::Int(i) => i.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(counts, [&first, "1", &second, "1", "nobody", "0"]);
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut c).unwrap();
    assert_eq!(channels, ["news"]);
    let numpat: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut c).unwrap();
    assert_eq!(numpat, 1);

    // Messages reach both channels.
    for ch in [&first, &second] {
        spublish_reaches(&mut c, &mut sub, &mut buf, ch, "before");
    }

    // The first channel's slot moves to the master holding neither channel; Redis tells the
    // subscriber `sunsubscribe`, slotgate hides it and subscribes again at the new owner.
    let slot = cluster.keyslot(&first);
    let from = cluster.owner_of_slot(slot);
    let to = cluster
        .masters()
        .into_iter()
        .find(|m| m.port != owner(&first) && m.port != owner(&second))
        .unwrap();
    let to_port = to.port;
    support::move_slot(&cluster, slot, from, to);
    let mut pc = proxy.conn();
    let seen = wait_for_frame(
        &mut sub,
        &mut buf,
        || {
            let _ = redis::cmd("SPUBLISH")
                .arg(&first)
                .arg("after-move")
                .query::<i64>(&mut pc);
        },
        &["smessage", &first, "after-move"],
    );
    assert!(seen.iter().all(|f| f[0] == "smessage"), "{seen:?}");
    assert_holds_shard_subscription(cluster.node(to_port));

    // Leaving every shard channel at once answers for each, and leaves subscribed mode.
    send(&mut sub, "SUNSUBSCRIBE");
    let mut left = [
        texts(&read_reply(&mut sub, &mut buf)),
        texts(&read_reply(&mut sub, &mut buf)),
    ];
    left.sort_by(|a, b| b[2].cmp(&a[2]));
    assert_eq!(left[0][0], "sunsubscribe");
    assert_eq!(left[0][2], "1");
    assert_eq!(left[1][2], "0");
    send(&mut sub, "SET after-shards 1");
    assert_eq!(texts(&read_reply(&mut sub, &mut buf)), ["OK"]);
    send(&mut sub, "SUNSUBSCRIBE");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["sunsubscribe", "(nil)", "0"]
    );
}

#[test]
fn a_shard_subscription_that_meets_a_moved_slot_is_followed_for_the_client() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let mut c = proxy.conn();
    let _: () = redis::cmd("SET")
        .arg("warm")
        .arg("1")
        .query(&mut c)
        .unwrap();
    // The channel's slot moves behind slotgate's back: its map still names the old owner.
    let ch = "{moved}feed";
    let slot = cluster.keyslot(ch);
    let from = cluster.owner_of_slot(slot);
    let to = cluster
        .masters()
        .into_iter()
        .find(|m| m.port != from.port)
        .unwrap();
    let to_port = to.port;
    support::move_slot(&cluster, slot, from, to);
    // The old owner answers MOVED; slotgate follows it and the client sees only its
    // confirmation.
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    send(&mut sub, &format!("SSUBSCRIBE {ch}"));
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["ssubscribe", ch, "1"]
    );
    assert_holds_shard_subscription(cluster.node(to_port));
    spublish_reaches(&mut c, &mut sub, &mut buf, ch, "hello");
}

/// Reads frames off `sub` until `done` says the collection is complete, then 300 ms more (a
/// duplicate would show then); fails after 10 s.
fn collect_frames(
    sub: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut done: impl FnMut(&[Vec<String>]) -> bool,
) -> Vec<Vec<String>> {
    sub.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut settle: Option<std::time::Instant> = None;
    loop {
        let now = std::time::Instant::now();
        if settle.is_some_and(|t| now >= t) {
            break;
        }
        assert!(now < deadline, "incomplete after 10 s: {seen:?}");
        let mut chunk = [0u8; 65536];
        if let Ok(n) = std::io::Read::read(sub, &mut chunk) {
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        while let Ok(Some((frame, used))) = redis_protocol::resp2::decode::decode(buf) {
            buf.drain(..used);
            seen.push(texts(&frame));
        }
        if settle.is_none() && done(&seen) {
            settle = Some(std::time::Instant::now() + Duration::from_millis(300));
        }
    }
    sub.set_read_timeout(None).unwrap();
    seen
}

/// Keys that together live on every master of `cluster`.
fn keys_on_every_master(cluster: &Cluster) -> Vec<String> {
    let keys: Vec<String> = (0..24).map(|i| format!("ev-{i}")).collect();
    let mut owners: Vec<u16> = keys
        .iter()
        .map(|k| cluster.owner_of_slot(cluster.keyslot(k)).port)
        .collect();
    owners.sort_unstable();
    owners.dedup();
    assert_eq!(
        owners.len(),
        cluster.masters().len(),
        "spread the keys wider"
    );
    keys
}

/// What a subscriber to `*` sees for: SET of every key, DEL of the first, PUBLISH news.
fn keyspace_session(
    sub: &mut TcpStream,
    buf: &mut Vec<u8>,
    c: &mut redis::Connection,
    keys: &[String],
) -> Vec<Vec<String>> {
    send(sub, "PSUBSCRIBE *");
    assert_eq!(texts(&read_reply(sub, buf)), ["psubscribe", "*", "1"]);
    for k in keys {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(c).unwrap();
    }
    let _: i64 = redis::cmd("DEL").arg(&keys[0]).query(c).unwrap();
    let _: i64 = redis::cmd("PUBLISH").arg("news").arg("n").query(c).unwrap();
    // Per SET: a keyspace and a keyevent message; the DEL two more; one message on news.
    let want = 2 * keys.len() + 2 + 1;
    let mut seen = collect_frames(sub, buf, |s| s.len() >= want);
    seen.sort();
    seen
}

#[test]
fn keyspace_notifications_of_every_master_reach_the_client_once_as_one_redis_sends_them() {
    let events = ["--notify-keyspace-events", "KEA"];
    let cluster = Cluster::start_with(3, 0, &events, None);
    let proxy = Proxy::cluster(&cluster, &[]);
    let keys = keys_on_every_master(&cluster);

    // The same session against one real Redis and through slotgate: the same frames, each once
    // (the connections to the other masters hide the PUBLISH every node delivers).
    let single = support::Redis::start(&events);
    let mut rsub = TcpStream::connect(single.addr()).unwrap();
    let mut rbuf = Vec::new();
    let expected = keyspace_session(&mut rsub, &mut rbuf, &mut single.conn(), &keys);
    let mut sub = proxy.raw();
    let mut buf = Vec::new();
    let got = keyspace_session(&mut sub, &mut buf, &mut proxy.conn(), &keys);
    assert_eq!(got, expected);
    assert!(
        expected
            .iter()
            .any(|f| f == &["pmessage", "*", "__keyevent@0__:del", keys[0].as_str()])
    );

    // Leaving stops the events of every master.
    send(&mut sub, "PUNSUBSCRIBE");
    assert_eq!(
        texts(&read_reply(&mut sub, &mut buf)),
        ["punsubscribe", "*", "0"]
    );

    // Keyspace channels of keys on every master.
    let mut c = proxy.conn();
    let mut ksub = proxy.raw();
    let mut kbuf = Vec::new();
    let channels: Vec<String> = keys.iter().map(|k| format!("__keyspace@0__:{k}")).collect();
    send(&mut ksub, &format!("SUBSCRIBE {}", channels.join(" ")));
    for (i, ch) in channels.iter().enumerate() {
        let n = (i + 1).to_string();
        assert_eq!(
            texts(&read_reply(&mut ksub, &mut kbuf)),
            ["subscribe", ch.as_str(), n.as_str()]
        );
    }
    for k in &keys {
        let _: i64 = redis::cmd("INCR")
            .arg(format!("{k}-other"))
            .query(&mut c)
            .unwrap();
        let _: i64 = redis::cmd("DEL").arg(k).query(&mut c).unwrap();
    }
    let mut seen = collect_frames(&mut ksub, &mut kbuf, |s| s.len() >= keys.len() - 1);
    seen.sort();
    let mut want: Vec<Vec<String>> = channels[1..]
        .iter()
        .map(|ch| vec!["message".into(), ch.clone(), "del".into()])
        .collect();
    want.sort();
    assert_eq!(
        seen, want,
        "ev-0 was deleted already; no other key's events"
    );

    // Leaving closes the subscriptions on every master.
    send(&mut ksub, "UNSUBSCRIBE");
    for _ in &channels {
        assert_eq!(texts(&read_reply(&mut ksub, &mut kbuf))[0], "unsubscribe");
    }
    support::wait_until(
        "no subscription left on any master",
        Duration::from_secs(10),
        || {
            cluster.masters().iter().all(|m| {
                let mut mc = m.conn();
                let pats: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query(&mut mc).unwrap();
                let chans: Vec<String> =
                    redis::cmd("PUBSUB").arg("CHANNELS").query(&mut mc).unwrap();
                pats == 0 && chans.is_empty()
            })
        },
    );

    // RESP3 (redis-py 8, pushes) sees every master's events too.
    let script = r#"
import sys, time, redis
r = redis.Redis(port=int(sys.argv[1]), protocol=3, decode_responses=True)
p = r.pubsub()
p.psubscribe("__keyevent@0__:*")
assert p.get_message(timeout=2)["type"] == "psubscribe"
keys = [f"ev-{i}" for i in range(24)]
for k in keys:
    r.set(k, "3")
got = set()
deadline = time.time() + 10
while len(got) < len(keys) and time.time() < deadline:
    m = p.get_message(timeout=1)
    if m and m["type"] == "pmessage":
        assert m["channel"] == "__keyevent@0__:set", m
        assert m["data"] not in got, ("twice", m)
        got.add(m["data"])
assert got == set(keys), sorted(set(keys) - got)
p.close()
print("redis-py resp3 keyspace events ok")
"#;
    support::run_python(script, proxy.port);
}
