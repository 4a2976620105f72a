//! The command table as data: every Redis 7.0 command with its arity, flags and key specs
//! (generated from Redis' own `COMMAND` output into `table/redis70.rs`), and the routing policy
//! slotgate applies to it (written here, by hand, as data).
//!
//! Lookups are case-insensitive and allocate nothing. This module must never route: it only
//! says how a command is to be routed.

#[rustfmt::skip]
mod redis70;

use std::collections::HashMap;

/// ACL categories, as `COMMAND INFO` and `ACL CAT` name them (without the `@`).
pub mod cat {
    pub const KEYSPACE: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const SET: u32 = 1 << 3;
    pub const SORTEDSET: u32 = 1 << 4;
    pub const LIST: u32 = 1 << 5;
    pub const HASH: u32 = 1 << 6;
    pub const STRING: u32 = 1 << 7;
    pub const BITMAP: u32 = 1 << 8;
    pub const HYPERLOGLOG: u32 = 1 << 9;
    pub const GEO: u32 = 1 << 10;
    pub const STREAM: u32 = 1 << 11;
    pub const PUBSUB: u32 = 1 << 12;
    pub const ADMIN: u32 = 1 << 13;
    pub const FAST: u32 = 1 << 14;
    pub const SLOW: u32 = 1 << 15;
    pub const BLOCKING: u32 = 1 << 16;
    pub const DANGEROUS: u32 = 1 << 17;
    pub const CONNECTION: u32 = 1 << 18;
    pub const TRANSACTION: u32 = 1 << 19;
    pub const SCRIPTING: u32 = 1 << 20;

    /// Category names in Redis' order (the order `ACL CAT` lists them in).
    pub const NAMES: &[(u32, &str)] = &[
        (KEYSPACE, "keyspace"),
        (READ, "read"),
        (WRITE, "write"),
        (SET, "set"),
        (SORTEDSET, "sortedset"),
        (LIST, "list"),
        (HASH, "hash"),
        (STRING, "string"),
        (BITMAP, "bitmap"),
        (HYPERLOGLOG, "hyperloglog"),
        (GEO, "geo"),
        (STREAM, "stream"),
        (PUBSUB, "pubsub"),
        (ADMIN, "admin"),
        (FAST, "fast"),
        (SLOW, "slow"),
        (BLOCKING, "blocking"),
        (DANGEROUS, "dangerous"),
        (CONNECTION, "connection"),
        (TRANSACTION, "transaction"),
        (SCRIPTING, "scripting"),
    ];

    /// The bit of the category named `name` (case-insensitive, without `@`).
    pub fn of(name: &[u8]) -> Option<u32> {
        NAMES
            .iter()
            .find(|(_, n)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|&(bit, _)| bit)
    }
}

/// What a command does to the keys of one key spec, from the spec's flags in `COMMAND INFO`:
/// what ACL key patterns by access (`%R~`, `%W~`) are checked against.
pub mod keyspec {
    /// `access`: the key's value is read (or returned).
    pub const READ: u8 = 1 << 0;
    /// `insert`, `update` or `delete`: the key's value is written.
    pub const WRITE: u8 = 1 << 1;
    /// `not_key`: a name that routes like a key but is not one (SPUBLISH's shard channel).
    pub const NOT_KEY: u8 = 1 << 2;
    /// `variable_flags`: the access depends on the arguments (SET ... GET, BITFIELD).
    pub const VARIABLE: u8 = 1 << 3;
}

/// Command flags, as `COMMAND INFO` names them.
pub mod flags {
    pub const WRITE: u32 = 1 << 0;
    pub const READONLY: u32 = 1 << 1;
    pub const DENYOOM: u32 = 1 << 2;
    pub const ADMIN: u32 = 1 << 3;
    pub const PUBSUB: u32 = 1 << 4;
    pub const NOSCRIPT: u32 = 1 << 5;
    pub const BLOCKING: u32 = 1 << 6;
    pub const LOADING: u32 = 1 << 7;
    pub const STALE: u32 = 1 << 8;
    pub const FAST: u32 = 1 << 9;
    pub const NO_AUTH: u32 = 1 << 10;
    pub const MAY_REPLICATE: u32 = 1 << 11;
    pub const NO_MANDATORY_KEYS: u32 = 1 << 12;
    pub const MOVABLEKEYS: u32 = 1 << 13;
    pub const NO_MULTI: u32 = 1 << 14;
    pub const ALLOW_BUSY: u32 = 1 << 15;
    pub const SKIP_MONITOR: u32 = 1 << 16;
    pub const SKIP_SLOWLOG: u32 = 1 << 17;
    pub const ASKING: u32 = 1 << 18;
    pub const PROTECTED: u32 = 1 << 19;
    pub const NO_ASYNC_LOADING: u32 = 1 << 20;

