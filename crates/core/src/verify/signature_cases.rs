//! Signature cases for the edge's WebCrypto backend, with the native
//! backend's verdicts (issue 8: "both backends must agree"). The black-box
//! test tests/webcrypto.test.mjs runs [`export_signature_cases`], sends every
//! case through the worker's own key loader and WebCrypto (`verify-probe`
//! build) and requires the same verdict for each:
//!
//! - every Project Wycheproof vector of the gate's algorithms, with the
//!   verdict the gate owes (see `wycheproof_tests`);
//! - a differential set: random signing inputs signed with random keys of
//!   every algorithm, then mutated (a flipped bit in the signature or the
//!   input, another algorithm of the same key, another key, zero and
//!   all-ones signatures, a high-S ECDSA twin, an Ed25519 S + L twin);
//! - keys the byte checks pass but the backends must refuse to build: an
//!   off-curve P-256 point, an Ed25519 encoding that is not a point.
//!
//! The random set is reproducible: the seed is printed and taken from
//! `PORTCULLIS_SEED` when set.

use base64ct::{Base64UrlUnpadded, Encoding};
use jwt_compact::alg::{Ed25519, Es256, RsaPrivateKey};
use jwt_compact::{Algorithm, AlgorithmSignature};
use rand_core::{CryptoRng, RngCore};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

use crate::verify::jwk::{load_key, JwsAlgorithm};
use crate::verify::signature::{rsa_scheme, verify_signature};

/// SplitMix64: a seeded generator for reproducible cases. Test data only;
/// `CryptoRng` is claimed so the `rsa` crate takes it for key generation.
struct Seeded(u64);

impl RngCore for Seeded {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Seeded {}

impl Seeded {
    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

/// A case with the native verdict for it, loading the key as the gate does.
fn case(family: &str, jwk: &Value, alg: JwsAlgorithm, message: &[u8], signature: &[u8]) -> Value {
    let native = match load_key(jwk) {
        Err(_) => "key_refused",
        Ok(key) if verify_signature(alg, &key.key, message, signature) => "valid",
        Ok(_) => "invalid",
    };
    json!({
        "family": family, "jwk": jwk, "alg": alg.name(),
        "message": b64(message), "signature": b64(signature), "native": native,
    })
}

/// A JWS signing input of random length: two base64url segments.
fn signing_input(rng: &mut Seeded) -> Vec<u8> {
    let mut header = vec![0u8; 8 + rng.below(40)];
    let mut payload = vec![0u8; rng.below(400)];
    rng.fill_bytes(&mut header);
    rng.fill_bytes(&mut payload);
    format!("{}.{}", b64(&header), b64(&payload)).into_bytes()
}

fn flip_bit(bytes: &[u8], rng: &mut Seeded) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    let at = rng.below(flipped.len() * 8);
    flipped[at / 8] ^= 1 << (at % 8);
    flipped
}

/// The order n of P-256, big-endian (SEC 2 §2.4.2).
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];
/// The order L of the Ed25519 base point, little-endian (RFC 8032 §5.1).
const ED25519_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
];

/// (r, n - s): the other valid-looking ECDSA signature of the same message.
fn high_s_twin(signature: &[u8]) -> Vec<u8> {
    let mut twin = signature.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let difference = i16::from(P256_ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(difference < 0);
        twin[32 + i] = difference.rem_euclid(256) as u8;
    }
    twin
}

