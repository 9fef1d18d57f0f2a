//! JWS signature verification (RFC 7515 §5.2 step 8) for RSASSA-PKCS1-v1_5
//! and RSASSA-PSS (RFC 7518 §3.3, §3.5), ECDSA P-256 (RFC 7518 §3.4) and
//! Ed25519 (RFC 8037 §3.1). The request machine names each check as a need
//! (`crate::flow::machine::Check`) and one of two backends answers it:
//!
//! - natively, the RustCrypto implementations through jwt-compact
//!   ([`verify_signature`]): the tests' reference and the fuzzers' path;
//! - on the edge, the runtime's WebCrypto (`crypto.subtle.verify`, called
//!   by `src/entry.mjs` with the keys `src/webcrypto.rs` keeps), which runs
//!   BoringSSL natively in workerd and is several times faster than the
//!   same code compiled to WebAssembly.
//!
//! The gate decides everything else before a backend is asked: the key was
//! chosen by the key set and the allow-list (never by `alg` alone), it fits
//! the algorithm, and the signature has the key's exact length. A backend
//! only answers whether the bytes verify.

use crate::verify::jwk::{JwsAlgorithm, PublicKey};

/// Whether the signature is worth handing to a backend: the key fits the
/// algorithm and the signature has the length that key's signatures have.
pub fn plausible(alg: JwsAlgorithm, key: &PublicKey, signature: &[u8]) -> bool {
    alg.fits(key) && signature.len() == key.signature_length()
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::{rsa_scheme, verify_signature};

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use jwt_compact::alg::{Ed25519, Es256, Rsa, RsaPublicKey};
    use jwt_compact::{Algorithm, AlgorithmSignature};

    use super::plausible;
    use crate::verify::jwk::{JwsAlgorithm, PublicKey};

    /// Verifies one JWS signature with jwt-compact's implementation of
    /// `alg`. Returns false for a key that does not fit the algorithm or
    /// that the RustCrypto types refuse to build.
    pub fn verify_signature(
        alg: JwsAlgorithm,
        key: &PublicKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        if !plausible(alg, key, signature) {
            return false;
        }
        match key {
            PublicKey::Rsa { modulus, exponent } => {
                let Ok(key) = RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(modulus),
                    rsa::BigUint::from_bytes_be(exponent),
                ) else {
                    return false;
                };
                rsa_scheme(alg).is_some_and(|rsa| verify_with(&rsa, &key, message, signature))
            }
            PublicKey::P256 { x, y } => {
                let point = p256::EncodedPoint::from_affine_coordinates(
                    &p256::FieldBytes::from(*x),
                    &p256::FieldBytes::from(*y),
                    false,
                );
                p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .is_ok_and(|key| verify_with(&Es256, &key, message, signature))
            }
            PublicKey::Ed25519(point) => ed25519_dalek::VerifyingKey::from_bytes(point)
                .is_ok_and(|key| verify_with(&Ed25519, &key, message, signature)),
        }
    }

    /// jwt-compact's RSA scheme for `alg` (PKCS#1 v1.5 or PSS with the
    /// hash it names); `None` for the non-RSA algorithms.
    pub fn rsa_scheme(alg: JwsAlgorithm) -> Option<Rsa> {
        Some(match alg {
            JwsAlgorithm::Rs256 => Rsa::rs256(),
            JwsAlgorithm::Rs384 => Rsa::rs384(),
            JwsAlgorithm::Rs512 => Rsa::rs512(),
            JwsAlgorithm::Ps256 => Rsa::ps256(),
            JwsAlgorithm::Ps384 => Rsa::ps384(),
            JwsAlgorithm::Ps512 => Rsa::ps512(),
            JwsAlgorithm::Es256 | JwsAlgorithm::EdDsa => return None,
        })
    }

    fn verify_with<A: Algorithm>(
        alg: &A,
        key: &A::VerifyingKey,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        A::Signature::try_from_slice(signature)
            .is_ok_and(|signature| alg.verify_signature(&signature, key, message))
    }
}
