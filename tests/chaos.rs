//! The chaos suite: the faults an operator fears, made for real (SIGKILL, SIGSTOP, a manual
//! failover, a resharding, a Sentinel failover, a replica restarted empty) under a steady read
//! and write load through slotgate. Each scenario prints one row of the README's table: client
//! errors, wrong reads (a value that is not the one written: an empty replica's nil), writes
//! acknowledged and then missing, p99 and max latency while the fault lasts, and the time
//! until every request is fast again. It asserts on counts (errors, losses), never on timings.
//!
//! The scenarios run one at a time (a lock): on a 2-CPU machine two of them at once would
//! measure each other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{Cluster, Proxy, SentinelGroup};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Keys the readers read, each holding its own number.
const READ_KEYS: u64 = 1_000;
/// A request slower than this is not full service.
const SLOW: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
enum Outcome {
    Ok,
    /// A read answered with a value that is not the one written.
    Wrong(String),
    Error(String),
}

#[derive(Debug, Clone)]
struct Op {
    at: Instant,
    took: Duration,
    write: bool,
    /// The slot of its key.
    slot: u16,
    outcome: Outcome,
}

/// What one load thread saw: every request, and the writes acknowledged (key, value).
/// Acknowledged writes are kept with the instant they were sent.
type Seen = (Vec<Op>, Vec<(Instant, String, u64)>);

/// Two writers (SET of a new key each time, spread over every slot) and two readers (GET of
/// keys whose values are known), each sending a request every 2 ms or so, one at a time.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Seen>>,
}

impl Load {
    /// Writes the readers' keys through slotgate, then starts the load.
    fn start(proxy: &Proxy) -> Load {
        let mut c = proxy.conn();
        for chunk in (0..READ_KEYS).collect::<Vec<_>>().chunks(100) {
            let mut mset = redis::cmd("MSET");
            for j in chunk {
                mset.arg(format!("chaos:r:{j}")).arg(*j);
            }
            let () = mset.query(&mut c).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for t in 0..4u64 {
            let (stop, url) = (stop.clone(), proxy.url());
            threads.push(std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                // Longer than the failover hold: a held request is slow, not failed.
                c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
                let (mut ops, mut acked) = (Vec::new(), Vec::new());
                let write = t < 2;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let key = if write {
                        format!("chaos:w{t}:{i}")
                    } else {
                        format!("chaos:r:{}", (i * 7919 + t) % READ_KEYS)
                    };
                    let slot = slotgate::router::key_slot(key.as_bytes());
                    let outcome = if write {
                        match redis::cmd("SET").arg(&key).arg(i).query::<()>(&mut c) {
                            Ok(()) => {
                                // When it was sent: only a write sent after the fault landed
                                // cannot have been acknowledged by the node as it was before.
                                acked.push((at, key, i));
                                Outcome::Ok
                            }
                            Err(e) => Outcome::Error(e.to_string()),
                        }
                    } else {
                        let j = (i * 7919 + t) % READ_KEYS;
                        match redis::cmd("GET").arg(&key).query::<Option<u64>>(&mut c) {
                            Ok(Some(v)) if v == j => Outcome::Ok,
                            Ok(v) => Outcome::Wrong(format!("{key} read {v:?}")),
                            Err(e) => Outcome::Error(e.to_string()),
                        }
                    };
                    ops.push(Op {
                        at,
                        took: at.elapsed(),
                        write,
                        slot,
                        outcome,
                    });
                    if let Some(Op {
                        outcome: Outcome::Error(_),
                        ..
                    }) = ops.last()
                    {
                        // A broken connection is reopened, as a client library does.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                (ops, acked)
            }));
        }
        // A steady start before any fault.
        std::thread::sleep(Duration::from_millis(700));
        Load { stop, threads }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ops, mut acked) = (Vec::new(), Vec::new());
        for t in self.threads {
            let (o, a) = t.join().expect("a load thread panicked");
            ops.extend(o);
            acked.extend(a);
        }
        (ops, acked)
    }
}

/// One scenario's figures.
#[derive(Debug)]
struct Figures {
    reads: usize,
    read_errors: usize,
    wrong_reads: usize,
    writes: usize,
    write_errors: usize,
    /// Acknowledged writes missing afterwards: sent before the fault landed (one the old
    /// master acknowledged an instant before it died: asynchronous replication may lose those
    /// to a kill), and sent after it (which only the node's successor can have acknowledged).
    lost_before: usize,
    lost_after: usize,
    p99: Duration,
    max: Duration,
    /// p99 of the requests for the shards the fault did not touch, while it lasted.
    p99_others: Option<Duration>,
    /// From the fault to the end of the last request that failed or was slower than [`SLOW`].
    full_service: Duration,
    examples: Vec<String>,
}

