//! The floor of forwarding on each I/O model, for issue 18's question "how much CPU per request
//! would an io_uring path save at pipeline 1?": a byte forwarder that gives every client
//! connection its own backend connection and copies bytes both ways, nothing else (no parsing,
//! no routing), built three ways on one thread each:
//!
//! - `tokio`: tokio's current-thread runtime (epoll, as each slotgate worker) with
//!   `copy_bidirectional` per connection pair;
//! - `uring`: one io_uring ring, a receive outstanding on every socket, each completion's bytes
//!   sent to the peer by the next submission, every submission and wait of a loop turn in one
//!   `io_uring_enter`;
//! - `uring-defer`: the same ring set up as the kernel's documentation advises for one thread
//!   (`SINGLE_ISSUER`, `DEFER_TASKRUN`, `COOP_TASKRUN`: completions run when the thread asks);
//! - `uring-multishot`: a ring set up as slotgate's (`SINGLE_ISSUER`, `COOP_TASKRUN`, no
//!   `DEFER_TASKRUN`, which a tokio worker waiting in `epoll_wait` cannot use) with every
//!   socket a registered file and one multishot receive per socket into buffers the kernel
//!   picks from a provided pool, sent on from there: the mechanisms issue 18 names, measured
//!   before they are built into slotgate.
//!
//! `benches/p1.py --ceiling` drives each with the same redis-benchmark runs as slotgate and
//! twemproxy. What the io_uring forwarders save against the tokio one is about what io_uring can
//! save a proxy's socket work; slotgate does more per request, none of it in the kernel.
//!
//!     cargo build --release --manifest-path benches/forwarder/Cargo.toml
//!     benches/forwarder/target/release/slotgate-forwarder --mode uring --listen ADDR --backend ADDR
//!
//! A benchmark's tool, never part of slotgate.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(mode), Some(listen), Some(backend)) =
        (value("--mode"), value("--listen"), value("--backend"))
    else {
        anyhow::bail!(
            "usage: --mode tokio|uring|uring-defer|uring-multishot --listen ADDR --backend ADDR"
        );
    };
    let listen: SocketAddr = listen.parse()?;
    let backend: SocketAddr = backend.parse()?;
    match mode.as_str() {
        "tokio" => with_tokio(listen, backend),
        "uring" => uring::serve(listen, backend, false),
        "uring-defer" => uring::serve(listen, backend, true),
        "uring-multishot" => multishot::serve(listen, backend),
        other => anyhow::bail!("unknown mode {other}"),
    }
}

fn with_tokio(listen: SocketAddr, backend: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}

/// Which operation of a pair's direction an io_uring entry is.
#[derive(Clone, Copy)]
enum Op {
    Recv,
    Send,
}

/// An entry's user data: the pair, the direction (0: client to backend), the operation.
fn user_data(pair: usize, dir: usize, op: Op) -> u64 {
    ((pair as u64) << 2) | ((dir as u64) << 1) | matches!(op, Op::Send) as u64
}

fn decode(ud: u64) -> (usize, usize, Op) {
    let op = if ud & 1 == 1 { Op::Send } else { Op::Recv };
    ((ud >> 2) as usize, ((ud >> 1) & 1) as usize, op)
}

/// Queues `entry` on `ring`, handing the queue to the kernel first when it is full.
///
/// # Safety
/// Whatever `entry` refers to (socket, buffer) must stay valid and in place until the kernel
/// completed it.
#[allow(unsafe_code)]
unsafe fn queue(
    ring: &mut io_uring::IoUring,
    entry: &io_uring::squeue::Entry,
) -> std::io::Result<()> {
    loop {
        // SAFETY: the caller's promise above.
        if unsafe { ring.submission().push(entry) }.is_ok() {
            return Ok(());
        }
        ring.submit()?;
    }
}

/// The entry that waits for the listener to be readable (POLLIN), with `user_data`.
fn listener_poll(listener: &TcpListener, user_data: u64) -> io_uring::squeue::Entry {
    io_uring::opcode::PollAdd::new(io_uring::types::Fd(listener.as_raw_fd()), 0x001)
        .build()
        .user_data(user_data)
}

