//! Live reload (SIGHUP, `POST /reload` on the admin listener, a change of the file): the config
//! file is read and checked again, whole, and what can change while slotgate runs is applied at
//! once: the clients' limits and timeouts and the request limits, users and their ACL rules
//! (and `requirepass`), the read policy, slotgate's zone and the zone map, the log filter, the
//! topology source (a standalone server replaced by a cluster, another Sentinel master name: the
//! refresher switches, and new requests go to the new backends), and the backends' settings (a
//! new password, pool sizes, replicas' connections: every node is renewed). Connected clients
//! keep their connections and nothing in flight is touched: each session takes the new settings
//! when it is told (`tag::RECONFIGURE`). The TLS listener's certificate and key files are read
//! again too, as their watch does.
//!
//! What a running slotgate cannot change (listen addresses, threads, the command table, ...)
//! keeps its old value, and the reload names it in its log line. This module must never apply a
//! file that does not validate, nor apply part of a section: a section is taken whole or, when
//! it cannot be taken, left whole.
//!
//! The decisions are pure: [`plan`] says what a new file changes, [`applied`] makes the
//! clients' settings a reload puts in force.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::config::{Config, ConfigError, FileConfig, Overrides};
use crate::frontend::{Context, SessionConfig};

/// What a reload can change while slotgate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `[clients]` limits and timeouts, `multi_key`, `[limits]`.
    Clients,
    /// `[[users]]` and `clients.requirepass`.
    Users,
    /// `reads.from` (among the policies that use replicas), `reads.read_your_writes_ms`,
    /// `zone`.
    Reads,
    /// `[[zones]]`: which zone each node is in.
    Zones,
    /// `log`.
    Log,
    /// The topology source: `mode`, `seeds`, `sentinels`, `master_name`, `server`, the
    /// Sentinels' credentials.
    Source,
    /// `[backend]`: the nodes' password and user, TLS, pool sizes, timeouts, queue bounds; and
    /// new nodes for new `[limits]` or replicas' connections (replica reads on or off).
    Backend,
    /// `[[colocate]]`: key families, changed only while the clients are paused (`POST
    /// /pause`): no request is in flight then, and every request after it is read under them.
    Families,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Clients => "clients",
            Change::Users => "users",
            Change::Reads => "reads",
            Change::Zones => "zones",
            Change::Log => "log",
            Change::Source => "topology source",
            Change::Backend => "backend",
            Change::Families => "key families",
        }
    }
}

/// How long the nodes a reload of the backends' settings replaced stay open for sessions that
/// took them from the topology in force an instant before (a session's turn lasts
/// microseconds), before they are closed. The new nodes send nothing until then (and until the
/// old ones answered what they hold), so requests wait in their queues meanwhile: short.
const REPLACED_GRACE: std::time::Duration = std::time::Duration::from_millis(10);

/// What a new file changes: what is applied now, and what keeps its old value until a restart.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub live: Vec<Change>,
    pub restart: Vec<&'static str>,
}

impl Plan {
    fn live(&mut self, c: Change) {
        if !self.live.contains(&c) {
            self.live.push(c);
        }
    }
}

