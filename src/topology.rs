//! The topology: an immutable snapshot of which master serves each slot, which replicas follow
//! it, and the zone of every node (from the zone map, when the snapshot is built), published
//! atomically with arc-swap and replaced whole by the refresher.
//!
//! The request path only reads snapshots. A MOVED patches one slot through [`TopologyHandle::
//! patch_slot`] and asks for a debounced background refresh; nothing on the request path ever
//! waits for a refresh. A [`TopologySource`] (Redis Cluster today; Sentinel and standalone
//! beside it) says what the layout is; this module never talks to a node itself.

pub mod cluster;
pub mod control;
pub mod refresh;
pub mod replica_health;
pub mod sentinel;
pub mod standalone;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::backend::{Backends, Node, NodeAddr};
use crate::error::TopologyError;
use crate::router::SLOTS;
use crate::zones::ZoneMap;

/// The zone of the node at `addr`, as the snapshot keeps it.
fn zone_of(zones: &ZoneMap, addr: &NodeAddr) -> Option<Arc<str>> {
    zones.zone_of(addr).map(Arc::from)
}

/// One shard as a topology source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    pub master: NodeAddr,
    pub replicas: Vec<NodeAddr>,
    /// Inclusive slot ranges.
    pub ranges: Vec<(u16, u16)>,
}

/// What a topology source learned: every shard, its master and its slots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Layout {
    pub shards: Vec<ShardLayout>,
    /// `redis_version` of the node that answered, for HELLO and INFO.
    pub version: Option<String>,
    /// True for Sentinel and standalone backends: one master holds every key, there are no
    /// slots, and CROSSSLOT rules do not apply.
    pub unslotted: bool,
    /// The master's `databases` setting (`CONFIG GET databases`), when it would say; a
    /// cluster has database 0 only.
    pub databases: Option<u32>,
}

impl Layout {
    /// A layout of one master (and its replicas) that serves every key.
    pub fn single(master: NodeAddr, replicas: Vec<NodeAddr>, version: Option<String>) -> Layout {
        Layout {
            shards: vec![ShardLayout {
                master,
                replicas,
                ranges: vec![(0, (SLOTS - 1) as u16)],
            }],
            version,
            unslotted: true,
            databases: None,
        }
    }

    /// The same layout, with the number of databases the master has.
    pub fn with_databases(mut self, databases: Option<u32>) -> Layout {
        self.databases = databases;
        self
    }
}

impl Layout {
    /// How many slots have a master.
    pub fn covered(&self) -> usize {
        let mut seen = vec![false; SLOTS];
        for s in &self.shards {
            for &(lo, hi) in &s.ranges {
                for slot in lo..=hi {
                    if let Some(x) = seen.get_mut(slot as usize) {
                        *x = true;
                    }
                }
            }
        }
        seen.iter().filter(|&&x| x).count()
    }
}

/// Where a topology comes from. Implementations do I/O; they must bound every wait.
pub trait TopologySource: Send + Sync + 'static {
    /// Learns the layout, asking `candidates` first (in order), then the source's own seeds.
    fn discover(
        &self,
        candidates: &[NodeAddr],
    ) -> impl Future<Output = Result<Layout, TopologyError>> + Send;

    /// Starts whatever background watchers the source has (Sentinel's `+switch-master`
    /// subscriptions); they ask `handle` for refreshes. The default has none.
    fn watch(&self, handle: Arc<TopologyHandle>, shutdown: tokio_util::sync::CancellationToken) {
        let _ = (handle, shutdown);
    }

    /// Seed addresses, for logging and as the last candidates.
    fn seeds(&self) -> &[NodeAddr];
}

/// The topology sources slotgate has, as one type (the trait's futures are not object-safe).
#[derive(Debug, Clone)]
pub enum AnySource {
    Cluster(cluster::ClusterSource),
    Sentinel(sentinel::SentinelSource),
    Standalone(standalone::StandaloneSource),
}

impl AnySource {
    pub fn kind(&self) -> &'static str {
        match self {
            AnySource::Cluster(_) => "cluster",
            AnySource::Sentinel(_) => "sentinel",
            AnySource::Standalone(_) => "standalone",
        }
    }
}

impl TopologySource for AnySource {
    async fn discover(&self, candidates: &[NodeAddr]) -> Result<Layout, TopologyError> {
        match self {
            AnySource::Cluster(s) => s.discover(candidates).await,
            AnySource::Sentinel(s) => s.discover(candidates).await,
            AnySource::Standalone(s) => s.discover(candidates).await,
        }
    }

