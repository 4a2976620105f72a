//! The admin HTTP listener (HTTPS with the TLS listener's certificate when configured):
//! `/metrics` (Prometheus text), `/health` (process alive: always 200, with the coverage as
//! detail), `/ready` (whether slotgate can serve, decided in [`readiness`]: 503 from the moment
//! a drain starts), `/topology` (JSON: shards, nodes, roles, slot ranges, per-node latency and
//! health), with an optional bearer token on every path but `/health`; and the operator's
//! actions, which need the token: `POST /reload`, `POST /pause` and `POST /resume` ([`pause`]). Also the periodic export
//! of the proxy's counters and the backend INFO poller. It keeps answering through a drain and
//! stops after it.
//!
//! Nothing here is on the request path: it reads counters and snapshots only. It must never
//! block a runtime thread on rendering or on a slow backend.

pub mod pause;
pub mod probe;
pub mod readiness;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::frontend::Context;
use crate::metrics::names;
use crate::router::SLOTS;
use crate::topology::control::{Control, text};
use readiness::{Coverage, NotReady, ReadyRequires};

/// What the INFO poller last read from a node.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeInfo {
    pub role: String,
    pub used_memory: u64,
    pub maxmemory: u64,
    pub fragmentation: f64,
    pub connected_clients: u64,
    pub ops_per_sec: u64,
}

/// The admin endpoint's state.
pub struct Admin {
    ctx: Arc<Context>,
    prometheus: Option<PrometheusHandle>,
    token: Option<String>,
    ready_requires: ReadyRequires,
    info: Mutex<BTreeMap<String, NodeInfo>>,
    /// `POST /reload` (only with a token).
    reloader: Arc<crate::reload::Reloader>,
}

