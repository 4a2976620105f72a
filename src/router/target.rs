//! Which node a request (or one part of a split request) goes to in a snapshot: the one
//! decision every place in a session that sends something makes, through [`node_for`] (a
//! master) or, for a read under a read policy, [`read_node`] (a master or one of its replicas,
//! by zone, health and measured load; the choice itself is [`choose_read`], a pure function
//! of what is known of each candidate).
//!
//! A function of the snapshot, the slot, the client and the figures the snapshot's nodes carry
//! (their connections' state, measured latency and load, the replica checker's verdict: atomics
//! that others write). It must never look at a socket, a clock or the global topology, and
//! never sends a write anywhere but to a master.

use std::sync::Arc;

use crate::backend::{Node, Replication};
use crate::topology::Topology;

/// Where reads may go (`[reads] from`, `--read-from`). Writes always go to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// Every read to the master (the default: what Redis Cluster clients do).
    #[default]
    Master,
    /// A healthy replica of the slot's shard, else the master.
    PreferReplica,
    /// Replicas in slotgate's zone, then replicas elsewhere, then the master.
    SameZone,
    /// Replicas in slotgate's zone, then the master if it is in that zone, then other replicas,
    /// then the master.
    SameZoneOrMaster,
    /// The lowest measured load among the shard's healthy nodes, master included.
    Nearest,
}

impl ReadFrom {
    pub const NAMES: [&'static str; 5] = [
        "master",
        "prefer-replica",
        "same-zone",
        "same-zone-or-master",
        "nearest",
    ];

    pub fn parse(s: &str) -> Option<ReadFrom> {
        Some(match s {
            "master" => ReadFrom::Master,
            "prefer-replica" => ReadFrom::PreferReplica,
            "same-zone" => ReadFrom::SameZone,
            "same-zone-or-master" => ReadFrom::SameZoneOrMaster,
            "nearest" => ReadFrom::Nearest,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReadFrom::Master => "master",
            ReadFrom::PreferReplica => "prefer-replica",
            ReadFrom::SameZone => "same-zone",
            ReadFrom::SameZoneOrMaster => "same-zone-or-master",
            ReadFrom::Nearest => "nearest",
        }
    }

    /// Whether the policy ever reads from a replica (and so replicas need connections).
    pub fn uses_replicas(self) -> bool {
        self != ReadFrom::Master
    }
}

/// What the read decision knows about one node of a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub master: bool,
    /// In slotgate's own zone (never true when slotgate has no zone).
    pub local: bool,
    /// Its connection is not down and, for a replica, its replication is fit for reads.
    pub usable: bool,
    /// Measured latency times load; lower is better (0: not measured yet).
    pub score: u64,
}

/// How far down a policy's preference a candidate is (lower first).
fn tier(policy: ReadFrom, c: &Candidate) -> u8 {
    match (policy, c.master, c.local) {
        (ReadFrom::Master, true, _) => 0,
        (ReadFrom::Master, false, _) => u8::MAX,
        (ReadFrom::PreferReplica, master, _) => u8::from(master),
        (ReadFrom::SameZone, false, true) => 0,
        (ReadFrom::SameZone, false, false) => 1,
        (ReadFrom::SameZone, true, _) => 2,
        (ReadFrom::SameZoneOrMaster, false, true) => 0,
        (ReadFrom::SameZoneOrMaster, true, true) => 1,
        (ReadFrom::SameZoneOrMaster, false, false) => 2,
        (ReadFrom::SameZoneOrMaster, true, false) => 3,
        (ReadFrom::Nearest, _, _) => 0,
    }
}

/// The best candidate seen so far, by the key a policy ranks them with.
struct Best<T> {
    key: (u8, u64, u64),
    at: usize,
    item: T,
}

impl<T> Best<T> {
    /// Keeps candidate `at` (of `n`) when it is usable, not excluded, allowed by the policy and
    /// ranks before the best so far: higher in the policy's preference, then a lower score, then
    /// the rotation by `salt` that spreads ties.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn offer(
        best: &mut Option<Best<T>>,
        policy: ReadFrom,
        c: &Candidate,
        at: usize,
        n: u64,
        exclude: Option<usize>,
        salt: u64,
        item: T,
    ) {
        let t = tier(policy, c);
        if !c.usable || Some(at) == exclude || t == u8::MAX {
            return;
        }
        let key = (t, c.score, (at as u64).wrapping_add(salt) % n.max(1));
        if best.as_ref().is_none_or(|b| key < b.key) {
            *best = Some(Best { key, at, item });
        }
    }
}