    fn seeds(&self) -> &[NodeAddr] {
        match self {
            AnySource::Cluster(s) => s.seeds(),
            AnySource::Sentinel(s) => s.seeds(),
            AnySource::Standalone(s) => s.seeds(),
        }
    }

    fn watch(&self, handle: Arc<TopologyHandle>, shutdown: tokio_util::sync::CancellationToken) {
        match self {
            AnySource::Cluster(s) => s.watch(handle, shutdown),
            AnySource::Sentinel(s) => s.watch(handle, shutdown),
            AnySource::Standalone(s) => s.watch(handle, shutdown),
        }
    }
}

const NO_NODE: u16 = u16::MAX;

/// A replica in a snapshot: where it is, in which zone, and its node handle when a read policy
/// sends it reads (`None` otherwise: it then has no connections).
#[derive(Debug, Clone)]
pub struct Replica {
    pub addr: NodeAddr,
    pub zone: Option<Arc<str>>,
    pub node: Option<Arc<Node>>,
}

impl PartialEq for Replica {
    fn eq(&self, other: &Replica) -> bool {
        self.addr == other.addr && self.zone == other.zone
    }
}

/// An immutable routing snapshot: shards (a master and its replicas, each with its zone) and
/// the slot map.
#[derive(Debug)]
pub struct Topology {
    pub epoch: u64,
    pub created: Instant,
    masters: Vec<Arc<Node>>,
    /// Each master's zone, by shard.
    master_zones: Vec<Option<Arc<str>>>,
    replicas: Vec<Vec<Replica>>,
    /// The zone map the zones were read from, for the next snapshot.
    zones: Arc<ZoneMap>,
    /// For each slot, an index into `masters` (or `NO_NODE`).
    slots: Box<[u16]>,
    pub version: String,
    /// True for a Redis Cluster; false for one master (Sentinel, standalone): no CROSSSLOT.
    pub slotted: bool,
    /// The databases `SELECT` may choose: 1 for a cluster; the master's `databases` otherwise
    /// (Redis' default, 16, when the master would not say).
    pub databases: u32,
}

/// Redis' default `databases`.
pub const DEFAULT_DATABASES: u32 = 16;

impl Topology {
    /// Builds a snapshot from a layout, taking node handles from `backends` and each node's
    /// zone from `zones`.
    pub fn build(
        layout: &Layout,
        backends: &Backends,
        zones: Arc<ZoneMap>,
        epoch: u64,
    ) -> Topology {
        let mut masters = Vec::with_capacity(layout.shards.len());
        let mut master_zones = Vec::with_capacity(layout.shards.len());
        let mut replicas = Vec::with_capacity(layout.shards.len());
        let mut slots = vec![NO_NODE; SLOTS].into_boxed_slice();
        for shard in &layout.shards {
            let idx = masters.len() as u16;
            masters.push(backends.node(&shard.master));
            master_zones.push(zone_of(&zones, &shard.master));
            replicas.push(
                shard
                    .replicas
                    .iter()
                    .map(|r| Replica {
                        addr: r.clone(),
                        zone: zone_of(&zones, r),
                        node: backends.replica(r),
                    })
                    .collect(),
            );
            for &(lo, hi) in &shard.ranges {
                for s in lo..=hi {
                    if let Some(x) = slots.get_mut(s as usize) {
                        *x = idx;
                    }
                }
            }
        }
        Topology {
            epoch,
            created: Instant::now(),
            masters,
            master_zones,
            replicas,
            zones,
            slots,
            version: layout.version.clone().unwrap_or_else(|| "7.0.0".into()),
            slotted: !layout.unslotted,
            databases: if layout.unslotted {
                layout.databases.unwrap_or(DEFAULT_DATABASES).max(1)
            } else {
                1
            },
        }
    }

    /// The master serving `slot`.
    pub fn master_for_slot(&self, slot: u16) -> Option<&Arc<Node>> {
        let idx = *self.slots.get(slot as usize)?;
        self.masters.get(idx as usize)
    }

    pub fn masters(&self) -> &[Arc<Node>] {
        &self.masters
    }

    /// The shard (an index into [`Self::masters`]) serving `slot`.
    #[inline]
    pub fn shard_of(&self, slot: u16) -> Option<usize> {
        let idx = *self.slots.get(slot as usize)?;
        (idx != NO_NODE).then_some(idx as usize)
    }

    /// The replica nodes that have connections (a read policy uses them), for the replica
    /// checker and for keeping their connections across refreshes.
    pub fn replica_nodes(&self) -> impl Iterator<Item = (usize, &Arc<Node>)> {
        self.replicas.iter().enumerate().flat_map(|(shard, rs)| {
            rs.iter()
                .filter_map(move |r| Some((shard, r.node.as_ref()?)))
        })
    }

