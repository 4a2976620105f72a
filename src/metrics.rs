//! Observability: every metric name as a constant, the Prometheus recorder, the per-node and
//! per-command handles, and a small lock-free latency histogram that gives in-process
//! percentiles (for `/topology`, INFO and the health score).
//!
//! Handles are created once (when a node appears, when the command table is built) and never
//! looked up by name on the request path. Nothing here may block or allocate per request.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram, IntoF64, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Metric names. Dashboards and alert rules in `deploy/` use exactly these.
pub mod names {
    pub const BACKEND_REQUEST_DURATION: &str = "slotgate_backend_request_duration_seconds";
    pub const BACKEND_REQUESTS: &str = "slotgate_backend_requests_total";
    pub const BACKEND_ERRORS: &str = "slotgate_backend_errors_total";
    pub const BACKEND_IN_FLIGHT: &str = "slotgate_backend_in_flight";
    pub const BACKEND_CONNECTED: &str = "slotgate_backend_connected";
    pub const BACKEND_CONNECTS: &str = "slotgate_backend_connects_total";
    pub const NODE_INFO: &str = "slotgate_node_info";
    pub const NODE_HEALTH_SCORE: &str = "slotgate_node_health_score";
    pub const BACKEND_USED_MEMORY: &str = "slotgate_backend_used_memory_bytes";
    pub const BACKEND_MAXMEMORY: &str = "slotgate_backend_maxmemory_bytes";
    pub const BACKEND_FRAGMENTATION: &str = "slotgate_backend_mem_fragmentation_ratio";
    pub const BACKEND_CLIENTS: &str = "slotgate_backend_connected_clients";
    pub const BACKEND_OPS: &str = "slotgate_backend_ops_per_second";
    pub const BACKEND_REPLICATION_LAG: &str = "slotgate_backend_replication_lag_bytes";
    pub const BACKEND_LINK_UP: &str = "slotgate_backend_master_link_up";
    pub const COMMANDS: &str = "slotgate_commands_total";
    pub const COMMAND_ERRORS: &str = "slotgate_command_errors_total";
    pub const COMMAND_DURATION: &str = "slotgate_command_duration_seconds";
    pub const REDIRECTS: &str = "slotgate_redirects_total";
    pub const CROSSSLOT_REJECTIONS: &str = "slotgate_crossslot_rejections_total";
    pub const TOPOLOGY_REFRESHES: &str = "slotgate_topology_refreshes_total";
    pub const TOPOLOGY_REFRESH_FAILURES: &str = "slotgate_topology_refresh_failures_total";
    pub const TOPOLOGY_CHANGES: &str = "slotgate_topology_changes_total";
    pub const TOPOLOGY_EPOCH: &str = "slotgate_topology_epoch";
    pub const TOPOLOGY_AGE: &str = "slotgate_topology_age_seconds";
    pub const SLOTS_COVERED: &str = "slotgate_slots_covered";
    /// Slots whose master is reachable: below 16384, part of the keyspace cannot be served.
    pub const SLOTS_REACHABLE: &str = "slotgate_slots_reachable";
    pub const MASTER_SWITCHES: &str = "slotgate_master_switches_total";
    pub const CLIENT_CONNECTIONS: &str = "slotgate_client_connections";
    pub const CLIENT_ACCEPTED: &str = "slotgate_client_connections_accepted_total";
    pub const CLIENT_REFUSED: &str = "slotgate_client_connections_refused_total";
    pub const CLIENT_BYTES_IN: &str = "slotgate_client_received_bytes_total";
    pub const CLIENT_BYTES_OUT: &str = "slotgate_client_sent_bytes_total";
    pub const CLIENT_OUTPUT_LIMIT_CLOSES: &str = "slotgate_client_output_limit_closes_total";
    pub const PIPELINE_DEPTH: &str = "slotgate_client_pipeline_depth";
    pub const BACKEND_WRITES: &str = "slotgate_backend_writes_total";
    pub const READY: &str = "slotgate_ready";
    pub const HEALTH_SCORE: &str = "slotgate_health_score";
    pub const ADMIN_UNAUTHORIZED: &str = "slotgate_admin_unauthorized_total";
    /// Reads a read policy placed, by `placement` (local_replica, remote_replica, master).
    pub const READS: &str = "slotgate_reads_total";
    pub const READS_RETRIED: &str = "slotgate_reads_retried_total";
    /// Replicas read decisions passed over as unfit, by `reason` (down, syncing, lagging).
    pub const READ_SKIPS: &str = "slotgate_read_skips_total";
    /// Per replica: 1 while it takes reads, 0 while skipped (or no read policy uses replicas).
    pub const REPLICA_SERVING: &str = "slotgate_replica_serving";

