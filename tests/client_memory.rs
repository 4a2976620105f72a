//! What clients can make slotgate hold: replies one does not read are bounded (the output
//! buffer limit closes it, with a log line; requests it already sent wait meanwhile), memory
//! goes back after a burst, all of them together stay within the memory budget (the one
//! holding the most is closed), a request trickling in is closed after the request timeout,
//! and 10,000 idle clients are held at a few KiB each. Against a real redis-server.
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

/// Raises this test process' open-files limit (its clients' sockets) to what `n` clients need.
fn allow_open_files(n: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|c| c < n) {
        assert!(
            now.maximum.is_none_or(|m| m >= n),
            "this machine's hard open-files limit {:?} is below the {n} this test needs",
            now.maximum
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(n),
                maximum: now.maximum,
            },
        )
        .unwrap();
    }
}

#[test]
fn ten_thousand_clients_are_held_at_once_idle_ones_cost_under_4_kib_and_the_next_is_refused() {
    let redis = Redis::start(&[]);
    // slotgate raises its own open-files limit for max_clients (10,000 by default).
    let proxy = standalone(&redis, &[]);
    let max = 10_000;
    allow_open_files(max as u64 + 1_000);
    // What the clients cost each, not what the first one costs once (a worker's spare
    // buffers, the registry's first nodes): measured from after 200 clients are in.
    let warm = 200;
    let mut clients = Vec::with_capacity(max);
    let mut base = 0;
    for i in 0..max {
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
    let per_client = (proxy.rss_kib() - base) * 1024 / (max - warm) as u64;
    eprintln!("{per_client} bytes of RSS per idle client, {max} clients held");
    assert!(per_client < 4096, "{per_client} bytes per idle client");

    // The next one gets Redis' error, and the ones held are still served.
    let mut extra = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = extra.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"-ERR max number of clients reached\r\n");
    for s in &mut clients {
        s.write_all(b"PING\r\n").unwrap();
    }
    for s in &mut clients {
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
    // One leaves: there is room again.
    clients.pop();
    // Asked on a connection of its own, refused until the place is free.
    let mut info = String::new();
    support::wait_until("a place freed", Duration::from_secs(5), || {
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        if s.write_all(b"INFO proxy\r\n").is_err() {
            return false;
        }
        let mut got = 0;
        // The bulk reply whole: its length line, then that many bytes and CRLF.
        loop {
            match s.read(&mut buf[got..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
            let text = String::from_utf8_lossy(&buf[..got]).into_owned();
            if !text.starts_with('$') {
                return false;
            }
            if let Some((len, body)) = text[1..].split_once("\r\n")
                && body.len() >= len.parse::<usize>().unwrap() + 2
            {
                info = body.to_string();
                return true;
            }
        }
    });
    // The extra client, and any INFO asked before the place was free.
    let rejected: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("proxy_rejected_connections:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(rejected >= 1, "{rejected}");
}

/// Reads `s` to its end (its connection closed) or for `d`; the bytes read and whether the
/// end came.
fn read_until_closed(s: &mut TcpStream, d: Duration) -> (usize, bool) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0;
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) => return (n, true),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (n, true),
            Err(_) => {}
        }
    }
    (n, false)
}