/// What `new` changes against `old` (both files as read, with the validated configurations
/// they made under the same command-line flags).
pub fn plan(
    old: (&FileConfig, &Config),
    new: (&FileConfig, &Config),
    clients_paused: bool,
) -> Plan {
    let ((of, oc), (nf, nc)) = (old, new);
    let mut p = Plan::default();
    let mut fixed = |changed: bool, what: &'static str| {
        if changed {
            p.restart.push(what);
        }
    };
    fixed(of.listen != nf.listen || oc.listen != nc.listen, "listen");
    fixed(
        of.unix_socket != nf.unix_socket || of.unix_socket_perm != nf.unix_socket_perm,
        "unix_socket",
    );
    fixed(of.threads != nf.threads, "threads");
    fixed(of.io != nf.io, "io");
    fixed(of.config_check_ms != nf.config_check_ms, "config_check_ms");
    let source_changed = oc.backend_mode != nc.backend_mode
        || of.sentinel_username != nf.sentinel_username
        || of.sentinel_password != nf.sentinel_password;
    fixed(of.topology != nf.topology, "[topology]");
    fixed(of.admin != nf.admin, "[admin]");
    fixed(
        of.tls != nf.tls,
        "[tls] (the certificate files' contents are reloaded)",
    );
    let (oc_, nc_) = (&of.clients, &nf.clients);
    fixed(
        oc_.drain_timeout_ms != nc_.drain_timeout_ms,
        "clients.drain_timeout_ms",
    );
    fixed(
        oc_.deny_commands != nc_.deny_commands,
        "clients.deny_commands",
    );
    fixed(oc_.fleet_writes != nc_.fleet_writes, "clients.fleet_writes");
    // Where keys are stored: a change while requests run would send some under the old names
    // and some under the new; while the clients are paused none runs.
    fixed(
        of.colocate != nf.colocate && !clients_paused,
        "[[colocate]] (live only while the clients are paused: POST /pause)",
    );
    fixed(
        of.reads.max_replica_lag_ms != nf.reads.max_replica_lag_ms
            || of.reads.check_interval_ms != nf.reads.check_interval_ms,
        "reads.max_replica_lag_ms, reads.check_interval_ms",
    );
    // The clients' section without the fields above and the password (a user's).
    let limits = |c: &crate::config::file::ClientsFile| {
        let mut c = c.clone();
        c.drain_timeout_ms = None;
        c.deny_commands = None;
        c.fleet_writes = None;
        c.requirepass = None;
        c
    };
    if limits(oc_) != limits(nc_) || of.multi_key != nf.multi_key {
        p.live(Change::Clients);
    }
    if of.users != nf.users || oc_.requirepass != nc_.requirepass {
        p.live(Change::Users);
    }
    if oc.session.read_from != nc.session.read_from
        || oc.session.read_your_writes != nc.session.read_your_writes
        || oc.session.zone != nc.session.zone
    {
        p.live(Change::Reads);
    }
    if of.colocate != nf.colocate && clients_paused {
        p.live(Change::Families);
    }
    if oc.zones != nc.zones {
        p.live(Change::Zones);
    }
    if oc.log != nc.log {
        p.live(Change::Log);
    }
    if source_changed {
        p.live(Change::Source);
    }
    // Request limits are the clients' and the backends' (reply limits).
    if of.limits != nf.limits {
        p.live(Change::Clients);
    }
    // Replicas get connections only under a read policy that uses them, and in a cluster
    // connections that send READONLY first: a change of either is new nodes.
    if of.backend != nf.backend
        || of.limits != nf.limits
        || oc.backend.replica_links != nc.backend.replica_links
    {
        p.live(Change::Backend);
    }
    p
}

/// The file as it is in force after a reload of `new`: `new`, but for the settings that need a
/// restart, which keep `old`'s values (so that the next reload compares with what runs, and
/// names such a setting again until it is back or slotgate restarts).
pub fn in_force(old: &FileConfig, new: &FileConfig, clients_paused: bool) -> FileConfig {
    let mut f = new.clone();
    f.listen = old.listen.clone();
    f.unix_socket = old.unix_socket.clone();
    f.unix_socket_perm = old.unix_socket_perm.clone();
    f.threads = old.threads;
    f.io = old.io.clone();
    f.config_check_ms = old.config_check_ms;
    f.topology = old.topology.clone();
    f.admin = old.admin.clone();
    f.tls = old.tls.clone();
    f.clients.drain_timeout_ms = old.clients.drain_timeout_ms;
    f.clients.deny_commands = old.clients.deny_commands.clone();
    f.clients.fleet_writes = old.clients.fleet_writes;
    f.reads.max_replica_lag_ms = old.reads.max_replica_lag_ms;
    f.reads.check_interval_ms = old.reads.check_interval_ms;
    if !clients_paused {
        f.colocate = old.colocate.clone();
    }
    f
}

