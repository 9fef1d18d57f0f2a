//! RFC 9449 §4.3's checks, one proof per way of failing them, made with the
//! test keys; the signature itself is the driver's (checked here with the
//! native backend, as the machine's driver does).

use serde_json::json;
use url::Url;

use super::*;
use crate::testkit::{dpop_proof, jkt, mint_raw, public_jwk, NOW};
use crate::verify::signature::verify_signature;

const URL: &str = "https://mcp.example.com/mcp";
const TOKEN: &str = "an-access-token.of-some.kind";

fn url() -> Url {
    Url::parse(URL).unwrap()
}

fn expected(url: &Url) -> Expected<'_> {
    Expected {
        method: "POST",
        url,
        access_token: TOKEN,
        now: NOW,
    }
}

fn proof(header: serde_json::Value, claims: serde_json::Value) -> String {
    dpop_proof(
        JwsAlgorithm::Es256,
        ("POST", URL, TOKEN, NOW),
        header,
        claims,
    )
}

fn parse(value: &str) -> Result<Result<Proof, NonceError>, ProofError> {
    Proof::parse(&[value], &DpopSettings::default(), &expected(&url()))
}

fn refusal(value: &str) -> ProofError {
    parse(value).expect_err("the proof is refused")
}

fn verifies(proof: &Proof) -> bool {
    verify_signature(
        proof.algorithm(),
        proof.key(),
        proof.signing_input().as_bytes(),
        proof.signature(),
    )
}

#[test]
fn a_good_proof_names_its_key_and_verifies() {
    for alg in [
        JwsAlgorithm::Es256,
        JwsAlgorithm::EdDsa,
        JwsAlgorithm::Rs256,
        JwsAlgorithm::Ps256,
    ] {
        let value = dpop_proof(alg, ("POST", URL, TOKEN, NOW), json!({}), json!({}));
        let proof = parse(&value).unwrap().unwrap();
        assert_eq!(proof.thumbprint(), jkt(alg), "{alg:?}");
        assert!(verifies(&proof), "{alg:?}");
        assert_eq!(proof.remember_until(), NOW + 300);
        assert_eq!(proof.replay_key().len(), 64);
    }
}

#[test]
fn ed25519_is_eddsa_by_its_rfc_9864_name() {
    let value = dpop_proof(
        JwsAlgorithm::EdDsa,
        ("POST", URL, TOKEN, NOW),
        json!({"alg": "Ed25519"}),
        json!({}),
    );
    let proof = parse(&value).unwrap().unwrap();
    assert!(verifies(&proof));
    // Not when EdDSA is not allowed.
    let settings = DpopSettings {
        algorithms: vec![JwsAlgorithm::Es256],
        ..DpopSettings::default()
    };
    let url = url();
    let refused = Proof::parse(&[&value], &settings, &expected(&url));
    assert_eq!(refused.unwrap_err(), ProofError::AlgorithmNotAllowed);
}

#[test]
fn each_header_problem_is_named() {
    assert_eq!(
        refusal(&proof(json!({"typ": "JWT"}), json!({}))),
        ProofError::WrongType
    );
    assert_eq!(
        refusal(&proof(json!({"typ": null}), json!({}))),
        ProofError::WrongType
    );
    assert_eq!(
        refusal(&proof(json!({"alg": "none"}), json!({}))),
        ProofError::AlgorithmNotAllowed
    );
    assert_eq!(
        refusal(&proof(json!({"alg": "HS256"}), json!({}))),
        ProofError::AlgorithmNotAllowed
    );
    // RS512 is a JWS algorithm the gate knows, but not one DPOP_ALGORITHMS lists.
    assert_eq!(
        refusal(&proof(json!({"alg": "RS512"}), json!({}))),
        ProofError::AlgorithmNotAllowed
    );
    // The key does not fit the algorithm: an Ed25519 key for ES256.
    let ed = public_jwk(JwsAlgorithm::EdDsa);
    assert_eq!(
        refusal(&proof(json!({"jwk": ed}), json!({}))),
        ProofError::JwkInvalid
    );
    assert_eq!(
        refusal(&proof(json!({"jwk": null}), json!({}))),
        ProofError::JwkInvalid
    );
    assert_eq!(
        refusal(&proof(json!({"jwk": "text"}), json!({}))),
        ProofError::JwkInvalid
    );
    let mut private = public_jwk(JwsAlgorithm::Es256);
    private["d"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        refusal(&proof(json!({"jwk": private}), json!({}))),
        ProofError::JwkPrivate
    );
    assert_eq!(
        refusal(&proof(json!({"crit": ["exp"]}), json!({}))),
        ProofError::Malformed
    );
}

