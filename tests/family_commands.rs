//! Key families over the whole command table: every Redis 7.0 command that names keys (as the
//! server's own `COMMAND` lists them, subcommands included) is run on a family's keys through
//! slotgate in front of a 3-master cluster and on a single redis-server under the
//! application's own names, and the replies must be the same; each command is in the table
//! below or excluded with its reason, so a command the table misses fails the test. The keys
//! must be stored under the family's tag on the cluster and never show it to the client. Also:
//! names inside EXEC's replies, keyspace notifications (channels, patterns, keyevent
//! messages), SORT's BY and GET patterns (standalone: Redis Cluster refuses them), and the
//! word slotgate adds when a script names a family key itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::BTreeSet;

use redis::Value;
use support::{Cluster, Proxy, Redis, TempConf};

/// How two replies must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Same {
    /// Byte for byte.
    Reply,
    /// As sets: the order of a hash table's members differs between two servers.
    Sorted,
    /// Both answered, or both refused (times, idle counters, memory sizes).
    Kind,
}

use Same::{Kind, Reply, Sorted};

/// Commands that name keys but are not run here, and why.
const EXCLUDED: &[(&str, &str)] = &[
    (
        "migrate",
        "moves keys to another server: its keys are renamed (unit test), the target is no \
         family's",
    ),
    (
        "move",
        "Redis Cluster has one database and refuses MOVE; a single server would not",
    ),
    (
        "restore-asking",
        "sent by redis-cli --cluster between nodes, not by applications",
    ),
    ("spublish", "a shard channel is no key: never renamed"),
    ("ssubscribe", "a shard channel is no key: never renamed"),
    ("sunsubscribe", "a shard channel is no key: never renamed"),
];

const SCRIPT: &str = "return redis.call('GET', KEYS[1])";

const LIBRARY: &str = "#!lua name=famlib\n\
    redis.register_function('fget', function(keys, args) return redis.call('GET', keys[1]) end)\n\
    redis.register_function{function_name='fget_ro', callback=function(keys, args) \
    return redis.call('GET', keys[1]) end, flags={'no-writes'}}";

