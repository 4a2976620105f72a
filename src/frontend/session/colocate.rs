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

/// SCAN without its `MATCH pattern` (the names are matched once restored), and the pattern;
/// `None` for another command or a SCAN without MATCH.
pub(super) fn without_match(name: &str, req: &Request) -> Option<(Request, Bytes)> {
    if name != "scan" {
        return None;
    }
    let at = (2..req.argc())
        .step_by(2)
        .find(|&i| req.arg(i).is_some_and(|a| a.eq_ignore_ascii_case(b"MATCH")))?;
    let pattern = Bytes::copy_from_slice(req.arg(at + 1)?);
    let args: Vec<&[u8]> = (0..req.argc())
        .filter(|&i| i != at && i != at + 1)
        .map(|i| req.arg_or_empty(i))
        .collect();
    Some((Request::from_args(&args), pattern))
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
    /// The stream names of XREAD and XREADGROUP: an array of `[name, entries]` pairs (RESP2)
    /// or a map from name to entries (RESP3).
    Streams,
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
        "xread" | "xreadgroup" => Some(ReplyNames::Streams),
        _ => None,
    }
}

/// `reply` with the key names `names` says it carries restored; as it is when it has none in
/// the expected shape (a null, an error). For KEYS and SCAN: a name given twice (KEYS asked
/// under the application's pattern and under each family's) once, and with `matching`, only the
/// names that match that pattern once restored (SCAN asked without it).
pub(super) fn restore(
    families: &Families,
    names: ReplyNames,
    reply: Bytes,
    matching: Option<&[u8]>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(reply.len());
    let done = match names {
        ReplyNames::One => bulks(families, &reply, 0, 1, &mut out),
        ReplyNames::First => array(&reply, 0, &mut out)
            .filter(|&(n, _)| n >= 1)
            .and_then(|(_, at)| bulks(families, &reply, at, 1, &mut out)),
        ReplyNames::All => name_set(families, &reply, 0, matching, &mut out),
        ReplyNames::Scan => array(&reply, 0, &mut out)
            .filter(|&(n, _)| n == 2)
            .and_then(|(_, at)| copy_bulk(&reply, at, &mut out))
            .and_then(|at| name_set(families, &reply, at, matching, &mut out)),
        ReplyNames::Streams => streams(families, &reply, &mut out),
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

/// An array of names at `at`, restored, each once, those that match `matching` (all without
/// it): where the next element starts.
fn name_set(
    families: &Families,
    reply: &[u8],
    at: usize,
    matching: Option<&[u8]>,
    out: &mut BytesMut,
) -> Option<usize> {
    let (kind, n, mut at) = header(reply, at)?;
    if kind != b'*' && kind != b'~' {
        return None;
    }
    let mut names: Vec<&[u8]> = Vec::with_capacity(n);
    for _ in 0..n {
        let (kind, len, start) = header(reply, at)?;
        if kind != b'$' {
            return None;
        }
        let name = reply.get(start..start.checked_add(len)?)?;
        names.push(families.restore(name).unwrap_or(name));
        at = start + len + 2;
    }
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.retain(|name| {
        matching.is_none_or(|p| crate::families::redis_glob(p, name)) && seen.insert(*name)
    });
    out.extend_from_slice(format!("{}{}\r\n", kind as char, names.len()).as_bytes());
    for name in names {
        crate::protocol::encode::bulk(out, name);
    }
    Some(at)
}

/// XREAD's reply: each stream's name restored, its entries as they are.
fn streams(families: &Families, reply: &[u8], out: &mut BytesMut) -> Option<usize> {
    let (kind, n, mut at) = header(reply, 0)?;
    out.extend_from_slice(reply.get(..at)?);
    for _ in 0..n {
        if kind == b'*' {
            // RESP2: [name, entries]
            let (_, pair) = array(reply, at, out).filter(|&(len, _)| len == 2)?;
            at = pair;
        } else if kind != b'%' {
            return None;
        }
        at = bulks(families, reply, at, 1, out)?;
        let len = crate::protocol::ReplyScanner::new(crate::protocol::Limits::default())
            .scan(reply.get(at..)?)
            .ok()??;
        out.extend_from_slice(reply.get(at..at + len)?);
        at += len;
    }
    Some(at)
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
        restore(&families(), names, Bytes::copy_from_slice(reply), None).to_vec()
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
    fn should_restore_stream_names_and_keep_their_entries() {
        let entries = "*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n";
        let resp2 =
            format!("*2\r\n*2\r\n$15\r\n{{celery}}unacked\r\n{entries}*2\r\n$1\r\ns\r\n{entries}");
        let want2 = format!("*2\r\n*2\r\n$7\r\nunacked\r\n{entries}*2\r\n$1\r\ns\r\n{entries}");
        assert_eq!(
            restored(ReplyNames::Streams, resp2.as_bytes()),
            want2.as_bytes()
        );
        let resp3 = format!("%1\r\n$15\r\n{{celery}}unacked\r\n{entries}");
        let want3 = format!("%1\r\n$7\r\nunacked\r\n{entries}");
        assert_eq!(
            restored(ReplyNames::Streams, resp3.as_bytes()),
            want3.as_bytes()
        );
        assert_eq!(restored(ReplyNames::Streams, b"*-1\r\n"), b"*-1\r\n");
    }

    #[test]
    fn should_give_each_name_once_and_only_those_that_match() {
        // KEYS asked twice (as sent, and under the family's tag) finds a family key twice.
        let keys = b"*3\r\n$14\r\n{celery}celery\r\n$1\r\nx\r\n$14\r\n{celery}celery\r\n";
        assert_eq!(
            restored(ReplyNames::All, keys),
            b"*2\r\n$6\r\ncelery\r\n$1\r\nx\r\n"
        );
        let scan = Bytes::from_static(
            b"*2\r\n$1\r\n0\r\n*3\r\n$14\r\n{celery}celery\r\n$4\r\ncats\r\n$1\r\nx\r\n",
        );
        assert_eq!(
            restore(&families(), ReplyNames::Scan, scan, Some(b"c*")).to_vec(),
            b"*2\r\n$1\r\n0\r\n*2\r\n$6\r\ncelery\r\n$4\r\ncats\r\n"
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