/// The candidate a read goes to: the usable one highest in the policy's preference, the lowest
/// score among equals, ties spread by `salt` (the client's id, so that one client stays on one
/// node while the figures are equal). `exclude` is the candidate a first attempt failed on:
/// the answer is then another one, or `None` (nothing else to try). With nothing usable and
/// nothing excluded, the master (which then fails the read as it fails a write).
pub fn choose_read(
    policy: ReadFrom,
    candidates: &[Candidate],
    exclude: Option<usize>,
    salt: u64,
) -> Option<usize> {
    let n = candidates.len() as u64;
    let mut best = None;
    for (i, c) in candidates.iter().enumerate() {
        Best::offer(&mut best, policy, c, i, n, exclude, salt, ());
    }
    match (best, exclude) {
        (Some(b), _) => Some(b.at),
        (None, Some(_)) => None,
        (None, None) => candidates.iter().position(|c| c.master),
    }
}

/// Where a read went, for the counters of read placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A replica in slotgate's zone.
    LocalReplica,
    /// A replica elsewhere (or slotgate has no zone).
    RemoteReplica,
    /// The master.
    Master,
}

/// The node a read goes to: its index among the shard's candidates, and where it is.
#[derive(Debug, Clone, Copy)]
pub struct ReadTarget<'t> {
    pub at: u8,
    pub node: &'t Arc<Node>,
    pub placement: Placement,
    /// The shard's replicas the decision passed over as unfit, by why.
    pub skipped: Skipped,
}

/// Replicas a read decision passed over because they could not serve, by why: what the
/// per-reason skip counters count (a replica the policy simply ranked lower is not skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Its connections are failing (refused, reset, timed out): the node seems down.
    pub down: u8,
    /// Not connected to its master, or in its initial sync.
    pub syncing: u8,
    /// Further behind its master than `max_replica_lag_ms`, or catching up after that.
    pub lagging: u8,
}

impl Skipped {
    /// Counts a replica that cannot serve a read: its connections failing (`serving` false),
    /// else its replication state.
    fn count(&mut self, serving: bool, replication: Replication) {
        if !serving {
            self.down = self.down.saturating_add(1);
            return;
        }
        match replication {
            Replication::Syncing => self.syncing = self.syncing.saturating_add(1),
            Replication::Lagging => self.lagging = self.lagging.saturating_add(1),
            Replication::Unknown | Replication::Online => {}
        }
    }
}

/// At most this many candidates per shard are considered (the master and its first replicas),
/// so that a candidate's index fits the `u8` a retry keeps.
const MAX_CANDIDATES: usize = 64;

/// The node a read of `slot` goes to under `policy` (`None`: the only master of an unslotted
/// topology), with its index among the shard's candidates (0 is the master, then the replicas
/// in snapshot order) for a retry to exclude. `here` is slotgate's zone. The same ranking as
/// [`choose_read`], in one pass over the shard without gathering its candidates first.
pub fn read_node<'t>(
    topo: &'t Topology,
    slot: Option<u16>,
    policy: ReadFrom,
    here: Option<&str>,
    client: u64,
    exclude: Option<u8>,
) -> Option<ReadTarget<'t>> {
    let shard = match slot {
        Some(s) => topo.shard_of(s)?,
        None if !topo.slotted => 0,
        None => return None,
    };
    let master = topo.masters().get(shard)?;
    let replicas = topo.replicas_of(shard);
    let local = |zone: Option<&str>| here.is_some() && zone == here;
    // Every node's connections are laid out alike: the one this client uses is at the same
    // place in each.
    let link = master.link_slot(client);
    let n = (1 + replicas.len()).min(MAX_CANDIDATES) as u64;
    let exclude = exclude.map(usize::from);
    let master_local = local(topo.master_zone(shard));
    let mut best = None;
    let mut skipped = Skipped::default();
    let c = Candidate {
        master: true,
        local: master_local,
        usable: master.serving_at(link),
        score: master.load_score(),
    };
    Best::offer(
        &mut best,
        policy,
        &c,
        0,
        n,
        exclude,
        client,
        (master, master_local),
    );
    for (i, r) in replicas.iter().enumerate().take(MAX_CANDIDATES - 1) {
        let Some(node) = &r.node else { continue };
        let is_local = local(r.zone.as_deref());
        let (serving, replication) = (node.serving_at(link), node.replication());
        let usable = serving && replication.serves_reads();
        if !usable {
            skipped.count(serving, replication);
        }
        let c = Candidate {
            master: false,
            local: is_local,
            usable,
            score: node.load_score(),
        };
        Best::offer(
            &mut best,
            policy,
            &c,
            i + 1,
            n,
            exclude,
            client,
            (node, is_local),
        );
    }
    let (at, (node, is_local)) = match (best, exclude) {
        (Some(b), _) => (b.at, b.item),
        (None, Some(_)) => return None,
        (None, None) => (0, (master, master_local)),
    };
    Some(ReadTarget {
        at: at as u8,
        node,
        placement: match (at, is_local) {
            (0, _) => Placement::Master,
            (_, true) => Placement::LocalReplica,
            (_, false) => Placement::RemoteReplica,
        },
        skipped,
    })
}

