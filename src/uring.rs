//! io_uring socket I/O (`io = "uring"`): plaintext TCP streams, the clients' and the nodes',
//! whose receives and sends go through one io_uring ring per worker thread instead of a
//! readiness wake and a system call each. A worker's ring is driven by one task on that
//! worker's tokio runtime: the ring's completions signal an eventfd in the runtime's reactor,
//! the task reaps them and wakes the sessions and connections they belong to, and every
//! receive and send those queue in one scheduler turn leave in one `io_uring_enter` when the
//! task runs next. A stream keeps one receive and one send in flight at most, and is a
//! registered file of its ring while the ring's table has room; [`UringTcp`]
//! is an `AsyncRead` and `AsyncWrite` like tokio's `TcpStream`, with writes buffered as a TLS
//! stream's are (up to 16 KiB of a write is taken into the stream's send buffer and is on its
//! way; the next write waits for it). Receives pick a buffer from a pool per ring that the
//! kernel is given, so an idle stream holds none; a stream whose receive finds the pool empty
//! and at its most receives into a buffer of its own.
//!
//! The ring owns every buffer and socket an operation in flight refers to: a stream dropped
//! with operations in flight leaves them to the driver, which closes the socket once the
//! kernel has completed every one. This module must never let the kernel touch memory that was
//! freed or moved, never give a socket's number back to the system while an operation on it
//! may not have been submitted yet, and never be used from another thread than the one whose
//! ring holds the stream (a stream polled elsewhere answers an error).

#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, opcode, types};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Submission queue entries per ring (the completion queue has twice as many; the kernel keeps
/// completions beyond that rather than drop them).
const ENTRIES: u32 = 1024;

/// Bytes one receive reads at most: the size of a buffer of the pool receives pick from.
const RECV_BUF: usize = 16 * 1024;

/// Buffers the pool starts with, and adds each time receives find it empty (up to
/// [`POOL_MAX`]): 4 MiB at first.
const POOL_STEP: u16 = 256;

/// Most buffers in a pool (64 MiB; one chunk in unit tests, which fill it).
#[cfg(not(test))]
const POOL_MAX: u16 = 4096;
#[cfg(test)]
const POOL_MAX: u16 = POOL_STEP;

/// The buffer group receives pick from (one pool per ring).
const GROUP: u16 = 0;

/// The user data of a buffer handed (back) to the pool: no stream's.
const PROVIDE: u64 = u64::MAX;

/// `ENOBUFS`: a receive found no buffer in the pool.
const ENOBUFS: i32 = 105;

/// Registered file slots per ring at most (fewer when the process may open fewer files).
const FILES_MAX: u64 = 65_536;

/// Bytes one send takes at most from a write: what a write leaves unsent stays in the
/// session's output buffer, where the output buffer limit and the memory budget count it, as
/// on epoll (a larger send would hide up to this much from them).
const SEND_MAX: usize = 16 * 1024;

/// A send buffer larger than this is freed once sent.
const SEND_KEEP: usize = 16 * 1024;

/// Whether streams are made on io_uring (decided at start, [`enable`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static DRIVER: RefCell<Option<Driver>> = const { RefCell::new(None) };
    /// Streams dropped while the driver was busy, released at its next turn.
    static DEFERRED: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
}

/// Turns io_uring on for the process when the kernel allows it: a ring is made and dropped as a
/// probe. Returns why not when it cannot be (an old kernel, `io_uring_disabled`, a container's
/// seccomp profile); epoll serves then.
pub fn enable() -> io::Result<()> {
    IoUring::new(8)?;
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Whether new TCP streams go through io_uring.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Which operation of a stream an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Recv = 0,
    Send = 1,
}

/// The user data of an entry: the stream's slot, its generation, the operation.
fn user_data(slot: u32, generation: u32, op: Op) -> u64 {
    (u64::from(slot) << 32) | (u64::from(generation & 0x7fff_ffff) << 1) | op as u64
}

fn decode(ud: u64) -> (u32, u32, Op) {
    let op = if ud & 1 == 1 { Op::Send } else { Op::Recv };
    ((ud >> 32) as u32, ((ud >> 1) & 0x7fff_ffff) as u32, op)
}

