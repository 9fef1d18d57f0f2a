//! The isolate's memory of DPoP proofs seen (RFC 9449 §11.1): a proof's
//! `jti` is accepted once while the proof could still be accepted at all.
//!
//! What this store guarantees, and what it does not: a replay that reaches
//! the same isolate within the `iat` window is refused. Workers run many
//! isolates (one per data centre and more under load, each evicted at the
//! runtime's will), and this memory is not shared, so a replay that lands in
//! another isolate passes here. Workers KV cannot close that gap (a read
//! after a write elsewhere may not see it for a minute); the Durable Object
//! store (`DPOP_REPLAY_STORE`) can, and is asked after this one.

use std::cell::RefCell;
use std::collections::HashMap;

/// Most proofs remembered per isolate; at about 100 bytes each, some 1.6 MB.
pub const MAX_REMEMBERED_PROOFS: usize = 16_384;

/// Proofs seen by this isolate: replay key to the time it may be forgotten.
#[derive(Debug, Default)]
pub struct ReplayMemory {
    seen: RefCell<HashMap<String, i64>>,
}

impl ReplayMemory {
    /// Records `key` until `until` (unix seconds): `true` when it was not
    /// held, `false` for a replay.
    ///
    /// Full memory first forgets what has expired, then, under a flood of
    /// valid proofs, the entries closest to expiry: the bound holds, and the
    /// store degrades toward the guarantee it documents (none across
    /// isolates) rather than refusing honest clients. A Durable Object store
    /// holds every key regardless.
    pub fn claim(&self, key: &str, until: i64, now: i64) -> bool {
        let mut seen = self.seen.borrow_mut();
        if let Some(expires) = seen.get(key) {
            if *expires >= now {
                return false;
            }
        }
        if seen.len() >= MAX_REMEMBERED_PROOFS && !seen.contains_key(key) {
            seen.retain(|_, expires| *expires >= now);
            if seen.len() >= MAX_REMEMBERED_PROOFS {
                // An eighth at a time, so a flood pays this scan rarely.
                let mut expiries: Vec<i64> = seen.values().copied().collect();
                let (_, cut, _) = expiries.select_nth_unstable(MAX_REMEMBERED_PROOFS / 8);
                let cut = *cut;
                seen.retain(|_, expires| *expires > cut);
            }
        }
        seen.insert(key.to_owned(), until);
        true
    }

    /// How many proofs are remembered.
    pub fn len(&self) -> usize {
        self.seen.borrow().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_it_expires() {
        let memory = ReplayMemory::default();
        assert!(memory.claim("a", 1_300, 1_000));
        assert!(!memory.claim("a", 1_300, 1_100));
        assert!(!memory.claim("a", 1_300, 1_300));
        // Past its window the proof is refused for its `iat` anyway.
        assert!(memory.claim("a", 1_700, 1_301));
    }

    #[test]
    fn the_memory_is_bounded_under_a_flood() {
        let memory = ReplayMemory::default();
        for index in 0..MAX_REMEMBERED_PROOFS + 100 {
            let until = 2_000 + i64::try_from(index).unwrap();
            assert!(memory.claim(&format!("k{index}"), until, 1_000));
        }
        assert!(memory.len() <= MAX_REMEMBERED_PROOFS);
        assert!(memory.len() > MAX_REMEMBERED_PROOFS * 7 / 8);
        // The newest are still held; the ones closest to expiry went first.
        let last = MAX_REMEMBERED_PROOFS + 99;
        assert!(!memory.claim(&format!("k{last}"), 9_999, 1_000));
        assert!(memory.claim("k0", 9_999, 1_000));
        // Once full again, expired entries go before any live one.
        let mut index = 0;
        while memory.len() < MAX_REMEMBERED_PROOFS {
            assert!(memory.claim(&format!("later{index}"), 200_000, 1_000));
            index += 1;
        }
        assert!(memory.claim("fresh", 200_000, 100_000));
        assert!(memory.len() <= index + 2);
    }
}
