//! Opaque access tokens: OAuth 2.0 Token Introspection (RFC 7662). Builds
//! the introspection request (§2.1, with the gate's own client credentials,
//! RFC 6749 §2.3.1), judges the response (§2.2) against the same rules as a
//! JWT (issuer, audience per RFC 8707, expiry), and decides how long a result
//! may be cached: results are keyed by a SHA-256 of the token, never the
//! token itself, and live at most min(TTL, time left to `exp`); refusals only
//! briefly. Revocation therefore takes effect within the TTL.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::verify::jwt::AccessToken;

/// How long a negative result (inactive, wrong audience, …) is cached at most.
pub const NEGATIVE_CACHE_SECONDS: i64 = 5;

/// How the gate authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    /// HTTP Basic (RFC 6749 §2.3.1), the default.
    ClientSecretBasic,
    /// Credentials in the form body.
    ClientSecretPost,
}

/// The gate's introspection client credentials. The secret is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct IntrospectionClient {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: String,
    /// How to send them.
    pub method: ClientAuthMethod,
}

impl std::fmt::Debug for IntrospectionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntrospectionClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("method", &self.method)
            .finish()
    }
}

/// An introspection request: form body and optional `Authorization` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntrospectionRequest {
    /// `application/x-www-form-urlencoded` body.
    pub body: String,
    /// `Authorization` header value, for client_secret_basic.
    pub authorization: Option<String>,
}

/// Builds the RFC 7662 §2.1 request for `token`.
pub fn build_request(token: &str, client: &IntrospectionClient) -> IntrospectionRequest {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token);
    form.append_pair("token_type_hint", "access_token");
    let authorization = match client.method {
        ClientAuthMethod::ClientSecretBasic => {
            // RFC 6749 §2.3.1: each part form-urlencoded before joining.
            let encode = |value: &str| {
                url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
            };
            let pair = format!(
                "{}:{}",
                encode(&client.client_id),
                encode(&client.client_secret)
            );
            Some(format!("Basic {}", base64_standard(pair.as_bytes())))
        }
        ClientAuthMethod::ClientSecretPost => {
            form.append_pair("client_id", &client.client_id);
            form.append_pair("client_secret", &client.client_secret);
            None
        }
    };
    IntrospectionRequest {
        body: form.finish(),
        authorization,
    }
}

fn base64_standard(bytes: &[u8]) -> String {
    use base64ct::{Base64, Encoding};
    Base64::encode_string(bytes)
}

/// Why an introspected token is refused (all `401 invalid_token` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntrospectionRefusal {
    /// `active` is not `true`.
    Inactive,
    /// `exp` has passed.
    Expired,
    /// `iss` names no trusted issuer (or is absent with several trusted).
    UntrustedIssuer,
    /// `aud` is absent or names no accepted audience.
    AudienceMismatch,
    /// A refresh token (or another kind) reported active: not a bearer access token.
    NotAnAccessToken,
    /// Sender-constrained by other means than a DPoP key (`cnf` without a
    /// `jkt`, e.g. mTLS, RFC 8705): the gate cannot check it.
    ProofOfPossessionRequired,
    /// `nbf` in the future.
    NotYetValid,
    /// A time claim that is not a whole number.
    InvalidClaims,
}

impl IntrospectionRefusal {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Inactive => "token_inactive",
            Self::Expired => "token_expired",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::AudienceMismatch => "audience_mismatch",
            Self::NotAnAccessToken => "not_an_access_token",
            Self::ProofOfPossessionRequired => "sender_constrained_token",
            Self::NotYetValid => "token_not_yet_valid",
            Self::InvalidClaims => "invalid_claims",
        }
    }
}

/// Why introspection could not answer (all `503` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntrospectionUnavailable {
    /// Connection failed.
    Network,
    /// No answer within the deadline.
    Timeout,
    /// The answer exceeded the size cap.
    TooLarge,
    /// Not a 200.
    Status(u16),
    /// Not a JSON object with a boolean `active`.
    Invalid,
    /// No endpoint configured and none discovered.
    NoEndpoint,
    /// A recent attempt failed; waiting before the next.
    BackingOff,
}

