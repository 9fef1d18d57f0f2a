//! The WebCrypto side of signature checks: W3C Web Cryptography API §14.3.9
//! (`importKey`, JWK format per §16 and RFC 7517) and §14.3.4 (`verify`),
//! with the JWS algorithm mappings of RFC 7518 §3.3–3.5 and RFC 8037 §3.1.
//!
//! The entry performs both calls (workerd runs them in BoringSSL, natively,
//! so a check costs what it costs a JavaScript worker using `jose`); this
//! module says what to import and keeps what was imported. `CryptoKey`s are
//! kept per (algorithm, key material), so a key is imported once per
//! isolate, not per request; a key WebCrypto refuses to import (an
//! off-curve point, say) is remembered as refused and never verifies.

use std::cell::RefCell;
use std::collections::HashMap;

use base64ct::{Base64UrlUnpadded, Encoding};
use js_sys::JSON;
use wasm_bindgen::prelude::*;

use portcullis_core::flow::machine::Check;
use portcullis_core::verify::jwk::{JwsAlgorithm, PublicKey};

/// Most imported keys kept, counting a key once per algorithm it was imported
/// for; past this the cache starts over. Key sets hold at most 100 keys per
/// issuer, so a gate with a handful of issuers never reaches it.
const MAX_IMPORTED_KEYS: usize = 512;

/// An imported key with the parameters `verify` takes for its algorithm.
#[derive(Clone)]
pub(crate) struct Imported {
    pub(crate) key: JsValue,
    pub(crate) verify_params: JsValue,
}

/// The isolate's imported keys, per key and then per algorithm (a key is
/// imported once for each algorithm it serves); `None` marks a key WebCrypto
/// refused. Keyed by the key first so a lookup borrows it instead of copying.
type KeyCache = HashMap<PublicKey, Vec<(JwsAlgorithm, Option<Imported>)>>;

thread_local! {
    static IMPORTED: RefCell<KeyCache> = RefCell::new(HashMap::new());
}

/// How many imported keys this isolate holds (at most `MAX_IMPORTED_KEYS`).
#[cfg(feature = "verify-probe")]
pub(crate) fn imported_len() -> usize {
    IMPORTED.with(|cache| cache.borrow().values().map(Vec::len).sum())
}

/// The key of `check` as already imported for its algorithm: `None` when it
/// never was, `Some(None)` when WebCrypto refused it.
pub(crate) fn imported(check: &Check) -> Option<Option<Imported>> {
    lookup(check.alg, &check.key)
}

fn lookup(alg: JwsAlgorithm, key: &PublicKey) -> Option<Option<Imported>> {
    IMPORTED.with(|cache| {
        cache.borrow().get(key).and_then(|per_alg| {
            per_alg
                .iter()
                .find(|(imported_for, _)| *imported_for == alg)
                .map(|(_, imported)| imported.clone())
        })
    })
}

/// What the entry passes to `importKey`: the public JWK and the algorithm.
pub(crate) fn import_request(check: &Check) -> (JsValue, JsValue) {
    let (import_params, _) = parameters(check.alg);
    let jwk = JSON::parse(&jwk(&check.key)).unwrap_or(JsValue::UNDEFINED);
    let params = JSON::parse(&import_params).unwrap_or(JsValue::UNDEFINED);
    (jwk, params)
}

/// Keeps what `importKey` gave for the key of `check` (`undefined`:
/// refused) and returns it ready to verify with.
pub(crate) fn store(check: &Check, key: JsValue) -> Option<Imported> {
    store_for(check.alg, &check.key, key)
}

fn store_for(alg: JwsAlgorithm, key: &PublicKey, imported: JsValue) -> Option<Imported> {
    let imported = (!imported.is_undefined() && !imported.is_null()).then(|| Imported {
        key: imported,
        verify_params: verify_params(alg),
    });
    IMPORTED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.values().map(Vec::len).sum::<usize>() >= MAX_IMPORTED_KEYS {
            cache.clear();
        }
        let per_alg = cache.entry(key.clone()).or_default();
        if !per_alg.iter().any(|(imported_for, _)| *imported_for == alg) {
            per_alg.push((alg, imported.clone()));
        }
    });
    imported
}

/// The parameters `verify` takes for `alg`.
pub(crate) fn verify_params(alg: JwsAlgorithm) -> JsValue {
    JSON::parse(&parameters(alg).1).unwrap_or(JsValue::UNDEFINED)
}

/// The `importKey` and `verify` algorithm parameters for a JWS algorithm
/// (RFC 7518 §3.3: PKCS#1 v1.5; §3.5: PSS with a salt as long as the hash;
/// §3.4: ECDSA P-256 with SHA-256; RFC 8037 §3.1: Ed25519).
fn parameters(alg: JwsAlgorithm) -> (String, String) {
    let pkcs1 = |hash: &str| {
        (
            format!(r#"{{"name":"RSASSA-PKCS1-v1_5","hash":"{hash}"}}"#),
            r#"{"name":"RSASSA-PKCS1-v1_5"}"#.to_owned(),
        )
    };
    let pss = |hash: &str, salt: u8| {
        (
            format!(r#"{{"name":"RSA-PSS","hash":"{hash}"}}"#),
            format!(r#"{{"name":"RSA-PSS","saltLength":{salt}}}"#),
        )
    };
    match alg {
        JwsAlgorithm::Rs256 => pkcs1("SHA-256"),
        JwsAlgorithm::Rs384 => pkcs1("SHA-384"),
        JwsAlgorithm::Rs512 => pkcs1("SHA-512"),
        JwsAlgorithm::Ps256 => pss("SHA-256", 32),
        JwsAlgorithm::Ps384 => pss("SHA-384", 48),
        JwsAlgorithm::Ps512 => pss("SHA-512", 64),
        JwsAlgorithm::Es256 => (
            r#"{"name":"ECDSA","namedCurve":"P-256"}"#.to_owned(),
            r#"{"name":"ECDSA","hash":"SHA-256"}"#.to_owned(),
        ),
        JwsAlgorithm::EdDsa => (
            r#"{"name":"Ed25519"}"#.to_owned(),
            r#"{"name":"Ed25519"}"#.to_owned(),
        ),
    }
}

/// The key as a public JWK (RFC 7517 §4, RFC 7518 §6.2.1 and §6.3.1,
/// RFC 8037 §2); no `alg`, `use` or `key_ops`, which `importKey` would check
/// against the requested algorithm and usages for nothing.
fn jwk(key: &PublicKey) -> String {
    let b64 = Base64UrlUnpadded::encode_string;
    match key {
        PublicKey::Rsa { modulus, exponent } => format!(
            r#"{{"kty":"RSA","n":"{}","e":"{}"}}"#,
            b64(modulus),
            b64(exponent)
        ),
        PublicKey::P256 { x, y } => format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{}","y":"{}"}}"#,
            b64(x),
            b64(y)
        ),
        PublicKey::Ed25519(point) => {
            format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64(point))
        }
    }
}
