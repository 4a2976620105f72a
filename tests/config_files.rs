//! Every file in conf/ passes the binary's own `--check-config`, and bad files fail it with a
//! clear reason. The binary also refuses to start with clear errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;

use support::run_until_exit;

fn slotgate(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_config_in_conf_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // conf/tls.toml names the development certificates deploy/tls.sh makes (in .tls/).
    let made = Command::new("bash")
        .arg(root.join("deploy/tls.sh"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let dir = root.join("conf");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (ok, text) = slotgate(&["--check-config", path.to_str().unwrap()]);
            assert!(ok, "{}: {text}", path.display());
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn bad_configs_and_unreachable_seeds_fail_with_clear_errors() {
    let guard = TempDir::new(format!("slotgate-conf-{}", std::process::id()));
    let dir = guard.0.clone();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "seeds = [\"127.0.0.1:7000\"]\nlisten_port = 1\n").unwrap();
    let (ok, text) = slotgate(&["--check-config", bad.to_str().unwrap()]);
    assert!(
        !ok && text.contains("unknown field `listen_port`"),
        "{text}"
    );
    std::fs::write(&bad, "seeds = [\"127.0.0.1\"]\n").unwrap();
    let (ok, text) = slotgate(&["--check-config", bad.to_str().unwrap()]);
    assert!(!ok && text.contains("not host:port"), "{text}");
    let (ok, text) = slotgate(&["--listen", "127.0.0.1:0"]);
    assert!(!ok && text.contains("at least one seed"), "{text}");

    // A seed nobody listens on: a clear error after the startup timeout.
    let port = support::free_port();
    let conf = dir.join("fast.toml");
    std::fs::write(&conf, "[topology]\nstartup_timeout_ms = 500\n").unwrap();
    let seed = format!("127.0.0.1:{port}");
    let (ok, text) = slotgate(&[
        "-c",
        conf.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--seed",
        &seed,
    ]);
    assert!(
        !ok && text.contains("could not learn the topology") && text.contains(&seed),
        "{text}"
    );

    // A port already in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (ok, text) = slotgate(&["--listen", &addr, "--seed", &seed]);
    assert!(!ok && text.contains("cannot listen on"), "{text}");
    let (ok, text) = slotgate(&["--help"]);
    assert!(
        ok && text.contains("--seed")
            && text.contains("--check-config")
            && text.contains("--multi-key")
    );
}

/// A directory in the temporary directory, removed when dropped (even when the test fails).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: String) -> Self {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Dotted names of the settings `v` (the schema serialized as JSON) leaves unset.
fn unset(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Null => out.push(name),
                serde_json::Value::Object(_) => unset(&name, v, out),
                _ => {}
            }
        }
    }
}

#[test]
fn the_reference_config_names_every_setting_and_every_flag() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/slotgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: slotgate::config::FileConfig = toml::from_str(&text).unwrap();
    let mut missing = Vec::new();
    unset("", &serde_json::to_value(&file).unwrap(), &mut missing);
    // A setting left unset must stand in the file as a commented example (another mode's, or
    // one that is off by default).
    for name in &missing {
        let key = name.rsplit('.').next().unwrap();
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start();
                // A list of tables (`[[users]]`) is shown by a commented entry.
                l.starts_with(&format!("# {key} = ")) || l == format!("# [[{key}]]")
            }),
            "conf/slotgate.toml does not show the setting {name}"
        );
    }
    let (_, help) = slotgate(&["--help"]);
    let flags: std::collections::BTreeSet<&str> = help
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .collect();
    let header: String = text.lines().take_while(|l| l.starts_with('#')).collect();
    for flag in flags {
        if [
            "--config",
            "--check-config",
            "--commands",
            "--families",
            "--probe",
            "--help",
            "--version",
        ]
        .contains(&flag)
        {
            continue;
        }
        assert!(
            header.contains(flag),
            "the header of conf/slotgate.toml omits {flag}"
        );
    }
}

#[test]
fn errors_name_their_cause_once() {
    let (ok, text) = slotgate(&["--check-config", "/nonexistent/slotgate.toml"]);
    assert!(!ok);
    assert_eq!(
        text.matches("No such file or directory").count(),
        1,
        "{text}"
    );
    let guard = TempDir::new(format!("slotgate-once-{}", std::process::id()));
    let bad = guard.0.join("bad.toml");
    std::fs::write(&bad, "listen = \n").unwrap();
    for flag in ["--check-config", "--config"] {
        let (ok, text) = slotgate(&[flag, bad.to_str().unwrap()]);
        assert!(!ok);
        assert_eq!(text.matches("TOML parse error").count(), 1, "{text}");
        assert_eq!(
            text.matches("string values must be quoted").count(),
            1,
            "{text}"
        );
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let redis = support::Redis::start(&[]);
    let (_, _, text) = run_until_exit(&["--listen", &addr, "--standalone", &redis.addr()], 20);
    assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
}

#[test]
fn a_seed_without_cluster_support_says_at_once_to_use_standalone() {
    let redis = support::Redis::start(&[]);
    let (_, took, text) = run_until_exit(&["--listen", "127.0.0.1:0", "--seed", &redis.addr()], 20);
    assert!(
        took < std::time::Duration::from_secs(3),
        "took {took:?}: {text}"
    );
    assert!(
        text.contains("not in cluster mode")
            && text.contains(&format!("--standalone {}", redis.addr())),
        "{text}"
    );
    assert_eq!(
        text.matches("cluster support disabled").count(),
        1,
        "{text}"
    );
}

#[test]
fn check_config_refuses_what_start_up_would() {
    let guard = TempDir::new(format!("slotgate-strict-{}", std::process::id()));
    let cases = [
        ("log = \"nonsense=[[[\"\n", "log"),
        (
            "[admin]\nlisten = \"127.0.0.1:9999\"\ntoken = \"\"\n",
            "admin.token",
        ),
        (
            "[limits]\nmax_bulk_bytes = 1000\nmax_request_bytes = 999\n",
            "max_request_bytes",
        ),
    ];
    for (i, (body, field)) in cases.iter().enumerate() {
        let path = guard.0.join(format!("c{i}.toml"));
        std::fs::write(&path, format!("seeds = [\"127.0.0.1:7000\"]\n{body}")).unwrap();
        let (ok, text) = slotgate(&["--check-config", path.to_str().unwrap()]);
        assert!(!ok && text.contains(field), "{body}: {text}");
    }
}