impl IntrospectionUnavailable {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Network => "introspection_fetch_failed",
            Self::Timeout => "introspection_timeout",
            Self::TooLarge => "introspection_too_large",
            Self::Status(_) => "introspection_bad_status",
            Self::Invalid => "introspection_invalid",
            Self::NoEndpoint => "introspection_discovery_failed",
            Self::BackingOff => "introspection_backing_off",
        }
    }
}

/// What the rules need to judge a response.
#[derive(Debug, Clone, Copy)]
pub struct IntrospectionPolicy<'a> {
    /// Trusted issuers.
    pub issuers: &'a [String],
    /// Accepted audiences.
    pub audiences: &'a [String],
    /// Clock skew allowed on `exp`.
    pub leeway_seconds: i64,
}

/// The verdict on one token, as cached.
pub type Verdict = Result<AccessToken, IntrospectionRefusal>;

/// Judges an RFC 7662 §2.2 response body at time `now`.
pub fn judge_response(
    body: &[u8],
    policy: &IntrospectionPolicy<'_>,
    now: i64,
) -> Result<Verdict, IntrospectionUnavailable> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| IntrospectionUnavailable::Invalid)?;
    let object = value.as_object().ok_or(IntrospectionUnavailable::Invalid)?;
    // §2.2: `active` is REQUIRED; anything but `true` means inactive.
    if object.get("active") != Some(&Value::Bool(true)) {
        return Ok(Err(IntrospectionRefusal::Inactive));
    }
    let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
    // Hydra reports `token_use`; others may say `token_type: refresh_token`.
    let refresh = text("token_use").is_some_and(|usage| usage != "access_token")
        || text("token_type").is_some_and(|kind| kind.eq_ignore_ascii_case("refresh_token"));
    if refresh {
        return Ok(Err(IntrospectionRefusal::NotAnAccessToken));
    }
    let confirmation = match object.get("cnf") {
        None => None,
        Some(cnf) => match crate::verify::jwt::key_confirmation(cnf) {
            Some(jkt) => Some(jkt),
            None => return Ok(Err(IntrospectionRefusal::ProofOfPossessionRequired)),
        },
    };
    let time = |name: &str| match object.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .map(Some)
            .ok_or(IntrospectionRefusal::InvalidClaims),
    };
    let (exp, nbf) = match (time("exp"), time("nbf")) {
        (Ok(exp), Ok(nbf)) => (exp, nbf),
        _ => return Ok(Err(IntrospectionRefusal::InvalidClaims)),
    };
    if exp.is_some_and(|exp| exp.saturating_add(policy.leeway_seconds) <= now) {
        return Ok(Err(IntrospectionRefusal::Expired));
    }
    if nbf.is_some_and(|nbf| now.saturating_add(policy.leeway_seconds) < nbf) {
        return Ok(Err(IntrospectionRefusal::NotYetValid));
    }
    let issuer = match text("iss") {
        Some(iss) if policy.issuers.contains(&iss) => iss,
        Some(_) => return Ok(Err(IntrospectionRefusal::UntrustedIssuer)),
        // The endpoint speaks for its issuer; only unambiguous with one.
        None if policy.issuers.len() == 1 => policy.issuers[0].clone(),
        None => return Ok(Err(IntrospectionRefusal::UntrustedIssuer)),
    };
    let audience_ok = match object.get("aud") {
        Some(Value::String(aud)) => policy.audiences.contains(aud),
        // Only an array of strings names audiences at all.
        Some(Value::Array(auds)) => {
            auds.iter().all(Value::is_string)
                && auds
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|aud| policy.audiences.iter().any(|accepted| accepted == aud))
        }
        // RFC 8707: a token not bound to this resource is not for it.
        _ => false,
    };
    if !audience_ok {
        return Ok(Err(IntrospectionRefusal::AudienceMismatch));
    }
    let mut scopes: Vec<String> = Vec::new();
    for scope in text("scope").unwrap_or_default().split(' ') {
        if !scope.is_empty() && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(Ok(AccessToken {
        issuer,
        subject: text("sub"),
        client_id: text("client_id"),
        scopes,
        expires_at: exp.unwrap_or(i64::MAX),
        not_before: nbf,
        token_id: text("jti"),
        confirmation,
    }))
}

