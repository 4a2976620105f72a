//! slotgate in front of a Redis Cluster that speaks TLS only (`port 0`, `tls-port`,
//! `tls-cluster yes`, `tls-auth-clients yes`) and wants a password, as a managed service with
//! in-transit encryption and an AUTH token does: discovery, routing, split commands, blocking
//! and pub/sub connections, a resharding and a failover, all over TLS with a client
//! certificate; the nodes' certificate checked (a CA that did not sign it is refused).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redis::Commands;
use support::{Certs, Proxy, free_port, read_reply, wait_until};

const PASSWORD: &str = "tls-cluster-secret";

/// A redis-server reachable over TLS only.
struct TlsNode {
    port: u16,
    child: Option<Child>,
    dir: std::path::PathBuf,
}

impl TlsNode {
    fn start(certs: &Certs) -> TlsNode {
        Self::spawn(certs, support::CLUSTER_NODE_ARGS)
    }

    /// A TLS-only, password-protected redis-server with `extra` arguments (a cluster node, or
    /// a standalone master or replica).
    fn spawn(certs: &Certs, extra: &[&str]) -> TlsNode {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("slotgate-tls-node-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--tls-cert-file", &certs.path("server.crt")])
            .args(["--tls-key-file", &certs.path("server.key")])
            .args(["--tls-ca-cert-file", &certs.path("ca.crt")])
            .args(["--tls-auth-clients", "yes", "--tls-cluster", "yes"])
            .args(["--tls-replication", "yes"])
            .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD])
            .args(extra)
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let node = TlsNode {
            port,
            child: Some(child),
            dir,
        };
        wait_until("a TLS node", Duration::from_secs(10), || {
            cli(certs, port, &["PING"]).trim() == "PONG"
        });
        node
    }

    /// A Sentinel reachable over TLS only, with the same password, watching `master` (over
    /// TLS as well) as `mymaster`.
    fn sentinel(certs: &Certs, master: u16) -> TlsNode {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("slotgate-tls-sentinel-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port 0\ntls-port {port}\nbind 127.0.0.1\n\
                 tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
                 tls-auth-clients yes\ntls-replication yes\nrequirepass {PASSWORD}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                 sentinel auth-pass mymaster {PASSWORD}\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n\
                 dir {}\nlogfile {}\n",
                certs.path("server.crt"),
                certs.path("server.key"),
                certs.path("ca.crt"),
                dir.display(),
                dir.join("sentinel.log").display(),
            ),
        )
        .unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel must be installed");
        let node = TlsNode {
            port,
            child: Some(child),
            dir,
        };
        wait_until("a TLS Sentinel", Duration::from_secs(10), || {
            cli(certs, port, &["PING"]).trim() == "PONG"
        });
        node
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `redis-cli` over TLS, with the client certificate and the password.
fn cli_output(certs: &Certs, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["--tls", "--cacert", &certs.path("ca.crt")])
        .args(["--cert", &certs.path("client.crt")])
        .args(["--key", &certs.path("client.key")])
        .args(["--no-auth-warning", "-a", PASSWORD])
        .args(args)
        .output()
        .expect("redis-cli must be installed")
}

fn cli(certs: &Certs, port: u16, args: &[&str]) -> String {
    let mut all = vec!["-p".to_string(), port.to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    String::from_utf8_lossy(&cli_output(certs, &all).stdout).into_owned()
}

fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}:"))
            .map(|v| v.trim().to_string())
    })
}

fn slotgate_args(certs: &Certs, nodes: &[TlsNode], ca: &str) -> Vec<String> {
    let mut args = vec![
        "--backend-tls".to_string(),
        "--backend-ca".to_string(),
        certs.path(ca),
        "--backend-cert".to_string(),
        certs.path("client.crt"),
        "--backend-key".to_string(),
        certs.path("client.key"),
    ];
    for n in nodes.iter().take(2) {
        args.extend(["--seed".to_string(), n.addr()]);
    }
    args
}

