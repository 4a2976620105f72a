//! Commands slotgate answers itself, with the replies (and error strings) a Redis 7 standalone
//! server gives: PING, ECHO, QUIT, SELECT, HELLO, AUTH, RESET, CLIENT SETNAME/GETNAME/ID/SETINFO,
//! CLUSTER KEYSLOT, and the cluster-disabled answer to the rest of CLUSTER, READONLY, READWRITE.
//!
//! Answers depend only on the request, the client's own state and the context's counters; this
//! module must never do I/O.

use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

use super::Context;
use crate::backend::Dialect;
use crate::command::Local;
use crate::command::table::cat;
use crate::protocol::encode::{self, Proto};
use crate::protocol::{Request, parse_int};
use crate::router::key_slot;

/// Per-client state the proxy keeps itself.
#[derive(Debug)]
pub struct ClientState {
    pub id: u64,
    pub proto: Proto,
    /// The database selected with `SELECT` (always 0 in front of a cluster).
    pub db: u32,
    pub name: Option<Vec<u8>>,
    /// Set by QUIT or a protocol error: answer what is queued, then close.
    pub closing: bool,
    /// Logged in: from the start when the `default` user has no password, else after `AUTH`.
    pub authenticated: bool,
    /// The user logged in as (`access::DEFAULT_USER` until an AUTH names another).
    pub user: u16,
    /// The user may run every command on every key and channel: nothing to check per request.
    pub unrestricted: bool,
    /// The logged-in user's rules, held while it is restricted (what each request is checked
    /// against, without a look-up); `None` for an unrestricted user.
    pub rules: Option<std::sync::Arc<crate::access::User>>,
    /// The client's address, for the failed-AUTH throttle.
    pub peer: Option<std::net::IpAddr>,
    /// The user the client's TLS certificate logged it in as (`[tls] auth_clients_user`):
    /// RESET returns to it rather than to `default`.
    pub certificate_user: Option<u16>,
    /// The settings this client is served with: the users `user` and `certificate_user`
    /// number, its limits and read policy. A reload hands the session a new one
    /// ([`ClientState::reconfigure`]); nothing reads the shared one in between.
    pub config: std::sync::Arc<crate::frontend::SessionConfig>,
}

impl ClientState {
    pub fn new(id: u64, config: std::sync::Arc<crate::frontend::SessionConfig>) -> Self {
        let access = &config.access;
        let authenticated = access.open_by_default();
        Self {
            id,
            proto: Proto::Resp2,
            db: 0,
            name: None,
            closing: false,
            authenticated,
            user: crate::access::DEFAULT_USER,
            unrestricted: access
                .user(crate::access::DEFAULT_USER)
                .is_some_and(|u| u.unrestricted()),
            rules: access
                .user_shared(crate::access::DEFAULT_USER)
                .filter(|u| !u.unrestricted()),
            peer: None,
            certificate_user: None,
            config,
        }
    }

    /// Logs the client in as user `index`.
    pub fn log_in(&mut self, index: u16, ctx: &Context) {
        self.authenticated = true;
        self.user = index;
        let user = self.config.access.user(index);
        self.unrestricted = user.is_some_and(|u| u.unrestricted());
        self.rules = self
            .config
            .access
            .user_shared(index)
            .filter(|u| !u.unrestricted());
        if let Some(u) = user {
            ctx.clients.set_user(self.id, &u.name);
        }
    }

    /// Serves the client with `config` from now on (a reload), as Redis 7.2's `ACL LOAD`
    /// treats its clients: one logged in as a user that is gone is closed; any other keeps
    /// its login, under its user's new rules (a user turned off or given a new password
    /// included: those govern new logins only). A client not logged in is logged in as
    /// `default` when `default` no longer needs a password.
    pub fn reconfigure(
        &mut self,
        config: std::sync::Arc<crate::frontend::SessionConfig>,
    ) -> Reconfigured {
        let (old, new) = (&self.config.access, &config.access);
        let Some(user) = remap(old, new, self.user) else {
            return Reconfigured::UserGone;
        };
        self.certificate_user = self.certificate_user.and_then(|u| remap(old, new, u));
        self.user = user;
        if !self.authenticated && new.open_by_default() {
            self.authenticated = true;
        }
        self.unrestricted = new.user(user).is_some_and(|u| u.unrestricted());
        self.rules = new.user_shared(user).filter(|u| !u.unrestricted());
        self.config = config;
        Reconfigured::Kept
    }

