//! Test harness: real `redis-server` processes and clusters on free loopback ports, and the
//! slotgate binary in front of them. Every process started here is killed when its handle is
//! dropped, also when the test fails.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A port whose cluster bus port (+10000) is also free, both below the ephemeral range.
pub fn free_port() -> u16 {
    if NEXT_PORT.load(Ordering::SeqCst) == 0 {
        let seed = (std::process::id() as u64)
            .wrapping_mul(2654435761)
            .wrapping_add(Instant::now().elapsed().as_nanos() as u64 ^ nanos());
        let base = 12000 + (seed % 9000) as u16;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let mut p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if p >= 22000 {
            NEXT_PORT.store(12000, Ordering::SeqCst);
            p = 12000;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "slotgate-test-{}-{tag}-{}",
        std::process::id(),
        nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `redis-server` process.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        let port = free_port();
        Self::start_on(port, extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let dir = scratch_dir(&format!("redis{port}"));
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut r = Redis {
            port,
            child: None,
            dir,
            args,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_until(&format!("redis on {port}"), Duration::from_secs(10), || {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// SIGKILL, the way a crashed node goes.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again on the same port and directory (keeps `nodes.conf`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A field of `INFO <section>`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn())
            .ok()?;
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }

    /// How many times `cmd` ran on this node (from `INFO commandstats`).
    pub fn calls(&self, cmd: &str) -> u64 {
        self.info_field("commandstats", &format!("cmdstat_{cmd}"))
            .and_then(|v| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix("calls=").and_then(|n| n.parse().ok()))
            })
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of real nodes on loopback.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each, all slots assigned, state ok.
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        let total = masters * (1 + replicas);
        let nodes: Vec<Redis> = (0..total)
            .map(|_| {
                Redis::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// Waits until every running node says the cluster is ok and knows every other node.
    pub fn wait_ok(&self) {
        let total = self.nodes.len().to_string();
        wait_until("cluster state ok", Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.info_field_cluster("cluster_state").as_deref() == Some("ok")
                    && n.info_field_cluster("cluster_slots_ok").as_deref() == Some("16384")
                    && n.info_field_cluster("cluster_known_nodes").as_deref()
                        == Some(total.as_str())
            })
        });
    }

    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr()).collect()
    }

    /// The running nodes that are masters now.
    pub fn masters(&self) -> Vec<&Redis> {
        self.nodes
            .iter()
            .filter(|n| {
                n.is_running() && n.info_field("replication", "role").as_deref() == Some("master")
            })
            .collect()
    }

    /// The port of the master of every slot, from one `CLUSTER SLOTS`.
    pub fn slot_owner_ports(&self) -> Vec<u16> {
        let mut owners = vec![0u16; 16384];
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.masters()[0].conn())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("bad CLUSTER SLOTS")
        };
        for r in ranges {
            let redis::Value::Array(items) = r else {
                continue;
            };
            let (redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(master)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            let redis::Value::Int(port) = master[1] else {
                continue;
            };
            for s in *lo..=*hi {
                owners[s as usize] = port as u16;
            }
        }
        owners
    }

    /// The node that serves `slot` as master now.
    pub fn owner_of_slot(&self, slot: u16) -> &Redis {
        let slots: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut self.masters()[0].conn())
            .unwrap();
        let redis::Value::Array(ranges) = slots else {
            panic!("bad CLUSTER SLOTS")
        };
        for r in ranges {
            let redis::Value::Array(items) = r else {
                continue;
            };
            let (redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(master)) =
                (&items[0], &items[1], &items[2])
            else {
                continue;
            };
            if (*lo..=*hi).contains(&(slot as i64)) {
                let redis::Value::Int(port) = master[1] else {
                    continue;
                };
                return self.nodes.iter().find(|n| n.port as i64 == port).unwrap();
            }
        }
        panic!("no owner for slot {slot}");
    }
}

impl Redis {
    pub fn info_field_cluster(&self, field: &str) -> Option<String> {
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut self.conn())
            .ok()?;
        info.lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }
}

/// The slotgate binary, started with the given flags on a free port.
pub struct Proxy {
    pub port: u16,
    child: Child,
    log: PathBuf,
    dir: PathBuf,
}

impl Proxy {
    /// Starts slotgate in front of a cluster with extra flags.
    pub fn cluster(cluster: &Cluster, extra: &[&str]) -> Proxy {
        let mut args: Vec<String> = Vec::new();
        for s in cluster.seeds() {
            args.push("--seed".into());
            args.push(s);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Proxy::spawn(&args)
    }

    pub fn spawn(args: &[String]) -> Proxy {
        let port = free_port();
        let dir = scratch_dir(&format!("proxy{port}"));
        let log = dir.join("slotgate.log");
        let child = Command::new(env!("CARGO_BIN_EXE_slotgate"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let p = Proxy {
            port,
            child,
            log,
            dir,
        };
        wait_until("slotgate to accept", Duration::from_secs(20), || {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        p
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        let c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }

    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- slotgate log (last lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads exactly one RESP reply off a raw socket (test-side decoding via redis-protocol).
pub fn read_reply(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> redis_protocol::resp2::types::OwnedFrame {
    use std::io::Read;
    loop {
        if let Some((frame, used)) = redis_protocol::resp2::decode::decode(buf).unwrap() {
            buf.drain(..used);
            return frame;
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Cluster {
    /// Waits until every running replica has its link to its master up.
    pub fn wait_replicas_synced(&self) {
        wait_until("replicas in sync", Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.info_field("replication", "role").as_deref() != Some("slave")
                    || n.info_field("replication", "master_link_status").as_deref() == Some("up")
            })
        });
    }

    /// The node with this port.
    pub fn node(&self, port: u16) -> &Redis {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Redis {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }
}

impl Redis {
    /// This node's cluster node id.
    pub fn node_id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn())
            .unwrap()
    }
}
