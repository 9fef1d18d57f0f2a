//! Fuzzes the compact JWS parser and verifier (RFC 7515 §7.1, RFC 7519 §7.2,
//! crates/core/src/verify/jwt.rs) with arbitrary tokens against a fixed real key set
//! (fixtures/jwks.json): no input may panic, and nothing that was not signed
//! by a key of the set may verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::verify::jwk::{JwsAlgorithm, KeySet};
use portcullis_core::verify::jwt::{verify, ClaimsPolicy, UnverifiedJwt};
use std::sync::OnceLock;

const NOW: i64 = 1_767_225_600;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeySet::parse(include_bytes!("../fixtures/jwks.json")).expect("fixture JWKS parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = UnverifiedJwt::parse(token, &JwsAlgorithm::ALL) else {
        return;
    };
    let _ = parsed.kid();
    let _ = parsed.has_candidate_key(keys());
    let _ = parsed.require_access_token_type();
    // Judge by the issuer the token names, so the fuzzer gets past the issuer
    // check to the signature and the claims.
    let issuer = parsed
        .issuer()
        .unwrap_or("https://auth.example.com")
        .to_owned();
    let audiences = ["https://mcp.example.com/mcp".to_owned()];
    for (leeway_seconds, max_lifetime_seconds) in
        [(0, None), (u64::MAX, Some(u64::MAX)), (60, Some(3600))]
    {
        let policy = ClaimsPolicy {
            issuer: &issuer,
            audiences: &audiences,
            leeway_seconds,
            max_lifetime_seconds,
        };
        for now in [NOW, 0, i64::MAX, i64::MIN] {
            let _ = verify(&parsed, keys(), &policy, now);
        }
    }
});
