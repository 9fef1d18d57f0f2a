//! The gate's signed, request-bound assertion for the origin: a compact JWS
//! (RFC 7515 §7.1) in the `Portcullis-Assertion` field of every request
//! forwarded on a route that asks for it, and the JWK Set (RFC 7517 §5)
//! that publishes the public keys it is checked with.
//!
//! The `X-Auth-*` fields say who is calling, but anything that reaches the
//! origin can write them. The assertion says it with the gate's signature,
//! and binds it to the one request it travels with: the MCP method and its
//! target as the gate authorized them, the HTTP method and URL, and a hash
//! of the very body forwarded. It is short-lived and carries a unique `jti`,
//! so an origin can refuse a request that was changed after the gate let it
//! through, sent to another origin, or replayed.
//!
//! The JOSE header is explicitly typed (`typ` `portcullis+jwt`, RFC 8725
//! §3.11) so the assertion can never pass for an access token (RFC 9068
//! §2.1 `at+jwt`) or an ID token; it carries the `kid` of the key that
//! signed it (RFC 7515 §4.1.4). No private-key operation happens here:
//! [`signing_input`] builds what is signed; the driver signs it with
//! WebCrypto using the key of the secret binding, as it sends the request
//! ([`Signing`]).

use std::cell::Cell;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::verify::jwk::{load_public_part, JwsAlgorithm, PublicKey};
use crate::verify::jwt::AccessToken;

/// The request field carrying the assertion (lower case, as forwarded).
pub const ASSERTION_HEADER: &str = "portcullis-assertion";
/// The JOSE `typ` of every assertion.
pub const ASSERTION_TYPE: &str = "portcullis+jwt";
/// Where the gate publishes its public keys: outside every protected
/// resource, under the well-known prefix no route may use (RFC 8615).
pub const JWKS_PATH: &str = "/.well-known/portcullis/jwks.json";
/// How long an origin may cache the key set. Publish a new key as the next
/// one at least this long (plus the origin's own cache time) before it signs.
pub const JWKS_MAX_AGE_SECONDS: u32 = 300;
/// Default lifetime of an assertion.
pub const DEFAULT_LIFETIME_SECONDS: u64 = 60;

/// One of the gate's keys, read from a JWK binding: its public part and the
/// `kid` that names it. The private part is checked for shape and dropped;
/// only the driver's WebCrypto import ever uses it.
#[derive(Clone, PartialEq, Eq)]
pub struct AssertionKey {
    /// ES256 for a P-256 key, EdDSA for an Ed25519 key.
    pub alg: JwsAlgorithm,
    /// The JWK's own `kid`, else its RFC 7638 thumbprint.
    pub kid: String,
    /// The public key.
    pub public: PublicKey,
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AssertionKey({}, kid {:?})", self.alg, self.kid)
    }
}

impl AssertionKey {
    /// Reads a JWK (RFC 7517 §4): an EC P-256 (RFC 7518 §6.2) or OKP
    /// Ed25519 (RFC 8037 §2) key, with its private part `d` when `private`
    /// (the key that signs), with or without it otherwise (a key only
    /// published). The problem never quotes the value: it is a secret.
    pub fn parse(raw: &str, private: bool) -> Result<Self, &'static str> {
        let Ok(Value::Object(members)) = serde_json::from_str::<Value>(raw) else {
            return Err("is not a JSON object (give the key as a JWK, e.g. from `npx jose-cli` or `openssl` + a JWK converter)");
        };
        let scalar = members.get("d").map(|d| {
            d.as_str()
                .and_then(|d| Base64UrlUnpadded::decode_vec(d).ok())
                .is_some_and(|scalar| scalar.len() == 32)
        });
        match scalar {
            None if private => {
                return Err("has no private part `d`: the signing key must be a private JWK")
            }
            Some(false) => return Err("has a private part `d` that is not base64url of 32 bytes"),
            _ => {}
        }
        let key = load_public_part(&Value::Object(members), true).map_err(|_| {
            "is not a usable EC P-256 or OKP Ed25519 signing key (kty, crv, x, y, alg or use)"
        })?;
        let alg = match key.key {
            PublicKey::P256 { .. } => JwsAlgorithm::Es256,
            PublicKey::Ed25519(_) => JwsAlgorithm::EdDsa,
            PublicKey::Rsa { .. } => {
                return Err("is an RSA key: use an EC P-256 (ES256) or OKP Ed25519 (EdDSA) key")
            }
        };
        let kid = match key.kid {
            Some(kid) if kid.is_empty() || kid.len() > 128 || kid.contains('"') || kid.contains('\\') || kid.chars().any(char::is_control) => {
                return Err("has a `kid` that is empty, longer than 128 characters, or holds quotes, backslashes or control characters")
            }
            Some(kid) => kid,
            None => key.key.thumbprint(),
        };
        Ok(AssertionKey {
            alg,
            kid,
            public: key.key,
        })
    }

    /// The key as published: its public members, `kid`, `alg` and `use`.
    fn published(&self) -> String {
        let mut jwk = self.public.required_members();
        jwk.pop();
        format!(
            r#"{jwk},"kid":"{}","alg":"{}","use":"sig"}}"#,
            self.kid,
            self.alg.name()
        )
    }
}

