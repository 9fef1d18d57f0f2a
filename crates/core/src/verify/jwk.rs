//! JSON Web Key Sets for signature verification: RFC 7517 §4–5, with the key
//! types and algorithms of RFC 7518 §3 / §6 and RFC 8037 (OKP, Ed25519).
//!
//! Loading is deliberately forgiving of the set and strict about each key: an
//! authorization server may publish encryption keys, keys of types we do not
//! support, or keys for other algorithms next to the one we need, and none of
//! that should take the gate down. A key is kept only when it is a public
//! signing key of a supported type and size; everything else is skipped and
//! counted so the log can say why a kid was not found.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Deserialize;
use serde_json::Value;

/// Most keys a set may hold; a larger set is refused as a whole, which bounds
/// the work a hostile or broken JWKS endpoint can cause.
pub const MAX_KEYS_PER_SET: usize = 100;
/// RSA moduli below this are refused (RFC 7518 §3.3, RFC 8725 §3.5).
pub const MIN_RSA_BITS: usize = 2048;
/// RSA moduli above this are refused: verification cost grows with the size.
pub const MAX_RSA_BITS: usize = 4096;
/// Largest RSA public exponent accepted, 2^33 - 1: the bound of both
/// verification backends (the `rsa` crate natively, BoringSSL in workerd), so
/// that a key loads the same way for each.
const MAX_RSA_EXPONENT_BITS: usize = 33;

/// The JWS algorithms the gate can verify (RFC 7518 §3.1, RFC 8037 §3.1).
/// `none` and the HMAC family are absent by construction: a gate holding only
/// public keys must never accept a symmetric signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JwsAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// EdDSA; this gate supports the Ed25519 curve only.
    EdDsa,
}

impl JwsAlgorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [JwsAlgorithm; 8] = [
        Self::Rs256,
        Self::Rs384,
        Self::Rs512,
        Self::Ps256,
        Self::Ps384,
        Self::Ps512,
        Self::Es256,
        Self::EdDsa,
    ];

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Parses an `alg` value; exact and case-sensitive (RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Whether a key of this kind can verify signatures of this algorithm.
    pub fn fits(self, key: &PublicKey) -> bool {
        matches!(
            (self, key),
            (
                Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512,
                PublicKey::Rsa { .. }
            ) | (Self::Es256, PublicKey::P256 { .. })
                | (Self::EdDsa, PublicKey::Ed25519(_))
        )
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A public verification key, as checked key material. The key set keeps
/// bytes, not backend objects: each signature backend builds its own key from
/// them (the `rsa`, `p256` and `ed25519-dalek` crates natively, WebCrypto
/// `CryptoKey`s on the edge), so one loader serves both.
///
/// What can be checked on the bytes is checked at load (sizes, RSA exponent,
/// small-order Ed25519 points). Whether a P-256 point lies on the curve and an
/// Ed25519 point decompresses is checked by the backend when it builds the
/// key; a key that fails there never verifies anything.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// RSA, 2048 to 4096 bits, odd modulus, odd exponent from 3 to 2^33 - 1;
    /// both big-endian without leading zeros.
    Rsa {
        /// `n`.
        modulus: Vec<u8>,
        /// `e`.
        exponent: Vec<u8>,
    },
    /// P-256 affine coordinates, big-endian.
    P256 {
        /// `x`.
        x: [u8; 32],
        /// `y`.
        y: [u8; 32],
    },
    /// An Ed25519 point encoding (RFC 8032 §5.1.2) that is not of small order.
    Ed25519([u8; 32]),
}

impl PublicKey {
    /// The length every signature by this key has (RFC 8017 §8.2.2 step 1,
    /// RFC 7518 §3.4, RFC 8032 §5.1.7): anything else is refused before a
    /// backend sees it.
    pub fn signature_length(&self) -> usize {
        match self {
            Self::Rsa { modulus, .. } => modulus.len(),
            Self::P256 { .. } | Self::Ed25519(_) => 64,
        }
    }

    /// The key's public members as a JWK (RFC 7518 §6, RFC 8037 §2), in the
    /// lexicographic order and without white space that RFC 7638 §3 hashes:
    /// the text of [`PublicKey::thumbprint`], and the start of a published key.
    pub fn required_members(&self) -> String {
        let b64 = |bytes: &[u8]| Base64UrlUnpadded::encode_string(bytes);
        match self {
            Self::Rsa { modulus, exponent } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64(exponent),
                b64(modulus)
            ),
            Self::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64(x),
                b64(y)
            ),
            Self::Ed25519(x) => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        }
    }

    /// The RFC 7638 JWK thumbprint with SHA-256, base64url.
    pub fn thumbprint(&self) -> String {
        use sha2::{Digest, Sha256};
        Base64UrlUnpadded::encode_string(&Sha256::digest(self.required_members()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa { modulus, .. } => write!(f, "Rsa({} bits)", bit_length(modulus)),
            Self::P256 { .. } => f.write_str("P256"),
            Self::Ed25519(_) => f.write_str("Ed25519"),
        }
    }
}