/// The next client waiting on `listener` and a new backend connection for it (both without
/// Nagle's delay); `None` once no client waits.
fn accept_pair(
    listener: &TcpListener,
    backend: SocketAddr,
) -> std::io::Result<Option<[TcpStream; 2]>> {
    let client = match listener.accept() {
        Ok((c, _)) => c,
        Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let server = TcpStream::connect(backend)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok(Some([client, server]))
}

mod uring {
    use super::*;
    use io_uring::{IoUring, opcode, types};

    const BUF: usize = 16 * 1024;
    /// The user data of the listener's readiness poll.
    const LISTENER: u64 = u64::MAX;

    /// One direction of a pair: bytes received from one socket, being sent to the other.
    struct Half {
        buf: Box<[u8]>,
        /// Bytes in `buf` and how many of them were sent.
        len: usize,
        sent: usize,
    }

    /// A client connection and its own backend connection.
    struct Pair {
        /// 0: the client's socket, 1: the backend's.
        sockets: [TcpStream; 2],
        /// 0: client to backend, 1: backend to client.
        halves: [Half; 2],
        /// Operations the kernel has not completed yet: the pair, its sockets and buffers stay
        /// where they are until this is 0.
        in_flight: u32,
        closing: bool,
    }

    struct Forwarder {
        ring: IoUring,
        pairs: Vec<Option<Pair>>,
        listener: TcpListener,
        backend: SocketAddr,
    }

    impl Forwarder {
        fn push(&mut self, entry: io_uring::squeue::Entry) -> std::io::Result<()> {
            #[allow(unsafe_code)]
            // SAFETY: every entry pushed here refers to a socket and a buffer of a pair in
            // `self.pairs` (or to the listener, which lives as long as `self`). A pair is
            // dropped only once its `in_flight` count is back to 0, that is after the kernel
            // completed every entry that refers to it; its buffers are boxed, so they do not
            // move when `self.pairs` grows.
            unsafe {
                queue(&mut self.ring, &entry)
            }
        }

        fn arm_listener(&mut self) -> std::io::Result<()> {
            let poll = listener_poll(&self.listener, LISTENER);
            self.push(poll)
        }

        /// Submits a receive on `dir`'s source socket into its empty buffer.
        fn recv(&mut self, idx: usize, dir: usize) -> std::io::Result<()> {
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            let half = &mut p.halves[dir];
            half.len = 0;
            half.sent = 0;
            let e = opcode::Recv::new(
                types::Fd(p.sockets[dir].as_raw_fd()),
                half.buf.as_mut_ptr(),
                BUF as u32,
            )
            .build()
            .user_data(user_data(idx, dir, Op::Recv));
            p.in_flight += 1;
            self.push(e)
        }

        /// Submits a send of what `dir`'s buffer holds unsent, to the other socket.
        fn send(&mut self, idx: usize, dir: usize) -> std::io::Result<()> {
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            let half = &p.halves[dir];
            let rest = &half.buf[half.sent..half.len];
            let e = opcode::Send::new(
                types::Fd(p.sockets[1 - dir].as_raw_fd()),
                rest.as_ptr(),
                rest.len() as u32,
            )
            .build()
            .user_data(user_data(idx, dir, Op::Send));
            p.in_flight += 1;
            self.push(e)
        }

        fn accept(&mut self) -> std::io::Result<()> {
            loop {
                let Some([client, server]) = accept_pair(&self.listener, self.backend)? else {
                    return self.arm_listener();
                };
                let half = || Half {
                    buf: vec![0u8; BUF].into_boxed_slice(),
                    len: 0,
                    sent: 0,
                };
                let pair = Pair {
                    sockets: [client, server],
                    halves: [half(), half()],
                    in_flight: 0,
                    closing: false,
                };
                let idx = match self.pairs.iter().position(Option::is_none) {
                    Some(i) => {
                        self.pairs[i] = Some(pair);
                        i
                    }
                    None => {
                        self.pairs.push(Some(pair));
                        self.pairs.len() - 1
                    }
                };
                self.recv(idx, 0)?;
                self.recv(idx, 1)?;
            }
        }

        /// One completion: `res` is the operation's result (bytes, or a negated errno).
        fn complete(&mut self, ud: u64, res: i32) -> std::io::Result<()> {
            if ud == LISTENER {
                return self.accept();
            }
            let (idx, dir, op) = decode(ud);
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            p.in_flight -= 1;
            if res <= 0 || p.closing {
                // End of stream or an error: close both ways; the other operations complete
                // with an error, and the pair goes once none is left.
                if !p.closing {
                    p.closing = true;
                    for s in &p.sockets {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                }
                if p.in_flight == 0 {
                    self.pairs[idx] = None;
                }
                return Ok(());
            }
            let half = &mut p.halves[dir];
            match op {
                Op::Recv => {
                    half.len = res as usize;
                    self.send(idx, dir)
                }
                Op::Send => {
                    half.sent += res as usize;
                    if half.sent < half.len {
                        self.send(idx, dir)
                    } else {
                        self.recv(idx, dir)
                    }
                }
            }
        }
    }

    pub fn serve(listen: SocketAddr, backend: SocketAddr, defer: bool) -> anyhow::Result<()> {
        let mut builder = IoUring::builder();
        if defer {
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun();
        }
        let ring = builder.build(1024)?;
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let mut f = Forwarder {
            ring,
            pairs: Vec::new(),
            listener,
            backend,
        };
        f.arm_listener()?;
        let mut done: Vec<(u64, i32)> = Vec::with_capacity(1024);
        loop {
            f.ring.submit_and_wait(1)?;
            done.clear();
            done.extend(f.ring.completion().map(|c| (c.user_data(), c.result())));
            for &(ud, res) in &done {
                f.complete(ud, res)?;
            }
        }
    }
}

mod multishot {
    use super::*;
    use io_uring::{IoUring, cqueue, opcode, types};
    use std::collections::VecDeque;

    const BUF: usize = 16 * 1024;
    /// Buffers in the pool the kernel picks receives' buffers from (16 MiB).
    const POOL: u16 = 1024;
    const GROUP: u16 = 0;
    /// Registered file slots (two per pair).
    const FILES: u32 = 4096;
    const LISTENER: u64 = u64::MAX;
    const PROVIDE: u64 = u64::MAX - 1;

    /// One direction of a pair: buffers received from one socket, sent in order to the other.
    #[derive(Default)]
    struct Half {
        /// Pool buffers and their lengths, oldest first; the first is being sent.
        queue: VecDeque<(u16, usize)>,
        /// Bytes of the first buffer sent.
        sent: usize,
        sending: bool,
        /// The multishot receive is armed.
        receiving: bool,
    }

    struct Pair {
        sockets: [TcpStream; 2],
        halves: [Half; 2],
        in_flight: u32,
        closing: bool,
    }

    /// The registered file slot of a pair's socket.
    fn file(pair: usize, dir: usize) -> types::Fixed {
        types::Fixed((pair * 2 + dir) as u32)
    }

    struct Forwarder {
        ring: IoUring,
        pool: Box<[u8]>,
        pairs: Vec<Option<Pair>>,
        listener: TcpListener,
        backend: SocketAddr,
    }

    impl Forwarder {
        fn push(&mut self, entry: io_uring::squeue::Entry) -> std::io::Result<()> {
            #[allow(unsafe_code)]
            // SAFETY: every entry refers to a registered socket of a pair in `self.pairs` (a
            // pair and its file slots go only once its `in_flight` count is 0), to the
            // listener (as long-lived as `self`), or to the pool, which is boxed, never freed
            // while the ring lives, and whose buffers are handed to the kernel only when no
            // send reads them.
            unsafe {
                queue(&mut self.ring, &entry)
            }
        }

        fn give_back(&mut self, bid: u16) -> std::io::Result<()> {
            let at = usize::from(bid) * BUF;
            let addr = self.pool[at..at + BUF].as_mut_ptr();
            let e = opcode::ProvideBuffers::new(addr, BUF as i32, 1, GROUP, bid)
                .build()
                .user_data(PROVIDE);
            self.push(e)
        }

        fn arm_listener(&mut self) -> std::io::Result<()> {
            let poll = listener_poll(&self.listener, LISTENER);
            self.push(poll)
        }

        fn recv(&mut self, idx: usize, dir: usize) -> std::io::Result<()> {
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            p.halves[dir].receiving = true;
            p.in_flight += 1;
            let e = opcode::RecvMulti::new(file(idx, dir), GROUP)
                .build()
                .user_data(user_data(idx, dir, Op::Recv));
            self.push(e)
        }

        /// Sends the rest of `dir`'s oldest buffer to the other socket.
        fn send(&mut self, idx: usize, dir: usize) -> std::io::Result<()> {
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            let half = &mut p.halves[dir];
            let Some(&(bid, len)) = half.queue.front() else {
                return Ok(());
            };
            half.sending = true;
            p.in_flight += 1;
            let at = usize::from(bid) * BUF + half.sent;
            let rest = &self.pool[at..at + len - half.sent];
            let e = opcode::Send::new(file(idx, 1 - dir), rest.as_ptr(), rest.len() as u32)
                .build()
                .user_data(user_data(idx, dir, Op::Send));
            self.push(e)
        }

        fn accept(&mut self) -> std::io::Result<()> {
            loop {
                let Some([client, server]) = accept_pair(&self.listener, self.backend)? else {
                    return self.arm_listener();
                };
                let idx = match self.pairs.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.pairs.push(None);
                        self.pairs.len() - 1
                    }
                };
                if idx * 2 + 1 >= FILES as usize {
                    continue;
                }
                let fds = [client.as_raw_fd(), server.as_raw_fd()];
                self.ring
                    .submitter()
                    .register_files_update((idx * 2) as u32, &fds)?;
                self.pairs[idx] = Some(Pair {
                    sockets: [client, server],
                    halves: [Half::default(), Half::default()],
                    in_flight: 0,
                    closing: false,
                });
                self.recv(idx, 0)?;
                self.recv(idx, 1)?;
            }
        }

        fn close(&mut self, idx: usize) -> std::io::Result<()> {
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                return Ok(());
            };
            if !p.closing {
                p.closing = true;
                for s in &p.sockets {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
            }
            if p.in_flight > 0 {
                return Ok(());
            }
            let mut held = Vec::new();
            for half in &mut p.halves {
                held.extend(half.queue.drain(..).map(|(bid, _)| bid));
            }
            self.ring
                .submitter()
                .register_files_update((idx * 2) as u32, &[-1, -1])?;
            self.pairs[idx] = None;
            for bid in held {
                self.give_back(bid)?;
            }
            Ok(())
        }

        fn complete(&mut self, ud: u64, res: i32, flags: u32) -> std::io::Result<()> {
            if ud == PROVIDE {
                return Ok(());
            }
            if ud == LISTENER {
                return self.accept();
            }
            let (idx, dir, op) = decode(ud);
            let picked = cqueue::buffer_select(flags);
            let more = cqueue::more(flags);
            let Some(p) = self.pairs.get_mut(idx).and_then(Option::as_mut) else {
                if let Some(bid) = picked {
                    self.give_back(bid)?;
                }
                return Ok(());
            };
            let half = &mut p.halves[dir];
            match op {
                Op::Recv => {
                    if !more {
                        p.in_flight -= 1;
                        half.receiving = false;
                    }
                    if res > 0
                        && let Some(bid) = picked
                        && !p.closing
                    {
                        half.queue.push_back((bid, res as usize));
                        let start = !half.sending;
                        let rearm = !more;
                        if start {
                            self.send(idx, dir)?;
                        }
                        if rearm {
                            self.recv(idx, dir)?;
                        }
                        return Ok(());
                    }
                    let again = res == -105 && !more && !p.closing;
                    if let Some(bid) = picked {
                        self.give_back(bid)?;
                    }
                    if again {
                        // ENOBUFS: the pool is empty for now; receive again.
                        return self.recv(idx, dir);
                    }
                    if res <= 0 {
                        return self.close(idx);
                    }
                    Ok(())
                }
                Op::Send => {
                    p.in_flight -= 1;
                    half.sending = false;
                    if res <= 0 || p.closing {
                        return self.close(idx);
                    }
                    half.sent += res as usize;
                    let Some(&(bid, len)) = half.queue.front() else {
                        return Ok(());
                    };
                    if half.sent < len {
                        return self.send(idx, dir);
                    }
                    half.queue.pop_front();
                    half.sent = 0;
                    let next = !half.queue.is_empty();
                    self.give_back(bid)?;
                    if next {
                        self.send(idx, dir)?;
                    }
                    Ok(())
                }
            }
        }
    }

    pub fn serve(listen: SocketAddr, backend: SocketAddr) -> anyhow::Result<()> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(1024)?;
        ring.submitter().register_files_sparse(FILES)?;
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let mut f = Forwarder {
            ring,
            pool: vec![0u8; usize::from(POOL) * BUF].into_boxed_slice(),
            pairs: Vec::new(),
            listener,
            backend,
        };
        let addr = f.pool.as_mut_ptr();
        let e = opcode::ProvideBuffers::new(addr, BUF as i32, POOL, GROUP, 0)
            .build()
            .user_data(PROVIDE);
        f.push(e)?;
        f.arm_listener()?;
        let mut done: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            f.ring.submit_and_wait(1)?;
            done.clear();
            done.extend(
                f.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(ud, res, flags) in &done {
                f.complete(ud, res, flags)?;
            }
        }
    }
}
