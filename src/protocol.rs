//! RESP on the wire: the client request parser, the backend reply scanner and the few encoders
//! the proxy needs for the replies it makes itself.
//!
//! Frames stay views into the bytes they arrived in: a parsed request is a `Bytes` of its exact
//! wire form plus argument offsets, and a reply is a `Bytes` that is forwarded as is. Every
//! length read off the wire is checked against a named limit in [`Limits`]. This module must
//! never trust a peer's length, recurse on peer input, or rescan bytes it has already accepted.

pub mod encode;
pub mod reply;
pub mod request;

pub use reply::{ReplyKind, ReplyScanner};
pub use request::{Request, RequestParser};

/// Redis' `proto-max-bulk-len` default: 512 MiB.
pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
/// Redis' `PROTO_INLINE_MAX_SIZE`: 64 KiB for an inline command or a length line.
pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;
/// Largest number of arguments in one request (Redis allows up to `INT_MAX`; a proxy is stricter).
pub const DEFAULT_MAX_ARGS: usize = 1024 * 1024;
/// Largest single request, all arguments together.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 512 * 1024 * 1024 + 64 * 1024;
/// Deepest aggregate nesting accepted in a backend reply (hiredis uses the same cap).
pub const DEFAULT_MAX_REPLY_DEPTH: usize = 10_000;

/// The deepest `max_reply_depth` the config accepts.
pub const MAX_REPLY_DEPTH_LIMIT: usize = 1_000_000;

/// Limits on everything a peer can make the proxy buffer or count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in a request or in a reply.
    pub max_bulk_len: usize,
    /// Longest inline command line or length line.
    pub max_inline_len: usize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Largest request in bytes (must fit in `u32`).
    pub max_request_bytes: usize,
    /// Deepest nesting of aggregates in a reply.
    pub max_reply_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bulk_len: DEFAULT_MAX_BULK_LEN,
            max_inline_len: DEFAULT_MAX_INLINE_LEN,
            max_args: DEFAULT_MAX_ARGS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_reply_depth: DEFAULT_MAX_REPLY_DEPTH,
        }
    }
}

/// Malformed or over-limit input. The `Display` text is what Redis itself says, so it can be
/// sent to the client as `-ERR <text>` before the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    #[error("Protocol error: too big mbulk count string")]
    MultibulkCountTooBig,
    #[error("Protocol error: too big bulk count string")]
    BulkCountTooBig,
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    #[error("Protocol error: request larger than {0} bytes")]
    RequestTooBig(usize),
    #[error("Protocol error: bad reply type byte {0:#04x}")]
    BadReplyType(u8),
    #[error("Protocol error: bad length in reply")]
    BadReplyLength,
    #[error("Protocol error: reply nested deeper than {0} levels")]
    ReplyTooDeep(usize),
    #[error("Protocol error: reply line not terminated by CRLF")]
    BadReplyTerminator,
}

/// Position of the first `\r\n` in `buf` at or after `from`.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let rest = buf.get(i..)?;
        let cr = rest.iter().position(|&b| b == b'\r')?;
        let at = i + cr;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at),
            Some(_) => i = at + 1,
            None => return None,
        }
    }
}

/// Parses a decimal integer the way Redis' `string2ll` does: optional `-`, digits only, no
/// leading `+`, no leading zeros except `0` itself, no overflow.
pub(crate) fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    if digits.len() > 1 && digits.first() == Some(&b'0') {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?;
        let d = i64::from(d - b'0');
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    if neg && v == 0 {
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The unrolled one- and two-digit cases agree with the general loop on any input.
        #[test]
        fn should_read_short_lengths_as_the_loop_does(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'0'), Just(b'1'), Just(b'9'), Just(b'\r'), Just(b'\n'), Just(b'-')],
                0..14,
            ),
        ) {
            prop_assert_eq!(short_len(&bytes, 0), short_len_loop(&bytes, 0));
        }
    }

    #[test]
    fn should_read_short_lengths() {
        assert_eq!(short_len(b"x3\r\n", 1), Some((3, 4)));
        assert_eq!(short_len(b"16\r\n", 0), Some((16, 4)));
        assert_eq!(short_len(b"0\r\n", 0), Some((0, 3)));
        assert_eq!(short_len(b"07\r\n", 0), None);
        assert_eq!(short_len(b"123456789\r\n", 0), Some((123_456_789, 11)));
        assert_eq!(short_len(b"1234567890\r\n", 0), None);
        assert_eq!(short_len(b"12\r", 0), None);
    }

    #[test]
    fn should_parse_ints_like_string2ll() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-1"), Some(-1));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"01"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_int(b"-0"), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(parse_int(b"1a"), None);
    }

    #[test]
    fn should_find_crlf_past_lone_cr() {
        assert_eq!(find_crlf(b"ab\rc\r\n", 0), Some(4));
        assert_eq!(find_crlf(b"ab\r", 0), None);
        assert_eq!(find_crlf(b"\r\n\r\n", 1), Some(2));
    }
}

