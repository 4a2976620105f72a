//! The replica checker: while a read policy sends reads to replicas, it reads each master's
//! `INFO replication` every `check_interval` and tells each replica node of the current
//! snapshot whether it may serve reads ([`Replication`]): connected to its master and online
//! (not in its initial sync), no further behind than `max_replica_lag` (the seconds since its
//! last acknowledgement, as the master counts them). A replica that was unfit (back from a
//! stall, a restart, a resync) serves again only once it holds what its master held one check
//! earlier (its acknowledged offset against the master's offset at the last check).
//!
//! The verdict is [`verdict`], a pure function of what the master said. This module must never
//! keep a replica from serving because its master cannot be asked: while a master is down every
//! replica of it is cut off, yet it is the freshest copy there is (the failover trap), so its
//! replicas then stay `Unknown`, which serves. It never blocks the request path: sessions read
//! the verdict from the node's atomics.
//!
//! It also ages the latency figure reads choose by: a node that got no request since the last
//! check (reads moved away from it when it was slow) has its moving average halved, so that it
//! is tried again once it looks no worse than the others, rather than shunned for ever on an
//! old figure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::TopologyHandle;
use super::control::{self, Control};
use crate::backend::{Connector, NodeAddr, Replication};
use crate::config::ReadsConfig;

/// One `slaveN:` line of a master's `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    /// `ip:port` as the replica announced itself.
    pub addr: NodeAddr,
    /// `state=online` (not waiting for or receiving its initial sync).
    pub online: bool,
    /// Seconds since the replica's last acknowledgement.
    pub lag_secs: u64,
    /// The replication offset the replica last acknowledged.
    pub offset: u64,
}

/// What a master says about its replication: its own offset and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterReport {
    pub offset: u64,
    pub replicas: Vec<ReplicaReport>,
}

/// A master's offset and the replicas it lists in its `INFO replication` text; `None` when the
/// node does not say it is a master.
pub fn parse_replication(info: &str) -> Option<MasterReport> {
    let mut master = false;
    let mut offset = 0;
    let mut out = Vec::new();
    for line in info.lines().map(str::trim_end) {
        if line == "role:master" {
            master = true;
        }
        if let Some(o) = line.strip_prefix("master_repl_offset:") {
            offset = o.parse().unwrap_or(0);
        }
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if !name.starts_with("slave") || !name[5..].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let kv = |k: &str| {
            fields
                .split(',')
                .find_map(|p| p.strip_prefix(k)?.strip_prefix('='))
        };
        let (Some(ip), Some(port)) = (kv("ip"), kv("port").and_then(|p| p.parse::<i64>().ok()))
        else {
            continue;
        };
        let Some(addr) = control::join_host_port(ip, port) else {
            continue;
        };
        out.push(ReplicaReport {
            addr,
            online: kv("state") == Some("online"),
            lag_secs: kv("lag").and_then(|l| l.parse().ok()).unwrap_or(0),
            offset: kv("offset").and_then(|l| l.parse().ok()).unwrap_or(0),
        });
    }
    master.then_some(MasterReport {
        offset,
        replicas: out,
    })
}

/// What a replica is fit for, from its master's answer: `reports` is `None` when the master
/// could not be asked (or does not say it is a master), and `comparable` says whether the
/// master names its replicas the way the snapshot does (every line it lists is a replica the
/// snapshot knows), so that a replica it does not list is known to be disconnected rather than
/// named differently. `catch_up` is, for a replica that was unfit, the master's offset at the
/// check before, which it must have reached to serve again. Returns the state and the lag in
/// milliseconds when known.
pub fn verdict(
    addr: &str,
    reports: Option<&[ReplicaReport]>,
    comparable: bool,
    catch_up: Option<u64>,
    max_lag: Duration,
) -> (Replication, Option<u64>) {
    let Some(reports) = reports else {
        // The failover trap: a master that cannot be asked says nothing against its replicas.
        return (Replication::Unknown, None);
    };
    match reports.iter().find(|r| r.addr.as_str() == addr) {
        None if comparable => (Replication::Syncing, None),
        None => (Replication::Unknown, None),
        Some(r) if !r.online => (Replication::Syncing, None),
        Some(r) => {
            let lag_ms = r.lag_secs.saturating_mul(1000);
            let behind = catch_up.is_some_and(|o| r.offset < o);
            let state = if u128::from(lag_ms) > max_lag.as_millis() || behind {
                Replication::Lagging
            } else {
                Replication::Online
            };
            (state, Some(lag_ms))
        }
    }
}