    /// Flag names in bit order, for documentation.
    pub const NAMES: &[(u32, &str)] = &[
        (WRITE, "write"),
        (READONLY, "readonly"),
        (DENYOOM, "denyoom"),
        (ADMIN, "admin"),
        (PUBSUB, "pubsub"),
        (NOSCRIPT, "noscript"),
        (BLOCKING, "blocking"),
        (LOADING, "loading"),
        (STALE, "stale"),
        (FAST, "fast"),
        (NO_AUTH, "no_auth"),
        (MAY_REPLICATE, "may_replicate"),
        (NO_MANDATORY_KEYS, "no_mandatory_keys"),
        (MOVABLEKEYS, "movablekeys"),
        (NO_MULTI, "no_multi"),
        (ALLOW_BUSY, "allow_busy"),
        (SKIP_MONITOR, "skip_monitor"),
        (SKIP_SLOWLOG, "skip_slowlog"),
        (ASKING, "asking"),
        (PROTECTED, "protected"),
        (NO_ASYNC_LOADING, "no_async_loading"),
    ];
}

/// Where the search for a key spec's first key starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    Index(i16),
    Keyword {
        keyword: &'static str,
        start_from: i16,
    },
    Unknown,
}

/// How a key spec's keys run on from the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    Range {
        last_key: i16,
        step: i16,
        limit: i16,
    },
    KeyNum {
        key_num_idx: i16,
        first_key: i16,
        step: i16,
    },
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// What the command does to these keys ([`keyspec`] bits).
    pub access: u8,
}

/// One command or subcommand as Redis describes it. Subcommand names are `container|sub`.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub arity: i16,
    pub flags: u32,
    /// ACL categories ([`cat`] bits).
    pub categories: u32,
    pub key_specs: &'static [KeySpec],
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }
}

/// How the replies of a fan-out are merged into the one reply the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// MGET: one array, each element at its key's original position.
    Ordered,
    /// DEL, UNLINK, EXISTS, TOUCH, DBSIZE: the integers summed.
    Sum,
    /// MSET: `+OK` when every part said OK, else the first error.
    AllOk,
    /// SCRIPT KILL, FUNCTION KILL: `+OK` from the master whose script was killed; else a
    /// master's `-UNKILLABLE` (the script wrote); else the first reply (`-NOTBUSY`).
    AnyOk,
    /// INFO: the first master's text with the keyspace summed and a `# Proxy` section.
    Info,
    /// SCRIPT LOAD, FUNCTION LOAD: every master answers the same; the first reply, or the first
    /// error.
    Same,
    /// SCRIPT EXISTS: a script exists only if every master has it (element-wise minimum).
    AllExist,
    /// KEYS: the arrays of every master, one after another (capped).
    Concat,
    /// RANDOMKEY: every master's RANDOMKEY, then every master's DBSIZE; a key from a master
    /// drawn at random, weighted by its key count (null only when every master is empty).
    RandomKey,
    /// PUBSUB CHANNELS, PUBSUB SHARDCHANNELS: the arrays of every master, each name once.
    Union,
    /// PUBSUB NUMSUB, PUBSUB SHARDNUMSUB: `[name, count, ...]` from every master, the counts
    /// summed name by name.
    PairSum,
    /// SLOWLOG GET: every master's entries, newest first (up to the count asked for from each).
    Newest,
    /// LATENCY DOCTOR, MEMORY DOCTOR, ...: every master's text under a line naming it.
    Text,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Reset,
    ClientSetName,
    ClientGetName,
    ClientId,
    ClientList,
    ClientInfo,
    ClientKill,
    ClientSetInfo,
    ClientNoEvict,
    ClientNoTouch,
    /// `CLIENT REPLY ON|OFF|SKIP`: answered by the session, which owns which replies are sent.
    ClientReply,
    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the session of client `id` has it sent to the node
    /// it is blocked on, naming its connection there; the node answers.
    ClientUnblock,
    ClusterKeySlot,
    /// What a Redis without cluster support says to CLUSTER, READONLY and READWRITE.
    ClusterDisabled,
    /// `ACL CAT [category]`, from the table's categories.
    AclCat,
    /// `ACL WHOAMI`.
    AclWhoami,
    /// `ACL LIST`: the proxy's users as rules, passwords as digests.
    AclList,
    /// `ACL USERS`.
    AclUsers,
    /// `ACL GETUSER <name>`.
    AclGetuser,
}

/// A command as ACL rules see it: id, categories and name (`config|get` for a subcommand), with
/// its subcommands'.
#[derive(Debug, Clone)]
pub struct AclEntry {
    pub id: u16,
    pub categories: u32,
    pub name: &'static str,
    pub subs: Vec<(u16, u32, &'static str)>,
}

/// The transaction commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Txn {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
}

