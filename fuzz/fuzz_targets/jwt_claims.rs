//! Fuzzes the JOSE header and claims checks (RFC 7515 §4, RFC 7519 §4,
//! RFC 9068 §2.2, crates/core/src/verify/jwt.rs) behind a valid signature: the input is a header
//! and a claims document, newline-separated, which the target signs with a
//! harness Ed25519 key before parsing and verifying. No input may panic.
#![no_main]

use base64ct::{Base64UrlUnpadded, Encoding};
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use portcullis_core::verify::jwk::{JwsAlgorithm, KeySet};
use portcullis_core::verify::jwt::{verify, ClaimsPolicy, UnverifiedJwt};
use std::sync::OnceLock;

const NOW: i64 = 1_767_225_600;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[9u8; 32])
}

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let x = Base64UrlUnpadded::encode_string(signing_key().verifying_key().as_bytes());
        let jwks = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"{x}"}}]}}"#);
        KeySet::parse(jwks.as_bytes()).expect("harness JWKS parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (header, claims) = (&data[..split], &data[split + 1..]);
    let signing_input = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(header),
        Base64UrlUnpadded::encode_string(claims)
    );
    let signature = signing_key().sign(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    );
    let Ok(parsed) = UnverifiedJwt::parse(&token, &JwsAlgorithm::ALL) else {
        return;
    };
    let _ = parsed.require_access_token_type();
    let issuer = parsed.issuer().unwrap_or("").to_owned();
    let audiences = [
        "https://mcp.example.com/mcp".to_owned(),
        "https://mcp.example.com".to_owned(),
    ];
    for (leeway_seconds, max_lifetime_seconds) in [
        (0, None),
        (60, Some(300)),
        (u64::MAX, Some(0)),
        (u64::MAX, Some(u64::MAX)),
    ] {
        let policy = ClaimsPolicy {
            issuer: &issuer,
            audiences: &audiences,
            leeway_seconds,
            max_lifetime_seconds,
        };
        for now in [NOW, 0, i64::MAX, i64::MIN] {
            if let Ok(token) = verify(&parsed, keys(), &policy, now) {
                // A verified token names the issuer it was judged by.
                assert_eq!(token.issuer, issuer);
                // Its scopes are the space-separated words of `scope` / `scp`.
                assert!(token
                    .scopes
                    .iter()
                    .all(|scope| !scope.is_empty() && !scope.contains(' ')));
            }
        }
    }
});