/// (R, S + L): a non-canonical Ed25519 signature (RFC 8032 §5.1.7 refuses it).
fn s_plus_l_twin(signature: &[u8]) -> Vec<u8> {
    let mut twin = signature.to_vec();
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(signature[32 + i]) + u16::from(ED25519_ORDER[i]) + carry;
        twin[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    twin
}

fn rsa_jwk(key: &RsaPrivateKey) -> Value {
    let public = key.to_public_key();
    json!({"kty": "RSA", "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
}

const RSA_ALGS: [JwsAlgorithm; 6] = [
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Rs384,
    JwsAlgorithm::Rs512,
    JwsAlgorithm::Ps256,
    JwsAlgorithm::Ps384,
    JwsAlgorithm::Ps512,
];

fn rsa_sign(alg: JwsAlgorithm, key: &RsaPrivateKey, message: &[u8]) -> Vec<u8> {
    let rsa = rsa_scheme(alg).expect("an RSA algorithm");
    rsa.sign(key, message).as_bytes().into_owned()
}

/// Cases for one signature over `message`: as made, with a bit of the
/// signature flipped, and over an input with a bit flipped.
fn signed_and_mutated(
    cases: &mut Vec<Value>,
    rng: &mut Seeded,
    family: &str,
    jwk: &Value,
    alg: JwsAlgorithm,
    message: &[u8],
    signature: &[u8],
) {
    cases.push(case(family, jwk, alg, message, signature));
    let flipped = flip_bit(signature, rng);
    cases.push(case(family, jwk, alg, message, &flipped));
    let altered = flip_bit(message, rng);
    cases.push(case(family, jwk, alg, &altered, signature));
}

/// All-zero and all-ones signatures of the key's signature length.
fn constant_signatures(
    cases: &mut Vec<Value>,
    family: &str,
    jwk: &Value,
    alg: JwsAlgorithm,
    length: usize,
) {
    for byte in [0, 0xff] {
        cases.push(case(family, jwk, alg, b"a.b", &vec![byte; length]));
    }
}

/// Cases for an ECDSA or EdDSA key: each signature also with its `twin`,
/// the other encoding of the same signature that one or both backends might
/// treat differently.
fn curve_cases(
    cases: &mut Vec<Value>,
    rng: &mut Seeded,
    (jwk, alg): (&Value, JwsAlgorithm),
    messages: usize,
    sign: impl Fn(&[u8]) -> Vec<u8>,
    twin: fn(&[u8]) -> Vec<u8>,
) {
    let family = format!("differential {alg}");
    for _ in 0..messages {
        let message = signing_input(rng);
        let signature = sign(&message);
        signed_and_mutated(cases, rng, &family, jwk, alg, &message, &signature);
        cases.push(case(&family, jwk, alg, &message, &twin(&signature)));
    }
    constant_signatures(cases, &family, jwk, alg, 64);
}

/// Random keys, signatures and mutations; see the module header.
fn differential_cases(seed: u64, messages_per_key: usize) -> Vec<Value> {
    let mut rng = Seeded(seed);
    let mut cases = Vec::new();

    let rsa_keys: Vec<RsaPrivateKey> = [2048, 3072]
        .into_iter()
        .map(|bits| RsaPrivateKey::new(&mut rng, bits).expect("RSA key generation"))
        .collect();
    for (index, key) in rsa_keys.iter().enumerate() {
        let jwk = rsa_jwk(key);
        let other_jwk = rsa_jwk(&rsa_keys[1 - index]);
        for alg in RSA_ALGS {
            let family = format!("differential {alg}");
            for _ in 0..messages_per_key {
                let message = signing_input(&mut rng);
                let signature = rsa_sign(alg, key, &message);
                signed_and_mutated(
                    &mut cases, &mut rng, &family, &jwk, alg, &message, &signature,
                );
                let other_alg = RSA_ALGS[rng.below(RSA_ALGS.len())];
                cases.push(case(&family, &jwk, other_alg, &message, &signature));
                cases.push(case(&family, &other_jwk, alg, &message, &signature));
            }
            constant_signatures(&mut cases, &family, &jwk, alg, signature_length(key));
        }
    }

    for _ in 0..2 {
        let key = loop {
            let mut scalar = [0u8; 32];
            rng.fill_bytes(&mut scalar);
            if let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&scalar.into()) {
                break key;
            }
        };
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())});
        let sign = |message: &[u8]| Es256.sign(&key, message).as_bytes().into_owned();
        curve_cases(
            &mut cases,
            &mut rng,
            (&jwk, JwsAlgorithm::Es256),
            messages_per_key * 3,
            sign,
            high_s_twin,
        );
    }

    for _ in 0..2 {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let key = ed25519_dalek::SigningKey::from_bytes(&secret);
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes())});
        let sign = |message: &[u8]| Ed25519.sign(&key, message).as_bytes().into_owned();
        curve_cases(
            &mut cases,
            &mut rng,
            (&jwk, JwsAlgorithm::EdDsa),
            messages_per_key * 3,
            sign,
            s_plus_l_twin,
        );
    }
    cases
}

fn signature_length(key: &RsaPrivateKey) -> usize {
    key.to_public_key().size()
}

/// Keys that pass the byte checks at load but that no backend may build.
fn unbuildable_key_cases() -> Vec<Value> {
    // RFC 7515 A.3 with y changed: off the curve. The A.3 signature verifies
    // with the real key.
    let off_curve = json!({"kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let a3_input = format!(
        "eyJhbGciOiJFUzI1NiJ9.{}",
        crate::verify::jwt::tests::rfc_vectors::RFC7515_PAYLOAD_B64
    );
    let a3_signature = Base64UrlUnpadded::decode_vec(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
    )
    .unwrap();
    // y = 2 has no x on edwards25519 (x^2 would be a non-square), so this
    // encoding is not a point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let not_a_point = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&not_a_point)});
    vec![
        case(
            "unbuildable keys",
            &off_curve,
            JwsAlgorithm::Es256,
            a3_input.as_bytes(),
            &a3_signature,
        ),
        case(
            "unbuildable keys",
            &not_a_point,
            JwsAlgorithm::EdDsa,
            b"a.b",
            &[1; 64],
        ),
    ]
}

/// Writes every case to the file `PORTCULLIS_SIGNATURE_CASES` names; run by
/// tests/webcrypto.test.mjs, a no-op otherwise.
#[test]
#[ignore = "exports cases for tests/webcrypto.test.mjs"]
fn export_signature_cases() {
    let Some(path) = std::env::var_os("PORTCULLIS_SIGNATURE_CASES") else {
        return;
    };
    let seed = std::env::var("PORTCULLIS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand_core::OsRng.next_u64());
    let mut cases = crate::verify::wycheproof_tests::signature_cases();
    cases.extend(differential_cases(seed, 6));
    cases.extend(unbuildable_key_cases());
    let document = json!({ "seed": seed.to_string(), "cases": cases });
    std::fs::write(&path, document.to_string()).expect("cases written");
    println!("{} signature cases, seed {seed}", cases.len());
}
