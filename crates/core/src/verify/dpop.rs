//! DPoP proofs: RFC 9449 §4 (the proof JWT and its checks, §4.2–4.3), §6
//! (the `jkt` confirmation of the access token, with the RFC 7638 thumbprint),
//! §7 (the `DPoP` scheme at a resource server and its `ath` claim), §8–9
//! (server nonces) and §11.1 (replay of a proof's `jti`), as the MCP DPoP
//! profile (SEP-1932, draft) adopts them.
//!
//! Everything here is decided from the request and the time alone: the
//! proof's signature is checked by the machine's driver (with the proof's
//! own key, as for access tokens), and its `jti` is claimed in a replay
//! store ([`crate::verify::replay`]) only after the signature holds, so a
//! forged proof never uses up a `jti`.
//!
//! Nonces are stateless: a nonce is the time it was issued followed by an
//! HMAC-SHA256 tag of it under `DPOP_NONCE_SECRET`, so any isolate can check
//! any nonce without a store. The time is not hidden: the `Date` header of
//! every answer says as much; what matters is that no client can forge a
//! nonce or make an old one look new.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::verify::jwk::{load_key, JwsAlgorithm, PublicKey, SkipReason};
use crate::verify::secret::parse_secrets;

/// Largest `DPoP` header value read: an RSA-4096 key in the header and its
/// signature take about 2.5 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The proof's `typ` (RFC 9449 §4.2).
pub const PROOF_TYPE: &str = "dpop+jwt";
/// Default `DPOP_ALGORITHMS`: the asymmetric algorithms clients use most.
pub const DEFAULT_PROOF_ALGORITHMS: [JwsAlgorithm; 4] = [
    JwsAlgorithm::Es256,
    JwsAlgorithm::EdDsa,
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Ps256,
];
/// Default `DPOP_IAT_WINDOW_SECONDS`: SEP-1932's five minutes either way.
pub const DEFAULT_IAT_WINDOW_SECONDS: u64 = 300;
/// Default `DPOP_NONCE_LIFETIME_SECONDS`.
pub const DEFAULT_NONCE_LIFETIME_SECONDS: u64 = 300;
/// Bytes of the nonce's tag kept (128 bits).
const NONCE_TAG_BYTES: usize = 16;
/// Domain separation of the nonce's tag from every other HMAC the gate makes.
const NONCE_DOMAIN: &[u8] = b"portcullis dpop nonce v1\0";

/// How a route takes tokens (`DPOP`, or a route's `dpop` member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpopPolicy {
    /// Bearer tokens only (RFC 6750); a DPoP-bound token is refused.
    #[default]
    Bearer,
    /// DPoP only (RFC 9449 §7): every request carries a proof.
    Required,
    /// Either: a DPoP-bound token with its proof, or an unbound bearer token.
    Either,
}

impl DpopPolicy {
    /// The policy named `word` (`bearer`, `dpop`, `either`).
    pub fn from_word(word: &str) -> Option<Self> {
        match word {
            "bearer" => Some(Self::Bearer),
            "dpop" => Some(Self::Required),
            "either" => Some(Self::Either),
            _ => None,
        }
    }

    /// Whether the route takes the `DPoP` scheme at all.
    pub fn accepts_dpop(self) -> bool {
        !matches!(self, Self::Bearer)
    }

    /// Whether the route takes the `Bearer` scheme.
    pub fn accepts_bearer(self) -> bool {
        !matches!(self, Self::Required)
    }
}

/// Where a proof's `jti` is remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStore {
    /// Isolate memory only: a replay within the same isolate is caught, one
    /// reaching another isolate (another data centre, or the same one after
    /// an eviction) is not.
    Memory,
    /// Isolate memory first, then the Durable Object namespace bound under
    /// this name: every key lives in exactly one object, whose storage is
    /// strongly consistent, so a `jti` is accepted once worldwide.
    DurableObject(String),
}

/// The DPoP settings shared by every route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopSettings {
    /// Algorithms a proof may use (asymmetric only, by construction of
    /// [`JwsAlgorithm`]).
    pub algorithms: Vec<JwsAlgorithm>,
    /// A proof's `iat` may be this far from now, either way.
    pub iat_window_seconds: i64,
    /// Where `jti`s are remembered.
    pub replay: ReplayStore,
    /// Server nonces, when `DPOP_NONCE_SECRET` is set.
    pub nonces: Option<NonceKey>,
    /// How long an issued nonce is accepted.
    pub nonce_lifetime_seconds: i64,
}

impl Default for DpopSettings {
    fn default() -> Self {
        DpopSettings {
            algorithms: DEFAULT_PROOF_ALGORITHMS.to_vec(),
            iat_window_seconds: DEFAULT_IAT_WINDOW_SECONDS as i64,
            replay: ReplayStore::Memory,
            nonces: None,
            nonce_lifetime_seconds: DEFAULT_NONCE_LIFETIME_SECONDS as i64,
        }
    }
}

