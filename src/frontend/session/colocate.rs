//! Key families in a session's requests and replies: a request's keys that belong to a family
//! are renamed as stored (one copy of the frame, only for a request that names one), and the
//! key names in a reply that carries them (blocking and multi pops, KEYS, SCAN, RANDOMKEY) are
//! restored to the application's names. Which key is whose is [`crate::families`]' decision.
//!
//! A request without family keys must leave here as it came (no copy is made); a
//! reply this module cannot read is delivered as the node sent it, never cut.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

use crate::command::{self, Entry, KeyPositions};
use crate::families::Families;
use crate::protocol::Request;

/// `req` with its family keys renamed as stored; `None` when it names none.
pub(super) fn rewrite(families: &Families, entry: &Entry, req: &Request) -> Option<Request> {
    let mut keys = KeyPositions::new();
    command::key_name_positions(entry.spec, req, &mut keys);
    let stored: Vec<(u32, Vec<u8>)> = keys
        .iter()
        .filter_map(|&i| Some((i, families.stored(req.arg(i as usize)?)?)))
        .collect();
    if stored.is_empty() {
        return None;
    }
    let args: Vec<Cow<'_, [u8]>> = (0..req.argc())
        .map(|i| match stored.iter().find(|(at, _)| *at as usize == i) {
            Some((_, name)) => Cow::Borrowed(name.as_slice()),
            None => Cow::Borrowed(req.arg_or_empty(i)),
        })
        .collect();
    Some(Request::from_args(&args))
}

/// Where a command's reply carries key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyNames {
    /// The first element of an array (BLPOP, BZPOPMIN, BLMPOP, LMPOP ...).
    First,
    /// Every element of an array (KEYS).
    All,
    /// The second element of SCAN's reply, an array of names.
    Scan,
    /// The reply itself (RANDOMKEY).
    One,
}

/// Which names the reply of the command called `name` carries, if any.
pub(super) fn reply_names(name: &str) -> Option<ReplyNames> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "blmpop" | "bzmpop" | "lmpop" | "zmpop" => {
            Some(ReplyNames::First)
        }
        "keys" => Some(ReplyNames::All),
        "scan" => Some(ReplyNames::Scan),
        "randomkey" => Some(ReplyNames::One),
        _ => None,
    }
}

/// `reply` with the key names `names` says it carries restored; as it is when it has none in
/// the expected shape (a null, an error).
pub(super) fn restore(families: &Families, names: ReplyNames, reply: Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(reply.len());
    let done = match names {
        ReplyNames::One => bulks(families, &reply, 0, 1, &mut out),
        ReplyNames::First => array(&reply, 0, &mut out)
            .filter(|&(n, _)| n >= 1)
            .and_then(|(_, at)| bulks(families, &reply, at, 1, &mut out)),
        ReplyNames::All => {
            array(&reply, 0, &mut out).and_then(|(n, at)| bulks(families, &reply, at, n, &mut out))
        }
        ReplyNames::Scan => array(&reply, 0, &mut out)
            .filter(|&(n, _)| n == 2)
            .and_then(|(_, at)| copy_bulk(&reply, at, &mut out))
            .and_then(|at| array(&reply, at, &mut out))
            .and_then(|(n, at)| bulks(families, &reply, at, n, &mut out)),
    };
    match done {
        Some(at) => {
            out.extend_from_slice(reply.get(at..).unwrap_or_default());
            out.freeze()
        }
        None => reply,
    }
}

/// A header line at `at` (`*3\r\n`, `$5\r\n`): its type byte, its number, where the next
/// element starts.
fn header(reply: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let rest = reply.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    let n = std::str::from_utf8(rest.get(1..end)?).ok()?.parse().ok()?;
    Some((*rest.first()?, n, at + end + 2))
}

/// An array header at `at` (RESP2 `*`, or RESP3 `*`/`~`), copied: its length and where its
/// first element starts.
fn array(reply: &[u8], at: usize, out: &mut BytesMut) -> Option<(usize, usize)> {
    let (kind, n, next) = header(reply, at)?;
    if kind != b'*' && kind != b'~' {
        return None;
    }
    out.extend_from_slice(reply.get(at..next)?);
    Some((n, next))
}

/// The bulk string at `at`, copied: where the next element starts.
fn copy_bulk(reply: &[u8], at: usize, out: &mut BytesMut) -> Option<usize> {
    let (kind, n, start) = header(reply, at)?;
    let end = start.checked_add(n)?.checked_add(2)?;
    (kind == b'$').then_some(())?;
    out.extend_from_slice(reply.get(at..end)?);
    Some(end)
}

