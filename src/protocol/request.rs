//! The client request parser: RESP multibulk and inline commands, resumable across reads.
//!
//! A request is returned as the exact bytes it arrived in (inline commands are rewritten once as
//! multibulk, since a backend must not re-split them) plus the offsets of each argument. The
//! parser keeps its position inside a partial request, so bytes already accepted are never read
//! again. It must never allocate in proportion to a length the client announced but did not send.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use super::{Limits, ProtocolError, find_crlf, parse_int, short_len};

/// Where one argument sits inside [`Request::raw`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Arg {
    /// Offset of the `$` of the argument's header.
    header: u32,
    /// Offset of the first data byte.
    start: u32,
    /// Data length.
    len: u32,
}

/// One complete client command: its wire bytes and where each argument lies in them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    raw: Bytes,
    args: SmallVec<[Arg; 6]>,
}

impl Request {
    /// The whole command in multibulk form, ready to forward unchanged.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The wire bytes, taking them instead of sharing them (one reference count less on the
    /// request path).
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// Number of arguments, the command name included.
    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// The data of argument `i`, or nothing past the last.
    #[inline(always)]
    pub fn arg_or_empty(&self, i: usize) -> &[u8] {
        match self.args.get(i) {
            Some(a) => self
                .raw
                .get(a.start as usize..(a.start + a.len) as usize)
                .unwrap_or_default(),
            None => &[],
        }
    }

    /// The data of argument `i` (0 is the command name).
    #[inline]
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let a = self.args.get(i)?;
        self.raw.get(a.start as usize..(a.start + a.len) as usize)
    }

    /// Argument `i`, when it is at most 8 bytes long, packed into a word (its first byte lowest,
    /// zeros above its length) with its length: two names compare as one word. A whole word is
    /// read from the request's bytes when 8 are there, as they are after a command name (CRLF and
    /// usually more follow it).
    pub fn arg_word(&self, i: usize) -> Option<(u64, usize)> {
        let a = self.args.get(i)?;
        let (start, len) = (a.start as usize, a.len as usize);
        if len > 8 {
            return None;
        }
        let word = match self.raw.get(start..start + 8) {
            Some(&[b0, b1, b2, b3, b4, b5, b6, b7]) => {
                u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7])
            }
            _ => {
                let mut w = [0u8; 8];
                w.get_mut(..len)?
                    .copy_from_slice(self.raw.get(start..start + len)?);
                u64::from_le_bytes(w)
            }
        };
        let mask = u64::MAX.checked_shr(64 - 8 * len as u32).unwrap_or(0);
        Some((word & mask, len))
    }

    /// Argument `i` as its complete wire form `$<len>\r\n<data>\r\n`, for re-assembling a
    /// request from some of its arguments without re-encoding them.
    pub fn arg_wire(&self, i: usize) -> Option<&[u8]> {
        let a = self.args.get(i)?;
        self.raw
            .get(a.header as usize..(a.start + a.len) as usize + 2)
    }

    /// Builds a request from argument strings (used for the proxy's own commands and tests).
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        let mut buf = BytesMut::new();
        super::encode::array_header(&mut buf, args.len());
        let mut offsets = SmallVec::new();
        for a in args {
            let a = a.as_ref();
            let header = buf.len() as u32;
            super::encode::bulk(&mut buf, a);
            let len = a.len() as u32;
            let start = (buf.len() - 2 - a.len()) as u32;
            offsets.push(Arg { header, start, len });
        }
        Request {
            raw: buf.freeze(),
            args: offsets,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Between requests. `inline_scanned` is how much of a partial inline line was searched.
    Idle { inline_scanned: usize },
    /// Inside a multibulk of `expected` arguments; `pos` is the next unread byte.
    Multibulk {
        expected: usize,
        pos: usize,
        args: SmallVec<[Arg; 6]>,
    },
}