/// What slotgate does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the master of the keys' slot; CROSSSLOT if they span slots; any master if no keys.
    Keyed,
    /// Like `Keyed`, but keys in many slots are split per slot and the replies merged
    /// (unless the multi-key policy is strict). `step` is the stride of key arguments.
    Split { merge: Merge, step: u8 },
    /// To one master; the reply does not depend on which.
    AnyMaster,
    /// PUBLISH: to the pub/sub master ([`crate::router::PUBSUB_SLOT`]'s), where the sessions'
    /// subscriber connections are, so that its count of receivers is exact.
    Publish,
    /// To every master, replies merged.
    AllMasters(Merge),
    /// Answered by the proxy.
    Local(Local),
    /// SCAN: one master at a time, the master's index folded into the cursor.
    Scan,
    /// (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE: on the session's subscriber connection, whose
    /// frames are forwarded as they come.
    PubSub,
    /// By key slot, on a connection of the session's own, so that blocking never stalls the
    /// shared pipelines.
    Blocking,
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH: session state plus, for WATCH, a private connection.
    Transaction(Txn),
    /// Refused by name, with the reason.
    Refuse(&'static str),
}

impl Route {
    /// One line describing the route, for the supported-commands page.
    pub fn describe(&self) -> String {
        match self {
            Route::Keyed => "routed by key slot; CROSSSLOT if keys span slots".into(),
            Route::Split { merge, .. } => {
                format!("split per slot across masters, merged ({merge:?})")
            }
            Route::AnyMaster => "sent to any master".into(),
            Route::Publish => "sent to the master of slot 0, where slotgate's subscriber connections are (the receiver count is exact)".into(),
            Route::AllMasters(m) => format!("sent to every master, merged ({m:?})"),
            Route::Local(l) => format!("answered by slotgate ({l:?})"),
            Route::Blocking => {
                "routed by key slot on a private connection of the client's own".into()
            }
            Route::Scan => "every master in turn; the cursor carries the master's index".into(),
            Route::PubSub => {
                "on a subscriber connection of the client's own (SSUBSCRIBE: the channel's slot master)".into()
            }
            Route::Transaction(Txn::Watch) => {
                "pins a private connection to the keys' master until EXEC, DISCARD or UNWATCH"
                    .into()
            }
            Route::Transaction(t) => {
                format!(
                    "transaction ({t:?}): queued by slotgate, sent as one MULTI..EXEC to the slot's master"
                )
            }
            Route::Refuse(r) => format!("refused: {r}"),
        }
    }
}

/// A command with its route, and its subcommands if it is a container.
#[derive(Debug)]
pub struct Entry {
    pub spec: &'static CommandSpec,
    pub route: Route,
    /// Calls, errors and latency of this command as clients see them; registered on first use
    /// so that unused commands add no series.
    metrics: std::sync::OnceLock<crate::metrics::CommandMetrics>,
    subs: HashMap<NameKey, Entry, foldhash::fast::RandomState>,
    /// The argument index of the command's only key, when its key specs name exactly one key
    /// at a fixed place (GET, SET, HGET, ...): routing then skips the general key-spec walk.
    pub single_key: Option<usize>,
    /// `(first, step)` when the arguments from `first` on come in groups of `step` (a key and
    /// its values: MSET, MSETNX): Redis refuses any other count with its arity error, so a
    /// request is checked whole before it is split and no part can lack a value.
    pub groups: Option<(u8, u8)>,
    /// [`Self::single_key`] with what the command does to that key ([`keyspec`] `READ`/`WRITE`),
    /// when its key spec says so plainly (not SET's or BITFIELD's variable access, not
    /// SPUBLISH's channel): the ACL check's fast path.
    pub single_key_access: Option<(usize, u8)>,
    /// The entry's number in its table ([`Table::name_of`] gives its name back): what a
    /// session records as its last command, in one store.
    pub id: u16,
    /// EVAL and EVAL_RO: the node caches the script they run, and slotgate remembers its body
    /// once it has (so that EVALSHA works on every master and SCRIPT EXISTS says so).
    pub caches_script: bool,
}

/// The argument of the command named `name` (a table name: `script|load` for a subcommand)
/// that names a script: EVALSHA's and EVALSHA_RO's SHA1 (to repair a NOSCRIPT), SCRIPT LOAD's
/// body (to remember it).
pub fn script_arg(name: &str) -> Option<usize> {
    match name {
        "evalsha" | "evalsha_ro" => Some(1),
        "script|load" => Some(2),
        _ => None,
    }
}

/// The index of the one key `spec`'s key specs can name, if they name exactly one at a fixed
/// place.
fn single_key(spec: &CommandSpec) -> Option<usize> {
    match spec.key_specs {
        [
            KeySpec {
                begin: BeginSearch::Index(i),
                find: FindKeys::Range { last_key: 0, .. },
                ..
            },
        ] if *i > 0 => usize::try_from(*i).ok(),
        _ => None,
    }
}

