//! Fuzzes the JWK Set loader (RFC 7517 §4–5, RFC 7518 §6, RFC 8037 §2,
//! crates/core/src/verify/jwk.rs): no document may panic it, and every key it keeps must be
//! usable for verification without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::verify::jwk::{JwsAlgorithm, KeySet};
use portcullis_core::verify::signature::verify_signature;

fuzz_target!(|data: &[u8]| {
    let Ok(set) = KeySet::parse(data) else {
        return;
    };
    let _ = set.skipped().len();
    for alg in JwsAlgorithm::ALL {
        for key in set.candidates(None, alg) {
            let _ = set.has_kid(key.kid.as_deref().unwrap_or(""));
            // Garbage signatures of every plausible length must simply fail.
            for length in [0, 1, 64, 256, 384, 512] {
                let signature = vec![0x5a; length];
                assert!(!verify_signature(alg, &key.key, b"a.b", &signature));
            }
        }
    }
});
