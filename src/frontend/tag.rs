//! The tags of a session's backend requests, which their replies come back with: the queue place
//! and part a reply answers, or which of the session's own signals it is (a subscriber frame, a
//! timer, a kill, a drain, a reload, a shard subscriber's or keyspace event connection's frame, a reply to drop). Every tag value is made and read
//! here, and [`classify`] turns one into what it means.
//!
//! The hot path reads a reply's place with [`is_part`] and shifts; nothing outside this module
//! compares a tag with a number. It must never give one value two meanings: signals sit above
//! every sequence number a session can reach, and the shard and keyspace ranges below the named
//! signals, as
//! the assertions at the bottom check at compile time.

/// A reply's tag: a sequence number above the low [`PART_BITS`] bits and the part below, or a
/// signal.
pub type Tag = u64;

/// Bits of a tag that number the part of a split or fan-out request.
pub const PART_BITS: u32 = 16;
pub const PART_MASK: u64 = (1 << PART_BITS) - 1;

/// Tags from here up are signals; every tag below is a sequence number and a part.
const FIRST_SIGNAL: Tag = u64::MAX - (1 << 32);
/// Shard subscriber connections' frames: `SHARD_BASE + n` for the n-th connection opened (n
/// taken modulo `SHARD_SPAN`).
const SHARD_BASE: Tag = FIRST_SIGNAL;
const SHARD_SPAN: u64 = 1 << 31;
/// Keyspace event connections' frames (`keyspace_events`): `KEYSPACE_BASE + n` for the n-th
/// connection opened (n taken modulo `KEYSPACE_SPAN`).
const KEYSPACE_BASE: Tag = SHARD_BASE + SHARD_SPAN;
const KEYSPACE_SPAN: u64 = 1 << 30;
/// Replies no place waits for (an UNWATCH after DISCARD, slotgate's own re-subscriptions):
/// dropped.
pub const FORGET: Tag = u64::MAX;
/// Every frame the channel and pattern subscriber connection reads.
pub const PUSH: Tag = u64::MAX - 1;
/// The timer that retries a lost subscriber connection.
pub const RESUBSCRIBE: Tag = u64::MAX - 2;
/// CLIENT KILL: the session closes.
pub const KILL: Tag = u64::MAX - 3;
/// CLIENT UNBLOCK: the session takes the requests waiting for it in the client registry.
pub const UNBLOCK: Tag = u64::MAX - 4;
/// slotgate is draining (SIGTERM): the session reads no more, answers what it owes, closes.
pub const DRAIN: Tag = u64::MAX - 5;
/// A reload changed the configuration: the session takes the new one.
pub const RECONFIGURE: Tag = u64::MAX - 6;
/// The operator paused the clients (`POST /pause`): the session takes no more requests and
/// says so once what it sent is on its way ([`super::client_pause`]).
pub const PAUSE: Tag = u64::MAX - 7;
/// The pause ended: the session takes requests again.
pub const RESUME: Tag = u64::MAX - 8;

/// What a tag stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tagged {
    /// Part `part` of the request numbered `seq`.
    Part {
        seq: u64,
        part: usize,
    },
    Forget,
    Push,
    Resubscribe,
    Kill,
    Unblock,
    Drain,
    Reconfigure,
    Pause,
    Resume,
    /// A frame of the shard subscriber connection with this tag ([`shard`]).
    Shard(Tag),
    /// A frame of the keyspace event connection with this tag ([`keyspace`]).
    Keyspace(Tag),
}

/// The tag of part `part` of request `seq`.
#[inline]
pub fn part(seq: u64, part: usize) -> Tag {
    (seq << PART_BITS) | part as u64
}

/// Whether `tag` names a queue place (not a signal).
#[inline(always)]
pub fn is_part(tag: Tag) -> bool {
    tag < FIRST_SIGNAL
}

/// The tag of the `n`-th shard subscriber connection a session opens.
pub fn shard(n: u64) -> Tag {
    SHARD_BASE + n % SHARD_SPAN
}

/// The tag of the `n`-th keyspace event connection a session opens.
pub fn keyspace(n: u64) -> Tag {
    KEYSPACE_BASE + n % KEYSPACE_SPAN
}

/// What `tag` stands for.
pub fn classify(tag: Tag) -> Tagged {
    match tag {
        t if is_part(t) => Tagged::Part {
            seq: t >> PART_BITS,
            part: (t & PART_MASK) as usize,
        },
        FORGET => Tagged::Forget,
        PUSH => Tagged::Push,
        RESUBSCRIBE => Tagged::Resubscribe,
        KILL => Tagged::Kill,
        UNBLOCK => Tagged::Unblock,
        DRAIN => Tagged::Drain,
        RECONFIGURE => Tagged::Reconfigure,
        PAUSE => Tagged::Pause,
        RESUME => Tagged::Resume,
        t if (SHARD_BASE..SHARD_BASE + SHARD_SPAN).contains(&t) => Tagged::Shard(t),
        t if (KEYSPACE_BASE..KEYSPACE_BASE + KEYSPACE_SPAN).contains(&t) => Tagged::Keyspace(t),
        // Between the keyspace range and the named signals: no tag is made there.
        _ => Tagged::Forget,
    }
}

const _: () = assert!(
    SHARD_BASE + SHARD_SPAN <= KEYSPACE_BASE
        && KEYSPACE_BASE + KEYSPACE_SPAN <= RESUME
        && RESUME < PAUSE
        && PAUSE < RECONFIGURE
        && RECONFIGURE < DRAIN
        && DRAIN < UNBLOCK
        && UNBLOCK < KILL
        && KILL < RESUBSCRIBE
        && RESUBSCRIBE < PUSH
        && PUSH < FORGET
        // A session would need 2^47 requests to reach the signals.
        && (FIRST_SIGNAL >> PART_BITS) > (1 << 40)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_means_one_thing() {
        assert_eq!(classify(part(7, 3)), Tagged::Part { seq: 7, part: 3 });
        assert_eq!(classify(part(0, 0)), Tagged::Part { seq: 0, part: 0 });
        assert_eq!(classify(FORGET), Tagged::Forget);
        assert_eq!(classify(PUSH), Tagged::Push);
        assert_eq!(classify(RESUBSCRIBE), Tagged::Resubscribe);
        assert_eq!(classify(KILL), Tagged::Kill);
        assert_eq!(classify(UNBLOCK), Tagged::Unblock);
        assert_eq!(classify(DRAIN), Tagged::Drain);
        assert_eq!(classify(RECONFIGURE), Tagged::Reconfigure);
        for n in [0, 1, SHARD_SPAN - 1, SHARD_SPAN, 3 * SHARD_SPAN + 5] {
            let t = shard(n);
            assert_eq!(classify(t), Tagged::Shard(t));
            assert!(!is_part(t));
            let k = keyspace(n);
            assert_eq!(classify(k), Tagged::Keyspace(k));
            assert!(!is_part(k));
        }
        assert!(is_part(part((1 << 40) - 1, PART_MASK as usize)));
    }
}
