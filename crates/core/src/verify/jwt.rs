//! JWT access token verification: JWS Compact Serialization (RFC 7515 §3.1,
//! §5.2), JWT claims (RFC 7519 §4.1, §7.2), the JWT profile for OAuth 2.0
//! access tokens (RFC 9068 §2, §4) and the JWT best current practices
//! (RFC 8725 §3).
//!
//! Verification runs in a fixed order: structure and header first (no key is
//! touched for a token we would refuse anyway), then the signature with a key
//! that the key set and the algorithm allow-list both accept, and only then
//! the claims. The token's `alg` alone never selects anything: it must be on
//! the allow-list, and the key must be of the type the algorithm needs and
//! not pinned to a different algorithm.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::verify::jwk::{JwsAlgorithm, KeySet, PublicKey, VerificationKey};
use crate::verify::signature::plausible;

/// Most keys a token without `kid` is tried against.
pub const MAX_KEYS_TRIED_WITHOUT_KID: usize = 3;
/// Latest NumericDate accepted (9999-12-31T23:59:59Z); anything beyond is
/// nonsense rather than a long-lived token.
const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// Why a bearer token is not acceptable. Every variant maps to
/// `401 invalid_token` (RFC 6750 §3.1); the variant is the log's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url segments, or header/claims not JSON objects.
    Malformed,
    /// `alg` is `none`, symmetric, unknown, or not on the allow-list.
    AlgorithmNotAllowed,
    /// A header parameter the gate refuses to honour: `crit`, `jku`, `x5u`,
    /// `x5c`, `jwk`, `cty` or `b64` (RFC 8725 §3.10, §3.11).
    ForbiddenHeader,
    /// `typ` present and not an access token or plain JWT type (RFC 9068 §2.1);
    /// in strict mode, `typ` absent or anything but `at+jwt`.
    WrongType,
    /// `iss` missing or not one of the trusted issuers.
    UntrustedIssuer,
    /// No key in the issuer's set matches `kid` and `alg`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// A registered claim has the wrong JSON type or an absurd value.
    InvalidClaims,
    /// `exp` absent (RFC 9068 §2.2 makes it required).
    MissingExpiry,
    /// `sub` absent in strict mode (RFC 9068 §2.2 makes it required; the
    /// default mode also takes generic JWTs, RFC 7519 §4.1.2, where it is
    /// optional).
    MissingSubject,
    /// `exp` is in the past, beyond the leeway.
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    IssuedInFuture,
    /// `aud` absent or without an accepted audience (RFC 8707 §2, RFC 9068 §4).
    AudienceMismatch,
    /// A `cnf` claim binds the token to a key by means the gate cannot check
    /// (anything but a DPoP `jkt`: an mTLS certificate, RFC 8705), or a
    /// DPoP-bound token was sent as a bearer token to a route that takes
    /// bearer tokens only (RFC 7800 §3.1, RFC 9449 §6).
    ProofOfPossessionRequired,
    /// `exp - iat` exceeds the configured maximum lifetime, or `iat` is
    /// absent when a maximum is configured (RFC 9068 §2.2 makes `iat`
    /// required).
    LifetimeTooLong,
}

impl TokenError {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::ForbiddenHeader => "forbidden_header_parameter",
            Self::WrongType => "wrong_token_type",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::InvalidClaims => "invalid_claims",
            Self::MissingExpiry => "missing_exp",
            Self::MissingSubject => "missing_sub",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::AudienceMismatch => "audience_mismatch",
            Self::ProofOfPossessionRequired => "sender_constrained_token",
            Self::LifetimeTooLong => "token_lifetime_too_long",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// JOSE header members the gate reads. Members it refuses are captured only
/// to detect their presence.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jku: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5u: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5c: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jwk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    cty: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    b64: Option<Value>,
}

/// Registered and access-token claims (RFC 7519 §4.1, RFC 9068 §2.2,
/// RFC 8693 §4.2 for `scope`). Time claims stay raw so that a `null` or a
/// string is refused rather than read as absent.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Words>,
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    iat: Option<Value>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    scp: Option<Words>,
    #[serde(default)]
    jti: Option<String>,
    #[serde(default, deserialize_with = "present")]
    cnf: Option<Value>,
}