/// One usable key from a JWKS.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    /// `kid`, when the set gives one.
    pub kid: Option<String>,
    /// `alg`, when the set pins the key to one algorithm.
    pub alg: Option<JwsAlgorithm>,
    /// The key material.
    pub key: PublicKey,
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `alg`: the key type must
    /// fit the algorithm, and a key pinned to an algorithm serves only that one.
    pub fn accepts(&self, alg: JwsAlgorithm) -> bool {
        alg.fits(&self.key) && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// Why a key was left out of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Not a JSON object, or a member of the wrong type.
    Malformed,
    /// `use` other than `sig`, or `key_ops` without `verify`.
    NotForVerification,
    /// Private or symmetric key material present.
    CarriesSecret,
    /// `kty` or `crv` this gate does not verify with.
    UnsupportedType,
    /// `alg` unknown, unsupported, or contradicting the key type.
    AlgorithmMismatch,
    /// Key material invalid or too weak: RSA size or exponent, off-curve
    /// point, small-order Ed25519 point.
    WeakOrInvalid,
}

/// A loaded key set: the usable keys in document order.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
    skipped: Vec<SkipReason>,
}

/// Why a JWKS document as a whole is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksError {
    /// Not JSON, or not an object with a `keys` array.
    NotAKeySet,
    /// More than [`MAX_KEYS_PER_SET`] entries.
    TooManyKeys,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAKeySet => "document is not a JWK Set",
            Self::TooManyKeys => "JWK Set holds too many keys",
        })
    }
}

/// Members whose presence marks private or symmetric key material
/// (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
const SECRET_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl KeySet {
    /// Parses a JWK Set document (RFC 7517 §5), keeping usable keys only.
    pub fn parse(document: &[u8]) -> Result<Self, JwksError> {
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document =
            serde_json::from_slice(document).map_err(|_| JwksError::NotAKeySet)?;
        if document.keys.len() > MAX_KEYS_PER_SET {
            return Err(JwksError::TooManyKeys);
        }
        let mut set = KeySet::default();
        for entry in &document.keys {
            match load_key(entry) {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(reason),
            }
        }
        Ok(set)
    }

    /// Keys that may verify a token with this `kid` and `alg`, in document
    /// order. A token without `kid` is matched against every key that fits.
    pub fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
        alg: JwsAlgorithm,
    ) -> impl Iterator<Item = &'a VerificationKey> + 'a {
        self.keys.iter().filter(move |key| {
            kid.is_none_or(|kid| key.kid.as_deref() == Some(kid)) && key.accepts(alg)
        })
    }

    /// Whether any key carries this `kid`, whatever its type.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }

    /// The usable keys.
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// Why each skipped entry was skipped.
    pub fn skipped(&self) -> &[SkipReason] {
        &self.skipped
    }
}

/// Loads one JWK (RFC 7517 §4) as [`KeySet::parse`] loads each entry of a
/// set: a usable public verification key, or why it was skipped.
pub fn load_key(entry: &Value) -> Result<VerificationKey, SkipReason> {
    load_public_part(entry, false)
}

