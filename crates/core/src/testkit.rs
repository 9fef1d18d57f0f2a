//! Test support: signing keys and token minting for the native unit tests.
//! Compiled only under `cfg(test)`, so no signing code reaches the worker.

use std::sync::OnceLock;

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::{Ed25519, Es256, RsaPrivateKey};
use jwt_compact::{Algorithm, AlgorithmSignature};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use crate::verify::jwk::{JwsAlgorithm, KeySet};
use crate::verify::signature::rsa_scheme;

/// Fixed current time used by the tests: 2026-01-01T00:00:00Z.
pub const NOW: i64 = 1_767_225_600;
pub const ISSUER: &str = "https://auth.example.com";
pub const RESOURCE: &str = "https://mcp.example.com/mcp";

pub fn rsa_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).expect("RSA key generation"))
}

pub fn p256_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_bytes(&[7u8; 32].into()).expect("valid scalar")
}

pub fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// The public JWKS for the three test keys, with kids `rsa`, `ec`, `ed`.
pub fn jwks_json() -> String {
    let rsa = rsa_key().to_public_key();
    let point = p256_key().verifying_key().to_encoded_point(false);
    json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        {"kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(ed25519_key().verifying_key().as_bytes())},
    ]})
    .to_string()
}

pub fn key_set() -> KeySet {
    KeySet::parse(jwks_json().as_bytes()).expect("test JWKS parses")
}

/// Claims a valid token carries at [`NOW`].
pub fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": RESOURCE, "sub": "user-1", "client_id": "client-1",
        "scope": "mcp:read mcp:write", "iat": NOW - 10, "exp": NOW + 300, "jti": "t-1",
    })
}

/// Signs `header` and `claims` verbatim with the test key for `alg`.
pub fn mint_raw(alg: JwsAlgorithm, header: &str, claims: &str) -> String {
    let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let message = signing_input.as_bytes();
    let signature = if let Some(rsa) = rsa_scheme(alg) {
        rsa.sign(rsa_key(), message).as_bytes().into_owned()
    } else if alg == JwsAlgorithm::Es256 {
        Es256.sign(&p256_key(), message).as_bytes().into_owned()
    } else {
        Ed25519
            .sign(&ed25519_key(), message)
            .as_bytes()
            .into_owned()
    };
    format!("{signing_input}.{}", b64(&signature))
}

/// The kid of the test key that signs `alg`.
pub fn kid_for(alg: JwsAlgorithm) -> &'static str {
    match alg {
        JwsAlgorithm::Es256 => "ec",
        JwsAlgorithm::EdDsa => "ed",
        _ => "rsa",
    }
}

/// A token with a standard header for `alg` and the given claims.
pub fn mint(alg: JwsAlgorithm, claims: &Value) -> String {
    let header = json!({"alg": alg.name(), "typ": "at+jwt", "kid": kid_for(alg)});
    mint_raw(alg, &header.to_string(), &claims.to_string())
}

/// Returns `base` with `changes` merged in; a `null` in `changes` removes the member.
pub fn with(base: &Value, changes: Value) -> Value {
    let mut merged = base.clone();
    for (name, value) in changes.as_object().expect("object").iter() {
        if value.is_null() {
            merged.as_object_mut().unwrap().remove(name);
        } else {
            merged[name] = value.clone();
        }
    }
    merged
}

/// Bindings from a list of pairs, with the KV namespace bound.
pub struct MapBindings(pub std::collections::HashMap<String, String>);

impl crate::config::Bindings for MapBindings {
    fn text(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn has_kv_namespace(&self, name: &str) -> bool {
        name == crate::config::binding::JWKS_CACHE
    }
    /// Every name starting `RL_` is a Rate Limiting binding.
    fn has_rate_limiter(&self, name: &str) -> bool {
        name.starts_with("RL_")
    }
    /// Every name starting `DO_` is a Durable Object namespace.
    fn has_durable_object(&self, name: &str) -> bool {
        name.starts_with("DO_")
    }
}

/// A valid configuration for [`ISSUER`] and [`RESOURCE`], with `extra` bindings.
pub fn config(extra: &[(&str, &str)]) -> crate::config::Config {
    let mut vars: std::collections::HashMap<String, String> = [
        ("MCP_RESOURCE", RESOURCE),
        ("MCP_ORIGIN", "http://origin.internal:8080/mcp"),
        ("OAUTH_ISSUER", ISSUER),
        ("OAUTH_JWKS_URI", "https://auth.example.com/jwks"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (name, value) in extra {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    crate::config::Config::parse(&MapBindings(vars)).expect("test configuration parses")
}

/// The public JWK of the test key for `alg` (ES256: P-256, EdDSA: Ed25519,
/// others: RSA), as a DPoP proof's header carries it.
pub fn public_jwk(alg: JwsAlgorithm) -> Value {
    match alg {
        JwsAlgorithm::Es256 => {
            let point = p256_key().verifying_key().to_encoded_point(false);
            json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())})
        }
        JwsAlgorithm::EdDsa => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed25519_key().verifying_key().as_bytes())})
        }
        _ => {
            let rsa = rsa_key().to_public_key();
            json!({"kty": "RSA", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())})
        }
    }
}

/// The RFC 7638 thumbprint of the test key for `alg`.
pub fn jkt(alg: JwsAlgorithm) -> String {
    crate::verify::jwk::load_key(&public_jwk(alg))
        .expect("test key loads")
        .key
        .thumbprint()
}

/// A DPoP proof (RFC 9449 §4.2) by the test key for `alg`, for `method` at
/// `url` with `token`, issued at `iat`: `header` and `claims` changes merged
/// over the standard ones (a `null` removes a member).
pub fn dpop_proof(
    alg: JwsAlgorithm,
    (method, url, token, iat): (&str, &str, &str, i64),
    header: Value,
    claims: Value,
) -> String {
    let standard_header = json!({"typ": "dpop+jwt", "alg": alg.name(), "jwk": public_jwk(alg)});
    let standard_claims = json!({
        "jti": format!("jti-{iat}-{method}-{}", token.len()),
        "htm": method,
        "htu": url,
        "iat": iat,
        "ath": crate::verify::dpop::token_hash(token),
    });
    mint_raw(
        alg,
        &with(&standard_header, header).to_string(),
        &with(&standard_claims, claims).to_string(),
    )
}
