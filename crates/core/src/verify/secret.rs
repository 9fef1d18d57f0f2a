//! The HMAC-SHA-256 secrets the gate keys its own tags with (RFC 2104 §3: a
//! key as long as the hash output), as one binding holds them: the sealed
//! `requestState` (`MCP_STATE_SECRET`) and the DPoP nonces
//! (`DPOP_NONCE_SECRET`). Several, separated by white space, rotate: the
//! first makes tags, any checks them.

/// The shortest secret accepted, in bytes: a full HMAC-SHA-256 key.
pub const MIN_SECRET_BYTES: usize = 32;

/// The secrets in a binding's text, in order. `Err` (never echoing a
/// secret) when one is shorter than [`MIN_SECRET_BYTES`] or none is given.
pub fn parse_secrets(text: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    let secrets: Vec<Vec<u8>> = text
        .split_whitespace()
        .map(|secret| secret.as_bytes().to_vec())
        .collect();
    if secrets.is_empty() {
        return Err("is empty");
    }
    if secrets.iter().any(|secret| secret.len() < MIN_SECRET_BYTES) {
        return Err("each secret must be at least 32 characters (e.g. `openssl rand -base64 32`)");
    }
    Ok(secrets)
}