/// How long a verdict may be cached from `now`, in seconds (0: not at all).
pub fn cache_lifetime(verdict: &Verdict, ttl_seconds: i64, now: i64) -> i64 {
    match verdict {
        Ok(token) => ttl_seconds.min(token.expires_at.saturating_sub(now)).max(0),
        Err(_) => ttl_seconds.clamp(0, NEGATIVE_CACHE_SECONDS),
    }
}

/// A cached verdict with its expiry, as stored in memory and KV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedVerdict {
    /// Seconds since the epoch after which the entry is ignored.
    pub until: i64,
    /// Identity and scopes of an active token.
    pub token: Option<CachedToken>,
    /// Why the token was refused.
    pub refusal: Option<IntrospectionRefusal>,
}

/// The serializable parts of an [`AccessToken`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    iss: String,
    sub: Option<String>,
    client_id: Option<String>,
    scopes: Vec<String>,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    jti: Option<String>,
    /// `cnf.jkt`; absent in entries written before DPoP was checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jkt: Option<String>,
}

impl CachedVerdict {
    /// Wraps `verdict` to live until `until`.
    pub fn new(verdict: &Verdict, until: i64) -> Self {
        match verdict {
            Ok(token) => CachedVerdict {
                until,
                token: Some(CachedToken {
                    iss: token.issuer.clone(),
                    sub: token.subject.clone(),
                    client_id: token.client_id.clone(),
                    scopes: token.scopes.clone(),
                    exp: token.expires_at,
                    nbf: token.not_before,
                    jti: token.token_id.clone(),
                    jkt: token.confirmation.clone(),
                }),
                refusal: None,
            },
            Err(refusal) => CachedVerdict {
                until,
                token: None,
                refusal: Some(*refusal),
            },
        }
    }

    /// The verdict, if still valid at `now` (an active token is re-checked
    /// against its own `exp` on every hit).
    pub fn verdict_at(&self, now: i64, leeway_seconds: i64) -> Option<Verdict> {
        if now >= self.until {
            return None;
        }
        match (&self.token, self.refusal) {
            (Some(t), _) if t.exp.saturating_add(leeway_seconds) <= now => {
                Some(Err(IntrospectionRefusal::Expired))
            }
            (Some(t), _)
                if t.nbf
                    .is_some_and(|nbf| now.saturating_add(leeway_seconds) < nbf) =>
            {
                Some(Err(IntrospectionRefusal::NotYetValid))
            }
            (Some(t), _) => Some(Ok(AccessToken {
                issuer: t.iss.clone(),
                subject: t.sub.clone(),
                client_id: t.client_id.clone(),
                scopes: t.scopes.clone(),
                expires_at: t.exp,
                not_before: t.nbf,
                token_id: t.jti.clone(),
                confirmation: t.jkt.clone(),
            })),
            (None, Some(refusal)) => Some(Err(refusal)),
            (None, None) => None,
        }
    }
}