/// Reads a length of 1 to 9 plain digits followed by CRLF starting at `at`: the length and
/// where the line ends. Anything else (a sign, a leading zero, a longer number, an incomplete
/// line) returns `None` and takes the general path, which applies Redis' exact rules. One- and
/// two-digit lengths, nearly every length on the request path, are matched without a loop.
#[inline(always)]
pub(crate) fn short_len(buf: &[u8], at: usize) -> Option<(usize, usize)> {
    // Four bytes read as one word: `d\r\n?` or `dd\r\n`.
    if let Some(&[b0, b1, b2, b3]) = buf.get(at..at.wrapping_add(4)) {
        let d0 = b0.wrapping_sub(b'0');
        let d1 = b1.wrapping_sub(b'0');
        if d0 < 10 && b1 == b'\r' && b2 == b'\n' {
            return Some((usize::from(d0), at + 3));
        }
        if (1..10).contains(&d0) && d1 < 10 && b2 == b'\r' && b3 == b'\n' {
            return Some((usize::from(d0) * 10 + usize::from(d1), at + 4));
        }
    }
    short_len_loop(buf.get(at..)?, at)
}

fn short_len_loop(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *bytes.first()?;
    if !first.is_ascii_digit() || (first == b'0' && bytes.get(1) != Some(&b'\r')) {
        return None;
    }
    let mut len = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(11) {
        if b.is_ascii_digit() {
            if i >= 9 {
                return None;
            }
            len = len * 10 + usize::from(b - b'0');
        } else if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            return Some((len, at + i + 2));
        } else {
            return None;
        }
    }
    None
}

/// Entry points for the fuzz targets in `fuzz/` (one line each there). They feed arbitrary
/// bytes through the parsers in uneven chunks and check the invariants that must hold for any
/// input: no panic, consumed bytes within the buffer, limits respected.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    use super::{Limits, ReplyScanner, RequestParser};

    /// Splits `data` into chunks whose sizes come from the data itself.
    fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
        let step = 1 + data.first().map_or(7, |&b| (b % 31) as usize);
        data.chunks(step)
    }

    pub fn request_parser(data: &[u8]) {
        let limits = Limits {
            max_bulk_len: 4096,
            max_request_bytes: 16 * 1024,
            ..Limits::default()
        };
        // One request at a time, and in batches (the session's way): the same requests, and
        // an error at the same point.
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut one = Vec::new();
        let mut one_failed = false;
        'outer: for piece in chunks(data) {
            buf.extend_from_slice(piece);
            loop {
                match parser.parse(&mut buf) {
                    Ok(Some(req)) => {
                        assert!(req.argc() >= 1);
                        assert!(
                            req.raw().len() <= limits.max_request_bytes + limits.max_inline_len * 4
                        );
                        one.push(req);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        one_failed = true;
                        break 'outer;
                    }
                }
            }
        }
        let max = 1 + data.get(1).map_or(3, |&b| usize::from(b % 8));
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut many = Vec::new();
        let mut many_failed = false;
        'outer2: for piece in chunks(data) {
            buf.extend_from_slice(piece);
            loop {
                let before = many.len();
                if parser.parse_many(&mut buf, &mut many, max).is_err() {
                    many_failed = true;
                    break 'outer2;
                }
                if many.len() == before {
                    break;
                }
            }
        }
        assert_eq!(one, many);
        assert_eq!(one_failed, many_failed);
    }

    pub fn reply_scanner(data: &[u8]) {
        let limits = Limits {
            max_bulk_len: 4096,
            max_reply_depth: 64,
            ..Limits::default()
        };
        let mut scanner = ReplyScanner::new(limits);
        let mut buf = BytesMut::new();
        for piece in chunks(data) {
            buf.extend_from_slice(piece);
            loop {
                match scanner.scan(&buf) {
                    Ok(Some(n)) => {
                        assert!(n > 0 && n <= buf.len());
                        let _ = buf.split_to(n);
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
}
