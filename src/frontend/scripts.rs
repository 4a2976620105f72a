//! The scripts loaded through slotgate (`SCRIPT LOAD`), by SHA1, so that an `EVALSHA` answered
//! with NOSCRIPT by a node that lacks the script (a restarted node, a promoted replica, a node
//! that gained the slot) can be repaired: slotgate loads the script there and retries once.
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
    /// Remembers `body` under `sha` (as Redis answered SCRIPT LOAD).
    pub fn remember(&self, sha: &str, body: Bytes) {
        let Ok(mut map) = self.bodies.lock() else {
            return;
        };
        if map.len() < MAX_SCRIPTS || map.contains_key(sha) {
            map.insert(sha.to_ascii_lowercase(), body);
        }
    }

    /// The body of the script with this SHA1, if it was loaded through slotgate.
    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.bodies.lock().ok()?.get(&sha).cloned()
    }

    pub fn len(&self) -> usize {
        self.bodies.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_find_scripts_by_sha_in_any_case() {
        let c = ScriptCache::default();
        c.remember("ABC", Bytes::from_static(b"return 1"));
        assert_eq!(c.body(b"abc"), Some(Bytes::from_static(b"return 1")));
        assert_eq!(c.body(b"nope"), None);
    }
}
