//! The refresher: one background task that re-learns the topology periodically and on request
//! (a MOVED, a lost connection), debounced, and publishes a new snapshot only when routes change.
//!
//! It asks the node that said MOVED first, then every node of the current snapshot, then the
//! seeds, so losing a seed never blinds the proxy. It must never publish a map that does not
//! cover every slot, and never run two refreshes at once.
//!
//! It owns the topology source and its watchers: a reload may hand it another source (a
//! standalone server replaced by a cluster, a new Sentinel master name). The old source's
//! watchers stop, the new source is asked with its own seeds only (the old snapshot's nodes
//! are not its nodes), and its first layout replaces the snapshot; until it answers, the old
//! snapshot keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{RefreshHint, Topology, TopologyHandle, TopologySource};
use crate::backend::{Backends, NodeAddr};

/// When and how often to refresh.
#[derive(Debug, Clone, Copy)]
pub struct RefreshConfig {
    pub interval: Duration,
    pub debounce: Duration,
    pub min_gap: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
            min_gap: Duration::from_millis(200),
        }
    }
}

/// Counters the refresher keeps (read by INFO).
#[derive(Debug, Default)]
pub struct RefreshStats {
    pub refreshes: AtomicU64,
    pub failures: AtomicU64,
    pub changes: AtomicU64,
    /// Changes in which some master address changed (a failover, a Sentinel switch).
    pub master_switches: AtomicU64,
}

#[allow(clippy::too_many_arguments)]
pub async fn run<S: TopologySource>(
    mut source: S,
    handle: Arc<TopologyHandle>,
    backends: Arc<Backends>,
    mut hints: mpsc::Receiver<RefreshHint>,
    mut switches: mpsc::Receiver<S>,
    config: RefreshConfig,
    stats: Arc<RefreshStats>,
    shutdown: CancellationToken,
) {
    let mut watchers = shutdown.child_token();
    source.watch(handle.clone(), watchers.clone());
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last = Instant::now();
    // A source handed over by a reload that has not answered yet: asked with its own seeds
    // only, and retried at once after a failure, until it does.
    let mut switching = false;
    loop {
        let mut hint: Option<NodeAddr> = None;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            s = switches.recv(), if !switches.is_closed() => {
                let Some(s) = s else { continue };
                info!(seeds = ?s.seeds(), "switching the topology source");
                watchers.cancel();
                watchers = shutdown.child_token();
                s.watch(handle.clone(), watchers.clone());
                source = s;
                switching = true;
            }
            h = hints.recv() => {
                let Some(h) = h else { return };
                hint = h.addr;
                if !h.urgent {
                    tokio::time::sleep(config.debounce).await;
                    tokio::time::sleep_until(last + config.min_gap).await;
                }
                while let Ok(h) = hints.try_recv() {
                    if hint.is_none() { hint = h.addr; }
                }
            }
        }
        last = Instant::now();
        let current = handle.load_full();
        let mut candidates: Vec<NodeAddr> = Vec::new();
        if !switching {
            candidates.extend(hint.clone());
            candidates.extend(current.addresses());
        }
        stats.refreshes.fetch_add(1, Ordering::Relaxed);
        match source.discover(&candidates).await {
            Ok(layout) => {
                if std::mem::take(&mut switching) {
                    info!(seeds = ?source.seeds(), "the new topology source answered");
                }
                // The zones of the snapshot now in force: a reload may have changed them
                // while the source was asked.
                let now = handle.load_full();
                let next = Topology::build(&layout, &backends, now.zones().clone(), now.epoch + 1);
                if next.same_routes(&now) {
                    debug!("topology unchanged");
                    continue;
                }
                let change =
                    crate::topology::TopologyChange::between(&now.routes(), &next.routes());
                info!(
                    epoch = next.epoch,
                    masters = next.masters().len(),
                    %change,
                    "topology changed"
                );
                stats.changes.fetch_add(1, Ordering::Relaxed);
                if !change.masters_added.is_empty() || !change.masters_removed.is_empty() {
                    stats.master_switches.fetch_add(1, Ordering::Relaxed);
                }
                // A node keeps its connections only in the role it still has: a master that
                // became a replica loses its master connections (and gets replica ones when a
                // read policy wants them).
                let masters: Vec<NodeAddr> =
                    next.masters().iter().map(|m| m.addr().clone()).collect();
                let replicas: Vec<NodeAddr> = next
                    .replica_nodes()
                    .map(|(_, r)| r.addr().clone())
                    .collect();
                handle.store(next);
                backends.retain(&masters, &replicas);
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "topology refresh failed; keeping the last good map");
                if switching {
                    // The new source again soon, not at the next periodic refresh.
                    tokio::time::sleep(config.min_gap).await;
                    handle.request_refresh_now(None);
                }
            }
        }
    }
}