impl Admin {
    pub fn new(
        ctx: Arc<Context>,
        prometheus: Option<PrometheusHandle>,
        token: Option<String>,
        ready_requires: ReadyRequires,
        reloader: Arc<crate::reload::Reloader>,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            ctx,
            prometheus,
            token,
            ready_requires,
            info: Mutex::new(BTreeMap::new()),
            reloader,
        })
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()))
    }

    async fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path();
        if path != "/health" && !self.authorized(req) {
            counter!(names::ADMIN_UNAUTHORIZED).increment(1);
            return respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "unauthorized\n".into(),
            );
        }
        if path == "/reload" {
            return self.reload(req.method());
        }
        if path == "/pause" || path == "/resume" {
            if let Some(refused) = self.operator_only(req.method(), path) {
                return refused;
            }
            return if path == "/pause" {
                self.pause(req.uri().query()).await
            } else {
                self.resume()
            };
        }
        if req.method() != hyper::Method::GET {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match path {
            "/health" => respond(StatusCode::OK, "text/plain", self.health_text()),
            "/ready" => match self.readiness() {
                Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
                Err(why) => respond(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {why}\n"),
                ),
            },
            "/metrics" => {
                self.export();
                let text = self
                    .prometheus
                    .as_ref()
                    .map(|p| p.render())
                    .unwrap_or_default();
                respond(StatusCode::OK, "text/plain; version=0.0.4", text)
            }
            "/topology" => respond(StatusCode::OK, "application/json", self.topology_json()),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }

    /// Refuses an operator's action (`POST` only, and only with `admin.token` set: it changes
    /// what slotgate serves, which no one without the token may do).
    fn operator_only(&self, method: &hyper::Method, path: &str) -> Option<Response<Full<Bytes>>> {
        if self.token.is_none() {
            return Some(respond(
                StatusCode::FORBIDDEN,
                "text/plain",
                format!("{path} over HTTP needs admin.token to be set\n"),
            ));
        }
        if method != hyper::Method::POST {
            return Some(respond(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "POST only\n".into(),
            ));
        }
        None
    }

    /// `POST /pause[?ms=N]`: every client paused ([`pause`]), then 200 once every session has
    /// answered and every master of the topology in force has answered what it was sent, with
    /// JSON `{"paused":[masters],"ms":N}`; the pause ends by itself after N ms (10 s by
    /// default, 60 s at most). 400 for a bad `ms`, 409 while a pause is in force, 503 (and the
    /// pause ended) when the sessions or the masters did not answer within 5 s.
    async fn pause(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let limit = match pause::limit(query) {
            Ok(limit) => limit,
            Err(e) => return respond(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
        };
        let ctx = &self.ctx;
        let Some(epoch) = ctx.client_pause.begin(&ctx.clients) else {
            return respond(
                StatusCode::CONFLICT,
                "text/plain",
                "a pause is in force already\n".into(),
            );
        };
        let timer = self.ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            if timer.client_pause.end(&timer.clients, Some(epoch)) {
                warn!(?limit, "the clients' pause ended by its limit");
            }
        });
        const ANSWER: Duration = Duration::from_secs(5);
        let deadline = tokio::time::Instant::now() + ANSWER;
        while ctx.client_pause.unanswered() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let topo = ctx.topology.load_full();
        let masters = topo.masters();
        let mut answered = ctx.client_pause.unanswered() == 0;
        for m in masters {
            answered = answered && m.barrier(ANSWER).await;
        }
        let addrs: Vec<String> = masters.iter().map(|m| m.addr().to_string()).collect();
        if !answered {
            ctx.client_pause.end(&ctx.clients, Some(epoch));
            warn!(masters = ?addrs, "pause given up: the clients or the masters did not answer within 5 s");
            return respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not paused: the clients or the masters did not answer within 5 s\n".into(),
            );
        }
        warn!(masters = ?addrs, ?limit, "clients paused by the operator: no request is taken until a resume");
        let body = serde_json::json!({ "paused": addrs, "ms": limit.as_millis() as u64 });
        respond(StatusCode::OK, "application/json", format!("{body}\n"))
    }

    /// `POST /resume`: ends the clients' pause; 200 with JSON `{"resumed":true}` (false when
    /// none was in force).
    fn resume(&self) -> Response<Full<Bytes>> {
        let resumed = self.ctx.client_pause.end(&self.ctx.clients, None);
        info!(resumed, "clients resumed by the operator");
        let body = serde_json::json!({ "resumed": resumed });
        respond(StatusCode::OK, "application/json", format!("{body}\n"))
    }

    /// `POST /reload`: the config file read again, as SIGHUP does; 200 with what was applied
    /// and what needs a restart, 400 with why the file was refused. Only with `admin.token`
    /// set: a reload changes users and limits, which no one without the token may do.
    fn reload(&self, method: &hyper::Method) -> Response<Full<Bytes>> {
        if let Some(refused) = self.operator_only(method, "reload") {
            return refused;
        }
        match crate::reload::reload_and_log(&self.reloader, "admin") {
            Ok(plan) => {
                let live: Vec<&str> = plan.live.iter().map(|c| c.as_str()).collect();
                let body = serde_json::json!({ "applied": live, "needs_restart": plan.restart });
                respond(StatusCode::OK, "application/json", format!("{body}\n"))
            }
            Err(e) => respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("not reloaded: {e}\n"),
            ),
        }
    }

    /// Ready when every slot has a master (one master in Sentinel/standalone mode) and every
    /// master's connections are up.
    /// How much of the keyspace the current snapshot can serve.
    pub fn coverage(&self) -> Coverage {
        let topo = self.ctx.topology.load_full();
        let up: Vec<bool> = topo.masters().iter().map(|m| m.is_up()).collect();
        let mut c = Coverage::default();
        for slot in 0..SLOTS as u16 {
            if let Some(shard) = topo.shard_of(slot) {
                c.mapped += 1;
                c.reachable += usize::from(up.get(shard).copied().unwrap_or(false));
            }
        }
        c.down = topo
            .masters()
            .iter()
            .filter(|m| !m.is_up())
            .map(|m| m.addr().to_string())
            .collect();
        c
    }

    /// `/ready`'s answer ([`readiness::decide`]).
    pub fn readiness(&self) -> Result<(), NotReady> {
        let draining = self.ctx.draining.load(Ordering::SeqCst);
        readiness::decide(self.ready_requires, draining, &self.coverage())
    }

    /// `/health`'s body: `OK`, then what slotgate can serve.
    fn health_text(&self) -> String {
        let c = self.coverage();
        let mut text = format!("OK\nslots_reachable={} of {SLOTS}\n", c.reachable);
        if !c.down.is_empty() {
            text.push_str(&format!("masters_unreachable={}\n", c.down.join(",")));
        }
        if self.ctx.draining.load(Ordering::SeqCst) {
            text.push_str("draining\n");
        }
        text
    }

    /// The health score of the whole proxy: the lowest of its masters' scores, 0 when not ready.
    pub fn health_score(&self) -> u8 {
        let topo = self.ctx.topology.load_full();
        if topo.covered() != SLOTS {
            return 0;
        }
        topo.masters()
            .iter()
            .map(|m| m.metrics().health_score(m.is_up()))
            .min()
            .unwrap_or(0)
    }

    /// Publishes the proxy's own counters and the topology's gauges to the recorder.
    pub fn export(&self) {
        let s = &self.ctx.stats;
        let r = &self.ctx.refresh;
        let b = self.ctx.backends.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        gauge!(names::CLIENT_CONNECTIONS).set(load(&s.connections_current) as f64);
        counter!(names::CLIENT_ACCEPTED).absolute(load(&s.connections_received));
        counter!(names::CLIENT_REFUSED).absolute(load(&s.connections_rejected));
        counter!(names::CLIENT_BYTES_IN).absolute(s.bytes_in.sum());
        counter!(names::CLIENT_BYTES_OUT).absolute(s.bytes_out.sum());
        counter!(names::CLIENT_OUTPUT_LIMIT_CLOSES).absolute(load(&s.output_limit_closes));
        counter!(names::REDIRECTS, "kind" => "moved").absolute(load(&s.redirects_moved));
        counter!(names::REDIRECTS, "kind" => "ask").absolute(load(&s.redirects_ask));
        counter!(names::REDIRECTS, "kind" => "tryagain").absolute(load(&s.redirects_tryagain));
        counter!(names::REDIRECTS, "kind" => "readonly").absolute(load(&s.redirects_readonly));
        counter!(names::REDIRECTS, "kind" => "hold").absolute(load(&s.failover_holds));
        counter!(names::REDIRECTS, "kind" => "hold_expired")
            .absolute(load(&s.failover_holds_expired));
        counter!(names::CROSSSLOT_REJECTIONS).absolute(load(&s.crossslot_rejected));
        counter!(names::TOPOLOGY_REFRESHES).absolute(load(&r.refreshes));
        counter!(names::TOPOLOGY_REFRESH_FAILURES).absolute(load(&r.failures));
        counter!(names::TOPOLOGY_CHANGES).absolute(load(&r.changes));
        counter!(names::MASTER_SWITCHES).absolute(load(&r.master_switches));
        counter!(names::BACKEND_WRITES).absolute(load(&b.writes));
        for (placement, n) in [
            ("local_replica", &s.reads_local_replica),
            ("remote_replica", &s.reads_remote_replica),
            ("master", &s.reads_master),
        ] {
            counter!(names::READS, "placement" => placement).absolute(load(n));
        }
        counter!(names::READS_RETRIED).absolute(load(&s.reads_retried));
        for (reason, n) in [
            ("down", &s.read_skips_down),
            ("syncing", &s.read_skips_syncing),
            ("lagging", &s.read_skips_lagging),
        ] {
            counter!(names::READ_SKIPS, "reason" => reason).absolute(load(n));
        }
        let topo = self.ctx.topology.load_full();
        gauge!(names::TOPOLOGY_EPOCH).set(topo.epoch as f64);
        gauge!(names::TOPOLOGY_AGE).set(topo.created.elapsed().as_secs_f64());
        gauge!(names::SLOTS_COVERED).set(topo.covered() as f64);
        gauge!(names::SLOTS_REACHABLE).set(self.coverage().reachable as f64);
        gauge!(names::READY).set(if self.readiness().is_ok() { 1.0 } else { 0.0 });
        gauge!(names::HEALTH_SCORE).set(f64::from(self.health_score()));
        for (shard, m) in topo.masters().iter().enumerate() {
            let node = m.addr().to_string();
            gauge!(names::NODE_INFO, "node" => node.clone(), "role" => "master", "shard" => shard.to_string()).set(1.0);
            gauge!(names::NODE_HEALTH_SCORE, "node" => node)
                .set(f64::from(m.metrics().health_score(m.is_up())));
            for r in topo.replicas_of(shard) {
                gauge!(names::NODE_INFO, "node" => r.addr.to_string(), "role" => "replica", "shard" => shard.to_string())
                    .set(1.0);
                // 0 without a read policy that uses replicas: they take no reads then.
                let serving = r
                    .node
                    .as_ref()
                    .is_some_and(|n| n.is_up() && n.replication().serves_reads());
                gauge!(names::REPLICA_SERVING, "node" => r.addr.to_string()).set(if serving {
                    1.0
                } else {
                    0.0
                });
            }
        }
    }

    fn topology_json(&self) -> String {
        let topo = self.ctx.topology.load_full();
        let info = self.info.lock().map(|g| g.clone()).unwrap_or_default();
        let shards: Vec<serde_json::Value> = topo
            .masters()
            .iter()
            .enumerate()
            .map(|(shard, m)| {
                let lat = &m.metrics().latency_buckets;
                serde_json::json!({
                    "shard": shard,
                    "master": {
                        "node": m.addr().as_str(),
                        "role": "master",
                        "up": m.is_up(),
                        "latency_us": m.metrics().latency_ewma_nanos() / 1000,
                        "latency_p50_us": lat.quantile_us(0.5),
                        "latency_p99_us": lat.quantile_us(0.99),
                        "requests": m.metrics().requests_seen.load(Ordering::Relaxed),
                        "errors": m.metrics().errors_seen.load(Ordering::Relaxed),
                        "health_score": m.metrics().health_score(m.is_up()),
                        "zone": topo.master_zone(shard),
                        "info": info.get(m.addr().as_str()),
                    },
                    "replicas": topo.replicas_of(shard).iter().map(|r| serde_json::json!({
                        "node": r.addr.as_str(),
                        "role": "replica",
                        "zone": r.zone.as_deref(),
                        // Under a read policy that uses replicas: what reads are chosen by.
                        "reads": r.node.as_ref().map(|n| serde_json::json!({
                            "serving": n.is_up() && n.replication().serves_reads(),
                            "up": n.is_up(),
                            "replication": n.replication().as_str(),
                            "lag_ms": n.lag_ms(),
                            "latency_us": n.metrics().latency_ewma_nanos() / 1000,
                            "outstanding": n.metrics().outstanding(),
                        })),
                        "info": info.get(r.addr.as_str()),
                    })).collect::<Vec<_>>(),
                    "slots": topo.ranges_of(shard),
                })
            })
            .collect();
        serde_json::json!({
            "epoch": topo.epoch,
            "zone": self.ctx.config.load().zone,
            "age_seconds": topo.created.elapsed().as_secs(),
            "slotted": topo.slotted,
            "slots_covered": topo.covered(),
            "slots_reachable": self.coverage().reachable,
            "ready": self.readiness().is_ok(),
            "health_score": self.health_score(),
            "shards": shards,
        })
        .to_string()
    }

    /// Polls every node's INFO and exports memory, clients, ops/s, replication lag and link state.
    pub async fn poll_backends(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let topo = self.ctx.topology.load_full();
            for addr in topo.addresses() {
                let ask = async {
                    let mut c =
                        Control::connect(&addr, &self.ctx.backends.config().connector).await?;
                    c.command(&["INFO"], "INFO").await
                };
                match tokio::time::timeout(Duration::from_secs(2), ask).await {
                    Ok(Ok(frame)) => self.record_info(&addr, &frame),
                    Ok(Err(e)) => debug!(node = %addr, error = %e, "INFO poll failed"),
                    Err(_) => debug!(node = %addr, "INFO poll timed out"),
                }
            }
            self.upkeep();
        }
    }

    fn upkeep(&self) {
        if let Some(p) = &self.prometheus {
            p.run_upkeep();
        }
    }

    fn record_info(&self, addr: &str, frame: &OwnedFrame) {
        let Some(text) = text(frame) else { return };
        let field = |k: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(&format!("{k}:"))
                    .map(|v| v.trim().to_string())
            })
        };
        let num = |k: &str| field(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let info = NodeInfo {
            role: field("role").unwrap_or_default(),
            used_memory: num("used_memory"),
            maxmemory: num("maxmemory"),
            fragmentation: field("mem_fragmentation_ratio")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            connected_clients: num("connected_clients"),
            ops_per_sec: num("instantaneous_ops_per_sec"),
        };
        let node = addr.to_string();
        gauge!(names::BACKEND_USED_MEMORY, "node" => node.clone()).set(info.used_memory as f64);
        gauge!(names::BACKEND_MAXMEMORY, "node" => node.clone()).set(info.maxmemory as f64);
        gauge!(names::BACKEND_FRAGMENTATION, "node" => node.clone()).set(info.fragmentation);
        gauge!(names::BACKEND_CLIENTS, "node" => node.clone()).set(info.connected_clients as f64);
        gauge!(names::BACKEND_OPS, "node" => node.clone()).set(info.ops_per_sec as f64);
        if info.role == "slave" {
            let up = field("master_link_status").as_deref() == Some("up");
            gauge!(names::BACKEND_LINK_UP, "node" => node.clone()).set(if up { 1.0 } else { 0.0 });
        }
        if info.role == "master" {
            // slaveN:ip=...,port=...,state=online,offset=N,lag=S: lag in bytes behind this master.
            let master_offset = num("master_repl_offset");
            for line in text
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("offset="))
            {
                let kv = |k: &str| {
                    line.split([':', ','])
                        .find_map(|p| p.strip_prefix(&format!("{k}=")).map(str::to_string))
                };
                if let (Some(ip), Some(port), Some(off)) = (kv("ip"), kv("port"), kv("offset")) {
                    let lag = master_offset.saturating_sub(off.parse().unwrap_or(0));
                    gauge!(names::BACKEND_REPLICATION_LAG, "node" => format!("{ip}:{port}"))
                        .set(lag as f64);
                }
            }
        }
        if let Ok(mut g) = self.info.lock() {
            g.insert(node, info);
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

/// Compares tokens without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Serves the admin endpoint until shutdown.
/// Serves the admin endpoint on `listener` until shutdown; over HTTPS with `tls` (the server
/// configuration and the handshake timeout), a failed handshake closing only that connection.
pub async fn serve(
    listener: TcpListener,
    tls: Option<(Arc<rustls::ServerConfig>, Duration)>,
    admin: Arc<Admin>,
    shutdown: CancellationToken,
) {
    let acceptor = tls
        .as_ref()
        .map(|(c, _)| tokio_rustls::TlsAcceptor::from(c.clone()));
    let handshake_timeout = tls.map_or(Duration::from_secs(10), |(_, t)| t);
    let exporter = admin.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {
                    exporter.export();
                    exporter.upkeep();
                }
            }
        }
    });
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let admin = admin.clone();
        let acceptor = acceptor.clone();
        let failed = {
            let admin = admin.clone();
            move |why: &dyn std::fmt::Display| {
                admin
                    .ctx
                    .stats
                    .tls_handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                info!(error = %why, "admin TLS handshake failed");
            }
        };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(&req).await) }
            });
            let http = http1::Builder::new();
            let served = match acceptor {
                None => http.serve_connection(TokioIo::new(stream), service).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                        Ok(Err(e)) => return failed(&e),
                        Err(_) => return failed(&"timed out"),
                    }
                }
            };
            if let Err(e) = served {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_compare_tokens_fully() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secre"));
    }
}