impl DpopSettings {
    /// The `algs` of a `DPoP` challenge (RFC 9449 §7.1).
    pub fn algs(&self) -> String {
        let names: Vec<&str> = self.algorithms.iter().map(|alg| alg.name()).collect();
        names.join(" ")
    }
}

/// Why a proof is refused: each is `401 invalid_dpop_proof` on the wire
/// (RFC 9449 §7.1), named in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofError {
    /// The `DPoP` scheme without a `DPoP` header.
    Missing,
    /// More than one `DPoP` header field (or values joined by a comma).
    Repeated,
    /// Longer than [`MAX_PROOF_BYTES`].
    TooLarge,
    /// Not a compact JWS with JSON objects for header and claims.
    Malformed,
    /// `typ` is not `dpop+jwt`.
    WrongType,
    /// `alg` is not in `DPOP_ALGORITHMS`.
    AlgorithmNotAllowed,
    /// `jwk` is absent, not a supported public key, or does not fit `alg`.
    JwkInvalid,
    /// `jwk` carries private key members.
    JwkPrivate,
    /// The signature does not verify with `jwk`.
    BadSignature,
    /// `jti`, `htm`, `htu`, `iat` or `ath` is absent or of the wrong type.
    ClaimMissing,
    /// `htm` is not the request's method.
    MethodMismatch,
    /// `htu` is not the request's URL.
    UrlMismatch,
    /// `iat` is outside the window.
    IssuedOutOfWindow,
    /// `ath` is not the hash of the access token.
    TokenHashMismatch,
    /// The token's `cnf.jkt` is not the thumbprint of `jwk`.
    KeyMismatch,
    /// The `jti` was seen before.
    Replayed,
}

impl ProofError {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "dpop_proof_missing",
            Self::Repeated => "dpop_proof_repeated",
            Self::TooLarge => "dpop_proof_too_large",
            Self::Malformed => "dpop_proof_malformed",
            Self::WrongType => "dpop_wrong_typ",
            Self::AlgorithmNotAllowed => "dpop_alg_not_allowed",
            Self::JwkInvalid => "dpop_jwk_invalid",
            Self::JwkPrivate => "dpop_jwk_private",
            Self::BadSignature => "dpop_bad_signature",
            Self::ClaimMissing => "dpop_claim_missing",
            Self::MethodMismatch => "dpop_htm_mismatch",
            Self::UrlMismatch => "dpop_htu_mismatch",
            Self::IssuedOutOfWindow => "dpop_iat_out_of_window",
            Self::TokenHashMismatch => "dpop_ath_mismatch",
            Self::KeyMismatch => "dpop_jkt_mismatch",
            Self::Replayed => "dpop_replayed",
        }
    }
}

/// Why a proof's nonce is refused: `401 use_dpop_nonce` with a fresh
/// `DPoP-Nonce` (RFC 9449 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// The proof has no `nonce`.
    Missing,
    /// The gate issued it longer ago than the lifetime.
    Stale,
    /// Not a nonce this gate issued.
    Invalid,
}

impl NonceError {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "dpop_nonce_missing",
            Self::Stale => "dpop_nonce_stale",
            Self::Invalid => "dpop_nonce_invalid",
        }
    }
}

/// Why a token's scheme does not fit the route or the token (RFC 9449 §7.1,
/// §7.2): `401 invalid_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeRefusal {
    /// A `Bearer` token on a route that takes DPoP only.
    DpopRequired,
    /// A DPoP-bound token (`cnf.jkt`) sent with `Bearer`.
    BoundTokenAsBearer,
    /// An unbound token sent with `DPoP`: nothing binds it to the proof.
    TokenNotBound,
}

impl SchemeRefusal {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::DpopRequired => "dpop_required",
            Self::BoundTokenAsBearer => "dpop_bound_token_as_bearer",
            Self::TokenNotBound => "dpop_token_not_bound",
        }
    }
}

/// A proof that passed every check that needs no key and no store: what
/// remains is its signature ([`Proof::check`]), the token's binding
/// ([`Proof::thumbprint`]) and its `jti` ([`Proof::replay_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Proof {
    alg: JwsAlgorithm,
    key: PublicKey,
    signing_input: String,
    signature: Vec<u8>,
    thumbprint: String,
    replay_key: String,
    remember_until: i64,
}

impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proof")
            .field("alg", &self.alg)
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// What a proof must match: the request as the client sent it.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The request's URL; its query and fragment are ignored.
    pub url: &'a Url,
    /// The access token the request carries (`ath`).
    pub access_token: &'a str,
    /// Now, unix seconds.
    pub now: i64,
}