#[test]
fn each_claim_problem_is_named() {
    for claim in ["jti", "htm", "htu", "iat", "ath"] {
        let value = proof(json!({}), json!({ claim: null }));
        assert_eq!(refusal(&value), ProofError::ClaimMissing, "{claim}");
    }
    assert_eq!(
        refusal(&proof(json!({}), json!({"jti": 7}))),
        ProofError::ClaimMissing
    );
    assert_eq!(
        refusal(&proof(json!({}), json!({"iat": "now"}))),
        ProofError::ClaimMissing
    );
    assert_eq!(
        refusal(&proof(json!({}), json!({"htm": "GET"}))),
        ProofError::MethodMismatch
    );
    assert_eq!(
        refusal(&proof(json!({}), json!({"htm": "post"}))),
        ProofError::MethodMismatch
    );
    for htu in [
        "https://mcp.example.com/other",
        "https://evil.example.com/mcp",
        "http://mcp.example.com/mcp",
        "https://mcp.example.com:8443/mcp",
        "https://user@mcp.example.com/mcp",
        "mcp.example.com/mcp",
    ] {
        let value = proof(json!({}), json!({ "htu": htu }));
        assert_eq!(refusal(&value), ProofError::UrlMismatch, "{htu}");
    }
    let late = proof(json!({}), json!({"iat": NOW - 301}));
    assert_eq!(refusal(&late), ProofError::IssuedOutOfWindow);
    let early = proof(json!({}), json!({"iat": NOW + 301}));
    assert_eq!(refusal(&early), ProofError::IssuedOutOfWindow);
    let other = proof(json!({}), json!({"ath": token_hash("another token")}));
    assert_eq!(refusal(&other), ProofError::TokenHashMismatch);
}

#[test]
fn htu_is_compared_after_normalisation_without_query_or_fragment() {
    for htu in [
        "https://MCP.Example.COM/mcp",
        "HTTPS://mcp.example.com:443/mcp",
        "https://mcp.example.com/mcp?page=2",
        "https://mcp.example.com/mcp#top",
        "https://mcp.example.com/a/../mcp",
    ] {
        let value = proof(json!({}), json!({ "htu": htu }));
        assert!(parse(&value).is_ok(), "{htu}");
    }
    // The window's edges are inside it.
    for iat in [NOW - 300, NOW + 300] {
        assert!(parse(&proof(json!({}), json!({ "iat": iat }))).is_ok());
    }
    assert!(parse(&proof(json!({}), json!({ "iat": NOW as f64 + 0.5 }))).is_ok());
}

#[test]
fn the_header_itself_is_bounded_and_single() {
    let value = proof(json!({}), json!({}));
    let settings = DpopSettings::default();
    let url = url();
    let two = Proof::parse(&[&value, &value], &settings, &expected(&url));
    assert_eq!(two.unwrap_err(), ProofError::Repeated);
    let joined = format!("{value}, {value}");
    assert_eq!(refusal(&joined), ProofError::Repeated);
    assert_eq!(
        Proof::parse(&[], &settings, &expected(&url)).unwrap_err(),
        ProofError::Missing
    );
    assert_eq!(refusal(""), ProofError::Missing);
    let padded = proof(json!({"pad": "x".repeat(MAX_PROOF_BYTES)}), json!({}));
    assert_eq!(refusal(&padded), ProofError::TooLarge);
    for garbage in ["a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.", "W10.e30.AAAA"] {
        assert!(
            matches!(
                refusal(garbage),
                ProofError::Malformed | ProofError::WrongType | ProofError::BadSignature
            ),
            "{garbage}"
        );
    }
}

