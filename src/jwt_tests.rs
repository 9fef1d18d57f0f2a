use serde_json::json;

use super::*;
use crate::testkit::{self, good_claims, key_set, mint, mint_raw, with, ISSUER, NOW, RESOURCE};

const DEFAULT_ALGS: [JwsAlgorithm; 4] = [
    JwsAlgorithm::Rs256,
    JwsAlgorithm::Ps256,
    JwsAlgorithm::Es256,
    JwsAlgorithm::EdDsa,
];

fn audiences() -> Vec<String> {
    vec![RESOURCE.to_owned()]
}

fn check(token: &str) -> Result<AccessToken, TokenError> {
    check_with(token, &DEFAULT_ALGS, NOW)
}

fn check_with(token: &str, algs: &[JwsAlgorithm], now: i64) -> Result<AccessToken, TokenError> {
    let audiences = audiences();
    let policy = ClaimsPolicy {
        issuer: ISSUER,
        audiences: &audiences,
        leeway_seconds: 60,
    };
    let unverified = UnverifiedJwt::parse(token, algs)?;
    verify(&unverified, &key_set(), &policy, now)
}

#[test]
fn accepts_each_supported_algorithm() {
    for alg in JwsAlgorithm::ALL {
        let token = mint(alg, &good_claims());
        let verified =
            check_with(&token, &JwsAlgorithm::ALL, NOW).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified.subject.as_deref(), Some("user-1"));
        assert_eq!(verified.client_id.as_deref(), Some("client-1"));
        assert_eq!(verified.scopes, ["mcp:read", "mcp:write"]);
        assert_eq!(verified.expires_at, NOW + 300);
    }
}

#[test]
fn refuses_algorithms_outside_the_allow_list() {
    let token = mint(JwsAlgorithm::Rs512, &good_claims());
    assert_eq!(check(&token).unwrap_err(), TokenError::AlgorithmNotAllowed);
}

#[test]
fn refuses_none_and_hmac() {
    let claims = good_claims().to_string();
    let unsigned = format!(
        "{}.{}.",
        Base64UrlUnpadded::encode_string(br#"{"alg":"none"}"#),
        Base64UrlUnpadded::encode_string(claims.as_bytes())
    );
    assert_eq!(
        check(&unsigned).unwrap_err(),
        TokenError::AlgorithmNotAllowed
    );
    for alg in [
        "HS256", "HS384", "HS512", "NONE", "rs256", "ES256K", "ES384",
    ] {
        let header = format!(r#"{{"alg":"{alg}","kid":"rsa"}}"#);
        // Signed with a real key so that only the alg decides.
        let token = mint_raw(JwsAlgorithm::Rs256, &header, &claims);
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::AlgorithmNotAllowed,
            "{alg}"
        );
    }
}

#[test]
fn key_type_must_fit_the_algorithm() {
    // An RS256 header pointing at the EC key: the EC key never verifies RSA.
    let header = r#"{"alg":"RS256","kid":"ec"}"#;
    let token = mint_raw(JwsAlgorithm::Rs256, header, &good_claims().to_string());
    assert_eq!(check(&token).unwrap_err(), TokenError::UnknownKey);
    // ES256 signature presented as EdDSA with the Ed25519 kid.
    let es = mint_raw(
        JwsAlgorithm::Es256,
        r#"{"alg":"EdDSA","kid":"ed"}"#,
        &good_claims().to_string(),
    );
    assert_eq!(check(&es).unwrap_err(), TokenError::BadSignature);
}

#[test]
fn pinned_key_algorithm_wins_over_the_header() {
    // The EC key is pinned to ES256 in the test JWKS; the RSA key is not,
    // so PS256 with kid "rsa" verifies, but nothing can reuse "ec" for EdDSA.
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"ec"}"#,
        &good_claims().to_string(),
    );
    assert_eq!(check(&token).unwrap_err(), TokenError::UnknownKey);
}

#[test]
fn unknown_kid_is_unknown_key() {
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"nope"}"#,
        &good_claims().to_string(),
    );
    assert_eq!(check(&token).unwrap_err(), TokenError::UnknownKey);
}

#[test]
fn token_without_kid_is_tried_against_fitting_keys() {
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA"}"#,
        &good_claims().to_string(),
    );
    assert!(check(&token).is_ok());
}