/// `aud` (RFC 7519 §4.1.3) and `scp`: one string, or an array of strings
/// (`scp` is an array in most servers and a space-separated string in
/// some). Read as serde's untagged enum of a `String` and a `Vec<String>`
/// reads them from JSON (anything else refused), without buffering the
/// value first.
enum Words {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordsVisitor;
        impl<'de> Visitor<'de> for WordsVisitor {
            type Value = Words;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<Words, E> {
                Ok(Words::One(word.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, word: String) -> Result<Words, E> {
                Ok(Words::One(word))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    words.push(word);
                }
                Ok(Words::Many(words))
            }
        }
        deserializer.deserialize_any(WordsVisitor)
    }
}

/// Keeps `null` distinguishable from an absent member.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A token that parsed but is not yet trusted.
pub struct UnverifiedJwt {
    signing_input: String,
    signature: Vec<u8>,
    alg: JwsAlgorithm,
    kid: Option<String>,
    typ: Option<String>,
    claims: RawClaims,
}

impl UnverifiedJwt {
    /// Parses a compact JWS and checks its header against the allow-list.
    /// Nothing here is trusted yet; the claims are read only to learn which
    /// issuer's keys to verify with.
    pub fn parse(token: &str, allowed: &[JwsAlgorithm]) -> Result<Self, TokenError> {
        let mut segments = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let header_json = decode_segment(header_b64)?;
        let header: JoseHeader = json_object(&header_json)?;
        let alg = JwsAlgorithm::from_name(&header.alg)
            .filter(|alg| allowed.contains(alg))
            .ok_or(TokenError::AlgorithmNotAllowed)?;
        let refused = [
            &header.crit,
            &header.jku,
            &header.x5u,
            &header.x5c,
            &header.jwk,
            &header.cty,
            &header.b64,
        ];
        if refused.iter().any(|member| member.is_some()) {
            return Err(TokenError::ForbiddenHeader);
        }
        if header
            .typ
            .as_deref()
            .is_some_and(|typ| !is_acceptable_type(typ))
        {
            return Err(TokenError::WrongType);
        }
        let claims_json = decode_segment(payload_b64)?;
        let claims: RawClaims = json_object(&claims_json)?;
        let signature = decode_segment(signature_b64)?;
        let signing_input = token[..header_b64.len() + 1 + payload_b64.len()].to_owned();
        Ok(Self {
            signing_input,
            signature,
            alg,
            kid: header.kid,
            typ: header.typ,
            claims,
        })
    }

    /// Strict RFC 9068 check (`JWT_REQUIRE_TYP_AT_JWT`): `typ` must be
    /// present and `at+jwt` (or `application/at+jwt`, in any case: media
    /// types compare case-insensitively, RFC 7515 §4.1.9), so that an ID
    /// token or another JWT signed by the same issuer cannot pass as an
    /// access token (§2.1); and `sub` must be present (§2.2: REQUIRED, the
    /// client's own identifier for a client-credentials token).
    pub fn require_access_token_type(&self) -> Result<(), TokenError> {
        let typ = self.typ.as_deref().ok_or(TokenError::WrongType)?;
        if !media_subtype(typ).eq_ignore_ascii_case("at+jwt") {
            return Err(TokenError::WrongType);
        }
        if self.claims.sub.is_none() {
            return Err(TokenError::MissingSubject);
        }
        Ok(())
    }

    /// The unverified `iss`, used only to choose the key set.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.iss.as_deref()
    }

    /// The header's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The header's `alg`, already checked against the allow-list.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// Whether `keys` holds a key this token could be verified with. When it
    /// does not, a caller may refresh the key set once before giving up.
    pub fn has_candidate_key(&self, keys: &KeySet) -> bool {
        keys.candidates(self.kid(), self.alg).next().is_some()
    }

    /// The JWS signing input (RFC 7515 §5.2 step 8): what the signature covers.
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// The decoded signature.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The keys the signature is to be checked with, in order: from the
    /// issuer the policy trusts, matching `kid` and `alg`, at most
    /// [`MAX_KEYS_TRIED_WITHOUT_KID`] when the token names no key, and only
    /// those a signature of this length could come from. Empty means no
    /// check can succeed (`BadSignature`); an error means none may be tried.
    pub fn signature_candidates(
        &self,
        keys: &KeySet,
        policy: &ClaimsPolicy<'_>,
    ) -> Result<Vec<PublicKey>, TokenError> {
        Ok(candidate_keys(self, keys, policy)?
            .filter(|key| plausible(self.alg, &key.key, &self.signature))
            .map(|key| key.key.clone())
            .collect())
    }

    /// The claims, checked against `policy` at `now`, once a signature check
    /// with one of [`UnverifiedJwt::signature_candidates`] succeeded.
    pub fn verified_claims(
        &self,
        policy: &ClaimsPolicy<'_>,
        now: i64,
    ) -> Result<AccessToken, TokenError> {
        check_claims(&self.claims, policy, now)
    }
}