/// One stream's state, owned by its thread's driver.
#[derive(Debug)]
struct Socket {
    /// The socket: closed only when the slot is freed, after every operation completed.
    fd: OwnedFd,
    /// Its slot in the ring's registered files, which entries name instead of `fd` (the kernel
    /// then looks no descriptor up per operation).
    fixed: Option<u32>,
    /// Received bytes not yet read: bytes `rpos..rlen` of the buffer `held` says (an idle
    /// stream holds none: a receive in flight has no buffer until data arrives).
    held: Option<Held>,
    /// A buffer of the stream's own, for a receive when the pool is at its most and empty (so
    /// that streams that hold the pool's buffers unread never stall the others): the kernel
    /// writes into it while that receive is in flight; it is freed once read.
    own: Option<Box<[u8]>>,
    rpos: usize,
    rlen: usize,
    /// A receive found the pool empty: it is sent again when a buffer comes back.
    starved: bool,
    recv_in_flight: bool,
    /// The end of the stream, or the error a receive ended with.
    read_end: Option<io::ErrorKind>,
    eof: bool,
    read_waker: Option<Waker>,
    /// Bytes being sent: `wbuf[wsent..]`. The kernel reads `wbuf` while a send is in flight;
    /// nothing else touches it then.
    wbuf: Vec<u8>,
    wsent: usize,
    send_in_flight: bool,
    write_error: Option<io::ErrorKind>,
    write_waker: Option<Waker>,
    /// The stream was dropped: the slot goes once no operation is in flight.
    dropped: bool,
}

/// Where a stream's received bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// Buffer `b` of the pool.
    Pool(u16),
    /// The stream's own buffer.
    Own,
}

/// An entry on a socket: named by its registered file slot when it has one, else by its
/// descriptor (`$make` is called with either).
macro_rules! on_socket {
    ($s:expr, |$t:ident| $make:expr) => {
        match $s.fixed {
            Some(i) => {
                let $t = types::Fixed(i);
                $make
            }
            None => {
                let $t = types::Fd($s.fd.as_raw_fd());
                $make
            }
        }
    };
}

impl Socket {
    fn idle(&self) -> bool {
        !self.recv_in_flight && !self.send_in_flight
    }

    /// Whether a write may start: no send is in flight (else the task is woken when it
    /// completes), and none ended with an error.
    fn poll_sent(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if let Some(kind) = self.write_error {
            return Poll::Ready(Err(io::Error::from(kind)));
        }
        if self.send_in_flight {
            register(&mut self.write_waker, cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    socket: Option<Socket>,
}

/// Buffer `bid` of a pool.
fn pool_buffer(pool: &mut [Box<[u8]>], bid: u16) -> Option<&mut [u8]> {
    let chunk = pool.get_mut(usize::from(bid / POOL_STEP))?;
    let at = usize::from(bid % POOL_STEP) * RECV_BUF;
    chunk.get_mut(at..at + RECV_BUF)
}

/// Keeps `cx`'s waker in `waker` (unless the same task's is there already).
fn register(waker: &mut Option<Waker>, cx: &Context<'_>) {
    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *waker = Some(cx.waker().clone());
    }
}

/// Runs a stream's poll on this thread's driver; a stream off its worker gets an error.
fn poll_driver<T>(f: impl FnOnce(&mut Driver) -> Poll<io::Result<T>>) -> Poll<io::Result<T>> {
    with_driver(f).unwrap_or_else(|e| Poll::Ready(Err(e)))
}

/// A thread's ring and the streams on it.
struct Driver {
    ring: IoUring,
    /// The receive buffers, [`POOL_STEP`] of [`RECV_BUF`] bytes per chunk, handed to the kernel
    /// (`PROVIDE_BUFFERS`): buffer `b` is in chunk `b / POOL_STEP`. A chunk is never freed
    /// while the ring lives, and a boxed chunk does not move when this grows.
    pool: Vec<Box<[u8]>>,
    /// Streams whose receive found the pool empty.
    starved: Vec<(u32, u32)>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Entries were queued since the last `io_uring_enter`.
    unsubmitted: bool,
    /// The driver task, to wake when entries are queued.
    task: Option<Waker>,
    /// Operations the kernel has not completed.
    in_flight: usize,
    /// Registered file slots the ring has (0: none, entries name descriptors), how many were
    /// handed out, and those free again.
    files: u32,
    files_used: u32,
    files_free: Vec<u32>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The ring is torn down after this thread is gone and may still be ending
            // operations that write into these buffers: they are never freed.
            std::mem::forget(std::mem::take(&mut self.slots));
            std::mem::forget(std::mem::take(&mut self.pool));
        }
    }
}

