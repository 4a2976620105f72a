//! The scripts loaded through slotgate (`SCRIPT LOAD`, or an `EVAL` the node cached), by SHA1,
//! so that an `EVALSHA` answered with NOSCRIPT by a node that lacks the script (a restarted
//! node, a promoted replica, a node that gained the slot, a master the `EVAL` never reached)
//! can be repaired: slotgate loads the script there and retries once. `SCRIPT FLUSH` through
//! slotgate forgets them, as the nodes do.
//!
//! Bounded: past `MAX_SCRIPTS` new scripts are not remembered (their NOSCRIPT reaches the client,
//! which handles it as with Redis). It must never grow without bound.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

/// Most scripts remembered.
pub const MAX_SCRIPTS: usize = 10_000;

#[derive(Debug, Default)]
pub struct ScriptCache {
    bodies: Mutex<HashMap<String, Bytes>>,
}

impl ScriptCache {
    /// Remembers `body` under `sha` (as Redis answered SCRIPT LOAD, or an EVAL's node cached
    /// it). Copied only when it is new: a slice would pin the client's read buffer, and an EVAL
    /// run again costs no copy.
    pub fn remember(&self, sha: &str, body: &[u8]) {
        let Ok(mut map) = self.bodies.lock() else {
            return;
        };
        if map.len() < MAX_SCRIPTS && !map.contains_key(sha) {
            map.insert(sha.to_ascii_lowercase(), Bytes::copy_from_slice(body));
        }
    }

    /// The body of the script with this SHA1, if it was loaded through slotgate.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.bodies.lock().ok()?.get(&sha).cloned()
    }

    /// Forgets every script (`SCRIPT FLUSH` went through).
    pub fn clear(&self) {
        if let Ok(mut map) = self.bodies.lock() {
            map.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.bodies.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A script's SHA1 as Redis names it: 40 lowercase hex digits.
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_find_scripts_by_sha_in_any_case() {
        let c = ScriptCache::default();
        c.remember("ABC", b"return 1");
        assert_eq!(c.body(b"abc"), Some(Bytes::from_static(b"return 1")));
        assert_eq!(c.body(b"nope"), None);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn a_script_is_named_by_the_sha1_redis_gives_it() {
        // SCRIPT LOAD "return 1" on Redis 7.0.
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }
}