/// The node for a request: the master serving `slot`; for a keyless request (`None`), one
/// master chosen by the client's id, so that one client's keyless requests stay on one node
/// and many clients spread over all of them. `None` when no master serves the slot.
pub fn node_for(topo: &Topology, slot: Option<u16>, client: u64) -> Option<&Arc<Node>> {
    match slot {
        Some(s) => topo.master_for_slot(s),
        None => {
            let masters = topo.masters();
            if masters.is_empty() {
                return None;
            }
            masters.get((client % masters.len() as u64) as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendConfig, Backends};
    use crate::topology::{Layout, ShardLayout};
    use crate::workers::Workers;

    fn topology(shards: &[(&str, &[(u16, u16)])]) -> Topology {
        let backends = Backends::new(BackendConfig::default(), Arc::new(Workers::single()));
        let layout = Layout {
            shards: shards
                .iter()
                .map(|(m, r)| ShardLayout {
                    master: (*m).into(),
                    replicas: vec![],
                    ranges: r.to_vec(),
                })
                .collect(),
            ..Layout::default()
        };
        Topology::build(&layout, &backends, Default::default(), 1)
    }

    fn addr(n: Option<&Arc<Node>>) -> Option<String> {
        n.map(|n| n.addr().to_string())
    }

    // Node handles start their connections on a runtime (here to addresses that do not resolve:
    // they only retry in the background; nothing is sent).
    #[tokio::test]
    async fn a_slot_goes_to_its_master_and_an_unserved_slot_nowhere() {
        let t = topology(&[("a:1", &[(0, 99)]), ("b:1", &[(100, 16383)])]);
        assert_eq!(addr(node_for(&t, Some(0), 7)).as_deref(), Some("a:1"));
        assert_eq!(addr(node_for(&t, Some(100), 7)).as_deref(), Some("b:1"));
        let gap = topology(&[("a:1", &[(0, 99)])]);
        assert_eq!(addr(node_for(&gap, Some(100), 7)), None);
    }

    const M: usize = 0;

    /// A shard as the decision sees it: the master (in zone a, or in slotgate's zone when
    /// `master_local`), then replicas given as (local, usable, score).
    fn shard(
        master_local: bool,
        master_usable: bool,
        replicas: &[(bool, bool, u64)],
    ) -> Vec<Candidate> {
        let mut v = vec![Candidate {
            master: true,
            local: master_local,
            usable: master_usable,
            score: 50,
        }];
        v.extend(replicas.iter().map(|&(local, usable, score)| Candidate {
            master: false,
            local,
            usable,
            score,
        }));
        v
    }

    #[test]
    fn master_policy_reads_from_the_master_even_when_replicas_are_fitter() {
        let s = shard(false, true, &[(true, true, 1)]);
        assert_eq!(choose_read(ReadFrom::Master, &s, None, 0), Some(M));
        // Its retry has nowhere else to go.
        assert_eq!(choose_read(ReadFrom::Master, &s, Some(M), 0), None);
    }

    #[test]
    fn prefer_replica_takes_the_least_loaded_replica_then_the_master() {
        let s = shard(false, true, &[(false, true, 90), (false, true, 10)]);
        assert_eq!(choose_read(ReadFrom::PreferReplica, &s, None, 0), Some(2));
        // The fitter one failed: the other replica, then (both excluded or down) the master.
        assert_eq!(
            choose_read(ReadFrom::PreferReplica, &s, Some(2), 0),
            Some(1)
        );
        let down = shard(false, true, &[(false, false, 1), (false, false, 1)]);
        assert_eq!(
            choose_read(ReadFrom::PreferReplica, &down, None, 0),
            Some(M)
        );
    }

    #[test]
    fn same_zone_prefers_local_replicas_then_remote_ones_then_the_master() {
        let s = shard(true, true, &[(false, true, 1), (true, true, 99)]);
        assert_eq!(choose_read(ReadFrom::SameZone, &s, None, 0), Some(2));
        assert_eq!(choose_read(ReadFrom::SameZone, &s, Some(2), 0), Some(1));
        let only_master = shard(true, true, &[(false, false, 1), (true, false, 1)]);
        assert_eq!(
            choose_read(ReadFrom::SameZone, &only_master, None, 0),
            Some(M)
        );
    }

    #[test]
    fn same_zone_or_master_takes_a_local_master_before_a_remote_replica() {
        let local_master = shard(true, true, &[(false, true, 1)]);
        assert_eq!(
            choose_read(ReadFrom::SameZoneOrMaster, &local_master, None, 0),
            Some(M)
        );
        let remote_master = shard(false, true, &[(false, true, 1)]);
        assert_eq!(
            choose_read(ReadFrom::SameZoneOrMaster, &remote_master, None, 0),
            Some(1)
        );
        let local_replica = shard(true, true, &[(false, true, 1), (true, true, 99)]);
        assert_eq!(
            choose_read(ReadFrom::SameZoneOrMaster, &local_replica, None, 0),
            Some(2)
        );
    }

    #[test]
    fn nearest_takes_the_lowest_score_master_included() {
        let s = shard(false, true, &[(true, true, 70), (false, true, 60)]);
        assert_eq!(choose_read(ReadFrom::Nearest, &s, None, 0), Some(M));
        let slow_master = shard(false, true, &[(true, true, 70), (false, true, 60)])
            .into_iter()
            .map(|mut c| {
                if c.master {
                    c.score = 500;
                }
                c
            })
            .collect::<Vec<_>>();
        assert_eq!(
            choose_read(ReadFrom::Nearest, &slow_master, None, 0),
            Some(2)
        );
    }

    #[test]
    fn a_master_that_is_down_leaves_the_reads_to_its_replicas() {
        // The failover trap: the master is gone, its replica is the freshest copy there is.
        let s = shard(true, false, &[(false, true, 1)]);
        for p in [
            ReadFrom::PreferReplica,
            ReadFrom::SameZone,
            ReadFrom::SameZoneOrMaster,
            ReadFrom::Nearest,
        ] {
            assert_eq!(choose_read(p, &s, None, 0), Some(1), "{p:?}");
        }
        // Nothing usable at all: the master, whose failure the client gets as for a write.
        let none = shard(true, false, &[(false, false, 1)]);
        assert_eq!(choose_read(ReadFrom::SameZone, &none, None, 0), Some(M));
        assert_eq!(choose_read(ReadFrom::SameZone, &none, Some(M), 0), None);
    }

    #[test]
    fn equal_candidates_are_spread_by_client_and_each_client_stays_put() {
        let s = shard(false, true, &[(false, true, 0), (false, true, 0)]);
        let picks: Vec<_> = (0..4)
            .map(|salt| choose_read(ReadFrom::PreferReplica, &s, None, salt))
            .collect();
        assert!(
            picks.contains(&Some(1)) && picks.contains(&Some(2)),
            "{picks:?}"
        );
        assert_eq!(
            choose_read(ReadFrom::PreferReplica, &s, None, 7),
            choose_read(ReadFrom::PreferReplica, &s, None, 7)
        );
    }

    #[test]
    fn skipped_replicas_are_counted_by_why() {
        let mut s = Skipped::default();
        s.count(false, Replication::Online);
        s.count(true, Replication::Syncing);
        s.count(true, Replication::Lagging);
        s.count(false, Replication::Lagging);
        assert_eq!(
            s,
            Skipped {
                down: 2,
                syncing: 1,
                lagging: 1
            }
        );
    }

    #[test]
    fn policy_names_read_back() {
        for name in ReadFrom::NAMES {
            assert_eq!(ReadFrom::parse(name).map(ReadFrom::as_str), Some(name));
        }
        assert_eq!(ReadFrom::parse("replica"), None);
    }

    #[tokio::test]
    async fn keyless_requests_spread_by_client_and_stay_put_per_client() {
        let t = topology(&[("a:1", &[(0, 8000)]), ("b:1", &[(8001, 16383)])]);
        assert_eq!(addr(node_for(&t, None, 0)).as_deref(), Some("a:1"));
        assert_eq!(addr(node_for(&t, None, 1)).as_deref(), Some("b:1"));
        assert_eq!(addr(node_for(&t, None, 3)), addr(node_for(&t, None, 3)));
        assert_eq!(addr(node_for(&topology(&[]), None, 3)), None);
    }
}