/// Loads the public part of one JWK: as [`load_key`] does, except that, when
/// `of_private` is set, a private EC or OKP key is read for its public
/// members: its `d` is not refused, nor `key_ops` that name only `sign`.
pub fn load_public_part(entry: &Value, of_private: bool) -> Result<VerificationKey, SkipReason> {
    let object = entry.as_object().ok_or(SkipReason::Malformed)?;
    let optional_str = |name: &str| match object.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(SkipReason::Malformed),
    };
    let kid = optional_str("kid")?.map(str::to_owned);
    if optional_str("use")?.is_some_and(|usage| usage != "sig") {
        return Err(SkipReason::NotForVerification);
    }
    if let Some(ops) = object.get("key_ops").filter(|_| !of_private) {
        let ops = ops.as_array().ok_or(SkipReason::Malformed)?;
        if !ops.iter().any(|op| op == "verify") {
            return Err(SkipReason::NotForVerification);
        }
    }
    if SECRET_MEMBERS
        .iter()
        .filter(|member| !of_private || **member != "d")
        .any(|member| object.contains_key(*member))
    {
        return Err(SkipReason::CarriesSecret);
    }
    let alg = match optional_str("alg")? {
        None => None,
        Some(name) => Some(JwsAlgorithm::from_name(name).ok_or(SkipReason::AlgorithmMismatch)?),
    };
    let material = |name: &str| -> Result<Vec<u8>, SkipReason> {
        let text = optional_str(name)?.ok_or(SkipReason::Malformed)?;
        Base64UrlUnpadded::decode_vec(text).map_err(|_| SkipReason::Malformed)
    };
    let key = match (optional_str("kty")?, optional_str("crv")?) {
        (Some("RSA"), _) => rsa_key(material("n")?, material("e")?)?,
        (Some("EC"), Some("P-256")) => PublicKey::P256 {
            x: fixed(material("x")?)?,
            y: fixed(material("y")?)?,
        },
        (Some("OKP"), Some("Ed25519")) => {
            let point = fixed(material("x")?)?;
            if has_small_order(&point) {
                return Err(SkipReason::WeakOrInvalid);
            }
            PublicKey::Ed25519(point)
        }
        _ => return Err(SkipReason::UnsupportedType),
    };
    if alg.is_some_and(|alg| !alg.fits(&key)) {
        return Err(SkipReason::AlgorithmMismatch);
    }
    Ok(VerificationKey { kid, alg, key })
}

/// Checks an RSA public key on its bytes (RFC 8017 §3.1, RFC 7518 §3.3): a
/// modulus of 2048 to 4096 bits that is odd, and an odd exponent above 1 of
/// at most 33 bits. Leading zero bytes, which RFC 7518 §2 forbids but some
/// servers emit, are ignored.
fn rsa_key(modulus: Vec<u8>, exponent: Vec<u8>) -> Result<PublicKey, SkipReason> {
    let modulus = without_leading_zeros(modulus);
    let exponent = without_leading_zeros(exponent);
    let modulus_ok = (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bit_length(&modulus))
        && modulus.last().is_some_and(|byte| byte & 1 == 1);
    let exponent_ok = (2..=MAX_RSA_EXPONENT_BITS).contains(&bit_length(&exponent))
        && exponent.last().is_some_and(|byte| byte & 1 == 1);
    if modulus_ok && exponent_ok {
        Ok(PublicKey::Rsa { modulus, exponent })
    } else {
        Err(SkipReason::WeakOrInvalid)
    }
}

fn without_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&byte| byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Bits in a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    bytes.first().map_or(0, |first| {
        (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize)
    })
}

/// A coordinate or point encoding of exactly 32 bytes (RFC 7518 §6.2.1.2,
/// RFC 8037 §2).
fn fixed(bytes: Vec<u8>) -> Result<[u8; 32], SkipReason> {
    bytes.try_into().map_err(|_| SkipReason::WeakOrInvalid)
}