/// The clients' settings a reload puts in force: `new`'s, but for what a running slotgate
/// cannot change (the command table's `deny_commands` and `fleet_writes`), which stay `old`'s,
/// and the key families, which change only with `families` (the clients are paused).
pub fn applied(old: &SessionConfig, new: &SessionConfig, families: bool) -> SessionConfig {
    let mut s = new.clone();
    s.deny_commands = old.deny_commands.clone();
    s.fleet_writes = old.fleet_writes;
    if !families {
        s.families = old.families.clone();
    }
    s
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (slotgate was started without --config)")]
    NoFile,
    #[error("{0}")]
    Invalid(#[from] ConfigError),
}

/// Sets the log filter (the subscriber's reload handle, made by the binary).
pub type SetLog = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Hands the refresher the topology source a configuration names; false when it could not
/// take it (a switch already waiting).
pub type SwitchSource = Box<dyn Fn(&Config) -> bool + Send + Sync>;

/// What a reload acts on in the running slotgate.
pub struct Handles {
    pub ctx: Arc<Context>,
    /// The TLS listener's certificate, read again on every reload.
    pub certificate: Option<Arc<crate::tls::ServerCert>>,
    pub switch: SwitchSource,
}

/// Where the configuration came from, and what a reload changes.
pub struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
    set_log: Option<SetLog>,
    /// The file and configuration in force (for the next plan); one reload at a time.
    current: Mutex<(FileConfig, Config)>,
    handles: Handles,
    /// The config file as it was when last read.
    seen: Mutex<Option<Stamp>>,
}

/// What tells a changed file: its modification time, length and inode, read through links
/// (Kubernetes replaces a mounted ConfigMap by swapping a `..data` link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

/// Where slotgate's configuration comes from, for reloads: the file, the flags layered on it,
/// and how to set the log filter (`None` when `RUST_LOG` chose it).
pub struct ConfigSource {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    pub set_log: Option<SetLog>,
}

impl Reloader {
    pub fn new(
        source: ConfigSource,
        file: FileConfig,
        config: Config,
        handles: Handles,
    ) -> Reloader {
        Reloader {
            overrides: source.overrides,
            set_log: source.set_log,
            seen: Mutex::new(source.path.as_deref().and_then(stamp)),
            path: source.path,
            current: Mutex::new((file, config)),
            handles,
        }
    }