impl Driver {
    fn new() -> io::Result<(Driver, OwnedFd)> {
        // One thread submits (`SINGLE_ISSUER`), and the kernel need not interrupt it to post
        // completions while it runs (`COOP_TASKRUN`): it does when the thread next enters the
        // kernel, and a sleeping thread is woken as before.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(ENTRIES)?;
        let efd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        ring.submitter().register_eventfd(efd.as_raw_fd())?;
        // As many registered files as the process may open (the kernel refuses more), up to
        // FILES_MAX; none, and descriptors in every entry, where the kernel refuses the table.
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(FILES_MAX)
            .min(FILES_MAX) as u32;
        let files = match ring.submitter().register_files_sparse(limit) {
            Ok(()) => limit,
            Err(e) => {
                tracing::debug!(error = %e, "io_uring: no registered files");
                0
            }
        };
        Ok((
            Driver {
                ring,
                pool: Vec::new(),
                starved: Vec::new(),
                slots: Vec::new(),
                free: Vec::new(),
                unsubmitted: false,
                task: None,
                in_flight: 0,
                files,
                files_used: 0,
                files_free: Vec::new(),
            },
            efd,
        ))
    }

    fn socket(&mut self, slot: u32, generation: u32) -> Option<&mut Socket> {
        self.slots
            .get_mut(slot as usize)
            .filter(|s| s.generation == generation)
            .and_then(|s| s.socket.as_mut())
    }