#[test]
fn tampered_payload_fails_signature() {
    let token = mint(JwsAlgorithm::Rs256, &good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged = Base64UrlUnpadded::encode_string(
        with(&good_claims(), json!({"sub": "admin"}))
            .to_string()
            .as_bytes(),
    );
    parts[1] = &forged;
    assert_eq!(
        check(&parts.join(".")).unwrap_err(),
        TokenError::BadSignature
    );
}

#[test]
fn truncated_or_extended_signatures_fail() {
    for alg in [
        JwsAlgorithm::Rs256,
        JwsAlgorithm::Es256,
        JwsAlgorithm::EdDsa,
    ] {
        let token = mint(alg, &good_claims());
        let (input, signature) = token.rsplit_once('.').unwrap();
        let mut bytes = Base64UrlUnpadded::decode_vec(signature).unwrap();
        bytes.push(0);
        let longer = format!("{input}.{}", Base64UrlUnpadded::encode_string(&bytes));
        assert_eq!(
            check(&longer).unwrap_err(),
            TokenError::BadSignature,
            "{alg} longer"
        );
        bytes.truncate(bytes.len() - 2);
        let shorter = format!("{input}.{}", Base64UrlUnpadded::encode_string(&bytes));
        assert_eq!(
            check(&shorter).unwrap_err(),
            TokenError::BadSignature,
            "{alg} shorter"
        );
        assert_eq!(
            check(&format!("{input}.")).unwrap_err(),
            TokenError::BadSignature,
            "{alg} empty"
        );
    }
}

#[test]
fn structure_and_encoding_are_strict() {
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let (header, rest) = token.split_once('.').unwrap();
    let cases = [
        String::new(),
        "a.b".to_owned(),
        format!("{token}.extra"),
        format!("{token}.a.b"),
        format!("{header}=.{rest}"),
        format!("{header} .{rest}"),
        token.replacen('-', "+", 1).replacen('_', "/", 1),
        format!(
            "{}.{}.",
            Base64UrlUnpadded::encode_string(b"[]"),
            Base64UrlUnpadded::encode_string(b"{}")
        ),
        format!(
            "{}.{}.",
            Base64UrlUnpadded::encode_string(br#"{"alg":"EdDSA"}"#),
            Base64UrlUnpadded::encode_string(b"[1]")
        ),
        format!(
            "{}.{}.",
            Base64UrlUnpadded::encode_string(b"\xef\xbb\xbf{\"alg\":\"EdDSA\"}"),
            Base64UrlUnpadded::encode_string(b"{}")
        ),
    ];
    for case in cases {
        if case == token {
            continue;
        }
        assert!(check(&case).is_err(), "{case:?}");
    }
    let wrong_payload = format!(
        "{}.{}.AA",
        Base64UrlUnpadded::encode_string(br#"{"alg":"EdDSA"}"#),
        Base64UrlUnpadded::encode_string(b"\"x\"")
    );
    assert_eq!(check(&wrong_payload).unwrap_err(), TokenError::Malformed);
}

#[test]
fn duplicate_registered_members_are_refused() {
    let claims = format!(
        r#"{{"iss":"{ISSUER}","iss":"https://evil.example","aud":"{RESOURCE}","exp":{}}}"#,
        NOW + 60
    );
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"ed"}"#,
        &claims,
    );
    assert_eq!(check(&token).unwrap_err(), TokenError::Malformed);
}

#[test]
fn refuses_dangerous_header_parameters() {
    for extra in [
        r#""crit":["exp"]"#,
        r#""b64":false,"crit":["b64"]"#,
        r#""jku":"https://evil.example/jwks""#,
        r#""x5u":"https://evil.example/cert""#,
        r#""x5c":["MIIB"]"#,
        r#""jwk":{"kty":"OKP","crv":"Ed25519","x":"AA"}"#,
        r#""cty":"JWT""#,
        r#""cty":"json""#,
    ] {
        let header = format!(r#"{{"alg":"EdDSA","kid":"ed",{extra}}}"#);
        let token = mint_raw(JwsAlgorithm::EdDsa, &header, &good_claims().to_string());
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::ForbiddenHeader,
            "{extra}"
        );
    }
}

#[test]
fn typ_must_denote_an_access_token_or_jwt() {
    for typ in ["at+jwt", "application/at+jwt", "AT+JWT", "JWT", "jwt"] {
        let token = mint_raw(
            JwsAlgorithm::EdDsa,
            &format!(r#"{{"alg":"EdDSA","typ":"{typ}"}}"#),
            &good_claims().to_string(),
        );
        assert!(check(&token).is_ok(), "{typ}");
    }
    for typ in ["dpop+jwt", "id_token", "JOSE", "secevent+jwt"] {
        let token = mint_raw(
            JwsAlgorithm::EdDsa,
            &format!(r#"{{"alg":"EdDSA","typ":"{typ}"}}"#),
            &good_claims().to_string(),
        );
        assert_eq!(check(&token).unwrap_err(), TokenError::WrongType, "{typ}");
    }
}

#[test]
fn issuer_must_match_exactly() {
    for iss in [
        json!("https://auth.example.com/"),
        json!("https://AUTH.example.com"),
        json!("https://evil.example"),
        json!(null),
    ] {
        let token = mint(
            JwsAlgorithm::EdDsa,
            &with(&good_claims(), json!({"iss": iss})),
        );
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::UntrustedIssuer,
            "{iss}"
        );
    }
}

#[test]
fn audience_must_contain_an_accepted_value_exactly() {
    for aud in [json!([RESOURCE, "other"]), json!(["other", RESOURCE])] {
        assert!(check(&mint(
            JwsAlgorithm::EdDsa,
            &with(&good_claims(), json!({"aud": aud}))
        ))
        .is_ok());
    }
    for aud in [
        json!("https://mcp.example.com/mcp/"),
        json!("https://mcp.example.com"),
        json!("https://mcp.example.com.evil.example/mcp"),
        json!([]),
        json!(""),
        json!(null),
    ] {
        let token = mint(
            JwsAlgorithm::EdDsa,
            &with(&good_claims(), json!({"aud": aud})),
        );
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::AudienceMismatch,
            "{aud}"
        );
    }
    let numeric = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"aud": 7})),
    );
    assert_eq!(check(&numeric).unwrap_err(), TokenError::Malformed);
}

