//! Key → slot: CRC16/XMODEM of the key, or of its hash tag, modulo 16384, exactly as the Redis
//! Cluster specification defines it.

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

/// CRC16/XMODEM lookup tables. `one` is the direct (one lookup per byte) table, as Redis'
/// `crc16tab`: entry `i` is the CRC of the single byte `i`, which is what the crc16 crate
/// computes for it (the crate's own `calculate` runs the augmented form, about three times the
/// instructions per key). `two` advances the CRC over two bytes with two independent lookups
/// ("slicing by 2"): because the CRC is linear, two steps `crc -> (crc << 8) ^ one[(crc >> 8) ^
/// b]` equal `two[(crc >> 8) ^ b0] ^ one[(crc & 0xff) ^ b1]` with `two[x] = (one[x] << 8) ^
/// one[one[x] >> 8]`.
struct Tables {
    one: [u16; 256],
    two: [u16; 256],
}

static TABLES: std::sync::LazyLock<Tables> = std::sync::LazyLock::new(|| {
    let mut one = [0u16; 256];
    for (i, e) in one.iter_mut().enumerate() {
        *e = crc16::State::<crc16::XMODEM>::calculate(&[i as u8]);
    }
    let mut two = [0u16; 256];
    for (e, &x) in two.iter_mut().zip(one.iter()) {
        // `x >> 8` is below 256: the lookup always succeeds.
        *e = (x << 8) ^ one.get(usize::from(x >> 8)).copied().unwrap_or(0);
    }
    Tables { one, two }
});

/// CRC16/XMODEM of `data`.
fn crc16_xmodem(data: &[u8]) -> u16 {
    crc16_with_from(&TABLES, 0, data)
}

/// Two bytes of CRC16/XMODEM.
#[inline(always)]
fn pair(t: &Tables, crc: u16, b0: u8, b1: u8) -> u16 {
    // u8 indexes into 256 entries: never out of bounds, and the checks compile away.
    let hi = t.two.get(usize::from((crc >> 8) as u8 ^ b0)).copied();
    let lo = t.one.get(usize::from(crc as u8 ^ b1)).copied();
    hi.unwrap_or(0) ^ lo.unwrap_or(0)
}

/// One byte of CRC16/XMODEM.
#[inline(always)]
fn step(t: &Tables, crc: u16, b: u8) -> u16 {
    let x = t.one.get(usize::from((crc >> 8) as u8 ^ b)).copied();
    (crc << 8) ^ x.unwrap_or(0)
}

/// Whether any of the 8 bytes in `word` is `{` (the classic "has a zero byte" test on `word`
/// XOR eight copies of `{`).
#[inline(always)]
fn has_open_brace(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (ONES * u64::from(b'{'));
    (x.wrapping_sub(ONES) & !x & (ONES << 7)) != 0
}

/// The cluster slot of `key`. One pass for the usual key: the CRC runs two bytes a step while
/// a `{` is looked for eight bytes at a time, and only a key that has one is hashed again by
/// its tag.
pub fn key_slot(key: &[u8]) -> u16 {
    let t: &Tables = &TABLES;
    let mut crc = 0u16;
    let mut brace = false;
    let (words, rest) = key.as_chunks::<8>();
    for w in words {
        let v = u64::from_le_bytes(*w);
        brace |= has_open_brace(v);
        crc = pair(t, crc, v as u8, (v >> 8) as u8);
        crc = pair(t, crc, (v >> 16) as u8, (v >> 24) as u8);
        crc = pair(t, crc, (v >> 32) as u8, (v >> 40) as u8);
        crc = pair(t, crc, (v >> 48) as u8, (v >> 56) as u8);
    }
    for &b in rest {
        brace |= b == b'{';
    }
    crc = crc16_with_from(t, crc, rest);
    if brace {
        crc16_xmodem(hash_tag(key)) & 0x3FFF
    } else {
        crc & 0x3FFF
    }
}

/// `crc` advanced over `data`.
fn crc16_with_from(t: &Tables, mut crc: u16, data: &[u8]) -> u16 {
    let (pairs, rest) = data.as_chunks::<2>();
    for &[b0, b1] in pairs {
        crc = pair(t, crc, b0, b1);
    }
    for &b in rest {
        crc = step(t, crc, b);
    }
    crc
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