    /// Whether the config file changed since it was last read.
    pub fn file_changed(&self) -> bool {
        let Some(path) = self.path.as_deref() else {
            return false;
        };
        let now = stamp(path);
        // A file that is gone for a moment (being replaced) is looked at again next time.
        now.is_some() && *self.seen() != now
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Stamp>> {
        match self.seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Reads the file again and applies what it changes; the file in force stays in force,
    /// whole, when the new one does not validate.
    pub fn reload(&self) -> Result<Plan, ReloadError> {
        if let Some(cert) = &self.handles.certificate {
            match cert.reload(true) {
                Ok(crate::tls::Reload::Reloaded) => info!("TLS certificate reloaded"),
                Ok(crate::tls::Reload::Unchanged) => {}
                Err(e) => warn!(error = %e, "TLS certificate not reloaded; keeping the one in use"),
            }
        }
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let mut current = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        // Taken before the read: a change made while it reads is seen as a new one.
        *self.seen() = stamp(path);
        let file = Config::read_file(path)?;
        let config = Config::from_file(file.clone(), &self.overrides)?;
        let paused = self.handles.ctx.client_pause.is_paused();
        let plan = plan((&current.0, &current.1), (&file, &config), paused);
        self.apply(&plan, &current.1, &config);
        // What runs: the old file's values where a restart is needed (both halves validated
        // on their own; should the two not go together, the new file is remembered).
        let kept = in_force(&current.0, &file, paused);
        *current = match Config::from_file(kept.clone(), &self.overrides) {
            Ok(c) => (kept, c),
            Err(_) => (file, config),
        };
        Ok(plan)
    }

    fn apply(&self, plan: &Plan, old: &Config, new: &Config) {
        let ctx = &self.handles.ctx;
        let clients = plan.live.iter().any(|c| {
            matches!(
                c,
                Change::Clients | Change::Users | Change::Reads | Change::Families
            )
        });
        let families = plan.live.contains(&Change::Families);
        if clients {
            let mut session = applied(&old.session, &new.session, families);
            session.max_clients = crate::fd_limit::adjust(session.max_clients);
            ctx.hold_budget.set_limit(session.failover_hold_max_bytes);
            ctx.auth_throttle
                .set_limit(session.max_auth_failures_per_minute);
            let budget = session.memory_budget;
            ctx.config.store(Arc::new(session));
            // After the store: a session starting meanwhile reads the new one.
            ctx.clients.reconfigure_all();
            ctx.clients.set_memory_budget(budget);
        }
        let backend = plan.live.contains(&Change::Backend);
        if backend {
            // New nodes with the new settings; the old ones finish what is in flight, and are
            // closed after a grace: a session that took one from the old snapshot just before
            // the new one came has it send what it queued there, in order.
            let replaced = ctx.backends.replace_config(new.backend.clone());
            ctx.topology.renew(&ctx.backends);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(async move {
                        tokio::time::sleep(REPLACED_GRACE).await;
                        crate::backend::Backends::retire_replaced(replaced);
                    });
                }
                Err(_) => crate::backend::Backends::retire_replaced(replaced),
            }
        }
        if backend || plan.live.contains(&Change::Source) {
            // The source opens its connections as the backends do (a new password, TLS), and
            // keeps `[topology]`'s old timeout, which needs a restart.
            let mut c = if plan.live.contains(&Change::Source) {
                new.clone()
            } else {
                old.clone()
            };
            c.backend = (*ctx.backends.config()).clone();
            c.discovery_timeout = old.discovery_timeout;
            c.session = applied(&old.session, &new.session, families);
            if !(self.handles.switch)(&c) {
                warn!("the topology source was not switched: a switch is still waiting");
            }
        }
        if plan.live.contains(&Change::Zones) {
            ctx.topology.rezone(Arc::new(new.zones.clone()));
        }
        if plan.live.contains(&Change::Log) {
            match &self.set_log {
                Some(set) => {
                    if let Err(e) = set(&new.log) {
                        warn!(error = %e, "log filter not changed");
                    }
                }
                None => info!("log filter set by RUST_LOG; the file's log is not applied"),
            }
        }
    }
}