/// Every case, in order: the same sequence runs on both sides. Every key is `rq:*`, the
/// `rq` preset's family, so multi-key commands are one slot on the cluster.
fn cases(dump: &[u8], sha: &str) -> Vec<(Vec<Vec<u8>>, Same)> {
    let s = |args: &[&str], same: Same| -> (Vec<Vec<u8>>, Same) {
        (args.iter().map(|a| a.as_bytes().to_vec()).collect(), same)
    };
    let mut v = vec![
        // Strings and bits.
        s(&["SET", "rq:s", "10"], Reply),
        s(&["GET", "rq:s"], Reply),
        s(&["APPEND", "rq:s", "0"], Reply),
        s(&["STRLEN", "rq:s"], Reply),
        s(&["GETRANGE", "rq:s", "0", "1"], Reply),
        s(&["SUBSTR", "rq:s", "0", "1"], Reply),
        s(&["SETRANGE", "rq:s", "0", "2"], Reply),
        s(&["INCR", "rq:s"], Reply),
        s(&["DECR", "rq:s"], Reply),
        s(&["INCRBY", "rq:s", "5"], Reply),
        s(&["DECRBY", "rq:s", "2"], Reply),
        s(&["INCRBYFLOAT", "rq:s", "1.5"], Reply),
        s(&["GETSET", "rq:s", "7"], Reply),
        s(&["SETNX", "rq:s2", "a"], Reply),
        s(&["SETEX", "rq:s3", "1000", "v"], Reply),
        s(&["PSETEX", "rq:s4", "1000000", "v"], Reply),
        s(&["GETEX", "rq:s3", "PERSIST"], Reply),
        s(&["GETDEL", "rq:s4"], Reply),
        s(&["MSET", "rq:m1", "abc", "rq:m2", "abd"], Reply),
        s(&["MSETNX", "rq:m3", "c", "rq:m4", "d"], Reply),
        s(&["MGET", "rq:m1", "rq:m2", "rq:m3", "rq:nope"], Reply),
        s(&["LCS", "rq:m1", "rq:m2"], Reply),
        s(&["SETBIT", "rq:bits", "7", "1"], Reply),
        s(&["GETBIT", "rq:bits", "7"], Reply),
        s(&["BITCOUNT", "rq:bits"], Reply),
        s(&["BITPOS", "rq:bits", "1"], Reply),
        s(&["BITOP", "OR", "rq:bits2", "rq:bits", "rq:m1"], Reply),
        s(&["BITFIELD", "rq:bits", "INCRBY", "u8", "8", "3"], Reply),
        s(&["BITFIELD_RO", "rq:bits", "GET", "u8", "8"], Reply),
        // The keyspace.
        s(&["EXISTS", "rq:s", "rq:nope", "rq:m1"], Reply),
        s(&["TOUCH", "rq:s", "rq:m1"], Reply),
        s(&["TYPE", "rq:s"], Reply),
        s(&["EXPIRE", "rq:m1", "1000"], Reply),
        s(&["PEXPIRE", "rq:m2", "1000000"], Reply),
        s(&["EXPIREAT", "rq:m3", "4000000000"], Reply),
        s(&["PEXPIREAT", "rq:m4", "4000000000000"], Reply),
        s(&["TTL", "rq:m1"], Kind),
        s(&["PTTL", "rq:m2"], Kind),
        s(&["EXPIRETIME", "rq:m3"], Reply),
        s(&["PEXPIRETIME", "rq:m4"], Reply),
        s(&["PERSIST", "rq:m1"], Reply),
        s(&["COPY", "rq:s", "rq:copy"], Reply),
        s(&["RENAME", "rq:copy", "rq:copy2"], Reply),
        s(&["RENAMENX", "rq:copy2", "rq:copy3"], Reply),
        s(&["DUMP", "rq:s2"], Reply),
        (
            vec![
                b"RESTORE".to_vec(),
                b"rq:restored".to_vec(),
                b"0".to_vec(),
                dump.to_vec(),
            ],
            Reply,
        ),
        s(&["GET", "rq:restored"], Reply),
        s(&["OBJECT", "ENCODING", "rq:s"], Reply),
        s(&["OBJECT", "REFCOUNT", "rq:s"], Reply),
        s(&["OBJECT", "IDLETIME", "rq:s"], Kind),
        s(&["OBJECT", "FREQ", "rq:s"], Reply),
        s(&["MEMORY", "USAGE", "rq:s"], Kind),
        s(&["DEL", "rq:copy3", "rq:nope"], Reply),
        s(&["UNLINK", "rq:copy2"], Reply),
        // Lists.
        s(&["RPUSH", "rq:l", "a", "b", "c", "d", "e", "f"], Reply),
        s(&["LPUSH", "rq:l", "z"], Reply),
        s(&["RPUSHX", "rq:l", "g"], Reply),
        s(&["LPUSHX", "rq:l", "y"], Reply),
        s(&["LLEN", "rq:l"], Reply),
        s(&["LINDEX", "rq:l", "0"], Reply),
        s(&["LPOS", "rq:l", "c"], Reply),
        s(&["LINSERT", "rq:l", "BEFORE", "c", "bb"], Reply),
        s(&["LSET", "rq:l", "0", "Y"], Reply),
        s(&["LREM", "rq:l", "1", "bb"], Reply),
        s(&["LTRIM", "rq:l", "0", "8"], Reply),
        s(&["LRANGE", "rq:l", "0", "-1"], Reply),
        s(&["LPOP", "rq:l"], Reply),
        s(&["RPOP", "rq:l"], Reply),
        s(&["LMOVE", "rq:l", "rq:l2", "LEFT", "RIGHT"], Reply),
        s(&["BLMOVE", "rq:l", "rq:l2", "LEFT", "RIGHT", "1"], Reply),
        s(&["RPOPLPUSH", "rq:l", "rq:l2"], Reply),
        s(&["BRPOPLPUSH", "rq:l", "rq:l2", "1"], Reply),
        s(&["LMPOP", "2", "rq:nope", "rq:l2", "LEFT"], Reply),
        s(
            &[
                "BLMPOP", "1", "2", "rq:nope", "rq:l2", "RIGHT", "COUNT", "1",
            ],
            Reply,
        ),
        s(&["BLPOP", "rq:nope", "rq:l2", "1"], Reply),
        s(&["BRPOP", "rq:nope", "rq:l", "1"], Reply),
        // Hashes.
        s(&["HSET", "rq:h", "f", "1", "g", "2"], Reply),
        s(&["HSETNX", "rq:h", "k", "3"], Reply),
        s(&["HMSET", "rq:h", "m", "4"], Reply),
        s(&["HGET", "rq:h", "f"], Reply),
        s(&["HMGET", "rq:h", "f", "nope", "g"], Reply),
        s(&["HGETALL", "rq:h"], Reply),
        s(&["HKEYS", "rq:h"], Reply),
        s(&["HVALS", "rq:h"], Reply),
        s(&["HLEN", "rq:h"], Reply),
        s(&["HEXISTS", "rq:h", "k"], Reply),
        s(&["HSTRLEN", "rq:h", "k"], Reply),
        s(&["HINCRBY", "rq:h", "f", "2"], Reply),
        s(&["HINCRBYFLOAT", "rq:h", "g", "0.5"], Reply),
        s(&["HDEL", "rq:h", "m"], Reply),
        s(&["HSCAN", "rq:h", "0"], Reply),
        s(&["HSET", "rq:h1", "only", "1"], Reply),
        s(&["HRANDFIELD", "rq:h1"], Reply),
        // Sets (hash tables: member order differs between servers).
        s(&["SADD", "rq:set", "a", "b", "c"], Reply),
        s(&["SADD", "rq:set2", "b", "c", "d"], Reply),
        s(&["SCARD", "rq:set"], Reply),
        s(&["SISMEMBER", "rq:set", "a"], Reply),
        s(&["SMISMEMBER", "rq:set", "a", "d"], Reply),
        s(&["SMEMBERS", "rq:set"], Sorted),
        s(&["SINTER", "rq:set", "rq:set2"], Sorted),
        s(&["SUNION", "rq:set", "rq:set2"], Sorted),
        s(&["SDIFF", "rq:set", "rq:set2"], Sorted),
        s(&["SINTERCARD", "2", "rq:set", "rq:set2"], Reply),
        s(&["SINTERSTORE", "rq:si", "rq:set", "rq:set2"], Reply),
        s(&["SUNIONSTORE", "rq:su", "rq:set", "rq:set2"], Reply),
        s(&["SDIFFSTORE", "rq:sd", "rq:set", "rq:set2"], Reply),
        s(&["SMOVE", "rq:set", "rq:set2", "a"], Reply),
        s(&["SREM", "rq:set", "b"], Reply),
        s(&["SSCAN", "rq:set", "0"], Kind),
        s(&["SADD", "rq:one", "x"], Reply),
        s(&["SRANDMEMBER", "rq:one"], Reply),
        s(&["SPOP", "rq:one"], Reply),
        // Sorted sets.
        s(&["ZADD", "rq:z", "1", "a", "2", "b", "3", "c"], Reply),
        s(&["ZADD", "rq:z2", "2", "b", "4", "d"], Reply),
        s(&["ZADD", "rq:lex", "0", "a", "0", "b", "0", "c"], Reply),
        s(&["ZCARD", "rq:z"], Reply),
        s(&["ZCOUNT", "rq:z", "1", "2"], Reply),
        s(&["ZSCORE", "rq:z", "b"], Reply),
        s(&["ZMSCORE", "rq:z", "b", "nope"], Reply),
        s(&["ZRANK", "rq:z", "c"], Reply),
        s(&["ZREVRANK", "rq:z", "c"], Reply),
        s(&["ZINCRBY", "rq:z", "1", "a"], Reply),
        s(&["ZRANGE", "rq:z", "0", "-1", "WITHSCORES"], Reply),
        s(&["ZRANGEBYSCORE", "rq:z", "1", "5"], Reply),
        s(&["ZREVRANGEBYSCORE", "rq:z", "5", "1"], Reply),
        s(&["ZREVRANGE", "rq:z", "0", "-1"], Reply),
        s(&["ZRANGEBYLEX", "rq:lex", "-", "+"], Reply),
        s(&["ZREVRANGEBYLEX", "rq:lex", "+", "-"], Reply),
        s(&["ZLEXCOUNT", "rq:lex", "-", "+"], Reply),
        s(&["ZRANGESTORE", "rq:zr", "rq:z", "0", "1"], Reply),
        s(&["ZUNION", "2", "rq:z", "rq:z2", "WITHSCORES"], Reply),
        s(&["ZINTER", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZDIFF", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZUNIONSTORE", "rq:zu", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZINTERSTORE", "rq:zi", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZDIFFSTORE", "rq:zd", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZINTERCARD", "2", "rq:z", "rq:z2"], Reply),
        s(&["ZREM", "rq:z", "c"], Reply),
        s(&["ZREMRANGEBYSCORE", "rq:zu", "4", "4"], Reply),
        s(&["ZREMRANGEBYRANK", "rq:zu", "0", "0"], Reply),
        s(&["ZREMRANGEBYLEX", "rq:lex", "[a", "[a"], Reply),
        s(&["ZSCAN", "rq:z2", "0"], Reply),
        s(&["ZPOPMIN", "rq:z"], Reply),
        s(&["ZPOPMAX", "rq:z2"], Reply),
        s(&["BZPOPMIN", "rq:nope", "rq:zu", "1"], Reply),
        s(&["BZPOPMAX", "rq:nope", "rq:lex", "1"], Reply),
        s(&["ZMPOP", "2", "rq:nope", "rq:lex", "MIN"], Reply),
        s(&["BZMPOP", "1", "2", "rq:nope", "rq:zr", "MAX"], Reply),
        s(&["ZADD", "rq:z1", "1", "only"], Reply),
        s(&["ZRANDMEMBER", "rq:z1"], Reply),
        // Geo.
        s(
            &[
                "GEOADD",
                "rq:geo",
                "13.361389",
                "38.115556",
                "Palermo",
                "15.087269",
                "37.502669",
                "Catania",
            ],
            Reply,
        ),
        s(&["GEODIST", "rq:geo", "Palermo", "Catania"], Reply),
        s(&["GEOHASH", "rq:geo", "Palermo"], Reply),
        s(&["GEOPOS", "rq:geo", "Catania"], Reply),
        s(
            &["GEORADIUS", "rq:geo", "15", "37", "200", "km", "ASC"],
            Reply,
        ),
        s(
            &[
                "GEORADIUS",
                "rq:geo",
                "15",
                "37",
                "200",
                "km",
                "STORE",
                "rq:gs",
            ],
            Reply,
        ),
        s(
            &["GEORADIUS_RO", "rq:geo", "15", "37", "200", "km", "ASC"],
            Reply,
        ),
        s(
            &["GEORADIUSBYMEMBER", "rq:geo", "Palermo", "200", "km", "ASC"],
            Reply,
        ),
        s(
            &[
                "GEORADIUSBYMEMBER_RO",
                "rq:geo",
                "Palermo",
                "200",
                "km",
                "ASC",
            ],
            Reply,
        ),
        s(
            &[
                "GEOSEARCH",
                "rq:geo",
                "FROMMEMBER",
                "Palermo",
                "BYRADIUS",
                "200",
                "km",
                "ASC",
            ],
            Reply,
        ),
        s(
            &[
                "GEOSEARCHSTORE",
                "rq:gss",
                "rq:geo",
                "FROMMEMBER",
                "Palermo",
                "BYRADIUS",
                "200",
                "km",
            ],
            Reply,
        ),
        // HyperLogLog.
        s(&["PFADD", "rq:hll", "a", "b", "c"], Reply),
        s(&["PFADD", "rq:hll2", "c", "d"], Reply),
        s(&["PFCOUNT", "rq:hll", "rq:hll2"], Reply),
        s(&["PFMERGE", "rq:hll3", "rq:hll", "rq:hll2"], Reply),
        s(&["PFDEBUG", "ENCODING", "rq:hll3"], Reply),
        // Streams.
        s(&["XADD", "rq:x", "1-1", "f", "v"], Reply),
        s(&["XADD", "rq:x", "2-1", "f", "w"], Reply),
        s(&["XLEN", "rq:x"], Reply),
        s(&["XRANGE", "rq:x", "-", "+"], Reply),
        s(&["XREVRANGE", "rq:x", "+", "-"], Reply),
        s(&["XGROUP", "CREATE", "rq:x", "g", "0"], Reply),
        s(&["XGROUP", "CREATECONSUMER", "rq:x", "g", "c1"], Reply),
        s(
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c1",
                "COUNT",
                "1",
                "STREAMS",
                "rq:x",
                ">",
            ],
            Reply,
        ),
        s(&["XREAD", "STREAMS", "rq:x", "rq:nope", "0", "0"], Reply),
        s(&["XPENDING", "rq:x", "g"], Reply),
        s(&["XCLAIM", "rq:x", "g", "c2", "0", "1-1", "JUSTID"], Reply),
        s(
            &["XAUTOCLAIM", "rq:x", "g", "c3", "0", "0-0", "JUSTID"],
            Reply,
        ),
        s(&["XACK", "rq:x", "g", "1-1"], Reply),
        s(&["XGROUP", "SETID", "rq:x", "g", "0"], Reply),
        s(&["XGROUP", "DELCONSUMER", "rq:x", "g", "c2"], Reply),
        s(&["XINFO", "STREAM", "rq:x"], Reply),
        s(&["XINFO", "GROUPS", "rq:x"], Reply),
        s(&["XINFO", "CONSUMERS", "rq:x", "g"], Kind),
        s(&["XDEL", "rq:x", "2-1"], Reply),
        s(&["XTRIM", "rq:x", "MAXLEN", "0"], Reply),
        s(&["XSETID", "rq:x", "5-0"], Reply),
        s(&["XGROUP", "DESTROY", "rq:x", "g"], Reply),
        // Scripts and functions over KEYS.
        s(&["EVAL", SCRIPT, "1", "rq:s2"], Reply),
        s(&["EVALSHA", sha, "1", "rq:s2"], Reply),
        s(&["EVAL_RO", SCRIPT, "1", "rq:s2"], Reply),
        s(&["EVALSHA_RO", sha, "1", "rq:s2"], Reply),
        s(&["FCALL", "fget", "1", "rq:s2"], Reply),
        s(&["FCALL_RO", "fget_ro", "1", "rq:s2"], Reply),
        // SORT without BY and GET, which Redis Cluster refuses (see the standalone test).
        s(&["RPUSH", "rq:sortme", "3", "1", "2"], Reply),
        s(&["SORT", "rq:sortme", "ALPHA", "STORE", "rq:sorted"], Reply),
        s(&["SORT_RO", "rq:sortme", "DESC"], Reply),
        s(&["LRANGE", "rq:sorted", "0", "-1"], Reply),
        s(&["WATCH", "rq:s"], Reply),
        s(&["UNWATCH"], Reply),
        s(&["DBSIZE"], Reply),
    ];
    v.shrink_to_fit();
    v
}

/// The command table entry a case runs: `object|encoding` for a container's subcommand.
fn entry_name(args: &[Vec<u8>]) -> String {
    let name = String::from_utf8_lossy(&args[0]).to_lowercase();
    if matches!(
        name.as_str(),
        "object" | "memory" | "xgroup" | "xinfo" | "pfdebug"
    ) {
        let sub = String::from_utf8_lossy(&args[1]).to_lowercase();
        if name != "pfdebug" {
            return format!("{name}|{sub}");
        }
    }
    name
}

/// The commands (and subcommands) that name keys, from the server's own `COMMAND`.
fn keyed_commands(c: &mut redis::Connection) -> BTreeSet<String> {
    fn text(v: &Value) -> String {
        match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            other => format!("{other:?}"),
        }
    }
    fn collect(entry: &Value, out: &mut BTreeSet<String>) {
        let Value::Array(fields) = entry else { return };
        // [name, arity, flags, first, last, step, categories, tips, key specs, subcommands]
        if matches!(fields.get(8), Some(Value::Array(specs)) if !specs.is_empty()) {
            out.insert(text(&fields[0]).to_lowercase());
        }
        if let Some(Value::Array(subs)) = fields.get(9) {
            for s in subs {
                collect(s, out);
            }
        }
    }
    let all: Value = redis::cmd("COMMAND").query(c).unwrap();
    let mut out = BTreeSet::new();
    let Value::Array(entries) = all else {
        panic!("COMMAND: {all:?}")
    };
    for e in &entries {
        collect(e, &mut out);
    }
    out
}

