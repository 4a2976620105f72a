//! A client's MULTI..EXEC transaction as slotgate buffers it: the queued commands' wire bytes,
//! the one slot they must share, and whether a queue-time error has doomed it.
//!
//! Commands are checked and answered `+QUEUED` by the session; at EXEC the whole transaction
//! leaves as one contiguous `MULTI ... EXEC` frame, so on a shared pipelined connection no other
//! client's command can land inside it. This module is pure state; it must never send anything.

use bytes::{BufMut, Bytes, BytesMut};

use crate::families::ReplyNames;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// The transaction being queued.
#[derive(Debug, Default)]
pub struct Transaction {
    frames: BytesMut,
    count: u32,
    slot: Option<u16>,
    aborted: bool,
    /// The queued commands whose replies name keys of key families, by their place in the
    /// queue: their names are restored in EXEC's reply.
    names: Vec<(u32, ReplyNames)>,
}

/// What EXEC sends, and how its reply is read.
#[derive(Debug)]
pub struct Exec {
    /// `MULTI`, the queued commands, `EXEC`: one frame.
    pub frame: Bytes,
    /// How many replies precede EXEC's own (MULTI's `+OK` and one `+QUEUED` per command).
    pub skip: u32,
    /// Elements of EXEC's reply that name keys of key families, by place.
    pub names: Vec<(u32, ReplyNames)>,
}

/// Why a command cannot join the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotConflict {
    pub bound: u16,
    pub other: u16,
}

impl Transaction {
    /// Marks the transaction as doomed: EXEC will answer EXECABORT, as Redis does after a
    /// queue-time error.
    pub fn abort(&mut self) {
        self.aborted = true;
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// The slot every queued key so far hashes to.
    pub fn slot(&self) -> Option<u16> {
        self.slot
    }

    /// Binds the transaction to `slot` (the first keyed command decides); a different slot is a
    /// conflict.
    pub fn bind(&mut self, slot: Option<u16>) -> Result<(), SlotConflict> {
        match (self.slot, slot) {
            (_, None) => Ok(()),
            (None, Some(s)) => {
                self.slot = Some(s);
                Ok(())
            }
            (Some(b), Some(s)) if b == s => Ok(()),
            (Some(bound), Some(other)) => Err(SlotConflict { bound, other }),
        }
    }

    /// Appends one command's wire bytes; `names` says where its reply names keys of key
    /// families.
    pub fn queue(&mut self, raw: &[u8], names: Option<ReplyNames>) {
        if let Some(n) = names {
            self.names.push((self.count, n));
        }
        self.frames.put_slice(raw);
        self.count += 1;
    }

    /// What to send at EXEC.
    pub fn into_exec(self) -> Exec {
        let mut b = BytesMut::with_capacity(MULTI.len() + self.frames.len() + EXEC.len());
        b.put_slice(MULTI);
        b.put_slice(&self.frames);
        b.put_slice(EXEC);
        Exec {
            frame: b.freeze(),
            skip: self.count + 1,
            names: self.names,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_wrap_queued_commands_in_one_multi_exec_frame() {
        let mut t = Transaction::default();
        t.queue(b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n", None);
        t.queue(
            b"*3\r\n$5\r\nBLPOP\r\n$1\r\na\r\n$1\r\n0\r\n",
            Some(ReplyNames::First),
        );
        let exec = t.into_exec();
        assert_eq!(exec.skip, 3);
        assert_eq!(exec.names, vec![(1, ReplyNames::First)]);
        assert_eq!(
            &exec.frame[..],
            b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*3\r\n$5\r\nBLPOP\r\n$1\r\na\r\n$1\r\n0\r\n*1\r\n$4\r\nEXEC\r\n"
        );
    }

    #[test]
    fn should_bind_to_the_first_slot_and_refuse_others() {
        let mut t = Transaction::default();
        assert_eq!(t.bind(None), Ok(()));
        assert_eq!(t.bind(Some(5)), Ok(()));
        assert_eq!(t.bind(Some(5)), Ok(()));
        assert_eq!(t.bind(Some(6)), Err(SlotConflict { bound: 5, other: 6 }));
        assert_eq!(t.slot(), Some(5));
    }
}
