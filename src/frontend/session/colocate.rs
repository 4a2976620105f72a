//! Key families in a session's requests and replies: a request's keys that belong to a family
//! are renamed as stored (one copy of the frame, only for a request that names one: key-spec
//! keys, SORT's STORE key and BY/GET patterns, keyspace notification channels and patterns),
//! and the key names in a reply that carries them (blocking and multi pops, KEYS, SCAN,
//! RANDOMKEY, XREAD, the same inside EXEC's reply) and in keyspace notifications are restored
//! to the application's names; Redis' refusal of a key a script built itself gets a word on
//! why. Which key is whose is [`crate::families`]' decision.
//!
//! A request without family keys must leave here as it came (no copy is made); a
//! reply this module cannot read is delivered as the node sent it, never cut.

use bytes::{Bytes, BytesMut};
use std::borrow::Cow;

use crate::command::{self, Entry, KeyPositions};
use crate::families::{Families, ReplyNames};
use crate::protocol::Request;

/// `req` with its family keys renamed as stored; `None` when it names none.
pub(super) fn rewrite(families: &Families, entry: &Entry, req: &Request) -> Option<Request> {
    let mut keys = KeyPositions::new();
    command::key_name_positions(entry.spec, req, &mut keys);
    let mut stored: Vec<(u32, Vec<u8>)> = keys
        .iter()
        .filter_map(|&i| Some((i, families.stored(req.arg(i as usize)?)?)))
        .collect();
    if matches!(entry.spec.name, "sort" | "sort_ro") {
        // The key specs of SORT do not say where STORE's key and the patterns are.
        stored.extend(sort_arguments(req).filter_map(|(i, arg)| {
            let a = req.arg(i as usize)?;
            let name = match arg {
                SortArg::Store => families.stored(a),
                SortArg::Pattern => families.stored_pattern(a),
            };
            Some((i, name?))
        }));
    }
    let channels = match entry.spec.name {
        "subscribe" | "unsubscribe" => Some(false),
        "psubscribe" | "punsubscribe" => Some(true),
        _ => None,
    };
    if let Some(patterns) = channels {
        // A keyspace notification channel names a key.
        stored
            .extend((1..req.argc()).filter_map(|i| {
                Some((i as u32, stored_channel(families, req.arg(i)?, patterns)?))
            }));
    }
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

/// An argument of SORT that names keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortArg {
    /// `BY pattern` or `GET pattern`.
    Pattern,
    /// `STORE destination`.
    Store,
}

/// Where SORT's `BY` and `GET` patterns and its `STORE` key are among its arguments (after the
/// key; `LIMIT` takes two arguments), as Redis' `sortGetKeys` reads them.
fn sort_arguments(req: &Request) -> impl Iterator<Item = (u32, SortArg)> + '_ {
    let mut i = 2;
    std::iter::from_fn(move || {
        while let Some(a) = req.arg(i) {
            let is = |word: &[u8]| a.eq_ignore_ascii_case(word);
            let (skip, arg) = if is(b"BY") || is(b"GET") {
                (2, Some(SortArg::Pattern))
            } else if is(b"STORE") {
                (2, Some(SortArg::Store))
            } else if is(b"LIMIT") {
                (3, None)
            } else {
                (1, None)
            };
            i += skip;
            if let Some(arg) = arg.filter(|_| i - 1 < req.argc()) {
                return Some(((i - 1) as u32, arg));
            }
        }
        None
    })
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
    if names == ReplyNames::Script {
        return explain_script_error(reply);
    }
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
        ReplyNames::Script => None,
    };
    match done {
        Some(at) => {
            out.extend_from_slice(reply.get(at..).unwrap_or_default());
            out.freeze()
        }
        None => reply,
    }
}

/// The channels Redis publishes keyspace notifications under: `__keyspace@<db>__:<key>` (the
/// event as message) and `__keyevent@<db>__:<event>` (the key as message).
const KEYSPACE: &[u8] = b"__keyspace@";
const KEYEVENT: &[u8] = b"__keyevent@";

/// Where the key starts in a keyspace channel (or a pattern for some), after `__:`.
fn keyspace_key_at(channel: &[u8]) -> Option<usize> {
    let rest = channel.strip_prefix(KEYSPACE)?;
    let at = rest.windows(3).position(|w| w == b"__:")?;
    Some(KEYSPACE.len() + at + 3)
}