    /// What the client's requests need from a shared connection: its protocol and database.
    #[inline]
    pub fn dialect(&self) -> Dialect {
        Dialect {
            proto: self.proto,
            db: self.db,
        }
    }
}

/// What a reload did to a client's login ([`ClientState::reconfigure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    Kept,
    /// The user it is logged in as is no longer configured: the client is to be closed.
    UserGone,
}

/// User `index` of `old`, found by name in `new`.
fn remap(old: &crate::access::Access, new: &crate::access::Access, index: u16) -> Option<u16> {
    let name = old.user(index)?.name.as_bytes();
    new.index_of(name)
}

use crate::error::CLUSTER_DISABLED;

/// `SELECT`'s decision, as Redis 7.0 makes it: the argument must be a 32-bit integer, a cluster
/// has database 0 only, and one server has `databases` of them.
pub fn select(arg: &[u8], slotted: bool, databases: u32) -> Result<u32, &'static str> {
    let n = parse_int(arg).ok_or("ERR value is not an integer or out of range")?;
    let n = i32::try_from(n)
        .map_err(|_| "ERR value is out of range, value must between -2147483648 and 2147483647")?;
    if slotted && n != 0 {
        return Err("ERR SELECT is not allowed in cluster mode");
    }
    match u32::try_from(n) {
        Ok(db) if db < databases => Ok(db),
        _ => Err("ERR DB index is out of range"),
    }
}