/// Resumable request parser; one per client connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    /// Bytes the current partial request needs in the buffer before it can progress.
    want: usize,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Idle { inline_scanned: 0 },
            want: 0,
        }
    }

    /// A reload's new limits, checked from the next call on (a request partly read is held to
    /// them too: a lowered limit can refuse it).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// How many bytes the buffer must hold before the next call can make progress, so the
    /// reader can reserve once for a large bulk string instead of growing step by step.
    pub fn want(&self) -> usize {
        self.want
    }

    /// Takes up to `max` complete requests off the front of `buf` into `out`; none when more
    /// bytes are needed. Plain multibulk requests that are already whole are found first and
    /// split off the buffer together (one split, then a cheap slice each); anything else (an
    /// inline command, a partial request, a length written unusually) goes through
    /// [`Self::parse`], one request at a time.
    pub fn parse_many(
        &mut self,
        buf: &mut BytesMut,
        out: &mut Vec<Request>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        if buf.is_empty() {
            return Ok(());
        }
        if matches!(self.state, State::Idle { inline_scanned: 0 }) {
            let first = out.len();
            let mut at = 0usize;
            while out.len() - first < max {
                let Some(rest) = buf.get(at..) else { break };
                let mut args = SmallVec::new();
                let Some(len) = self.whole_multibulk(rest, &mut args) else {
                    break;
                };
                out.push(Request {
                    raw: Bytes::new(),
                    args,
                });
                at += len;
            }
            if at > 0 {
                let chunk = buf.split_to(at).freeze();
                if out.len() - first == 1 {
                    if let Some(req) = out.last_mut() {
                        set_raw(req, chunk);
                    }
                    return Ok(());
                }
                let mut start = 0;
                for req in out.iter_mut().skip(first) {
                    // A request ends where its last argument's data and CRLF end.
                    let len = req
                        .args
                        .last()
                        .map_or(0, |a| (a.start + a.len) as usize + 2);
                    set_raw(req, chunk.slice(start..start + len));
                    start += len;
                }
                return Ok(());
            }
        }
        if let Some(req) = self.parse(buf)? {
            out.push(req);
        }
        Ok(())
    }

    /// A complete multibulk request at the start of `buf` whose every length is short and
    /// plain: its length, with its arguments' offsets in `args`; `None` for anything else (left
    /// to the general parser, which applies every rule and limit).
    #[inline(always)]
    fn whole_multibulk(&self, buf: &[u8], args: &mut SmallVec<[Arg; 6]>) -> Option<usize> {
        if buf.first() != Some(&b'*') {
            return None;
        }
        let (n, mut pos) = short_len(buf, 1)?;
        if n == 0 || n > self.limits.max_args {
            return None;
        }
        // Short lengths have at most 9 digits, so no sum below overflows; a request must fit in
        // the buffer and in the request limit.
        let room = buf.len().min(self.limits.max_request_bytes);
        for _ in 0..n {
            if buf.get(pos) != Some(&b'$') {
                return None;
            }
            let (len, start) = short_len(buf, pos + 1)?;
            let end = start + len + 2;
            if end > room || len > self.limits.max_bulk_len {
                return None;
            }
            args.push(Arg {
                header: pos as u32,
                start: start as u32,
                len: len as u32,
            });
            pos = end;
        }
        Some(pos)
    }

    /// Takes the next complete request off the front of `buf`. `Ok(None)` means more bytes are
    /// needed; nothing is consumed from a partial request. Empty commands (`*0`, `*-1`, blank
    /// inline lines) are skipped as Redis skips them.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            match &mut self.state {
                State::Idle { inline_scanned } => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    if first == b'*' {
                        let Some(cr) = find_crlf(buf, 1) else {
                            if buf.len() > self.limits.max_inline_len {
                                return Err(ProtocolError::MultibulkCountTooBig);
                            }
                            return Ok(None);
                        };
                        let n = buf
                            .get(1..cr)
                            .and_then(parse_int)
                            .ok_or(ProtocolError::InvalidMultibulkLength)?;
                        if n > self.limits.max_args as i64 {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        if n <= 0 {
                            let _ = buf.split_to(cr + 2);
                            continue;
                        }
                        self.state = State::Multibulk {
                            expected: n as usize,
                            pos: cr + 2,
                            args: SmallVec::new(),
                        };
                    } else {
                        let from = *inline_scanned;
                        let Some(nl) = buf
                            .get(from..)
                            .and_then(|r| r.iter().position(|&b| b == b'\n'))
                        else {
                            if buf.len() > self.limits.max_inline_len {
                                return Err(ProtocolError::InlineTooBig);
                            }
                            *inline_scanned = buf.len();
                            return Ok(None);
                        };
                        let nl = from + nl;
                        if nl > self.limits.max_inline_len {
                            return Err(ProtocolError::InlineTooBig);
                        }
                        let line_end = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
                            nl - 1
                        } else {
                            nl
                        };
                        let words = split_inline(buf.get(..line_end).unwrap_or_default())?;
                        let _ = buf.split_to(nl + 1);
                        self.state = State::Idle { inline_scanned: 0 };
                        if words.is_empty() {
                            continue;
                        }
                        if words.len() > self.limits.max_args {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        return Ok(Some(Request::from_args(&words)));
                    }
                }
                State::Multibulk {
                    expected,
                    pos,
                    args,
                } => {
                    while args.len() < *expected {
                        let Some(&t) = buf.get(*pos) else {
                            self.want = *pos + 1;
                            return Ok(None);
                        };
                        if t != b'$' {
                            return Err(ProtocolError::ExpectedBulk(char::from(t)));
                        }
                        // Fast path: a short, plain decimal length ends the line at once;
                        // anything else goes through Redis' exact rules.
                        let fast = short_len(buf, *pos + 1)
                            .filter(|&(len, _)| len <= self.limits.max_bulk_len);
                        let (len, start) = match fast {
                            Some(header) => header,
                            None => {
                                let Some(cr) = find_crlf(buf, *pos + 1) else {
                                    if buf.len() - *pos > self.limits.max_inline_len {
                                        return Err(ProtocolError::BulkCountTooBig);
                                    }
                                    self.want = buf.len() + 1;
                                    return Ok(None);
                                };
                                let len = buf
                                    .get(*pos + 1..cr)
                                    .and_then(parse_int)
                                    .filter(|&l| {
                                        l >= 0 && l as u64 <= self.limits.max_bulk_len as u64
                                    })
                                    .ok_or(ProtocolError::InvalidBulkLength)?;
                                (len as usize, cr + 2)
                            }
                        };
                        let end = start + len + 2;
                        if end > self.limits.max_request_bytes {
                            return Err(ProtocolError::RequestTooBig(
                                self.limits.max_request_bytes,
                            ));
                        }
                        if buf.len() < end {
                            self.want = end;
                            return Ok(None);
                        }
                        args.push(Arg {
                            header: *pos as u32,
                            start: start as u32,
                            len: len as u32,
                        });
                        *pos = end;
                    }
                    let raw = buf.split_to(*pos).freeze();
                    let args = std::mem::take(args);
                    self.state = State::Idle { inline_scanned: 0 };
                    self.want = 0;
                    return Ok(Some(Request { raw, args }));
                }
            }
        }
    }
}

