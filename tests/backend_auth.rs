//! slotgate in front of Redis servers that want a password: a cluster with `requirepass` and an
//! ACL user for slotgate (discovery, routing, split commands, private and subscriber
//! connections, RESP3, a failover), a standalone server, a Sentinel-watched master; a wrong
//! password fails start-up at once with the server's reason; the password never shows.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::{Cluster, Proxy, Redis, free_port, read_reply, wait_until};

const CLUSTER_PASSWORD: &str = "cluster-secret-4b1d";
const SLOTGATE_PASSWORD: &str = "slotgate-secret-9f3e";

/// A user slotgate logs in as: every key, channel and command.
const SLOTGATE_USER: &[&str] = &[
    "--user",
    "slotgate",
    "on",
    ">slotgate-secret-9f3e",
    "~*",
    "&*",
    "+@all",
];

fn no_secret_in(what: &str, text: &str) {
    for secret in [CLUSTER_PASSWORD, SLOTGATE_PASSWORD] {
        assert!(!text.contains(secret), "{what} shows a password: {text}");
    }
}

#[test]
fn a_cluster_with_a_password_and_an_acl_user_is_fronted_end_to_end() {
    let mut cluster = Cluster::start_with(3, 1, SLOTGATE_USER, Some(CLUSTER_PASSWORD));
    let mut args: Vec<String> = Vec::new();
    for s in cluster.seeds() {
        args.extend(["--seed".to_string(), s]);
    }
    args.extend(["--backend-user".to_string(), "slotgate".to_string()]);
    // The password from the environment, as the README recommends.
    let proxy = Proxy::spawn_env(&args, &[("SLOTGATE_BACKEND_PASSWORD", SLOTGATE_PASSWORD)]);

    // The client needs no password: slotgate logs in to the nodes.
    let mut c = proxy.conn();
    let _: () = c.set("k1", "v1").unwrap();
    assert_eq!(c.get::<_, String>("k1").unwrap(), "v1");
    let _: () = redis::cmd("MSET")
        .arg(&["a", "1", "b", "2", "c", "3", "d", "4"])
        .query(&mut c)
        .unwrap();
    let got: Vec<String> = redis::cmd("MGET")
        .arg(&["a", "b", "c", "d"])
        .query(&mut c)
        .unwrap();
    assert_eq!(got, ["1", "2", "3", "4"]);
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("INCR").arg(format!("n{i}"));
    }
    let counts: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(counts, vec![1; 200]);
    let keys: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(keys, 205);
    let n: i64 = redis::cmd("EVAL")
        .arg("return redis.call('INCRBY', KEYS[1], 5)")
        .arg(1)
        .arg("scripted")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 5);

    // A blocking command on a private connection, woken by another client.
    let mut blocked = proxy.raw();
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$4\r\njobs\r\n$1\r\n0\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _: i64 = c.lpush("jobs", "j1").unwrap();
    assert_eq!(
        read_reply(&mut blocked, &mut Vec::new()),
        redis_protocol::resp2::types::OwnedFrame::Array(vec![
            redis_protocol::resp2::types::OwnedFrame::BulkString(b"jobs".to_vec()),
            redis_protocol::resp2::types::OwnedFrame::BulkString(b"j1".to_vec()),
        ])
    );

    // A subscriber connection.
    let mut sub = proxy.raw();
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nnews\r\n")
        .unwrap();
    let mut sbuf = Vec::new();
    read_reply(&mut sub, &mut sbuf);
    let _: i64 = c.publish("news", "hello").unwrap();
    let msg = read_reply(&mut sub, &mut sbuf);
    assert!(
        format!("{msg:?}").contains("104, 101, 108, 108, 111"),
        "{msg:?}"
    );

    // A RESP3 client: slotgate's RESP3 connections log in too.
    let out = support::run_python(
        "import redis, sys\n\
         r = redis.Redis(port=int(sys.argv[1]), protocol=3)\n\
         r.set('r3', 'x')\n\
         print(r.get('r3').decode(), r.hgetall('missing'))\n",
        proxy.port,
    );
    assert_eq!(out.trim(), "x {}");

    // Every connection slotgate holds to a master is logged in as its user.
    let master = cluster.masters()[0].port;
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cluster.node(master).conn())
        .unwrap();
    let theirs: Vec<&str> = list.lines().filter(|l| !l.contains("cmd=client")).collect();
    assert!(theirs.iter().any(|l| l.contains("user=slotgate")), "{list}");
    assert!(
        theirs
            .iter()
            .all(|l| l.contains("user=slotgate") || l.contains("flags=S")),
        "a connection not logged in as slotgate: {list}"
    );

    // A master killed: the replica takes over, and slotgate's discovery (which logs in too)
    // finds it.
    let victim = cluster
        .owner_of_slot(slotgate::router::key_slot(b"k1"))
        .port;
    cluster.node_mut(victim).kill();
    let killed = Instant::now();
    wait_until(
        "a write to the failed master's slot through slotgate",
        Duration::from_secs(20),
        || proxy.conn().set::<_, _, ()>("k1", "after").is_ok(),
    );
    eprintln!("writes resumed {:?} after the kill", killed.elapsed());
    assert_eq!(proxy.conn().get::<_, String>("k1").unwrap(), "after");

    // The password shows nowhere.
    let info: String = redis::cmd("INFO").arg("everything").query(&mut c).unwrap();
    no_secret_in("INFO", &info);
    no_secret_in("the log", &proxy.log());
}