/// Runs a reload and says what it did in the log: one line, with what was applied and what
/// needs a restart, or why the file was refused.
pub fn reload_and_log(reloader: &Reloader, by: &'static str) -> Result<Plan, ReloadError> {
    match reloader.reload() {
        Ok(plan) => {
            let live: Vec<&str> = plan.live.iter().map(|c| c.as_str()).collect();
            if plan.restart.is_empty() {
                info!(by, applied = ?live, "configuration reloaded");
            } else {
                warn!(
                    by,
                    applied = ?live,
                    needs_restart = ?plan.restart,
                    "configuration reloaded; these changes keep their old values until a restart"
                );
            }
            Ok(plan)
        }
        Err(ReloadError::NoFile) => {
            info!(by, "no config file to reload (started without --config)");
            Err(ReloadError::NoFile)
        }
        Err(e) => {
            warn!(by, error = %e, "configuration not reloaded; keeping the one in force");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(text: &str) -> (FileConfig, Config) {
        let f: FileConfig = toml::from_str(text).unwrap();
        let c = Config::from_file(f.clone(), &Overrides::default()).unwrap();
        (f, c)
    }

    const BASE: &str = "mode = \"cluster\"\nseeds = [\"127.0.0.1:7000\"]\n";

    fn plan_of(old: &str, new: &str) -> Plan {
        let (of, oc) = configs(&format!("{BASE}{old}"));
        let (nf, nc) = configs(&format!("{BASE}{new}"));
        plan((&of, &oc), (&nf, &nc), false)
    }

    #[test]
    fn should_change_nothing_for_the_same_file() {
        assert_eq!(plan_of("", ""), Plan::default());
    }

    #[test]
    fn should_keep_key_families_until_a_restart() {
        let p = plan_of("", "[[colocate]]\npreset = \"rq\"\n");
        assert_eq!(
            p.restart,
            vec!["[[colocate]] (live only while the clients are paused: POST /pause)"]
        );
        assert!(p.live.is_empty());
        let (of, oc) = configs(BASE);
        let (nf, nc) = configs(&format!("{BASE}[[colocate]]\npreset = \"rq\"\n"));
        assert!(nc.session.families.is_some());
        assert_eq!(applied(&oc.session, &nc.session, false).families, None);
        assert_eq!(in_force(&of, &nf, false).colocate, None);
    }

    #[test]
    fn should_change_key_families_while_the_clients_are_paused() {
        let (of, oc) = configs(BASE);
        let (nf, nc) = configs(&format!("{BASE}[[colocate]]\npreset = \"rq\"\n"));
        let p = plan((&of, &oc), (&nf, &nc), true);
        assert_eq!(p.live, vec![Change::Families]);
        assert!(p.restart.is_empty());
        assert!(applied(&oc.session, &nc.session, true).families.is_some());
        assert_eq!(in_force(&of, &nf, true).colocate, nf.colocate);
    }

    #[test]
    fn should_apply_client_limits_live() {
        let p = plan_of("", "[clients]\nmax_clients = 20\nidle_timeout_ms = 500\n");
        assert_eq!(p.live, vec![Change::Clients]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_apply_users_and_requirepass_live() {
        let p = plan_of(
            "",
            "[clients]\nrequirepass = \"x\"\n[[users]]\nname = \"a\"\nrules = \"on >p ~* +@all\"\n",
        );
        assert_eq!(p.live, vec![Change::Users]);
    }

    #[test]
    fn should_apply_a_read_policy_among_replica_policies_live() {
        let p = plan_of(
            "[reads]\nfrom = \"prefer-replica\"\n",
            "zone = \"b\"\n[reads]\nfrom = \"nearest\"\nread_your_writes_ms = 100\n",
        );
        assert_eq!(p.live, vec![Change::Reads]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_turn_replica_reads_on_live_with_new_nodes() {
        let p = plan_of("", "[reads]\nfrom = \"prefer-replica\"\n");
        assert_eq!(p.live, vec![Change::Reads, Change::Backend]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_apply_request_limits_to_clients_and_backends_live() {
        let p = plan_of("", "[limits]\nmax_args = 10\n");
        assert_eq!(p.live, vec![Change::Clients, Change::Backend]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_apply_zones_and_the_log_filter_live() {
        let p = plan_of(
            "",
            "log = \"debug\"\n[[zones]]\nname = \"a\"\nnodes = [\"127.0.0.2/32\"]\n",
        );
        assert_eq!(p.live, vec![Change::Zones, Change::Log]);
    }

    #[test]
    fn should_name_what_needs_a_restart() {
        let (of, oc) = configs(BASE);
        let (nf, nc) = configs(
            "listen = \"127.0.0.1:7777\"\nthreads = 2\nmode = \"standalone\"\nserver = \"127.0.0.1:6379\"\n\
             [backend]\nread_timeout_ms = 10\n[topology]\nrefresh_interval_ms = 5000\n\
             [limits]\nmax_args = 10\n[admin]\nlisten = \"127.0.0.1:9\"\n\
             [clients]\ndrain_timeout_ms = 5\ndeny_commands = [\"KEYS\"]\nfleet_writes = true\n\
             [reads]\nmax_replica_lag_ms = 5\n",
        );
        let p = plan((&of, &oc), (&nf, &nc), false);
        assert_eq!(
            p.live,
            vec![Change::Source, Change::Clients, Change::Backend],
            "{p:?}"
        );
        assert_eq!(p.restart.len(), 8, "{:?}", p.restart);
    }

    #[test]
    fn should_apply_backend_settings_live() {
        let p = plan_of(
            "",
            "[backend]\npassword = \"x\"\nconnections_per_node = 2\n",
        );
        assert_eq!(p.live, vec![Change::Backend]);
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_switch_the_topology_source_live() {
        let (of, oc) = configs("mode = \"standalone\"\nserver = \"127.0.0.1:6379\"\n");
        let (nf, nc) = configs(BASE);
        let p = plan((&of, &oc), (&nf, &nc), false);
        assert_eq!(p.live, vec![Change::Source]);
        assert!(p.restart.is_empty());
        let (nf2, nc2) = configs("mode = \"cluster\"\nseeds = [\"127.0.0.1:7001\"]\n");
        let p = plan((&nf, &nc), (&nf2, &nc2), false);
        assert_eq!(p.live, vec![Change::Source], "new seeds");
    }

    #[test]
    fn should_switch_between_a_cluster_and_a_server_with_new_nodes_while_reads_use_replicas() {
        let reads = "[reads]\nfrom = \"prefer-replica\"\n";
        let (of, oc) = configs(&format!(
            "mode = \"standalone\"\nserver = \"127.0.0.1:6379\"\n{reads}"
        ));
        let (nf, nc) = configs(&format!("{BASE}{reads}"));
        let p = plan((&of, &oc), (&nf, &nc), false);
        assert_eq!(p.live, vec![Change::Source, Change::Backend], "{p:?}");
        assert!(p.restart.is_empty());
    }

    #[test]
    fn should_keep_the_command_table_settings_in_the_applied_settings() {
        let (_, old) = configs(BASE);
        let (_, new) = configs(&format!(
            "{BASE}[clients]\nmax_clients = 7\ndeny_commands = [\"KEYS\"]\nfleet_writes = true\n\
             [limits]\nmax_args = 10\n[reads]\nfrom = \"prefer-replica\"\nread_your_writes_ms = 9\n"
        ));
        let s = applied(&old.session, &new.session, false);
        assert_eq!(s.max_clients, 7);
        assert_eq!(s.deny_commands, old.session.deny_commands);
        assert_eq!(s.fleet_writes, old.session.fleet_writes);
        assert_eq!(s.limits, new.session.limits);
        assert_eq!(s.read_from, new.session.read_from);
        assert_eq!(s.read_your_writes, new.session.read_your_writes);
    }

    #[test]
    fn should_name_a_setting_that_needs_a_restart_until_it_is_back() {
        let (of, oc) = configs(BASE);
        let (nf, nc) = configs(&format!("{BASE}threads = 3\n[clients]\nmax_clients = 9\n"));
        assert_eq!(plan((&of, &oc), (&nf, &nc), false).restart, vec!["threads"]);
        let (uf, uc) = configs(&format!("{BASE}io = \"uring\"\n"));
        assert_eq!(plan((&of, &oc), (&uf, &uc), false).restart, vec!["io"]);
        let kept = in_force(&of, &nf, false);
        assert_eq!(kept.threads, of.threads);
        assert_eq!(kept.clients.max_clients, Some(9));
        let kc = Config::from_file(kept.clone(), &Overrides::default()).unwrap();
        // The same file again: still not in force, named again.
        assert_eq!(
            plan((&kept, &kc), (&nf, &nc), false).restart,
            vec!["threads"]
        );
        // Back to what runs: nothing to name.
        assert!(plan((&kept, &kc), (&of, &oc), false).restart.is_empty());
    }

    #[test]
    fn should_take_a_new_read_policy_among_replica_policies() {
        let (_, old) = configs(&format!("{BASE}[reads]\nfrom = \"prefer-replica\"\n"));
        let (_, new) = configs(&format!("{BASE}[reads]\nfrom = \"nearest\"\n"));
        assert_eq!(
            applied(&old.session, &new.session, false).read_from,
            new.session.read_from
        );
    }
}
