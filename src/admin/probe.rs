//! `slotgate --probe http://HOST:PORT/PATH`: one plain-HTTP GET of the admin listener, for a
//! container's health check in an image with no shell and no HTTP client (`FROM scratch`).
//! Exits 0 only on `200`.
//!
//! Blocking std I/O with a deadline on every step; it must never be used on the request path
//! nor speak HTTPS (a probe of an HTTPS admin listener uses the orchestrator's own client).

use std::io::{BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why a probe did not get a status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("'{0}' is not http://HOST:PORT/PATH")]
    Url(String),
    #[error("{addr}: {cause}")]
    Io { addr: String, cause: std::io::Error },
    #[error("{0}: the answer is not HTTP")]
    NotHttp(String),
}

/// The `host:port` and path of an `http://` URL (the path `/health` when there is none).
pub fn parse_url(url: &str) -> Result<(&str, &str), ProbeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::Url(url.into()))?;
    let (addr, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/health"),
    };
    if addr.is_empty() || !addr.contains(':') {
        return Err(ProbeError::Url(url.into()));
    }
    Ok((addr, path))
}

/// The status code of `GET url`, within `timeout` for each of connect, write and read.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let (addr, path) = parse_url(url)?;
    let io = |cause| ProbeError::Io {
        addr: addr.into(),
        cause,
    };
    let target = addr
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| ProbeError::Url(url.into()))?;
    let mut s = TcpStream::connect_timeout(&target, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    // One write: `write!` on the socket would send each piece of the format on its own.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all that is read: at most 256 bytes of it.
    let mut line = Vec::new();
    std::io::BufReader::new(s.take(256))
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    status_of(&line).ok_or_else(|| ProbeError::NotHttp(addr.into()))
}

/// The code of an HTTP/1.x status line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_split_a_url_and_default_the_path_to_health() {
        assert_eq!(
            parse_url("http://127.0.0.1:9121/ready").ok(),
            Some(("127.0.0.1:9121", "/ready"))
        );
        assert_eq!(
            parse_url("http://localhost:9121").ok(),
            Some(("localhost:9121", "/health"))
        );
    }

    #[test]
    fn should_refuse_what_is_not_a_plain_http_url() {
        for bad in [
            "https://a:1/",
            "127.0.0.1:9121",
            "http:///x",
            "http://host/x",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn should_read_the_status_code_of_an_http_status_line_only() {
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"-ERR unknown command\r\n"), None);
        assert_eq!(status_of(b""), None);
    }

    #[test]
    fn should_get_the_status_a_server_answers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ready", l.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = [0u8; 256];
            let n = s.read(&mut req).unwrap();
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            String::from_utf8_lossy(&req[..n]).into_owned()
        });
        assert_eq!(probe(&url, Duration::from_secs(2)).unwrap(), 503);
        assert!(
            server
                .join()
                .unwrap()
                .starts_with("GET /ready HTTP/1.1\r\n")
        );
    }
}
