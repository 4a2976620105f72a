//! Real clients with their default settings through slotgate: redis-cli, redis-benchmark,
//! redis-py (RESP3 by default since 8.0) and redis-rs (RESP2).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use redis::Commands;
use support::{Cluster, Proxy};

const REDIS_PY: &str = r#"
import sys, redis
from redis.connection import DEFAULT_RESP_VERSION
port = int(sys.argv[1])
r = redis.Redis(port=port, decode_responses=True)
assert r.ping()
conn = r.connection_pool.get_connection()
proto = conn.protocol
r.connection_pool.release(conn)
assert r.set("py:a", "1") and r.get("py:a") == "1"
assert r.mset({"py:x": "1", "py:y": "2", "{py}z": "3"})
assert r.mget("py:x", "py:y", "missing", "{py}z") == ["1", "2", None, "3"]
assert r.delete("py:x", "py:y", "missing") == 2
assert r.hset("py:h", mapping={"f": "v", "g": "w"}) == 2
assert r.hgetall("py:h") == {"f": "v", "g": "w"}
assert r.zadd("py:z", {"m": 1.5}) == 1 and r.zscore("py:z", "m") == 1.5
p = r.pipeline(transaction=False)
for i in range(500):
    p.incr(f"py:c{i}")
assert sum(p.execute()) == 500
info = r.info()
assert info["redis_version"].startswith("7.") and "maxmemory_policy" in info
assert r.client_setname("py-client") and r.client_getname() == "py-client"
assert r.dbsize() > 0
try:
    r.execute_command("RENAME", "py:a", "py:b")
    raise SystemExit("RENAME across slots should fail")
except redis.ResponseError as e:
    assert str(e).startswith("Keys in request don't hash to the same slot"), str(e)
print(f"redis-py {redis.__version__} default protocol {DEFAULT_RESP_VERSION}, session protocol {proto}: ok")
"#;

#[test]
fn redis_cli_benchmark_redis_py_and_redis_rs_work_unchanged() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::cluster(&cluster, &[]);
    let port = proxy.port.to_string();

    // redis-cli, without -c.
    let out = Command::new("redis-cli")
        .args(["-p", &port, "SET", "cli:k", "v"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let out = Command::new("redis-cli")
        .args(["-p", &port, "GET", "cli:k"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");
    // redis-cli --pipe: mass insertion over one connection, with its ECHO-based end marker.
    let mut child = Command::new("redis-cli")
        .args(["-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!(
            "*3\r\n$3\r\nSET\r\n${}\r\npipe:{i}\r\n$1\r\nx\r\n",
            5 + i.to_string().len()
        ));
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("errors: 0, replies: 2000"),
        "{text}"
    );

    // redis-benchmark without --cluster, several command types, pipelined.
    let out = Command::new("redis-benchmark")
        .args([
            "-p", &port, "-n", "2000", "-c", "10", "-P", "8", "-r", "1000", "-q",
        ])
        .args(["-t", "set,get,incr,lpush,rpop,sadd,hset,zadd,mset"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("requests per second").count(), 9, "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");

    // redis-py with its defaults (RESP3, HELLO 3 on connect).
    let text = support::run_python(REDIS_PY, proxy.port);
    assert!(text.contains("session protocol 3"), "{text}");
    eprintln!("{}", text.trim());

    // redis-rs, a RESP2 client.
    let mut c = proxy.conn();
    let _: () = c.set("rs:k", 42).unwrap();
    assert_eq!(c.get::<_, i64>("rs:k").unwrap(), 42);
    let v: Vec<Option<String>> = redis::cmd("MGET")
        .arg("cli:k")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec![Some("v".to_string()), None]);
}
