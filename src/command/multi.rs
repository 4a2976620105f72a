//! Split and merge of multi-key commands (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) and of
//! fan-out replies (DBSIZE, INFO).
//!
//! A split request is rebuilt from the original arguments' wire bytes (no re-encoding of keys or
//! values), one request per slot, since Redis Cluster refuses multi-key commands across slots even
//! on one node. Merging must produce exactly the reply Redis would give for the whole request, and
//! must never panic or mis-frame on a reply it did not expect: it answers an error instead.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::table::Merge;
use crate::protocol::{Limits, ReplyKind, ReplyScanner, Request, encode, parse_int};

/// One per-slot piece of a split request.
#[derive(Debug, Clone)]
pub struct Part {
    pub slot: u16,
    pub request: Bytes,
    /// For each key of this part, its index among the request's keys (for ordered merges).
    pub key_indexes: SmallVec<[u32; 8]>,
}

/// Splits `req`, whose keys are at `keys` (each followed by `step - 1` value arguments) and hash
/// to `slots` (as [`crate::command::key_slots`] gives them), into one request per distinct slot,
/// in the order slots first appear. The parts are written into one buffer and split off it, so
/// a split costs two allocations for its frames, however many slots it spans.
///
/// `None` when a key lacks one of its `step - 1` values or `slots` does not give every key
/// a slot: nothing may then be sent, since a part would be an incomplete frame (the caller has
/// already refused such counts with Redis' arity error; this keeps the guarantee local).
pub fn split(req: &Request, keys: &[u32], slots: &[u16], step: u8) -> Option<Vec<Part>> {
    let step = u32::from(step.max(1));
    let argc = req.argc();
    if slots.len() != keys.len()
        || keys
            .iter()
            .any(|&k| k == 0 || (k + step - 1) as usize >= argc)
    {
        return None;
    }
    let mut parts: Vec<Part> = Vec::new();
    for (i, &slot) in slots.iter().enumerate() {
        match parts.iter_mut().find(|p| p.slot == slot) {
            Some(p) => p.key_indexes.push(i as u32),
            None => parts.push(Part {
                slot,
                request: Bytes::new(),
                key_indexes: SmallVec::from_slice(&[i as u32]),
            }),
        }
    }
    let name = req.arg_wire(0).unwrap_or_default();
    let wire = |ki: u32| {
        let pos = keys.get(ki as usize).copied();
        (0..step).map(move |j| {
            pos.and_then(|p| req.arg_wire((p + j) as usize))
                .unwrap_or_default()
        })
    };
    // Every argument goes to exactly one part, so the parts together hold at most the request
    // plus, per part, an array header (23 bytes at most) and the name.
    let total = req.raw().len() + parts.len() * (23 + name.len());
    let mut buf = BytesMut::with_capacity(total);
    for p in &mut parts {
        encode::array_header(&mut buf, 1 + p.key_indexes.len() * step as usize);
        buf.put_slice(name);
        for &ki in &p.key_indexes {
            for a in wire(ki) {
                buf.put_slice(a);
            }
        }
        p.request = buf.split().freeze();
    }
    Some(parts)
}

fn first_error(replies: &[Bytes]) -> Option<&Bytes> {
    replies
        .iter()
        .find(|r| ReplyKind::of(r) == ReplyKind::Error)
}

fn unexpected(out: &mut BytesMut, what: &str) {
    encode::error(
        out,
        &format!("ERR slotgate: unexpected backend reply while merging {what}"),
    );
}

/// What a merge needs besides the replies: for a split command its parts and key count
/// ([`Merge::Ordered`]); for a fan-out the node each reply came from ([`Merge::Text`]) and, for
/// INFO, slotgate's own fields ([`Merge::Info`]). [`MergeWith::replies_only`] for the others.
#[derive(Debug, Clone, Copy)]
pub struct MergeWith<'a> {
    pub proto: encode::Proto,
    pub parts: &'a [Part],
    pub total_keys: usize,
    pub nodes: &'a [&'a str],
    /// `# Proxy`, when the INFO asked for it; empty otherwise.
    pub proxy_section: &'a str,
    pub own_server: Option<&'a OwnServer>,
    /// SCRIPT EXISTS: which of the scripts asked about slotgate holds the body of (it loads
    /// them where a node lacks them, so EVALSHA works), in argument order.
    pub held: &'a [bool],
    /// RANDOMKEY: a random number the draw of a master uses.
    pub random: u64,
}

impl MergeWith<'_> {
    /// Nothing but the replies (sums, OKs, unions, ...).
    pub fn replies_only(proto: encode::Proto) -> MergeWith<'static> {
        MergeWith {
            proto,
            parts: &[],
            total_keys: 0,
            nodes: &[],
            proxy_section: "",
            own_server: None,
            held: &[],
            random: 0,
        }
    }
}

