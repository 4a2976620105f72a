//! Encoders for the replies the proxy makes itself (local commands, merged fan-out replies,
//! errors) and for the few requests it builds (split multi-key commands, ASKING, discovery).
//!
//! Encoders write into a caller's `BytesMut` and never fail. Replies that the client's protocol
//! shapes differently (null, maps) take the session's [`Proto`]; nothing here may emit a RESP3
//! type to a RESP2 session.

use bytes::{BufMut, BytesMut};

/// The protocol a client session speaks, chosen with `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// `<prefix><n>\r\n`, built right to left in a stack buffer and appended with one copy.
fn int_line(buf: &mut BytesMut, prefix: u8, n: i64) {
    // Prefix, sign, 20 digits at most (u64::MAX), CRLF.
    // The positions written never pass the front: every get_mut succeeds.
    let mut tmp = [0u8; 24];
    let mut i = tmp.len() - 2;
    if let Some(crlf) = tmp.get_mut(i..) {
        crlf.copy_from_slice(b"\r\n");
    }
    let mut put = |i: usize, b: u8| {
        if let Some(slot) = tmp.get_mut(i) {
            *slot = b;
        }
    };
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        put(i, b'0' + (v % 10) as u8);
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        put(i, b'-');
    }
    i -= 1;
    put(i, prefix);
    buf.extend_from_slice(tmp.get(i..).unwrap_or_default());
}

pub fn array_header(buf: &mut BytesMut, n: usize) {
    int_line(buf, b'*', n as i64);
}

/// A map header: `%n` in RESP3, an array of `2n` in RESP2.
pub fn map_header(buf: &mut BytesMut, proto: Proto, n: usize) {
    match proto {
        Proto::Resp3 => int_line(buf, b'%', n as i64),
        Proto::Resp2 => int_line(buf, b'*', 2 * n as i64),
    }
}

pub fn bulk(buf: &mut BytesMut, data: &[u8]) {
    int_line(buf, b'$', data.len() as i64);
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

pub fn integer(buf: &mut BytesMut, n: i64) {
    int_line(buf, b':', n);
}

pub fn simple(buf: &mut BytesMut, s: &str) {
    buf.put_u8(b'+');
    buf.put_slice(s.as_bytes());
    buf.put_slice(b"\r\n");
}

pub fn ok(buf: &mut BytesMut) {
    buf.put_slice(b"+OK\r\n");
}

/// A null bulk string: `$-1` in RESP2, `_` in RESP3.
pub fn null(buf: &mut BytesMut, proto: Proto) {
    match proto {
        Proto::Resp2 => buf.put_slice(b"$-1\r\n"),
        Proto::Resp3 => buf.put_slice(b"_\r\n"),
    }
}

/// A null array (a transaction aborted by WATCH): `*-1` in RESP2, `_` in RESP3.
pub fn null_array(buf: &mut BytesMut, proto: Proto) {
    match proto {
        Proto::Resp2 => buf.put_slice(b"*-1\r\n"),
        Proto::Resp3 => buf.put_slice(b"_\r\n"),
    }
}

/// An error reply. `msg` starts with its code (`ERR ...`, `CROSSSLOT ...`); CR and LF inside it
/// are replaced by spaces, as Redis does, so a message can never break the framing.
pub fn error(buf: &mut BytesMut, msg: &str) {
    error_bytes(buf, msg.as_bytes())
}

/// An error line from bytes (a client's own, echoed), CR and LF made spaces as Redis does.
pub fn error_bytes(buf: &mut BytesMut, msg: &[u8]) {
    buf.reserve(msg.len() + 3);
    buf.put_u8(b'-');
    for &b in msg {
        buf.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    buf.put_slice(b"\r\n");
}

/// A verbatim-text reply such as INFO's: a bulk string in RESP2, `=` with `txt:` in RESP3.
pub fn verbatim(buf: &mut BytesMut, proto: Proto, text: &[u8]) {
    match proto {
        Proto::Resp2 => bulk(buf, text),
        Proto::Resp3 => {
            int_line(buf, b'=', text.len() as i64 + 4);
            buf.put_slice(b"txt:");
            buf.put_slice(text);
            buf.put_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_encode_integers_at_the_extremes() {
        let mut b = BytesMut::new();
        integer(&mut b, i64::MIN);
        integer(&mut b, 0);
        integer(&mut b, 42);
        assert_eq!(&b[..], b":-9223372036854775808\r\n:0\r\n:42\r\n");
    }

    #[test]
    fn should_strip_newlines_from_errors() {
        let mut b = BytesMut::new();
        error(&mut b, "ERR a\r\nb");
        assert_eq!(&b[..], b"-ERR a  b\r\n");
    }

    #[test]
    fn should_shape_nulls_and_maps_per_protocol() {
        let mut b = BytesMut::new();
        null(&mut b, Proto::Resp2);
        null(&mut b, Proto::Resp3);
        map_header(&mut b, Proto::Resp2, 2);
        map_header(&mut b, Proto::Resp3, 2);
        assert_eq!(&b[..], b"$-1\r\n_\r\n*4\r\n%2\r\n");
    }
}