    /// Queues `entry`. The caller has made sure that what it refers to stays put until it
    /// completes (see the safety comment).
    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry queued here is one of: a receive on a `Socket`'s descriptor
            // into a buffer the kernel picks from the pool, or into the `Socket`'s `own`
            // buffer (boxed, and freed only once that receive completed and was read); a
            // send from a `Socket`'s `wbuf`; a
            // buffer of the pool handed to the kernel. A `Socket` leaves its slot only when it
            // has no operation in flight (`free_if_done`); its `wbuf` is refilled only when no
            // send is in flight, and a vector's heap buffer does not move when `self.slots`
            // grows. The pool's chunks are boxed and never freed while the ring lives, and a
            // buffer is read by the stream only after the kernel gave it back in a receive's
            // completion, and handed to the kernel again only after it was read. A descriptor
            // is an `OwnedFd` in its `Socket`, so it is not closed (and its number not reused)
            // before the entry completes; a registered file slot holds its socket until
            // `free_if_done` empties it, when nothing naming it is in flight (an entry not yet
            // submitted counts), so no entry reaches a socket that took the slot later. If the driver is dropped with operations in flight,
            // its buffers are leaked, never freed (`Drop for Driver`).
            let queued = unsafe { self.ring.submission().push(&entry) };
            if queued.is_ok() {
                self.in_flight += 1;
                self.unsubmitted = true;
                if let Some(t) = self.task.take() {
                    t.wake();
                }
                return Ok(());
            }
            // The submission queue is full: hand it to the kernel now.
            self.ring.submit()?;
        }
    }

    fn submit_recv(&mut self, slot: u32, generation: u32) -> io::Result<()> {
        let Some(s) = self.socket(slot, generation) else {
            return Err(gone());
        };
        s.recv_in_flight = true;
        s.starved = false;
        let e = on_socket!(s, |t| opcode::Recv::new(
            t,
            std::ptr::null_mut(),
            RECV_BUF as u32
        )
        .buf_group(GROUP)
        .build())
        .flags(io_uring::squeue::Flags::BUFFER_SELECT)
        .user_data(user_data(slot, generation, Op::Recv));
        self.push(e)
    }

    /// Whether the pool has all the buffers it may have.
    fn pool_full(&self) -> bool {
        self.pool.len() * usize::from(POOL_STEP) >= usize::from(POOL_MAX)
    }

    /// A receive into a buffer of the stream's own (the pool is at its most and empty).
    fn submit_recv_own(&mut self, slot: u32, generation: u32) -> io::Result<()> {
        let Some(s) = self.socket(slot, generation) else {
            return Err(gone());
        };
        s.recv_in_flight = true;
        s.starved = false;
        let own = s
            .own
            .get_or_insert_with(|| vec![0u8; RECV_BUF].into_boxed_slice())
            .as_mut_ptr();
        let e = on_socket!(s, |t| opcode::Recv::new(t, own, RECV_BUF as u32).build())
            .user_data(user_data(slot, generation, Op::Recv));
        self.push(e)
    }

    /// Copies into `buf` what the stream received and has not read; once it is read whole,
    /// its buffer goes back (to the pool, or freed: no receive is in flight, so the kernel no
    /// longer writes to it) and the next receive is sent, to be on its way while this is
    /// parsed. `None` when the stream holds nothing received.
    fn read_held(&mut self, slot: u32, generation: u32, buf: &mut ReadBuf<'_>) -> Option<()> {
        let s = self
            .slots
            .get_mut(slot as usize)
            .filter(|e| e.generation == generation)?
            .socket
            .as_mut()?;
        let held = s.held?;
        let (from, n) = (s.rpos, (s.rlen - s.rpos).min(buf.remaining()));
        let source = match held {
            Held::Own => s.own.as_deref_mut(),
            Held::Pool(bid) => pool_buffer(&mut self.pool, bid),
        };
        if let Some(bytes) = source.and_then(|b| b.get(from..from + n)) {
            buf.put_slice(bytes);
        }
        s.rpos += n;
        if s.rpos < s.rlen {
            return Some(());
        }
        s.held = None;
        if held == Held::Own {
            s.own = None;
        }
        let more = !s.eof && s.read_end.is_none();
        if let Held::Pool(bid) = held {
            self.give_back(bid);
        }
        if more {
            let _ = self.submit_recv(slot, generation);
        }
        Some(())
    }

    /// Hands buffer `bid` back to the kernel, and sends again the receives that found none.
    fn give_back(&mut self, bid: u16) {
        let Some(addr) = pool_buffer(&mut self.pool, bid).map(|b| b.as_mut_ptr()) else {
            return;
        };
        let e = opcode::ProvideBuffers::new(addr, RECV_BUF as i32, 1, GROUP, bid)
            .build()
            .user_data(PROVIDE);
        if self.push(e).is_ok() {
            self.feed_starved();
        }
    }

    /// A new chunk of buffers for the pool, up to [`POOL_MAX`].
    fn grow_pool(&mut self) -> io::Result<()> {
        let have = self.pool.len() as u16 * POOL_STEP;
        if have >= POOL_MAX {
            return Ok(());
        }
        let mut chunk = vec![0u8; usize::from(POOL_STEP) * RECV_BUF].into_boxed_slice();
        let addr = chunk.as_mut_ptr();
        self.pool.push(chunk);
        let e = opcode::ProvideBuffers::new(addr, RECV_BUF as i32, POOL_STEP, GROUP, have)
            .build()
            .user_data(PROVIDE);
        self.push(e)?;
        self.feed_starved();
        Ok(())
    }

    fn feed_starved(&mut self) {
        for (slot, generation) in std::mem::take(&mut self.starved) {
            let live = self
                .socket(slot, generation)
                .is_some_and(|s| s.starved && !s.dropped && !s.recv_in_flight);
            if live {
                let _ = self.submit_recv(slot, generation);
            }
        }
    }

    fn submit_send(&mut self, slot: u32, generation: u32) -> io::Result<()> {
        let Some(s) = self.socket(slot, generation) else {
            return Err(gone());
        };
        let rest = s.wbuf.get(s.wsent..).unwrap_or_default();
        let (at, len) = (rest.as_ptr(), rest.len() as u32);
        let e = on_socket!(s, |t| opcode::Send::new(t, at, len).build()).user_data(user_data(
            slot,
            generation,
            Op::Send,
        ));
        s.send_in_flight = true;
        self.push(e)
    }

    /// Hands queued entries to the kernel, and reaps completions: the streams' states updated,
    /// their tasks woken.
    fn turn(&mut self) {
        let deferred: Vec<(u32, u32)> = DEFERRED
            .try_with(|q| std::mem::take(&mut *q.borrow_mut()))
            .unwrap_or_default();
        for (slot, generation) in deferred {
            self.release(slot, generation);
        }
        if self.unsubmitted || self.ring.submission().cq_overflow() {
            self.unsubmitted = false;
            if let Err(e) = self.ring.submit() {
                tracing::warn!(error = %e, "io_uring submission failed");
            }
        }
        let mut done: smallvec::SmallVec<[(u64, i32, u32); 64]> = smallvec::SmallVec::new();
        loop {
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .take(64)
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if done.is_empty() {
                return;
            }
            for &(ud, res, flags) in &done {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.complete(ud, res, flags);
            }
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        if ud == PROVIDE {
            if res < 0 {
                tracing::warn!(errno = -res, "io_uring: buffers not given to the kernel");
            }
            return;
        }
        let (slot, generation, op) = decode(ud);
        let picked = io_uring::cqueue::buffer_select(flags);
        let pool_full = self.pool_full();
        let Some(s) = self.socket(slot, generation) else {
            // Cannot be: a slot is freed only after its operations completed. A buffer picked
            // goes back all the same.
            if let Some(bid) = picked {
                self.give_back(bid);
            }
            return;
        };
        match op {
            Op::Recv => {
                s.recv_in_flight = false;
                if res == -ENOBUFS && !s.dropped {
                    // The pool is empty: it grows, and this receive goes again when it did or
                    // a buffer comes back; at its most, into a buffer of the stream's own.
                    if pool_full {
                        let _ = self.submit_recv_own(slot, generation);
                        return;
                    }
                    s.starved = true;
                    self.starved.push((slot, generation));
                    if let Err(e) = self.grow_pool() {
                        tracing::warn!(error = %e, "io_uring: the buffer pool cannot grow");
                    }
                    return;
                }
                let mut unused = None;
                if res > 0 && s.dropped {
                    unused = picked;
                } else if res > 0 {
                    s.held = match picked {
                        Some(bid) => Some(Held::Pool(bid)),
                        None => s.own.is_some().then_some(Held::Own),
                    };
                    s.rlen = res as usize;
                    s.rpos = 0;
                } else if res == 0 {
                    s.eof = true;
                } else if !s.dropped {
                    s.read_end = Some(io::Error::from_raw_os_error(-res).kind());
                }
                if let Some(w) = s.read_waker.take() {
                    w.wake();
                }
                if let Some(bid) = unused {
                    self.give_back(bid);
                }
            }
            Op::Send => {
                s.send_in_flight = false;
                if res < 0 {
                    s.write_error = Some(io::Error::from_raw_os_error(-res).kind());
                } else {
                    s.wsent += res as usize;
                    if s.wsent < s.wbuf.len() {
                        // A short send: the rest goes on, also after the stream was dropped
                        // (a socket closed with bytes unsent would have sent them too).
                        if self.submit_send(slot, generation).is_ok() {
                            return;
                        }
                        if let Some(s) = self.socket(slot, generation) {
                            s.write_error = Some(io::ErrorKind::BrokenPipe);
                        }
                    }
                }
                if let Some(s) = self.socket(slot, generation) {
                    if s.wbuf.capacity() > SEND_KEEP {
                        // A large reply's buffer is not kept for the next, small one.
                        s.wbuf = Vec::new();
                    }
                    if let Some(w) = s.write_waker.take() {
                        w.wake();
                    }
                }
            }
        }
        self.free_if_done(slot, generation);
    }

    /// A stream was dropped: its socket closes once its operations completed.
    fn release(&mut self, slot: u32, generation: u32) {
        let Some(s) = self.socket(slot, generation) else {
            return;
        };
        s.dropped = true;
        s.read_waker = None;
        s.write_waker = None;
        let held = s.held.take();
        if held == Some(Held::Own) {
            s.own = None;
        }
        if s.recv_in_flight {
            // A receive waits for data that may never come: the socket is shut for reading,
            // which ends it; a send in flight still completes.
            let _ = rustix::net::shutdown(&s.fd, rustix::net::Shutdown::Read);
        }
        if let Some(Held::Pool(bid)) = held {
            self.give_back(bid);
        }
        self.free_if_done(slot, generation);
    }

    /// Frees a dropped stream's slot once no operation of it is in flight (its socket closes).
    fn free_if_done(&mut self, slot: u32, generation: u32) {
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if entry.generation != generation
            || !entry.socket.as_ref().is_some_and(|s| s.dropped && s.idle())
        {
            return;
        }
        let fixed = entry.socket.take().and_then(|s| s.fixed);
        entry.generation = entry.generation.wrapping_add(1) & 0x7fff_ffff;
        self.free.push(slot);
        if let Some(i) = fixed {
            // The ring's reference to the socket goes too, or the socket would stay open.
            match self.ring.submitter().register_files_update(i, &[-1]) {
                Ok(_) => self.files_free.push(i),
                Err(e) => tracing::warn!(error = %e, "io_uring: a registered file not released"),
            }
        }
    }

    /// A registered file slot for `fd`, when the table has room (else entries name `fd`).
    fn register_file(&mut self, fd: &OwnedFd) -> Option<u32> {
        let i = match self.files_free.pop() {
            Some(i) => i,
            None if self.files_used < self.files => {
                self.files_used += 1;
                self.files_used - 1
            }
            None => return None,
        };
        match self
            .ring
            .submitter()
            .register_files_update(i, &[fd.as_raw_fd()])
        {
            Ok(_) => Some(i),
            Err(_) => {
                self.files_free.push(i);
                None
            }
        }
    }

    fn insert(&mut self, fd: OwnedFd) -> io::Result<(u32, u32)> {
        let fixed = self.register_file(&fd);
        let socket = Socket {
            fd,
            fixed,
            held: None,
            own: None,
            rpos: 0,
            rlen: 0,
            starved: false,
            recv_in_flight: false,
            read_end: None,
            eof: false,
            read_waker: None,
            wbuf: Vec::new(),
            wsent: 0,
            send_in_flight: false,
            write_error: None,
            write_waker: None,
            dropped: false,
        };
        let slot = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let entry = self.slots.get_mut(slot as usize).ok_or_else(gone)?;
        entry.socket = Some(socket);
        Ok((slot, entry.generation))
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "io_uring stream used off its worker",
    )
}