impl Proof {
    /// Reads the one `DPoP` header value in `values` and checks it against
    /// the request: RFC 9449 §4.3 steps 1–9 and 11–12 (the signature, step
    /// 7, is the driver's), with the nonce of step 10 when `settings` has
    /// nonces. The order is fixed so the log's reason does not depend on
    /// anything but the proof.
    pub fn parse(
        values: &[&str],
        settings: &DpopSettings,
        expected: &Expected<'_>,
    ) -> Result<Result<Proof, NonceError>, ProofError> {
        let value = match values {
            [] => return Err(ProofError::Missing),
            [one] => one.trim_matches(|c| c == ' ' || c == '\t'),
            _ => return Err(ProofError::Repeated),
        };
        if value.len() > MAX_PROOF_BYTES {
            return Err(ProofError::TooLarge);
        }
        if value.contains(',') {
            // Two field lines joined by the runtime: a JWS has no comma.
            return Err(ProofError::Repeated);
        }
        if value.is_empty() {
            return Err(ProofError::Missing);
        }
        let mut parts = value.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let header = json_object(header_b64)?;
        let claims = json_object(claims_b64)?;
        let signature =
            Base64UrlUnpadded::decode_vec(signature_b64).map_err(|_| ProofError::Malformed)?;
        // RFC 7515 §4.1.11: no extension this gate understands may be critical.
        if header.contains_key("crit") {
            return Err(ProofError::Malformed);
        }
        if header.get("typ").and_then(Value::as_str) != Some(PROOF_TYPE) {
            return Err(ProofError::WrongType);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(proof_algorithm)
            .filter(|alg| settings.algorithms.contains(alg))
            .ok_or(ProofError::AlgorithmNotAllowed)?;
        let jwk = header.get("jwk").ok_or(ProofError::JwkInvalid)?;
        let key = match load_key(jwk) {
            Ok(key) if key.accepts(alg) => key.key,
            Err(SkipReason::CarriesSecret) => return Err(ProofError::JwkPrivate),
            Ok(_) | Err(_) => return Err(ProofError::JwkInvalid),
        };
        if signature.len() != key.signature_length() {
            return Err(ProofError::BadSignature);
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|value| !value.is_empty())
                .ok_or(ProofError::ClaimMissing)
        };
        let jti = text("jti")?;
        let htm = text("htm")?;
        let htu = text("htu")?;
        let ath = text("ath")?;
        let iat = claims
            .get("iat")
            .and_then(Value::as_f64)
            .filter(|iat| iat.is_finite())
            .ok_or(ProofError::ClaimMissing)?;
        if htm != expected.method {
            return Err(ProofError::MethodMismatch);
        }
        if !same_target(htu, expected.url) {
            return Err(ProofError::UrlMismatch);
        }
        // Whole seconds: a fractional `iat` (RFC 7519 NumericDate) is floored.
        let iat = iat.floor() as i64;
        if iat.abs_diff(expected.now) > settings.iat_window_seconds.unsigned_abs() {
            return Err(ProofError::IssuedOutOfWindow);
        }
        if ath != token_hash(expected.access_token) {
            return Err(ProofError::TokenHashMismatch);
        }
        if let Some(nonces) = &settings.nonces {
            let nonce = claims.get("nonce").and_then(Value::as_str);
            if let Err(error) = nonces.check(nonce, expected.now, settings.nonce_lifetime_seconds) {
                return Ok(Err(error));
            }
        }
        let thumbprint = key.thumbprint();
        let signing_input = value[..header_b64.len() + 1 + claims_b64.len()].to_owned();
        Ok(Ok(Proof {
            alg,
            replay_key: replay_key(&thumbprint, jti),
            // The proof is accepted while `iat` is within the window of now,
            // so its `jti` needs remembering until the window closes.
            remember_until: iat.saturating_add(settings.iat_window_seconds),
            key,
            signing_input,
            signature,
            thumbprint,
        }))
    }

    /// The algorithm: admitted by the allow-list, and one the key fits.
    pub fn algorithm(&self) -> JwsAlgorithm {
        self.alg
    }

    /// The key the proof is signed with (its `jwk`).
    pub fn key(&self) -> &PublicKey {
        &self.key
    }

    /// The JWS signing input (RFC 7515 §5.2).
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// The signature, of the key's signature length.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The RFC 7638 SHA-256 thumbprint of the proof's key: what the token's
    /// `cnf.jkt` must be (RFC 9449 §6.1).
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The proof's key in a replay store: SHA-256 of the key's thumbprint
    /// and the `jti`, hex. Two clients choosing the same `jti` do not collide,
    /// and nothing in it names the client.
    pub fn replay_key(&self) -> &str {
        &self.replay_key
    }