/// `count` bulk strings from `at`, each a stored name restored: where the next element starts.
fn bulks(
    families: &Families,
    reply: &[u8],
    mut at: usize,
    count: usize,
    out: &mut BytesMut,
) -> Option<usize> {
    for _ in 0..count {
        let (kind, n, start) = header(reply, at)?;
        if kind != b'$' {
            return None;
        }
        let name = reply.get(start..start.checked_add(n)?)?;
        let name = families.restore(name).unwrap_or(name);
        crate::protocol::encode::bulk(out, name);
        at = start + n + 2;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::FamilySpec;

    fn families() -> Families {
        Families::compile(&[FamilySpec {
            preset: Some("celery".into()),
            ..FamilySpec::default()
        }])
        .unwrap()
        .unwrap()
    }

    /// `req` with its command's entry.
    fn with_entry(args: &[&str]) -> (&'static Entry, Request) {
        let table: &'static crate::command::Table =
            Box::leak(Box::new(crate::command::Table::redis70()));
        let req = Request::from_args(args);
        let entry = crate::command::lookup(table, &req).unwrap_or_else(|_| unreachable!());
        (entry, req)
    }

    fn restored(names: ReplyNames, reply: &[u8]) -> Vec<u8> {
        restore(&families(), names, Bytes::copy_from_slice(reply)).to_vec()
    }

    #[test]
    fn should_rename_family_keys_and_leave_others() {
        let f = families();
        let (e, req) = with_entry(&["BRPOP", "celery", "celery\x06\x163", "other", "1"]);
        let out = rewrite(&f, e, &req).unwrap();
        let args: Vec<&[u8]> = (0..out.argc()).map(|i| out.arg_or_empty(i)).collect();
        assert_eq!(
            args,
            vec![
                &b"BRPOP"[..],
                b"{celery}celery",
                b"{celery}celery\x06\x163",
                b"other",
                b"1"
            ]
        );
        let (e, plain) = with_entry(&["GET", "other"]);
        assert!(rewrite(&f, e, &plain).is_none(), "no copy");
        // A value is no key, even when it reads like one; EVAL's KEYS are, its ARGV not.
        let (e, set) = with_entry(&["SET", "unacked", "celery"]);
        let set = rewrite(&f, e, &set).unwrap();
        assert_eq!(set.arg(1), Some(&b"{celery}unacked"[..]));
        assert_eq!(set.arg(2), Some(&b"celery"[..]));
        let (e, eval) = with_entry(&["EVAL", "return 1", "2", "celery", "x", "unacked"]);
        let eval = rewrite(&f, e, &eval).unwrap();
        assert_eq!(eval.arg(3), Some(&b"{celery}celery"[..]));
        assert_eq!(eval.arg(4), Some(&b"x"[..]));
        assert_eq!(eval.arg(5), Some(&b"unacked"[..]));
    }

    #[test]
    fn should_restore_the_names_a_reply_carries() {
        assert_eq!(
            restored(
                ReplyNames::First,
                b"*2\r\n$14\r\n{celery}celery\r\n$3\r\nmsg\r\n"
            ),
            b"*2\r\n$6\r\ncelery\r\n$3\r\nmsg\r\n"
        );
        assert_eq!(
            restored(
                ReplyNames::All,
                b"*3\r\n$15\r\n{celery}unacked\r\n$1\r\nx\r\n$7\r\n{rq}a:b\r\n"
            ),
            b"*3\r\n$7\r\nunacked\r\n$1\r\nx\r\n$7\r\n{rq}a:b\r\n"
        );
        assert_eq!(
            restored(
                ReplyNames::Scan,
                b"*2\r\n$3\r\n256\r\n*1\r\n$14\r\n{celery}celery\r\n"
            ),
            b"*2\r\n$3\r\n256\r\n*1\r\n$6\r\ncelery\r\n"
        );
        assert_eq!(
            restored(ReplyNames::One, b"$14\r\n{celery}celery\r\n"),
            b"$6\r\ncelery\r\n"
        );
        // BLMPOP: the name, then the popped elements as they were.
        assert_eq!(
            restored(
                ReplyNames::First,
                b"*2\r\n$14\r\n{celery}celery\r\n*1\r\n$1\r\na\r\n"
            ),
            b"*2\r\n$6\r\ncelery\r\n*1\r\n$1\r\na\r\n"
        );
    }

    #[test]
    fn should_leave_replies_without_names_as_they_are() {
        for (names, reply) in [
            (ReplyNames::First, &b"*-1\r\n"[..]),
            (ReplyNames::First, b"_\r\n"),
            (ReplyNames::One, b"$-1\r\n"),
            (ReplyNames::All, b"*0\r\n"),
            (ReplyNames::All, b"-ERR x\r\n"),
            (ReplyNames::Scan, b"*2\r\n$1\r\n0\r\n*0\r\n"),
            (ReplyNames::First, b"*2\r\n$99\r\nshort\r\n"),
        ] {
            assert_eq!(restored(names, reply), reply, "{reply:?}");
        }
    }
}