/// Whether an Ed25519 point encoding denotes a point of small order (the
/// eight-torsion subgroup), canonical or not: with such a key one signature
/// verifies for many messages. The sign bit is ignored, so these seven
/// encodings cover all of them (the list libsodium checks public keys
/// against): 0, 1, the two points of order 8, p - 1, p and p + 1.
fn has_small_order(point: &[u8; 32]) -> bool {
    const ORDER_8_A: [u8; 32] = [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ];
    const ORDER_8_B: [u8; 32] = [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ];
    /// p + k for the field prime p = 2^255 - 19, little-endian.
    const fn p_plus(k: i8) -> [u8; 32] {
        let mut bytes = [0xff; 32];
        bytes[0] = (0xed_i16 + k as i16) as u8;
        bytes[31] = 0x7f;
        bytes
    }
    /// Small integers, little-endian.
    const fn small(value: u8) -> [u8; 32] {
        let mut bytes = [0; 32];
        bytes[0] = value;
        bytes
    }
    const SMALL_ORDER: [[u8; 32]; 7] = [
        small(0),
        small(1),
        ORDER_8_A,
        ORDER_8_B,
        p_plus(-1),
        p_plus(0),
        p_plus(1),
    ];
    let mut unsigned = *point;
    unsigned[31] &= 0x7f;
    SMALL_ORDER.contains(&unsigned)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64ct::{Base64UrlUnpadded, Encoding};

    /// RFC 7515 Appendix A.2 RSA key (public part).
    pub(crate) const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
    pub(crate) const RFC7515_A2_E: &str = "AQAB";

    fn set(json: &str) -> KeySet {
        KeySet::parse(json.as_bytes()).expect("set parses")
    }

    fn rsa_jwk(extra: &str) -> String {
        format!(r#"{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"{RFC7515_A2_E}"{extra}}}"#)
    }

    #[test]
    fn loads_rfc7515_rsa_key() {
        let keys = set(&format!(
            r#"{{"keys":[{}]}}"#,
            rsa_jwk(r#","kid":"a","use":"sig""#)
        ));
        assert_eq!(keys.keys().len(), 1);
        assert_eq!(keys.candidates(Some("a"), JwsAlgorithm::Rs256).count(), 1);
        assert_eq!(keys.candidates(Some("a"), JwsAlgorithm::Ps512).count(), 1);
        assert_eq!(keys.candidates(Some("a"), JwsAlgorithm::Es256).count(), 0);
        assert_eq!(keys.candidates(Some("b"), JwsAlgorithm::Rs256).count(), 0);
        assert_eq!(keys.candidates(None, JwsAlgorithm::Rs256).count(), 1);
    }

    #[test]
    fn pinned_alg_restricts_use() {
        let keys = set(&format!(
            r#"{{"keys":[{}]}}"#,
            rsa_jwk(r#","kid":"a","alg":"PS256""#)
        ));
        assert_eq!(keys.candidates(Some("a"), JwsAlgorithm::Ps256).count(), 1);
        assert_eq!(keys.candidates(Some("a"), JwsAlgorithm::Rs256).count(), 0);
    }

    #[test]
    fn skips_unusable_keys_without_failing_the_set() {
        let doc = format!(
            r#"{{"keys":[
                {enc},
                {ops},
                {private},
                {{"kty":"oct","k":"c2VjcmV0"}},
                {{"kty":"EC","crv":"P-384","x":"AA","y":"AA"}},
                {{"kty":"OKP","crv":"X25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}},
                {mismatch},
                {unknown_alg},
                "not an object",
                {{"kty":"RSA","n":"AQAB","e":"AQAB"}},
                {good}
            ]}}"#,
            enc = rsa_jwk(r#","use":"enc""#),
            ops = rsa_jwk(r#","key_ops":["encrypt"]"#),
            private = rsa_jwk(r#","d":"AQAB""#),
            mismatch = rsa_jwk(r#","alg":"ES256""#),
            unknown_alg = rsa_jwk(r#","alg":"HS256""#),
            good = rsa_jwk(r#","kid":"good""#),
        );
        let keys = set(&doc);
        assert_eq!(keys.keys().len(), 1);
        assert_eq!(keys.keys()[0].kid.as_deref(), Some("good"));
        assert_eq!(
            keys.skipped(),
            &[
                SkipReason::NotForVerification,
                SkipReason::NotForVerification,
                SkipReason::CarriesSecret,
                SkipReason::CarriesSecret,
                SkipReason::UnsupportedType,
                SkipReason::UnsupportedType,
                SkipReason::AlgorithmMismatch,
                SkipReason::AlgorithmMismatch,
                SkipReason::Malformed,
                SkipReason::WeakOrInvalid,
            ]
        );
    }

    #[test]
    fn refuses_even_exponent() {
        let keys = set(&format!(
            r#"{{"keys":[{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"AQAA"}}]}}"#
        ));
        assert_eq!(keys.skipped(), &[SkipReason::WeakOrInvalid]);
    }

    /// An off-curve point passes the byte checks; the backend refuses to
    /// build it, so it verifies nothing (natively here, WebCrypto's import in
    /// tests/webcrypto.test.mjs). Refusing it at load would take curve
    /// arithmetic the edge build does not carry.
    #[test]
    fn off_curve_p256_point_never_verifies() {
        // RFC 7515 A.3 key with the first character of y changed, and the
        // A.3 signature, which verifies with the real key.
        let doc = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let keys = set(doc);
        let input = format!(
            "eyJhbGciOiJFUzI1NiJ9.{}",
            crate::verify::jwt::tests::rfc_vectors::RFC7515_PAYLOAD_B64
        );
        let signature = Base64UrlUnpadded::decode_vec("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q").unwrap();
        assert!(!crate::verify::signature::verify_signature(
            JwsAlgorithm::Es256,
            &keys.keys()[0].key,
            input.as_bytes(),
            &signature
        ));
    }

    #[test]
    fn refuses_small_order_ed25519_point() {
        // The identity point (0, 1) encodes as 0x01 followed by zeros.
        let doc = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;
        assert_eq!(set(doc).skipped(), &[SkipReason::WeakOrInvalid]);
    }

    #[test]
    fn refuses_documents_that_are_not_key_sets() {
        for doc in ["", "[]", "{}", r#"{"keys":{}}"#, "null"] {
            assert_eq!(
                KeySet::parse(doc.as_bytes()).unwrap_err(),
                JwksError::NotAKeySet,
                "{doc}"
            );
        }
        let many = format!(
            r#"{{"keys":[{}]}}"#,
            vec!["{}"; MAX_KEYS_PER_SET + 1].join(",")
        );
        assert_eq!(
            KeySet::parse(many.as_bytes()).unwrap_err(),
            JwksError::TooManyKeys
        );
    }

    /// Every key class the hostile-input catalog names is dropped at load,
    /// for the reason the log will give; the good key next to them stays.
    #[test]
    fn hostile_keys_are_dropped_at_load() {
        let n = Base64UrlUnpadded::decode_vec(RFC7515_A2_N).unwrap();
        let mut short = n[..128].to_vec();
        short[127] |= 1;
        let mut long = vec![1u8];
        long.extend_from_slice(&n);
        long.extend_from_slice(&n);
        let rsa = |n: &[u8], e: &str| {
            format!(
                r#"{{"kty":"RSA","n":"{}","e":"{e}"}}"#,
                Base64UrlUnpadded::encode_string(n)
            )
        };
        let p256 = r#""kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0""#;
        let ed = r#""kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo""#;
        let cases: Vec<(&str, String, SkipReason)> = vec![
            (
                "RSA 1024 bits",
                rsa(&short, "AQAB"),
                SkipReason::WeakOrInvalid,
            ),
            (
                "RSA 4104 bits",
                rsa(&long, "AQAB"),
                SkipReason::WeakOrInvalid,
            ),
            (
                "RSA even exponent",
                rsa(&n, "AQAA"),
                SkipReason::WeakOrInvalid,
            ),
            ("RSA exponent 1", rsa(&n, "AQ"), SkipReason::WeakOrInvalid),
            ("RSA exponent 0", rsa(&n, "AA"), SkipReason::WeakOrInvalid),
            (
                "RSA with private exponent",
                rsa(&n, "AQAB").replace('}', r#","d":"AQAB"}"#),
                SkipReason::CarriesSecret,
            ),
            (
                "P-256 pinned to EdDSA",
                format!(r#"{{{p256},"alg":"EdDSA"}}"#),
                SkipReason::AlgorithmMismatch,
            ),
            (
                "P-256 pinned to ES384",
                format!(r#"{{{p256},"alg":"ES384"}}"#),
                SkipReason::AlgorithmMismatch,
            ),
            (
                "P-256 with d",
                format!(r#"{{{p256},"d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}}"#),
                SkipReason::CarriesSecret,
            ),
            (
                "P-384 claiming ES256",
                r#"{"kty":"EC","crv":"P-384","alg":"ES256","x":"AA","y":"AA"}"#.to_owned(),
                SkipReason::UnsupportedType,
            ),
            (
                "Ed25519 pinned to ES256",
                format!(r#"{{{ed},"alg":"ES256"}}"#),
                SkipReason::AlgorithmMismatch,
            ),
            (
                "Ed25519 with d",
                format!(r#"{{{ed},"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}}"#),
                SkipReason::CarriesSecret,
            ),
            (
                "Ed448",
                r#"{"kty":"OKP","crv":"Ed448","x":"AA"}"#.to_owned(),
                SkipReason::UnsupportedType,
            ),
            (
                "oct (HMAC secret)",
                r#"{"kty":"oct","alg":"HS256","k":"c2VjcmV0"}"#.to_owned(),
                SkipReason::CarriesSecret,
            ),
            (
                "oct without k",
                r#"{"kty":"oct","alg":"HS256"}"#.to_owned(),
                SkipReason::AlgorithmMismatch,
            ),
        ];
        for (name, jwk, reason) in &cases {
            let doc = format!(r#"{{"keys":[{jwk}]}}"#);
            let keys = set(&doc);
            assert!(keys.keys().is_empty(), "{name} was loaded");
            assert_eq!(keys.skipped(), [*reason], "{name}");
        }
        // Every small-order Ed25519 point (the identity is in
        // `refuses_small_order_ed25519_point`).
        for x in [
            "7P_______________________________________38",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIA",
            "JuiVj8KyJ7BFw_SJ8u-Y8NXfrAXTxjM5sTgCiG1T_AU",
            "xxdqcD1N2E-6PAt2DRBnDyogU_osOczGTsf9d5KsA3o",
        ] {
            let doc = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#);
            assert_eq!(set(&doc).skipped(), &[SkipReason::WeakOrInvalid], "{x}");
        }
    }
}
