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
/// Ports come from 12000..22000, or from the range `SLOTGATE_TEST_PORTS` names ("LO-HI",
/// within it), so that test runs going on at once never race for the same port.
pub fn free_port() -> u16 {
    let (lo, hi) = port_range();
    if NEXT_PORT.load(Ordering::SeqCst) == 0 {
        let seed = (std::process::id() as u64)
            .wrapping_mul(2654435761)
            .wrapping_add(Instant::now().elapsed().as_nanos() as u64 ^ nanos());
        let base = lo + (seed % u64::from(hi - lo)) as u16;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::SeqCst, Ordering::SeqCst);
    }
    loop {
        let mut p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        if p >= hi {
            NEXT_PORT.store(lo, Ordering::SeqCst);
            p = lo;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
        {
            return p;
        }
    }
}

/// The ports [`free_port`] hands out: `SLOTGATE_TEST_PORTS` ("LO-HI") within 12000..22000, so
/// that cluster bus ports stay below the ephemeral range; all of it by default.
fn port_range() -> (u16, u16) {
    const ALL: (u16, u16) = (12000, 22000);
    let Ok(spec) = std::env::var("SLOTGATE_TEST_PORTS") else {
        return ALL;
    };
    let parsed = spec
        .split_once('-')
        .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)));
    match parsed {
        Some((lo, hi)) if ALL.0 <= lo && lo + 100 <= hi && hi <= ALL.1 => (lo, hi),
        _ => {
            panic!("SLOTGATE_TEST_PORTS={spec:?}: want LO-HI, 100 ports or more within 12000-22000")
        }
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A fresh directory under the system temporary directory, for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "slotgate-test-{}-{tag}-{}",
        std::process::id(),
        nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A connection to whatever answers RESP on a loopback port.
pub fn connect(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Waits until something on `port` answers PING.
pub fn wait_for_ping(what: &str, port: u16, timeout: Duration) {
    wait_for_ping_url(what, &format!("redis://127.0.0.1:{port}/"), timeout);
}

/// Waits until the server at `url` (credentials included) answers PING; a server that wants a
/// password first (`-NOAUTH`) has answered too.
pub fn wait_for_ping_url(what: &str, url: &str, timeout: Duration) {
    wait_until(
        &format!("{what} at {url}"),
        timeout,
        || match redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        {
            Ok(_) => true,
            Err(e) => e.code() == Some("NOAUTH"),
        },
    );
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

/// The arguments that make a redis-server a cluster node for the tests: a short node timeout,
/// and replicas that may always take over.
pub const CLUSTER_NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "1000",
    "--cluster-replica-validity-factor",
    "0",
];

/// `redis-cli --cluster create` over `nodes`, with `replicas` replicas per master.
fn create_cluster(nodes: &[Redis], replicas: usize, password: Option<&str>) {
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
    let mut create = Command::new("redis-cli");
    if let Some(p) = password {
        create.args(["--no-auth-warning", "-a", p]);
    }
    let out = create
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
}

/// One `redis-server` process.
pub struct Redis {
    pub port: u16,
    /// The loopback address it listens on (127.0.0.1 unless a test puts it in another "zone").
    pub ip: String,
    child: Option<Child>,
    dir: PathBuf,
    args: Vec<String>,
    /// The `default` user's password (`requirepass`), which the harness logs in with.
    pub password: Option<String>,
}

impl Redis {
    pub fn start(extra: &[&str]) -> Redis {
        let port = free_port();
        Self::start_on(port, extra)
    }

    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        Self::start_with(port, extra, None)
    }

    /// A server whose `default` user needs `password` (`requirepass`, and `masterauth` for
    /// when it is a replica).
    pub fn start_with(port: u16, extra: &[&str], password: Option<&str>) -> Redis {
        Self::start_at("127.0.0.1", port, extra, password)
    }

    /// A server on another loopback address (all of 127.0.0.0/8 reaches this machine), which it
    /// also announces as a cluster node and as a replica.
    pub fn start_at(ip: &str, port: u16, extra: &[&str], password: Option<&str>) -> Redis {
        let dir = scratch_dir(&format!("redis{port}"));
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if ip != "127.0.0.1" {
            args.extend(["--replica-announce-ip", ip].map(String::from));
            if extra.contains(&"--cluster-enabled") {
                args.extend(["--cluster-announce-ip", ip].map(String::from));
            }
        }
        if let Some(p) = password {
            args.extend(["--requirepass", p, "--masterauth", p].map(String::from));
        }
        let mut r = Redis {
            port,
            ip: ip.to_string(),
            child: None,
            dir,
            args,
            password: password.map(String::from),
        };
        r.spawn();
        r
    }

    /// `redis://` URL of this server, with the password when it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@{}:{}/", self.ip, self.port),
            None => format!("redis://{}:{}/", self.ip, self.port),
        }
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                &self.ip,
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
        wait_for_ping_url("redis", &self.url(), Duration::from_secs(10));
    }

    /// The directory the server runs in (a socket file can go there).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
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

    /// Sends the process a signal by name (`STOP`, `CONT`): a stalled node, for real.
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{name} failed");
        }
    }

    /// A field of `INFO <section>`; `None` also when the node cannot be asked (during a
    /// failover, Sentinel has the old master drop its clients, the asking one included).
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let mut conn = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg(section).query(&mut conn).ok()?;
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
        Self::start_with(masters, replicas, &[], None)
    }

    /// A cluster whose nodes take `extra` arguments and, with `password`, need it for the
    /// `default` user (and use it to replicate).
    pub fn start_with(
        masters: usize,
        replicas: usize,
        extra: &[&str],
        password: Option<&str>,
    ) -> Cluster {
        let total = masters * (1 + replicas);
        let mut args = CLUSTER_NODE_ARGS.to_vec();
        args.extend_from_slice(extra);
        let nodes: Vec<Redis> = (0..total)
            .map(|_| Redis::start_with(free_port(), &args, password))
            .collect();
        create_cluster(&nodes, replicas, password);
        let c = Cluster { nodes };
        c.wait_ok();
        c
    }

    /// A cluster of `masters` masters on 127.0.0.1, each with one replica on every address of
    /// `replica_ips` (127.0.0.2, 127.0.0.3 ...: a "zone" each), which the nodes announce: the
    /// masters are created first, then each replica meets the cluster and follows its master.
    pub fn start_zoned(masters: usize, replica_ips: &[&str]) -> Cluster {
        Self::start_zoned_with(masters, replica_ips, &[])
    }

    /// [`Self::start_zoned`], every node started with `extra` arguments as well.
    pub fn start_zoned_with(masters: usize, replica_ips: &[&str], extra: &[&str]) -> Cluster {
        let args: Vec<&str> = CLUSTER_NODE_ARGS.iter().chain(extra).copied().collect();
        let args = args.as_slice();
        let mut nodes: Vec<Redis> = (0..masters)
            .map(|_| Redis::start_with(free_port(), args, None))
            .collect();
        create_cluster(&nodes, 0, None);
        let ids: Vec<String> = nodes.iter().map(|n| n.node_id()).collect();
        let first = nodes[0].port;
        for id in &ids {
            for ip in replica_ips {
                let r = Redis::start_at(ip, free_port(), args, None);
                let _: () = redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(first)
                    .query(&mut r.conn())
                    .unwrap();
                wait_until(
                    "the replica to meet the cluster",
                    Duration::from_secs(20),
                    || {
                        redis::cmd("CLUSTER")
                            .arg("REPLICATE")
                            .arg(id)
                            .query::<()>(&mut r.conn())
                            .is_ok()
                    },
                );
                nodes.push(r);
            }
        }
        let c = Cluster { nodes };
        c.wait_ok();
        c.wait_replicas_synced();
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

    /// Every key on every master (`KEYS *` on each), as stored.
    pub fn all_keys(&self) -> Vec<String> {
        let mut all = Vec::new();
        for m in self.masters() {
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut m.conn()).unwrap();
            all.extend(keys);
        }
        all
    }

    /// Asserts that the keys of `prefix` are all stored under `{family}` (none left under their
    /// own names), `jobs` of them starting with `{family}{jobs_prefix}`, with `plain` keys of
    /// `plain:` beside them.
    pub fn assert_in_family(
        &self,
        family: &str,
        prefix: &str,
        jobs_prefix: &str,
        jobs: usize,
        plain: usize,
    ) {
        let stored = self.all_keys();
        let untagged: Vec<&String> = stored.iter().filter(|k| k.starts_with(prefix)).collect();
        assert!(untagged.is_empty(), "{untagged:?}");
        let tagged = format!("{{{family}}}{jobs_prefix}");
        assert_eq!(
            stored.iter().filter(|k| k.starts_with(&tagged)).count(),
            jobs,
            "{stored:?}"
        );
        assert_eq!(
            stored.iter().filter(|k| k.starts_with("plain:")).count(),
            plain
        );
    }

    /// The node that serves `slot` as master now.
    /// The slot of `key`, as the cluster computes it (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.masters()[0].conn())
            .unwrap()
    }

    pub fn owner_of_slot(&self, slot: u16) -> &Redis {
        let port = self.slot_owner_ports()[slot as usize];
        self.node(port)
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
        Self::spawn_env(args, &[])
    }

    /// Starts slotgate with `args` and extra environment variables.
    pub fn spawn_env(args: &[String], env: &[(&str, &str)]) -> Proxy {
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
            .envs(env.iter().copied())
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
        wait_for_ping("slotgate", port, Duration::from_secs(20));
        p
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A field of slotgate's `INFO proxy`, trimmed.
    pub fn info_field(&self, field: &str) -> Option<String> {
        let info: String = redis::cmd("INFO")
            .arg("proxy")
            .query(&mut self.conn())
            .ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_string())
    }

    /// The lines of INFO's `# Nodes` section (empty when slotgate cannot be asked).
    pub fn nodes_section(&self) -> Vec<String> {
        let Ok(info) = redis::cmd("INFO").query::<String>(&mut self.conn()) else {
            return Vec::new();
        };
        info.lines()
            .skip_while(|l| !l.starts_with("# Nodes"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process' resident memory in KiB (`VmRSS` of /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Sends SIGTERM (as an orchestrator stopping a pod does) and waits up to `timeout` for the
    /// process to exit: its exit status and how long it took, or `None` if it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        self.send_signal("TERM");
        self.wait_exit(started, timeout)
    }

    /// Sends signal `sig` (`TERM`, `HUP` ...) without waiting.
    pub fn send_signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    /// Waits until `started + timeout` for the process to exit: its status and how long it
    /// took from `started`.
    pub fn wait_exit(
        &mut self,
        started: Instant,
        timeout: Duration,
    ) -> Option<(std::process::ExitStatus, Duration)> {
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join(format!("slotgate-failed-{}.log", self.port));
            let _ = std::fs::copy(&self.log, &keep);
            eprintln!("--- full slotgate log kept at {} ---", keep.display());
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

/// A RESP2 frame's strings, integers, nulls and errors in order, arrays flattened.
pub fn frame_texts(f: &redis_protocol::resp2::types::OwnedFrame) -> Vec<String> {
    use redis_protocol::resp2::types::OwnedFrame;
    match f {
        OwnedFrame::Array(a) => a.iter().flat_map(frame_texts).collect(),
        OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => {
            vec![String::from_utf8_lossy(b).into_owned()]
        }
        OwnedFrame::Integer(i) => vec![i.to_string()],
        OwnedFrame::Null => vec!["(nil)".into()],
        OwnedFrame::Error(e) => vec![format!("ERR:{e}")],
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

/// One `redis-sentinel` process.
pub struct Sentinel {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    /// The Sentinel's own password (`requirepass`), which the harness logs in with.
    password: Option<String>,
}

impl Sentinel {
    pub fn start(master_port: u16, down_after_ms: u64) -> Sentinel {
        Self::start_with(master_port, down_after_ms, None, None)
    }

    /// A Sentinel that logs in to the nodes with `node_password` and wants `own_password`
    /// from its clients (and from the other Sentinels).
    pub fn start_with(
        master_port: u16,
        down_after_ms: u64,
        node_password: Option<&str>,
        own_password: Option<&str>,
    ) -> Sentinel {
        let port = free_port();
        let dir = scratch_dir(&format!("sentinel{port}"));
        let conf = dir.join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\nlogfile {}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds mymaster {down_after_ms}\n\
             sentinel failover-timeout mymaster 10000\n\
             sentinel parallel-syncs mymaster 2\n",
            dir.display(),
            dir.join("sentinel.log").display()
        );
        if let Some(p) = node_password {
            text.push_str(&format!("sentinel auth-pass mymaster {p}\n"));
        }
        if let Some(p) = own_password {
            text.push_str(&format!("requirepass {p}\nsentinel sentinel-pass {p}\n"));
        }
        std::fs::write(&conf, text).unwrap();
        let child = Command::new("redis-sentinel")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel must be installed (apt-get install redis-sentinel)");
        let s = Sentinel {
            port,
            child: Some(child),
            dir,
            password: own_password.map(String::from),
        };
        wait_for_ping_url("sentinel", &s.url(), Duration::from_secs(10));
        s
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// The port of the master this Sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        let v: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query(&mut self.conn())
            .ok()?;
        v.and_then(|(_, p)| p.parse().ok())
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A master, its replicas and the Sentinels watching them (quorum 2), all on loopback.
pub struct SentinelGroup {
    pub nodes: Vec<Redis>,
    pub sentinels: Vec<Sentinel>,
}

impl SentinelGroup {
    pub fn start(replicas: usize, sentinels: usize, down_after_ms: u64) -> SentinelGroup {
        Self::start_with(replicas, sentinels, down_after_ms, None, None)
    }

    /// A group whose nodes want `node_password` and whose Sentinels want `sentinel_password`.
    pub fn start_with(
        replicas: usize,
        sentinels: usize,
        down_after_ms: u64,
        node_password: Option<&str>,
        sentinel_password: Option<&str>,
    ) -> SentinelGroup {
        let ips = vec!["127.0.0.1"; replicas];
        Self::start_placed(
            &ips,
            sentinels,
            down_after_ms,
            node_password,
            sentinel_password,
        )
    }

    /// A group whose master listens on 127.0.0.1 and whose replicas listen on (and announce)
    /// `replica_ips`, one each: zones on one machine.
    pub fn start_zoned(
        replica_ips: &[&str],
        sentinels: usize,
        down_after_ms: u64,
    ) -> SentinelGroup {
        Self::start_placed(replica_ips, sentinels, down_after_ms, None, None)
    }

    fn start_placed(
        replica_ips: &[&str],
        sentinels: usize,
        down_after_ms: u64,
        node_password: Option<&str>,
        sentinel_password: Option<&str>,
    ) -> SentinelGroup {
        let replicas = replica_ips.len();
        let master = Redis::start_with(free_port(), &[], node_password);
        let mport = master.port.to_string();
        let mut nodes = vec![master];
        for ip in replica_ips {
            nodes.push(Redis::start_at(
                ip,
                free_port(),
                &["--replicaof", "127.0.0.1", &mport],
                node_password,
            ));
        }
        let sentinels: Vec<Sentinel> = (0..sentinels)
            .map(|_| {
                Sentinel::start_with(
                    nodes[0].port,
                    down_after_ms,
                    node_password,
                    sentinel_password,
                )
            })
            .collect();
        let g = SentinelGroup { nodes, sentinels };
        wait_until("replicas in sync", Duration::from_secs(30), || {
            g.nodes[1..]
                .iter()
                .all(|n| n.info_field("replication", "master_link_status").as_deref() == Some("up"))
        });
        let want_sentinels = g.sentinels.len() - 1;
        wait_until(
            "sentinels to know each other and the replicas",
            Duration::from_secs(30),
            || {
                g.sentinels.iter().all(|s| {
                    let mut c = s.conn();
                    let reps: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg("mymaster")
                        .query(&mut c)
                        .unwrap_or_default();
                    let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                        .arg("sentinels")
                        .arg("mymaster")
                        .query(&mut c)
                        .unwrap_or_default();
                    reps.len() == replicas && others.len() == want_sentinels
                })
            },
        );
        g
    }

    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.addr()).collect()
    }

    pub fn node(&self, port: u16) -> &Redis {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Redis {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// Waits until no failover is in progress and every running replica follows the master.
    pub fn wait_steady(&self) {
        wait_until("a steady Sentinel group", Duration::from_secs(40), || {
            let Some(live) = self.sentinels.iter().find(|s| s.child.is_some()) else {
                return false;
            };
            let Ok(info) = redis::cmd("SENTINEL")
                .arg("master")
                .arg("mymaster")
                .query::<Vec<String>>(&mut live.conn())
            else {
                return false;
            };
            let flags = info
                .chunks(2)
                .find(|p| p[0] == "flags")
                .map(|p| p[1].clone())
                .unwrap_or_default();
            if flags != "master" {
                return false;
            }
            let Some(mport) = live.master_port() else {
                return false;
            };
            self.nodes
                .iter()
                .filter(|n| n.is_running() && n.port != mport)
                .all(|n| {
                    n.info_field("replication", "master_port").as_deref()
                        == Some(mport.to_string().as_str())
                        && n.info_field("replication", "master_link_status").as_deref()
                            == Some("up")
                })
        });
    }

    /// `SENTINEL FAILOVER` through the first Sentinel; returns once the Sentinels name a new
    /// master and the group is steady again.
    pub fn failover(&self) {
        let old = self.master_port();
        let _: String = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query(&mut self.sentinels[0].conn())
            .unwrap();
        wait_until("the Sentinels to switch", Duration::from_secs(30), || {
            self.master_port() != old
        });
        self.wait_steady();
    }

    /// The master's port as the first live Sentinel says.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .filter(|s| s.child.is_some())
            .find_map(|s| s.master_port())
            .unwrap()
    }
}

impl Proxy {
    /// slotgate in front of Sentinels.
    pub fn sentinel(sentinels: &[String], extra: &[&str]) -> Proxy {
        let mut args: Vec<String> = Vec::new();
        for s in sentinels {
            args.push("--sentinel".into());
            args.push(s.clone());
        }
        args.push("--master-name".into());
        args.push("mymaster".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        Proxy::spawn(&args)
    }
}

/// Runs a Python script (redis-py) with the proxy's port as its argument; panics with its output
/// unless it succeeds. Returns what it printed.
pub fn run_python(script: &str, port: u16) -> String {
    let out = Command::new("python3")
        .args(["-c", script, &port.to_string()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "python (pip install redis) failed: {text}"
    );
    text
}

/// Moves `slot` from `from` to `to` by hand, as `redis-cli --cluster reshard` does: IMPORTING and
/// MIGRATING, MIGRATE in small batches (so clients meet ASK), then SETSLOT NODE everywhere.
pub fn move_slot(cluster: &Cluster, slot: u16, from: &Redis, to: &Redis) {
    let from_id = from.node_id();
    let to_id = to.node_id();
    let q = |n: &Redis, args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query::<redis::Value>(&mut n.conn()).unwrap();
    };
    let s = slot.to_string();
    q(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]);
    q(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]);
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(20)
            .query(&mut from.conn())
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let mut m = redis::cmd("MIGRATE");
        m.arg("127.0.0.1")
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS");
        for k in &keys {
            m.arg(k);
        }
        m.query::<redis::Value>(&mut from.conn()).unwrap();
        // Migrate in small batches with pauses so clients meet the slot half-moved. Not slower:
        // a multi-key write of a new key and an old one gets TRYAGAIN until the slot's last key
        // has moved (from the importing node too), and slotgate retries it for about 10 s.
        std::thread::sleep(Duration::from_millis(20));
    }
    // The documented order: destination first, then source, then everyone else.
    q(to, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    q(from, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
    for n in cluster.masters() {
        if n.port != to.port && n.port != from.port {
            q(n, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]);
        }
    }
}

/// A config file in the temporary directory, removed when dropped (even when the test fails).
pub struct TempConf(String);

impl TempConf {
    pub fn new(text: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "slotgate-conf-{}-{}.toml",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&path, text).unwrap();
        TempConf(path.to_string_lossy().into_owned())
    }

    pub fn path(&self) -> &str {
        &self.0
    }
}

impl Drop for TempConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Test certificates made with the `openssl` command: a CA, a server certificate for
/// 127.0.0.1 and localhost, and a client certificate, all from that CA; and a second CA with a
/// server certificate of its own, that nothing trusts.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = scratch_dir(&format!("certs{}", free_port()));
        let sh = |script: &str| {
            let out = Command::new("sh")
                .arg("-ec")
                .arg(script)
                .current_dir(&dir)
                .output()
                .expect("openssl must be installed");
            assert!(
                out.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh("key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out \"$1\" 2>/dev/null; }
            ca() { key \"$1.key\"; openssl req -x509 -new -key \"$1.key\" -out \"$1.crt\" -days 2 -subj \"/CN=$2\"; }
            leaf() { key \"$1.key\"; openssl req -new -key \"$1.key\" -out \"$1.csr\" -subj \"/CN=$3\";
                     printf '%s\\n' \"$4\" > \"$1.ext\";
                     openssl x509 -req -in \"$1.csr\" -CA \"$2.crt\" -CAkey \"$2.key\" -CAcreateserial -out \"$1.crt\" -days \"${5:-2}\" -extfile \"$1.ext\" 2>/dev/null; }
            ca ca 'slotgate test CA'
            ca other-ca 'another CA'
            leaf server ca localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost'
            leaf client ca app 'extendedKeyUsage=clientAuth'
            leaf expired-client ca app 'extendedKeyUsage=clientAuth' -1
            leaf nobody-client ca nobody 'extendedKeyUsage=clientAuth'
            leaf other-server other-ca localhost 'subjectAltName=IP:127.0.0.1,DNS:localhost'");
        Certs { dir }
    }

    /// The path of one of the files (`ca.crt`, `server.key`, ...), as a string for flags.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs slotgate until it exits (at most `secs`): whether it succeeded, how long it took, and
/// what it printed.
pub fn run_until_exit(args: &[&str], secs: u64) -> (bool, Duration, String) {
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("slotgate {args:?} did not exit within {secs}s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), started.elapsed(), text)
}

/// A plain HTTP/1.1 request to the admin listener: (status, body).
pub fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
