//! Redis Sentinel as a topology source: asks the Sentinels for a named master, confirms it with
//! `ROLE` on the node itself, learns its replicas, and subscribes on every Sentinel to
//! `+switch-master` (and the events that matter) so that a failover is followed at once, not at
//! the next poll.
//!
//! Discovery tries each Sentinel in turn, so losing some of them does not blind the proxy. It
//! must never publish a master that does not say it is one: a Sentinel mid-failover can name a
//! node that has not been promoted yet, and writes sent there would be refused or lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::control::{Control, databases, field, int, join_host_port, redis_version, text};
use super::{Layout, TopologyHandle, TopologySource};
use crate::backend::{Connector, NodeAddr};
use crate::error::TopologyError;

#[derive(Debug, Clone)]
pub struct SentinelSource {
    sentinels: Vec<NodeAddr>,
    master_name: String,
    /// How the Sentinels are reached (with their own password, if any).
    to_sentinels: Connector,
    /// How the master and replicas are reached (`ROLE`, `INFO`), as the data path reaches them.
    to_nodes: Connector,
    timeout: Duration,
    /// The replica a failover in progress is promoting, and until when to believe it. Sentinel
    /// names it only late in the failover (after promotion is confirmed, or at `+switch-master`
    /// for some Sentinels); the old master takes writes until it is reconfigured, and such
    /// writes are lost. Following the promotion as soon as the replica says `ROLE master` keeps
    /// that window to milliseconds.
    promoting: Arc<Mutex<Option<(NodeAddr, Instant)>>>,
    /// Events already logged, with when: every Sentinel announces the same event, and the
    /// log says it once.
    logged: Arc<Mutex<Vec<(String, Instant)>>>,
    /// How long sends to a master being failed over may be paused (`Node::pause`), from the
    /// moment Sentinel picks the replica to promote until the new master is published; `None`
    /// (no failover hold to keep them meanwhile) pauses nothing.
    pause_limit: Option<Duration>,
}

/// How long an event is remembered as logged.
const EVENT_LOG_WINDOW: Duration = Duration::from_secs(30);

/// Sentinel events that change where requests go.
const EVENTS: &[&str] = &[
    "+switch-master",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+failover-end",
    "+failover-end-for-timeout",
    "+sdown",
    "-sdown",
    "+odown",
    "+slave",
    "+role-change",
    "+convert-to-slave",
];
/// How long a promotion seen in an event is believed without Sentinel confirming it.
const PROMOTION_WINDOW: Duration = Duration::from_secs(30);
/// How often, and how many times, the replica being promoted is asked for its role.
const PROMOTION_POLL: Duration = Duration::from_millis(10);
const PROMOTION_POLLS: u32 = 300;

impl SentinelSource {
    pub fn new(
        sentinels: Vec<NodeAddr>,
        master_name: String,
        to_sentinels: Connector,
        to_nodes: Connector,
        timeout: Duration,
    ) -> Self {
        Self {
            sentinels,
            master_name,
            to_sentinels,
            to_nodes,
            timeout,
            promoting: Arc::new(Mutex::new(None)),
            logged: Arc::new(Mutex::new(Vec::new())),
            pause_limit: None,
        }
    }

    /// Pauses sends to a master from the moment Sentinel starts failing it over, for at most
    /// `limit` (the sessions' failover hold keeps the requests meanwhile).
    pub fn with_failover_pause(mut self, limit: Option<Duration>) -> Self {
        self.pause_limit = limit;
        self
    }

    /// Pauses the master a failover is leaving, when it is the one slotgate sends to: what it
    /// would take from now on is lost when it is demoted.
    fn pause_master(&self, payload: &str, handle: &TopologyHandle) {
        let (Some(limit), Some(old)) = (self.pause_limit, event_master(payload)) else {
            return;
        };
        let topology = handle.load_full();
        if let Some(master) = topology.masters().iter().find(|m| *m.addr() == old)
            && !master.is_paused()
        {
            info!(master = %old, "Sentinel is failing the master over: holding its requests for the new one");
            master.pause(limit);
        }
    }

    /// Ends a pause: the failover was given up.
    fn resume_masters(handle: &TopologyHandle) {
        for master in handle.load_full().masters() {
            if master.is_paused() {
                info!(master = %master.addr(), "Sentinel gave the failover up: sending to the master again");
                master.resume();
            }
        }
    }

    /// Whether `event` is news: the first Sentinel to announce it, not the others.
    fn first_to_announce(&self, event: &str) -> bool {
        let mut seen = match self.logged.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        seen.retain(|(_, at)| now.duration_since(*at) < EVENT_LOG_WINDOW);
        if seen.iter().any(|(e, _)| e == event) {
            return false;
        }
        seen.push((event.to_string(), now));
        true
    }