/// The assertion settings (parsed once from the bindings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssertionSettings {
    /// `iss` of every assertion.
    pub issuer: String,
    /// `exp - iat`.
    pub lifetime_seconds: i64,
    /// The key that signs.
    pub signing: AssertionKey,
    /// The binding holding the signing key's private JWK, which the driver
    /// imports into WebCrypto.
    pub signing_binding: &'static str,
    /// The JWK Set served at [`JWKS_PATH`]: the signing key, then the next.
    pub jwks: String,
}

impl AssertionSettings {
    /// Settings signing with `signing`, publishing `next` beside it.
    pub fn new(
        issuer: String,
        lifetime_seconds: u64,
        signing: AssertionKey,
        signing_binding: &'static str,
        next: Option<&AssertionKey>,
    ) -> Self {
        let keys: Vec<String> = std::iter::once(&signing)
            .chain(next)
            .map(AssertionKey::published)
            .collect();
        AssertionSettings {
            issuer,
            lifetime_seconds: i64::try_from(lifetime_seconds).unwrap_or(60),
            jwks: format!(r#"{{"keys":[{}]}}"#, keys.join(",")),
            signing,
            signing_binding,
        }
    }
}

/// Makes each assertion's `jti`: unpredictable and unique across isolates
/// without a store, from a random seed the driver gives each isolate and a
/// counter.
pub struct JtiSource {
    seed: [u8; 32],
    counter: Cell<u64>,
}

impl JtiSource {
    /// A source over `seed` (32 random bytes, new per isolate).
    pub fn new(seed: [u8; 32]) -> Self {
        JtiSource {
            seed,
            counter: Cell::new(0),
        }
    }

    /// The next `jti`: 128 bits of SHA-256(seed ‖ counter), base64url.
    pub fn next(&self) -> String {
        let count = self.counter.get();
        self.counter.set(count.wrapping_add(1));
        let digest = Sha256::new()
            .chain_update(self.seed)
            .chain_update(count.to_le_bytes())
            .finalize();
        base64url(&digest[..16])
    }
}

/// An assertion for the driver to sign (RFC 7515 §5.1 step 5) with the
/// private key of the binding, imported into WebCrypto by the driver, never
/// by the machine, and to send in [`ASSERTION_HEADER`] as
/// `input.signature` (the compact form, RFC 7515 §7.1; the signature
/// base64url without padding, `r ‖ s` for ES256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    /// The binding holding the private JWK.
    pub binding: &'static str,
    /// ES256 or EdDSA: the key's algorithm.
    pub alg: JwsAlgorithm,
    /// The JWS signing input.
    pub input: String,
}

/// One JSON-RPC message of the body: its method and what it acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// The method.
    pub method: String,
    /// The tool, prompt or resource URI, when the method names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The request an assertion is bound to.
pub struct Bound<'a> {
    /// The route's `aud` for the origin.
    pub audience: &'a str,
    /// The verified access token.
    pub token: &'a AccessToken,
    /// The access token as the client sent it (hashed when it has no `jti`).
    pub raw_token: &'a str,
    /// The body's messages that have a method, in order.
    pub calls: &'a [Call],
    /// The HTTP method forwarded.
    pub method: &'a str,
    /// The URL forwarded to.
    pub url: &'a str,
    /// The body forwarded (empty when none).
    pub body: &'a [u8],
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    scope: String,
    token_iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_calls: Option<&'a [Call]>,
    htm: &'a str,
    htu: &'a str,
    body_sha256: String,
    iat: i64,
    exp: i64,
    jti: String,
}

fn sha256_b64(bytes: &[u8]) -> String {
    base64url(&Sha256::digest(bytes))
}

/// The JWS signing input (RFC 7515 §5.1 step 6) of the assertion for
/// `bound`, issued at `now` with `jti`: what the driver signs.
pub fn signing_input(
    settings: &AssertionSettings,
    bound: &Bound<'_>,
    now: i64,
    jti: String,
) -> String {
    let token = bound.token;
    // One call (a single message, or a batch with one message that has a
    // method) is named flat; several are listed.
    let (mcp_method, mcp_name, mcp_calls) = match bound.calls {
        [] => (None, None, None),
        [call] => (Some(call.method.as_str()), call.name.as_deref(), None),
        calls => (None, None, Some(calls)),
    };
    let claims = Claims {
        iss: &settings.issuer,
        aud: bound.audience,
        sub: token.subject.as_deref(),
        client_id: token.client_id.as_deref(),
        scope: token.scopes.join(" "),
        token_iss: &token.issuer,
        token_jti: token.token_id.as_deref(),
        token_hash: token
            .token_id
            .is_none()
            .then(|| sha256_b64(bound.raw_token.as_bytes())),
        mcp_method,
        mcp_name,
        mcp_calls,
        htm: bound.method,
        htu: bound.url,
        body_sha256: sha256_b64(bound.body),
        iat: now,
        exp: now.saturating_add(settings.lifetime_seconds),
        jti,
    };
    let header = format!(
        r#"{{"alg":"{}","typ":"{ASSERTION_TYPE}","kid":"{}"}}"#,
        settings.signing.alg.name(),
        settings.signing.kid
    );
    let payload = serde_json::to_vec(&claims).unwrap_or_default();
    let mut input = base64url(header.as_bytes());
    input.push('.');
    input.push_str(&base64url(&payload));
    input
}