/// The `(first, step)` of a key spec that takes every argument from `first` on in groups of
/// `step > 1`.
fn groups(spec: &CommandSpec) -> Option<(u8, u8)> {
    spec.key_specs.iter().find_map(|ks| match *ks {
        KeySpec {
            begin: BeginSearch::Index(first),
            find:
                FindKeys::Range {
                    last_key: -1,
                    step,
                    limit: 0,
                },
            ..
        } if step > 1 => Some((u8::try_from(first).ok()?, u8::try_from(step).ok()?)),
        _ => None,
    })
}

impl Entry {
    pub fn metrics(&self) -> &crate::metrics::CommandMetrics {
        self.metrics
            .get_or_init(|| crate::metrics::CommandMetrics::new(self.spec.name))
    }

    pub fn has_subcommands(&self) -> bool {
        !self.subs.is_empty()
    }

    /// The subcommand named `sub` (case-insensitive).
    pub fn subcommand(&self, sub: &[u8]) -> Option<&Entry> {
        self.subs.get(&NameKey::of(sub)?)
    }

    pub fn subcommands(&self) -> impl Iterator<Item = &Entry> {
        self.subs.values()
    }
}

/// A command name folded to lower case and packed with its length into 32 bytes: the tables'
/// key, so that a lookup on the request path hashes and compares two integers instead of
/// validating, hashing and comparing a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct NameKey(u128, u128);

impl NameKey {
    /// `None` for names of 32 bytes or more (no command has one).
    fn of(name: &[u8]) -> Option<NameKey> {
        if name.len() >= 32 {
            return None;
        }
        let mut b = [0u8; 32];
        for (d, s) in b.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        if let Some(last) = b.last_mut() {
            *last = name.len() as u8;
        }
        let (lo, hi) = b.split_at(16);
        Some(NameKey(
            u128::from_le_bytes(lo.try_into().ok()?),
            u128::from_le_bytes(hi.try_into().ok()?),
        ))
    }
}

/// The command table slotgate routes with.
#[derive(Debug)]
pub struct Table {
    commands: HashMap<NameKey, Entry, foldhash::fast::RandomState>,
    /// Every entry's description, by its [`Entry::id`].
    specs: Vec<&'static CommandSpec>,
}

const WAIT: &str = "WAIT counts the replicas that acknowledged one connection's writes; not supported through a proxy yet";
const TRACKING: &str = "client-side caching (CLIENT TRACKING) is not supported through slotgate: invalidations would come from every node over connections shared by many clients";
const HISTOGRAM: &str = "per-command latency histograms are kept per node and cannot be merged exactly; slotgate exports its own per-command latency on the admin listener's /metrics";
const MEMORY_STATS: &str = "MEMORY STATS describes one server; read it from each node (slotgate's INFO lists them under # Nodes)";
const ADMIN: &str = "administrative commands are not passed through a proxy";
const FLEET_WRITES: &str =
    "it would change every master; allow it with `fleet_writes = true` under [clients]";
const FLEET: &str = "fleet-wide scripting and function management is not supported yet";
const REPLICATION: &str = "replication commands are not passed through a proxy";

