//! The backend reply scanner: finds where each complete RESP2/RESP3 reply ends, without
//! decoding it, so the reply can be handed on as one `Bytes` slice.
//!
//! The scanner keeps its place inside a partial reply (a small stack of how many elements each
//! open aggregate still needs), so a large reply arriving in many reads is scanned once. It must
//! never recurse and never wait for more bytes than a configured bulk length. Nesting beyond its
//! limit is refused ([`ReplyScanner::new`], for replies slotgate decodes itself) or, on a data
//! connection ([`ReplyScanner::relaying`]), scanned to the reply's end and flagged, so that
//! reply alone is replaced by an error and the connection stays in step.

use super::{Limits, MAX_REPLY_DEPTH_LIMIT, ProtocolError, find_crlf, parse_int, short_len};

/// What the first byte of a complete reply says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `-` or `!`: an error; the session looks for MOVED, ASK and TRYAGAIN here.
    Error,
    /// Anything else.
    Value,
}

impl ReplyKind {
    pub fn of(reply: &[u8]) -> ReplyKind {
        match reply.first() {
            Some(b'-' | b'!') => ReplyKind::Error,
            _ => ReplyKind::Value,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Open {
    remaining: u64,
    /// An attribute map (`|`) precedes the element it annotates and does not count as one.
    attribute: bool,
}

/// Resumable reply boundary scanner; one per backend connection.
#[derive(Debug)]
pub struct ReplyScanner {
    limits: Limits,
    /// Offset of the next unscanned element header in the current reply.
    pos: usize,
    stack: Vec<Open>,
    /// Nesting beyond the limit is scanned through (and flagged) rather than refused.
    relay_deep: bool,
    /// The reply being scanned went beyond the limit.
    too_deep: bool,
    /// A reply that went beyond the limit was completed since [`Self::take_too_deep`].
    deep_done: bool,
}

impl ReplyScanner {
    /// A scanner that refuses nesting beyond `limits.max_reply_depth` with an error.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            pos: 0,
            stack: Vec::new(),
            relay_deep: false,
            too_deep: false,
            deep_done: false,
        }
    }

    /// A scanner for a data connection: a reply nested beyond the limit is still scanned to its
    /// end (its stack costs 16 bytes per level, and each level is at least 4 bytes of the reply,
    /// which is buffered until complete anyway); [`Self::take_too_deep`] then says so. Nesting
    /// beyond [`MAX_REPLY_DEPTH_LIMIT`] is refused even so: no real server sends it, and a
    /// node that never closes its arrays must not grow the stack without bound.
    pub fn relaying(limits: Limits) -> Self {
        Self {
            relay_deep: true,
            ..Self::new(limits)
        }
    }

    /// Whether a reply `scan` returned since the last call was nested beyond the limit (and
    /// clears it). A reply still incomplete is not counted until it is returned.
    #[inline]
    pub fn take_too_deep(&mut self) -> bool {
        std::mem::take(&mut self.deep_done)
    }

    /// Returns the length of the complete reply at the front of `buf`, or `Ok(None)` if more
    /// bytes are needed. After `Some(n)` the caller must remove exactly `n` bytes from the front
    /// of `buf` before calling again; after `None` it must only append.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let Some(&t) = buf.get(self.pos) else {
                return Ok(None);
            };
            // Fast paths: a null bulk string (a missing key) and a bulk string with a short plain
            // length, the usual replies.
            if t == b'$' && buf.get(self.pos + 1..self.pos + 5) == Some(b"-1\r\n") {
                self.pos += 5;
                if let Some(n) = self.close_element() {
                    return Ok(Some(n));
                }
                continue;
            }
            if t == b'$'
                && let Some((len, after_line)) = short_len(buf, self.pos + 1)
            {
                if len > self.limits.max_bulk_len {
                    return Err(ProtocolError::BadReplyLength);
                }
                let end = after_line + len + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if buf.get(end - 2..end) != Some(b"\r\n") {
                    return Err(ProtocolError::BadReplyTerminator);
                }
                self.pos = end;
                if let Some(n) = self.close_element() {
                    return Ok(Some(n));
                }
                continue;
            }
            let Some(cr) = find_crlf(buf, self.pos + 1) else {
                if buf.len() - self.pos > self.limits.max_bulk_len.max(self.limits.max_inline_len) {
                    return Err(ProtocolError::BadReplyTerminator);
                }
                return Ok(None);
            };
            let line = buf.get(self.pos + 1..cr).unwrap_or_default();
            let after_line = cr + 2;
            match t {
                b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => self.pos = after_line,
                b'$' | b'!' | b'=' => {
                    let len = parse_int(line).ok_or(ProtocolError::BadReplyLength)?;
                    if len == -1 && t == b'$' {
                        self.pos = after_line;
                    } else {
                        if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                            return Err(ProtocolError::BadReplyLength);
                        }
                        let end = after_line + len as usize + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if buf.get(end - 2..end) != Some(b"\r\n") {
                            return Err(ProtocolError::BadReplyTerminator);
                        }
                        self.pos = end;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_int(line).ok_or(ProtocolError::BadReplyLength)?;
                    self.pos = after_line;
                    if n == -1 && t == b'*' {
                        // RESP2 null array: a complete element.
                    } else if n < 0 {
                        return Err(ProtocolError::BadReplyLength);
                    } else if n > 0 {
                        if self.stack.len() >= self.limits.max_reply_depth {
                            if !self.relay_deep || self.stack.len() >= MAX_REPLY_DEPTH_LIMIT {
                                return Err(ProtocolError::ReplyTooDeep(self.stack.len()));
                            }
                            self.too_deep = true;
                        }
                        let per = if matches!(t, b'%' | b'|') { 2 } else { 1 };
                        self.stack.push(Open {
                            remaining: n as u64 * per,
                            attribute: t == b'|',
                        });
                        continue;
                    } else if t == b'|' {
                        // An empty attribute annotates the element that follows.
                        continue;
                    }
                }
                other => return Err(ProtocolError::BadReplyType(other)),
            }
            if let Some(n) = self.close_element() {
                return Ok(Some(n));
            }
        }
    }

    /// One element is complete: closes every aggregate it completes. The reply's length when
    /// that was its last element.
    fn close_element(&mut self) -> Option<usize> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                let n = self.pos;
                self.pos = 0;
                if self.too_deep {
                    self.too_deep = false;
                    self.deep_done = true;
                }
                return Some(n);
            };
            top.remaining -= 1;
            if top.remaining > 0 {
                return None;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scan_all(input: &[u8]) -> Result<Vec<usize>, ProtocolError> {
        let mut s = ReplyScanner::new(Limits::default());
        let mut out = Vec::new();
        let mut off = 0;
        while let Some(n) = s.scan(&input[off..])? {
            out.push(n);
            off += n;
        }
        Ok(out)
    }

    #[test]
    fn should_find_every_resp2_and_resp3_type() {
        let input: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR x\r\n",
            b":12\r\n",
            b"$3\r\nfoo\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b"(123\r\n",
            b"!3\r\nerr\r\n",
            b"=7\r\ntxt:abc\r\n",
            b"%1\r\n+k\r\n*1\r\n+v\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">2\r\n+message\r\n+x\r\n",
            b"|1\r\n+ttl\r\n:3\r\n+value\r\n",
            b"*2\r\n|1\r\n+a\r\n+b\r\n+c\r\n+d\r\n",
        ];
        let joined: Vec<u8> = input.concat();
        let lens: Vec<usize> = input.iter().map(|p| p.len()).collect();
        assert_eq!(scan_all(&joined), Ok(lens.clone()));
        // Split at every byte: never a wrong boundary, never an error.
        for cut in 0..joined.len() {
            let mut s = ReplyScanner::new(Limits::default());
            let mut got = Vec::new();
            let mut buf = joined[..cut].to_vec();
            let mut off = 0;
            while let Some(n) = s.scan(&buf[off..]).unwrap_or(None) {
                got.push(n);
                off += n;
            }
            buf.extend_from_slice(&joined[cut..]);
            while let Some(n) = s.scan(&buf[off..]).unwrap_or(None) {
                got.push(n);
                off += n;
            }
            assert_eq!(got, lens, "cut at {cut}");
        }
    }

    #[test]
    fn a_relaying_scanner_reads_a_too_deep_reply_to_its_end_and_flags_it_alone() {
        let limits = Limits {
            max_reply_depth: 8,
            ..Limits::default()
        };
        // What Redis sends for a Lua table that holds itself, nested 20 levels, then a plain
        // reply behind it on the same connection.
        let mut deep = b"*1\r\n".repeat(20);
        deep.extend_from_slice(b"-ERR reached lua stack limit\r\n");
        let shallow = b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n";
        let wire = [&deep[..], shallow, b"+OK\r\n"].concat();
        for chunk in [1, 3, wire.len()] {
            let mut s = ReplyScanner::relaying(limits);
            let mut got = Vec::new();
            let (mut buf, mut off) = (Vec::new(), 0);
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(n) = s.scan(&buf[off..]).unwrap() {
                    got.push((n, s.take_too_deep()));
                    off += n;
                }
            }
            assert_eq!(
                got,
                [(deep.len(), true), (shallow.len(), false), (5, false)],
                "chunks of {chunk}"
            );
        }
        // Asked once per read, as a connection asks: the flag survives reads that end inside
        // the deep reply, and shows in the read that completes it.
        for chunk in [1, 7, 50] {
            let mut s = ReplyScanner::relaying(limits);
            let (mut buf, mut off) = (Vec::new(), 0);
            for (i, piece) in wire.chunks(chunk).enumerate() {
                buf.extend_from_slice(piece);
                while let Some(n) = s.scan(&buf[off..]).unwrap() {
                    off += n;
                }
                let completes_deep = (i * chunk..(i + 1) * chunk).contains(&(deep.len() - 1));
                assert_eq!(
                    s.take_too_deep(),
                    completes_deep,
                    "chunks of {chunk}, read {i}"
                );
            }
        }
        // Exactly at the limit is relayed; the refusing scanner refuses one level more.
        let mut s = ReplyScanner::relaying(limits);
        let at = [b"*1\r\n".repeat(8), b":1\r\n".to_vec()].concat();
        assert_eq!(s.scan(&at), Ok(Some(at.len())));
        assert!(!s.take_too_deep());
        let over = [b"*1\r\n".repeat(9), b":1\r\n".to_vec()].concat();
        assert_eq!(
            ReplyScanner::new(limits).scan(&over),
            Err(ProtocolError::ReplyTooDeep(8))
        );
        // A node that never closes its arrays is cut off at the hard limit.
        let endless = b"*1\r\n".repeat(MAX_REPLY_DEPTH_LIMIT + 1);
        assert_eq!(
            ReplyScanner::relaying(limits).scan(&endless),
            Err(ProtocolError::ReplyTooDeep(MAX_REPLY_DEPTH_LIMIT))
        );
    }

    #[test]
    fn should_reject_hostile_replies() {
        let deep = b"*1\r\n".repeat(20_000);
        assert_eq!(scan_all(&deep), Err(ProtocolError::ReplyTooDeep(10_000)));
        let deep3 = b"%1\r\n".repeat(20_000);
        assert_eq!(scan_all(&deep3), Err(ProtocolError::ReplyTooDeep(10_000)));
        assert_eq!(
            scan_all(b"$999999999999\r\n"),
            Err(ProtocolError::BadReplyLength)
        );
        assert_eq!(
            scan_all(b"$3\r\nfooXX"),
            Err(ProtocolError::BadReplyTerminator)
        );
        assert_eq!(scan_all(b"?x\r\n"), Err(ProtocolError::BadReplyType(b'?')));
        assert_eq!(scan_all(b"*?\r\n"), Err(ProtocolError::BadReplyLength));
        assert_eq!(scan_all(b"$-2\r\n"), Err(ProtocolError::BadReplyLength));
    }

    #[test]
    fn should_classify_errors() {
        assert_eq!(ReplyKind::of(b"-MOVED 1 a:1\r\n"), ReplyKind::Error);
        assert_eq!(ReplyKind::of(b"!1\r\nx\r\n"), ReplyKind::Error);
        assert_eq!(ReplyKind::of(b"+OK\r\n"), ReplyKind::Value);
    }

    proptest! {
        #[test]
        fn should_agree_with_redis_protocol_on_resp2_frames(depth in 0usize..4, width in 0usize..5, chunk in 1usize..9) {
            fn build(d: usize, w: usize) -> Vec<u8> {
                if d == 0 { return b"$5\r\nhello\r\n".to_vec(); }
                let mut v = format!("*{w}\r\n").into_bytes();
                for _ in 0..w { v.extend(build(d - 1, w)); }
                v
            }
            let wire = build(depth, width);
            let oracle = redis_protocol::resp2::decode::decode(&wire).ok().flatten().map(|(_, n)| n);
            let mut s = ReplyScanner::new(Limits::default());
            let mut buf = Vec::new();
            let mut got = None;
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                if let Some(n) = s.scan(&buf).map_err(|e| TestCaseError::fail(e.to_string()))? { got = Some(n); }
            }
            prop_assert_eq!(got, oracle);
        }

        #[test]
        fn should_never_panic_on_garbage(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan_all(&input);
        }
    }
}
