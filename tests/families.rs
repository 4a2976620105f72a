//! Key families (`[[colocate]]`) against a real 3+3 cluster: Celery 5 and RQ, unchanged and with
//! their defaults, run through slotgate with their presets (without them each fails at once with
//! CROSSSLOT); a family's transaction, WATCH conflict, multi-key blocking pop and Lua script work
//! as on one Redis; keys of two families still get CROSSSLOT; and the replies of commands that
//! name keys equal a single redis-server's given the application's own names.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Cluster, Proxy, Redis, TempConf};

/// A child process killed when dropped (a test that fails leaves none behind).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy(cluster: &Cluster, families: &str) -> (Proxy, TempConf) {
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let file = TempConf::new(&format!("seeds = [{}]\n{families}", seeds.join(", ")));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    (proxy, file)
}

const PRESETS: &str = "[[colocate]]\npreset = \"celery\"\n[[colocate]]\npreset = \"rq\"\n";

const CELERY_APP: &str = r#"
import os
from celery import Celery
url = os.environ["BROKER"]
app = Celery("tasks", broker=url, backend=url)

@app.task
def add(x, y):
    return x + y
"#;

const CELERY_CLIENT: &str = r#"
from tasks import add
results = [add.delay(i, i) for i in range(50)]
got = [r.get(timeout=60) for r in results]
assert got == [2 * i for i in range(50)], got
print("celery: 50 tasks done")
"#;

const RQ_JOBS: &str = "def add(x, y):\n    return x + y\n";