/// Base64url without padding (RFC 7515 §2), by table. Nothing encoded here
/// is secret, so the constant-time encoder used for keys and tokens, several
/// times slower on each request's hundreds of bytes, is not needed.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, byte)| n | u32::from(*byte) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]);
        }
    }
    // Only ASCII from the alphabet was pushed.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}"#;
    const ED25519: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

    #[test]
    fn reads_ec_and_okp_private_jwks_and_names_them_by_thumbprint() {
        let p256 = AssertionKey::parse(P256, true).unwrap();
        assert_eq!(p256.alg, JwsAlgorithm::Es256);
        assert_eq!(p256.kid, p256.public.thumbprint());
        let ed = AssertionKey::parse(ED25519, true).unwrap();
        assert_eq!(ed.alg, JwsAlgorithm::EdDsa);
        // RFC 8037 appendix A.3: the thumbprint of the A.1 key.
        assert_eq!(ed.kid, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn refuses_keys_it_cannot_sign_with_without_quoting_them() {
        let public_only =
            r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
        assert!(AssertionKey::parse(public_only, true).is_err());
        assert!(AssertionKey::parse(public_only, false).is_ok());
        for bad in [
            "not json",
            "[]",
            r#"{"kty":"oct","k":"c2VjcmV0","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","d":"short","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"ES256"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","use":"enc"}"#,
            r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"a\"b"}"#,
        ] {
            let problem = AssertionKey::parse(bad, true).unwrap_err();
            assert!(!problem.contains("nWGxne"), "{problem}");
        }
    }

    #[test]
    fn publishes_public_members_only() {
        let current = AssertionKey::parse(P256, true).unwrap();
        let next = AssertionKey::parse(ED25519, true).unwrap();
        let settings = AssertionSettings::new("https://gate".into(), 60, current, "K", Some(&next));
        let set: Value = serde_json::from_str(&settings.jwks).unwrap();
        let keys = set["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["alg"], "ES256");
        assert_eq!(keys[1]["kid"], next.kid);
        assert!(!settings.jwks.contains("\"d\""));
        // The published keys load as any verifier would load them.
        for key in keys {
            assert!(crate::verify::jwk::load_key(key).is_ok());
        }
    }

    #[test]
    fn base64url_matches_rfc_4648_without_padding() {
        for length in 0..70 {
            let bytes: Vec<u8> = (0..length).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64url(&bytes), Base64UrlUnpadded::encode_string(&bytes));
        }
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn jtis_differ_per_call_and_per_seed() {
        let one = JtiSource::new([1; 32]);
        let other = JtiSource::new([2; 32]);
        let (a, b) = (one.next(), one.next());
        assert_ne!(a, b);
        assert_ne!(a, other.next());
        assert_eq!(a.len(), 22);
    }

    #[test]
    fn binds_the_claims_to_the_request() {
        let key = AssertionKey::parse(ED25519, true).unwrap();
        let settings = AssertionSettings::new("https://gate".into(), 60, key, "K", None);
        let token = AccessToken {
            issuer: "https://as".into(),
            subject: Some("alice".into()),
            client_id: None,
            scopes: vec!["a".into(), "b".into()],
            expires_at: 0,
            not_before: None,
            token_id: None,
            confirmation: None,
        };
        let calls = [Call {
            method: "tools/call".into(),
            name: Some("void_invoice".into()),
        }];
        let bound = Bound {
            audience: "https://origin",
            token: &token,
            raw_token: "raw",
            calls: &calls,
            method: "POST",
            url: "https://origin/mcp",
            body: b"",
        };
        let input = signing_input(&settings, &bound, 1000, "j".into());
        let (header, payload) = input.split_once('.').unwrap();
        let header: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(header).unwrap()).unwrap();
        assert_eq!(header["typ"], ASSERTION_TYPE);
        assert_eq!(header["alg"], "EdDSA");
        let claims: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert!(claims.get("client_id").is_none());
        assert_eq!(claims["scope"], "a b");
        assert_eq!(claims["mcp_name"], "void_invoice");
        assert_eq!(claims["exp"], 1060);
        assert_eq!(claims["token_hash"], sha256_b64(b"raw"));
        assert_eq!(
            claims["body_sha256"],
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        let batch = [
            calls[0].clone(),
            Call {
                method: "notifications/initialized".into(),
                name: None,
            },
        ];
        let input = signing_input(
            &settings,
            &Bound {
                calls: &batch,
                ..bound
            },
            1000,
            "k".into(),
        );
        let payload = input.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap();
        assert!(claims.get("mcp_method").is_none());
        assert_eq!(
            claims["mcp_calls"],
            serde_json::json!([
                {"method": "tools/call", "name": "void_invoice"},
                {"method": "notifications/initialized"}
            ])
        );
    }
}