/// Runs slotgate expecting it to fail at start-up; returns its output and how long it took.
fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "slotgate started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, started.elapsed())
}

#[test]
fn a_standalone_server_with_requirepass_and_wrong_or_missing_passwords() {
    let server = Redis::start_with(free_port(), &[], Some(CLUSTER_PASSWORD));
    let addr = server.addr();

    // Right password: everything works, SELECT included (its connections log in too).
    let proxy = Proxy::spawn(&[
        "--standalone".to_string(),
        addr.clone(),
        "--backend-password".to_string(),
        CLUSTER_PASSWORD.to_string(),
    ]);
    let mut c = proxy.conn();
    let _: () = c.set("s", "0").unwrap();
    let _: () = redis::cmd("SELECT").arg(3).query(&mut c).unwrap();
    let _: () = c.set("s", "3").unwrap();
    let mut direct = server.conn();
    assert_eq!(direct.get::<_, String>("s").unwrap(), "0");
    let _: () = redis::cmd("SELECT").arg(3).query(&mut direct).unwrap();
    assert_eq!(direct.get::<_, String>("s").unwrap(), "3");
    no_secret_in("the log", &proxy.log());

    // Wrong password: start-up fails at once, with the server's reason and without the secret.
    let (text, took) = failed_start(
        &["--standalone", &addr],
        &[("SLOTGATE_BACKEND_PASSWORD", "not-the-password")],
    );
    assert!(text.contains("WRONGPASS"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // No password: the same, saying what to set.
    let (text, took) = failed_start(&["--standalone", &addr], &[]);
    assert!(text.contains("NOAUTH"), "{text}");
    assert!(text.contains("--backend-password"), "{text}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A user without a password is refused by the config check.
    let (text, _) = failed_start(&["--standalone", &addr, "--backend-user", "app"], &[]);
    assert!(text.contains("a user name needs a password"), "{text}");
}

#[test]
fn a_sentinel_group_with_passwords_on_nodes_and_sentinels_is_followed_through_a_failover() {
    const SENTINEL_PASSWORD: &str = "sentinel-secret-31";
    let g = support::SentinelGroup::start_with(
        1,
        3,
        1000,
        Some(CLUSTER_PASSWORD),
        Some(SENTINEL_PASSWORD),
    );
    let conf = support::TempConf::new(&format!("sentinel_password = \"{SENTINEL_PASSWORD}\"\n"));
    let mut args: Vec<String> = vec!["--config".into(), conf.path().into()];
    for s in g.sentinel_addrs() {
        args.extend(["--sentinel".to_string(), s]);
    }
    args.extend(["--master-name".to_string(), "mymaster".to_string()]);
    let proxy = Proxy::spawn_env(&args, &[("SLOTGATE_BACKEND_PASSWORD", CLUSTER_PASSWORD)]);
    let old = g.master_port();
    let mut c = proxy.conn();
    let _: () = c.set("s", "before").unwrap();
    assert_eq!(g.node(old).conn().get::<_, String>("s").unwrap(), "before");
    g.wait_steady();
    let _: String = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("mymaster")
        .query(&mut g.sentinels[0].conn())
        .unwrap();
    wait_until("the new master", Duration::from_secs(20), || {
        g.master_port() != old
    });
    let new = g.master_port();
    // slotgate follows (its ROLE checks log in to the nodes, its Sentinel connections to the
    // Sentinels): a write lands on the new master.
    wait_until("a write on the new master", Duration::from_secs(10), || {
        proxy.conn().set::<_, _, ()>("s", "after").is_ok()
            && g.node(new)
                .conn()
                .get::<_, Option<String>>("s")
                .ok()
                .flatten()
                .as_deref()
                == Some("after")
    });
    no_secret_in("the log", &proxy.log());
    assert!(!proxy.log().contains(SENTINEL_PASSWORD));
}