#[test]
fn expiry_is_required_and_checked_with_leeway() {
    let no_exp = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"exp": null})),
    );
    assert_eq!(check(&no_exp).unwrap_err(), TokenError::MissingExpiry);
    let expired = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"exp": NOW - 61})),
    );
    assert_eq!(check(&expired).unwrap_err(), TokenError::Expired);
    let at_edge = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"exp": NOW - 60})),
    );
    assert_eq!(check(&at_edge).unwrap_err(), TokenError::Expired);
    let within_leeway = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"exp": NOW - 59})),
    );
    assert!(check(&within_leeway).is_ok());
}

#[test]
fn not_before_and_issued_at_are_checked_with_leeway() {
    let early = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"nbf": NOW + 61})),
    );
    assert_eq!(check(&early).unwrap_err(), TokenError::NotYetValid);
    let skewed = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"nbf": NOW + 60})),
    );
    assert!(check(&skewed).is_ok());
    let future = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"iat": NOW + 61})),
    );
    assert_eq!(check(&future).unwrap_err(), TokenError::IssuedInFuture);
}

#[test]
fn time_claims_must_be_whole_non_negative_seconds() {
    for (name, value) in [
        ("exp", json!("1767225900")),
        ("exp", json!(null)),
        ("exp", json!(1.767e9)),
        ("exp", json!(-1)),
        ("exp", json!(1e300)),
        ("exp", json!(u64::MAX)),
        ("nbf", json!("0")),
        ("iat", json!(true)),
        ("iat", json!(null)),
    ] {
        let mut claims = good_claims();
        claims[name] = value.clone();
        let token = mint(JwsAlgorithm::EdDsa, &claims);
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::InvalidClaims,
            "{name}={value}"
        );
    }
}

#[test]
fn scopes_come_from_scope_and_scp() {
    let claims = with(&good_claims(), json!({"scope": null, "scp": ["a", "b"]}));
    assert_eq!(
        check(&mint(JwsAlgorithm::EdDsa, &claims)).unwrap().scopes,
        ["a", "b"]
    );
    let claims = with(&good_claims(), json!({"scope": "a  b", "scp": "b c"}));
    assert_eq!(
        check(&mint(JwsAlgorithm::EdDsa, &claims)).unwrap().scopes,
        ["a", "b", "c"]
    );
    let claims = with(&good_claims(), json!({"scope": ["a"]}));
    assert_eq!(
        check(&mint(JwsAlgorithm::EdDsa, &claims)).unwrap_err(),
        TokenError::Malformed
    );
}

#[test]
fn client_id_falls_back_to_azp() {
    let claims = with(&good_claims(), json!({"client_id": null, "azp": "spa"}));
    assert_eq!(
        check(&mint(JwsAlgorithm::EdDsa, &claims))
            .unwrap()
            .client_id
            .as_deref(),
        Some("spa")
    );
}

#[test]
fn sender_constrained_tokens_are_not_bearer_tokens() {
    let claims = with(&good_claims(), json!({"cnf": {"jkt": "abc"}}));
    assert_eq!(
        check(&mint(JwsAlgorithm::EdDsa, &claims)).unwrap_err(),
        TokenError::ProofOfPossessionRequired
    );
}