/// A keyspace channel (or, with `pattern`, a pattern) whose key is a family's, as stored:
/// `__keyspace@0__:celery` is `__keyspace@0__:{celery}celery`; `None` for another.
fn stored_channel(families: &Families, channel: &[u8], pattern: bool) -> Option<Vec<u8>> {
    let (head, key) = channel.split_at(keyspace_key_at(channel)?);
    let stored = if pattern {
        families.stored_glob(key)?
    } else {
        families.stored(key)?
    };
    Some([head, stored.as_slice()].concat())
}

/// The application's name for a stored keyspace channel (or pattern).
fn restored_channel(families: &Families, channel: &[u8], pattern: bool) -> Option<Vec<u8>> {
    let (head, key) = channel.split_at(keyspace_key_at(channel)?);
    let key = if pattern {
        families.restore_glob(key)?
    } else {
        families.restore(key)?
    };
    Some([head, key].concat())
}

/// A subscriber's frame with the key names of keyspace notifications restored: the channel
/// of `message` and `pmessage` (and the key a keyevent message carries), the pattern of
/// `pmessage`, and the channel or pattern of a (un)subscribe confirmation. Any other frame,
/// or one this cannot read, as it is.
pub(super) fn restore_event(families: &Families, frame: Bytes) -> Bytes {
    if !frame.windows(5).any(|w| w == b"__key") {
        return frame;
    }
    restore_event_names(families, &frame).unwrap_or(frame)
}

/// An element of a pub/sub frame.
enum Element<'a> {
    Bulk(&'a [u8]),
    /// Anything else (a count), as its bytes.
    Raw(&'a [u8]),
}

fn restore_event_names(families: &Families, frame: &[u8]) -> Option<Bytes> {
    let (kind, n, mut at) = header(frame, 0)?;
    if !(kind == b'*' || kind == b'>') || !(3..=4).contains(&n) {
        return None;
    }
    let mut elements: Vec<Element<'_>> = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, len, start) = header(frame, at)?;
        if t == b'$' {
            let end = start.checked_add(len)?;
            elements.push(Element::Bulk(frame.get(start..end)?));
            at = end.checked_add(2)?;
        } else {
            elements.push(Element::Raw(frame.get(at..start)?));
            at = start;
        }
    }
    let bulk = |i: usize| match elements.get(i) {
        Some(Element::Bulk(b)) => Some(*b),
        _ => None,
    };
    // Which elements name what: the channel's place, the pattern's, and whether a keyevent
    // channel's message (a key) follows the channel. Redis spells the kinds in lower case.
    let (channel_at, pattern_at, message) = match bulk(0)? {
        b"message" => (Some(1), None, true),
        b"pmessage" => (Some(2), Some(1), true),
        b"subscribe" | b"unsubscribe" => (Some(1), None, false),
        b"psubscribe" | b"punsubscribe" => (None, Some(1), false),
        _ => return None,
    };
    let mut names: Vec<Option<Vec<u8>>> = vec![None; n];
    if let Some(i) = pattern_at {
        *names.get_mut(i)? = restored_channel(families, bulk(i)?, true);
    }
    if let Some(i) = channel_at {
        let channel = bulk(i)?;
        *names.get_mut(i)? = restored_channel(families, channel, false);
        if message && channel.starts_with(KEYEVENT) {
            *names.get_mut(i + 1)? = bulk(i + 1)
                .and_then(|k| families.restore(k))
                .map(<[u8]>::to_vec);
        }
    }
    if names.iter().all(Option::is_none) {
        return None;
    }
    let mut out = BytesMut::with_capacity(frame.len());
    out.extend_from_slice(frame.get(..header(frame, 0)?.2)?);
    for (e, name) in elements.iter().zip(&names) {
        match (e, name) {
            (_, Some(name)) => crate::protocol::encode::bulk(&mut out, name),
            (Element::Bulk(b), None) => crate::protocol::encode::bulk(&mut out, b),
            (Element::Raw(r), None) => out.extend_from_slice(r),
        }
    }
    out.extend_from_slice(frame.get(at..).unwrap_or_default());
    Some(out.freeze())
}

/// What slotgate adds to Redis' refusal of a key a script or function built itself.
pub(super) const SCRIPT_KEY_HINT: &str = " (slotgate: a key name a script builds itself is not \
    renamed into its key family; pass the key in KEYS)";

