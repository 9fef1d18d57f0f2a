//! The verified-token cache: an MCP client keeps its access token for as long
//! as it lives, so the signature of the same token need not be checked on
//! every request. Entries are keyed by a SHA-256 of the whole token, bounded
//! in number (least recently used evicted), live until the token's `exp`, and
//! `exp`/`nbf` are re-checked on every hit (RFC 7519 §4.1.4–5, RFC 9068 §4).
//! The gate honours a hit only while the issuer's current key set still holds
//! the key that verified it, so a key removed from the JWKS stops its tokens
//! once the set is refreshed; tokens without `kid` are therefore never
//! cached (the gate could not tell which key they need). Pure: `now` is
//! passed in.

use std::cell::RefCell;
use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::verify::jwt::{AccessToken, TokenError};

/// How long a definitive refusal is remembered.
pub const REFUSAL_TTL_SECONDS: i64 = 60;

/// Default number of tokens an isolate remembers.
pub const DEFAULT_CAPACITY: usize = 4096;

/// A verified token, and how it was verified.
#[derive(Debug, Clone)]
struct Entry {
    token: AccessToken,
    kid: Option<String>,
    last_used: u64,
}

/// Tokens this isolate verified recently.
#[derive(Debug)]
pub struct VerifiedTokens {
    capacity: usize,
    entries: RefCell<HashMap<TokenKey, Entry>>,
    refused: RefCell<HashMap<TokenKey, (TokenError, i64)>>,
    clock: RefCell<u64>,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens::with_capacity(DEFAULT_CAPACITY)
    }
}

/// The key of a token checked against a binding (the route's issuers and
/// audiences): a token accepted for one audience is never found for another.
/// Computed once per request (a SHA-256 of the whole token is not free in
/// wasm) and used for every lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// The key of `raw` checked against `binding`.
    pub fn of(raw: &str, binding: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(binding.as_bytes());
        hasher.update([0]);
        hasher.update(raw.as_bytes());
        TokenKey(hasher.finalize().into())
    }
}

impl VerifiedTokens {
    /// An empty cache holding at most `capacity` tokens (0 disables it).
    pub fn with_capacity(capacity: usize) -> Self {
        VerifiedTokens {
            capacity,
            entries: RefCell::new(HashMap::new()),
            refused: RefCell::new(HashMap::new()),
            clock: RefCell::new(0),
        }
    }

