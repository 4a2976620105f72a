//! What one client can make slotgate hold: replies it does not read are bounded (the output
//! buffer limit closes it, with a log line; requests it already sent wait meanwhile), memory
//! goes back after a burst, and an idle client costs a few KiB. Against a real redis-server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Proxy, Redis, TempConf};

const VALUE: usize = 100 * 1024;

fn standalone(redis: &Redis, extra: &[&str]) -> Proxy {
    let mut args = vec!["--standalone".to_string(), redis.addr()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Proxy::spawn(&args)
}

/// A redis-server holding `big`, a value of [`VALUE`] bytes.
fn with_big_value() -> Redis {
    let redis = Redis::start(&[]);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; VALUE])
        .query(&mut redis.conn())
        .unwrap();
    redis
}

/// A client that sends `n` GETs of the big value in one write and reads nothing.
fn flood(proxy: &Proxy, n: usize) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let burst = b"GET big\r\n".repeat(n);
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        // Blocks once slotgate stops reading; ends when the socket is closed.
        let _ = w.write_all(&burst);
    });
    s
}

fn info_field(proxy: &Proxy, field: &str) -> String {
    proxy
        .info_field(field)
        .unwrap_or_else(|| panic!("no {field} in INFO"))
}

/// Peak RSS in KiB over `d`.
fn peak_rss(proxy: &Proxy, d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(proxy.rss_kib());
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

#[test]
fn a_client_that_reads_nothing_is_bounded_and_memory_comes_back() {
    let redis = with_big_value();
    // Default limits: the requests already read wait while the replies are unread, so what the
    // client holds is the high-water mark plus one pipeline of replies (1,024 of 100 KB),
    // instead of all 20,000 (2 GB).
    let proxy = standalone(&redis, &[]);
    let base = proxy.rss_kib();
    let s = flood(&proxy, 20_000);
    let peak = peak_rss(&proxy, Duration::from_secs(3));
    assert!(
        peak < base + 200 * 1024,
        "slotgate grew from {base} KiB to {peak} KiB for one client that reads nothing"
    );
    // Other clients are served meanwhile.
    let v: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(v.len(), VALUE);
    drop(s);
    support::wait_until("memory given back", Duration::from_secs(10), || {
        proxy.rss_kib() < base + 32 * 1024
    });
    assert_eq!(
        info_field(&proxy, "proxy_output_buffer_limit_disconnections"),
        "0"
    );
}

#[test]
fn the_output_buffer_limit_closes_only_the_client_past_it() {
    let redis = with_big_value();
    let _: () = redis::cmd("SET")
        .arg("huge")
        .arg(vec![b'y'; 3 * 1024 * 1024])
        .query(&mut redis.conn())
        .unwrap();
    let conf = TempConf::new("[clients]\noutput_buffer_limit_bytes = 2097152\n");
    let proxy = standalone(&redis, &["--config", conf.path()]);
    // One reply larger than the limit still goes through.
    let v: Vec<u8> = redis::cmd("GET")
        .arg("huge")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(v.len(), 3 * 1024 * 1024);

    let mut s = flood(&proxy, 2_000);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    support::wait_until(
        "the flooding client closed",
        Duration::from_secs(10),
        || info_field(&proxy, "proxy_output_buffer_limit_disconnections") == "1",
    );
    // When it reads at last, it finds what reached its socket before the limit (the kernel's
    // buffers hold some), then the end of the connection: far from its 2,000 replies.
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got.len() < 100 * VALUE, "{} bytes", got.len());
    assert!(
        proxy.log().contains("output buffer limit"),
        "a log line says why: {}",
        proxy.log()
    );
    // Every other client is untouched.
    let mut c = proxy.conn();
    let v: Vec<u8> = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(v.len(), VALUE);
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn an_idle_client_costs_under_4_kib() {
    let redis = Redis::start(&[]);
    let proxy = standalone(&redis, &[]);
    // What the clients cost each, not what the first one costs once (a worker's spare
    // buffers, the registry's first nodes): measured from after 200 clients are in.
    let warm = 200;
    let n = 4_000;
    let mut clients = Vec::with_capacity(warm + n);
    let mut base = 0;
    for i in 0..warm + n {
        if i == warm {
            std::thread::sleep(Duration::from_millis(200));
            base = proxy.rss_kib();
        }
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        // Each client is used once (a GET and a PING), then left idle.
        s.write_all(format!("GET k{i}\r\nPING\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < b"$-1\r\n+PONG\r\n".len() {
            got += s.read(&mut buf[got..]).unwrap();
        }
        clients.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let per_client = (proxy.rss_kib() - base) * 1024 / n as u64;
    eprintln!("{per_client} bytes of RSS per idle client");
    assert!(per_client < 4096, "{per_client} bytes per idle client");
    let clients_seen = info_field(&proxy, "proxy_connected_clients");
    assert!(
        clients_seen.parse::<usize>().unwrap() >= warm + n,
        "{clients_seen}"
    );
}
