//! The WebCrypto signature backend: W3C Web Cryptography API §14.3.9
//! (`importKey`, JWK format per §16 and RFC 7517) and §14.3.4 (`verify`),
//! with the JWS algorithm mappings of RFC 7518 §3.3–3.5 and RFC 8037 §3.1.
//!
//! workerd runs these in BoringSSL, natively, so a signature check costs what
//! it costs a JavaScript worker using `jose`, not what RustCrypto costs
//! compiled to WebAssembly. Imported `CryptoKey`s are kept per (algorithm,
//! key material), so a key is imported once per isolate, not per request;
//! a key WebCrypto refuses to import (an off-curve point, say) is remembered
//! as refused and never verifies.

use std::cell::RefCell;
use std::collections::HashMap;

use base64ct::{Base64UrlUnpadded, Encoding};
use js_sys::{Array, Promise, Uint8Array, JSON};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use portcullis_core::verify::jwk::{JwsAlgorithm, PublicKey};
use portcullis_core::verify::signature::SignatureVerifier;

/// Most imported keys kept, counting a key once per algorithm it was imported
/// for; past this the cache starts over. Key sets hold at most 100 keys per
/// issuer, so a gate with a handful of issuers never reaches it.
const MAX_IMPORTED_KEYS: usize = 512;

#[wasm_bindgen]
extern "C" {
    type SubtleCrypto;

    #[wasm_bindgen(thread_local_v2, js_namespace = crypto, js_name = subtle)]
    static SUBTLE: SubtleCrypto;

    #[wasm_bindgen(method, catch, js_name = importKey)]
    fn import_key(
        this: &SubtleCrypto,
        format: &str,
        key_data: &JsValue,
        algorithm: &JsValue,
        extractable: bool,
        usages: &Array,
    ) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn verify(
        this: &SubtleCrypto,
        algorithm: &JsValue,
        key: &JsValue,
        signature: &Uint8Array,
        data: &Uint8Array,
    ) -> Result<Promise, JsValue>;
}

/// An imported key with the parameters `verify` takes for its algorithm.
#[derive(Clone)]
pub(super) struct Imported {
    pub(super) key: JsValue,
    pub(super) verify_params: JsValue,
}

/// The isolate's imported keys, per key and then per algorithm (a key is
/// imported once for each algorithm it serves); `None` marks a key WebCrypto
/// refused. Keyed by the key first so a lookup borrows it instead of copying.
type KeyCache = HashMap<PublicKey, Vec<(JwsAlgorithm, Option<Imported>)>>;

thread_local! {
    static IMPORTED: RefCell<KeyCache> = RefCell::new(HashMap::new());
}

/// Verifies with the runtime's `crypto.subtle`.
pub struct WebCrypto;

impl SignatureVerifier for WebCrypto {
    async fn verify(
        &self,
        alg: JwsAlgorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let Some(imported) = imported(alg, key).await else {
            return false;
        };
        // Copies, not views of wasm memory: memory growth while the promise
        // is pending would detach a view.
        let signature = Uint8Array::from(signature);
        let message = Uint8Array::from(message);
        let Ok(promise) = SUBTLE.with(|subtle| {
            subtle.verify(&imported.verify_params, &imported.key, &signature, &message)
        }) else {
            return false;
        };
        JsFuture::from(promise)
            .await
            .is_ok_and(|verdict| verdict.as_bool() == Some(true))
    }
}

/// The key as already imported for `alg`: `None` when it never was,
/// `Some(None)` when WebCrypto refused it. Never waits.
pub(super) fn imported_already(alg: JwsAlgorithm, key: &PublicKey) -> Option<Option<Imported>> {
    IMPORTED.with(|cache| {
        cache.borrow().get(key).and_then(|per_alg| {
            per_alg
                .iter()
                .find(|(imported_for, _)| *imported_for == alg)
                .map(|(_, imported)| imported.clone())
        })
    })
}

async fn imported(alg: JwsAlgorithm, key: &PublicKey) -> Option<Imported> {
    if let Some(known) = imported_already(alg, key) {
        return known;
    }
    let imported = import(alg, key).await;
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

async fn import(alg: JwsAlgorithm, key: &PublicKey) -> Option<Imported> {
    let (import_params, verify_params) = parameters(alg);
    let import_params = JSON::parse(&import_params).ok()?;
    let verify_params = JSON::parse(&verify_params).ok()?;
    let jwk = JSON::parse(&jwk(key)).ok()?;
    let usages = Array::of1(&JsValue::from_str("verify"));
    let promise = SUBTLE
        .with(|subtle| subtle.import_key("jwk", &jwk, &import_params, false, &usages))
        .ok()?;
    let key = JsFuture::from(promise).await.ok()?;
    Some(Imported { key, verify_params })
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