/// Writes the answer to a local command into `out`.
pub fn answer(
    local: Local,
    req: &Request,
    client: &mut ClientState,
    ctx: &Context,
    out: &mut BytesMut,
) {
    let arg = |i: usize| req.arg(i).unwrap_or_default();
    match local {
        Local::Ping => match req.argc() {
            1 => encode::simple(out, "PONG"),
            2 => encode::bulk(out, arg(1)),
            _ => encode::error(out, "ERR wrong number of arguments for 'ping' command"),
        },
        Local::Echo => encode::bulk(out, arg(1)),
        Local::Quit => {
            client.closing = true;
            encode::ok(out);
        }
        Local::Select => {
            let topo = ctx.topology.load_full();
            match select(arg(1), topo.slotted, topo.databases) {
                Ok(db) => {
                    if db != client.db {
                        client.db = db;
                        ctx.clients.set_db(client.id, db);
                    }
                    encode::ok(out)
                }
                Err(e) => encode::error(out, e),
            }
        }
        Local::Hello => hello(req, client, ctx, out),
        Local::Auth => {
            if !admitted(client, ctx) {
                return;
            }
            let access = &client.config.access;
            let verdict = match req.argc() {
                2 => access.auth_default(arg(1)),
                3 => access.auth(arg(1), arg(2)),
                _ => return encode::error(out, "ERR syntax error"),
            };
            match log_in(verdict, client, ctx) {
                Ok(()) => encode::ok(out),
                Err(msg) => encode::error(out, msg),
            }
        }
        Local::Reset => {
            client.proto = Proto::Resp2;
            // Back to the `default` user, logged in only if it has no password; a client its
            // certificate logged in goes back to that user.
            match client.certificate_user {
                Some(user) => client.log_in(user, ctx),
                None => {
                    client.log_in(crate::access::DEFAULT_USER, ctx);
                    client.authenticated = client.config.access.open_by_default();
                }
            }
            if client.db != 0 {
                client.db = 0;
                ctx.clients.set_db(client.id, 0);
            }
            client.name = None;
            encode::simple(out, "RESET");
        }
        Local::ClientSetName => {
            let name = arg(2);
            if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                encode::error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                client.name = if name.is_empty() {
                    None
                } else {
                    Some(name.to_vec())
                };
                encode::ok(out);
            }
        }
        Local::ClientGetName => match &client.name {
            Some(n) => encode::bulk(out, n),
            None => encode::null(out, client.proto),
        },
        Local::ClientId => encode::integer(out, client.id as i64),
        Local::ClientList => {
            let mut ids = Vec::new();
            let mut i = 2;
            while i < req.argc() {
                if arg(i).eq_ignore_ascii_case(b"ID") {
                    for j in i + 1..req.argc() {
                        match parse_int(arg(j)).and_then(|n| u64::try_from(n).ok()) {
                            Some(n) => ids.push(n),
                            None => return encode::error(out, "ERR Invalid client ID"),
                        }
                    }
                    break;
                } else if arg(i).eq_ignore_ascii_case(b"TYPE") && i + 1 < req.argc() {
                    i += 2;
                } else {
                    return encode::error(out, "ERR syntax error");
                }
            }
            let text = ctx
                .clients
                .list(if ids.is_empty() { None } else { Some(&ids) }, ctx.table);
            encode::verbatim(out, client.proto, text.as_bytes());
        }
        Local::ClientInfo => {
            let text = ctx.clients.list(Some(&[client.id]), ctx.table);
            encode::verbatim(out, client.proto, text.as_bytes());
        }
        Local::ClientKill => client_kill(req, client, ctx, out),
        Local::AclWhoami => match client.config.access.user(client.user) {
            Some(u) => encode::bulk(out, u.name.as_bytes()),
            None => encode::bulk(out, b"default"),
        },
        Local::AclList => {
            let users = client.config.access.by_name();
            encode::array_header(out, users.len());
            for u in users {
                encode::bulk(out, client.config.access.describe(u).as_bytes());
            }
        }
        Local::AclUsers => {
            let users = client.config.access.by_name();
            encode::array_header(out, users.len());
            for u in users {
                encode::bulk(out, u.name.as_bytes());
            }
        }
        Local::AclGetuser => match client.config.access.named(arg(2)) {
            None => encode::null(out, client.proto),
            Some(u) => {
                let d = client.config.access.details(u);
                encode::map_header(out, client.proto, 6);
                encode::bulk(out, b"flags");
                encode::array_header(out, d.flags.len());
                for f in &d.flags {
                    encode::bulk(out, f.as_bytes());
                }
                encode::bulk(out, b"passwords");
                encode::array_header(out, d.passwords.len());
                for p in &d.passwords {
                    encode::bulk(out, p.as_bytes());
                }
                for (name, value) in [
                    ("commands", &d.commands),
                    ("keys", &d.keys),
                    ("channels", &d.channels),
                ] {
                    encode::bulk(out, name.as_bytes());
                    encode::bulk(out, value.as_bytes());
                }
                encode::bulk(out, b"selectors");
                encode::array_header(out, 0);
            }
        },
        Local::AclCat => match req.argc() {
            2 => {
                encode::array_header(out, cat::NAMES.len());
                for (_, name) in cat::NAMES {
                    encode::bulk(out, name.as_bytes());
                }
            }
            3 => match cat::of(arg(2)) {
                Some(bit) => {
                    let names = ctx.table.in_category(bit);
                    encode::array_header(out, names.len());
                    for n in names {
                        encode::bulk(out, n.as_bytes());
                    }
                }
                None => {
                    encode::error_bytes(out, &[b"ERR Unknown category '", arg(2), b"'"].concat())
                }
            },
            // Redis echoes the subcommand as the client spelled it.
            _ => encode::error_bytes(
                out,
                &[
                    b"ERR unknown subcommand or wrong number of arguments for '",
                    arg(1),
                    b"'. Try ACL HELP.",
                ]
                .concat(),
            ),
        },
        Local::ClientSetInfo => {
            let attr = arg(2);
            let known =
                attr.eq_ignore_ascii_case(b"lib-name") || attr.eq_ignore_ascii_case(b"lib-ver");
            if !known {
                return encode::error(
                    out,
                    &format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(attr)
                    ),
                );
            }
            let value = arg(3);
            if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return encode::error(
                    out,
                    &format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(attr)
                    ),
                );
            }
            // Accepted as Redis 7.2 accepts it; CLIENT LIST prints Redis 7.0's fields, which
            // have no place for them, so they are not kept.
            encode::ok(out);
        }
        Local::ClientNoEvict | Local::ClientNoTouch => {
            if arg(2).eq_ignore_ascii_case(b"on") || arg(2).eq_ignore_ascii_case(b"off") {
                encode::ok(out);
            } else {
                encode::error(out, "ERR syntax error");
            }
        }
        // The session answers it (it changes which of its replies are sent); a mode it does
        // not know is the one answer left here.
        Local::ClientReply => encode::error(out, "ERR syntax error"),
        // The session answers it (the node the target is blocked on does).
        Local::ClientUnblock => encode::integer(out, 0),
        Local::ClusterKeySlot => encode::integer(out, i64::from(key_slot(arg(2)))),
        Local::ClusterDisabled => encode::error(out, CLUSTER_DISABLED),
    }
    if matches!(local, Local::ClientSetName | Local::Hello | Local::Reset) {
        let resp = if client.proto == Proto::Resp3 { 3 } else { 2 };
        ctx.clients
            .set_identity(client.id, client.name.clone(), resp);
    }
}