#[test]
fn past_the_memory_budget_the_client_holding_the_most_is_closed_and_the_others_are_served() {
    let redis = with_big_value();
    let conf = TempConf::new("[clients]\nmemory_budget_bytes = 16777216\n");
    let proxy = standalone(&redis, &["--config", conf.path()]);
    // A client with 60 unread replies (6 MB, some of it in the kernel's socket buffers) fits.
    let mut small = flood(&proxy, 60);
    support::wait_until(
        "the small client's replies held",
        Duration::from_secs(10),
        || {
            info_field(&proxy, "proxy_client_buffer_bytes")
                .parse::<usize>()
                .unwrap()
                > 1024 * 1024
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(info_field(&proxy, "proxy_evicted_clients"), "0");
    // One with 1,000 (100 MB) does not: it holds the most when the budget is passed.
    // It reads nothing until it is closed (reading, it would hold nothing).
    let mut large = flood(&proxy, 1_000);
    support::wait_until("a client evicted", Duration::from_secs(10), || {
        info_field(&proxy, "proxy_evicted_clients") != "0"
    });
    let (got, closed) = read_until_closed(&mut large, Duration::from_secs(10));
    assert!(closed, "the client holding the most is closed");
    assert!(got < 500 * VALUE, "{got} bytes reached it");
    assert_eq!(info_field(&proxy, "proxy_evicted_clients"), "1");
    assert!(
        proxy.log().contains("memory budget"),
        "a log line says why: {}",
        proxy.log()
    );
    // The other client gets every reply, and new ones are served.
    let mut want = 60 * (VALUE + format!("${VALUE}\r\n\r\n").len());
    small
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while want > 0 {
        let n = small.read(&mut buf).unwrap();
        assert!(n > 0, "the small client was closed");
        want = want.checked_sub(n).expect("more bytes than 60 replies");
    }
    let v: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut proxy.conn())
        .unwrap();
    assert_eq!(v.len(), VALUE);
    support::wait_until("the budget given back", Duration::from_secs(5), || {
        info_field(&proxy, "proxy_client_buffer_bytes")
            .parse::<usize>()
            .unwrap()
            < 1024 * 1024
    });
}

#[test]
fn without_a_memory_budget_the_same_clients_are_all_kept() {
    let redis = with_big_value();
    let conf = TempConf::new("[clients]\nmemory_budget_bytes = 0\n");
    let proxy = standalone(&redis, &["--config", conf.path()]);
    let _small = flood(&proxy, 60);
    let mut large = flood(&proxy, 1_000);
    support::wait_until(
        "the large client's replies held",
        Duration::from_secs(10),
        || {
            info_field(&proxy, "proxy_client_buffer_bytes")
                .parse::<usize>()
                .unwrap()
                > 32 * 1024 * 1024
        },
    );
    let (_, closed) = read_until_closed(&mut large, Duration::from_millis(200));
    assert!(!closed);
    assert_eq!(info_field(&proxy, "proxy_evicted_clients"), "0");
}

/// A client that sends the start of a SET whose value never comes whole: a byte every 100 ms.
fn trickle(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n")
        .unwrap();
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(100));
            if w.write_all(b"x").is_err() {
                return;
            }
        }
    });
    s
}

#[test]
fn a_request_trickling_in_is_closed_after_the_request_timeout_and_a_pipelining_client_is_not() {
    let redis = Redis::start(&[]);
    let conf = TempConf::new("[clients]\nrequest_timeout_ms = 500\n");
    let proxy = standalone(&redis, &["--config", conf.path()]);
    let started = Instant::now();
    let mut slow = trickle(&proxy);
    // A client whose every write ends in the middle of its next request, for 2 s: each
    // request that completes restarts the clock.
    let mut piped = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let mut w = piped.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(b"PI").unwrap();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(200));
            w.write_all(b"NG\r\nPI").unwrap();
        }
        w.write_all(b"NG\r\n").unwrap();
    });
    // A client that sends nothing holds no partial request.
    let mut quiet = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();

    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(5));
    assert!(closed, "the trickling client is closed");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(450),
        "closed after {after:?}"
    );
    writer.join().unwrap();
    piped
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut pongs = [0u8; 11 * 7];
    piped.read_exact(&mut pongs).unwrap();
    assert_eq!(&pongs[..], b"+PONG\r\n".repeat(11).as_slice());
    quiet.write_all(b"PING\r\n").unwrap();
    let mut pong = [0u8; 7];
    quiet.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");
    assert_eq!(
        info_field(&proxy, "proxy_request_timeout_disconnections"),
        "1"
    );
    assert!(proxy.log().contains("request timeout"), "{}", proxy.log());

    // Without the limit the same client is kept.
    let conf = TempConf::new("[clients]\nrequest_timeout_ms = 0\n");
    let proxy = standalone(&redis, &["--config", conf.path()]);
    let mut slow = trickle(&proxy);
    let (_, closed) = read_until_closed(&mut slow, Duration::from_millis(1500));
    assert!(!closed, "without a request timeout the client stays");
}
