//! A whole slotgate (sessions, routing, redirects, splits and merges, backend connections)
//! driven by arbitrary client bytes, in front of two fake cluster nodes in this process that
//! answer with arbitrary replies. No real Redis and no other process: the nodes are tokio tasks
//! on loopback listeners of the fuzzer's own.
//!
//! Input: two bytes (little-endian) give how many of the following bytes the client sends; the
//! rest is the replies the nodes give, in the order requests reach them. In a reply, `@A` and
//! `@B` stand for the two nodes' addresses (so a `-MOVED 1 @B` is a real redirect). What the
//! nodes say about themselves (CLUSTER SLOTS: node A serves slots 0-8191, node B the rest;
//! READONLY, ASKING, AUTH, SELECT, CLIENT ID, PING, HELLO) is answered as Redis would, so the
//! topology stays known; every other request takes the next scripted reply, or `+OK` once the
//! script is used up. Script bytes that are not a complete reply are sent as they are, and that
//! connection is closed: a node that breaks the protocol mid-reply.
//!
//! A panic anywhere (a session task included: libfuzzer-sys aborts in its panic hook) is a
//! crash. State carries over from one input to the next (pooled backend connections, the
//! topology, the script cache), as in a long-running proxy; a crash is reproduced by running
//! the corpus, not always its last input alone.

#![no_main]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use slotgate::protocol::{Limits, ReplyScanner, RequestParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The replies still to give, shared by both nodes and all their connections.
#[derive(Default)]
struct Script {
    replies: VecDeque<Reply>,
}

enum Reply {
    /// One complete reply.
    Whole(Bytes),
    /// Bytes that are not a complete reply: sent, then the connection is closed.
    Broken(Bytes),
}

struct Harness {
    rt: tokio::runtime::Runtime,
    proxy: SocketAddr,
    nodes: [SocketAddr; 2],
    script: Arc<Mutex<Script>>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let script = Arc::new(Mutex::new(Script::default()));
        let (proxy, nodes) = rt.block_on(async {
            let a = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
            let b = TcpListener::bind("127.0.0.1:0").await.expect("bind node");
            let nodes = [a.local_addr().expect("addr"), b.local_addr().expect("addr")];
            tokio::spawn(node(a, nodes, script.clone()));
            tokio::spawn(node(b, nodes, script.clone()));
            let overrides = slotgate::config::Overrides {
                listen: Some("127.0.0.1:0".into()),
                seeds: vec![nodes[0].to_string()],
                threads: Some(1),
                ..Default::default()
            };
            let config = slotgate::config::Config::load(None, &overrides).expect("config");
            let running = slotgate::app::start(config).await.expect("start slotgate");
            let proxy = running.local_addr;
            // Runs for the life of the fuzzer.
            std::mem::forget(running);
            (proxy, nodes)
        });
        Harness {
            rt,
            proxy,
            nodes,
            script,
        }
    })
}

/// A fake cluster node: accepts connections and answers each request in order.
async fn node(listener: TcpListener, nodes: [SocketAddr; 2], script: Arc<Mutex<Script>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(serve(stream, nodes, script.clone()));
    }
}

async fn serve(mut stream: TcpStream, nodes: [SocketAddr; 2], script: Arc<Mutex<Script>>) {
    let _ = stream.set_nodelay(true);
    let mut parser = RequestParser::new(Limits::default());
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Vec::new();
    loop {
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut close = false;
        loop {
            let req = match parser.parse(&mut buf) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(_) => return,
            };
            match own_answer(&req, nodes) {
                Some(a) => out.extend_from_slice(&a),
                None => {
                    let next = script
                        .lock()
                        .map(|mut s| s.replies.pop_front())
                        .ok()
                        .flatten();
                    match next {
                        Some(Reply::Whole(r)) => out.extend_from_slice(&r),
                        Some(Reply::Broken(r)) => {
                            out.extend_from_slice(&r);
                            close = true;
                            break;
                        }
                        None => out.extend_from_slice(b"+OK\r\n"),
                    }
                }
            }
        }
        if stream.write_all(&out).await.is_err() || close {
            return;
        }
        out.clear();
    }
}

/// What a node says about itself, as Redis would; `None` for a request the script answers.
fn own_answer(req: &slotgate::protocol::Request, nodes: [SocketAddr; 2]) -> Option<Vec<u8>> {
    let name = req.arg(0)?.to_ascii_uppercase();
    let sub = req.arg(1).map(<[u8]>::to_ascii_uppercase);
    let simple = |s: &str| Some(s.as_bytes().to_vec());
    match (name.as_slice(), sub.as_deref()) {
        (b"CLUSTER", Some(b"SHARDS")) => {
            simple("-ERR unknown subcommand 'SHARDS'. Try CLUSTER HELP.\r\n")
        }
        (b"CLUSTER", Some(b"SLOTS")) => {
            let entry = |lo: u16, hi: u16, at: SocketAddr| {
                format!(
                    "*3\r\n:{lo}\r\n:{hi}\r\n*2\r\n$9\r\n127.0.0.1\r\n:{}\r\n",
                    at.port()
                )
            };
            Some(
                format!(
                    "*2\r\n{}{}",
                    entry(0, 8191, nodes[0]),
                    entry(8192, 16383, nodes[1])
                )
                .into_bytes(),
            )
        }
        (b"READONLY" | b"READWRITE" | b"ASKING" | b"AUTH" | b"SELECT", _) => simple("+OK\r\n"),
        (b"CLIENT", Some(b"ID")) => simple(":7\r\n"),
        (b"CLIENT", Some(b"SETNAME" | b"SETINFO")) => simple("+OK\r\n"),
        (b"PING", None) => simple("+PONG\r\n"),
        (b"HELLO", _) => simple(
            "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n\
             $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:7\r\n$4\r\nmode\r\n$7\r\ncluster\r\n\
             $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        ),
        _ => None,
    }
}

/// The scripted replies in `data`, with `@A`/`@B` replaced by the nodes' addresses.
fn script_of(data: &[u8], nodes: [SocketAddr; 2]) -> VecDeque<Reply> {
    let mut text = Vec::with_capacity(data.len());
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        match (b, data.get(i + 1)) {
            (b'@', Some(&n @ (b'A' | b'B'))) => {
                let at = nodes[usize::from(n == b'B')];
                text.extend_from_slice(at.to_string().as_bytes());
                i += 2;
            }
            _ => {
                text.push(b);
                i += 1;
            }
        }
    }
    let mut replies = VecDeque::new();
    let mut rest = Bytes::from(text);
    while !rest.is_empty() {
        let mut scanner = ReplyScanner::new(Limits::default());
        match scanner.scan(&rest) {
            Ok(Some(n)) if n > 0 => replies.push_back(Reply::Whole(rest.split_to(n))),
            _ => {
                replies.push_back(Reply::Broken(rest));
                break;
            }
        }
    }
    replies
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let h = harness();
    let (len, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    let (client, replies) = rest.split_at(len.min(rest.len()));
    if let Ok(mut s) = h.script.lock() {
        s.replies = script_of(replies, h.nodes);
    }
    h.rt.block_on(async {
        let Ok(mut c) = TcpStream::connect(h.proxy).await else {
            return;
        };
        if c.write_all(client).await.is_err() {
            return;
        }
        let _ = c.shutdown().await;
        // Read what slotgate answers until it closes or falls silent.
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), c.read(&mut sink)).await
        {
            if n == 0 {
                break;
            }
        }
    });
});