impl Figures {
    /// Stops the load once the fault is over (the scenario saw it recover) and a second more
    /// has passed, and checks every acknowledged write through slotgate.
    /// `hit`: which slots the fault's shard held (a cluster fault), for the other shards' p99.
    /// `fault` is when the scenario began (latencies are measured from it), `landed` when the
    /// fault took effect (a node killed and reaped, a signal delivered): the line between the
    /// writes a kill may lose and those it never may.
    fn measure(
        name: &str,
        load: Load,
        proxy: &Proxy,
        (fault, landed, recovered): (Instant, Instant, Instant),
        hit: Option<&[bool]>,
    ) -> Self {
        std::thread::sleep(Duration::from_secs(1));
        let (ops, acked) = load.stop();
        let reads = ops.iter().filter(|o| !o.write).count();
        let err = |o: &&Op| matches!(o.outcome, Outcome::Error(_));
        let read_errors = ops.iter().filter(|o| !o.write).filter(err).count();
        let write_errors = ops.iter().filter(|o| o.write).filter(err).count();
        let wrong_reads = ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Wrong(_)))
            .count();
        let during = |keep: &dyn Fn(&Op) -> bool| {
            let mut took: Vec<Duration> = ops
                .iter()
                .filter(|o| o.at >= fault && o.at <= recovered && keep(o))
                .map(|o| o.took)
                .collect();
            took.sort();
            let p99 = took
                .get(took.len().saturating_sub(1) * 99 / 100)
                .copied()
                .unwrap_or_default();
            (p99, took.last().copied().unwrap_or_default())
        };
        let (p99, max) = during(&|_| true);
        let p99_others = hit.map(|hit| during(&|o| !hit[o.slot as usize]).0);
        let full_service = ops
            .iter()
            .filter(|o| o.at >= fault)
            .filter(|o| !matches!(o.outcome, Outcome::Ok) || o.took > SLOW)
            .map(|o| (o.at + o.took).saturating_duration_since(fault))
            .max()
            .unwrap_or_default();
        let examples = ops
            .iter()
            .filter_map(|o| match &o.outcome {
                Outcome::Ok => None,
                Outcome::Wrong(e) | Outcome::Error(e) => Some(e.clone()),
            })
            .take(3)
            .collect();
        let (mut lost_before, mut lost_after) = (0, 0);
        let mut c = proxy.conn();
        for chunk in acked.chunks(200) {
            let mut mget = redis::cmd("MGET");
            for (_, k, _) in chunk {
                mget.arg(k);
            }
            let got: Vec<Option<u64>> = mget.query(&mut c).unwrap();
            for ((at, _, v), g) in chunk.iter().zip(got) {
                if g != Some(*v) {
                    if *at < landed {
                        lost_before += 1;
                    } else {
                        lost_after += 1;
                    }
                }
            }
        }
        let f = Figures {
            reads,
            read_errors,
            wrong_reads,
            writes: ops.len() - reads,
            write_errors,
            lost_before,
            lost_after,
            p99,
            max,
            p99_others,
            full_service,
            examples,
        };
        // The README's row.
        eprintln!(
            "chaos | {name} | {} | {} | {} | {} | {} | {} | {:.0} ms | {:.0} ms | {} | {:.2} s |",
            f.reads,
            f.read_errors + f.wrong_reads,
            f.writes,
            f.write_errors,
            f.lost_before + f.lost_after,
            f.lost_after,
            f.p99.as_secs_f64() * 1e3,
            f.max.as_secs_f64() * 1e3,
            f.p99_others
                .map_or("-".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
            f.full_service.as_secs_f64()
        );
        for e in &f.examples {
            eprintln!("chaos |   seen: {e}");
        }
        f
    }

    /// No client error, no wrong read, nothing lost: a fault Redis itself loses nothing in.
    fn assert_invisible(&self) {
        self.assert_at_most(0, Loss::None);
    }

    /// No read fails or is wrong; at most `write_errors` writes fail (those in flight when a
    /// node died: sent, unanswered, never sent twice); acknowledged writes are lost only as
    /// `loss` allows.
    fn assert_at_most(&self, write_errors: usize, loss: Loss) {
        assert_eq!(self.read_errors, 0, "read errors: {:?}", self.examples);
        assert_eq!(self.wrong_reads, 0, "wrong reads: {:?}", self.examples);
        assert!(
            self.write_errors <= write_errors,
            "{} write errors: {:?}",
            self.write_errors,
            self.examples
        );
        let (before, after) = match loss {
            Loss::None => (false, 0),
            Loss::Replication => (true, 0),
            Loss::OldMaster(n) => (true, n),
        };
        assert!(
            self.lost_after <= after,
            "{} writes acknowledged after the fault lost",
            self.lost_after
        );
        if !before {
            assert_eq!(self.lost_before, 0, "acknowledged writes lost");
        }
        assert!(self.reads > 100 && self.writes > 100, "{self:?}");
    }
}