    /// Until when (unix seconds) the `jti` must be remembered.
    pub fn remember_until(&self) -> i64 {
        self.remember_until
    }
}

/// A proof's `alg`: a JWS algorithm name, or `Ed25519`, RFC 9864's fully
/// specified name for EdDSA over Ed25519, which clients and authorization
/// servers (oidc-provider's default) use for proofs. It verifies exactly as
/// `EdDSA` with an Ed25519 key does, and is allowed when `EdDSA` is.
fn proof_algorithm(name: &str) -> Option<JwsAlgorithm> {
    match name {
        "Ed25519" => Some(JwsAlgorithm::EdDsa),
        _ => JwsAlgorithm::from_name(name),
    }
}

/// `ath`: base64url of SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub fn token_hash(access_token: &str) -> String {
    Base64UrlUnpadded::encode_string(&Sha256::digest(access_token.as_bytes()))
}

fn replay_key(thumbprint: &str, jti: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(thumbprint.as_bytes());
    hash.update([0]);
    hash.update(jti.as_bytes());
    let digest = hash.finalize();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        hex.push(char::from(b"0123456789abcdef"[usize::from(byte & 15)]));
    }
    hex
}

fn json_object(segment: &str) -> Result<Map<String, Value>, ProofError> {
    let bytes = Base64UrlUnpadded::decode_vec(segment).map_err(|_| ProofError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(ProofError::Malformed),
    }
}

/// RFC 9449 §4.3 step 9: `htu` names the request's URL, compared without
/// query and fragment after the syntax- and scheme-based normalisation of
/// RFC 3986 §6.2.2–6.2.3 (case of scheme and host, default port, dot
/// segments, percent-encoding case), which the WHATWG parser applies.
fn same_target(htu: &str, request: &Url) -> bool {
    let Some(claimed) = crate::io::parse_url(htu) else {
        return false;
    };
    matches!(claimed.scheme(), "https" | "http")
        && claimed.scheme() == request.scheme()
        && claimed.host_str() == request.host_str()
        && claimed.port_or_known_default() == request.port_or_known_default()
        && claimed.path() == request.path()
        && claimed.username().is_empty()
        && claimed.password().is_none()
}

/// The key of the stateless nonces: secrets separated by white space, the
/// issuing one first, so a secret can be rotated without refusing the
/// nonces clients hold.
#[derive(Clone, PartialEq, Eq)]
pub struct NonceKey {
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    /// The key from the binding's text. `Err` (never echoing a secret) when
    /// one is shorter than 32 characters or none is given.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        parse_secrets(text).map(|secrets| NonceKey { secrets })
    }

    /// A nonce issued at `now`: base64url of the time (8 bytes, big-endian)
    /// and the first 16 bytes of its tag.
    pub fn issue(&self, now: i64) -> String {
        let time = now.to_be_bytes();
        let mut bytes = time.to_vec();
        if let Some(mut mac) = self.secrets.first().and_then(|secret| mac(secret)) {
            mac.update(&time);
            bytes.extend_from_slice(&mac.finalize().into_bytes()[..NONCE_TAG_BYTES]);
        }
        Base64UrlUnpadded::encode_string(&bytes)
    }

    /// Whether `nonce` was issued by this gate within `lifetime` seconds of
    /// `now` (a few seconds ahead of now is taken as clock skew between
    /// isolates).
    pub fn check(&self, nonce: Option<&str>, now: i64, lifetime: i64) -> Result<(), NonceError> {
        let nonce = nonce.ok_or(NonceError::Missing)?;
        let bytes = Base64UrlUnpadded::decode_vec(nonce).map_err(|_| NonceError::Invalid)?;
        if bytes.len() != 8 + NONCE_TAG_BYTES {
            return Err(NonceError::Invalid);
        }
        let (time, given) = bytes.split_at(8);
        let authentic = self
            .secrets
            .iter()
            .filter_map(|secret| mac(secret))
            .any(|mut mac| {
                mac.update(time);
                mac.verify_truncated_left(given).is_ok()
            });
        if !authentic {
            return Err(NonceError::Invalid);
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(time);
        let issued = i64::from_be_bytes(issued);
        if issued > now.saturating_add(5) {
            return Err(NonceError::Invalid);
        }
        if now.saturating_sub(issued) > lifetime {
            return Err(NonceError::Stale);
        }
        Ok(())
    }
}

/// The tag's MAC state; `None` never happens (HMAC takes a key of any
/// length): it would make every nonce fail to check, never pass.
fn mac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
    mac.update(NONCE_DOMAIN);
    Some(mac)
}

#[cfg(test)]
#[path = "dpop_tests.rs"]
mod tests;