fn run(c: &mut redis::Connection, args: &[Vec<u8>]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(a.as_slice());
    }
    cmd.query(c)
}

/// A reply as text; with `sorted`, an array's elements in order.
fn shown(r: &redis::RedisResult<Value>, sorted: bool) -> String {
    match r {
        Ok(Value::Array(items)) if sorted => {
            let mut items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            items.sort();
            format!("{items:?}")
        }
        other => format!("{other:?}"),
    }
}

fn proxy_with(conf: &str) -> (Proxy, TempConf) {
    let file = TempConf::new(conf);
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    (proxy, file)
}

const RQ: &str = "[[colocate]]\npreset = \"rq\"\n";

#[test]
fn every_command_that_names_keys_equals_a_single_redis() {
    let cluster = Cluster::start(3, 0);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let (proxy, _file) = proxy_with(&format!("seeds = [{}]\n{RQ}", seeds.join(", ")));
    let single = Redis::start(&[]);
    let mut direct = single.conn();
    let mut via = proxy.conn();

    // What the cases need on both sides: a DUMP payload, a cached script, a library.
    let () = redis::cmd("SET")
        .arg("tmp")
        .arg("dumped")
        .query(&mut direct)
        .unwrap();
    let dump: Vec<u8> = redis::cmd("DUMP").arg("tmp").query(&mut direct).unwrap();
    let () = redis::cmd("DEL").arg("tmp").query(&mut direct).unwrap();
    let mut sha = String::new();
    for c in [&mut direct, &mut via] {
        sha = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(SCRIPT)
            .query(c)
            .unwrap();
        let _: String = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg(LIBRARY)
            .query(c)
            .unwrap();
    }

    let cases = cases(&dump, &sha);
    let keyed = keyed_commands(&mut direct);
    let covered: BTreeSet<String> = cases.iter().map(|(a, _)| entry_name(a)).collect();
    let missing: Vec<&String> = keyed
        .iter()
        .filter(|n| !covered.contains(*n) && !EXCLUDED.iter().any(|(e, _)| e == n))
        .collect();
    assert!(
        missing.is_empty(),
        "commands that name keys without a case or a reason: {missing:?}"
    );
    let stray: Vec<&String> = covered
        .iter()
        .filter(|n| !keyed.contains(*n) && !matches!(n.as_str(), "unwatch" | "dbsize"))
        .collect();
    assert!(stray.is_empty(), "cases of no keyed command: {stray:?}");

    for (args, same) in &cases {
        let (got, want) = (run(&mut via, args), run(&mut direct, args));
        let what = String::from_utf8_lossy(&args.concat()).into_owned();
        let shown_got = shown(&got, *same == Sorted);
        assert!(
            !shown_got.contains("{rq}"),
            "{what}: a stored name shown: {shown_got}"
        );
        match same {
            Reply | Sorted => assert_eq!(shown_got, shown(&want, *same == Sorted), "{what}"),
            Kind => assert_eq!(got.is_ok(), want.is_ok(), "{what}: {got:?} / {want:?}"),
        }
    }
    // Every key the cases wrote is stored under the family's tag on the cluster.
    let stored = cluster.all_keys();
    assert!(!stored.is_empty());
    let untagged: Vec<&String> = stored.iter().filter(|k| !k.starts_with("{rq}")).collect();
    assert!(untagged.is_empty(), "{untagged:?}");
    let mut direct_keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    let mut restored: Vec<String> = stored.iter().map(|k| k[4..].to_string()).collect();
    direct_keys.sort();
    restored.sort();
    assert_eq!(restored, direct_keys);
}