    /// The replicas of the shard whose master is `masters()[shard]`.
    pub fn replicas_of(&self, shard: usize) -> &[Replica] {
        self.replicas.get(shard).map_or(&[], |r| r.as_slice())
    }

    /// The zone of the shard's master.
    pub fn master_zone(&self, shard: usize) -> Option<&str> {
        self.master_zones.get(shard).and_then(|z| z.as_deref())
    }

    /// The zone map this snapshot's zones come from.
    pub fn zones(&self) -> &Arc<ZoneMap> {
        &self.zones
    }

    /// The slot ranges (inclusive) the shard's master serves.
    pub fn ranges_of(&self, shard: usize) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &idx) in self.slots.iter().enumerate() {
            if idx as usize != shard {
                continue;
            }
            let slot = slot as u16;
            match out.last_mut() {
                Some((_, hi)) if *hi + 1 == slot => *hi = slot,
                _ => out.push((slot, slot)),
            }
        }
        out
    }

    /// Every node address in the snapshot, masters first.
    pub fn addresses(&self) -> Vec<NodeAddr> {
        let mut v: Vec<NodeAddr> = self.masters.iter().map(|m| m.addr().clone()).collect();
        for r in self.replicas.iter().flatten() {
            v.push(r.addr.clone());
        }
        v
    }

    /// How many slots have a master.
    pub fn covered(&self) -> usize {
        self.slots.iter().filter(|&&i| i != NO_NODE).count()
    }

    /// A copy with `slot` served by `node` (after a MOVED).
    pub fn with_slot_moved(&self, slot: u16, node: Arc<Node>) -> Topology {
        let mut masters = self.masters.clone();
        let mut master_zones = self.master_zones.clone();
        let mut replicas = self.replicas.clone();
        let idx = match masters.iter().position(|m| m.addr() == node.addr()) {
            Some(i) => i,
            None => {
                master_zones.push(zone_of(&self.zones, node.addr()));
                masters.push(node);
                replicas.push(Vec::new());
                masters.len() - 1
            }
        };
        let mut slots = self.slots.clone();
        if let Some(x) = slots.get_mut(slot as usize) {
            *x = idx as u16;
        }
        self.next(masters, master_zones, replicas, self.zones.clone(), slots)
    }

    /// A copy whose node handles are taken from `backends` again (after
    /// [`Backends::replace_config`], new ones with the new settings): the same masters,
    /// replicas, zones and slots.
    pub fn renewed(&self, backends: &Backends) -> Topology {
        let masters = self
            .masters
            .iter()
            .map(|m| backends.node(m.addr()))
            .collect();
        let replicas = self.replicas_with(|r| Replica {
            node: backends.replica(&r.addr),
            ..r.clone()
        });
        self.next(
            masters,
            self.master_zones.clone(),
            replicas,
            self.zones.clone(),
            self.slots.clone(),
        )
    }

    /// A copy whose nodes' zones are read from `zones` (a reload's zone map).
    pub fn with_zones(&self, zones: Arc<ZoneMap>) -> Topology {
        let master_zones = self
            .masters
            .iter()
            .map(|m| zone_of(&zones, m.addr()))
            .collect();
        let replicas = self.replicas_with(|r| Replica {
            zone: zone_of(&zones, &r.addr),
            ..r.clone()
        });
        self.next(
            self.masters.clone(),
            master_zones,
            replicas,
            zones,
            self.slots.clone(),
        )
    }

    fn replicas_with(&self, f: impl Fn(&Replica) -> Replica) -> Vec<Vec<Replica>> {
        self.replicas
            .iter()
            .map(|rs| rs.iter().map(&f).collect())
            .collect()
    }

    /// The next snapshot: these nodes, zones and slots, this one's server facts.
    fn next(
        &self,
        masters: Vec<Arc<Node>>,
        master_zones: Vec<Option<Arc<str>>>,
        replicas: Vec<Vec<Replica>>,
        zones: Arc<ZoneMap>,
        slots: Box<[u16]>,
    ) -> Topology {
        Topology {
            epoch: self.epoch + 1,
            created: Instant::now(),
            masters,
            master_zones,
            replicas,
            zones,
            slots,
            version: self.version.clone(),
            slotted: self.slotted,
            databases: self.databases,
        }
    }

    /// True when both snapshots route every slot to the same address and list the same replicas.
    pub fn same_routes(&self, other: &Topology) -> bool {
        if self.slotted != other.slotted
            || self.databases != other.databases
            || self.replicas_sorted() != other.replicas_sorted()
        {
            return false;
        }
        self.slots.iter().zip(other.slots.iter()).all(|(&a, &b)| {
            let a = self.masters.get(a as usize).map(|n| n.addr());
            let b = other.masters.get(b as usize).map(|n| n.addr());
            a == b
        })
    }

    fn replicas_sorted(&self) -> Vec<(NodeAddr, Vec<NodeAddr>)> {
        let mut v: Vec<(NodeAddr, Vec<NodeAddr>)> = self
            .masters
            .iter()
            .zip(&self.replicas)
            .map(|(m, r)| {
                let mut r: Vec<NodeAddr> = r.iter().map(|r| r.addr.clone()).collect();
                r.sort();
                (m.addr().clone(), r)
            })
            .collect();
        v.sort();
        v
    }
}