    /// Every name, for the test that checks dashboards and alert rules.
    pub const ALL: &[&str] = &[
        BACKEND_REQUEST_DURATION,
        BACKEND_REQUESTS,
        BACKEND_ERRORS,
        BACKEND_IN_FLIGHT,
        BACKEND_CONNECTED,
        BACKEND_CONNECTS,
        NODE_INFO,
        NODE_HEALTH_SCORE,
        BACKEND_USED_MEMORY,
        BACKEND_MAXMEMORY,
        BACKEND_FRAGMENTATION,
        BACKEND_CLIENTS,
        BACKEND_OPS,
        BACKEND_REPLICATION_LAG,
        BACKEND_LINK_UP,
        COMMANDS,
        COMMAND_ERRORS,
        COMMAND_DURATION,
        REDIRECTS,
        CROSSSLOT_REJECTIONS,
        TOPOLOGY_REFRESHES,
        TOPOLOGY_REFRESH_FAILURES,
        TOPOLOGY_CHANGES,
        TOPOLOGY_EPOCH,
        TOPOLOGY_AGE,
        SLOTS_COVERED,
        SLOTS_REACHABLE,
        MASTER_SWITCHES,
        CLIENT_CONNECTIONS,
        CLIENT_ACCEPTED,
        CLIENT_REFUSED,
        CLIENT_BYTES_IN,
        CLIENT_BYTES_OUT,
        CLIENT_OUTPUT_LIMIT_CLOSES,
        PIPELINE_DEPTH,
        BACKEND_WRITES,
        READY,
        HEALTH_SCORE,
        ADMIN_UNAUTHORIZED,
        READS,
        READS_RETRIED,
        READ_SKIPS,
        REPLICA_SERVING,
    ];
}

/// Histogram buckets for every `_seconds` metric: 50 µs to 1 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a recorder is installed. Without one, the request path skips the clock reads that
/// only per-command latency needs.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Buckets for the pipeline depth: requests per client read.
const DEPTH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the Prometheus recorder (histograms as buckets, not summaries). Must run before any
/// handle is created: handles made earlier stay no-ops.
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(names::PIPELINE_DEPTH.into()), DEPTH_BUCKETS)?
        .install_recorder()?;
    ENABLED.store(true, Ordering::Relaxed);
    Ok(handle)
}

/// A lock-free latency histogram with power-of-two microsecond buckets, for percentiles inside
/// the process. Recording is one relaxed atomic add.
#[derive(Debug)]
pub struct LatencyBuckets {
    /// Bucket `i` counts samples below `2^i` µs (the last one: everything above).
    buckets: [AtomicU64; 24],
}