/// Which acknowledged writes a fault may lose, as Redis itself loses them for a client that
/// talks to it directly.
#[derive(Debug, Clone, Copy)]
enum Loss {
    None,
    /// Writes acknowledged just before a master died that its replica had not received yet
    /// (replication is asynchronous).
    Replication,
    /// Those, and at most this many acknowledged after the fault by the old master before it
    /// learned it was demoted (it then syncs from the new master and drops them).
    OldMaster(usize),
}

/// The master owning the slot of `key`.
fn master_of(cluster: &Cluster, key: &str) -> u16 {
    cluster.owner_of_slot(cluster.keyslot(key)).port
}

/// The replica of the master on `port`.
fn replica_of(cluster: &Cluster, port: u16) -> u16 {
    let id = cluster.node(port).node_id();
    cluster
        .nodes
        .iter()
        .filter(|n| n.is_running() && n.port != port)
        .find(|n| {
            n.info_field("replication", "role").as_deref() == Some("slave")
                && redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut n.conn())
                    .unwrap()
                    .lines()
                    .any(|l| l.contains("myself") && l.contains(&id))
        })
        .unwrap()
        .port
}

/// Waits until the cluster has three masters and says ok everywhere it runs.
fn wait_recovered(cluster: &Cluster) {
    support::wait_until("a master for every shard", Duration::from_secs(30), || {
        cluster.masters().len() == 3
    });
    cluster.wait_ok();
}

/// Runs one fault on a 3+3 cluster under the load: `fault` makes it (the load is running),
/// waits until the cluster has recovered and returns the instant the fault landed (see
/// [`Figures::measure`]). Prints the row and returns the figures.
fn on_a_cluster(
    name: &str,
    replica_reads: bool,
    fault: impl FnOnce(&mut Cluster) -> Instant,
) -> Figures {
    let _s = serial();
    let mut cluster = Cluster::start(3, 1);
    cluster.wait_replicas_synced();
    let extra: &[&str] = if replica_reads {
        &["--read-from", "prefer-replica"]
    } else {
        &[]
    };
    let proxy = Proxy::cluster(&cluster, extra);
    let load = Load::start(&proxy);
    let owners = cluster.slot_owner_ports();
    let shard = victim(&cluster);
    let hit: Vec<bool> = owners.iter().map(|&p| p == shard).collect();
    let at = Instant::now();
    let landed = fault(&mut cluster);
    let recovered = Instant::now();
    Figures::measure(name, load, &proxy, (at, landed, recovered), Some(&hit))
}

/// [`on_a_cluster`] for a Sentinel group of a master, 2 replicas and 3 Sentinels.
fn on_sentinels(name: &str, fault: impl FnOnce(&mut SentinelGroup) -> Instant) -> Figures {
    let _s = serial();
    let mut g = SentinelGroup::start(2, 3, 1000);
    g.wait_steady();
    let proxy = Proxy::sentinel(&g.sentinel_addrs(), &[]);
    let load = Load::start(&proxy);
    let at = Instant::now();
    let landed = fault(&mut g);
    let recovered = Instant::now();
    Figures::measure(name, load, &proxy, (at, landed, recovered), None)
}

/// The master of the readers' first key, which every fault here hits.
fn victim(cluster: &Cluster) -> u16 {
    master_of(cluster, "chaos:r:0")
}

#[test]
fn master_sigkill() {
    let f = on_a_cluster("master SIGKILL", false, |c| {
        c.node_mut(victim(c)).kill();
        let landed = Instant::now();
        wait_recovered(c);
        landed
    });
    // One write per writer may be in flight at the kill.
    f.assert_at_most(2, Loss::Replication);
}

#[test]
fn master_sigkill_with_replica_reads() {
    let f = on_a_cluster("master SIGKILL, replica reads", true, |c| {
        c.node_mut(victim(c)).kill();
        let landed = Instant::now();
        wait_recovered(c);
        landed
    });
    f.assert_at_most(2, Loss::Replication);
}

#[test]
fn manual_cluster_failover() {
    let f = on_a_cluster("CLUSTER FAILOVER", false, |c| {
        let replica = replica_of(c, victim(c));
        let landed = Instant::now();
        let () = redis::cmd("CLUSTER")
            .arg("FAILOVER")
            .query(&mut c.node(replica).conn())
            .unwrap();
        support::wait_until("the replica promoted", Duration::from_secs(30), || {
            c.node(replica).info_field("replication", "role").as_deref() == Some("master")
        });
        wait_recovered(c);
        landed
    });
    f.assert_invisible();
}