/// The routes written by hand. Everything not named here follows [`default_route`].
fn named_route(name: &str) -> Option<Route> {
    use Route::*;
    Some(match name {
        "ping" => Local(self::Local::Ping),
        "echo" => Local(self::Local::Echo),
        "quit" => Local(self::Local::Quit),
        "select" => Local(self::Local::Select),
        "hello" => Local(self::Local::Hello),
        "auth" => Local(self::Local::Auth),
        "reset" => Local(self::Local::Reset),
        "readonly" | "readwrite" => Local(self::Local::ClusterDisabled),
        "client|setname" => Local(self::Local::ClientSetName),
        "client|getname" => Local(self::Local::ClientGetName),
        "client|id" => Local(self::Local::ClientId),
        "client|list" => Local(self::Local::ClientList),
        "client|info" => Local(self::Local::ClientInfo),
        "client|kill" => Local(self::Local::ClientKill),
        "client|setinfo" => Local(self::Local::ClientSetInfo),
        "client|no-evict" => Local(self::Local::ClientNoEvict),
        "client|no-touch" => Local(self::Local::ClientNoTouch),
        "client|unblock" => Local(self::Local::ClientUnblock),
        "client|reply" => Local(self::Local::ClientReply),
        "cluster|keyslot" => Local(self::Local::ClusterKeySlot),
        "acl|cat" => Local(self::Local::AclCat),
        "acl|whoami" => Local(self::Local::AclWhoami),
        "acl|list" => Local(self::Local::AclList),
        "acl|users" => Local(self::Local::AclUsers),
        "acl|getuser" => Local(self::Local::AclGetuser),
        "mget" => Split {
            merge: Merge::Ordered,
            step: 1,
        },
        "mset" => Split {
            merge: Merge::AllOk,
            step: 2,
        },
        "del" | "unlink" | "exists" | "touch" => Split {
            merge: Merge::Sum,
            step: 1,
        },
        "dbsize" => AllMasters(Merge::Sum),
        "info" => AllMasters(Merge::Info),
        "command"
        | "command|count"
        | "command|info"
        | "command|docs"
        | "command|list"
        | "command|getkeys"
        | "command|getkeysandflags"
        | "command|help" => AnyMaster,
        "time" | "lolwut" | "config|get" => AnyMaster,
        "publish" => Publish,
        // Flagged admin, but it only tests the HyperLogLog code on whichever node runs it.
        "pfselftest" => AnyMaster,
        "memory|usage" => Keyed,
        "pubsub|channels" | "pubsub|shardchannels" => AllMasters(Merge::Union),
        "pubsub|numsub" | "pubsub|shardnumsub" => AllMasters(Merge::PairSum),
        "pubsub|numpat" => AllMasters(Merge::Sum),
        "slowlog|get" => AllMasters(Merge::Newest),
        "slowlog|len" => AllMasters(Merge::Sum),
        "latency|latest" | "latency|history" => AllMasters(Merge::Concat),
        "latency|doctor" | "latency|graph" | "memory|doctor" | "memory|malloc-stats" => {
            AllMasters(Merge::Text)
        }
        "memory|purge" => AllMasters(Merge::AllOk),
        "latency|histogram" => Refuse(HISTOGRAM),
        "memory|stats" => Refuse(MEMORY_STATS),
        "slowlog|reset" | "latency|reset" => Refuse(FLEET_WRITES),
        "pubsub|help" | "slowlog|help" | "latency|help" | "memory|help" | "object|help"
        | "xinfo|help" | "xgroup|help" | "config|help" => AnyMaster,
        "client|tracking" | "client|trackinginfo" | "client|caching" | "client|getredir" => {
            Refuse(TRACKING)
        }
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => Keyed,
        "xread" | "xreadgroup" => Keyed,
        "multi" => Transaction(self::Txn::Multi),
        "exec" => Transaction(self::Txn::Exec),
        "discard" => Transaction(self::Txn::Discard),
        "watch" => Transaction(self::Txn::Watch),
        "unwatch" => Transaction(self::Txn::Unwatch),
        "wait" => Refuse(WAIT),
        "scan" => Scan,
        "keys" => AllMasters(Merge::Concat),
        "randomkey" => AllMasters(Merge::RandomKey),
        "flushall" | "flushdb" | "config|set" | "config|resetstat" | "config|rewrite" => {
            Refuse(FLEET_WRITES)
        }
        // Databases other than 0 exist only behind Sentinel or standalone; a cluster node
        // answers these itself, with Redis Cluster's "not allowed in cluster mode".
        "move" => Keyed,
        "swapdb" => AnyMaster,
        "sync" | "psync" | "replconf" | "replicaof" | "slaveof" | "failover" => Refuse(REPLICATION),
        "monitor" => Refuse("MONITOR would stream every backend's traffic; not supported"),
        "spublish" => Keyed,
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ssubscribe"
        | "sunsubscribe" => PubSub,
        "script|load" | "function|load" => AllMasters(Merge::Same),
        "script|exists" => AllMasters(Merge::AllExist),
        "script|kill" | "function|kill" => AllMasters(Merge::AnyOk),
        "script|flush" | "function|delete" | "function|flush" | "function|restore" => {
            AllMasters(Merge::AllOk)
        }
        "script|help" | "function|list" | "function|dump" | "function|stats" | "function|help" => {
            AnyMaster
        }
        _ => return None,
    })
}

fn default_route(spec: &CommandSpec) -> Route {
    let name = spec.name;
    if name.starts_with("cluster") {
        return Route::Local(Local::ClusterDisabled);
    }
    if name.starts_with("client") {
        return Route::Refuse("this CLIENT subcommand is not supported through a proxy yet");
    }
    if name.starts_with("script") || name.starts_with("function") {
        return Route::Refuse(FLEET);
    }
    if spec.has(flags::BLOCKING) && !spec.key_specs.is_empty() {
        return Route::Blocking;
    }
    if !spec.key_specs.is_empty() {
        return Route::Keyed;
    }
    if spec.has(flags::ADMIN) || spec.has(flags::NOSCRIPT) {
        return Route::Refuse(ADMIN);
    }
    Route::Refuse("a keyless command with no defined route in a cluster")
}

fn route_for(spec: &CommandSpec) -> Route {
    named_route(spec.name).unwrap_or_else(|| default_route(spec))
}