/// Runs `f` on this thread's driver; an error when this thread has none (a stream polled off
/// its worker) or it is busy (a call from inside the driver, which never happens on the
/// request path: see [`UringTcp`]'s `Drop`).
fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> io::Result<R> {
    DRIVER
        .try_with(|cell| {
            let mut d = cell.try_borrow_mut().map_err(|_| gone())?;
            d.as_mut().map(f).ok_or_else(gone)
        })
        .map_err(|_| gone())?
}

/// This thread's driver, made (and its task spawned on the current runtime) on first use.
fn ensure_driver() -> io::Result<()> {
    DRIVER.with(|cell| {
        let mut d = cell.try_borrow_mut().map_err(|_| gone())?;
        if d.is_none() {
            let (driver, efd) = Driver::new()?;
            // SAFETY: an `OwnedFd` is a valid, open descriptor that stays open, and is the
            // same descriptor on every `as_raw_fd`, for as long as it is owned, which the
            // `AsyncFd` does until it is dropped.
            let efd =
                unsafe { AsyncFd::register_with_interest(efd, tokio::io::Interest::READABLE) }
                    .map_err(io::Error::from)?;
            *d = Some(driver);
            if let Some(driver) = d.as_mut() {
                driver.grow_pool()?;
            }
            tokio::spawn(drive(efd));
        }
        Ok(())
    })
}