/// A request for a refresh: where to ask first, and whether it may wait for the debounce.
#[derive(Debug, Clone)]
pub struct RefreshHint {
    pub addr: Option<NodeAddr>,
    pub urgent: bool,
}

/// The shared, swappable current topology plus the channel that asks for a refresh.
#[derive(Debug)]
pub struct TopologyHandle {
    current: Arc<ArcSwap<Topology>>,
    hints: mpsc::Sender<RefreshHint>,
}

impl TopologyHandle {
    pub fn new(initial: Topology) -> (Arc<TopologyHandle>, mpsc::Receiver<RefreshHint>) {
        let (tx, rx) = mpsc::channel(64);
        (
            Arc::new(TopologyHandle {
                current: Arc::new(ArcSwap::from_pointee(initial)),
                hints: tx,
            }),
            rx,
        )
    }

    /// A per-session cache: loads cost a pointer compare until the snapshot changes.
    pub fn cache(&self) -> arc_swap::Cache<Arc<ArcSwap<Topology>>, Arc<Topology>> {
        arc_swap::Cache::new(self.current.clone())
    }

    pub fn load_full(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    pub fn store(&self, t: Topology) {
        self.current.store(Arc::new(t));
    }

    /// Asks the refresher for a refresh, optionally starting at `hint` (the node that said
    /// MOVED). Never waits: if a refresh is already queued, this one is dropped.
    pub fn request_refresh(&self, hint: Option<&NodeAddr>) {
        let _ = self.hints.try_send(RefreshHint {
            addr: hint.cloned(),
            urgent: false,
        });
    }

    /// Like [`Self::request_refresh`], without the debounce: a master has just been promoted
    /// and every write meanwhile goes to the old one.
    pub fn request_refresh_now(&self, hint: Option<&NodeAddr>) {
        let _ = self.hints.try_send(RefreshHint {
            addr: hint.cloned(),
            urgent: true,
        });
    }

    /// Takes every node handle from `backends` again (a reload replaced the backends'
    /// settings): the current snapshot is replaced by one with the new nodes.
    pub fn renew(&self, backends: &Backends) {
        self.current.rcu(|t| Arc::new(t.renewed(backends)));
    }

    /// Reads every node's zone from `zones` from now on (a reload): the current snapshot is
    /// replaced by one with the new zones, and the refresher builds later ones from it.
    pub fn rezone(&self, zones: Arc<ZoneMap>) {
        self.current.rcu(|t| Arc::new(t.with_zones(zones.clone())));
    }

    /// Routes `slot` to `node` at once (a MOVED said so).
    pub fn patch_slot(&self, slot: u16, node: Arc<Node>) {
        self.current.rcu(|t| {
            if t.master_for_slot(slot)
                .is_some_and(|m| m.addr() == node.addr())
            {
                return t.clone();
            }
            Arc::new(t.with_slot_moved(slot, node.clone()))
        });
    }
}

/// What routes by: the masters, the replicas and each slot's master, by address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub masters: std::collections::BTreeSet<NodeAddr>,
    pub replicas: std::collections::BTreeSet<NodeAddr>,
    /// Each slot's master (empty when the topology has no slots).
    pub owners: Vec<Option<NodeAddr>>,
}

