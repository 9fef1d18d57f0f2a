//! Test builds only (feature `verify-probe`): runs signature cases through
//! the edge's own key loader ([`load_key`], what `KeySet::parse` runs per
//! entry) and the entry's own WebCrypto import and verify calls, so
//! tests/webcrypto.test.mjs can hold the deployed code path to the Wycheproof
//! vectors and to the native backend's verdicts. Never in the deployed build
//! (tests/supply-chain.test.mjs).

use base64ct::{Base64UrlUnpadded, Encoding};
use js_sys::{Array, Uint8Array};
use serde::Deserialize;
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::webcrypto::import_request;
use portcullis_core::flow::machine::Check;
use portcullis_core::verify::jwk::{load_key, JwsAlgorithm, VerificationKey};
use portcullis_core::verify::signature::plausible;

/// Where the probe answers.
const PATH: &str = "/__portcullis/verify-probe";

#[derive(Deserialize)]
struct Case {
    jwk: Value,
    alg: String,
    message: String,
    signature: String,
}

/// The probe's path; the entry asks for it only when this export exists.
#[wasm_bindgen(js_name = gateProbePath)]
pub fn gate_probe_path() -> String {
    PATH.to_owned()
}

/// The cases of a probe request: per case, a verdict decided without
/// WebCrypto (`key_refused`: the loader skipped the key; `invalid`), or
/// `[jwk, import params, verify params, signature, data]` for the entry to
/// import and verify exactly as it does for a token.
#[wasm_bindgen(js_name = gateProbeCases)]
pub fn gate_probe_cases(body: &str) -> Array {
    let cases: Vec<Case> = serde_json::from_str(body).unwrap_or_default();
    cases.iter().map(case).collect()
}

fn case(case: &Case) -> JsValue {
    let Ok(VerificationKey { key, .. }) = load_key(&case.jwk) else {
        return "key_refused".into();
    };
    let (Some(alg), Ok(message), Ok(signature)) = (
        JwsAlgorithm::from_name(&case.alg),
        Base64UrlUnpadded::decode_vec(&case.message),
        Base64UrlUnpadded::decode_vec(&case.signature),
    ) else {
        return "invalid".into();
    };
    if !plausible(alg, &key, &signature) {
        return "invalid".into();
    }
    let check = Check {
        alg,
        key,
        message,
        signature,
    };
    let (jwk, import_params) = import_request(&check);
    let verify_params = super::webcrypto::verify_params(alg);
    let entry = Array::new();
    entry.push(&jwk);
    entry.push(&import_params);
    entry.push(&verify_params);
    entry.push(&Uint8Array::from(check.signature.as_slice()).into());
    entry.push(&Uint8Array::from(check.message.as_slice()).into());
    entry.into()
}

/// The size of each of this isolate's caches, as JSON (the memory flood and
/// the soak read it through `<PATH>/caches`).
#[wasm_bindgen(js_name = gateProbeCaches)]
pub fn gate_probe_caches() -> String {
    let sizes = super::GATE
        .with(|cell| cell.borrow().as_ref().map(|gate| gate.cache_sizes()))
        .unwrap_or_default();
    let mut value = serde_json::to_value(sizes).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "imported_keys".into(),
            super::webcrypto::imported_len().into(),
        );
        object.insert(
            "flows".into(),
            super::FLOWS.with(|flows| flows.borrow().order.len()).into(),
        );
        // The wasm heap (linear memory only grows): tells a Rust leak from
        // JavaScript garbage in the isolate's resident memory.
        let memory = wasm_bindgen::memory()
            .dyn_into::<js_sys::WebAssembly::Memory>()
            .ok()
            .and_then(|memory| memory.buffer().dyn_into::<js_sys::ArrayBuffer>().ok())
            .map_or(0.0, |buffer| f64::from(buffer.byte_length()));
        object.insert("wasm_memory_bytes".into(), memory.into());
    }
    value.to_string()
}