impl Default for LatencyBuckets {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A count of nanoseconds recorded as seconds, converted only when a histogram records it.
struct Seconds(u64);

impl IntoF64 for Seconds {
    fn into_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl LatencyBuckets {
    /// `d` in its bucket (the request path records microseconds, `record_us`).
    #[cfg(test)]
    pub fn record(&self, d: std::time::Duration) {
        self.record_us(d.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    pub fn record_us(&self, us: u64) {
        let i = (64 - us.leading_zeros() as usize).min(self.buckets.len() - 1);
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound (in µs) of the bucket holding quantile `q` (0 < q <= 1); `None` without
    /// samples.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(1u64 << i);
            }
        }
        Some(1u64 << (counts.len() - 1))
    }
}

/// Per-backend-node handles, created once when the node appears.
#[derive(Debug)]
pub struct NodeMetrics {
    pub latency: Histogram,
    pub latency_buckets: LatencyBuckets,
    pub requests: Counter,
    pub requests_seen: AtomicU64,
    /// Requests written whose replies have not come back (added when written, taken when
    /// answered or failed).
    pub awaiting: AtomicU64,
    pub errors_seen: AtomicU64,
    /// Moving average of the reply latency in nanoseconds (weight 1/8 per reply; 0 until the
    /// first reply): the figure replica reads choose by.
    latency_ewma: AtomicU64,
    /// `requests_seen` at the last [`Self::age_idle_latency`].
    seen_at_aging: AtomicU64,
    pub in_flight: Gauge,
    pub connected: Gauge,
    pub connects: Counter,
    errors_timeout: Counter,
    errors_connection: Counter,
    errors_protocol: Counter,
    errors_overloaded: Counter,
    errors_down: Counter,
}

/// Kinds of backend errors, the `kind` label of [`names::BACKEND_ERRORS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Connection,
    Protocol,
    Overloaded,
    Down,
}

impl NodeMetrics {
    pub fn new(node: &str) -> NodeMetrics {
        let n = node.to_string();
        let err = |kind: &'static str| counter!(names::BACKEND_ERRORS, "node" => n.clone(), "kind" => kind);
        NodeMetrics {
            latency: histogram!(names::BACKEND_REQUEST_DURATION, "node" => n.clone()),
            latency_buckets: LatencyBuckets::default(),
            requests: counter!(names::BACKEND_REQUESTS, "node" => n.clone()),
            requests_seen: AtomicU64::new(0),
            awaiting: AtomicU64::new(0),
            errors_seen: AtomicU64::new(0),
            latency_ewma: AtomicU64::new(0),
            seen_at_aging: AtomicU64::new(0),
            in_flight: gauge!(names::BACKEND_IN_FLIGHT, "node" => n.clone()),
            connected: gauge!(names::BACKEND_CONNECTED, "node" => n.clone()),
            connects: counter!(names::BACKEND_CONNECTS, "node" => n.clone()),
            errors_timeout: err("timeout"),
            errors_connection: err("connection"),
            errors_protocol: err("protocol"),
            errors_overloaded: err("overloaded"),
            errors_down: err("down"),
        }
    }

    /// One reply arrived `nanos` nanoseconds after its request was written.
    pub fn observe_nanos(&self, nanos: u64) {
        // In seconds, as a `Duration` would be recorded (the conversion only runs when a
        // recorder is installed).
        self.latency.record(Seconds(nanos));
        self.latency_buckets.record_us(nanos / 1000);
    }

    /// Adds one reply's latency to the moving average reads choose by. Only this node's
    /// connections write it; a lost update between two of them (on two workers) costs one
    /// sample, never a wrong figure.
    pub fn observe_load(&self, nanos: u64) {
        let old = self.latency_ewma.load(Ordering::Relaxed);
        let new = if old == 0 {
            nanos.max(1)
        } else {
            (old - old / 8 + nanos / 8).max(1)
        };
        self.latency_ewma.store(new, Ordering::Relaxed);
    }

    /// Halves the moving average when no request was written to the node since the last call
    /// (the replica checker's, once per check): a node reads left because it was slow is tried
    /// again once its old figure has aged below the others'.
    pub fn age_idle_latency(&self) {
        let seen = self.requests_seen.load(Ordering::Relaxed);
        if self.seen_at_aging.swap(seen, Ordering::Relaxed) == seen {
            let v = self.latency_ewma.load(Ordering::Relaxed);
            self.latency_ewma.store(v / 2, Ordering::Relaxed);
        }
    }

