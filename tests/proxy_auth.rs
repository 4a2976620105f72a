//! Clients log in to slotgate as to a Redis with `requirepass`: every reply to AUTH, HELLO,
//! RESET and to commands sent before logging in is compared with a real redis-server given
//! the same password, and nothing a client sends before logging in reaches a node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use redis_protocol::resp2::types::OwnedFrame;
use support::{Proxy, Redis, free_port, read_reply};

const PASSWORD: &str = "client-secret-77";

fn frame(args: &[&str]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    f
}

/// Runs `cmds` one after another on one new connection to `port`; a map or array reply (a
/// successful HELLO) is reduced to its kind, since its fields (id, version) differ.
fn session(port: u16, cmds: &[&[&str]]) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    cmds.iter()
        .map(|c| {
            s.write_all(&frame(c)).unwrap();
            match read_reply(&mut s, &mut buf) {
                OwnedFrame::Array(a) if c[0] == "HELLO" => {
                    format!("hello reply ({} items)", a.len())
                }
                // KEYS lists in hash order: compared as a set.
                OwnedFrame::Array(mut a) if c[0] == "KEYS" => {
                    a.sort_by_key(|f| format!("{f:?}"));
                    format!("{:?}", OwnedFrame::Array(a))
                }
                OwnedFrame::BulkString(b) if c[0] == "CLIENT" => String::from_utf8_lossy(&b).into(),
                // Redis writes an ACL's single-command rules in its hash table's order.
                OwnedFrame::Array(a) if c.starts_with(&["ACL", "LIST"]) => a
                    .iter()
                    .map(|f| match f {
                        OwnedFrame::BulkString(b) => canonical_rules(&String::from_utf8_lossy(b)),
                        other => format!("{other:?}"),
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                OwnedFrame::Array(a) if c.starts_with(&["ACL", "GETUSER"]) => {
                    let text = |f: &OwnedFrame| match f {
                        OwnedFrame::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    a.chunks(2)
                        .map(|kv| match kv {
                            [k, v] if text(k) == "commands" => {
                                format!("commands: {}", canonical_rules(&text(v)))
                            }
                            [k, v] => format!("{}: {v:?}", text(k)),
                            _ => format!("{kv:?}"),
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
                other => format!("{other:?}"),
            }
        })
        .collect()
}

/// An `ACL LIST` line with its single-command rules (after the categories) sorted.
fn canonical_rules(line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let first = words
        .iter()
        .position(|w| *w == "+@all" || *w == "-@all")
        .unwrap_or(words.len());
    let (head, rules) = words.split_at(first);
    let (mut cats, mut singles): (Vec<&str>, Vec<&str>) =
        rules.iter().partition(|w| w.get(1..2) == Some("@"));
    singles.sort_unstable();
    cats.extend(singles);
    [head.to_vec(), cats].concat().join(" ")
}

const SEQUENCES: &[&[&[&str]]] = &[
    &[
        &["GET", "k"],
        &["PING"],
        &["NOSUCHCOMMAND"],
        &["GET"],
        &["HELLO", "3"],
        &["HELLO"],
        &["HELLO", "2", "AUTH", "default", "bad"],
        &["AUTH", "bad"],
        &["AUTH", "nobody", "x"],
        &["AUTH", "a", "b", "c"],
        &["SET", "k", "v"],
        &["AUTH", PASSWORD],
        &["SET", "k", "v"],
        &["GET", "k"],
        &["RESET"],
        &["GET", "k"],
        &["AUTH", "default", PASSWORD],
        &["GET", "k"],
    ],
    &[
        &["HELLO", "2", "AUTH", "default", PASSWORD],
        &["GET", "k"],
        &["AUTH", "wrong"],
        // A failed AUTH does not log a client out.
        &["GET", "k"],
    ],
    &[&["MULTI"], &["QUIT"]],
];

#[test]
fn logging_in_answers_as_a_redis_with_requirepass_and_nothing_leaks_before() {
    let reference = Redis::start_with(free_port(), &[], Some(PASSWORD));
    let backend = Redis::start(&[]);
    let proxy = Proxy::spawn_env(
        &["--standalone".to_string(), backend.addr()],
        &[("SLOTGATE_REQUIREPASS", PASSWORD)],
    );
    for seq in SEQUENCES {
        let want = session(reference.port, seq);
        let got = session(proxy.port, seq);
        for ((cmd, w), g) in seq.iter().zip(&want).zip(&got) {
            assert_eq!(g, w, "{cmd:?} in {seq:?}");
        }
    }
    // Before logging in, nothing reached the node: the SET refused with NOAUTH never ran
    // there; the GETs that ran are the logged-in ones.
    assert_eq!(backend.calls("set"), 1);
    assert_eq!(backend.calls("get"), 4);

    // Clients with the password configured work unchanged.
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", proxy.port);
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut c).unwrap();
    assert_eq!(v, "v");
    let out = support::run_python(
        &format!(
            "import redis, sys\n\
             r = redis.Redis(port=int(sys.argv[1]), password='{PASSWORD}')\n\
             print(r.get('k').decode())\n"
        ),
        proxy.port,
    );
    assert_eq!(out.trim(), "v");
    let info: String = redis::cmd("INFO").arg("proxy").query(&mut c).unwrap();
    assert!(info.contains("proxy_auth_failures:4"), "{info}");
    assert!(!proxy.log().contains(PASSWORD));

    // An empty password is a configuration error, not an open door.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--standalone", &backend.addr(), "--requirepass", ""])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requirepass"));
}

#[test]
fn denied_commands_are_unknown_as_after_rename_command_and_never_reach_a_node() {
    // The reference hides the same commands the way Redis can: rename-command to "".
    let reference = Redis::start(&[
        "--rename-command",
        "FLUSHALL",
        "",
        "--rename-command",
        "KEYS",
        "",
    ]);
    let backend = Redis::start(&[]);
    let conf = support::TempConf::new(
        "[clients]\ndeny_commands = [\"flushall\", \"KEYS\", \"config|set\"]\n",
    );
    let proxy = Proxy::spawn(&[
        "--standalone".to_string(),
        backend.addr(),
        "--config".to_string(),
        conf.path().to_string(),
    ]);
    let seq: &[&[&str]] = &[
        &["FLUSHALL"],
        &["flushall", "async"],
        &["KEYS", "*"],
        &["SET", "k", "v"],
        &["GET", "k"],
    ];
    assert_eq!(session(proxy.port, seq), session(reference.port, seq));
    // A denied subcommand: Redis' answer for a subcommand it does not have.
    assert_eq!(
        session(proxy.port, &[&["CONFIG", "SET", "maxmemory", "1"]]),
        ["Error(\"ERR unknown subcommand 'SET'. Try CONFIG HELP.\")"]
    );
    assert_eq!(
        session(proxy.port, &[&["CONFIG", "GET", "maxmemory"]]).len(),
        1
    );
    assert_eq!(backend.calls("flushall") + backend.calls("keys"), 0);
    assert_eq!(backend.calls("config|set"), 0);

    // A name that is no command is a configuration error.
    let bad = support::TempConf::new(
        "mode = \"standalone\"\nserver = \"127.0.0.1:6379\"\n[clients]\ndeny_commands = [\"flushal\"]\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(["--check-config", bad.path()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'flushal' is not a Redis 7.0 command"));
}

#[test]
fn without_requirepass_auth_answers_as_a_redis_without_a_password() {
    let reference = Redis::start(&[]);
    let backend = Redis::start(&[]);
    let proxy = Proxy::spawn(&["--standalone".to_string(), backend.addr()]);
    let seq: &[&[&str]] = &[
        &["AUTH", "x"],
        &["AUTH", "default", "anything"],
        &["AUTH", "app", "x"],
        // HELLO 2: the harness reads RESP2 only.
        &["HELLO", "2", "AUTH", "default", "anything"],
        &["HELLO", "2", "AUTH", "app", "x"],
        &["PING"],
    ];
    assert_eq!(session(proxy.port, seq), session(reference.port, seq));
}

/// The strings of an array reply, sorted.
fn names(reply: OwnedFrame) -> Vec<String> {
    let OwnedFrame::Array(items) = reply else {
        panic!("not an array: {reply:?}");
    };
    let mut v: Vec<String> = items
        .into_iter()
        .map(|i| match i {
            OwnedFrame::BulkString(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    v.sort();
    v
}

fn ask(port: u16, args: &[&str]) -> OwnedFrame {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frame(args)).unwrap();
    read_reply(&mut s, &mut Vec::new())
}

#[test]
fn acl_cat_and_whoami_answer_as_redis_from_the_command_table() {
    let reference = Redis::start(&[]);
    let backend = Redis::start(&[]);
    let proxy = Proxy::spawn(&["--standalone".to_string(), backend.addr()]);
    // The categories, in Redis' order.
    let cats = ask(reference.port, &["ACL", "CAT"]);
    assert_eq!(ask(proxy.port, &["ACL", "CAT"]), cats);
    // Every category's commands (and subcommands), as sets: Redis lists them in hash order.
    // slotgate also answers two subcommands of Redis 7.2 that 7.0 lacks.
    let newer = ["client|no-touch", "client|setinfo"];
    for cat in names(cats) {
        let want = names(ask(reference.port, &["ACL", "CAT", &cat]));
        let mut got = names(ask(proxy.port, &["ACL", "CAT", &cat.to_uppercase()]));
        got.retain(|n| !newer.contains(&n.as_str()));
        assert_eq!(got, want, "ACL CAT {cat}");
    }
    for args in [
        &["ACL", "CAT", "nosuch"][..],
        &["ACL", "CAT", "a", "b"],
        &["ACL", "WHOAMI"],
    ] {
        assert_eq!(ask(proxy.port, args), ask(reference.port, args), "{args:?}");
    }
}

/// Proxy users, as `[[users]]` in slotgate and `user` directives in the reference Redis.
const USERS: &[(&str, &str)] = &[
    ("app", "on >apppw ~* &* +@read +@connection -get"),
    ("writer", "on >wpw ~* resetchannels +@write +@connection"),
    ("nokeys", "on nopass resetkeys &* +@all"),
    ("off1", "off >x ~* +@all"),
    ("reader", "on >r ~* &* +@read"),
    (
        "scoped",
        "on >s ~app:* ~t ~cache:[ab]? &news.* +@all -flushall",
    ),
    // Keys by access: read-only, write-only and both.
    (
        "split",
        "on >sp %R~r:* %W~w:* ~rw:* &* +@all -@dangerous +acl",
    ),
    (
        "many",
        "on >m ~* &* -@all +@hash +@string -hget -set -mset +config|get +acl|list",
    ),
];

#[test]
fn proxy_users_are_allowed_and_denied_exactly_as_redis_acl_users() {
    let mut args: Vec<String> = Vec::new();
    for (name, rules) in USERS {
        args.push("--user".into());
        args.push(name.to_string());
        args.extend(rules.split_whitespace().map(String::from));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference = Redis::start(&args);
    let backend = Redis::start(&[]);
    let mut conf = String::new();
    for (name, rules) in USERS {
        conf.push_str(&format!(
            "[[users]]\nname = \"{name}\"\nrules = \"{rules}\"\n"
        ));
    }
    let conf = support::TempConf::new(&conf);
    let proxy = Proxy::spawn(&[
        "--standalone".to_string(),
        backend.addr(),
        "--config".to_string(),
        conf.path().to_string(),
    ]);
    let then: &[&[&str]] = &[
        &["GET", "k"],
        &["MGET", "k", "j"],
        &["SET", "k", "v"],
        &["CONFIG", "GET", "maxmemory"],
        &["PING"],
        &["KEYS", "*"],
        &["PUBLISH", "ch", "m"],
        &["ACL", "WHOAMI"],
        &["ECHO", "x"],
        &["GET", "app:1"],
        &["SET", "app:x", "1"],
        &["MSET", "app:y", "1", "k", "2"],
        &["GET", "cache:a1"],
        &["GET", "cache:c1"],
        &["PUBLISH", "news.eu", "m"],
        &["HELLO", "2"],
        &["AUTH", "default", "x"],
        &["MULTI"],
        &["SET", "t", "1"],
        &["EXEC"],
        &["GET", "r:1"],
        &["GET", "w:1"],
        &["SET", "w:1", "v"],
        &["SET", "w:1", "v", "GET"],
        &["SET", "r:1", "v"],
        &["SET", "rw:1", "v", "GET"],
        &["COPY", "r:1", "w:2"],
        &["COPY", "w:1", "r:2"],
        &["BITFIELD", "r:1", "GET", "u8", "0"],
        &["BITFIELD", "r:1", "SET", "u8", "0", "1"],
        &["BITFIELD", "w:1", "SET", "u8", "0", "1"],
        &["EXISTS", "w:1"],
        &["LPUSH", "w:l", "a"],
        &["LMOVE", "r:1", "w:1", "LEFT", "LEFT"],
        &["SPUBLISH", "elsewhere", "m"],
        &["ACL", "LIST"],
        &["ACL", "USERS"],
        &["ACL", "GETUSER", "split"],
        &["ACL", "GETUSER", "app"],
        &["ACL", "GETUSER", "nosuch"],
        &["SUBSCRIBE", "ch"],
        &["PSUBSCRIBE", "news.*"],
        // Left subscribed, the next user's PUBLISH would race the closing of this session's
        // subscriber connection (as it would race a closing client on Redis itself).
        &["UNSUBSCRIBE"],
        &["PUNSUBSCRIBE"],
    ];
    for (user, password) in [
        ("app", "apppw"),
        ("writer", "wpw"),
        ("nokeys", "x"),
        ("off1", "x"),
        ("reader", "r"),
        ("scoped", "s"),
        ("split", "sp"),
        ("many", "m"),
        ("app", "wrong"),
    ] {
        let auth = ["AUTH", user, password];
        let mut seq: Vec<&[&str]> = vec![&auth];
        seq.extend_from_slice(then);
        let want = session(reference.port, &seq);
        let got = session(proxy.port, &seq);
        for ((cmd, w), g) in seq.iter().zip(&want).zip(&got) {
            assert_eq!(g, w, "{user}: {cmd:?}");
        }
    }
    // The comparison above saw users listed, not only refusals.
    let listed = session(proxy.port, &[&["AUTH", "split", "sp"], &["ACL", "LIST"]]);
    assert!(
        listed[1].contains("user split on #") && listed[1].contains("%R~r:* %W~w:* ~rw:*"),
        "{listed:?}"
    );
    // CLIENT LIST names the user.
    let info = session(
        proxy.port,
        &[&["AUTH", "app", "apppw"], &["CLIENT", "INFO"]],
    );
    assert!(info[1].contains("user=app"), "{info:?}");
    // What a user was denied never reached the node: only what the reference ran ran there.
    assert_eq!(
        backend.calls("set"),
        reference.calls("set"),
        "the node ran what the reference ran, no more"
    );
    // slotgate's own discovery asks `CONFIG GET databases` once.
    assert_eq!(
        backend.calls("config|get"),
        reference.calls("config|get") + 1
    );
}

#[test]
fn an_address_that_keeps_failing_auth_is_cut_off_for_the_minute() {
    let backend = Redis::start(&[]);
    let conf = support::TempConf::new("[clients]\nmax_auth_failures_per_minute = 3\n");
    let proxy = Proxy::spawn_env(
        &[
            "--standalone".to_string(),
            backend.addr(),
            "--config".to_string(),
            conf.path().to_string(),
        ],
        &[("SLOTGATE_REQUIREPASS", PASSWORD)],
    );
    let wrong = session(
        proxy.port,
        &[
            &["AUTH", "guess1"],
            &["AUTH", "guess2"],
            &["AUTH", "guess3"],
        ],
    );
    assert!(wrong.iter().all(|r| r.contains("WRONGPASS")), "{wrong:?}");
    // The next attempt, even with the right password, closes the connection.
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&frame(&["AUTH", PASSWORD])).unwrap();
    let mut b = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut b).unwrap_or(0);
    assert_eq!(n, 0, "closed: {:?}", String::from_utf8_lossy(&b[..n]));
    assert!(
        proxy.log().contains("too many failed AUTHs"),
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains(PASSWORD));
}