#[test]
fn a_forged_signature_parses_but_does_not_verify() {
    let value = proof(json!({}), json!({}));
    let (head, signature) = value.rsplit_once('.').unwrap();
    let mut bytes = Base64UrlUnpadded::decode_vec(signature).unwrap();
    bytes[5] ^= 1;
    let forged = format!("{head}.{}", Base64UrlUnpadded::encode_string(&bytes));
    assert!(!verifies(&parse(&forged).unwrap().unwrap()));
    // Claims changed under a kept signature.
    let resigned = mint_raw(
        JwsAlgorithm::Es256,
        &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": public_jwk(JwsAlgorithm::Es256)})
            .to_string(),
        "{}",
    );
    let spliced = format!(
        "{}.{}",
        &value[..value.rfind('.').unwrap()],
        resigned.rsplit('.').next().unwrap()
    );
    assert!(!verifies(&parse(&spliced).unwrap().unwrap()));
    // A signature of another length is refused before any backend sees it.
    let short = format!("{head}.AAAA");
    assert_eq!(refusal(&short), ProofError::BadSignature);
}

#[test]
fn two_clients_choosing_one_jti_do_not_collide() {
    let es = dpop_proof(
        JwsAlgorithm::Es256,
        ("POST", URL, TOKEN, NOW),
        json!({}),
        json!({"jti": "same"}),
    );
    let ed = dpop_proof(
        JwsAlgorithm::EdDsa,
        ("POST", URL, TOKEN, NOW),
        json!({}),
        json!({"jti": "same"}),
    );
    let es = parse(&es).unwrap().unwrap();
    let ed = parse(&ed).unwrap().unwrap();
    assert_ne!(es.replay_key(), ed.replay_key());
}

#[test]
fn nonces_are_checked_when_configured() {
    let key = NonceKey::parse(&"s".repeat(32)).unwrap();
    let settings = DpopSettings {
        nonces: Some(key.clone()),
        ..DpopSettings::default()
    };
    let url = url();
    let run = |value: &str| Proof::parse(&[value], &settings, &expected(&url)).unwrap();
    assert_eq!(
        run(&proof(json!({}), json!({}))).unwrap_err(),
        NonceError::Missing
    );
    let fresh = key.issue(NOW - 10);
    assert!(run(&proof(json!({}), json!({ "nonce": fresh }))).is_ok());
    let stale = key.issue(NOW - 301);
    assert_eq!(
        run(&proof(json!({}), json!({ "nonce": stale }))).unwrap_err(),
        NonceError::Stale
    );
    let other = NonceKey::parse(&"t".repeat(32)).unwrap().issue(NOW);
    assert_eq!(
        run(&proof(json!({}), json!({ "nonce": other }))).unwrap_err(),
        NonceError::Invalid
    );
    let future = key.issue(NOW + 60);
    assert_eq!(
        run(&proof(json!({}), json!({ "nonce": future }))).unwrap_err(),
        NonceError::Invalid
    );
    for garbage in ["", "abc", "!!!!", &"A".repeat(32)] {
        let value = proof(json!({}), json!({ "nonce": garbage }));
        assert_eq!(run(&value).unwrap_err(), NonceError::Invalid, "{garbage}");
    }
    // A rotated secret: nonces of the old one still pass, new ones use the first.
    let rotated = NonceKey::parse(&format!("{} {}", "u".repeat(32), "s".repeat(32))).unwrap();
    assert!(rotated.check(Some(&fresh), NOW, 300).is_ok());
    assert!(key.check(Some(&rotated.issue(NOW)), NOW, 300).is_err());
    // Secrets are never printed.
    assert_eq!(format!("{rotated:?}"), "NonceKey(<redacted>)");
    assert!(NonceKey::parse("short").is_err());
    assert!(NonceKey::parse("  ").is_err());
}

#[test]
fn the_policy_words() {
    assert_eq!(DpopPolicy::from_word("bearer"), Some(DpopPolicy::Bearer));
    assert_eq!(DpopPolicy::from_word("dpop"), Some(DpopPolicy::Required));
    assert_eq!(DpopPolicy::from_word("either"), Some(DpopPolicy::Either));
    assert_eq!(DpopPolicy::from_word("DPoP"), None);
    assert!(DpopPolicy::Either.accepts_bearer() && DpopPolicy::Either.accepts_dpop());
    assert!(!DpopPolicy::Required.accepts_bearer());
    assert!(!DpopPolicy::Bearer.accepts_dpop());
    assert_eq!(DpopSettings::default().algs(), "ES256 EdDSA RS256 PS256");
}