/// The cache key of a token: a SHA-256, so no store ever holds the token,
/// over the policy it was judged by too, so gates with other audiences or
/// issuers sharing the KV namespace never reuse each other's verdicts.
pub fn cache_key(token: &str, policy: &IntrospectionPolicy<'_>) -> String {
    let mut hasher = Sha256::new();
    for part in policy.issuers.iter().chain(policy.audiences) {
        hasher.update(part.as_bytes());
        hasher.update(b"\n");
    }
    hasher.update(b"\0");
    hasher.update(token.as_bytes());
    let digest = hasher.finalize();
    let mut key = String::from("introspect:v1:");
    for byte in digest {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// Whether `raw` looks like a compact JWS (three base64url segments whose
/// first decodes to a JSON object), for `OAUTH_TOKEN_FORMAT=auto`.
pub fn looks_like_jwt(raw: &str) -> bool {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let mut parts = raw.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    Base64UrlUnpadded::decode_vec(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|value| value.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn policy<'a>(issuers: &'a [String], audiences: &'a [String]) -> IntrospectionPolicy<'a> {
        IntrospectionPolicy {
            issuers,
            audiences,
            leeway_seconds: 0,
        }
    }

    fn judge(body: &str) -> Result<Verdict, IntrospectionUnavailable> {
        let issuers = ["https://as.example".to_owned()];
        let audiences = ["https://mcp.example/mcp".to_owned()];
        judge_response(body.as_bytes(), &policy(&issuers, &audiences), NOW)
    }

    #[test]
    fn active_token_yields_identity_and_scopes() {
        let token = judge(&format!(
            r#"{{"active":true,"iss":"https://as.example","aud":["x","https://mcp.example/mcp"],"sub":"u","client_id":"c","scope":"a b a","exp":{}}}"#,
            NOW + 100
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            (token.subject.as_deref(), token.client_id.as_deref()),
            (Some("u"), Some("c"))
        );
        assert_eq!(token.scopes, ["a", "b"]);
        let no_iss = judge(r#"{"active":true,"aud":"https://mcp.example/mcp"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            no_iss.issuer, "https://as.example",
            "the only issuer speaks through its endpoint"
        );
    }

    #[test]
    fn refusals_follow_the_jwt_rules() {
        let aud = r#""aud":"https://mcp.example/mcp""#;
        for (body, refusal) in [
            (
                r#"{"active":false}"#.to_owned(),
                IntrospectionRefusal::Inactive,
            ),
            (
                r#"{"active":"true"}"#.to_owned(),
                IntrospectionRefusal::Inactive,
            ),
            (r#"{}"#.to_owned(), IntrospectionRefusal::Inactive),
            (
                format!(r#"{{"active":true,{aud},"exp":{NOW}}}"#),
                IntrospectionRefusal::Expired,
            ),
            (
                format!(r#"{{"active":true,{aud},"iss":"https://evil.example"}}"#),
                IntrospectionRefusal::UntrustedIssuer,
            ),
            (
                r#"{"active":true,"aud":"https://other.example/mcp"}"#.to_owned(),
                IntrospectionRefusal::AudienceMismatch,
            ),
            (
                r#"{"active":true}"#.to_owned(),
                IntrospectionRefusal::AudienceMismatch,
            ),
            (
                format!(r#"{{"active":true,{aud},"token_use":"refresh_token"}}"#),
                IntrospectionRefusal::NotAnAccessToken,
            ),
            (
                format!(r#"{{"active":true,{aud},"token_type":"refresh_token"}}"#),
                IntrospectionRefusal::NotAnAccessToken,
            ),
            (
                format!(r#"{{"active":true,{aud},"cnf":{{"jkt":"x"}}}}"#),
                IntrospectionRefusal::ProofOfPossessionRequired,
            ),
            (
                format!(r#"{{"active":true,{aud},"nbf":{}}}"#, NOW + 100),
                IntrospectionRefusal::NotYetValid,
            ),
            (
                format!(r#"{{"active":true,{aud},"exp":"{}"}}"#, NOW + 100),
                IntrospectionRefusal::InvalidClaims,
            ),
        ] {
            assert_eq!(judge(&body), Ok(Err(refusal)), "{body}");
        }
        // A huge exp neither overflows nor panics.
        let far = judge(&format!(r#"{{"active":true,{aud},"exp":{}}}"#, i64::MAX));
        assert!(far.unwrap().is_ok());
        let access = judge(&format!(
            r#"{{"active":true,{aud},"token_use":"access_token","token_type":"Bearer"}}"#
        ));
        assert!(access.unwrap().is_ok());
        for garbage in ["", "[]", "<html>", "true"] {
            assert_eq!(
                judge(garbage),
                Err(IntrospectionUnavailable::Invalid),
                "{garbage}"
            );
        }
    }

    #[test]
    fn cache_lifetime_is_bounded_by_ttl_and_expiry() {
        let token = judge(&format!(
            r#"{{"active":true,"aud":"https://mcp.example/mcp","exp":{}}}"#,
            NOW + 30
        ))
        .unwrap();
        assert_eq!(cache_lifetime(&token, 60, NOW), 30);
        assert_eq!(cache_lifetime(&token, 10, NOW), 10);
        assert_eq!(
            cache_lifetime(&Err(IntrospectionRefusal::Inactive), 60, NOW),
            NEGATIVE_CACHE_SECONDS
        );
        let cached = CachedVerdict::new(&token, NOW + 30);
        assert!(cached.verdict_at(NOW + 29, 0).unwrap().is_ok());
        assert_eq!(cached.verdict_at(NOW + 30, 0), None);
        let stored: CachedVerdict =
            serde_json::from_str(&serde_json::to_string(&cached).unwrap()).unwrap();
        assert_eq!(stored, cached);
    }

    #[test]
    fn requests_carry_the_token_and_credentials_as_configured() {
        let mut client = IntrospectionClient {
            client_id: "gate id".to_owned(),
            client_secret: "s:e&c".to_owned(),
            method: ClientAuthMethod::ClientSecretBasic,
        };
        let basic = build_request("tok+en", &client);
        assert_eq!(basic.body, "token=tok%2Ben&token_type_hint=access_token");
        // base64("gate+id:s%3Ae%26c")
        assert_eq!(
            basic.authorization.as_deref(),
            Some("Basic Z2F0ZStpZDpzJTNBZSUyNmM=")
        );
        client.method = ClientAuthMethod::ClientSecretPost;
        let post = build_request("t", &client);
        assert_eq!(post.authorization, None);
        assert!(post
            .body
            .ends_with("&client_id=gate+id&client_secret=s%3Ae%26c"));
        assert!(!format!("{client:?}").contains("s:e&c"), "secret redacted");
    }

    #[test]
    fn keys_hash_the_token() {
        let (issuers, audiences, other) = (["i".to_owned()], ["a".to_owned()], ["b".to_owned()]);
        let key = cache_key("secret-token", &policy(&issuers, &audiences));
        assert!(key.starts_with("introspect:v1:") && !key.contains("secret-token"));
        assert_ne!(
            key,
            cache_key("secret-token", &policy(&issuers, &other)),
            "bound to the policy"
        );
    }

    #[test]
    fn recognises_compact_jws() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
        for opaque in [
            "abc",
            "a.b",
            "a.b.c.d",
            "Zm9v.e30.c2ln",
            "2YotnFZFEjr1zCsicMWpAA",
        ] {
            assert!(!looks_like_jwt(opaque), "{opaque}");
        }
    }

    /// What the audience check replaced: serde's untagged enum read from the
    /// member's value.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum UntaggedAudience {
        One(String),
        Many(Vec<String>),
    }

    #[test]
    fn audiences_are_judged_as_the_untagged_enum_judged_them() {
        let accepted = "https://mcp.example/mcp";
        for aud in [
            "null",
            "true",
            "5",
            "1.5",
            r#""""#,
            r#""https://mcp.example/mcp""#,
            r#""https://other.example/mcp""#,
            "[]",
            r#"["https://mcp.example/mcp"]"#,
            r#"["x", "https://mcp.example/mcp"]"#,
            r#"["https://mcp.example/mcp", 1]"#,
            r#"[null, "https://mcp.example/mcp"]"#,
            r#"[["https://mcp.example/mcp"]]"#,
            r#"["x", "y"]"#,
            "{}",
            r#"{"https://mcp.example/mcp": 1}"#,
        ] {
            let value: Value = serde_json::from_str(aud).unwrap();
            let expected = match serde_json::from_value::<UntaggedAudience>(value) {
                Ok(UntaggedAudience::One(one)) => one == accepted,
                Ok(UntaggedAudience::Many(many)) => many.iter().any(|a| a == accepted),
                Err(_) => false,
            };
            let verdict = judge(&format!(r#"{{"active":true,"aud":{aud}}}"#)).unwrap();
            assert_eq!(verdict.is_ok(), expected, "{aud}");
            if !expected {
                assert_eq!(
                    verdict,
                    Err(IntrospectionRefusal::AudienceMismatch),
                    "{aud}"
                );
            }
        }
    }
}