    /// The moving average of the reply latency, in nanoseconds (0 before the first reply).
    pub fn latency_ewma_nanos(&self) -> u64 {
        self.latency_ewma.load(Ordering::Relaxed)
    }

    /// Requests written to the node whose replies have not come back yet.
    pub fn outstanding(&self) -> u64 {
        // Taken before it is added only in a race between workers: never shown below 0.
        (self.awaiting.load(Ordering::Relaxed) as i64).max(0) as u64
    }

    pub fn error(&self, kind: ErrorKind, n: u64) {
        self.errors_seen.fetch_add(n, Ordering::Relaxed);
        match kind {
            ErrorKind::Timeout => self.errors_timeout.increment(n),
            ErrorKind::Connection => self.errors_connection.increment(n),
            ErrorKind::Protocol => self.errors_protocol.increment(n),
            ErrorKind::Overloaded => self.errors_overloaded.increment(n),
            ErrorKind::Down => self.errors_down.increment(n),
        }
    }

    /// The node's health score, 0 to 100 (the formula is in the README):
    /// 100, minus 50 when its connection is down, minus 5/15/30 when its p99 latency is above
    /// 1/10/100 ms, minus 10/20 when more than 1%/5% of its requests failed.
    pub fn health_score(&self, up: bool) -> u8 {
        let mut score: i32 = 100;
        if !up {
            score -= 50;
        }
        match self.latency_buckets.quantile_us(0.99) {
            Some(p) if p > 100_000 => score -= 30,
            Some(p) if p > 10_000 => score -= 15,
            Some(p) if p > 1_000 => score -= 5,
            _ => {}
        }
        let requests = self.requests_seen.load(Ordering::Relaxed);
        let errors = self.errors_seen.load(Ordering::Relaxed);
        if requests + errors > 0 {
            let ratio = errors as f64 / (requests + errors) as f64;
            if ratio > 0.05 {
                score -= 20;
            } else if ratio > 0.01 {
                score -= 10;
            }
        }
        score.clamp(0, 100) as u8
    }
}

/// Per-command handles, created with the command table.
#[derive(Debug)]
pub struct CommandMetrics {
    pub calls: Counter,
    pub errors: Counter,
    pub duration: Histogram,
}

impl CommandMetrics {
    pub fn new(command: &'static str) -> CommandMetrics {
        CommandMetrics {
            calls: counter!(names::COMMANDS, "command" => command),
            errors: counter!(names::COMMAND_ERRORS, "command" => command),
            duration: histogram!(names::COMMAND_DURATION, "command" => command),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn should_place_latencies_in_power_of_two_buckets() {
        let b = LatencyBuckets::default();
        for _ in 0..98 {
            b.record(Duration::from_micros(100));
        }
        b.record(Duration::from_millis(5));
        b.record(Duration::from_millis(50));
        assert_eq!(b.count(), 100);
        assert_eq!(b.quantile_us(0.5), Some(128));
        assert_eq!(b.quantile_us(0.99), Some(8192));
        assert_eq!(b.quantile_us(1.0), Some(65536));
        assert_eq!(LatencyBuckets::default().quantile_us(0.5), None);
    }

    #[test]
    fn should_score_health_by_link_latency_and_errors() {
        let m = NodeMetrics::new("n:1");
        assert_eq!(m.health_score(true), 100);
        assert_eq!(m.health_score(false), 50);
        for _ in 0..100 {
            m.latency_buckets.record(Duration::from_millis(20));
        }
        m.requests_seen.store(100, Ordering::Relaxed);
        m.errors_seen.store(10, Ordering::Relaxed);
        assert_eq!(m.health_score(true), 100 - 15 - 20);
    }
}