/// `CLIENT KILL ip:port` (old form: OK or an error) or `CLIENT KILL [ID id] [ADDR ip:port]
/// [SKIPME yes|no]` (new form: how many were killed), over slotgate's own clients.
fn client_kill(req: &Request, client: &ClientState, ctx: &Context, out: &mut BytesMut) {
    use super::clients::KillFilter;
    let arg = |i: usize| req.arg(i).unwrap_or_default();
    if req.argc() == 3 {
        let filter = KillFilter {
            addr: Some(String::from_utf8_lossy(arg(2)).into_owned()),
            ..KillFilter::default()
        };
        return match ctx.clients.kill(&filter) {
            0 => encode::error(out, "ERR No such client"),
            _ => encode::ok(out),
        };
    }
    let mut filter = KillFilter {
        skip: Some(client.id),
        ..KillFilter::default()
    };
    let mut i = 2;
    while i + 1 < req.argc() {
        let (k, v) = (arg(i), arg(i + 1));
        if k.eq_ignore_ascii_case(b"ID") {
            match parse_int(v).and_then(|n| u64::try_from(n).ok()) {
                Some(n) => filter.id = Some(n),
                None => return encode::error(out, "ERR client-id should be greater than 0"),
            }
        } else if k.eq_ignore_ascii_case(b"ADDR") {
            filter.addr = Some(String::from_utf8_lossy(v).into_owned());
        } else if k.eq_ignore_ascii_case(b"SKIPME") {
            if v.eq_ignore_ascii_case(b"no") {
                filter.skip = None;
            } else if !v.eq_ignore_ascii_case(b"yes") {
                return encode::error(out, "ERR syntax error");
            }
        } else {
            return encode::error(out, "ERR syntax error");
        }
        i += 2;
    }
    if i != req.argc() {
        return encode::error(out, "ERR syntax error");
    }
    encode::integer(out, ctx.clients.kill(&filter) as i64);
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, as Redis 7 answers it.
/// Whether the client's address may try a password now; if not, the client is closed (with
/// a log line) without an answer, as the throttle says.
fn admitted(client: &mut ClientState, ctx: &Context) -> bool {
    let Some(ip) = client.peer else {
        return true;
    };
    if ctx.auth_throttle.admits(ip, std::time::Instant::now()) {
        return true;
    }
    tracing::warn!(
        client = client.id,
        %ip,
        "closing client: too many failed AUTHs from its address (clients.max_auth_failures_per_minute)"
    );
    client.closing = true;
    false
}

/// Carries out an AUTH's verdict (AUTH and HELLO ... AUTH alike): logged in, or the refusal
/// counted, for the client's address too, with Redis' error to answer.
fn log_in(
    verdict: Result<u16, crate::access::Refusal>,
    client: &mut ClientState,
    ctx: &Context,
) -> Result<(), &'static str> {
    match verdict {
        Ok(user) => {
            client.log_in(user, ctx);
            Ok(())
        }
        Err(r) => {
            ctx.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(ip) = client.peer {
                ctx.auth_throttle.failed(ip, std::time::Instant::now());
            }
            Err(r.message())
        }
    }
}

fn hello(req: &Request, client: &mut ClientState, ctx: &Context, out: &mut BytesMut) {
    let arg = |i: usize| req.arg(i).unwrap_or_default();
    let mut proto = client.proto;
    let mut i = 1;
    if req.argc() >= 2 {
        match parse_int(arg(1)) {
            Some(2) => proto = Proto::Resp2,
            Some(3) => proto = Proto::Resp3,
            Some(_) => return encode::error(out, "NOPROTO unsupported protocol version"),
            None => {
                return encode::error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                );
            }
        }
        i = 2;
    }
    let mut setname: Option<Vec<u8>> = None;
    let mut auth: Option<(&[u8], &[u8])> = None;
    while i < req.argc() {
        let opt = arg(i);
        let more = req.argc() - i - 1;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            auth = Some((arg(i + 1), arg(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let name = arg(i + 1);
            if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return encode::error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            setname = Some(name.to_vec());
            i += 2;
        } else {
            return encode::error(
                out,
                &format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                ),
            );
        }
    }
    match auth {
        Some(_) if !admitted(client, ctx) => return,
        Some((user, password)) => {
            if let Err(msg) = log_in(client.config.access.auth(user, password), client, ctx) {
                return encode::error(out, msg);
            }
        }
        None if !client.authenticated => return encode::error(out, crate::access::NOAUTH_HELLO),
        None => {}
    }
    client.proto = proto;
    if let Some(n) = setname {
        client.name = if n.is_empty() { None } else { Some(n) };
    }
    let version = ctx.topology.load_full().version.clone();
    encode::map_header(out, proto, 7);
    encode::bulk(out, b"server");
    encode::bulk(out, b"redis");
    encode::bulk(out, b"version");
    encode::bulk(out, version.as_bytes());
    encode::bulk(out, b"proto");
    encode::integer(out, if proto == Proto::Resp3 { 3 } else { 2 });
    encode::bulk(out, b"id");
    encode::integer(out, client.id as i64);
    encode::bulk(out, b"mode");
    encode::bulk(out, b"standalone");
    encode::bulk(out, b"role");
    encode::bulk(out, b"master");
    encode::bulk(out, b"modules");
    encode::array_header(out, 0);
}

