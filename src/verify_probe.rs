//! Test builds only (feature `verify-probe`): runs signature cases through
//! the edge's own key loader ([`load_key`], what `KeySet::parse` runs per
//! entry) and WebCrypto backend, so
//! tests/webcrypto.test.mjs can hold the deployed code path to the Wycheproof
//! vectors and to the native backend's verdicts. Never in the deployed build
//! (tests/supply-chain.test.mjs).

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Deserialize;
use serde_json::Value;
use worker::{Request, Response};

use super::webcrypto::WebCrypto;
use portcullis_core::verify::jwk::{load_key, JwsAlgorithm, VerificationKey};
use portcullis_core::verify::signature::{plausible, SignatureVerifier};

/// Where the probe answers.
pub const PATH: &str = "/__portcullis/verify-probe";

#[derive(Deserialize)]
struct Case {
    jwk: Value,
    alg: String,
    message: String,
    signature: String,
}

/// Answers `{"verdicts": [...]}` with one of `valid`, `invalid` or
/// `key_refused` (the loader skipped the key) per case, in order.
pub async fn answer(mut request: Request) -> worker::Result<Response> {
    let cases: Vec<Case> = request.json().await?;
    let mut verdicts = Vec::with_capacity(cases.len());
    for case in &cases {
        verdicts.push(verdict(case).await);
    }
    Response::from_json(&serde_json::json!({ "verdicts": verdicts }))
}

async fn verdict(case: &Case) -> &'static str {
    let Ok(VerificationKey { key, .. }) = load_key(&case.jwk) else {
        return "key_refused";
    };
    let (Some(alg), Ok(message), Ok(signature)) = (
        JwsAlgorithm::from_name(&case.alg),
        Base64UrlUnpadded::decode_vec(&case.message),
        Base64UrlUnpadded::decode_vec(&case.signature),
    ) else {
        return "invalid";
    };
    let verified =
        plausible(alg, &key, &signature) && WebCrypto.verify(alg, &key, &message, &signature).await;
    if verified {
        "valid"
    } else {
        "invalid"
    }
}