/// A script's error reply for a key outside its slot (`Script attempted to access a non local
/// key in a cluster node`) with [`SCRIPT_KEY_HINT`] added: under key families the usual
/// cause is a family key named inside the script, which was not renamed. Any other reply as
/// it is.
fn explain_script_error(reply: Bytes) -> Bytes {
    let is_refusal = reply.first() == Some(&b'-')
        && reply
            .windows(b"non local key".len())
            .any(|w| w == b"non local key");
    let Some(line) = reply.strip_suffix(b"\r\n").filter(|_| is_refusal) else {
        return reply;
    };
    let mut out = BytesMut::with_capacity(reply.len() + SCRIPT_KEY_HINT.len());
    out.extend_from_slice(line);
    out.extend_from_slice(SCRIPT_KEY_HINT.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

/// EXEC's reply with the key names restored in the elements `names` lists (by place, with
/// where each carries names); as it is when it is no array (a null for a failed WATCH, an
/// EXECABORT) or cannot be read whole.
pub(super) fn restore_exec(
    families: &Families,
    names: &[(u32, ReplyNames)],
    reply: Bytes,
) -> Bytes {
    let Some((_, n, mut at)) = header(&reply, 0).filter(|&(kind, ..)| kind == b'*') else {
        return reply;
    };
    let mut out = BytesMut::with_capacity(reply.len());
    out.extend_from_slice(reply.get(..at).unwrap_or_default());
    let mut scanner = crate::protocol::ReplyScanner::relaying(crate::protocol::Limits::default());
    for i in 0..n {
        let Some(len) = reply.get(at..).and_then(|r| scanner.scan(r).ok().flatten()) else {
            return reply;
        };
        let element = reply.slice(at..at + len);
        match names.iter().find(|(place, _)| *place as usize == i) {
            Some(&(_, kind)) => out.extend_from_slice(&restore(families, kind, element, None)),
            None => out.extend_from_slice(&element),
        }
        at += len;
    }
    out.extend_from_slice(reply.get(at..).unwrap_or_default());
    out.freeze()
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
        matching.is_none_or(|p| crate::access::glob_match(p, name)) && seen.insert(*name)
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
    fn should_rename_sort_patterns_whose_keys_are_a_familys() {
        let f = Families::compile(&[FamilySpec {
            preset: Some("rq".into()),
            ..FamilySpec::default()
        }])
        .unwrap()
        .unwrap();
        let (e, req) = with_entry(&[
            "SORT",
            "rq:q",
            "LIMIT",
            "0",
            "5",
            "BY",
            "rq:w:*",
            "GET",
            "#",
            "GET",
            "rq:job:*->status",
            "STORE",
            "rq:out",
            "ALPHA",
        ]);
        let out = rewrite(&f, e, &req).unwrap();
        let args: Vec<&[u8]> = (0..out.argc()).map(|i| out.arg_or_empty(i)).collect();
        assert_eq!(
            args,
            [
                &b"SORT"[..],
                b"{rq}rq:q",
                b"LIMIT",
                b"0",
                b"5",
                b"BY",
                b"{rq}rq:w:*",
                b"GET",
                b"#",
                b"GET",
                b"{rq}rq:job:*->status",
                b"STORE",
                b"{rq}rq:out",
                b"ALPHA",
            ]
        );
        // A LIMIT offset that reads like a keyword is no pattern.
        let (e, req) = with_entry(&["SORT_RO", "rq:q", "LIMIT", "BY", "1", "GET", "other_*"]);
        let out = rewrite(&f, e, &req).unwrap();
        assert_eq!(out.arg(3), Some(&b"BY"[..]));
        assert_eq!(out.arg(6), Some(&b"other_*"[..]));
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
    fn should_restore_names_inside_execs_reply_by_place() {
        let names = [(1, ReplyNames::First), (2, ReplyNames::One)];
        let exec = |r: &[u8]| restore_exec(&families(), &names, Bytes::copy_from_slice(r));
        assert_eq!(
            exec(b"*4\r\n:1\r\n*2\r\n$14\r\n{celery}celery\r\n$1\r\na\r\n$15\r\n{celery}unacked\r\n$14\r\n{celery}celery\r\n"),
            &b"*4\r\n:1\r\n*2\r\n$6\r\ncelery\r\n$1\r\na\r\n$7\r\nunacked\r\n$14\r\n{celery}celery\r\n"[..],
            "only the listed places: the fourth is a value"
        );
        for r in [
            &b"*-1\r\n"[..],
            b"_\r\n",
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
            b"*3\r\n:1\r\n*2\r\n$14\r\n{cel",
        ] {
            assert_eq!(exec(r), r, "{r:?}");
        }
    }

    #[test]
    fn should_say_why_a_script_key_of_its_own_is_refused() {
        let refusal = b"-ERR Script attempted to access a non local key in a cluster node script: 0c3, on @user_script:1.\r\n";
        let out = restored(ReplyNames::Script, refusal);
        assert!(out.starts_with(&refusal[..refusal.len() - 2]));
        assert!(out.ends_with(format!("{SCRIPT_KEY_HINT}\r\n").as_bytes()));
        for other in [
            &b"-ERR other\r\n"[..],
            b"$13\r\nnon local key\r\n",
            b":1\r\n",
        ] {
            assert_eq!(restored(ReplyNames::Script, other), other);
        }
    }

    fn bulks(items: &[&[u8]], kind: char) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
        for i in items {
            crate::protocol::encode::bulk(&mut b, i);
        }
        b.to_vec()
    }

    #[test]
    fn should_subscribe_to_a_family_keys_keyspace_channel_as_stored() {
        let f = families();
        let (e, req) = with_entry(&[
            "SUBSCRIBE",
            "__keyspace@0__:celery",
            "__keyspace@0__:other",
            "__keyevent@0__:del",
        ]);
        let out = rewrite(&f, e, &req).unwrap();
        assert_eq!(out.arg(1), Some(&b"__keyspace@0__:{celery}celery"[..]));
        assert_eq!(out.arg(2), Some(&b"__keyspace@0__:other"[..]));
        assert_eq!(out.arg(3), Some(&b"__keyevent@0__:del"[..]));
        let (e, req) = with_entry(&[
            "PSUBSCRIBE",
            "__keyspace@*__:celeryev.*",
            "__keyspace@0__:*",
        ]);
        let out = rewrite(&f, e, &req).unwrap();
        assert_eq!(out.arg(1), Some(&b"__keyspace@*__:{celery}celeryev.*"[..]));
        assert_eq!(out.arg(2), Some(&b"__keyspace@0__:*"[..]));
        let (e, req) = with_entry(&["SUBSCRIBE", "celery"]);
        assert!(rewrite(&f, e, &req).is_none(), "a channel is no key");
    }

    #[test]
    fn should_restore_key_names_in_keyspace_notifications() {
        let f = families();
        let event =
            |items: &[&[u8]], kind| restore_event(&f, Bytes::from(bulks(items, kind))).to_vec();
        for kind in ['*', '>'] {
            assert_eq!(
                event(
                    &[b"message", b"__keyspace@0__:{celery}celery", b"lpush"],
                    kind
                ),
                bulks(&[b"message", b"__keyspace@0__:celery", b"lpush"], kind)
            );
            assert_eq!(
                event(
                    &[b"message", b"__keyevent@0__:lpush", b"{celery}celery"],
                    kind
                ),
                bulks(&[b"message", b"__keyevent@0__:lpush", b"celery"], kind)
            );
            assert_eq!(
                event(
                    &[
                        b"pmessage",
                        b"__keyspace@*__:{celery}celeryev.*",
                        b"__keyspace@0__:{celery}celeryev.x",
                        b"rpush"
                    ],
                    kind
                ),
                bulks(
                    &[
                        b"pmessage",
                        b"__keyspace@*__:celeryev.*",
                        b"__keyspace@0__:celeryev.x",
                        b"rpush"
                    ],
                    kind
                )
            );
            assert_eq!(
                event(
                    &[
                        b"pmessage",
                        b"__key*",
                        b"__keyevent@0__:del",
                        b"{celery}unacked"
                    ],
                    kind
                ),
                bulks(
                    &[b"pmessage", b"__key*", b"__keyevent@0__:del", b"unacked"],
                    kind
                )
            );
        }
        // A confirmation keeps its count.
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$29\r\n__keyspace@0__:{celery}celery\r\n:1\r\n";
        assert_eq!(
            restore_event(&f, Bytes::from_static(confirm)).to_vec(),
            b"*3\r\n$9\r\nsubscribe\r\n$21\r\n__keyspace@0__:celery\r\n:1\r\n"
        );
        // A frame short of its message: as it is.
        let short = bulks(&[b"pmessage", b"__key*", b"__keyevent@0__:del"], '*');
        assert_eq!(
            restore_event(&f, Bytes::from(short.clone())).to_vec(),
            short
        );
        // Messages of other channels, and a PUBLISH whose payload reads like a stored name.
        for items in [
            &[&b"message"[..], b"news", b"{celery}celery"][..],
            &[b"message", b"__keyspace@0__:other", b"set"],
            &[b"message", b"__keyspace@0__:{x}celery", b"set"],
        ] {
            let frame = bulks(items, '*');
            assert_eq!(
                restore_event(&f, Bytes::from(frame.clone())).to_vec(),
                frame
            );
        }
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