/// `typ` values that denote an access token or a generic JWT (RFC 9068 §2.1,
/// RFC 7519 §5.1); media types compare case-insensitively and the
/// `application/` prefix may be omitted (RFC 7515 §4.1.9).
fn is_acceptable_type(typ: &str) -> bool {
    let typ = media_subtype(typ);
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("jwt")
}

/// `typ` without an `application/` prefix in any case (RFC 7515 §4.1.9:
/// the prefix may be omitted, and media types are case-insensitive).
fn media_subtype(typ: &str) -> &str {
    const PREFIX: &str = "application/";
    match typ.get(..PREFIX.len()) {
        Some(head) if head.eq_ignore_ascii_case(PREFIX) => &typ[PREFIX.len()..],
        _ => typ,
    }
}

/// Deserializes a JOSE header or claims set, which must be a JSON object
/// (RFC 7515 §4, RFC 7519 §7.2 step 10). serde's derived structs also accept
/// a JSON array, reading its elements as the fields in declaration order, so
/// `["https://issuer", ...]` would pass for claims: the text must open with
/// `{`. Deserializing straight into the struct (not through a map) keeps
/// duplicate members an error. The whole text must be UTF-8 (RFC 8259 §8.1):
/// serde_json skips the strings of members nobody reads without checking
/// them.
fn json_object<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, TokenError> {
    let json = std::str::from_utf8(json).map_err(|_| TokenError::Malformed)?;
    if !json
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(TokenError::Malformed);
    }
    serde_json::from_str(json).map_err(|_| TokenError::Malformed)
}

/// Strict base64url without padding (RFC 7515 §2): `=` padding, `+`, `/`,
/// whitespace and non-canonical trailing bits are all refused.
fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    Base64UrlUnpadded::decode_vec(segment).map_err(|_| TokenError::Malformed)
}

/// What the gate checks claims against.
#[derive(Debug, Clone, Copy)]
pub struct ClaimsPolicy<'a> {
    /// The issuer whose keys verified the token; `iss` must equal it exactly.
    pub issuer: &'a str,
    /// `aud` must contain one of these exactly.
    pub audiences: &'a [String],
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_seconds: u64,
    /// Longest `exp - iat` accepted, when configured.
    pub max_lifetime_seconds: Option<u64>,
}

/// A verified access token: what the gate knows about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`, when present.
    pub subject: Option<String>,
    /// `client_id` (RFC 9068 §2.2), or `azp` from OpenID-style tokens.
    pub client_id: Option<String>,
    /// Granted scopes from `scope` and `scp`, deduplicated, in order.
    pub scopes: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// `nbf`, when present.
    pub not_before: Option<i64>,
    /// `jti`, when present.
    pub token_id: Option<String>,
    /// `cnf.jkt` (RFC 9449 §6.1): the token is bound to the key with this
    /// RFC 7638 thumbprint, and is accepted only with a DPoP proof by it.
    pub confirmation: Option<String>,
}

/// Verifies `token` with `keys` (the key set of the issuer it names) and the
/// native RustCrypto backend, then checks its claims at `now`: the reference
/// the tests and fuzzers hold the edge's WebCrypto checks to.
#[cfg(not(target_arch = "wasm32"))]
pub fn verify(
    token: &UnverifiedJwt,
    keys: &KeySet,
    policy: &ClaimsPolicy<'_>,
    now: i64,
) -> Result<AccessToken, TokenError> {
    let message = token.signing_input.as_bytes();
    let verified = candidate_keys(token, keys, policy)?.any(|key| {
        crate::verify::signature::verify_signature(token.alg, &key.key, message, &token.signature)
    });
    if !verified {
        return Err(TokenError::BadSignature);
    }
    check_claims(&token.claims, policy, now)
}