/// The `# Proxy` section INFO gains.
pub fn proxy_info_section(ctx: &Context) -> String {
    let s = &ctx.stats;
    let topo = ctx.topology.load_full();
    let r = &ctx.refresh;
    let mut out = BytesMut::new();
    let mut line = |k: &str, v: String| {
        out.put_slice(k.as_bytes());
        out.put_u8(b':');
        out.put_slice(v.as_bytes());
        out.put_slice(b"\r\n");
    };
    line("proxy", "slotgate".into());
    line("proxy_version", env!("CARGO_PKG_VERSION").into());
    line(
        "proxy_zone",
        ctx.config.load().zone.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "proxy_uptime_in_seconds",
        ctx.started.elapsed().as_secs().to_string(),
    );
    line("proxy_worker_threads", ctx.workers.len().to_string());
    line(
        "proxy_connected_clients",
        s.connections_current.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_total_connections_received",
        s.connections_received.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_rejected_connections",
        s.connections_rejected.load(Ordering::Relaxed).to_string(),
    );
    line("proxy_client_received_bytes", s.bytes_in.sum().to_string());
    line("proxy_client_sent_bytes", s.bytes_out.sum().to_string());
    line(
        "proxy_total_commands",
        s.commands.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_redirects_moved",
        s.redirects_moved.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_redirects_ask",
        s.redirects_ask.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_redirects_readonly",
        s.redirects_readonly.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_failover_holds",
        s.failover_holds.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_failover_holds_expired",
        s.failover_holds_expired.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_failover_holds_refused",
        ctx.hold_budget.refused.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_failover_held_bytes",
        ctx.hold_budget.total().to_string(),
    );
    line(
        "proxy_redirects_tryagain",
        s.redirects_tryagain.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_crossslot_rejected",
        s.crossslot_rejected.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_output_buffer_limit_disconnections",
        s.output_limit_closes.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_request_timeout_disconnections",
        s.request_timeouts.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_evicted_clients",
        ctx.clients
            .budget
            .evicted
            .load(Ordering::Relaxed)
            .to_string(),
    );
    line(
        "proxy_client_buffer_bytes",
        ctx.clients.budget.total().to_string(),
    );
    line(
        "proxy_auth_failures",
        s.auth_failures.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_tls_handshake_failures",
        s.tls_handshake_failures.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_backend_errors",
        s.backend_errors.load(Ordering::Relaxed).to_string(),
    );
    line(
        "proxy_read_from",
        ctx.config.load().read_from.as_str().into(),
    );
    for (k, v) in [
        ("proxy_reads_local_replica", &s.reads_local_replica),
        ("proxy_reads_remote_replica", &s.reads_remote_replica),
        ("proxy_reads_master", &s.reads_master),
        ("proxy_reads_retried", &s.reads_retried),
        ("proxy_read_skips_down", &s.read_skips_down),
        ("proxy_read_skips_syncing", &s.read_skips_syncing),
        ("proxy_read_skips_lagging", &s.read_skips_lagging),
    ] {
        line(k, v.load(Ordering::Relaxed).to_string());
    }
    let b = ctx.backends.stats();
    line(
        "backend_requests",
        b.requests.load(Ordering::Relaxed).to_string(),
    );
    line(
        "backend_writes",
        b.writes.load(Ordering::Relaxed).to_string(),
    );
    line(
        "backend_replies",
        b.replies.load(Ordering::Relaxed).to_string(),
    );
    line(
        "backend_connects",
        b.connects.load(Ordering::Relaxed).to_string(),
    );
    line("topology_epoch", topo.epoch.to_string());
    line(
        "topology_age_seconds",
        topo.created.elapsed().as_secs().to_string(),
    );
    line("topology_masters", topo.masters().len().to_string());
    line("topology_slots_covered", topo.covered().to_string());
    line(
        "topology_refreshes",
        r.refreshes.load(Ordering::Relaxed).to_string(),
    );
    line(
        "topology_refresh_failures",
        r.failures.load(Ordering::Relaxed).to_string(),
    );
    let mut text = String::from("# Proxy\r\n");
    text.push_str(&String::from_utf8_lossy(&out));
    // Per backend node: latency as slotgate measures it (write to reply) and health.
    text.push_str("\r\n# Nodes\r\n");
    for (shard, m) in topo.masters().iter().enumerate() {
        let met = m.metrics();
        let q = |p: f64| {
            met.latency_buckets
                .quantile_us(p)
                .map_or("-".to_string(), |v| v.to_string())
        };
        text.push_str(&format!(
            "node{shard}:addr={},role=master,up={},p50_us={},p99_us={},p999_us={},requests={},errors={},health={},latency_us={},zone={}\r\n",
            m.addr(),
            u8::from(m.is_up()),
            q(0.5),
            q(0.99),
            q(0.999),
            met.requests_seen.load(Ordering::Relaxed),
            met.errors_seen.load(Ordering::Relaxed),
            met.health_score(m.is_up()),
            met.latency_ewma_nanos() / 1000,
            topo.master_zone(shard).unwrap_or("-"),
        ));
        for (i, r) in topo.replicas_of(shard).iter().enumerate() {
            // With a read policy that uses replicas: what reads are chosen by.
            let figures = r.node.as_ref().map_or(String::new(), |n| {
                let met = n.metrics();
                format!(
                    ",up={},reads={},replication={},lag_ms={},requests={},errors={},latency_us={}",
                    u8::from(n.is_up()),
                    if n.replication().serves_reads() && n.is_up() {
                        "serving"
                    } else {
                        "skipped"
                    },
                    n.replication().as_str(),
                    n.lag_ms().map_or("-".to_string(), |l| l.to_string()),
                    met.requests_seen.load(Ordering::Relaxed),
                    met.errors_seen.load(Ordering::Relaxed),
                    met.latency_ewma_nanos() / 1000,
                )
            });
            text.push_str(&format!(
                "node{shard}_replica{i}:addr={},role=replica{figures},zone={}\r\n",
                r.addr,
                r.zone.as_deref().unwrap_or("-"),
            ));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::select;

    const NOT_INT: &str = "ERR value is not an integer or out of range";
    const NOT_I32: &str =
        "ERR value is out of range, value must between -2147483648 and 2147483647";
    const RANGE: &str = "ERR DB index is out of range";
    const CLUSTER: &str = "ERR SELECT is not allowed in cluster mode";

    #[test]
    fn select_in_front_of_one_server_takes_every_database_it_has() {
        assert_eq!(select(b"0", false, 16), Ok(0));
        assert_eq!(select(b"15", false, 16), Ok(15));
        assert_eq!(select(b"16", false, 16), Err(RANGE));
        assert_eq!(select(b"-1", false, 16), Err(RANGE));
        assert_eq!(select(b"2147483647", false, 16), Err(RANGE));
    }

    #[test]
    fn select_in_front_of_a_cluster_takes_database_0_only() {
        assert_eq!(select(b"0", true, 1), Ok(0));
        assert_eq!(select(b"1", true, 1), Err(CLUSTER));
        assert_eq!(select(b"-1", true, 1), Err(CLUSTER));
    }

    #[test]
    fn select_checks_the_integer_first_as_redis_does() {
        for bad in [
            &b"abc"[..],
            b"",
            b"01",
            b"+1",
            b" 1",
            b"1.0",
            b"99999999999999999999",
        ] {
            assert_eq!(select(bad, false, 16), Err(NOT_INT), "{bad:?}");
            assert_eq!(select(bad, true, 1), Err(NOT_INT), "{bad:?}");
        }
        assert_eq!(select(b"4294967296", false, 16), Err(NOT_I32));
        assert_eq!(select(b"-2147483649", true, 1), Err(NOT_I32));
    }
}