/// Replies inside EXEC name keys as the application knows them.
#[test]
fn names_inside_exec_replies_are_restored() {
    let cluster = Cluster::start(3, 0);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let (proxy, _file) = proxy_with(&format!("seeds = [{}]\n{RQ}", seeds.join(", ")));
    let single = Redis::start(&[]);
    for c in [&mut proxy.conn(), &mut single.conn()] {
        let () = redis::cmd("RPUSH")
            .arg("rq:l")
            .arg("a")
            .arg("b")
            .query(c)
            .unwrap();
        let _: String = redis::cmd("XADD")
            .arg("rq:x")
            .arg("1-1")
            .arg("f")
            .arg("v")
            .query(c)
            .unwrap();
    }
    let exec = |c: &mut redis::Connection| -> String {
        let r: redis::RedisResult<Value> = redis::pipe()
            .atomic()
            .cmd("LMPOP")
            .arg(2)
            .arg("rq:nope")
            .arg("rq:l")
            .arg("LEFT")
            .cmd("BLPOP")
            .arg("rq:l")
            .arg(1)
            .cmd("XREAD")
            .arg("STREAMS")
            .arg("rq:x")
            .arg(0)
            .cmd("GET")
            .arg("rq:l")
            .query(c);
        format!("{r:?}")
    };
    let (got, want) = (exec(&mut proxy.conn()), exec(&mut single.conn()));
    assert!(!got.contains("{rq}"), "{got}");
    assert!(want.contains("rq:x"), "{want}");
    assert_eq!(got, want);
}

