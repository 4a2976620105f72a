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

/// The cluster slot of `key`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) & 0x3FFF
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
        }
    }
}