const RQ_CLIENT: &str = r#"
import os, subprocess, sys
from redis import Redis
from rq import Queue
import jobs
url = os.environ["BROKER"]
q = Queue(connection=Redis.from_url(url))
jobs_ = [q.enqueue(jobs.add, i, i) for i in range(50)]
subprocess.run([sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", url], check=True)
got = [j.return_value() for j in jobs_]
assert got == [2 * i for i in range(50)], got
print("rq: 50 jobs done")
"#;

/// Runs `script` (in `dir`) with `BROKER` set to slotgate's URL: whether it succeeded within
/// `timeout`, and what it printed.
fn python(dir: &Path, script: &str, url: &str, timeout: Duration) -> (bool, String) {
    let out_path = dir.join(format!("out-{}.log", support::free_port()));
    let mut child = Child(
        Command::new("python3")
            .args(["-c", script])
            .current_dir(dir)
            .env("BROKER", url)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    let ok = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status.success();
        }
        if start.elapsed() > timeout {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(child);
    (ok, std::fs::read_to_string(out_path).unwrap_or_default())
}

#[test]
fn celery_and_rq_run_unchanged_in_front_of_a_cluster_with_their_presets() {
    let cluster = Cluster::start(3, 1);
    let dir = support::scratch_dir("families-apps");
    std::fs::write(dir.join("tasks.py"), CELERY_APP).unwrap();
    std::fs::write(dir.join("jobs.py"), RQ_JOBS).unwrap();

    // Without the presets both fail at once: their keys hash to different slots.
    let (plain, _plain_file) = proxy(&cluster, "");
    let (ok, _) = python(&dir, RQ_CLIENT, &plain.url(), Duration::from_secs(60));
    assert!(!ok, "RQ ran without its preset");
    assert!(
        plain
            .info_field("proxy_crossslot_rejected")
            .is_some_and(|n| n != "0")
    );
    for m in cluster.masters() {
        let () = redis::cmd("FLUSHALL").query(&mut m.conn()).unwrap();
    }

    let (proxy, _file) = proxy(&cluster, PRESETS);
    let _worker = Child(
        Command::new("python3")
            .args(["-m", "celery", "-A", "tasks", "worker"])
            .args(["--loglevel=warning", "--hostname=w1@test"])
            .current_dir(&dir)
            .env("BROKER", proxy.url())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("worker.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let (ok, out) = python(&dir, CELERY_CLIENT, &proxy.url(), Duration::from_secs(90));
    let log = std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default();
    assert!(ok, "{out}\nworker:\n{log}");
    assert!(!log.contains("CROSSSLOT"), "{log}");
    let (ok, out) = python(&dir, RQ_CLIENT, &proxy.url(), Duration::from_secs(90));
    assert!(ok, "{out}");

    // On the cluster the families' keys are stored under their tags, none under its own name.
    let stored = cluster.all_keys();
    assert!(
        stored.iter().any(|k| k == "{celery}_kombu.binding.celery"),
        "{stored:?}"
    );
    assert!(
        stored.iter().any(|k| k.starts_with("{rq}rq:job:")),
        "{stored:?}"
    );
    let untagged: Vec<&String> = stored
        .iter()
        .filter(|k| k.starts_with("_kombu") || k.starts_with("rq:") || k.as_str() == "unacked")
        .collect();
    assert!(untagged.is_empty(), "{untagged:?}");
    // Through slotgate the application sees its own names.
    let mut c = proxy.conn();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("rq:queues")
        .query(&mut c)
        .unwrap();
    assert_eq!(members, vec!["rq:queue:default".to_string()]);
    let names: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(
        names.iter().any(|k| k == "_kombu.binding.celery"),
        "{names:?}"
    );
    assert!(!names.iter().any(|k| k.starts_with('{')), "{names:?}");
    drop(_worker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_family_behaves_as_one_redis_and_two_families_do_not_mix() {
    let cluster = Cluster::start(3, 0);
    let (proxy, _file) = proxy(&cluster, PRESETS);
    let mut c = proxy.conn();
    let q3 = "celery\x06\x163";

    // A transaction over a family's keys (kombu's LLEN of every priority list).
    let () = redis::cmd("RPUSH").arg(q3).arg("m1").query(&mut c).unwrap();
    let mut p = redis::pipe();
    p.atomic().cmd("LLEN").arg("celery").cmd("LLEN").arg(q3);
    let lens: (u64, u64) = p.query(&mut c).unwrap();
    assert_eq!(lens, (0, 1));

    // WATCH conflict: another client changes the watched key.
    let mut other = proxy.conn();
    let () = redis::cmd("WATCH").arg("unacked").query(&mut c).unwrap();
    let _: u64 = redis::cmd("HSET")
        .arg("unacked")
        .arg("t")
        .arg("x")
        .query(&mut other)
        .unwrap();
    let mut p = redis::pipe();
    p.atomic()
        .cmd("HDEL")
        .arg("unacked")
        .arg("t")
        .cmd("ZREM")
        .arg("unacked_index")
        .arg("t");
    let r: Option<(u64, u64)> = p.query(&mut c).unwrap();
    assert_eq!(r, None, "the watched key changed: EXEC aborted");

    // A blocking pop over the family's lists, woken by a push to one of them, names it.
    let url = proxy.url();
    let popper = std::thread::spawn(move || {
        let mut b = redis::Client::open(url).unwrap().get_connection().unwrap();
        let got: Option<(String, String)> = redis::cmd("BRPOP")
            .arg("celery")
            .arg("celery\x06\x166")
            .arg(5)
            .query(&mut b)
            .unwrap();
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let _: u64 = redis::cmd("LPUSH")
        .arg("celery\x06\x166")
        .arg("m2")
        .query(&mut other)
        .unwrap();
    assert_eq!(
        popper.join().unwrap(),
        Some(("celery\x06\x166".to_string(), "m2".to_string()))
    );

    // Lua over KEYS of one family.
    let n: u64 = redis::cmd("EVAL")
        .arg("return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[2])")
        .arg(2)
        .arg("celery")
        .arg(q3)
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1);

    // Keys of two families, or of a family and no family, in one command: CROSSSLOT.
    for (a, b) in [("celery", "rq:queue:x"), ("celery", "plain")] {
        let e = redis::cmd("LMOVE")
            .arg(a)
            .arg(b)
            .arg("LEFT")
            .arg("LEFT")
            .query::<Option<String>>(&mut c)
            .unwrap_err();
        assert_eq!(e.code(), Some("CROSSSLOT"), "{a} {b}: {e}");
    }
}

/// The same commands through slotgate (3 masters, the presets) and on one redis-server under
/// the application's own names give the same replies.
#[test]
fn replies_that_name_keys_equal_a_single_redis() {
    let cluster = Cluster::start(3, 0);
    let (proxy, _file) = proxy(&cluster, PRESETS);
    let single = Redis::start(&[]);
    let q3 = "celery\x06\x163";
    let script: Vec<Vec<&str>> = vec![
        vec!["RPUSH", "celery", "a", "b"],
        vec!["RPUSH", q3, "c"],
        vec!["ZADD", "unacked_index", "1", "t1", "2", "t2"],
        vec!["HSET", "unacked", "t1", "x"],
        vec![
            "SADD",
            "_kombu.binding.celery",
            "celery\x06\x16\x06\x16celery",
        ],
        vec!["SET", "rq:job:1", "j"],
        vec!["BLPOP", "celery", q3, "1"],
        vec!["BRPOP", q3, "celery", "1"],
        vec!["LMPOP", "2", "celery", q3, "LEFT"],
        vec!["BLMPOP", "1", "2", q3, "celery", "RIGHT", "COUNT", "2"],
        vec!["BZPOPMIN", "unacked_index", "1"],
        vec!["ZMPOP", "1", "unacked_index", "MAX"],
        vec!["RPUSH", "celery", "d"],
        vec!["LMOVE", "celery", q3, "LEFT", "RIGHT"],
        vec!["LRANGE", q3, "0", "-1"],
        vec!["RENAME", q3, "celery"],
        vec!["EXISTS", "celery", q3],
        vec!["TYPE", "unacked"],
        vec!["SMEMBERS", "_kombu.binding.celery"],
        vec!["DEL", "celery", "unacked"],
        vec!["RANDOMKEY"],
        vec!["GET", "rq:job:1"],
        vec!["XADD", "celeryev.s", "1-1", "f", "v"],
        vec!["XADD", "celeryev.t", "1-2", "g", "w"],
        vec![
            "XREAD",
            "COUNT",
            "5",
            "STREAMS",
            "celeryev.s",
            "celeryev.t",
            "0",
            "0",
        ],
        vec!["XGROUP", "CREATE", "celeryev.t", "g", "0"],
        vec![
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "celeryev.t",
            ">",
        ],
        vec!["DBSIZE"],
    ];
    let mut via = proxy.conn();
    let mut direct = single.conn();
    for args in &script {
        let run = |c: &mut redis::Connection| -> String {
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            format!("{:?}", cmd.query::<redis::Value>(c))
        };
        let (got, want) = (run(&mut via), run(&mut direct));
        // The one random reply: either store has one key left of each kind.
        if args[0] == "RANDOMKEY" {
            assert!(!got.contains('{'), "{got}");
            continue;
        }
        assert_eq!(got, want, "{args:?}");
    }
    // A plain key beside the families' keys, then KEYS and SCAN under patterns that match
    // family keys, plain keys, both and none.
    for c in [&mut via, &mut direct] {
        let () = redis::cmd("SET")
            .arg("celery-task-meta-1")
            .arg(1)
            .query(c)
            .unwrap();
    }
    for pattern in [
        "*",
        "celery*",
        "*unacked*",
        "_kombu.binding.?elery",
        "rq:[j]ob:*",
        "celery-task-*",
        "{celery}*",
        "nothing*",
    ] {
        let keys = |c: &mut redis::Connection| -> Vec<String> {
            let mut k: Vec<String> = redis::cmd("KEYS").arg(pattern).query(c).unwrap();
            k.sort();
            k
        };
        let want = keys(&mut direct);
        assert_eq!(keys(&mut via), want, "KEYS {pattern}");
        let mut scanned: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(3)
            .clone()
            .iter::<String>(&mut via)
            .unwrap()
            .map(|k| k.unwrap())
            .collect();
        scanned.sort();
        assert_eq!(scanned, want, "SCAN MATCH {pattern}");
    }
}

/// A cluster that already holds an application's keys adopts a family under load
/// (`deploy/colocate.py`): every key moves to its stored name with its TTL, the writes made
/// meanwhile are all there, no client sees an error, and the family's multi-key commands work
/// from then on.
#[test]
fn existing_keys_join_their_family_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let cluster = Cluster::start(3, 0);
    let admin = support::free_port();
    let seeds: Vec<String> = cluster.seeds().iter().map(|s| format!("\"{s}\"")).collect();
    let base = format!(
        "seeds = [{}]\nconfig_check_ms = 0\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"t0ken\"\n",
        seeds.join(", ")
    );
    let file = TempConf::new(&base);
    let new_file = TempConf::new(&format!("{base}[[colocate]]\npreset = \"rq\"\n"));
    let proxy = Proxy::spawn(&["--config".into(), file.path().into()]);
    let mut c = proxy.conn();
    for i in 0..200 {
        let key = format!("rq:job:{i}");
        let () = redis::cmd("HSET")
            .arg(&key)
            .arg("n")
            .arg(i)
            .query::<u64>(&mut c)
            .map(|_| ())
            .unwrap();
        if i % 2 == 0 {
            let _: u64 = redis::cmd("EXPIRE")
                .arg(&key)
                .arg(3600)
                .query(&mut c)
                .unwrap();
        }
        let () = redis::cmd("SET")
            .arg(format!("plain:{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    for i in 0..100 {
        let _: u64 = redis::cmd("RPUSH")
            .arg("rq:queue:default")
            .arg(i)
            .query(&mut c)
            .unwrap();
    }

    // A pusher, a counter and a job writer, one request at a time.
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..3u64)
        .map(|t| {
            let (stop, url) = (stop.clone(), proxy.url());
            std::thread::spawn(move || {
                let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let (mut errors, mut acked) = (Vec::new(), 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let r = match t {
                        0 => redis::cmd("RPUSH")
                            .arg("rq:queue:default")
                            .arg(acked)
                            .query::<u64>(&mut c),
                        1 => redis::cmd("INCR").arg("rq:counter").query::<u64>(&mut c),
                        _ => redis::cmd("HINCRBY")
                            .arg(format!("rq:job:{}", acked % 200))
                            .arg("w")
                            .arg(1)
                            .query::<u64>(&mut c),
                    };
                    match r {
                        Ok(_) => acked += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                (errors, acked)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/colocate.py"))
        .args(["--seed", &cluster.seeds()[0]])
        .args([
            "--admin",
            &format!("http://127.0.0.1:{admin}"),
            "--token",
            "t0ken",
        ])
        .args(["--config", file.path(), "--new-config", new_file.path()])
        .args(["--slotgate", env!("CARGO_BIN_EXE_slotgate")])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    assert!(out.status.success(), "{said}");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in load {
        let (errors, n) = t.join().unwrap();
        assert!(errors.is_empty(), "clients saw {errors:?}");
        acked.push(n);
    }

    // On the cluster: every rq key under its tag, none under its own name.
    cluster.assert_in_family("rq", "rq:", "rq:job:", 200, 200);
    // Through slotgate: every write there, TTLs kept.
    let len: u64 = redis::cmd("LLEN")
        .arg("rq:queue:default")
        .query(&mut c)
        .unwrap();
    assert_eq!(len, 100 + acked[0], "every push is in the list");
    let counter: u64 = redis::cmd("GET").arg("rq:counter").query(&mut c).unwrap();
    assert_eq!(counter, acked[1]);
    let mut incrs = 0;
    for i in 0..200 {
        let key = format!("rq:job:{i}");
        let n: u64 = redis::cmd("HGET").arg(&key).arg("n").query(&mut c).unwrap();
        assert_eq!(n, i);
        incrs += redis::cmd("HGET")
            .arg(&key)
            .arg("w")
            .query::<Option<u64>>(&mut c)
            .unwrap()
            .unwrap_or(0);
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut c).unwrap();
        if i % 2 == 0 {
            assert!(ttl > 3_000_000, "{key}: {ttl}");
        } else {
            assert_eq!(ttl, -1, "{key}");
        }
    }
    assert_eq!(incrs, acked[2], "every HINCRBY is there");
    // The family's keys go together now.
    let moved: Option<String> = redis::cmd("LMOVE")
        .arg("rq:queue:default")
        .arg("rq:queue:other")
        .arg("LEFT")
        .arg("LEFT")
        .query(&mut c)
        .unwrap();
    assert_eq!(moved.as_deref(), Some("0"));
}