#[test]
fn a_tls_only_cluster_with_a_password_is_fronted_through_a_resharding_and_a_failover() {
    let certs = Certs::generate();
    let mut nodes: Vec<TlsNode> = (0..6).map(|_| TlsNode::start(&certs)).collect();
    let mut create = vec!["--cluster", "create"];
    let addrs: Vec<String> = nodes.iter().map(TlsNode::addr).collect();
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
    let out = cli_output(&certs, &create);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until("the TLS cluster ok", Duration::from_secs(30), || {
        nodes.iter().all(|n| {
            let info = cli(&certs, n.port, &["CLUSTER", "INFO"]);
            field(&info, "cluster_state").as_deref() == Some("ok")
                && field(&info, "cluster_known_nodes").as_deref() == Some("6")
        })
    });

    wait_until(
        "the replicas in sync over TLS",
        Duration::from_secs(30),
        || {
            nodes.iter().all(|n| {
                let info = cli(&certs, n.port, &["INFO", "replication"]);
                field(&info, "role").as_deref() == Some("master")
                    || field(&info, "master_link_status").as_deref() == Some("up")
            })
        },
    );

    let proxy = Proxy::spawn_env(
        &slotgate_args(&certs, &nodes, "ca.crt"),
        &[("SLOTGATE_BACKEND_PASSWORD", PASSWORD)],
    );
    let mut c = proxy.conn();
    for i in 0..300 {
        let _: () = c.set(format!("key{i}"), i).unwrap();
    }
    let got: Vec<i64> = redis::cmd("MGET")
        .arg((0..300).map(|i| format!("key{i}")).collect::<Vec<_>>())
        .query(&mut c)
        .unwrap();
    assert_eq!(got, (0..300).collect::<Vec<i64>>());
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(size, 300);

    // Blocking and pub/sub connections are TLS connections too.
    let mut blocked = proxy.raw();
    blocked
        .write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$1\r\n0\r\n")
        .unwrap();
    let mut sub = proxy.raw();
    sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n")
        .unwrap();
    let mut sbuf = Vec::new();
    read_reply(&mut sub, &mut sbuf);
    std::thread::sleep(Duration::from_millis(200));
    let _: i64 = c.lpush("q", "job").unwrap();
    let _: i64 = c.publish("ch", "over-tls").unwrap();
    assert!(format!("{:?}", read_reply(&mut blocked, &mut Vec::new())).contains("106, 111, 98"));
    assert!(format!("{:?}", read_reply(&mut sub, &mut sbuf)).contains("111, 118, 101, 114"));

    // A resharding over TLS (redis-cli moves 200 slots of the first master to the second)
    // while a client writes: MOVED and ASK name TLS ports, and slotgate follows them.
    let ids: Vec<(String, String)> = cli(&certs, nodes[0].port, &["CLUSTER", "NODES"])
        .lines()
        .filter(|l| l.contains("master"))
        .map(|l| {
            let mut w = l.split(' ');
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let writer = {
        let url = proxy.url();
        std::thread::spawn(move || {
            let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
            let mut errors = 0;
            for i in 0..1500 {
                if c.set::<_, _, ()>(format!("during{i}"), i).is_err() {
                    errors += 1;
                }
            }
            errors
        })
    };
    let from = ids[0].1.split('@').next().unwrap().to_string();
    let out = cli_output(
        &certs,
        &[
            "--cluster",
            "reshard",
            &from,
            "--cluster-from",
            &ids[0].0,
            "--cluster-to",
            &ids[1].0,
            "--cluster-slots",
            "200",
            "--cluster-yes",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let errors = writer.join().unwrap();
    assert_eq!(errors, 0, "client errors during the resharding");
    for i in (0..1500).step_by(7) {
        assert_eq!(c.get::<_, i64>(format!("during{i}")).unwrap(), i);
    }

    // A master SIGKILLed: its replica is promoted, and slotgate finds it over TLS.
    let victim_port: u16 = from.rsplit(':').next().unwrap().parse().unwrap();
    let victim = nodes.iter_mut().find(|n| n.port == victim_port).unwrap();
    victim.kill();
    let killed = Instant::now();
    wait_until(
        "every key readable again after the failover",
        Duration::from_secs(20),
        || {
            let mut c = proxy.conn();
            (0..300).all(|i| match c.get::<_, i64>(format!("key{i}")) {
                Ok(v) => v == i,
                Err(e) => {
                    eprintln!("key{i}: {e}");
                    false
                }
            })
        },
    );
    eprintln!("all keys readable {:?} after the kill", killed.elapsed());
    let _: () = c.set("after", "failover").unwrap();
    assert!(!proxy.log().contains(PASSWORD));

    // A CA that did not sign the nodes' certificate: the handshake fails, and start-up says
    // so instead of serving.
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(slotgate_args(&certs, &nodes[1..], "other-ca.crt"))
        .env("SLOTGATE_BACKEND_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("certificate"), "{text}");
}

#[test]
fn a_tls_only_sentinel_group_with_passwords_is_followed_through_a_failover() {
    let certs = Certs::generate();
    let master = TlsNode::spawn(&certs, &[]);
    let mport = master.port.to_string();
    let replica = TlsNode::spawn(&certs, &["--replicaof", "127.0.0.1", &mport]);
    wait_until("the replica in sync", Duration::from_secs(20), || {
        field(
            &cli(&certs, replica.port, &["INFO", "replication"]),
            "master_link_status",
        )
        .as_deref()
            == Some("up")
    });
    let sentinels: Vec<TlsNode> = (0..3)
        .map(|_| TlsNode::sentinel(&certs, master.port))
        .collect();
    wait_until(
        "the Sentinels to know each other and the replica",
        Duration::from_secs(30),
        || {
            sentinels.iter().all(|s| {
                let others = cli(&certs, s.port, &["SENTINEL", "SENTINELS", "mymaster"]);
                let replicas = cli(&certs, s.port, &["SENTINEL", "REPLICAS", "mymaster"]);
                others.matches("runid").count() == 2 && replicas.matches("runid").count() == 1
            })
        },
    );
    let conf = support::TempConf::new(&format!("sentinel_password = \"{PASSWORD}\"\n"));
    let mut args = vec![
        "--config".to_string(),
        conf.path().to_string(),
        "--master-name".to_string(),
        "mymaster".to_string(),
    ];
    // Only the TLS settings of slotgate_args; the seeds are Sentinels here.
    args.extend(slotgate_args(&certs, &[], "ca.crt"));
    for s in &sentinels {
        args.extend(["--sentinel".to_string(), s.addr()]);
    }
    let proxy = Proxy::spawn_env(&args, &[("SLOTGATE_BACKEND_PASSWORD", PASSWORD)]);
    let mut c = proxy.conn();
    let _: () = c.set("s", "before").unwrap();
    assert_eq!(cli(&certs, master.port, &["GET", "s"]).trim(), "before");
    let where_master = |s: &TlsNode| {
        cli(
            &certs,
            s.port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
        )
    };
    assert!(where_master(&sentinels[0]).contains(&mport));
    let reply = cli(
        &certs,
        sentinels[0].port,
        &["SENTINEL", "FAILOVER", "mymaster"],
    );
    assert_eq!(reply.trim(), "OK", "{reply}");
    let rport = replica.port.to_string();
    wait_until("the replica promoted", Duration::from_secs(30), || {
        where_master(&sentinels[0]).contains(&rport)
    });
    // slotgate hears it from the Sentinels over TLS and checks the new master's ROLE over TLS:
    // a write lands on the promoted replica.
    wait_until("a write on the new master", Duration::from_secs(15), || {
        proxy.conn().set::<_, _, ()>("s", "after").is_ok()
            && cli(&certs, replica.port, &["GET", "s"]).trim() == "after"
    });
    assert!(!proxy.log().contains(PASSWORD));
}