/// A subscriber to a family key's keyspace channel, to a pattern over the family's keys and
/// to a keyevent channel hears what it hears from a single redis-server, under the
/// application's names.
#[test]
fn keyspace_notifications_name_keys_as_the_application_does() {
    let cluster = Cluster::start(3, 0);
    let single = Redis::start(&["--notify-keyspace-events", "KEA"]);
    for m in cluster.masters() {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg("KEA")
            .query(&mut m.conn())
            .unwrap();
    }
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let (proxy, _file) = proxy_with(&format!("seeds = [{}]\n{RQ}", seeds.join(", ")));
    let heard = |mut sub: std::net::TcpStream, mut writer: redis::Connection| -> Vec<String> {
        use std::io::Write;
        // A frame that never comes fails the test instead of hanging it.
        sub.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let read = |sub: &mut std::net::TcpStream, buf: &mut Vec<u8>| {
            support::frame_texts(&support::read_reply(sub, buf)).join(" ")
        };
        sub.write_all(b"SUBSCRIBE __keyspace@0__:rq:q __keyevent@0__:lpush\r\n")
            .unwrap();
        sub.write_all(b"PSUBSCRIBE __keyspace@*__:rq:job:*\r\n")
            .unwrap();
        for _ in 0..3 {
            frames.push(read(&mut sub, &mut buf));
        }
        let () = redis::cmd("LPUSH")
            .arg("rq:q")
            .arg("1")
            .query(&mut writer)
            .unwrap();
        let () = redis::cmd("SET")
            .arg("rq:job:7")
            .arg("x")
            .query(&mut writer)
            .unwrap();
        let () = redis::cmd("LPUSH")
            .arg("other")
            .arg("1")
            .query(&mut writer)
            .unwrap();
        let () = redis::cmd("SET")
            .arg("rq:zzz")
            .arg("x")
            .query(&mut writer)
            .unwrap();
        let mut messages: Vec<String> = (0..4).map(|_| read(&mut sub, &mut buf)).collect();
        messages.sort();
        frames.extend(messages);
        frames
    };
    let raw = |addr: String| std::net::TcpStream::connect(addr).unwrap();
    let want = heard(raw(single.addr()), single.conn());
    let got = heard(proxy.raw(), proxy.conn());
    assert_eq!(got, want);
    assert!(want.iter().any(|m| m.contains("rq:job:7")), "{want:?}");
}