/// The keys the signature may be checked with: only from the issuer the
/// policy trusts, matching `kid` and `alg`, and at most
/// [`MAX_KEYS_TRIED_WITHOUT_KID`] when the token names no key.
fn candidate_keys<'k>(
    token: &'k UnverifiedJwt,
    keys: &'k KeySet,
    policy: &ClaimsPolicy<'_>,
) -> Result<impl Iterator<Item = &'k VerificationKey> + 'k, TokenError> {
    if token.issuer() != Some(policy.issuer) {
        return Err(TokenError::UntrustedIssuer);
    }
    let limit = if token.kid.is_some() {
        usize::MAX
    } else {
        MAX_KEYS_TRIED_WITHOUT_KID
    };
    let mut candidates = keys
        .candidates(token.kid(), token.alg)
        .take(limit)
        .peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    Ok(candidates)
}

fn check_claims(
    claims: &RawClaims,
    policy: &ClaimsPolicy<'_>,
    now: i64,
) -> Result<AccessToken, TokenError> {
    let leeway = i64::try_from(policy.leeway_seconds).unwrap_or(i64::MAX);
    let expires_at = numeric_date(&claims.exp)?.ok_or(TokenError::MissingExpiry)?;
    let not_before = numeric_date(&claims.nbf)?;
    let issued_at = numeric_date(&claims.iat)?;
    let confirmation = match &claims.cnf {
        None => None,
        Some(cnf) => Some(key_confirmation(cnf).ok_or(TokenError::ProofOfPossessionRequired)?),
    };
    // RFC 7519 §4.1.4: the current time must be before `exp`.
    if now >= expires_at.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if not_before.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
        return Err(TokenError::NotYetValid);
    }
    if issued_at.is_some_and(|iat| now.saturating_add(leeway) < iat) {
        return Err(TokenError::IssuedInFuture);
    }
    if let Some(max) = policy.max_lifetime_seconds {
        // Without `iat` the lifetime is unknown: refused, not assumed short.
        let issued_at = issued_at.ok_or(TokenError::LifetimeTooLong)?;
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        if expires_at.saturating_sub(issued_at) > max {
            return Err(TokenError::LifetimeTooLong);
        }
    }
    let audience_ok = match &claims.aud {
        Some(Words::One(aud)) => policy.audiences.contains(aud),
        Some(Words::Many(auds)) => auds.iter().any(|aud| policy.audiences.contains(aud)),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::AudienceMismatch);
    }
    let mut scopes: Vec<String> = Vec::new();
    let scp: Vec<&str> = match &claims.scp {
        Some(Words::Many(list)) => list.iter().map(String::as_str).collect(),
        Some(Words::One(joined)) => joined.split(' ').collect(),
        None => Vec::new(),
    };
    for scope in claims.scope.iter().flat_map(|s| s.split(' ')).chain(scp) {
        if !scope.is_empty() && !scopes.iter().any(|seen| seen == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Ok(AccessToken {
        issuer: policy.issuer.to_owned(),
        subject: claims.sub.clone(),
        client_id: claims.client_id.clone().or_else(|| claims.azp.clone()),
        scopes,
        expires_at,
        not_before,
        token_id: claims.jti.clone(),
        confirmation,
    })
}

/// The `jkt` of a `cnf` claim (RFC 7800 §3.1, RFC 9449 §6.1): `None` for any
/// other confirmation (an mTLS `x5t#S256`, RFC 8705, or a key by value),
/// which the gate cannot check and so refuses.
pub fn key_confirmation(cnf: &Value) -> Option<String> {
    let cnf = cnf.as_object()?;
    let jkt = cnf.get("jkt")?.as_str()?;
    // A SHA-256 thumbprint is 43 base64url characters; the only member.
    (cnf.len() == 1 && jkt.len() == 43 && Base64UrlUnpadded::decode_vec(jkt).is_ok())
        .then(|| jkt.to_owned())
}

/// A NumericDate (RFC 7519 §2) as whole seconds. Fractions, negative values,
/// strings, `null` and dates past year 9999 are refused.
fn numeric_date(value: &Option<Value>) -> Result<Option<i64>, TokenError> {
    match value {
        None => Ok(None),
        Some(Value::Number(number)) => number
            .as_i64()
            .filter(|seconds| (0..=MAX_NUMERIC_DATE).contains(seconds))
            .map(Some)
            .ok_or(TokenError::InvalidClaims),
        Some(_) => Err(TokenError::InvalidClaims),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
pub(crate) mod tests;