/// Subcommands newer clients send on connect that Redis 7.0 lacks (added in 7.2); slotgate
/// answers them itself.
static CLIENT_EXTRAS: &[CommandSpec] = &[
    CommandSpec {
        name: "client|setinfo",
        arity: 4,
        flags: flags::NOSCRIPT | flags::LOADING | flags::STALE,
        // As Redis 7.2 files them.
        categories: cat::SLOW | cat::CONNECTION,
        key_specs: &[],
        subcommands: &[],
    },
    CommandSpec {
        name: "client|no-touch",
        arity: 3,
        flags: flags::NOSCRIPT | flags::LOADING | flags::STALE,
        // As Redis 7.2 files them.
        categories: cat::SLOW | cat::CONNECTION,
        key_specs: &[],
        subcommands: &[],
    },
];

fn build_entry(spec: &'static CommandSpec, names: &mut Vec<&'static CommandSpec>) -> Entry {
    let id = u16::try_from(names.len()).unwrap_or(u16::MAX);
    names.push(spec);
    let mut subs = HashMap::with_hasher(foldhash::fast::RandomState::default());
    let extras: &'static [CommandSpec] = if spec.name == "client" {
        CLIENT_EXTRAS
    } else {
        &[]
    };
    for sub in spec.subcommands.iter().chain(extras) {
        let short = sub.name.split_once('|').map_or(sub.name, |(_, s)| s);
        if let Some(key) = NameKey::of(short.as_bytes()) {
            subs.entry(key).or_insert_with(|| build_entry(sub, names));
        }
    }
    Entry {
        spec,
        route: route_for(spec),
        metrics: std::sync::OnceLock::new(),
        subs,
        single_key: single_key(spec),
        single_key_access: single_key(spec)
            .zip(spec.key_specs.first())
            .and_then(|(i, ks)| {
                (ks.access & (keyspec::NOT_KEY | keyspec::VARIABLE) == 0)
                    .then_some((i, ks.access & (keyspec::READ | keyspec::WRITE)))
            }),
        groups: groups(spec),
        id,
        caches_script: matches!(spec.name, "eval" | "eval_ro"),
    }
}