/// SORT's BY and GET patterns over a family's keys read the stored keys (standalone: Redis
/// Cluster refuses these options); STORE's key is renamed too.
#[test]
fn sort_patterns_read_a_familys_keys() {
    let server = Redis::start(&[]);
    let single = Redis::start(&[]);
    let (proxy, _file) = proxy_with(&format!(
        "mode = \"standalone\"\nserver = \"{}\"\n{RQ}",
        server.addr()
    ));
    let sort = [
        "SORT",
        "rq:ids",
        "BY",
        "rq:w_*",
        "GET",
        "#",
        "GET",
        "rq:o_*",
        "GET",
        "rq:h_*->f",
        "STORE",
        "rq:out",
    ];
    for c in [&mut proxy.conn(), &mut single.conn()] {
        let () = redis::cmd("RPUSH")
            .arg("rq:ids")
            .arg(&[1, 2, 3])
            .query(c)
            .unwrap();
        let () = redis::cmd("MSET")
            .arg(&["rq:w_1", "30", "rq:w_2", "10", "rq:w_3", "20"])
            .arg(&["rq:o_1", "one", "rq:o_2", "two"])
            .query(c)
            .unwrap();
        let () = redis::cmd("HSET")
            .arg("rq:h_3")
            .arg("f")
            .arg("three")
            .query(c)
            .unwrap();
    }
    let run = |c: &mut redis::Connection| -> String {
        let mut cmd = redis::cmd(sort[0]);
        for a in &sort[1..] {
            cmd.arg(*a);
        }
        let stored: redis::RedisResult<Value> = cmd.query(c);
        let out: redis::RedisResult<Value> =
            redis::cmd("LRANGE").arg("rq:out").arg(0).arg(-1).query(c);
        format!("{stored:?} {out:?}")
    };
    let want = run(&mut single.conn());
    assert!(want.contains("three"), "{want}");
    assert_eq!(run(&mut proxy.conn()), want);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut server.conn())
        .unwrap();
    assert!(keys.iter().all(|k| k.starts_with("{rq}")), "{keys:?}");
    assert!(keys.contains(&"{rq}rq:out".to_string()), "{keys:?}");
}

/// A script that names a family key itself gets Redis' refusal with slotgate's word on why.
#[test]
fn a_script_naming_a_family_key_itself_is_told_why() {
    let cluster = Cluster::start(3, 0);
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let (proxy, _file) = proxy_with(&format!("seeds = [{}]\n{RQ}", seeds.join(", ")));
    let mut c = proxy.conn();
    // Keys of other masters than the family's: Redis refuses every one of them.
    let errors: Vec<String> = (0..20)
        .filter_map(|i| {
            redis::cmd("EVAL")
                .arg("return redis.call('GET', ARGV[1])")
                .arg(1)
                .arg("rq:a")
                .arg(format!("k{i}"))
                .query::<Value>(&mut c)
                .err()
                .map(|e| e.to_string())
        })
        .collect();
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(e.contains("non local key"), "{e}");
        assert!(e.contains("not renamed into its key family"), "{e}");
    }
}
