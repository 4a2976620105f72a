//! slotgate as a TLS termination point, with real clients (redis-cli, redis-benchmark and
//! redis-py over TLS) and certificates made by `openssl` at test time: commands, pipelines and
//! pub/sub through the TLS listener; a client that does not trust slotgate's certificate
//! refuses it; plaintext to the TLS port is turned away; mutual TLS; the certificate replaced
//! while a pipelined load runs; hostile handshakes that never finish.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{Certs, Cluster, Proxy, TempConf, free_port, wait_until};

/// `redis-cli --tls` against `port`, trusting `ca`, with a client certificate when given.
fn cli(certs: &Certs, port: u16, ca: &str, client: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new("redis-cli");
    c.args([
        "--tls",
        "--cacert",
        &certs.path(ca),
        "-p",
        &port.to_string(),
    ]);
    if let Some(name) = client {
        c.args(["--cert", &certs.path(&format!("{name}.crt"))]);
        c.args(["--key", &certs.path(&format!("{name}.key"))]);
    }
    c.args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn info_field(proxy: &Proxy, name: &str) -> String {
    proxy.info_field(name).unwrap_or_default()
}

/// The subject of the certificate a TLS server on `port` presents.
fn served_subject(certs: &Certs, port: u16) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", &certs.path("ca.crt")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let t = text(&out);
    t.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_default()
        .to_string()
}