impl Topology {
    /// The snapshot's routes, to say what changed between two of them.
    pub fn routes(&self) -> Routes {
        Routes {
            masters: self.masters.iter().map(|m| m.addr().clone()).collect(),
            replicas: self
                .replicas
                .iter()
                .flatten()
                .map(|r| r.addr.clone())
                .collect(),
            owners: if self.slotted {
                self.slots
                    .iter()
                    .map(|&i| self.masters.get(i as usize).map(|m| m.addr().clone()))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// What a new topology changed, for the log line that announces it: never an empty line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyChange {
    pub masters_added: Vec<NodeAddr>,
    pub masters_removed: Vec<NodeAddr>,
    pub replicas_added: Vec<NodeAddr>,
    pub replicas_removed: Vec<NodeAddr>,
    pub slots_moved: usize,
}

impl TopologyChange {
    pub fn between(before: &Routes, after: &Routes) -> TopologyChange {
        let diff = |a: &std::collections::BTreeSet<NodeAddr>,
                    b: &std::collections::BTreeSet<NodeAddr>| {
            a.difference(b).cloned().collect::<Vec<_>>()
        };
        TopologyChange {
            masters_added: diff(&after.masters, &before.masters),
            masters_removed: diff(&before.masters, &after.masters),
            replicas_added: diff(&after.replicas, &before.replicas),
            replicas_removed: diff(&before.replicas, &after.replicas),
            slots_moved: before
                .owners
                .iter()
                .zip(&after.owners)
                .filter(|(a, b)| a != b)
                .count(),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == TopologyChange::default()
    }
}

impl std::fmt::Display for TopologyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let list = |v: &[NodeAddr]| v.iter().map(|a| &**a).collect::<Vec<_>>().join(",");
        for (what, v) in [
            ("new masters", &self.masters_added),
            ("masters gone", &self.masters_removed),
            ("new replicas", &self.replicas_added),
            ("replicas gone", &self.replicas_removed),
        ] {
            if !v.is_empty() {
                parts.push(format!("{what} {}", list(v)));
            }
        }
        if self.slots_moved > 0 {
            parts.push(format!("{} slots moved", self.slots_moved));
        }
        if parts.is_empty() {
            parts.push("replicas reassigned".into());
        }
        f.write_str(&parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Node handles start their connections on a runtime (to addresses that do not resolve
    // here: they only retry in the background).
    #[tokio::test]
    async fn every_node_of_a_snapshot_carries_its_zone_and_a_moved_slot_keeps_them() {
        let backends = Backends::new(
            crate::backend::BackendConfig::default(),
            Arc::new(crate::workers::Workers::single()),
        );
        let mut zones = ZoneMap::default();
        zones.add("a", "10.0.1.0/24").unwrap();
        zones.add("b", "10.0.2.0/24").unwrap();
        let layout = Layout {
            shards: vec![ShardLayout {
                master: "10.0.1.1:7000".into(),
                replicas: vec!["10.0.2.1:7000".into(), "10.0.9.1:7000".into()],
                ranges: vec![(0, 16383)],
            }],
            ..Layout::default()
        };
        let t = Topology::build(&layout, &backends, Arc::new(zones), 1);
        assert_eq!(t.master_zone(0), Some("a"));
        let zone = |r: &Replica| r.zone.as_deref().map(str::to_string);
        let got: Vec<Option<String>> = t.replicas_of(0).iter().map(zone).collect();
        assert_eq!(got, [Some("b".to_string()), None]);
        // A MOVED to a node the snapshot did not have: a new shard, its zone read from the map.
        let moved = t.with_slot_moved(5, backends.node(&"10.0.2.7:7000".into()));
        assert_eq!(moved.master_zone(1), Some("b"));
        assert_eq!(moved.replicas_of(0), t.replicas_of(0));
    }

    fn routes(masters: &[&str], replicas: &[&str], owners: &[&str]) -> Routes {
        Routes {
            masters: masters.iter().map(|&m| NodeAddr::from(m)).collect(),
            replicas: replicas.iter().map(|&m| NodeAddr::from(m)).collect(),
            owners: owners.iter().map(|&m| Some(NodeAddr::from(m))).collect(),
        }
    }

    #[test]
    fn should_name_a_failover_as_a_master_swapped_with_its_replica() {
        let before = routes(&["a:1", "b:1"], &["c:1"], &["a:1", "a:1", "b:1"]);
        let after = routes(&["c:1", "b:1"], &["a:1"], &["c:1", "c:1", "b:1"]);
        let change = TopologyChange::between(&before, &after);
        assert_eq!(
            change.to_string(),
            "new masters c:1; masters gone a:1; new replicas a:1; replicas gone c:1; 2 slots moved"
        );
    }

    #[test]
    fn should_count_slots_moved_by_a_resharding() {
        let before = routes(&["a:1", "b:1"], &[], &["a:1", "a:1", "b:1"]);
        let after = routes(&["a:1", "b:1"], &[], &["a:1", "b:1", "b:1"]);
        let change = TopologyChange::between(&before, &after);
        assert_eq!(change.to_string(), "1 slots moved");
        assert!(TopologyChange::between(&before, &before).is_empty());
    }
}