/// How long one master may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks the replicas of the current snapshot every `cfg.check_interval` until `shutdown`.
pub async fn run(
    handle: Arc<TopologyHandle>,
    backends: Arc<crate::backend::Backends>,
    cfg: ReadsConfig,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(cfg.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One control connection per master, kept between checks, dropped when it fails.
    let mut links: HashMap<NodeAddr, Control> = HashMap::new();
    // Each master's offset at the last check.
    let mut offsets: HashMap<NodeAddr, u64> = HashMap::new();
    // The backends' settings the links were opened with: a reload's new ones (a new password)
    // are used from the next check on.
    let mut settings = backends.config();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = backends.config();
        if !Arc::ptr_eq(&now, &settings) {
            links.clear();
            settings = now;
        }
        let connector = &settings.connector;
        let topo = handle.load_full();
        let known: Vec<&str> = topo.replica_nodes().map(|(_, r)| &**r.addr()).collect();
        for (shard, master) in topo.masters().iter().enumerate() {
            let replicas: Vec<_> = topo
                .replicas_of(shard)
                .iter()
                .filter_map(|r| r.node.clone())
                .collect();
            if replicas.is_empty() {
                continue;
            }
            master.metrics().age_idle_latency();
            let report = ask(&mut links, master.addr(), connector).await;
            let comparable = report
                .as_ref()
                .is_some_and(|m| m.replicas.iter().all(|r| known.contains(&r.addr.as_str())));
            let previous = match &report {
                Some(m) => offsets.insert(master.addr().clone(), m.offset).unwrap_or(0),
                None => offsets.remove(master.addr()).unwrap_or(0),
            };
            let reports = report.as_ref().map(|m| m.replicas.as_slice());
            for node in replicas {
                let before = node.replication();
                let catch_up = (!before.serves_reads()).then_some(previous);
                let (state, lag) = verdict(
                    node.addr(),
                    reports,
                    comparable,
                    catch_up,
                    cfg.max_replica_lag,
                );
                node.set_replication(state, lag);
                node.metrics().age_idle_latency();
                // Not the first verdict on a fit replica (unknown to online): every other change.
                if before != state && (before, state) != (Replication::Unknown, Replication::Online)
                {
                    info!(replica = %node.addr(), from = before.as_str(), to = state.as_str(), lag_ms = lag, "replica fitness for reads changed");
                }
            }
        }
        links.retain(|addr, _| topo.masters().iter().any(|m| m.addr() == addr));
        offsets.retain(|addr, _| topo.masters().iter().any(|m| m.addr() == addr));
    }
}

/// What the master says of its replication, or `None` when it cannot be asked.
async fn ask(
    links: &mut HashMap<NodeAddr, Control>,
    master: &NodeAddr,
    connector: &Connector,
) -> Option<MasterReport> {
    let answer = tokio::time::timeout(ASK_TIMEOUT, async {
        if !links.contains_key(master) {
            let c = Control::connect(master, connector).await?;
            links.insert(master.clone(), c);
        }
        let c = links
            .get_mut(master)
            .ok_or_else(|| crate::error::TopologyError::Unreachable {
                addr: master.clone(),
                reason: "no connection".into(),
            })?;
        c.command(&["INFO", "replication"], "INFO").await
    })
    .await;
    match answer {
        Ok(Ok(frame)) => control::text(&frame).and_then(|t| parse_replication(&t)),
        Ok(Err(e)) => {
            debug!(node = %master, error = %e, "INFO replication failed");
            links.remove(master);
            None
        }
        Err(_) => {
            debug!(node = %master, "INFO replication timed out");
            links.remove(master);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
        slave0:ip=127.0.0.2,port=7001,state=online,offset=1000,lag=0\r\n\
        slave1:ip=127.0.0.3,port=7002,state=wait_bgsave,offset=0,lag=4\r\n\
        master_failover_state:no-failover\r\nmaster_repl_offset:1000\r\n";

    fn reports() -> Vec<ReplicaReport> {
        parse_replication(INFO).unwrap().replicas
    }

    #[test]
    fn reads_every_replica_line_of_a_master() {
        assert_eq!(
            reports(),
            [
                ReplicaReport {
                    addr: "127.0.0.2:7001".into(),
                    online: true,
                    lag_secs: 0,
                    offset: 1000,
                },
                ReplicaReport {
                    addr: "127.0.0.3:7002".into(),
                    online: false,
                    lag_secs: 4,
                    offset: 0,
                },
            ]
        );
        assert_eq!(parse_replication(INFO).unwrap().offset, 1000);
        // A replica's own INFO says role:slave: nothing to judge by.
        assert_eq!(
            parse_replication("role:slave\r\nmaster_link_status:down\r\n"),
            None
        );
    }

    const LAG: Duration = Duration::from_secs(2);

    #[test]
    fn an_online_replica_within_the_lag_serves() {
        let r = reports();
        assert_eq!(
            verdict("127.0.0.2:7001", Some(&r), true, Some(900), LAG),
            (Replication::Online, Some(0))
        );
    }

    #[test]
    fn a_replica_back_from_a_stall_waits_until_it_holds_what_its_master_held() {
        // Acknowledged recently, but behind where the master was at the last check.
        let r = reports();
        assert_eq!(
            verdict("127.0.0.2:7001", Some(&r), true, Some(1001), LAG),
            (Replication::Lagging, Some(0))
        );
        // A replica that has been serving is not held to it (its last acknowledgement may be
        // up to a second old).
        assert_eq!(
            verdict("127.0.0.2:7001", Some(&r), true, None, LAG).0,
            Replication::Online
        );
    }

    #[test]
    fn a_replica_in_its_initial_sync_or_not_listed_does_not() {
        let r = reports();
        assert_eq!(
            verdict("127.0.0.3:7002", Some(&r), true, None, LAG).0,
            Replication::Syncing
        );
        assert_eq!(
            verdict("127.0.0.4:7003", Some(&r), true, None, LAG).0,
            Replication::Syncing
        );
        // Named otherwise by the master (a host name in the snapshot): nothing is known.
        assert_eq!(
            verdict("replica-4:7003", Some(&r), false, None, LAG).0,
            Replication::Unknown
        );
    }

    #[test]
    fn a_replica_behind_by_more_than_the_limit_lags() {
        let r = [ReplicaReport {
            addr: "127.0.0.2:7001".into(),
            online: true,
            lag_secs: 3,
            offset: 5,
        }];
        assert_eq!(
            verdict("127.0.0.2:7001", Some(&r), true, None, LAG),
            (Replication::Lagging, Some(3000))
        );
    }

    #[test]
    fn a_master_that_cannot_be_asked_leaves_its_replicas_serving() {
        let (state, lag) = verdict("127.0.0.2:7001", None, true, None, LAG);
        assert_eq!((state, lag), (Replication::Unknown, None));
        assert!(state.serves_reads());
    }
}
