//! Session binding (MCP Streamable HTTP "Session Management"; MCP security
//! best practices, "Session Hijacking"): when the origin issues an
//! `Mcp-Session-Id`, the gate records which token subject and client it
//! belongs to, and refuses the session to any other. Sessions never replace
//! the token: every request is still authenticated first.
//!
//! The store key is a SHA-256 of the session id, so the KV namespace never
//! holds a usable session id.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::verify::jwt::AccessToken;

/// Longest session id the gate will look up; longer ones are refused.
pub const MAX_SESSION_ID_LEN: usize = 1024;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOwner {
    /// Token issuer.
    pub iss: String,
    /// Token subject.
    pub sub: Option<String>,
    /// OAuth client.
    pub client_id: Option<String>,
}

impl SessionOwner {
    /// The owner a verified token describes.
    pub fn of(token: &AccessToken) -> Self {
        SessionOwner {
            iss: token.issuer.clone(),
            sub: token.subject.clone(),
            client_id: token.client_id.clone(),
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Whether `session_id` is one the gate can track: visible ASCII (MCP: 0x21–0x7E), bounded.
pub fn is_valid_session_id(session_id: &str) -> bool {
    !session_id.is_empty()
        && session_id.len() <= MAX_SESSION_ID_LEN
        && session_id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// The store key of a session of the protected resource `resource`: a
/// session an origin issued is bound to its route, so it is never honoured
/// (nor its owner read) at another route of the same gate.
pub fn session_key(resource: &str, session_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(resource.as_bytes());
    hasher.update([0]);
    hasher.update(session_id.as_bytes());
    let digest = hasher.finalize();
    let mut key = String::from("session:v2:");
    for byte in digest {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// Whether `token` may use a session whose stored record is `stored`. No
/// record: the origin decides (it answers unknown sessions itself). An
/// unreadable record fails closed.
pub fn may_use_session(stored: Option<&str>, token: &AccessToken) -> bool {
    match stored {
        None => true,
        Some(raw) => serde_json::from_str::<SessionOwner>(raw)
            .is_ok_and(|owner| owner == SessionOwner::of(token)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sub: &str, client: &str) -> AccessToken {
        AccessToken {
            issuer: "https://as.example".to_owned(),
            subject: Some(sub.to_owned()),
            client_id: Some(client.to_owned()),
            scopes: Vec::new(),
            expires_at: 0,
            not_before: None,
            token_id: None,
            confirmation: None,
        }
    }

    #[test]
    fn keys_are_hashes_not_session_ids() {
        let key = session_key("https://mcp.example/mcp", "abc-123");
        assert!(key.starts_with("session:v2:") && key.len() == 11 + 64);
        assert!(!key.contains("abc-123"));
        assert_ne!(key, session_key("https://mcp.example/mcp", "abc-124"));
        assert_ne!(key, session_key("https://mcp.example/tickets", "abc-123"));
    }

    #[test]
    fn only_the_owner_may_use_a_bound_session() {
        let alice = token("alice", "app");
        let stored = SessionOwner::of(&alice).to_json();
        assert!(may_use_session(Some(&stored), &alice));
        assert!(!may_use_session(Some(&stored), &token("mallory", "app")));
        assert!(!may_use_session(
            Some(&stored),
            &token("alice", "other-app")
        ));
        assert!(
            may_use_session(None, &alice),
            "unknown sessions are the origin's to refuse"
        );
        assert!(
            !may_use_session(Some("garbage"), &alice),
            "unreadable record fails closed"
        );
    }

    #[test]
    fn session_ids_are_visible_ascii_and_bounded() {
        assert!(is_valid_session_id("1868a90c-5e6f-4c2b-9d1a-7c3e2f8b4a10"));
        for bad in [
            "",
            "has space",
            "tab\t",
            "é",
            &"x".repeat(MAX_SESSION_ID_LEN + 1),
        ] {
            assert!(!is_valid_session_id(bad), "{bad:?}");
        }
    }
}
