//! The read and write buffers a worker thread lends its sessions, one poll at a time, so that an
//! idle client holds no buffer of its own.
//!
//! A session borrows the thread's spare read buffer when its own is empty at the start of a
//! poll and gives it back when the poll leaves it empty again (every request parsed); the
//! same for the output buffer once every reply is written. At pipeline 1 one pair of buffers
//! serves every session of the worker; only a session holding a partial request or replies a
//! slow client has not read keeps buffers of its own. Requests stay zero-copy: a request is a
//! slice of the buffer it was read into, which is reference-counted, so a lent buffer that
//! still backs requests in flight is simply not reused in place (`reserve` moves to a new
//! allocation) and is freed when the last of them is.
//!
//! The list a session parses a read's requests into is lent the same way: it is always empty
//! once they are dispatched.
//!
//! A buffer that grew past [`KEEP_BYTES`] (a large request or a burst of replies) is freed
//! instead of kept, so a burst's memory goes back to the allocator once it is over. This module
//! must never hand out a buffer holding bytes, nor keep more than one spare of each kind per
//! thread.

use std::cell::Cell;

use bytes::BytesMut;

use crate::protocol::Request;

/// Largest buffer kept as a spare; larger ones are freed when they empty.
pub const KEEP_BYTES: usize = 256 * 1024;

thread_local! {
    static SPARE_READ: Cell<Option<BytesMut>> = const { Cell::new(None) };
    static SPARE_WRITE: Cell<Option<BytesMut>> = const { Cell::new(None) };
    static SPARE_BATCH: Cell<Vec<Request>> = const { Cell::new(Vec::new()) };
}

/// Requests parsed together but not dispatched yet kept beyond this are freed.
const KEEP_BATCH: usize = 1024;

/// The thread's list for the requests of one read (empty; with room when a session used it).
#[inline]
pub fn take_batch() -> Vec<Request> {
    SPARE_BATCH.with(Cell::take)
}

/// Gives the list back once its requests are dispatched; a list that still holds requests, or
/// grew past [`KEEP_BATCH`], is freed instead.
#[inline]
pub fn give_batch(batch: Vec<Request>) {
    if batch.is_empty() && batch.capacity() <= KEEP_BATCH {
        SPARE_BATCH.with(|c| c.set(batch));
    }
}

/// Which of the thread's spares.
#[derive(Debug, Clone, Copy)]
pub enum Spare {
    Read,
    Write,
}

impl Spare {
    fn with<R>(self, f: impl FnOnce(&Cell<Option<BytesMut>>) -> R) -> R {
        match self {
            Spare::Read => SPARE_READ.with(f),
            Spare::Write => SPARE_WRITE.with(f),
        }
    }
}

/// Gives `buf` the thread's spare when it holds no memory of its own (nothing when there is
/// no spare: the buffer then allocates when it is first written).
#[inline]
pub fn borrow(kind: Spare, buf: &mut BytesMut) {
    if buf.capacity() == 0
        && let Some(spare) = kind.with(Cell::take)
    {
        *buf = spare;
    }
}

/// Takes `buf`'s memory back as the thread's spare when it is empty, leaving it with none; a
/// buffer past [`KEEP_BYTES`] is freed instead, and so is the spare it replaces.
#[inline]
pub fn give_back(kind: Spare, buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mine = std::mem::take(buf);
    if mine.capacity() <= KEEP_BYTES {
        kind.with(|c| {
            let old = c.replace(Some(mine));
            // One spare at most: a second one (another session's) is freed here.
            drop(old);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn should_lend_one_spare_and_take_back_only_empty_buffers() {
        let mut a = BytesMut::with_capacity(4096);
        give_back(Spare::Read, &mut a);
        assert_eq!(a.capacity(), 0, "an empty buffer gives its memory back");
        let mut b = BytesMut::new();
        borrow(Spare::Read, &mut b);
        assert!(b.capacity() >= 4096, "the spare is lent");
        let mut c = BytesMut::new();
        borrow(Spare::Read, &mut c);
        assert_eq!(c.capacity(), 0, "one spare, lent once");
        b.put_slice(b"partial");
        give_back(Spare::Read, &mut b);
        assert_eq!(
            &b[..],
            b"partial",
            "a buffer with bytes stays with its session"
        );
        let mut w = BytesMut::new();
        borrow(Spare::Write, &mut w);
        assert_eq!(w.capacity(), 0, "read and write spares are apart");
    }

    #[test]
    fn should_lend_the_request_list_only_when_empty() {
        let mut b = take_batch();
        b.reserve(8);
        give_batch(b);
        let mut b = take_batch();
        assert!(b.capacity() >= 8, "the list's room is kept");
        b.push(Request::from_args(&["PING"]));
        give_batch(b);
        assert_eq!(
            take_batch().capacity(),
            0,
            "a list holding requests is not kept"
        );
    }

    #[test]
    fn should_free_a_buffer_that_grew_past_the_bound() {
        let mut big = BytesMut::with_capacity(KEEP_BYTES * 2);
        give_back(Spare::Write, &mut big);
        assert_eq!(big.capacity(), 0);
        let mut next = BytesMut::new();
        borrow(Spare::Write, &mut next);
        assert_eq!(next.capacity(), 0, "not kept as a spare");
    }

    #[test]
    fn should_never_lend_to_a_buffer_that_has_memory() {
        let mut a = BytesMut::with_capacity(64);
        give_back(Spare::Read, &mut a);
        let mut own = BytesMut::with_capacity(16);
        borrow(Spare::Read, &mut own);
        assert_eq!(own.capacity(), 16);
    }
}