/// Merges the replies of a split request's parts, or of a fan-out's masters (in part order),
/// into `out`: every [`Merge`] kind, in this one place.
pub fn merge(kind: Merge, with: MergeWith<'_>, replies: &[Bytes], out: &mut BytesMut) {
    // For a kill, errors are the usual answer (every master but one says NOTBUSY): they are
    // not the result before the merge looks.
    if kind != Merge::AnyOk
        && let Some(e) = first_error(replies)
    {
        out.put_slice(e);
        return;
    }
    let (parts, total_keys) = (with.parts, with.total_keys);
    match kind {
        Merge::Sum => merge_sum(replies, out),
        Merge::AnyOk => merge_any_ok(replies, out),
        Merge::AllOk => {
            if let Some(r) = replies.iter().find(|r| r.as_ref() != b"+OK\r\n") {
                out.put_slice(r);
            } else {
                encode::ok(out);
            }
        }
        Merge::Ordered => merge_ordered(parts, replies, total_keys, out),
        Merge::Info => {
            let default = OwnServer::default();
            match merge_info(
                replies,
                with.proxy_section,
                with.own_server.unwrap_or(&default),
            ) {
                Ok(text) => encode::verbatim(out, with.proto, text.as_bytes()),
                Err(e) => out.put_slice(&e),
            }
        }
        Merge::Same => out.put_slice(
            replies
                .first()
                .map_or(&b"-ERR slotgate: no master answered\r\n"[..], |r| &r[..]),
        ),
        Merge::AllExist => merge_all_exist(replies, with.held, out),
        Merge::Concat => merge_concat(replies, MAX_CONCAT_ELEMENTS, out),
        Merge::Union => merge_union(replies, out),
        Merge::PairSum => merge_pair_sum(replies, out),
        Merge::Newest => merge_newest(replies, out),
        // The node names label the text replies (LATENCY DOCTOR-like fan-outs).
        Merge::Text => match merge_text(replies, with.nodes) {
            Ok(text) => encode::verbatim(out, with.proto, text.as_bytes()),
            Err(e) => out.put_slice(&e),
        },
        Merge::RandomKey => merge_random_key(replies, with.random, out),
    }
}

/// Sums integer replies (DEL, EXISTS, DBSIZE, ...).
pub fn merge_sum(replies: &[Bytes], out: &mut BytesMut) {
    if let Some(e) = first_error(replies) {
        out.put_slice(e);
        return;
    }
    let mut sum: i64 = 0;
    for r in replies {
        match integer(r) {
            Some(n) => sum = sum.saturating_add(n),
            None => return unexpected(out, "integers"),
        }
    }
    encode::integer(out, sum);
}

/// Most elements a merged KEYS reply may hold; beyond, an error tells the client to SCAN.
pub const MAX_CONCAT_ELEMENTS: usize = 1_000_000;

/// The arrays of every master, one after another (KEYS), refused beyond `cap` elements.
pub fn merge_concat(replies: &[Bytes], cap: usize, out: &mut BytesMut) {
    let mut all: Vec<Bytes> = Vec::new();
    for r in replies {
        let Some(elems) = array_elements(r) else {
            return unexpected(out, "an array");
        };
        all.extend(elems);
        if all.len() > cap {
            return encode::error(
                out,
                &format!("ERR slotgate: the reply would hold more than {cap} keys; use SCAN"),
            );
        }
    }
    encode::array_header(out, all.len());
    for e in all {
        out.put_slice(&e);
    }
}

/// Arrays of names from every master, each name once, in the order first seen (PUBSUB
/// CHANNELS).
fn merge_union(replies: &[Bytes], out: &mut BytesMut) {
    let mut seen: std::collections::HashSet<Bytes> = std::collections::HashSet::new();
    let mut all: Vec<Bytes> = Vec::new();
    for r in replies {
        let Some(elems) = array_elements(r) else {
            return unexpected(out, "an array");
        };
        for e in elems {
            if seen.insert(e.clone()) {
                all.push(e);
            }
            if all.len() > MAX_CONCAT_ELEMENTS {
                return encode::error(out, "ERR slotgate: the reply would be too large");
            }
        }
    }
    encode::array_header(out, all.len());
    for e in all {
        out.put_slice(&e);
    }
}

/// `[name, count, name, count, ...]` from every master, counts summed position by position
/// (PUBSUB NUMSUB: every master lists the same names in the order they were asked for).
fn merge_pair_sum(replies: &[Bytes], out: &mut BytesMut) {
    let mut acc: Option<(Vec<Bytes>, Vec<i64>)> = None;
    for r in replies {
        let Some(elems) = array_elements(r) else {
            return unexpected(out, "an array");
        };
        if elems.len() % 2 != 0 {
            return unexpected(out, "name/count pairs");
        }
        let mut names = Vec::with_capacity(elems.len() / 2);
        let mut counts = Vec::with_capacity(elems.len() / 2);
        for pair in elems.chunks_exact(2) {
            let (Some(name), Some(count)) = (pair.first(), pair.get(1).and_then(|c| integer(c)))
            else {
                return unexpected(out, "name/count pairs");
            };
            names.push(name.clone());
            counts.push(count);
        }
        match &mut acc {
            None => acc = Some((names, counts)),
            Some((n0, c0)) if *n0 == names => {
                for (a, b) in c0.iter_mut().zip(counts) {
                    *a = a.saturating_add(b);
                }
            }
            Some(_) => return unexpected(out, "the same names from every master"),
        }
    }
    let (names, counts) = acc.unwrap_or_default();
    encode::array_header(out, names.len() * 2);
    for (n, c) in names.iter().zip(counts) {
        out.put_slice(n);
        encode::integer(out, c);
    }
}

