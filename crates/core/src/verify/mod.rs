//! Whether the token is good: JWS/JWT (RFC 7515, 7519, 9068, 8725), the keys
//! (RFC 7517, key sets cached per RFC 9111 freshness, discovered per RFC
//! 8414), signatures, introspection (RFC 7662), the verified-token cache, and
//! the DPoP proofs that bind a token to its sender (RFC 9449) with the
//! memory of proofs seen.
pub mod dpop;
pub mod introspect;
pub mod introspect_cache;
pub mod jwk;
pub mod jwt;
pub mod key_lookup;
pub mod keys;
pub mod replay;
pub mod secret;
pub mod signature;
pub mod token_cache;

#[cfg(test)]
mod key_script;
#[cfg(test)]
mod signature_cases;
#[cfg(test)]
mod wycheproof_tests;