fn tls_args(certs: &Certs, port: u16, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--tls-listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--tls-cert".to_string(),
        certs.path("server.crt"),
        "--tls-key".to_string(),
        certs.path("server.key"),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

#[test]
fn clients_speak_to_slotgate_over_tls_and_untrusted_or_plain_ones_are_turned_away() {
    let certs = Certs::generate();
    let cluster = Cluster::start(3, 0);
    let tls_port = free_port();
    let args = tls_args(&certs, tls_port, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::cluster(&cluster, &args);

    // redis-cli: commands, split across masters.
    let out = cli(
        &certs,
        tls_port,
        "ca.crt",
        None,
        &["MSET", "a", "1", "b", "2", "c", "3"],
    );
    assert_eq!(text(&out).trim(), "OK", "{}", text(&out));
    let out = cli(&certs, tls_port, "ca.crt", None, &["MGET", "a", "b", "c"]);
    assert_eq!(text(&out).trim(), "1\n2\n3");

    // redis-benchmark over TLS, pipelined, many clients.
    let out = Command::new("redis-benchmark")
        .args(["--tls", "--cacert", &certs.path("ca.crt")])
        .args([
            "-p",
            &tls_port.to_string(),
            "-n",
            "20000",
            "-c",
            "20",
            "-P",
            "16",
        ])
        .args(["-t", "set,get", "-q"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(
        out.status.success() && t.matches("requests per second").count() == 2,
        "{t}"
    );
    assert!(!t.to_lowercase().contains("error"), "{t}");

    // redis-py with ssl=True (RESP3 by default): commands, a pipeline and pub/sub.
    let script = format!(
        "import redis, sys\n\
         r = redis.Redis(port=int(sys.argv[1]), ssl=True, ssl_ca_certs='{ca}')\n\
         p = r.pipeline(transaction=False)\n\
         for i in range(100): p.set(f'k{{i}}', i)\n\
         p.execute()\n\
         assert [int(v) for v in r.mget([f'k{{i}}' for i in range(100)])] == list(range(100))\n\
         s = r.pubsub(); s.subscribe('news')\n\
         assert s.get_message(timeout=5)['type'] == 'subscribe'\n\
         r.publish('news', 'hi')\n\
         m = s.get_message(timeout=5)\n\
         print(m['type'], m['data'].decode())\n",
        ca = certs.path("ca.crt")
    );
    let printed = support::run_python(&script, tls_port);
    assert_eq!(printed.trim(), "message hi");

    // A client that trusts another CA refuses slotgate's certificate.
    let out = cli(&certs, tls_port, "other-ca.crt", None, &["PING"]);
    assert!(!text(&out).contains("PONG"), "{}", text(&out));

    // Plaintext RESP to the TLS port: the connection is closed, counted, and logged.
    let before: u64 = info_field(&proxy, "proxy_tls_handshake_failures")
        .parse()
        .unwrap();
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("PONG"));
    wait_until(
        "the refused handshake counted",
        Duration::from_secs(5),
        || {
            info_field(&proxy, "proxy_tls_handshake_failures")
                .parse::<u64>()
                .unwrap()
                > before
        },
    );
    assert!(
        proxy.log().contains("TLS handshake failed"),
        "{}",
        proxy.log()
    );
    // The plaintext listener is unaffected.
    let pong: String = redis::cmd("PING").query(&mut proxy.conn()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn mutual_tls_requires_a_certificate_from_the_configured_ca() {
    let certs = Certs::generate();
    let server = support::Redis::start(&[]);
    let tls_port = free_port();
    let mut args = vec!["--standalone".to_string(), server.addr()];
    args.extend(tls_args(
        &certs,
        tls_port,
        &["--tls-client-ca", &certs.path("ca.crt")],
    ));
    let proxy = Proxy::spawn(&args);

    let good = cli(&certs, tls_port, "ca.crt", Some("client"), &["PING"]);
    assert_eq!(text(&good).trim(), "PONG", "{}", text(&good));
    let none = cli(&certs, tls_port, "ca.crt", None, &["PING"]);
    assert!(!text(&none).contains("PONG"), "{}", text(&none));
    // A certificate from a CA slotgate does not trust.
    let foreign = cli(&certs, tls_port, "ca.crt", Some("other-server"), &["PING"]);
    assert!(!text(&foreign).contains("PONG"), "{}", text(&foreign));
    // From the right CA, but past its end date.
    let expired = cli(
        &certs,
        tls_port,
        "ca.crt",
        Some("expired-client"),
        &["PING"],
    );
    assert!(!text(&expired).contains("PONG"), "{}", text(&expired));
    wait_until(
        "the refused handshakes counted",
        Duration::from_secs(5),
        || {
            info_field(&proxy, "proxy_tls_handshake_failures")
                .parse::<u64>()
                .unwrap()
                >= 3
        },
    );
    // The good certificate still works after the refusals.
    let again = cli(&certs, tls_port, "ca.crt", Some("client"), &["PING"]);
    assert_eq!(text(&again).trim(), "PONG", "{}", text(&again));
}

/// `redis-cli --tls` with a client certificate, the commands read from its standard input (one
/// connection for all of them).
fn cli_script(certs: &Certs, port: u16, client: &str, script: &str) -> String {
    let mut c = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &certs.path("ca.crt"),
            "-p",
            &port.to_string(),
        ])
        .args(["--cert", &certs.path(&format!("{client}.crt"))])
        .args(["--key", &certs.path(&format!("{client}.key"))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    text(&c.wait_with_output().unwrap())
}

#[test]
fn a_client_certificate_logs_in_as_the_user_its_common_name_names() {
    let certs = Certs::generate();
    let server = support::Redis::start(&[]);
    let tls_port = free_port();
    let conf = TempConf::new(
        "[clients]\nrequirepass = \"default-secret\"\n\
         [tls]\nauth_clients_user = \"CN\"\n\
         [[users]]\nname = \"app\"\nrules = \"on >app-secret ~app:* +@all\"\n",
    );
    let mut args = vec![
        "--standalone".to_string(),
        server.addr(),
        "--config".to_string(),
        conf.path().to_string(),
    ];
    args.extend(tls_args(
        &certs,
        tls_port,
        &["--tls-client-ca", &certs.path("ca.crt")],
    ));
    let _proxy = Proxy::spawn(&args);
    // The client certificate says CN=app: logged in as app without AUTH, app's rules apply,
    // and RESET returns to app rather than to a default user that wants a password.
    let out = cli_script(
        &certs,
        tls_port,
        "client",
        "ACL WHOAMI\nSET app:1 v\nGET other\nRESET\nACL WHOAMI\nGET app:1\n",
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.first(), Some(&"app"), "{out}");
    assert_eq!(lines.get(1), Some(&"OK"), "{out}");
    assert!(lines.get(2).is_some_and(|l| l.contains("NOPERM")), "{out}");
    assert_eq!(lines.get(3..6), Some(&["RESET", "app", "v"][..]), "{out}");
    // CN=nobody names no user: the client authenticates as it would without the setting.
    let out = cli_script(
        &certs,
        tls_port,
        "nobody-client",
        "GET app:1\nAUTH default-secret\nACL WHOAMI\n",
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.first().is_some_and(|l| l.contains("NOAUTH")), "{out}");
    assert_eq!(lines.get(1..3), Some(&["OK", "default"][..]), "{out}");
}

#[test]
fn a_user_from_the_certificate_needs_mutual_tls() {
    let certs = Certs::generate();
    let conf = TempConf::new("[tls]\nauth_clients_user = \"CN\"\n");
    let mut args = vec![
        "--standalone".to_string(),
        "127.0.0.1:1".to_string(),
        "--config".to_string(),
        conf.path().to_string(),
    ];
    args.extend(tls_args(&certs, free_port(), &[]));
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("tls.auth_clients_user"),
        "{}",
        text(&out)
    );
}

/// An HTTPS GET with Python's `ssl` trusting `ca`: the status and body, or the error.
fn https_get(port: u16, ca: &str, path: &str, token: Option<&str>) -> String {
    let script = r#"
import http.client, ssl, sys
port, ca, path, token = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
try:
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ssl.create_default_context(cafile=ca))
    c.request("GET", path, headers={"Authorization": "Bearer " + token} if token else {})
    r = c.getresponse()
    print(r.status, r.read().decode().strip())
except Exception as e:
    print("error", type(e).__name__)
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            ca,
            path,
            token.unwrap_or(""),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_admin_listener_speaks_https_with_the_tls_certificate() {
    let certs = Certs::generate();
    let server = support::Redis::start(&[]);
    let (tls_port, admin_port) = (free_port(), free_port());
    let mut args = vec!["--standalone".to_string(), server.addr()];
    args.extend(tls_args(
        &certs,
        tls_port,
        // Mutual TLS on the client listener does not extend to the admin one.
        &[
            "--tls-client-ca",
            &certs.path("ca.crt"),
            "--admin",
            &format!("127.0.0.1:{admin_port}"),
            "--admin-tls",
        ],
    ));
    let conf = TempConf::new("[admin]\ntoken = \"admin-token-1\"\n");
    args.extend(["--config".to_string(), conf.path().to_string()]);
    let proxy = Proxy::spawn(&args);
    assert_eq!(
        https_get(admin_port, &certs.path("ca.crt"), "/health", None),
        "200 OK\nslots_reachable=16384 of 16384"
    );
    assert!(
        https_get(
            admin_port,
            &certs.path("ca.crt"),
            "/ready",
            Some("admin-token-1")
        )
        .starts_with("200"),
    );
    assert!(
        https_get(admin_port, &certs.path("ca.crt"), "/ready", Some("wrong")).starts_with("401"),
    );
    // A client that does not trust the certificate refuses it; plain HTTP gets no answer.
    assert_eq!(
        https_get(admin_port, &certs.path("other-ca.crt"), "/health", None),
        "error SSLCertVerificationError"
    );
    let mut plain = TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!String::from_utf8_lossy(&reply).contains("200 OK"));
    drop(proxy);
}

#[test]
fn admin_https_without_a_tls_certificate_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_slotgate"))
        .args([
            "--standalone",
            "127.0.0.1:1",
            "--admin",
            "127.0.0.1:1",
            "--admin-tls",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("admin.tls"), "{}", text(&out));
}

#[test]
fn the_certificate_is_replaced_under_load_and_broken_files_keep_the_old_one() {
    let certs = Certs::generate();
    let server = support::Redis::start(&[]);
    let tls_port = free_port();
    // Files of slotgate's own, replaced below.
    let dir = certs.dir.join("live");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::copy(certs.dir.join("server.crt"), &cert).unwrap();
    std::fs::copy(certs.dir.join("server.key"), &key).unwrap();
    let conf = TempConf::new("[tls]\nreload_check_ms = 200\n");
    let proxy = Proxy::spawn(&[
        "--standalone".to_string(),
        server.addr(),
        "--config".to_string(),
        conf.path().to_string(),
        "--tls-listen".to_string(),
        format!("127.0.0.1:{tls_port}"),
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ]);
    assert!(served_subject(&certs, tls_port).contains("localhost"));

    // A pipelined load over TLS on long-lived connections while the certificate changes.
    let load = Command::new("redis-benchmark")
        .args(["--tls", "--cacert", &certs.path("ca.crt")])
        .args([
            "-p",
            &tls_port.to_string(),
            "-n",
            "300000",
            "-c",
            "10",
            "-P",
            "16",
        ])
        .args(["-t", "get", "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // A new certificate from the same CA, for another name, written in place.
    let out = Command::new("sh")
        .arg("-ec")
        .arg(format!(
            "cd {d}; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out new.key 2>/dev/null
             openssl req -new -key new.key -out new.csr -subj /CN=reloaded
             printf 'subjectAltName=IP:127.0.0.1\\n' > new.ext
             openssl x509 -req -in new.csr -CA ../ca.crt -CAkey ../ca.key -CAcreateserial -out new.crt -days 2 -extfile new.ext 2>/dev/null
             cp new.key tls.key.tmp; cp new.crt tls.crt.tmp; mv tls.key.tmp tls.key; mv tls.crt.tmp tls.crt",
            d = dir.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    wait_until(
        "new handshakes to see the new certificate",
        Duration::from_secs(10),
        || served_subject(&certs, tls_port).contains("reloaded"),
    );
    let finished = load.wait_with_output().unwrap();
    let t = text(&finished);
    assert!(finished.status.success(), "{t}");
    assert!(!t.to_lowercase().contains("error"), "{t}");
    assert!(
        proxy.log().contains("TLS certificate reloaded"),
        "{}",
        proxy.log()
    );

    // A broken file: the certificate in use stays, and the log says why.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    wait_until("the broken file reported", Duration::from_secs(10), || {
        proxy.log().contains("TLS certificate not reloaded")
    });
    assert!(served_subject(&certs, tls_port).contains("reloaded"));
    let out = cli(&certs, tls_port, "ca.crt", None, &["PING"]);
    assert_eq!(text(&out).trim(), "PONG");
}

#[test]
fn handshakes_that_never_finish_are_closed_and_hold_nobody_up() {
    let certs = Certs::generate();
    let server = support::Redis::start(&[]);
    let tls_port = free_port();
    let conf = TempConf::new("[tls]\nhandshake_timeout_ms = 1000\n");
    let mut args = vec![
        "--standalone".to_string(),
        server.addr(),
        "--config".to_string(),
        conf.path().to_string(),
    ];
    args.extend(tls_args(&certs, tls_port, &[]));
    let proxy = Proxy::spawn(&args);
    let base = proxy.rss_kib();

    // 1,000 connections that send nothing, half a ClientHello, or garbage.
    let mut stalled = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        match i % 3 {
            0 => {}
            1 => s
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
                .unwrap(),
            _ => s.write_all(&[0xde; 300]).unwrap(),
        }
        stalled.push(s);
    }
    // Other clients are served meanwhile, over TLS and plaintext.
    let started = Instant::now();
    let out = cli(&certs, tls_port, "ca.crt", None, &["SET", "x", "1"]);
    assert_eq!(text(&out).trim(), "OK", "{}", text(&out));
    let v: String = redis::cmd("GET").arg("x").query(&mut proxy.conn()).unwrap();
    assert_eq!(v, "1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(proxy.rss_kib() < base + 64 * 1024, "memory bounded");

    // The handshake timeout closes the ones that stalled.
    std::thread::sleep(Duration::from_millis(2500));
    let mut closed = 0;
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            // A TLS alert for the garbage, then the end.
            Ok(_) => {
                if s.read(&mut b).map_or(true, |n| n == 0) {
                    closed += 1;
                }
            }
            Err(_) => {}
        }
    }
    assert_eq!(closed, 1000, "every stalled handshake closed");
    let clients: usize = info_field(&proxy, "proxy_connected_clients")
        .parse()
        .unwrap();
    assert!(clients <= 2, "{clients} clients still counted");
}