#[test]
fn master_sigstop_longer_than_the_node_timeout() {
    let f = on_a_cluster("master SIGSTOP > node timeout", false, |c| {
        let victim = victim(c);
        c.node(victim).signal("STOP");
        let landed = Instant::now();
        // The node timeout is 1 s: the cluster fails it over meanwhile (asked of the others: a
        // stopped node answers nothing).
        support::wait_until("a replica promoted", Duration::from_secs(30), || {
            c.nodes
                .iter()
                .filter(|m| m.is_running() && m.port != victim)
                .filter(|m| m.info_field("replication", "role").as_deref() == Some("master"))
                .count()
                == 3
        });
        c.node(victim).signal("CONT");
        support::wait_until("the old master demoted", Duration::from_secs(30), || {
            c.node(victim).info_field("replication", "role").as_deref() == Some("slave")
        });
        wait_recovered(c);
        landed
    });
    // Writes that reached the stopped master run when it wakes, before it has learned that it
    // was demoted: Redis answers them OK, then drops them when it syncs from the new master.
    // slotgate passes that OK on, as the node gave it (one per writer at most).
    f.assert_at_most(2, Loss::OldMaster(2));
}

#[test]
fn replica_sigkill_with_replica_reads() {
    let f = on_a_cluster("replica SIGKILL, replica reads", true, |c| {
        let replica = replica_of(c, victim(c));
        c.node_mut(replica).kill();
        let landed = Instant::now();
        // Until every node has marked it failed.
        support::wait_until("the replica marked failed", Duration::from_secs(30), || {
            c.nodes.iter().filter(|n| n.is_running()).all(|n| {
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query::<String>(&mut n.conn())
                    .unwrap()
                    .lines()
                    .any(|l| l.contains(&format!(":{replica}@")) && l.contains("fail"))
            })
        });
        landed
    });
    f.assert_invisible();
}

#[test]
fn replica_sigstop_with_replica_reads() {
    let f = on_a_cluster("replica SIGSTOP 3 s, replica reads", true, |c| {
        let replica = replica_of(c, victim(c));
        c.node(replica).signal("STOP");
        let landed = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        c.node(replica).signal("CONT");
        c.wait_replicas_synced();
        wait_recovered(c);
        landed
    });
    f.assert_invisible();
}

#[test]
fn a_third_of_the_slots_resharded_live() {
    let f = on_a_cluster("a third of the slots resharded", false, |c| {
        let masters: Vec<String> = c.masters().iter().map(|m| m.node_id()).collect();
        let landed = Instant::now();
        let out = Command::new("redis-cli")
            .args(["--cluster", "reshard", &c.masters()[0].addr()])
            // From two masters, so that neither is left without slots (its replica would
            // move away).
            .args(["--cluster-from", &format!("{},{}", masters[0], masters[2])])
            .args(["--cluster-to", &masters[1], "--cluster-slots", "5461"])
            .args(["--cluster-yes", "--cluster-pipeline", "100"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reshard: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        wait_recovered(c);
        landed
    });
    f.assert_invisible();
}

#[test]
fn a_replica_restarted_empty_with_replica_reads() {
    let f = on_a_cluster("replica restarted empty, replica reads", true, |c| {
        // The test servers keep no data on disk: restarted, it comes back empty (its
        // nodes.conf kept, so it rejoins as the same replica) and syncs from its master.
        let replica = replica_of(c, victim(c));
        c.node_mut(replica).restart();
        let landed = Instant::now();
        c.wait_replicas_synced();
        wait_recovered(c);
        landed
    });
    f.assert_invisible();
}

#[test]
fn sentinel_failover() {
    let f = on_sentinels("SENTINEL FAILOVER", |g| {
        let landed = Instant::now();
        g.failover();
        landed
    });
    // Sentinel's failover is not a coordinated handover as CLUSTER FAILOVER is: the replica is
    // promoted while the old master still takes writes, until Sentinel reconfigures it; what it
    // took meanwhile is dropped when it syncs from the new master (2-6 writes a run before
    // slotgate paused the old master). From `+selected-slave` slotgate sends the old master
    // nothing; the failover hold keeps the requests for the promoted replica. No error, and
    // nothing acknowledged after the fault began is lost.
    f.assert_at_most(0, Loss::Replication);
}

#[test]
fn sentinel_master_sigkill() {
    let f = on_sentinels("Sentinel master SIGKILL", |g| {
        let old = g.master_port();
        g.node_mut(old).kill();
        let landed = Instant::now();
        support::wait_until("a new master", Duration::from_secs(40), || {
            g.master_port() != old
        });
        g.wait_steady();
        landed
    });
    f.assert_at_most(2, Loss::Replication);
}
