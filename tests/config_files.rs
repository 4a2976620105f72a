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
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
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
