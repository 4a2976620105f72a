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

/// The direct (one lookup per byte) CRC16/XMODEM table, as Redis' `crc16tab`: entry `i` is the
/// CRC of the single byte `i`, which is what the crc16 crate computes for it. The crate's own
/// `calculate` runs the augmented form (two extra rounds, bounds checks), about three times the
/// instructions per key on the request path.
static TABLE: std::sync::LazyLock<[u16; 256]> = std::sync::LazyLock::new(|| {
    let mut t = [0u16; 256];
    for (i, e) in t.iter_mut().enumerate() {
        *e = crc16::State::<crc16::XMODEM>::calculate(&[i as u8]);
    }
    t
});

/// CRC16/XMODEM of `data`.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let table: &[u16; 256] = &TABLE;
    data.iter().fold(0u16, |crc, &b| step(table, crc, b))
}

/// One byte of CRC16/XMODEM.
#[inline(always)]
fn step(table: &[u16; 256], crc: u16, b: u8) -> u16 {
    // A u8 index into 256 entries: `get` never fails, and the check compiles away.
    let t = table.get(usize::from((crc >> 8) as u8 ^ b)).copied();
    (crc << 8) ^ t.unwrap_or(0)
}

/// The cluster slot of `key`. One pass for the usual key: the CRC runs while a `{` is looked
/// for without branching, and only a key that has one is hashed again by its tag.
pub fn key_slot(key: &[u8]) -> u16 {
    let table: &[u16; 256] = &TABLE;
    let mut crc = 0u16;
    let mut brace = false;
    for &b in key {
        brace |= b == b'{';
        crc = step(table, crc, b);
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
        fn should_agree_with_redis_protocol_keyslot(key in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'a'), Just(b'b')], 0..12)) {
            prop_assert_eq!(key_slot(&key), redis_protocol::redis_keyslot(&key));
            prop_assert_eq!(
                crc16_xmodem(&key),
                crc16::State::<crc16::XMODEM>::calculate(&key)
            );
        }
    }
}
