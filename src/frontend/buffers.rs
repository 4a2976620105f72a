//! The read and write buffers a worker thread lends its sessions, one poll at a time, so that an
//! idle client holds no buffer of its own.
//!
//! A session borrows the thread's spare read buffer when it has none and is about to read, and
//! gives it back when a poll leaves it empty (every request parsed); the output buffer the same
//! when it has a reply to write, given back once every reply is written. At pipeline 1 one pair
//! of buffers serves every session of the worker; only a session holding a partial request or
//! replies a slow client has not read keeps buffers of its own. Requests stay zero-copy: a request is a
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

use std::cell::{Cell, RefCell};

use bytes::BytesMut;

use crate::protocol::Request;

/// Largest buffer kept as a spare; larger ones are freed when they empty.
pub const KEEP_BYTES: usize = 256 * 1024;

thread_local! {
    /// The spare buffers, or buffers without memory while they are lent: lending and giving
    /// back swap the session's buffer with the slot's, so neither constructs nor frees one.
    static SPARE_READ: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    static SPARE_WRITE: RefCell<BytesMut> = RefCell::new(BytesMut::new());
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
    #[inline]
    fn swap_if(self, buf: &mut BytesMut, when: impl FnOnce(&BytesMut) -> bool) {
        let slot = match self {
            Spare::Read => &SPARE_READ,
            Spare::Write => &SPARE_WRITE,
        };
        slot.with(|c| {
            if let Ok(mut spare) = c.try_borrow_mut()
                && when(&spare)
            {
                std::mem::swap(&mut *spare, buf);
            }
        });
    }
}

/// Gives `buf` the thread's spare when it holds no memory of its own (nothing when there is
/// no spare: the buffer then allocates when it is first written).
#[inline]
pub fn borrow(kind: Spare, buf: &mut BytesMut) {
    if buf.capacity() == 0 {
        kind.swap_if(buf, |spare| spare.capacity() > 0);
    }
}

/// Takes `buf`'s memory back as the thread's spare when it is empty, leaving it with none. A
/// buffer past [`KEEP_BYTES`] is freed instead; when the thread already has a spare, the
/// session keeps its own.
#[inline]
pub fn give_back(kind: Spare, buf: &mut BytesMut) {
    if buf.capacity() == 0 || !buf.is_empty() {
        return;
    }
    if buf.capacity() > KEEP_BYTES {
        *buf = BytesMut::new();
        return;
    }
    kind.swap_if(buf, |spare| spare.capacity() == 0);
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