    fn promoting(&self) -> Option<NodeAddr> {
        let mut guard = match self.promoting.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match &*guard {
            Some((addr, until)) if Instant::now() < *until => Some(addr.clone()),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    fn set_promoting(&self, addr: Option<NodeAddr>) {
        let mut guard = match self.promoting.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *guard = addr.map(|a| (a, Instant::now() + PROMOTION_WINDOW));
    }

    /// Polls the replica being promoted until it says it is a master, then asks for a refresh.
    fn follow_promotion(&self, replica: NodeAddr, handle: Arc<TopologyHandle>) {
        self.set_promoting(Some(replica.clone()));
        let me = self.clone();
        tokio::spawn(async move {
            for _ in 0..PROMOTION_POLLS {
                if role_is_master(&replica, &me.to_nodes).await {
                    if me.first_to_announce(&format!("promoted {replica}")) {
                        info!(%replica, "the replica Sentinel is promoting is a master now");
                    }
                    handle.request_refresh_now(Some(&replica));
                    return;
                }
                tokio::time::sleep(PROMOTION_POLL).await;
            }
        });
    }

    async fn connect_sentinel(&self, addr: &NodeAddr) -> Result<Control, TopologyError> {
        Control::connect(addr, &self.to_sentinels).await
    }

    /// Asks one Sentinel, then confirms with the master itself.
    async fn query(&self, sentinel: &NodeAddr) -> Result<Layout, TopologyError> {
        let mut s = self.connect_sentinel(sentinel).await?;
        let reply = s
            .command(
                &["SENTINEL", "get-master-addr-by-name", &self.master_name],
                "SENTINEL get-master-addr-by-name",
            )
            .await?;
        let master = match &reply {
            OwnedFrame::Array(a) => match (a.first().and_then(text), a.get(1).and_then(int)) {
                (Some(host), Some(port)) => match join_host_port(&host, port) {
                    Some(addr) => addr,
                    None => return Err(malformed(sentinel, "SENTINEL get-master-addr-by-name")),
                },
                _ => return Err(malformed(sentinel, "SENTINEL get-master-addr-by-name")),
            },
            OwnedFrame::Null => {
                return Err(TopologyError::ErrorReply {
                    addr: sentinel.clone(),
                    what: "SENTINEL get-master-addr-by-name",
                    reply: format!("no master named '{}'", self.master_name),
                });
            }
            OwnedFrame::Error(e) => {
                return Err(TopologyError::ErrorReply {
                    addr: sentinel.clone(),
                    what: "SENTINEL get-master-addr-by-name",
                    reply: e.clone(),
                });
            }
            _ => return Err(malformed(sentinel, "SENTINEL get-master-addr-by-name")),
        };
        let replicas = match s
            .command(
                &["SENTINEL", "replicas", &self.master_name],
                "SENTINEL replicas",
            )
            .await?
        {
            OwnedFrame::Array(list) => list.iter().filter_map(healthy_replica).collect(),
            _ => Vec::new(),
        };
        // A replica being promoted that already says it is a master wins over the old master,
        // which Sentinel still names until late in the failover.
        let master = match self.promoting() {
            Some(p) if p == master => {
                self.set_promoting(None);
                master
            }
            Some(p) if role_is_master(&p, &self.to_nodes).await => p,
            _ => master,
        };
        // The node itself must agree that it is the master.
        let mut m = Control::connect(&master, &self.to_nodes).await?;
        let role = m.command(&["ROLE"], "ROLE").await?;
        let is_master = matches!(&role, OwnedFrame::Array(a) if a.first().and_then(text).as_deref() == Some("master"));
        if !is_master {
            return Err(TopologyError::ErrorReply {
                addr: master,
                what: "ROLE",
                reply: "the node Sentinel names is not a master (yet)".into(),
            });
        }
        let version = redis_version(&m.command(&["INFO", "server"], "INFO").await?);
        let databases = databases(&mut m).await;
        let replicas = without_master(replicas, &master);
        Ok(Layout::single(master, replicas, version).with_databases(databases))
    }

    /// Subscribes to one Sentinel's events until shutdown, reconnecting after errors.
    async fn watch_one(
        self,
        sentinel: NodeAddr,
        handle: Arc<TopologyHandle>,
        shutdown: CancellationToken,
    ) {
        let mut failures = 0u32;
        loop {
            let session = async {
                let mut c = self.connect_sentinel(&sentinel).await?;
                let mut args = vec!["SUBSCRIBE"];
                args.extend_from_slice(EVENTS);
                let req = crate::protocol::Request::from_args(&args);
                c.call(req.raw(), "SUBSCRIBE").await?;
                debug!("subscribed to Sentinel events");
                failures = 0;
                // A switch may have happened while we were not listening.
                handle.request_refresh(None);
                loop {
                    let msg = c.read_frame("Sentinel event").await?;
                    let OwnedFrame::Array(parts) = msg else {
                        continue;
                    };
                    let (Some(channel), Some(payload)) =
                        (parts.get(1).and_then(text), parts.get(2).and_then(text))
                    else {
                        continue;
                    };
                    if !names_master(&channel, &payload, &self.master_name) {
                        continue;
                    }
                    if matches!(
                        channel.as_str(),
                        "+selected-slave"
                            | "+failover-state-send-slaveof-noone"
                            | "+promoted-slave"
                    ) && let Some(replica) = instance_addr(&payload)
                    {
                        if self.first_to_announce(&format!("{channel} {payload}")) {
                            info!(%channel, %replica, "Sentinel is promoting a replica");
                        }
                        self.pause_master(&payload, &handle);
                        self.follow_promotion(replica, handle.clone());
                        continue;
                    }
                    if channel == "+failover-end-for-timeout" {
                        self.set_promoting(None);
                        Self::resume_masters(&handle);
                    }
                    if channel == "+switch-master" {
                        let mut words = payload.split(' ');
                        let new = match (words.nth(3), words.next()) {
                            (Some(host), Some(port)) => port
                                .parse::<i64>()
                                .ok()
                                .and_then(|p| join_host_port(host, p)),
                            _ => None,
                        };
                        if self.first_to_announce(&format!("{channel} {payload}")) {
                            info!(event = %payload, "Sentinel announced a master switch");
                        } else {
                            debug!(%sentinel, event = %payload, "another Sentinel announced it too");
                        }
                        handle.request_refresh_now(new.as_ref());
                    } else {
                        debug!(%channel, event = %payload, "Sentinel event");
                        handle.request_refresh(None);
                    }
                }
                #[allow(unreachable_code, reason = "the loop only ends with an error")]
                Ok::<(), TopologyError>(())
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = session => if let Err(e) = r {
                    if failures == 0 {
                        warn!(error = %e, "Sentinel subscription lost; reconnecting");
                    } else {
                        debug!(error = %e, failures, "Sentinel still unreachable");
                    }
                    failures = failures.saturating_add(1);
                },
            }
            // 250 ms doubling to 5 s while the Sentinel stays away.
            let backoff =
                Duration::from_millis(250 * 2u64.pow(failures.min(5))).min(Duration::from_secs(5));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }
}

fn malformed(addr: &NodeAddr, what: &'static str) -> TopologyError {
    TopologyError::Malformed {
        addr: addr.clone(),
        what,
    }
}

/// Whether the node at `addr` answers `ROLE` with `master`.
async fn role_is_master(addr: &NodeAddr, via: &Connector) -> bool {
    let ask = async {
        let mut c = Control::connect(addr, via).await?;
        c.command(&["ROLE"], "ROLE").await
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), ask).await,
        Ok(Ok(OwnedFrame::Array(a))) if a.first().and_then(text).as_deref() == Some("master")
    )
}

/// The `ip:port` of the instance an event is about: `<type> <name> <ip> <port> @ ...`.
fn instance_addr(payload: &str) -> Option<NodeAddr> {
    let mut words = payload.split(' ');
    let (_kind, _name, ip, port) = (words.next()?, words.next()?, words.next()?, words.next()?);
    join_host_port(ip, port.parse().ok()?)
}

/// The master an instance event's payload names after its `@`:
/// `<type> <name> <ip> <port> @ <master-name> <master-ip> <master-port>`.
fn event_master(payload: &str) -> Option<NodeAddr> {
    let mut words = payload.split(" @ ").nth(1)?.split(' ');
    let (_name, ip, port) = (words.next()?, words.next()?, words.next()?);
    join_host_port(ip, port.parse().ok()?)
}

/// The replicas without the master: during a failover Sentinel still lists the replica it
/// promoted among the replicas after slotgate has seen it answer `ROLE master`.
fn without_master(mut replicas: Vec<NodeAddr>, master: &NodeAddr) -> Vec<NodeAddr> {
    replicas.retain(|r| r != master);
    replicas
}

/// A replica from `SENTINEL replicas` that is up and linked to its master.
fn healthy_replica(f: &OwnedFrame) -> Option<NodeAddr> {
    let OwnedFrame::Array(kv) = f else {
        return None;
    };
    let flags = field(kv, "flags").and_then(text).unwrap_or_default();
    if flags
        .split(',')
        .any(|f| matches!(f, "s_down" | "o_down" | "disconnected"))
    {
        return None;
    }
    let host = field(kv, "ip").and_then(text)?;
    let port = field(kv, "port").and_then(int)?;
    join_host_port(&host, port)
}

/// Whether a Sentinel event is about our master: `+switch-master <name> ...`, or
/// `<type> <name> <ip> <port> @ <master-name> ...` for instance events.
fn names_master(channel: &str, payload: &str, master: &str) -> bool {
    let mut words = payload.split(' ');
    if channel == "+switch-master" {
        return words.next() == Some(master);
    }
    let kind = words.next();
    let name = words.next();
    if kind == Some("master") {
        return name == Some(master);
    }
    payload
        .split(" @ ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        == Some(master)
}

impl TopologySource for SentinelSource {
    async fn discover(&self, _candidates: &[NodeAddr]) -> Result<Layout, TopologyError> {
        let mut errors = Vec::new();
        for s in &self.sentinels {
            match tokio::time::timeout(self.timeout, self.query(s)).await {
                Ok(Ok(layout)) => return Ok(layout),
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(TopologyError::Unreachable {
                    addr: s.clone(),
                    reason: format!("no answer within {:?}", self.timeout),
                }),
            }
        }
        Err(TopologyError::NoNodeAnswered(errors))
    }

    fn seeds(&self) -> &[NodeAddr] {
        &self.sentinels
    }

    fn watch(&self, handle: Arc<TopologyHandle>, shutdown: CancellationToken) {
        for s in &self.sentinels {
            let span = info_span!("sentinel", addr = %s);
            tokio::spawn(
                self.clone()
                    .watch_one(s.clone(), handle.clone(), shutdown.clone())
                    .instrument(span),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_pick_out_events_about_our_master() {
        assert!(names_master(
            "+switch-master",
            "mymaster 127.0.0.1 6379 127.0.0.1 6380",
            "mymaster"
        ));
        assert!(!names_master(
            "+switch-master",
            "other 127.0.0.1 6379 127.0.0.1 6380",
            "mymaster"
        ));
        assert!(names_master(
            "+sdown",
            "master mymaster 127.0.0.1 6379",
            "mymaster"
        ));
        assert!(names_master(
            "+sdown",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
            "mymaster"
        ));
        assert!(!names_master(
            "+sdown",
            "slave 127.0.0.1:6380 127.0.0.1 6380 @ other 127.0.0.1 6379",
            "mymaster"
        ));
    }

    #[test]
    fn should_read_the_master_an_instance_event_names() {
        let addr = NodeAddr::from;
        assert_eq!(
            event_master("slave 127.0.0.1:7001 127.0.0.1 7001 @ mymaster 127.0.0.1 7000"),
            Some(addr("127.0.0.1:7000"))
        );
        // A master event names no master after an `@`; a cut payload names none.
        assert_eq!(event_master("master mymaster 127.0.0.1 7000"), None);
        assert_eq!(
            event_master("slave a 127.0.0.1 7001 @ mymaster 127.0.0.1"),
            None
        );
        assert_eq!(
            event_master("slave a 127.0.0.1 7001 @ mymaster 127.0.0.1 x"),
            None
        );
    }

    #[test]
    fn should_read_the_instance_an_event_is_about() {
        assert_eq!(
            instance_addr("slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"),
            Some(NodeAddr::from("127.0.0.1:6380"))
        );
        assert_eq!(instance_addr("slave x"), None);
    }

    #[test]
    fn should_never_list_the_master_among_its_replicas() {
        let replicas: Vec<NodeAddr> = vec!["127.0.0.1:6380".into(), "127.0.0.1:6381".into()];
        assert_eq!(
            without_master(replicas.clone(), &"127.0.0.1:6380".into()),
            vec![NodeAddr::from("127.0.0.1:6381")]
        );
        assert_eq!(
            without_master(replicas.clone(), &"127.0.0.1:6379".into()),
            replicas
        );
    }

    #[test]
    fn should_skip_replicas_that_are_down() {
        let r = |flags: &str| {
            OwnedFrame::Array(vec![
                OwnedFrame::BulkString(b"ip".to_vec()),
                OwnedFrame::BulkString(b"127.0.0.1".to_vec()),
                OwnedFrame::BulkString(b"port".to_vec()),
                OwnedFrame::BulkString(b"6380".to_vec()),
                OwnedFrame::BulkString(b"flags".to_vec()),
                OwnedFrame::BulkString(flags.as_bytes().to_vec()),
            ])
        };
        assert_eq!(
            healthy_replica(&r("slave")),
            Some(NodeAddr::from("127.0.0.1:6380"))
        );
        assert_eq!(healthy_replica(&r("s_down,slave")), None);
    }
}