impl Table {
    /// The name of the entry numbered `id` (`client|list` for a subcommand).
    pub fn name_of(&self, id: u16) -> Option<&'static str> {
        self.spec_of(id).map(|s| s.name)
    }

    /// The description of the entry numbered `id`.
    pub fn spec_of(&self, id: u16) -> Option<&'static CommandSpec> {
        self.specs.get(usize::from(id)).copied()
    }

    /// The table for Redis 7.0.
    pub fn redis70() -> Table {
        Self::redis70_with(false)
    }

    /// The table for Redis 7.0; with `fleet_writes`, FLUSHALL, FLUSHDB and CONFIG
    /// SET/RESETSTAT/REWRITE go to every master instead of being refused (an operator's choice:
    /// one client can then wipe or reconfigure the whole cluster).
    pub fn redis70_with(fleet_writes: bool) -> Table {
        let mut commands = HashMap::with_hasher(foldhash::fast::RandomState::default());
        let mut names = Vec::new();
        for spec in redis70::COMMANDS {
            if let Some(key) = NameKey::of(spec.name.as_bytes()) {
                commands.insert(key, build_entry(spec, &mut names));
            }
        }
        let mut t = Table {
            commands,
            specs: names,
        };
        if fleet_writes {
            for name in ["flushall", "flushdb"] {
                if let Some(e) = NameKey::of(name.as_bytes()).and_then(|k| t.commands.get_mut(&k)) {
                    e.route = Route::AllMasters(Merge::AllOk);
                }
            }
            for (container, sub, merge) in [
                ("config", "set", Merge::AllOk),
                ("config", "resetstat", Merge::AllOk),
                ("config", "rewrite", Merge::AllOk),
                ("slowlog", "reset", Merge::AllOk),
                ("latency", "reset", Merge::Sum),
            ] {
                if let Some(e) = NameKey::of(container.as_bytes())
                    .and_then(|k| t.commands.get_mut(&k))
                    .zip(NameKey::of(sub.as_bytes()))
                    .and_then(|(c, k)| c.subs.get_mut(&k))
                {
                    e.route = Route::AllMasters(merge);
                }
            }
        }
        t
    }

    /// The same table without the commands named in `deny` (`flushall`, or `config|set` for a
    /// subcommand): a client sending one gets Redis' unknown-command (or unknown-subcommand)
    /// error, as for a command `rename-command` hid. A name the table does not know is returned
    /// as the error.
    pub fn without(mut self, deny: &[String]) -> Result<Table, String> {
        for name in deny {
            let lower = name.to_ascii_lowercase();
            let removed = match lower.split_once('|') {
                None => NameKey::of(lower.as_bytes())
                    .and_then(|k| self.commands.remove(&k))
                    .is_some(),
                Some((container, sub)) => NameKey::of(container.as_bytes())
                    .and_then(|k| self.commands.get_mut(&k))
                    .zip(NameKey::of(sub.as_bytes()))
                    .and_then(|(c, k)| c.subs.remove(&k))
                    .is_some(),
            };
            if !removed {
                return Err(name.clone());
            }
        }
        Ok(self)
    }

    /// How many entries (commands and subcommands) the table numbers: every [`Entry::id`] is
    /// below it.
    pub fn entry_count(&self) -> usize {
        self.specs.len()
    }

    /// The ids of every entry in the ACL category `bit`.
    pub fn ids_in_category(&self, bit: u32) -> Vec<u16> {
        let mut out = Vec::new();
        for e in self.commands.values() {
            if e.spec.categories & bit != 0 {
                // As Redis' ACLChangeSelectorPerm: a container's rule covers its subcommands.
                out.push(e.id);
                out.extend(e.subs.values().map(|s| s.id));
            } else {
                out.extend(
                    e.subs
                        .values()
                        .filter(|s| s.spec.categories & bit != 0)
                        .map(|s| s.id),
                );
            }
        }
        out
    }

    /// Every command with its subcommands, by name, as ACL rules see them (for `ACL LIST`).
    pub fn acl_entries(&self) -> Vec<AclEntry> {
        let item = |e: &Entry| (e.id, e.spec.categories, e.spec.name);
        let mut out: Vec<AclEntry> = self
            .commands
            .values()
            .map(|e| {
                let mut subs: Vec<_> = e.subs.values().map(item).collect();
                subs.sort_by_key(|s| s.2);
                AclEntry {
                    id: e.id,
                    categories: e.spec.categories,
                    name: e.spec.name,
                    subs,
                }
            })
            .collect();
        out.sort_by_key(|e| e.name);
        out
    }

    /// The ids an ACL rule naming `name` covers: a command with all its subcommands
    /// (`config`), or one subcommand (`config|get`); `None` when there is no such command.
    pub fn ids_of(&self, name: &str) -> Option<Vec<u16>> {
        let lower = name.to_ascii_lowercase();
        match lower.split_once('|') {
            None => {
                let e = self.commands.get(&NameKey::of(lower.as_bytes())?)?;
                let mut ids = vec![e.id];
                ids.extend(e.subs.values().map(|s| s.id));
                Some(ids)
            }
            Some((container, sub)) => {
                let e = self.commands.get(&NameKey::of(container.as_bytes())?)?;
                Some(vec![e.subs.get(&NameKey::of(sub.as_bytes())?)?.id])
            }
        }
    }

    /// Every command and subcommand (`config|get`) in the ACL category `bit`, as `ACL CAT
    /// <category>` lists them (in no particular order, as Redis).
    pub fn in_category(&self, bit: u32) -> Vec<&'static str> {
        let mut out = Vec::new();
        for e in self.commands.values() {
            if e.spec.categories & bit != 0 {
                out.push(e.spec.name);
            }
            for s in e.subs.values() {
                if s.spec.categories & bit != 0 {
                    out.push(s.spec.name);
                }
            }
        }
        out
    }

    /// The command named `name` (case-insensitive).
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.commands.get(&NameKey::of(name)?)
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// The supported-commands page (Markdown), generated from the table.
    pub fn supported_commands_page(&self) -> String {
        let mut rows: Vec<(&str, String, &CommandSpec)> = Vec::new();
        for e in self.commands.values() {
            if e.has_subcommands() {
                for s in e.subcommands() {
                    rows.push((s.spec.name, s.route.describe(), s.spec));
                }
                if !matches!(e.spec.arity, -2 | 2) {
                    rows.push((e.spec.name, e.route.describe(), e.spec));
                }
            } else {
                rows.push((e.spec.name, e.route.describe(), e.spec));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::from(
            "# Commands through slotgate\n\n\
             Generated from slotgate's command table (`slotgate --commands`); do not edit by hand.\n\
             The table is derived from Redis 7.0's own `COMMAND` output.\n\n\
             Under key families (`[[colocate]]`, README \"Key families\"), a key of a family is \
             renamed as stored (`{family}name`) wherever a command names it: every argument \
             its key specs call a key, SORT's STORE key and its BY and GET patterns when every \
             key a pattern forms is one family's (Redis Cluster refuses BY and GET patterns \
             itself; they work in standalone and Sentinel modes), and the keyspace \
             notification channels and patterns of SUBSCRIBE, PSUBSCRIBE and their \
             unsubscribes. Key names are restored in the replies of BLPOP, BRPOP, BZPOPMIN, \
             BZPOPMAX, BLMPOP, BZMPOP, LMPOP, ZMPOP, KEYS, SCAN, RANDOMKEY, XREAD and \
             XREADGROUP, inside EXEC's reply too, and in keyspace notifications (channel, \
             pattern, and the key a keyevent message carries); KEYS and SCAN patterns match \
             the application's names. `tests/family_commands.rs` runs every command that \
             names keys on a family's keys and compares the replies with a single \
             redis-server's. Not rewritten: a keyspace pattern that may match keys outside \
             one family (`__keyspace@0__:*` is sent as it is and its messages' channels are \
             restored; `__keyspace@0__:r*` misses the keys of the `rq` family), shard channels \
             (no keys), and key names a Lua script or function builds itself: Redis refuses \
             one in another node's slot, and slotgate adds to that error that the key was not \
             renamed into its family and belongs in KEYS; one of the same node is read under \
             its own name, which holds nothing.\n\n\
             | command | arity | flags | what slotgate does |\n|---|---|---|---|\n",
        );
        for (name, route, spec) in rows {
            let flag_names: Vec<&str> = flags::NAMES
                .iter()
                .filter(|(bit, _)| spec.has(*bit))
                .map(|(_, n)| *n)
                .collect();
            out.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                name.replace('|', " "),
                spec.arity,
                flag_names.join(", "),
                route.replace('|', "\\|")
            ));
        }
        out.push_str(include_str!("differences.md"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_commands_and_subcommands_leave_the_table_and_unknown_names_are_errors() {
        let t = Table::redis70()
            .without(&["FLUSHALL".into(), "config|set".into()])
            .unwrap();
        assert!(t.get(b"flushall").is_none());
        assert!(t.get(b"get").is_some());
        let config = t.get(b"config").unwrap();
        assert!(!config.subs.contains_key(&NameKey::of(b"set").unwrap()));
        assert!(config.subs.contains_key(&NameKey::of(b"get").unwrap()));
        assert_eq!(
            Table::redis70().without(&["flushal".into()]).err(),
            Some("flushal".to_string())
        );
        assert_eq!(
            Table::redis70().without(&["config|sett".into()]).err(),
            Some("config|sett".to_string())
        );
    }

    #[test]
    fn should_name_a_single_key_only_where_the_key_specs_find_exactly_that_one() {
        let t = Table::redis70();
        let mut checked = 0;
        for e in t
            .commands
            .values()
            .flat_map(|e| std::iter::once(e).chain(e.subcommands()))
        {
            let Some(i) = e.single_key else { continue };
            checked += 1;
            let mut args = vec![e.spec.name.split('|').next().unwrap_or_default()];
            if let Some((_, sub)) = e.spec.name.split_once('|') {
                args.push(sub);
            }
            args.resize(8, "k");
            let req = crate::protocol::Request::from_args(&args);
            let mut keys = crate::command::KeyPositions::new();
            crate::command::key_positions(e.spec, &req, &mut keys);
            assert_eq!(keys.as_slice(), &[i as u32], "{}", e.spec.name);
        }
        assert!(checked > 100, "{checked}");
        assert_eq!(t.get(b"get").and_then(|e| e.single_key), Some(1));
        assert_eq!(t.get(b"mget").and_then(|e| e.single_key), None);
        assert_eq!(t.get(b"eval").and_then(|e| e.single_key), None);
    }

    #[test]
    fn should_hold_every_redis70_command() {
        let t = Table::redis70();
        assert!(t.len() > 200, "{}", t.len());
        assert!(t.get(b"GET").is_some());
        assert!(t.get(b"gEt").is_some());
        assert!(t.get(b"nope").is_none());
        assert!(t.get(&[b'a'; 40]).is_none());
        // The length is part of the key: trailing NULs never alias a shorter name.
        assert!(t.get(b"get\0").is_none());
        assert!(t.get(b"").is_none());
        let client = t.get(b"CLIENT").unwrap();
        assert_eq!(client.subcommand(b"Kill").unwrap().spec.name, "client|kill");
    }

    #[test]
    fn should_route_by_policy() {
        let t = Table::redis70();
        let route = |n: &[u8]| t.get(n).map(|e| e.route);
        assert_eq!(route(b"get"), Some(Route::Keyed));
        assert_eq!(
            route(b"mget"),
            Some(Route::Split {
                merge: Merge::Ordered,
                step: 1
            })
        );
        assert_eq!(route(b"blpop"), Some(Route::Blocking));
        assert_eq!(route(b"bzpopmin"), Some(Route::Blocking));
        assert_eq!(route(b"multi"), Some(Route::Transaction(Txn::Multi)));
        assert_eq!(route(b"subscribe"), Some(Route::PubSub));
        assert_eq!(route(b"publish"), Some(Route::Publish));
        assert_eq!(route(b"ping"), Some(Route::Local(Local::Ping)));
        let client = t.get(b"client");
        assert_eq!(
            client
                .and_then(|c| c.subcommand(b"SETNAME"))
                .map(|e| e.route),
            Some(Route::Local(Local::ClientSetName))
        );
    }
}