/// RFC 7515 Appendix A.2 (RS256), A.3 (ES256) and RFC 8037 Appendix A.4
/// (Ed25519): the published signatures verify through the gate's signature
/// path, and fail once a byte of the signing input changes.
mod rfc_vectors {
    use super::*;
    use crate::jwk::tests::{RFC7515_A2_E, RFC7515_A2_N};

    pub const RFC7515_PAYLOAD_B64: &str = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
    const A2_SIGNATURE: &str = "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
    const A3_SIGNATURE: &str =
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const RFC8037_A4: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    /// RFC 7515 Appendix A.1: HMAC SHA-256, which the gate must refuse.
    const A1_HS256: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn single_key(jwk: String) -> crate::jwk::VerificationKey {
        let set = KeySet::parse(format!(r#"{{"keys":[{jwk}]}}"#).as_bytes()).unwrap();
        assert_eq!(set.keys().len(), 1, "{jwk}");
        set.keys()[0].clone()
    }

    fn assert_vector(alg: JwsAlgorithm, token: &str, jwk: String) {
        let key = single_key(jwk);
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = Base64UrlUnpadded::decode_vec(signature).unwrap();
        assert!(
            verify_signature(alg, &key.key, input.as_bytes(), &signature),
            "{alg} vector verifies"
        );
        let mut altered = input.as_bytes().to_vec();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(
            !verify_signature(alg, &key.key, &altered, &signature),
            "{alg} altered input fails"
        );
        // The full pipeline gets past the signature and stops at the claims.
        let unverified = UnverifiedJwt::parse(token, &[alg]);
        if let Ok(unverified) = unverified {
            let set = KeySet::parse(
                format!(
                    r#"{{"keys":[{}]}}"#,
                    serde_json::to_string(&key_json(&key)).unwrap()
                )
                .as_bytes(),
            )
            .unwrap();
            let audiences = vec!["joe".to_owned()];
            let policy = ClaimsPolicy {
                issuer: "joe",
                audiences: &audiences,
                leeway_seconds: 0,
            };
            assert_eq!(
                verify(&unverified, &set, &policy, 1_300_819_300).unwrap_err(),
                TokenError::AudienceMismatch
            );
        }
    }

    fn key_json(key: &crate::jwk::VerificationKey) -> serde_json::Value {
        match &key.key {
            PublicKey::Rsa(_) => json!({"kty":"RSA","n":RFC7515_A2_N,"e":RFC7515_A2_E}),
            PublicKey::P256(_) => json!({"kty":"EC","crv":"P-256","x":A3_X,"y":A3_Y}),
            PublicKey::Ed25519(_) => json!({"kty":"OKP","crv":"Ed25519","x":RFC8037_X}),
        }
    }

    #[test]
    fn rfc7515_a2_rs256() {
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD_B64}.{A2_SIGNATURE}");
        assert_vector(
            JwsAlgorithm::Rs256,
            &token,
            format!(r#"{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"{RFC7515_A2_E}"}}"#),
        );
    }

    #[test]
    fn rfc7515_a3_es256() {
        let token = format!("eyJhbGciOiJFUzI1NiJ9.{RFC7515_PAYLOAD_B64}.{A3_SIGNATURE}");
        assert_vector(
            JwsAlgorithm::Es256,
            &token,
            format!(r#"{{"kty":"EC","crv":"P-256","x":"{A3_X}","y":"{A3_Y}"}}"#),
        );
    }

    #[test]
    fn rfc8037_a4_ed25519() {
        assert_vector(
            JwsAlgorithm::EdDsa,
            RFC8037_A4,
            format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"}}"#),
        );
        // Its payload is not a claims set, so the token as a whole is malformed.
        assert_eq!(
            UnverifiedJwt::parse(RFC8037_A4, &[JwsAlgorithm::EdDsa]).err(),
            Some(TokenError::Malformed)
        );
    }

    #[test]
    fn rfc7515_a1_hs256_is_refused() {
        assert_eq!(
            UnverifiedJwt::parse(A1_HS256, &JwsAlgorithm::ALL).err(),
            Some(TokenError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn rfc7515_a2_signature_does_not_verify_as_ps256() {
        let key = single_key(format!(
            r#"{{"kty":"RSA","n":"{RFC7515_A2_N}","e":"{RFC7515_A2_E}"}}"#
        ));
        let input = format!("eyJhbGciOiJSUzI1NiJ9.{RFC7515_PAYLOAD_B64}");
        let signature = Base64UrlUnpadded::decode_vec(A2_SIGNATURE).unwrap();
        assert!(!verify_signature(
            JwsAlgorithm::Ps256,
            &key.key,
            input.as_bytes(),
            &signature
        ));
        let _ = testkit::NOW;
    }
}
