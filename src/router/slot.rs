//! Key → slot: CRC16/XMODEM of the key, or of its hash tag, modulo 16384, exactly as the Redis
//! Cluster specification defines it. Every key has a slot: this must never fail, allocate or
//! look anything up but its own tables.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The part of `key` that is hashed: the bytes between the first `{` and the first `}` after it,
/// when that is non-empty; otherwise the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        let rest = key.get(open + 1..).unwrap_or_default();
        if let Some(close) = rest.iter().position(|&b| b == b'}')
            && close > 0
        {
            return rest.get(..close).unwrap_or(key);
        }
    }
    key
}

/// CRC16/XMODEM lookup tables for "slicing by 8". `t[0]` is the direct table, as Redis'
/// `crc16tab`: entry `v` is the CRC of the single byte `v`, which is what the crc16 crate computes
/// for it (the crate's own `calculate` runs the augmented form, about three times the
/// instructions per key). `t[k][v]` is the CRC of byte `v` followed by `k` zero bytes. Because
/// the CRC is linear, eight bytes `b0..b7` advance `crc` to `t[7][b0 ^ crc >> 8] ^ t[6][b1 ^ crc
/// & 0xff] ^ t[5][b2] ^ ... ^ t[0][b7]`: eight independent lookups instead of a chain of eight.
struct Tables {
    t: [[u16; 256]; 8],
}

static TABLES: std::sync::LazyLock<Tables> = std::sync::LazyLock::new(|| {
    let mut one = [0u16; 256];
    for (i, e) in one.iter_mut().enumerate() {
        *e = crc16::State::<crc16::XMODEM>::calculate(&[i as u8]);
    }
    let mut t = [one; 8];
    let mut prev = one;
    for row in t.iter_mut().skip(1) {
        for (e, &p) in row.iter_mut().zip(prev.iter()) {
            // One zero byte more: crc -> (crc << 8) ^ one[crc >> 8] (`p >> 8` is below 256).
            *e = (p << 8) ^ one.get(usize::from(p >> 8)).copied().unwrap_or(0);
        }
        prev = *row;
    }
    Tables { t }
});

/// CRC16/XMODEM of `data`.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let t: &Tables = &TABLES;
    let (words, rest) = data.as_chunks::<8>();
    let crc = words
        .iter()
        .fold(0u16, |crc, w| eight(t, crc, u64::from_le_bytes(*w)));
    rest.iter().fold(crc, |crc, &b| step(t, crc, b))
}

/// Table `k`'s entry for byte `b`.
#[inline(always)]
fn at(t: &Tables, k: usize, b: u8) -> u16 {
    // `k` is a constant below 8 and a u8 indexes 256 entries: the checks compile away.
    t.t.get(k)
        .and_then(|row| row.get(usize::from(b)))
        .copied()
        .unwrap_or(0)
}

/// Eight bytes (`word`, little-endian: the first byte lowest) of CRC16/XMODEM.
#[inline(always)]
fn eight(t: &Tables, crc: u16, word: u64) -> u16 {
    let b = word.to_le_bytes();
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b;
    at(t, 7, b0 ^ (crc >> 8) as u8)
        ^ at(t, 6, b1 ^ crc as u8)
        ^ at(t, 5, b2)
        ^ at(t, 4, b3)
        ^ at(t, 3, b4)
        ^ at(t, 2, b5)
        ^ at(t, 1, b6)
        ^ at(t, 0, b7)
}

/// One byte of CRC16/XMODEM.
#[inline(always)]
fn step(t: &Tables, crc: u16, b: u8) -> u16 {
    (crc << 8) ^ at(t, 0, (crc >> 8) as u8 ^ b)
}

/// Whether any of the 8 bytes in `word` is `{` (the classic "has a zero byte" test on `word`
/// XOR eight copies of `{`).
#[inline(always)]
fn has_open_brace(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (ONES * u64::from(b'{'));
    (x.wrapping_sub(ONES) & !x & (ONES << 7)) != 0
}

/// The cluster slot of `key`. One pass for the usual key: the CRC runs eight bytes a step while
/// a `{` is looked for in the same eight, and only a key that has one is hashed again by its
/// tag.
pub fn key_slot(key: &[u8]) -> u16 {
    let t: &Tables = &TABLES;
    let mut crc = 0u16;
    let mut brace = false;
    let (words, rest) = key.as_chunks::<8>();
    for w in words {
        let v = u64::from_le_bytes(*w);
        brace |= has_open_brace(v);
        crc = eight(t, crc, v);
    }
    for &b in rest {
        brace |= b == b'{';
        crc = step(t, crc, b);
    }
    if brace {
        crc16_xmodem(hash_tag(key)) & 0x3FFF
    } else {
        crc & 0x3FFF
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Slots as `CLUSTER KEYSLOT` on redis-server 7.0.15 gives them.
    #[test]
    fn should_match_cluster_keyslot() {
        let cases: &[(&[u8], u16)] = &[
            (b"foo", 12182),
            (b"bar", 5061),
            (b"somekey", 11058),
            (b"foo{hash_tag}", 2515),
            (b"bar{hash_tag}", 2515),
            (b"{user1000}.following", 3443),
            (b"user1000", 3443),
            (b"123456789", 12739),
            (b"", 0),
            (b"{}", 15257),
            (b"foo{}{bar}", 8363),
            (b"foo{{bar}}zap", 4015),
            (b"foo{bar}{zap}", 5061),
            (b"{", 4092),
            (b"}", 12090),
            (b"a{b}", 3300),
        ];
        for (key, slot) in cases {
            assert_eq!(key_slot(key), *slot, "{}", String::from_utf8_lossy(key));
        }
    }

    proptest! {
        #[test]
        fn should_agree_with_redis_protocol_keyslot(key in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'a'), Just(b'b'), any::<u8>()], 0..40)) {
            prop_assert_eq!(key_slot(&key), redis_protocol::redis_keyslot(&key));
            prop_assert_eq!(
                crc16_xmodem(&key),
                crc16::State::<crc16::XMODEM>::calculate(&key)
            );
        }
    }
}