/// The driver task of a thread: reaps completions whenever the ring signals its eventfd, and
/// submits what streams queued whenever they wake it.
async fn drive(efd: AsyncFd<OwnedFd>) {
    std::future::poll_fn(|cx| {
        loop {
            DRIVER.with(|cell| {
                if let Some(d) = cell.borrow_mut().as_mut() {
                    d.task = Some(cx.waker().clone());
                    d.turn();
                }
            });
            match efd.poll_read_ready(cx) {
                Poll::Ready(Ok(mut ready)) => {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(efd.get_ref().as_fd(), &mut count);
                    ready.clear_ready();
                }
                Poll::Ready(Err(e)) => {
                    tracing::error!(error = %e, "io_uring driver stopped");
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
}

/// A connected TCP stream whose I/O goes through this thread's ring.
#[derive(Debug)]
pub struct UringTcp {
    slot: u32,
    generation: u32,
}

impl UringTcp {
    /// Moves a connected tokio stream onto this thread's ring (it leaves the reactor).
    pub fn from_tokio(s: tokio::net::TcpStream) -> io::Result<UringTcp> {
        let std = s.into_std()?;
        // The ring waits for data itself; a non-blocking socket would make it answer EAGAIN.
        std.set_nonblocking(false)?;
        let fd = OwnedFd::from(std);
        ensure_driver()?;
        let (slot, generation) = with_driver(|d| d.insert(fd))??;
        Ok(UringTcp { slot, generation })
    }
}

impl Drop for UringTcp {
    fn drop(&mut self) {
        let (slot, generation) = (self.slot, self.generation);
        if with_driver(|d| d.release(slot, generation)).is_err() {
            // Dropped from inside the driver (a task's future freed by a wake): released at
            // its next turn.
            let _ = DEFERRED.try_with(|q| q.borrow_mut().push((slot, generation)));
        }
    }
}

impl AsyncRead for UringTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let (slot, generation) = (self.slot, self.generation);
        poll_driver(|d| {
            if d.read_held(slot, generation, buf).is_some() {
                return Poll::Ready(Ok(()));
            }
            let Some(s) = d.socket(slot, generation) else {
                return Poll::Ready(Err(gone()));
            };
            if let Some(kind) = s.read_end {
                return Poll::Ready(Err(io::Error::from(kind)));
            }
            if s.eof {
                return Poll::Ready(Ok(()));
            }
            register(&mut s.read_waker, cx);
            if !s.recv_in_flight
                && let Err(e) = d.submit_recv(slot, generation)
            {
                return Poll::Ready(Err(e));
            }
            Poll::Pending
        })
    }
}

impl AsyncWrite for UringTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (slot, generation) = (self.slot, self.generation);
        poll_driver(|d| {
            let Some(s) = d.socket(slot, generation) else {
                return Poll::Ready(Err(gone()));
            };
            if let Err(e) = std::task::ready!(s.poll_sent(cx)) {
                return Poll::Ready(Err(e));
            }
            let n = data.len().min(SEND_MAX);
            s.wbuf.clear();
            s.wbuf.extend_from_slice(data.get(..n).unwrap_or_default());
            s.wsent = 0;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            Poll::Ready(d.submit_send(slot, generation).map(|()| n))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (slot, generation) = (self.slot, self.generation);
        poll_driver(|d| match d.socket(slot, generation) {
            Some(s) => s.poll_sent(cx),
            None => Poll::Ready(Err(gone())),
        })
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        let (slot, generation) = (self.slot, self.generation);
        poll_driver(|d| {
            Poll::Ready(match d.socket(slot, generation) {
                Some(s) => rustix::net::shutdown(&s.fd, rustix::net::Shutdown::Write)
                    .map_err(io::Error::from),
                None => Err(gone()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair on this thread: ours on the ring, the peer on tokio's reactor.
    async fn pair() -> (UringTcp, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        (
            UringTcp::from_tokio(ours.unwrap()).unwrap(),
            theirs.unwrap().0,
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn should_carry_bytes_both_ways_and_in_order() {
        if IoUring::new(8).is_err() {
            return; // a kernel without io_uring: epoll serves, nothing to test here
        }
        let (mut ours, mut theirs) = pair().await;
        // More than one receive and one send can hold, both ways.
        let big: Vec<u8> = (0..(3 * SEND_MAX + 17)).map(|i| (i % 251) as u8).collect();
        let (w, r) = tokio::join!(
            async {
                ours.write_all(&big).await.unwrap();
                ours.flush().await.unwrap();
            },
            async {
                let mut got = vec![0u8; big.len()];
                theirs.read_exact(&mut got).await.unwrap();
                got
            }
        );
        let () = w;
        assert!(r == big);
        theirs.write_all(b"pong").await.unwrap();
        let mut four = [0u8; 4];
        ours.read_exact(&mut four).await.unwrap();
        assert_eq!(&four, b"pong");
        // The peer's close is the end of the stream.
        drop(theirs);
        let mut rest = Vec::new();
        assert_eq!(ours.read_to_end(&mut rest).await.unwrap(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn should_receive_into_a_buffer_of_its_own_when_the_pool_is_held() {
        if IoUring::new(8).is_err() {
            return;
        }
        let mut pairs = Vec::new();
        for _ in 0..usize::from(POOL_MAX) + 20 {
            pairs.push(pair().await);
        }
        // A receive in flight on every stream, then data for each, read by none: the pool's
        // buffers are all held, and the last streams' receives find it empty.
        for (ours, _) in &mut pairs {
            let mut b = [0u8; 8];
            let polled = tokio::time::timeout(std::time::Duration::ZERO, ours.read(&mut b));
            assert!(polled.await.is_err());
        }
        for (i, (_, theirs)) in pairs.iter_mut().enumerate() {
            theirs.write_all(format!("m{i}").as_bytes()).await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let own = with_driver(|d| {
            d.slots
                .iter()
                .filter(|s| s.socket.as_ref().is_some_and(|s| s.held == Some(Held::Own)))
                .count()
        })
        .unwrap();
        assert!(own > 0, "no stream received into a buffer of its own");
        // Every stream reads what its peer sent.
        for (i, (ours, _)) in pairs.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            let n = ours.read(&mut b).await.unwrap();
            assert_eq!(&b[..n], format!("m{i}").as_bytes());
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn should_close_a_dropped_stream_once_its_operations_complete() {
        if IoUring::new(8).is_err() {
            return;
        }
        let (mut ours, mut theirs) = pair().await;
        // A receive in flight (nothing to read) and a reply on its way when the stream goes.
        let mut one = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), ours.read(&mut one));
        assert!(read.await.is_err(), "nothing was sent");
        ours.write_all(b"last words").await.unwrap();
        let fixed = with_driver(|d| d.socket(ours.slot, ours.generation).and_then(|s| s.fixed));
        let fixed = fixed.unwrap().expect("the socket is a registered file");
        drop(ours);
        // The peer gets every byte, then the end of the stream: the socket was closed.
        let mut got = Vec::new();
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            theirs.read_to_end(&mut got),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(&got[..n], b"last words");
        let freed = with_driver(|d| d.slots.iter().all(|s| s.socket.is_none())).unwrap();
        assert!(freed, "the slot is free again");
        // Its registered file slot too: the peer saw the end only because the ring let go.
        let released = with_driver(|d| d.files_free.contains(&fixed)).unwrap();
        assert!(released, "the registered file slot is free again");
    }

    #[test]
    fn should_give_back_the_slot_generation_and_operation_of_an_entry() {
        for (slot, generation, op) in [
            (0, 0, Op::Recv),
            (7, 1, Op::Send),
            (u32::MAX, 0x7fff_ffff, Op::Recv),
        ] {
            assert_eq!(
                decode(user_data(slot, generation, op)),
                (slot, generation, op)
            );
        }
    }
}