/// Gives a request parsed ahead of its bytes its bytes. The placeholder it replaces is
/// `Bytes::new()`, which owns nothing: it is forgotten rather than dropped, saving the call
/// through its vtable.
#[inline(always)]
fn set_raw(req: &mut Request, raw: Bytes) {
    std::mem::forget(std::mem::replace(&mut req.raw, raw));
}

/// Splits an inline command line as Redis' `sdssplitargs` does: whitespace separates words,
/// `"..."` understands `\n \r \t \b \a \\ \" \xHH`, `'...'` understands `\'`, and a closing
/// quote must be followed by whitespace or the end of the line.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| line.get(i).copied();
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(out);
        }
        let mut word = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = at(i);
            if in_dq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\')
                        if at(i + 1) == Some(b'x')
                            && at(i + 2).is_some_and(|h| h.is_ascii_hexdigit())
                            && at(i + 3).is_some_and(|h| h.is_ascii_hexdigit()) =>
                    {
                        let hi = hex(at(i + 2).unwrap_or(b'0'));
                        let lo = hex(at(i + 3).unwrap_or(b'0'));
                        word.push(hi * 16 + lo);
                        i += 3;
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        i += 1;
                        word.push(match at(i).unwrap_or(b'\\') {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => word.push(b),
                }
            } else if in_sq {
                match c {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        i += 1;
                        word.push(b'\'');
                    }
                    Some(b'\'') => {
                        if at(i + 1).is_some_and(|n| !is_space(n)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => word.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(b) => word.push(b),
                }
            }
            i += 1;
        }
        out.push(word);
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Argument `i` of a request already accepted by [`RequestParser`] (its [`Request::raw`], always
/// multibulk), found by stepping over the argument headers before it. For the rare paths that
/// need one argument of a request a part carries (a NOSCRIPT repair): the part already says
/// which command it is, so nothing parses the request again. `None` for bytes of another shape.
pub fn arg_of(raw: &[u8], i: usize) -> Option<&[u8]> {
    let mut at = find_crlf(raw, 0)? + 2;
    for n in 0..=i {
        if raw.get(at) != Some(&b'$') {
            return None;
        }
        let end = find_crlf(raw, at)?;
        let len = usize::try_from(parse_int(raw.get(at + 1..end)?)?).ok()?;
        let data = end + 2;
        if n == i {
            return raw.get(data..data.checked_add(len)?);
        }
        at = data.checked_add(len)?.checked_add(2)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_find_an_argument_of_an_accepted_request_again() {
        let req = Request::from_args(&["EVALSHA", "ab12", "1", "k"]);
        assert_eq!(arg_of(req.raw(), 0), Some(&b"EVALSHA"[..]));
        assert_eq!(arg_of(req.raw(), 1), Some(&b"ab12"[..]));
        assert_eq!(arg_of(req.raw(), 3), Some(&b"k"[..]));
        assert_eq!(arg_of(req.raw(), 4), None);
        let empty = Request::from_args(&["SCRIPT", "LOAD", ""]);
        assert_eq!(arg_of(empty.raw(), 2), Some(&b""[..]));
    }

    #[test]
    fn should_find_nothing_in_bytes_of_another_shape() {
        assert_eq!(arg_of(b"", 0), None);
        assert_eq!(arg_of(b"+OK\r\n", 0), None);
        assert_eq!(arg_of(b"*1\r\n$9\r\nabc\r\n", 0), None);
        assert_eq!(arg_of(b"*1\r\n$-1\r\n", 0), None);
        assert_eq!(arg_of(b"*2\r\n$99999999999999999999\r\n", 1), None);
    }
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = p.parse(&mut buf)? {
            out.push(
                (0..r.argc())
                    .map(|i| r.arg(i).unwrap_or_default().to_vec())
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Feeds `input` in two pieces split at every byte and checks the result is the same.
    fn parse_split_everywhere(input: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let whole = parse_all(input).unwrap_or_default();
        for cut in 0..=input.len() {
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::from(input.get(..cut).unwrap_or_default());
            let mut got = Vec::new();
            while let Ok(Some(r)) = p.parse(&mut buf) {
                got.push(
                    (0..r.argc())
                        .map(|i| r.arg(i).unwrap_or_default().to_vec())
                        .collect::<Vec<_>>(),
                );
            }
            buf.extend_from_slice(input.get(cut..).unwrap_or_default());
            while let Ok(Some(r)) = p.parse(&mut buf) {
                got.push(
                    (0..r.argc())
                        .map(|i| r.arg(i).unwrap_or_default().to_vec())
                        .collect::<Vec<_>>(),
                );
            }
            assert_eq!(got, whole, "split at {cut}");
        }
        whole
    }

    #[test]
    fn should_parse_multibulk_split_at_every_byte() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
        let got = parse_split_everywhere(input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], vec![b"SET".to_vec(), b"foo".to_vec(), b"".to_vec()]);
    }

    #[test]
    fn should_parse_inline_split_at_every_byte() {
        let got = parse_split_everywhere(b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\nPING\n");
        assert_eq!(
            got[0],
            vec![
                b"set".to_vec(),
                b"a b".to_vec(),
                b"c'd".to_vec(),
                b"A\n".to_vec()
            ]
        );
        assert_eq!(got[1], vec![b"PING".to_vec()]);
    }

    #[test]
    fn should_pack_short_arguments_into_words_that_compare_as_the_bytes_do() {
        let get = Request::from_args(&["GET", "some-key"]);
        let ping = Request::from_args(&["PING"]); // fewer than 8 bytes after the name
        let word = |r: &Request, i| r.arg_word(i);
        assert_eq!(
            word(&get, 0),
            Some((u64::from_le_bytes(*b"GET\0\0\0\0\0"), 3))
        );
        assert_eq!(
            word(&ping, 0),
            Some((u64::from_le_bytes(*b"PING\0\0\0\0"), 4))
        );
        assert_eq!(word(&get, 1), Some((u64::from_le_bytes(*b"some-key"), 8)));
        assert_ne!(word(&Request::from_args(&["GE", "x"]), 0), word(&get, 0));
        assert_eq!(
            word(&Request::from_args(&["GET", "other"]), 0),
            word(&get, 0)
        );
        assert_eq!(word(&Request::from_args(&["ZRANGEBYSCORE"]), 0), None);
        assert_eq!(word(&Request::from_args(&[""]), 0), Some((0, 0)));
        assert_eq!(word(&get, 2), None);
    }

    #[test]
    fn should_keep_raw_bytes_of_multibulk_unchanged() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest";
        let mut buf = BytesMut::from(&input[..]);
        let mut p = RequestParser::new(Limits::default());
        let r = p
            .parse(&mut buf)
            .ok()
            .flatten()
            .unwrap_or_else(|| Request::from_args(&["x"]));
        assert_eq!(&r.raw()[..], &input[..input.len() - 4]);
        assert_eq!(r.arg_wire(1), Some(&b"$1\r\nk\r\n"[..]));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn should_skip_empty_commands() {
        assert_eq!(
            parse_all(b"*0\r\n*-1\r\n\r\n   \n*1\r\n$4\r\nPING\r\n").map(|v| v.len()),
            Ok(1)
        );
    }

    #[test]
    fn should_accept_non_crlf_after_bulk_like_redis() {
        assert_eq!(parse_all(b"*1\r\n$4\r\nPINGXX").map(|v| v.len()), Ok(1));
    }

    #[test]
    fn should_reject_hostile_inputs_with_redis_errors() {
        assert_eq!(
            parse_all(b"*1\r\n$999999999999\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n$-5\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parse_all(b"*99999999999\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_all(b"*1\r\n*1\r\n$1\r\na\r\n"),
            Err(ProtocolError::ExpectedBulk('*'))
        );
        assert_eq!(
            parse_all(b"*1\r\n:1\r\n"),
            Err(ProtocolError::ExpectedBulk(':'))
        );
        assert_eq!(
            parse_all(b"*x\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parse_all(b"set \"a\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse_all(b"set \"a\"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        let deep = b"*1\r\n".repeat(100_000);
        assert_eq!(parse_all(&deep), Err(ProtocolError::ExpectedBulk('*')));
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(parse_all(&long), Err(ProtocolError::InlineTooBig));
        let mut long_count = b"*".to_vec();
        long_count.extend(std::iter::repeat_n(b'1', 70 * 1024));
        assert_eq!(
            parse_all(&long_count),
            Err(ProtocolError::MultibulkCountTooBig)
        );
    }

    #[test]
    fn should_enforce_configured_limits() {
        let limits = Limits {
            max_bulk_len: 4,
            max_args: 2,
            max_request_bytes: 64,
            ..Limits::default()
        };
        let mut p = RequestParser::new(limits);
        let mut buf = BytesMut::from(&b"*1\r\n$5\r\nhello\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Err(ProtocolError::InvalidBulkLength));
        let mut p = RequestParser::new(limits);
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert_eq!(
            p.parse(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let mut p = RequestParser::new(Limits {
            max_request_bytes: 16,
            ..Limits::default()
        });
        let mut buf = BytesMut::from(&b"*1\r\n$20\r\n"[..]);
        assert_eq!(p.parse(&mut buf), Err(ProtocolError::RequestTooBig(16)));
    }

    #[test]
    fn should_ask_for_the_whole_bulk_at_once() {
        let mut p = RequestParser::new(Limits::default());
        let mut buf = BytesMut::from(&b"*1\r\n$100000\r\nab"[..]);
        assert_eq!(p.parse(&mut buf), Ok(None));
        assert_eq!(p.want(), 4 + 9 + 100_000 + 2);
    }

    proptest! {
        #[test]
        fn should_round_trip_any_args_through_any_chunking(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8),
            chunk in 1usize..17,
        ) {
            let req = Request::from_args(&args);
            let wire = req.raw().clone();
            let mut p = RequestParser::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut got = None;
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                if let Some(r) = p.parse(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                    got = Some(r);
                }
            }
            let got = got.ok_or_else(|| TestCaseError::fail("no request"))?;
            prop_assert_eq!(got.raw(), &wire);
            for (i, a) in args.iter().enumerate() {
                prop_assert_eq!(got.arg(i), Some(&a[..]));
            }
        }

        /// `parse_many` over any chunking and any batch size gives exactly what one `parse` at
        /// a time gives, for any mix of multibulk, inline and empty commands.
        #[test]
        fn should_parse_many_as_parse_does_one_by_one(
            reqs in proptest::collection::vec(
                (proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..5), 0u8..4),
                1..8,
            ),
            chunk in 1usize..40,
            max in 1usize..5,
        ) {
            let mut wire = Vec::new();
            for (args, form) in &reqs {
                match form {
                    0 => wire.extend_from_slice(b"*0\r\n"),
                    1 => {
                        // An inline command of plain words.
                        let words: Vec<String> = args.iter().map(|a| {
                            let w: String = a.iter().map(|b| char::from(b'a' + b % 26)).collect();
                            if w.is_empty() { "x".to_string() } else { w }
                        }).collect();
                        wire.extend_from_slice(words.join(" ").as_bytes());
                        wire.extend_from_slice(b"\r\n");
                    }
                    _ => wire.extend_from_slice(Request::from_args(args).raw()),
                }
            }
            let mut one = RequestParser::new(Limits::default());
            let mut buf = BytesMut::from(&wire[..]);
            let mut want = Vec::new();
            while let Some(r) = one.parse(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))? {
                want.push(r);
            }
            let mut many = RequestParser::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                buf.extend_from_slice(piece);
                loop {
                    let before = got.len();
                    many.parse_many(&mut buf, &mut got, max).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(got.len() - before <= max);
                    if got.len() == before {
                        break;
                    }
                }
            }
            prop_assert_eq!(got, want);
        }

        #[test]
        fn should_agree_with_redis_protocol_on_flat_requests(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..6),
        ) {
            use redis_protocol::resp2::{decode::decode_bytes, types::BytesFrame};
            let wire = Request::from_args(&args).raw().clone();
            let oracle = decode_bytes(&wire).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Some((BytesFrame::Array(items), used)) = oracle else {
                return Err(TestCaseError::fail("oracle did not decode an array"));
            };
            prop_assert_eq!(used, wire.len());
            let mut buf = BytesMut::from(&wire[..]);
            let mine = RequestParser::new(Limits::default()).parse(&mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?
                .ok_or_else(|| TestCaseError::fail("incomplete"))?;
            prop_assert_eq!(items.len(), mine.argc());
            for (i, item) in items.iter().enumerate() {
                let BytesFrame::BulkString(b) = item else { return Err(TestCaseError::fail("not bulk")); };
                prop_assert_eq!(Some(&b[..]), mine.arg(i));
            }
        }

        #[test]
        fn should_never_panic_on_garbage(input in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_all(&input);
        }
    }
}