/// SLOWLOG GET from every master: all entries, newest first (by each entry's unix time, then
/// its id), so the merged log reads like one server's.
fn merge_newest(replies: &[Bytes], out: &mut BytesMut) {
    let mut entries: Vec<((i64, i64), Bytes)> = Vec::new();
    for r in replies {
        let Some(elems) = array_elements(r) else {
            return unexpected(out, "an array");
        };
        for e in elems {
            let fields = array_elements(&e).unwrap_or_default();
            let id = fields.first().and_then(|f| integer(f)).unwrap_or(0);
            let time = fields.get(1).and_then(|f| integer(f)).unwrap_or(0);
            entries.push(((time, id), e));
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    encode::array_header(out, entries.len());
    for (_, e) in entries {
        out.put_slice(&e);
    }
}

/// The value of an integer reply.
fn integer(reply: &[u8]) -> Option<i64> {
    reply
        .strip_prefix(b":")
        .and_then(|r| r.strip_suffix(b"\r\n"))
        .and_then(parse_int)
}

/// Joins every master's text reply (LATENCY DOCTOR, MEMORY DOCTOR, ...) under a line naming the
/// master; the first error instead, if any master failed.
pub fn merge_text(replies: &[Bytes], nodes: &[&str]) -> Result<String, Bytes> {
    if let Some(e) = first_error(replies) {
        return Err(e.clone());
    }
    let mut out = String::new();
    for (i, r) in replies.iter().enumerate() {
        let Some(text) = bulk_text(r) else {
            return Err(Bytes::from_static(
                b"-ERR slotgate: unexpected backend reply while merging text\r\n",
            ));
        };
        out.push_str(&format!(
            "--- master {} ---\n",
            nodes.get(i).copied().unwrap_or("?")
        ));
        out.push_str(&text);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Rewrites a master's SCAN reply `[cursor, [keys]]` with slotgate's cursor: the master's own
/// cursor shifted left by 8 bits, the master's index (among `masters`) in the low 8 bits; a
/// finished master hands over to the next, the last one ends the scan with 0.
pub fn rewrite_scan_reply(reply: &Bytes, index: usize, masters: usize, out: &mut BytesMut) {
    if ReplyKind::of(reply) == ReplyKind::Error {
        return out.put_slice(reply);
    }
    let Some(elems) = array_elements(reply) else {
        return unexpected(out, "SCAN");
    };
    let (Some(cursor), Some(keys)) = (elems.first().and_then(|c| bulk_text(c)), elems.get(1))
    else {
        return unexpected(out, "SCAN");
    };
    let Ok(node_cursor) = cursor.parse::<u64>() else {
        return unexpected(out, "SCAN");
    };
    let next = if node_cursor != 0 {
        match node_cursor.checked_shl(8).filter(|c| c >> 8 == node_cursor) {
            Some(c) => c | index as u64,
            None => {
                return encode::error(
                    out,
                    "ERR slotgate: a node's SCAN cursor is too large to carry",
                );
            }
        }
    } else if index + 1 < masters {
        (index + 1) as u64
    } else {
        0
    };
    encode::array_header(out, 2);
    encode::bulk(out, next.to_string().as_bytes());
    out.put_slice(keys);
}

/// Element-wise minimum of integer arrays (SCRIPT EXISTS over every master).
/// RANDOMKEY over `n` masters: `replies` holds their keys, then their DBSIZEs. A master that
/// gave a key is drawn with probability proportional to its key count, so every key in the
/// cluster is about as likely as on one Redis.
fn merge_random_key(replies: &[Bytes], random: u64, out: &mut BytesMut) {
    let n = replies.len() / 2;
    let (keys, counts) = replies.split_at(n);
    let is_null = |r: &Bytes| r.as_ref() == b"$-1\r\n" || r.as_ref() == b"_\r\n";
    let weights: SmallVec<[u64; 8]> = keys
        .iter()
        .zip(counts)
        .map(|(k, c)| {
            if is_null(k) {
                0
            } else {
                // A key seen in a master whose count says 0 (it just came) still counts once.
                integer(c).map_or(1, |c| c.max(1) as u64)
            }
        })
        .collect();
    let total: u64 = weights.iter().sum();
    if total == 0 {
        return match keys.first() {
            Some(k) => out.put_slice(k),
            None => unexpected(out, "RANDOMKEY"),
        };
    }
    let mut draw = random % total;
    for (k, w) in keys.iter().zip(&weights) {
        if draw < *w {
            out.put_slice(k);
            return;
        }
        draw -= w;
    }
    unexpected(out, "RANDOMKEY");
}

fn merge_any_ok(replies: &[Bytes], out: &mut BytesMut) {
    let pick = replies
        .iter()
        .find(|r| r.as_ref() == b"+OK\r\n")
        .or_else(|| replies.iter().find(|r| r.starts_with(b"-UNKILLABLE")))
        .or_else(|| replies.first());
    match pick {
        Some(r) => out.put_slice(r),
        None => unexpected(out, "a reply"),
    }
}

fn merge_all_exist(replies: &[Bytes], held: &[bool], out: &mut BytesMut) {
    let mut acc: Option<Vec<i64>> = None;
    for r in replies {
        let Some(elems) = array_elements(r) else {
            return unexpected(out, "an array");
        };
        let mut v = Vec::with_capacity(elems.len());
        for e in elems {
            match integer(&e) {
                Some(n) => v.push(n),
                None => return unexpected(out, "integers"),
            }
        }
        acc = Some(match acc {
            None => v,
            Some(a) if a.len() == v.len() => a.iter().zip(&v).map(|(x, y)| *x.min(y)).collect(),
            Some(_) => return unexpected(out, "arrays of one length"),
        });
    }
    let acc = acc.unwrap_or_default();
    encode::array_header(out, acc.len());
    for (i, n) in acc.into_iter().enumerate() {
        encode::integer(out, n.max(i64::from(held.get(i) == Some(&true))));
    }
}

fn merge_ordered(parts: &[Part], replies: &[Bytes], total_keys: usize, out: &mut BytesMut) {
    // Where each key's element is: (reply index, start, end); found without copying any.
    let mut found: SmallVec<[(u32, u32, u32); 16]> =
        SmallVec::from_elem((u32::MAX, 0, 0), total_keys);
    let mut bytes = 0usize;
    for (r, (part, reply)) in parts.iter().zip(replies).enumerate() {
        let mut keys = part.key_indexes.iter();
        let mut extra = false;
        let whole = each_element(reply, |start, end| {
            match keys.next().and_then(|&ki| found.get_mut(ki as usize)) {
                Some(slot) => *slot = (r as u32, start as u32, end as u32),
                None => extra = true,
            }
            bytes += end - start;
        });
        if whole.is_none() || extra || keys.next().is_some() {
            return unexpected(out, "an array");
        }
    }
    out.reserve(bytes + 23);
    encode::array_header(out, total_keys);
    for &(r, start, end) in &found {
        match replies
            .get(r as usize)
            .and_then(|reply| reply.get(start as usize..end as usize))
        {
            Some(e) => out.put_slice(e),
            None => return unexpected(out, "an array"),
        }
    }
}

/// Calls `f` with the byte range of each element of the RESP array `reply`; the number of
/// elements, or `None` when `reply` is not a whole array.
fn each_element(reply: &[u8], mut f: impl FnMut(usize, usize)) -> Option<usize> {
    let body = reply.strip_prefix(b"*")?;
    let cr = body.iter().position(|&b| b == b'\r')?;
    let n = usize::try_from(parse_int(body.get(..cr)?)?).ok()?;
    let mut off = 1 + cr + 2;
    // The connection's scanner already accepted the whole reply, at any depth it relays.
    let mut scanner = ReplyScanner::relaying(Limits::default());
    for _ in 0..n {
        let len = scanner.scan(reply.get(off..)?).ok()??;
        f(off, off + len);
        off += len;
    }
    Some(n)
}

/// The elements of a RESP array reply, each as its own slice.
fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    each_element(reply, |start, end| out.push(reply.slice(start..end)))?;
    Some(out)
}

/// Which sections an INFO request asks for, as far as slotgate's own are concerned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InfoSections {
    /// `# Proxy` and `# Nodes`: with no argument, `default`, `all`, `everything`, `proxy` or
    /// `nodes`; never with only Redis' own sections named (`INFO keyspace`).
    pub proxy: bool,
}

impl InfoSections {
    /// The sections an `INFO [section ...]` frame names.
    pub fn of(frame: &[u8]) -> Self {
        let mut buf = BytesMut::from(frame);
        let Ok(Some(req)) = crate::protocol::RequestParser::new(Limits::default()).parse(&mut buf)
        else {
            return InfoSections { proxy: true };
        };
        if req.argc() <= 1 {
            return InfoSections { proxy: true };
        }
        let proxy = (1..req.argc()).any(|i| {
            let a = req.arg(i).unwrap_or_default();
            ["default", "all", "everything", "proxy", "nodes"]
                .iter()
                .any(|s| a.eq_ignore_ascii_case(s.as_bytes()))
        });
        InfoSections { proxy }
    }
}

/// What `# Server` says of the process the client talks to: slotgate's own, not a node's.
#[derive(Debug, Default, Clone)]
pub struct OwnServer {
    pub tcp_port: u16,
    pub process_id: u32,
    pub executable: String,
    /// slotgate's own connected clients and commands processed, at the time of the INFO: what
    /// `connected_clients` and `total_commands_processed` say (the client's view). `None`
    /// keeps the first master's.
    pub clients: Option<(u64, u64)>,
}

/// INFO fields that describe data or work spread over the masters: their sum is what one
/// Redis holding all of it would say.
const SUMMED_INFO_FIELDS: &[&str] = &[
    "blocked_clients",
    "pubsub_channels",
    "pubsub_patterns",
    "keyspace_hits",
    "keyspace_misses",
    "expired_keys",
    "evicted_keys",
    "total_error_replies",
    "rdb_changes_since_last_save",
    "used_memory",
    "used_memory_dataset",
];

/// Bytes as Redis writes `used_memory_human` (`bytesToHuman`).
fn bytes_to_human(n: i64) -> String {
    let n = n.max(0) as f64;
    let units = ["K", "M", "G", "T", "P"];
    if n < 1024.0 {
        return format!("{n}B");
    }
    let mut v = n / 1024.0;
    for u in units {
        if v < 1024.0 {
            return format!("{v:.2}{u}");
        }
        v /= 1024.0;
    }
    format!("{:.2}P", v * 1024.0)
}

/// Merges the INFO texts of every master: the first master's sections, with the `# Keyspace`
/// counts summed over all of them, the fields of [`SUMMED_INFO_FIELDS`] summed, every master's
/// `# Errorstats` lines merged (counts summed per error), the cluster fields rewritten to what
/// a standalone server says, the fields of `# Server` that describe the process the client
/// talks to and the client counts taken from `own`, and `proxy_section` appended.
pub fn merge_info(
    replies: &[Bytes],
    proxy_section: &str,
    own: &OwnServer,
) -> Result<String, Bytes> {
    if let Some(e) = first_error(replies) {
        return Err(e.clone());
    }
    let texts: Vec<String> = replies.iter().filter_map(|r| bulk_text(r)).collect();
    let first = texts.first().cloned().unwrap_or_default();
    let mut keyspace: Vec<(String, [i64; 3])> = Vec::new();
    for t in &texts {
        let mut in_ks = false;
        for line in t.lines() {
            if line.starts_with('#') {
                in_ks = line.trim() == "# Keyspace";
                continue;
            }
            if !in_ks {
                continue;
            }
            let Some((db, rest)) = line.trim().split_once(':') else {
                continue;
            };
            let mut vals = [0i64; 3];
            for kv in rest.split(',') {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v: i64 = v.parse().unwrap_or(0);
                match k {
                    "keys" => vals[0] = v,
                    "expires" => vals[1] = v,
                    "avg_ttl" => vals[2] = v,
                    _ => {}
                }
            }
            match keyspace.iter_mut().find(|(d, _)| d == db) {
                Some((_, acc)) => {
                    acc[0] += vals[0];
                    acc[1] += vals[1];
                    acc[2] = acc[2].max(vals[2]);
                }
                None => keyspace.push((db.to_string(), vals)),
            }
        }
    }
    // Summed fields and error counts, over every master.
    let mut sums: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    let mut errors: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for t in &texts {
        for line in t.lines() {
            let Some((k, v)) = line.trim_end().split_once(':') else {
                continue;
            };
            if let Some(&f) = SUMMED_INFO_FIELDS.iter().find(|&&f| f == k) {
                *sums.entry(f).or_default() += v.parse::<i64>().unwrap_or(0);
            } else if let Some(kind) = k.strip_prefix("errorstat_") {
                let n = v.strip_prefix("count=").and_then(|n| n.parse::<i64>().ok());
                *errors.entry(kind.to_string()).or_default() += n.unwrap_or(0);
            }
        }
    }
    let mut out = String::with_capacity(first.len() + 256);
    let mut in_ks = false;
    let mut in_errors = false;
    for line in first.lines() {
        if line.starts_with('#') {
            in_ks = line.trim() == "# Keyspace";
            in_errors = line.trim() == "# Errorstats";
            out.push_str(line);
            out.push_str("\r\n");
            if in_errors {
                for (kind, n) in &errors {
                    out.push_str(&format!("errorstat_{kind}:count={n}\r\n"));
                }
            }
            if in_ks {
                for (db, v) in &keyspace {
                    out.push_str(&format!(
                        "{db}:keys={},expires={},avg_ttl={}\r\n",
                        v[0], v[1], v[2]
                    ));
                }
            }
            continue;
        }
        if in_ks || in_errors && !line.trim().is_empty() {
            continue;
        }
        let line = line.trim_end();
        let field = line.split_once(':').map_or("", |(k, _)| k);
        if let Some(sum) = sums.get(field) {
            out.push_str(&format!("{field}:{sum}\r\n"));
            continue;
        }
        match (line, field) {
            (_, "used_memory_human") if sums.contains_key("used_memory") => {
                let human = bytes_to_human(sums.get("used_memory").copied().unwrap_or(0));
                out.push_str(&format!("used_memory_human:{human}"));
            }
            (_, "connected_clients") if own.clients.is_some() => {
                let n = own.clients.map_or(0, |c| c.0);
                out.push_str(&format!("connected_clients:{n}"));
            }
            (_, "total_commands_processed") if own.clients.is_some() => {
                let n = own.clients.map_or(0, |c| c.1);
                out.push_str(&format!("total_commands_processed:{n}"));
            }
            ("redis_mode:cluster", _) => out.push_str("redis_mode:standalone"),
            ("cluster_enabled:1", _) => out.push_str("cluster_enabled:0"),
            (_, "tcp_port") => out.push_str(&format!("tcp_port:{}", own.tcp_port)),
            (_, "process_id") => out.push_str(&format!("process_id:{}", own.process_id)),
            (_, "executable") => out.push_str(&format!("executable:{}", own.executable)),
            _ => out.push_str(line),
        }
        out.push_str("\r\n");
    }
    if !proxy_section.is_empty() {
        if !out.is_empty() && !out.ends_with("\r\n\r\n") {
            out.push_str("\r\n");
        }
        out.push_str(proxy_section);
    }
    Ok(out)
}

/// The text of a bulk string or verbatim reply.
pub fn bulk_text(reply: &[u8]) -> Option<String> {
    let t = *reply.first()?;
    if t != b'$' && t != b'=' {
        return None;
    }
    let cr = reply.iter().position(|&b| b == b'\r')?;
    let n = usize::try_from(parse_int(reply.get(1..cr)?)?).ok()?;
    let body = reply.get(cr + 2..cr + 2 + n)?;
    let body = if t == b'=' { body.get(4..)? } else { body };
    Some(String::from_utf8_lossy(body).into_owned())
}

/// Entry points for the fuzz targets in `fuzz/` (not used by the proxy).
pub mod fuzzing {
    use bytes::{Bytes, BytesMut};

    use super::{
        Merge, MergeWith, OwnServer, bulk_text, merge, merge_info, merge_text, rewrite_scan_reply,
        split,
    };
    use crate::protocol::encode;
    use crate::protocol::{Limits, ReplyScanner, Request};

    const KINDS: [Merge; 13] = [
        Merge::Ordered,
        Merge::Sum,
        Merge::AllOk,
        Merge::AnyOk,
        Merge::Info,
        Merge::Same,
        Merge::AllExist,
        Merge::Concat,
        Merge::RandomKey,
        Merge::Union,
        Merge::PairSum,
        Merge::Newest,
        Merge::Text,
    ];

    /// Merges the whole frames a backend could send (`data` after its first two bytes, cut by
    /// the reply scanner as a connection cuts them) as the replies of a split MGET or MSET and
    /// of a fan-out, rewrites them as SCAN replies, and reads them as INFO and text: whatever
    /// the frames, every merge ends in one well-formed reply and nothing panics.
    pub fn merge_replies(data: &[u8]) {
        let (Some(&pick), Some(&nkeys)) = (data.first(), data.get(1)) else {
            return;
        };
        let kind = KINDS
            .get(usize::from(pick) % KINDS.len())
            .copied()
            .unwrap_or(Merge::Sum);
        let limits = Limits {
            max_bulk_len: 4096,
            max_reply_depth: 16,
            ..Limits::default()
        };
        let mut scanner = ReplyScanner::new(limits);
        let mut buf = BytesMut::from(data.get(2..).unwrap_or_default());
        let mut replies = Vec::new();
        while let Ok(Some(n)) = scanner.scan(&buf) {
            replies.push(buf.split_to(n).freeze());
            if replies.len() == 16 {
                break;
            }
        }
        // A request of up to 8 keys over up to 4 slots, split as a session splits it.
        let keys = 1 + usize::from(nkeys % 8);
        let names: Vec<Vec<u8>> = (0..keys).map(|i| format!("k{i}").into_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![b"MGET"];
        args.extend(names.iter().map(Vec::as_slice));
        let req = Request::from_args(&args);
        let positions: Vec<u32> = (1..=keys as u32).collect();
        let slots: Vec<u16> = (0..keys).map(|i| (i % 4) as u16).collect();
        let parts = split(&req, &positions, &slots, 1).unwrap_or_default();
        let check = |out: &BytesMut| {
            let mut s = ReplyScanner::new(Limits::default());
            assert_eq!(
                s.scan(out).ok().flatten(),
                Some(out.len()),
                "one whole reply"
            );
        };
        let mut out = BytesMut::new();
        let n = if kind == Merge::Ordered {
            parts.len()
        } else {
            replies.len()
        };
        let given: Vec<Bytes> = replies.iter().take(n).cloned().collect();
        if kind != Merge::Ordered || given.len() == parts.len() {
            let own = OwnServer::default();
            let nodes = ["a:1", "b:2", "c:3", "d:4"];
            let with = MergeWith {
                parts: &parts,
                total_keys: keys,
                nodes: &nodes,
                proxy_section: "# Proxy\r\nx:1\r\n",
                own_server: Some(&own),
                ..MergeWith::replies_only(encode::Proto::Resp2)
            };
            merge(kind, with, &given, &mut out);
            check(&out);
        }
        for r in &replies {
            let mut out = BytesMut::new();
            rewrite_scan_reply(r, usize::from(pick % 4), 4, &mut out);
            check(&out);
            let _ = bulk_text(r);
        }
        let _ = merge_info(&replies, "# Proxy\r\n", &Default::default());
        let nodes: Vec<&str> = replies.iter().map(|_| "127.0.0.1:7000").collect();
        let _ = merge_text(&replies, &nodes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_text_fan_outs_merge_here_too() {
        let bulk = |t: &str| Bytes::from(format!("${}\r\n{t}\r\n", t.len()));
        let own = OwnServer::default();
        let with = MergeWith {
            own_server: Some(&own),
            ..MergeWith::replies_only(encode::Proto::Resp2)
        };
        let mut out = BytesMut::new();
        let infos = [
            bulk("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n"),
            bulk("# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\n"),
        ];
        merge(Merge::Info, with, &infos, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("db0:keys=5,expires=1"), "{text}");
        let nodes = ["10.0.0.1:7000", "10.0.0.2:7000"];
        let with = MergeWith {
            nodes: &nodes,
            ..MergeWith::replies_only(encode::Proto::Resp2)
        };
        let mut out = BytesMut::new();
        merge(
            Merge::Text,
            with,
            &[bulk("fine"), bulk("also fine")],
            &mut out,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("10.0.0.1:7000")
                && text.contains("also fine")
                && !text.contains("unexpected"),
            "{text}"
        );
    }

    /// `merge` of a split command's parts.
    fn merge_parts(
        kind: Merge,
        parts: &[Part],
        replies: &[Bytes],
        total_keys: usize,
        out: &mut BytesMut,
    ) {
        let with = MergeWith {
            parts,
            total_keys,
            ..MergeWith::replies_only(encode::Proto::Resp2)
        };
        merge(kind, with, replies, out)
    }

    /// [`split`] with the keys' slots computed as the session computes them.
    fn split_all(req: &Request, keys: &[u32], step: u8) -> Vec<Part> {
        let mut slots = crate::command::KeySlots::new();
        let _ = crate::command::key_slots(req, keys, &mut slots);
        split(req, keys, &slots, step).unwrap_or_default()
    }

    proptest::proptest! {
        /// Whatever the argument count, a split is refused whole or gives parts that are each
        /// one complete frame, which together carry every key with its values exactly once.
        #[test]
        fn should_split_into_complete_frames_or_not_at_all(
            args in proptest::collection::vec("[a-e{}]{0,3}", 0..12),
            step in 1u8..=2,
        ) {
            let mut all = vec!["MSET".to_string()];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let req = Request::from_args(&refs);
            let keys: Vec<u32> = (1..refs.len() as u32).step_by(step as usize).collect();
            let mut slots = crate::command::KeySlots::new();
            let _ = crate::command::key_slots(&req, &keys, &mut slots);
            let complete = (refs.len() - 1).is_multiple_of(step as usize);
            match split(&req, &keys, &slots, step) {
                None => proptest::prop_assert!(!complete),
                Some(parts) => {
                    proptest::prop_assert!(complete);
                    let mut seen: Vec<Vec<u8>> = Vec::new();
                    for p in &parts {
                        let mut buf = BytesMut::from(&p.request[..]);
                        let part = crate::protocol::RequestParser::new(Limits::default())
                            .parse(&mut buf);
                        let Ok(Some(part)) = part else {
                            return Err(proptest::test_runner::TestCaseError::fail("incomplete part"));
                        };
                        proptest::prop_assert!(buf.is_empty(), "one frame per part");
                        proptest::prop_assert_eq!(part.argc(), 1 + p.key_indexes.len() * step as usize);
                        for i in 1..part.argc() {
                            seen.push(part.arg(i).unwrap_or_default().to_vec());
                        }
                    }
                    let mut want: Vec<Vec<u8>> = refs[1..].iter().map(|a| a.as_bytes().to_vec()).collect();
                    want.sort();
                    seen.sort();
                    proptest::prop_assert_eq!(seen, want);
                }
            }
        }
    }

    #[test]
    fn should_refuse_to_split_a_key_without_its_value() {
        let req = Request::from_args(&["MSET", "a", "1", "b"]);
        let mut slots = crate::command::KeySlots::new();
        let _ = crate::command::key_slots(&req, &[1, 3], &mut slots);
        assert!(split(&req, &[1, 3], &slots, 2).is_none());
        assert!(split(&req, &[1, 3], &slots[..1], 2).is_none());
    }

    #[test]
    fn should_split_per_slot_keeping_values_with_their_keys() {
        let req = Request::from_args(&["MSET", "foo", "1", "bar", "2", "{foo}x", "3"]);
        let parts = split_all(&req, &[1, 3, 5], 2);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            &parts[0].request[..],
            b"*5\r\n$4\r\nMSET\r\n$3\r\nfoo\r\n$1\r\n1\r\n$6\r\n{foo}x\r\n$1\r\n3\r\n"
        );
        assert_eq!(parts[0].key_indexes.as_slice(), &[0, 2]);
        assert_eq!(
            &parts[1].request[..],
            b"*3\r\n$4\r\nMSET\r\n$3\r\nbar\r\n$1\r\n2\r\n"
        );
    }

    #[test]
    fn should_merge_mget_in_original_key_order() {
        let req = Request::from_args(&["MGET", "foo", "bar", "{foo}x"]);
        let parts = split_all(&req, &[1, 2, 3], 1);
        let replies = [
            Bytes::from_static(b"*2\r\n$1\r\na\r\n$-1\r\n"),
            Bytes::from_static(b"*1\r\n$1\r\nb\r\n"),
        ];
        let mut out = BytesMut::new();
        merge_parts(Merge::Ordered, &parts, &replies, 3, &mut out);
        assert_eq!(&out[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n");
    }

    #[test]
    fn should_sum_counts_and_pass_the_first_error() {
        let mut out = BytesMut::new();
        merge_sum(
            &[Bytes::from_static(b":2\r\n"), Bytes::from_static(b":3\r\n")],
            &mut out,
        );
        assert_eq!(&out[..], b":5\r\n");
        let mut out = BytesMut::new();
        merge_parts(
            Merge::AllOk,
            &[],
            &[
                Bytes::from_static(b"+OK\r\n"),
                Bytes::from_static(b"-ERR x\r\n"),
            ],
            0,
            &mut out,
        );
        assert_eq!(&out[..], b"-ERR x\r\n");
    }

    #[test]
    fn should_say_a_script_exists_only_where_every_master_has_it() {
        let mut out = BytesMut::new();
        merge_parts(
            Merge::AllExist,
            &[],
            &[
                Bytes::from_static(b"*2\r\n:1\r\n:1\r\n"),
                Bytes::from_static(b"*2\r\n:1\r\n:0\r\n"),
            ],
            0,
            &mut out,
        );
        assert_eq!(&out[..], b"*2\r\n:1\r\n:0\r\n");
        // A script slotgate holds the body of exists for its clients: EVALSHA loads it where
        // it is missing.
        let mut out = BytesMut::new();
        let with = MergeWith {
            held: &[false, true],
            ..MergeWith::replies_only(encode::Proto::Resp2)
        };
        merge(
            Merge::AllExist,
            with,
            &[
                Bytes::from_static(b"*2\r\n:0\r\n:0\r\n"),
                Bytes::from_static(b"*2\r\n:0\r\n:1\r\n"),
            ],
            &mut out,
        );
        assert_eq!(&out[..], b"*2\r\n:0\r\n:1\r\n");
    }

    #[test]
    fn randomkey_draws_a_master_by_its_key_count() {
        let key = |k: &'static [u8]| Bytes::from_static(k);
        let count = |n: i64| Bytes::from(format!(":{n}\r\n"));
        let replies = [
            key(b"$1\r\na\r\n"),
            key(b"$-1\r\n"),
            key(b"$1\r\nc\r\n"),
            count(3),
            count(0),
            count(1),
        ];
        let draw = |random: u64| {
            let mut out = BytesMut::new();
            let with = MergeWith {
                random,
                ..MergeWith::replies_only(encode::Proto::Resp2)
            };
            merge(Merge::RandomKey, with, &replies, &mut out);
            out
        };
        // Four keys in all: draws 0-2 fall on the first master's three, 3 on the third's one.
        let got: Vec<BytesMut> = (0..8).map(draw).collect();
        for (i, g) in got.iter().enumerate() {
            let want: &[u8] = if i % 4 < 3 {
                b"$1\r\na\r\n"
            } else {
                b"$1\r\nc\r\n"
            };
            assert_eq!(&g[..], want, "draw {i}");
        }
        // Every master empty: null, as on one Redis.
        let empty = [key(b"$-1\r\n"), key(b"$-1\r\n"), count(0), count(0)];
        let mut out = BytesMut::new();
        merge(
            Merge::RandomKey,
            MergeWith::replies_only(encode::Proto::Resp2),
            &empty,
            &mut out,
        );
        assert_eq!(&out[..], b"$-1\r\n");
    }

    #[test]
    fn info_fields_of_data_are_summed_errors_merged_and_client_counts_are_slotgates() {
        let bulk = |t: &str| Bytes::from(format!("${}\r\n{t}\r\n", t.len()));
        let a = bulk(
            "# Clients\r\nconnected_clients:7\r\nblocked_clients:1\r\n\r\n\
             # Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n\r\n\
             # Stats\r\ntotal_commands_processed:50\r\nkeyspace_hits:3\r\n\r\n\
             # Errorstats\r\nerrorstat_ERR:count=1\r\n",
        );
        let b = bulk(
            "# Clients\r\nconnected_clients:9\r\nblocked_clients:2\r\n\r\n\
             # Memory\r\nused_memory:2097152\r\nused_memory_human:2.00M\r\n\r\n\
             # Stats\r\ntotal_commands_processed:60\r\nkeyspace_hits:4\r\n\r\n\
             # Errorstats\r\nerrorstat_ERR:count=2\r\nerrorstat_WRONGTYPE:count=5\r\n",
        );
        let own = OwnServer {
            clients: Some((3, 42)),
            ..OwnServer::default()
        };
        let text = merge_info(&[a, b], "", &own).unwrap_or_default();
        for want in [
            "connected_clients:3\r\n",
            "blocked_clients:3\r\n",
            "used_memory:3145728\r\n",
            "used_memory_human:3.00M\r\n",
            "total_commands_processed:42\r\n",
            "keyspace_hits:7\r\n",
            "# Errorstats\r\nerrorstat_ERR:count=3\r\nerrorstat_WRONGTYPE:count=5\r\n",
        ] {
            assert!(text.contains(want), "{want:?} in {text}");
        }
        assert_eq!(text.matches("errorstat_").count(), 2, "{text}");
        assert_eq!(bytes_to_human(1000), "1000B");
        assert_eq!(bytes_to_human(1536), "1.50K");
    }

    #[test]
    fn a_kill_answers_ok_from_the_busy_master_else_its_refusal_else_notbusy() {
        let notbusy = Bytes::from_static(b"-NOTBUSY No scripts in execution right now.\r\n");
        let ok = Bytes::from_static(b"+OK\r\n");
        let unkillable = Bytes::from_static(b"-UNKILLABLE Sorry the script already executed write commands against the dataset.\r\n");
        for (replies, want) in [
            (vec![notbusy.clone(), ok.clone(), notbusy.clone()], &ok),
            (vec![notbusy.clone(), unkillable.clone()], &unkillable),
            (vec![notbusy.clone(), notbusy.clone()], &notbusy),
        ] {
            let mut out = BytesMut::new();
            merge_parts(Merge::AnyOk, &[], &replies, 0, &mut out);
            assert_eq!(&out[..], &want[..]);
        }
    }

    #[test]
    fn should_carry_the_master_index_in_the_scan_cursor() {
        let reply = Bytes::from_static(b"*2\r\n$2\r\n17\r\n*1\r\n$1\r\na\r\n");
        let mut out = BytesMut::new();
        rewrite_scan_reply(&reply, 2, 3, &mut out);
        assert_eq!(
            &out[..],
            format!("*2\r\n$4\r\n{}\r\n*1\r\n$1\r\na\r\n", (17 << 8) | 2).as_bytes()
        );
        let done = Bytes::from_static(b"*2\r\n$1\r\n0\r\n*0\r\n");
        let mut out = BytesMut::new();
        rewrite_scan_reply(&done, 1, 3, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\n2\r\n*0\r\n");
        let mut out = BytesMut::new();
        rewrite_scan_reply(&done, 2, 3, &mut out);
        assert_eq!(&out[..], b"*2\r\n$1\r\n0\r\n*0\r\n");
    }

    #[test]
    fn should_cap_concatenated_keys() {
        let r = Bytes::from_static(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let mut out = BytesMut::new();
        merge_concat(&[r.clone(), r.clone()], 10, &mut out);
        assert!(out.starts_with(b"*4\r\n"));
        let mut out = BytesMut::new();
        merge_concat(&[r.clone(), r], 3, &mut out);
        assert!(out.starts_with(b"-ERR slotgate: the reply would hold more than 3 keys"));
    }

    #[test]
    fn should_answer_an_error_for_a_malformed_part() {
        let req = Request::from_args(&["MGET", "foo", "bar"]);
        let parts = split_all(&req, &[1, 2], 1);
        let mut out = BytesMut::new();
        merge_parts(
            Merge::Ordered,
            &parts,
            &[
                Bytes::from_static(b"+OK\r\n"),
                Bytes::from_static(b"*1\r\n$1\r\nb\r\n"),
            ],
            2,
            &mut out,
        );
        assert!(out.starts_with(b"-ERR slotgate"));
    }

    #[test]
    fn should_sum_keyspace_in_info() {
        let bulk = |t: &str| {
            let mut b = BytesMut::new();
            encode::bulk(&mut b, t.as_bytes());
            b.freeze()
        };
        let a = bulk(
            "# Server\r\nredis_mode:cluster\r\n# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n",
        );
        let b = bulk(
            "# Server\r\nredis_mode:cluster\r\n# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=5\r\n",
        );
        let text =
            merge_info(&[a, b], "# Proxy\r\nx:1\r\n", &Default::default()).unwrap_or_default();
        assert!(text.contains("redis_mode:standalone"), "{text}");
        assert!(text.contains("db0:keys=5,expires=1,avg_ttl=5"), "{text}");
        assert!(text.ends_with("# Proxy\r\nx:1\r\n"), "{text}");
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn should_merge_pubsub_introspection_like_one_server() {
        let mut out = BytesMut::new();
        merge_parts(
            Merge::Union,
            &[],
            &[
                b("*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
                b("*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
            ],
            0,
            &mut out,
        );
        assert_eq!(&out[..], b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
        let mut out = BytesMut::new();
        merge_parts(
            Merge::PairSum,
            &[],
            &[
                b("*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:0\r\n"),
                b("*4\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:5\r\n"),
            ],
            0,
            &mut out,
        );
        assert_eq!(&out[..], b"*4\r\n$1\r\na\r\n:3\r\n$1\r\nb\r\n:5\r\n");
        // Masters that disagree on the names are a backend fault, not a merge.
        let mut out = BytesMut::new();
        merge_parts(
            Merge::PairSum,
            &[],
            &[b("*2\r\n$1\r\na\r\n:1\r\n"), b("*2\r\n$1\r\nz\r\n:1\r\n")],
            0,
            &mut out,
        );
        assert!(out.starts_with(b"-ERR slotgate"));
    }

    #[test]
    fn should_order_slowlog_entries_newest_first() {
        let entry = |id: i64, t: i64| format!("*2\r\n:{id}\r\n:{t}\r\n");
        let one = b(&format!("*2\r\n{}{}", entry(5, 100), entry(4, 90)));
        let two = b(&format!("*1\r\n{}", entry(9, 95)));
        let mut out = BytesMut::new();
        merge_parts(Merge::Newest, &[], &[one, two], 0, &mut out);
        let want = format!("*3\r\n{}{}{}", entry(5, 100), entry(9, 95), entry(4, 90));
        assert_eq!(&out[..], want.as_bytes());
    }

    #[test]
    fn should_join_texts_under_each_masters_name() {
        let text = merge_text(
            &[b("$2\r\nhi\r\n"), b("=9\r\ntxt:there\r\n")],
            &["n1", "n2"],
        )
        .unwrap();
        assert_eq!(text, "--- master n1 ---\nhi\n--- master n2 ---\nthere\n");
        assert!(merge_text(&[b("-ERR x\r\n")], &["n1"]).is_err());
    }
}