    /// The cached verification of `raw` and the kid of the key that verified
    /// it, if still acceptable at `now`: not expired, not before its `nbf`
    /// (both with `leeway`). The caller checks the key is still held.
    pub fn get(
        &self,
        key: &TokenKey,
        now: i64,
        leeway: i64,
    ) -> Option<(AccessToken, Option<String>)> {
        let entry = self.entries.borrow().get(key).cloned()?;
        let token = &entry.token;
        if now >= token.expires_at.saturating_add(leeway) {
            self.entries.borrow_mut().remove(key);
            return None;
        }
        if token
            .not_before
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return None;
        }
        self.touch(*key);
        Some((entry.token, entry.kid))
    }

    /// A refusal of `raw` remembered within the last [`REFUSAL_TTL_SECONDS`],
    /// so a replayed bad token costs no second signature check.
    pub fn refusal(&self, key: &TokenKey, now: i64) -> Option<TokenError> {
        let (error, until) = *self.refused.borrow().get(key)?;
        if now >= until {
            self.refused.borrow_mut().remove(key);
            return None;
        }
        Some(error)
    }

    /// Remembers a refusal that no later key set or clock can reverse: a bad
    /// signature or a claim that is wrong for good. Unknown kids (a rotation
    /// may add the key) and not-yet-valid tokens are never remembered.
    pub fn remember_refusal(&self, key: &TokenKey, error: TokenError, now: i64) {
        let lasting = matches!(
            error,
            TokenError::BadSignature
                | TokenError::Expired
                | TokenError::AudienceMismatch
                | TokenError::InvalidClaims
                | TokenError::MissingExpiry
                | TokenError::ProofOfPossessionRequired
        );
        if !lasting || self.capacity == 0 {
            return;
        }
        let mut refused = self.refused.borrow_mut();
        if refused.len() >= self.capacity {
            refused.retain(|_, (_, until)| *until > now);
            if refused.len() >= self.capacity {
                refused.clear();
            }
        }
        refused.insert(*key, (error, now + REFUSAL_TTL_SECONDS));
    }

    /// Drops `raw` (its key left the set).
    pub fn forget(&self, key: &TokenKey) {
        self.entries.borrow_mut().remove(key);
    }

    /// Remembers that `raw` verified as `token` with the key named `kid`.
    pub fn insert(&self, key: &TokenKey, token: &AccessToken, kid: Option<&str>, now: i64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= self.capacity {
            entries.retain(|_, entry| entry.token.expires_at > now);
        }
        if entries.len() >= self.capacity {
            // Evict the least recently used eighth at once, so eviction is rare.
            let mut by_age: Vec<(TokenKey, u64)> =
                entries.iter().map(|(k, e)| (*k, e.last_used)).collect();
            by_age.sort_by_key(|(_, used)| *used);
            for (old, _) in by_age.iter().take((self.capacity / 8).max(1)) {
                entries.remove(old);
            }
        }
        let tick = self.tick();
        entries.insert(
            *key,
            Entry {
                token: token.clone(),
                kid: kid.map(str::to_owned),
                last_used: tick,
            },
        );
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many refusals are remembered.
    pub fn refused_len(&self) -> usize {
        self.refused.borrow().len()
    }

    fn tick(&self) -> u64 {
        let mut clock = self.clock.borrow_mut();
        *clock += 1;
        *clock
    }

    fn touch(&self, key: TokenKey) {
        let tick = self.tick();
        if let Some(entry) = self.entries.borrow_mut().get_mut(&key) {
            entry.last_used = tick;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn token(exp: i64, nbf: Option<i64>) -> AccessToken {
        AccessToken {
            issuer: "https://as.example".into(),
            subject: Some("u".into()),
            client_id: None,
            scopes: vec!["s".into()],
            expires_at: exp,
            not_before: nbf,
            token_id: None,
            confirmation: None,
        }
    }

    const B: &str = "issuers\nroute-audience\n";

    #[test]
    fn hits_until_exp_rechecking_nbf() {
        let cache = VerifiedTokens::default();
        cache.insert(
            &TokenKey::of("tok", B),
            &token(NOW + 10, None),
            Some("ec"),
            NOW,
        );
        let (hit, kid) = cache.get(&TokenKey::of("tok", B), NOW + 9, 0).unwrap();
        assert_eq!(
            (hit.subject.as_deref(), kid.as_deref()),
            (Some("u"), Some("ec"))
        );
        assert!(cache.get(&TokenKey::of("other", B), NOW, 0).is_none());
        assert!(
            cache.get(&TokenKey::of("tok", B), NOW + 10, 0).is_none(),
            "expired"
        );
        assert!(cache.is_empty(), "expired entries are dropped");
        cache.insert(
            &TokenKey::of("tok", B),
            &token(NOW + 10, Some(NOW + 5)),
            Some("ec"),
            NOW,
        );
        assert!(
            cache.get(&TokenKey::of("tok", B), NOW + 1, 0).is_none(),
            "nbf re-checked"
        );
        assert!(
            cache.get(&TokenKey::of("tok", B), NOW + 1, 4).is_some(),
            "within leeway"
        );
        cache.forget(&TokenKey::of("tok", B));
        assert!(cache.is_empty());
    }

    #[test]
    fn lasting_refusals_are_remembered_briefly() {
        let cache = VerifiedTokens::default();
        cache.remember_refusal(&TokenKey::of("bad", B), TokenError::BadSignature, NOW);
        assert_eq!(
            cache.refusal(&TokenKey::of("bad", B), NOW + 59),
            Some(TokenError::BadSignature)
        );
        assert_eq!(cache.refusal(&TokenKey::of("bad", B), NOW + 60), None);
        for passing in [
            TokenError::UnknownKey,
            TokenError::NotYetValid,
            TokenError::IssuedInFuture,
        ] {
            cache.remember_refusal(&TokenKey::of("maybe-later", B), passing, NOW);
            assert_eq!(
                cache.refusal(&TokenKey::of("maybe-later", B), NOW),
                None,
                "{passing:?}"
            );
        }
    }

    #[test]
    fn bounded_and_least_recently_used_goes_first() {
        let cache = VerifiedTokens::with_capacity(8);
        let kid = "ec";
        for i in 0..8 {
            cache.insert(
                &TokenKey::of(&format!("t{i}"), B),
                &token(NOW + 100, None),
                Some(kid),
                NOW,
            );
        }
        assert!(cache.get(&TokenKey::of("t0", B), NOW, 0).is_some());
        cache.insert(
            &TokenKey::of("t8", B),
            &token(NOW + 100, None),
            Some(kid),
            NOW,
        );
        assert_eq!(cache.len(), 8);
        assert!(
            cache.get(&TokenKey::of("t0", B), NOW, 0).is_some(),
            "recently used kept"
        );
        assert!(
            cache.get(&TokenKey::of("t1", B), NOW, 0).is_none(),
            "least recently used evicted"
        );
        let off = VerifiedTokens::with_capacity(0);
        off.insert(
            &TokenKey::of("t", B),
            &token(NOW + 100, None),
            Some(kid),
            NOW,
        );
        assert!(off.is_empty());
    }

    #[test]
    fn a_decision_is_found_only_for_the_audience_it_was_checked_against() {
        let cache = VerifiedTokens::default();
        cache.insert(
            &TokenKey::of("tok", B),
            &token(NOW + 100, None),
            Some("ec"),
            NOW,
        );
        assert!(cache.get(&TokenKey::of("tok", B), NOW, 0).is_some());
        assert!(cache
            .get(&TokenKey::of("tok", "other-route"), NOW, 0)
            .is_none());
        cache.remember_refusal(&TokenKey::of("tok2", B), TokenError::AudienceMismatch, NOW);
        assert_eq!(
            cache.refusal(&TokenKey::of("tok2", "other-route"), NOW),
            None
        );
    }
}
