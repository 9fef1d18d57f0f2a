use serde::Deserialize;
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
        max_lifetime_seconds: None,
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
pub(crate) mod rfc_vectors {
    use super::*;
    use crate::verify::jwk::tests::{RFC7515_A2_E, RFC7515_A2_N};
    use crate::verify::jwk::PublicKey;
    use crate::verify::signature::verify_signature;

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

    fn single_key(jwk: String) -> crate::verify::jwk::VerificationKey {
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
                max_lifetime_seconds: None,
            };
            assert_eq!(
                verify(&unverified, &set, &policy, 1_300_819_300).unwrap_err(),
                TokenError::AudienceMismatch
            );
        }
    }

    fn key_json(key: &crate::verify::jwk::VerificationKey) -> serde_json::Value {
        match &key.key {
            PublicKey::Rsa { .. } => json!({"kty":"RSA","n":RFC7515_A2_N,"e":RFC7515_A2_E}),
            PublicKey::P256 { .. } => json!({"kty":"EC","crv":"P-256","x":A3_X,"y":A3_Y}),
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

    /// RFC 7515 Appendix A.4: ECDSA P-521 SHA-512, an algorithm the gate does
    /// not verify: refused at the header, whatever the allow-list says.
    #[test]
    fn rfc7515_a4_es512_is_refused() {
        const A4: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
        assert_eq!(
            UnverifiedJwt::parse(A4, &JwsAlgorithm::ALL).err(),
            Some(TokenError::AlgorithmNotAllowed)
        );
    }

    /// RFC 7515 Appendix A.5: an Unsecured JWS (`alg: none`) is refused.
    #[test]
    fn rfc7515_a5_unsecured_is_refused() {
        let token = format!("eyJhbGciOiJub25lIn0.{RFC7515_PAYLOAD_B64}.");
        assert_eq!(
            UnverifiedJwt::parse(&token, &JwsAlgorithm::ALL).err(),
            Some(TokenError::AlgorithmNotAllowed)
        );
    }

    /// RFC 7520 §3.3 (public part of Figure 3): the RSA key of §4.1 and §4.2.
    const RFC7520_RSA_N: &str = "n4EPtAOCc9AlkeQHPzHStgAbgs7bTZLwUBZdR8_KuKPEHLd4rHVTeT-O-XV2jRojdNhxJWTDvNd7nqQ0VEiZQHz_AJmSCpMaJMRBSFKrKb2wqVwGU_NsYOYL-QtiWN2lbzcEe6XC0dApr5ydQLrHqkHHig3RBordaZ6Aj-oBHqFEHYpPe7Tpe-OfVfHd1E6cS6M1FZcD1NNLYD5lFHpPI9bTwJlsde3uhGqC0ZCuEHg8lhzwOHrtIQbS0FVbb9k3-tVTU4fg_3L_vniUFAKwuCLqKnS2BYwdq_mzSnbLY7h_qixoR7jig3__kRhuaxwUkRz5iaiQkqgc5gHdrNP5zw";
    /// RFC 7520 §4 payload (Figure 8): a sentence, not a JWT claims set.
    const RFC7520_PAYLOAD: &str = "SXTigJlzIGEgZGFuZ2Vyb3VzIGJ1c2luZXNzLCBGcm9kbywgZ29pbmcgb3V0IHlvdXIgZG9vci4gWW91IHN0ZXAgb250byB0aGUgcm9hZCwgYW5kIGlmIHlvdSBkb24ndCBrZWVwIHlvdXIgZmVldCwgdGhlcmXigJlzIG5vIGtub3dpbmcgd2hlcmUgeW91IG1pZ2h0IGJlIHN3ZXB0IG9mZiB0by4";
    const RFC7520_4_1_HEADER: &str =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9";
    const RFC7520_4_1_SIGNATURE: &str = "MRjdkly7_-oTPTS3AXP41iQIGKa80A0ZmTuV5MEaHoxnW2e5CZ5NlKtainoFmKZopdHM1O2U4mwzJdQx996ivp83xuglII7PNDi84wnB-BDkoBwA78185hX-Es4JIwmDLJK3lfWRa-XtL0RnltuYv746iYTh_qHRD68BNt1uSNCrUCTJDt5aAE6x8wW1Kt9eRo4QPocSadnHXFxnt8Is9UzpERV0ePPQdLuW3IS_de3xyIrDaLGdjluPxUAhb6L2aXic1U12podGU0KLUQSE_oI-ZnmKJ3F4uOZDnd6QZWJushZ41Axf_fcIe8u9ipH84ogoree7vjbU5y18kDquDg";
    const RFC7520_4_2_HEADER: &str =
        "eyJhbGciOiJQUzM4NCIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9";
    const RFC7520_4_2_SIGNATURE: &str = "cu22eBqkYDKgIlTpzDXGvaFfz6WGoz7fUDcfT0kkOy42miAh2qyBzk1xEsnk2IpN6-tPid6VrklHkqsGqDqHCdP6O8TTB5dDDItllVo6_1OLPpcbUrhiUSMxbbXUvdvWXzg-UD8biiReQFlfz28zGWVsdiNAUf8ZnyPEgVFn442ZdNqiVJRmBqrYRXe8P_ijQ7p8Vdz0TTrxUeT3lm8d9shnr2lfJT8ImUjvAA2Xez2Mlp8cBE5awDzT0qI0n6uiP1aCN_2_jLAeQTlqRHtfa64QQSUmFAAjVKPbByi7xho0uTOcbH510a6GYmJUAfmWjwZ6oD4ifKo8DYM-X72Eaw";

    fn rfc7520_rsa_jwk() -> String {
        format!(
            r#"{{"kty":"RSA","kid":"bilbo.baggins@hobbiton.example","use":"sig","n":"{RFC7520_RSA_N}","e":"AQAB"}}"#
        )
    }

    /// RFC 7520 §4.1 (RS256) and §4.2 (PS384): the signatures verify through
    /// the gate's signature path with the §3.3 key. Their payload is prose,
    /// not a claims set, so as tokens they are refused as malformed (the
    /// claims are what an access token is for): signature only.
    #[test]
    fn rfc7520_4_1_rs256_and_4_2_ps384_verify() {
        for (alg, header, signature) in [
            (
                JwsAlgorithm::Rs256,
                RFC7520_4_1_HEADER,
                RFC7520_4_1_SIGNATURE,
            ),
            (
                JwsAlgorithm::Ps384,
                RFC7520_4_2_HEADER,
                RFC7520_4_2_SIGNATURE,
            ),
        ] {
            let token = format!("{header}.{RFC7520_PAYLOAD}.{signature}");
            let key = single_key(rfc7520_rsa_jwk());
            let input = format!("{header}.{RFC7520_PAYLOAD}");
            let signature = Base64UrlUnpadded::decode_vec(signature).unwrap();
            assert!(
                verify_signature(alg, &key.key, input.as_bytes(), &signature),
                "{alg}"
            );
            assert!(
                !verify_signature(alg, &key.key, &input.as_bytes()[1..], &signature),
                "{alg} altered"
            );
            // The other RSA family never accepts it.
            let other = if alg == JwsAlgorithm::Rs256 {
                JwsAlgorithm::Ps256
            } else {
                JwsAlgorithm::Rs384
            };
            assert!(!verify_signature(
                other,
                &key.key,
                input.as_bytes(),
                &signature
            ));
            assert_eq!(
                UnverifiedJwt::parse(&token, &JwsAlgorithm::ALL).err(),
                Some(TokenError::Malformed)
            );
        }
    }

    /// RFC 7520 §4.3 (ES512), §4.4 (HS256) and §4.5 (HS256, detached
    /// content): refused at the header. §4.6–§4.8 exist only in the JSON
    /// serialization; the flattened form of §4.1 stands for them: not a
    /// compact JWS, so malformed (and not a b64token at the header level,
    /// see `bearer::tests`).
    #[test]
    fn rfc7520_unsupported_hmac_detached_and_json_forms_are_refused() {
        let es512 = format!(
            "eyJhbGciOiJFUzUxMiIsImtpZCI6ImJpbGJvLmJhZ2dpbnNAaG9iYml0b24uZXhhbXBsZSJ9.{RFC7520_PAYLOAD}.AE_R_YZCChjn4791jSQCrdPZCNYqHXCTZH0-JZGYNlaAjP2kqaluUIIUnC9qvbu9Plon7KRTzoNEuT4Va2cmL1eJAQy3mtPBu_u_sDDyYjnAMDxXPn7XrT0lw-kvAD890jl8e2puQens_IEKBpHABlsbEPX6sFY8OcGDqoRuBomu9xQ2"
        );
        let hs256_header =
            "eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxOGMwYWU1LTRkOWItNDcxYi1iZmQ2LWVlZjMxNGJjNzAzNyJ9";
        let hs256 =
            format!("{hs256_header}.{RFC7520_PAYLOAD}.s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0");
        let detached = format!("{hs256_header}..s0h6KThzkfBBBkLspW1h84VsJZFTsPPqMDA7g1Md7p0");
        for token in [&es512, &hs256, &detached] {
            assert_eq!(
                UnverifiedJwt::parse(token, &JwsAlgorithm::ALL).err(),
                Some(TokenError::AlgorithmNotAllowed),
                "{token}"
            );
        }
        let flattened = json!({
            "payload": RFC7520_PAYLOAD,
            "protected": RFC7520_4_1_HEADER,
            "signature": RFC7520_4_1_SIGNATURE,
        })
        .to_string();
        assert_eq!(
            UnverifiedJwt::parse(&flattened, &JwsAlgorithm::ALL).err(),
            Some(TokenError::Malformed)
        );
    }

    /// RFC 8037 Appendix A.1 (the private key, `d` present) is dropped when
    /// loading; A.2 (its public part) loads and verifies A.4 (above).
    #[test]
    fn rfc8037_a1_private_key_is_dropped() {
        let private = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"{RFC8037_X}"}}]}}"#
        );
        let set = KeySet::parse(private.as_bytes()).unwrap();
        assert!(set.keys().is_empty());
        assert_eq!(
            set.skipped(),
            [crate::verify::jwk::SkipReason::CarriesSecret]
        );
        single_key(format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"}}"#
        ));
    }
}

fn check_policy(token: &str, max_lifetime_seconds: Option<u64>) -> Result<AccessToken, TokenError> {
    let audiences = audiences();
    let policy = ClaimsPolicy {
        issuer: ISSUER,
        audiences: &audiences,
        leeway_seconds: 60,
        max_lifetime_seconds,
    };
    let unverified = UnverifiedJwt::parse(token, &DEFAULT_ALGS)?;
    verify(&unverified, &key_set(), &policy, NOW)
}

#[test]
fn lifetime_above_the_configured_maximum_is_refused() {
    let day = mint(
        JwsAlgorithm::EdDsa,
        &with(
            &good_claims(),
            json!({"iat": NOW - 10, "exp": NOW + 86_390}),
        ),
    );
    assert!(check_policy(&day, None).is_ok(), "no cap: any lifetime");
    assert!(check_policy(&day, Some(86_400)).is_ok(), "exactly the cap");
    assert_eq!(
        check_policy(&day, Some(86_399)).unwrap_err(),
        TokenError::LifetimeTooLong
    );
    // With a cap, a token without iat has an unknown lifetime: refused.
    let no_iat = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"iat": null})),
    );
    assert!(check_policy(&no_iat, None).is_ok());
    assert_eq!(
        check_policy(&no_iat, Some(3600)).unwrap_err(),
        TokenError::LifetimeTooLong
    );
    // An absurd exp far in the future with an honest iat.
    let forever = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"exp": 253_402_300_799_i64})),
    );
    assert_eq!(
        check_policy(&forever, Some(3600)).unwrap_err(),
        TokenError::LifetimeTooLong
    );
}

#[test]
fn strict_mode_requires_typ_at_jwt() {
    let claims = good_claims().to_string();
    for typ in [
        "at+jwt",
        "application/at+jwt",
        "AT+JWT",
        "Application/At+Jwt",
        "APPLICATION/AT+JWT",
    ] {
        let token = mint_raw(
            JwsAlgorithm::EdDsa,
            &format!(r#"{{"alg":"EdDSA","typ":"{typ}"}}"#),
            &claims,
        );
        let parsed = UnverifiedJwt::parse(&token, &DEFAULT_ALGS).unwrap();
        assert_eq!(parsed.require_access_token_type(), Ok(()), "{typ}");
    }
    for header in [
        r#"{"alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","typ":"JWT"}"#,
        r#"{"alg":"EdDSA","typ":"application/jwt"}"#,
    ] {
        let token = mint_raw(JwsAlgorithm::EdDsa, header, &claims);
        // Accepted by default, refused in strict mode.
        assert!(check(&token).is_ok(), "{header}");
        let parsed = UnverifiedJwt::parse(&token, &DEFAULT_ALGS).unwrap();
        assert_eq!(
            parsed.require_access_token_type(),
            Err(TokenError::WrongType),
            "{header}"
        );
    }
}

/// RFC 9068 §2.2: `sub` is required of an access token; strict mode holds
/// tokens to the profile, the default mode also takes generic JWTs (RFC 7519
/// §4.1.2: `sub` optional), whose origin request then carries no subject.
#[test]
fn strict_mode_requires_a_subject() {
    let mut claims = good_claims();
    claims.as_object_mut().unwrap().remove("sub");
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","typ":"at+jwt"}"#,
        &claims.to_string(),
    );
    let parsed = UnverifiedJwt::parse(&token, &DEFAULT_ALGS).unwrap();
    assert_eq!(
        parsed.require_access_token_type(),
        Err(TokenError::MissingSubject)
    );
    assert_eq!(check(&token).map(|t| t.subject), Ok(None), "default mode");
}

/// Encoding and structure tricks beyond `structure_and_encoding_are_strict`.
#[test]
fn hostile_encodings_are_malformed() {
    let b64 = |bytes: &[u8]| Base64UrlUnpadded::encode_string(bytes);
    let claims = good_claims().to_string();
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let (header, rest) = token.split_once('.').unwrap();
    let cases: Vec<(&str, String)> = vec![
        // JWE compact serialization: five parts.
        ("five-part JWE", format!("{header}.{rest}.AAAA.BBBB")),
        ("two parts", format!("{header}.{}", b64(claims.as_bytes()))),
        ("whitespace inside", format!("{header}.\t{rest}")),
        ("newline", format!("{header}.{rest}\n")),
        ("padding", format!("{token}==")),
        // Invalid UTF-8 in the header and in the payload.
        (
            "header not UTF-8",
            format!("{}.{}.AA", b64(b"{\"alg\":\"EdDSA\xff\"}"), b64(claims.as_bytes())),
        ),
        (
            "payload not UTF-8",
            mint_raw_bytes(b"{\"alg\":\"EdDSA\",\"kid\":\"ed\"}", b"{\"iss\":\"\xc3\x28\"}"),
        ),
        // In a member the gate ignores: serde_json skips ignored strings
        // without checking their UTF-8.
        (
            "unknown member not UTF-8",
            mint_raw_bytes(
                b"{\"alg\":\"EdDSA\",\"kid\":\"ed\"}",
                &[
                    &good_claims().to_string().as_bytes()[..good_claims().to_string().len() - 1],
                    b",\"x\":\"\xc3\x28\"}".as_slice(),
                ]
                .concat(),
            ),
        ),
        (
            "unknown header member not UTF-8",
            mint_raw_bytes(
                b"{\"alg\":\"EdDSA\",\"kid\":\"ed\",\"x\":\"\xff\"}",
                good_claims().to_string().as_bytes(),
            ),
        ),
        // A byte-order mark before the claims.
        (
            "BOM in payload",
            mint_raw_bytes(
                b"{\"alg\":\"EdDSA\",\"kid\":\"ed\"}",
                &[b"\xef\xbb\xbf".as_slice(), claims.as_bytes()].concat(),
            ),
        ),
        // JWS JSON serialization (flattened) presented as a token.
        (
            "JWS JSON serialization",
            json!({"protected": header, "payload": rest.split('.').next().unwrap(), "signature": "AA"}).to_string(),
        ),
        // Nested JWT: the payload is itself a JWT (a string, not claims).
        (
            "nested JWT",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed"}"#,
                &serde_json::to_string(&token).unwrap(),
            ),
        ),
        // Duplicate header member: the second alg would win in some parsers.
        (
            "duplicate alg",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","alg":"none","kid":"ed"}"#,
                &claims,
            ),
        ),
        (
            "duplicate kid",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed","kid":"rsa"}"#,
                &claims,
            ),
        ),
        ("duplicate exp", mint_raw(
            JwsAlgorithm::EdDsa,
            r#"{"alg":"EdDSA","kid":"ed"}"#,
            &format!(r#"{{"iss":"{ISSUER}","aud":"{RESOURCE}","exp":{},"exp":{}}}"#, NOW - 100, NOW + 100),
        )),
        // Payloads that are JSON but not an object.
        ("payload array", mint_raw(JwsAlgorithm::EdDsa, r#"{"alg":"EdDSA","kid":"ed"}"#, "[]")),
        ("payload null", mint_raw(JwsAlgorithm::EdDsa, r#"{"alg":"EdDSA","kid":"ed"}"#, "null")),
        ("payload number", mint_raw(JwsAlgorithm::EdDsa, r#"{"alg":"EdDSA","kid":"ed"}"#, "1")),
        ("header array", format!("{}.{}.AA", b64(b"[\"EdDSA\"]"), b64(claims.as_bytes()))),
    ];
    for (name, case) in cases {
        assert_eq!(check(&case).unwrap_err(), TokenError::Malformed, "{name}");
    }
}

fn mint_raw_bytes(header: &[u8], claims: &[u8]) -> String {
    use jwt_compact::{Algorithm as _, AlgorithmSignature as _};
    let input = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(header),
        Base64UrlUnpadded::encode_string(claims)
    );
    let signature = jwt_compact::alg::Ed25519.sign(&testkit::ed25519_key(), input.as_bytes());
    format!(
        "{input}.{}",
        Base64UrlUnpadded::encode_string(signature.as_bytes().as_ref())
    )
}

/// `kid` is only ever compared with the key set's kids: a path, control
/// characters or a very long value find no key and go nowhere else.
#[test]
fn hostile_kids_find_no_key() {
    let claims = good_claims().to_string();
    for kid in [
        "../../../etc/passwd".to_owned(),
        "https://evil.example/jwks.json".to_owned(),
        "ed\u{0}".to_owned(),
        "ed\r\nX-Injected: 1".to_owned(),
        "\u{202e}de".to_owned(),
        "e".repeat(6000),
    ] {
        let header = json!({"alg": "EdDSA", "kid": kid}).to_string();
        let token = mint_raw(JwsAlgorithm::EdDsa, &header, &claims);
        assert_eq!(
            check(&token).unwrap_err(),
            TokenError::UnknownKey,
            "{}",
            kid.escape_debug()
        );
    }
    // A kid of the wrong JSON type is malformed.
    let token = mint_raw(JwsAlgorithm::EdDsa, r#"{"alg":"EdDSA","kid":7}"#, &claims);
    assert_eq!(check(&token).unwrap_err(), TokenError::Malformed);
}

/// serde reads a JSON array into a struct positionally: a signed array whose
/// elements line up with the claims must not pass for a claims set, nor an
/// array for a header.
#[test]
fn arrays_never_pass_for_headers_or_claims() {
    let claims = json!([ISSUER, "user-1", RESOURCE, NOW + 300]).to_string();
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"ed"}"#,
        &claims,
    );
    assert_eq!(check(&token).unwrap_err(), TokenError::Malformed);
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"["EdDSA","ed"]"#,
        &good_claims().to_string(),
    );
    assert_eq!(check(&token).unwrap_err(), TokenError::Malformed);
}

/// What `Words` replaced: serde's untagged enums for `aud` and `scp`.
#[derive(Deserialize, Debug, PartialEq)]
#[serde(untagged)]
enum UntaggedWords {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct WithUntagged {
    #[serde(default)]
    aud: Option<UntaggedWords>,
}

#[derive(Deserialize)]
struct WithWords {
    #[serde(default)]
    aud: Option<Words>,
}

/// JSON values of every kind, and near misses of a string list.
const WORDS_SAMPLES: [&str; 24] = [
    "null",
    "true",
    "0",
    "-1",
    "1.5",
    r#""""#,
    r#""https://mcp.example.com/mcp""#,
    r#""a b\tc""#,
    r#""esc\u00e9\"""#,
    "[]",
    "[null]",
    r#"["a"]"#,
    r#"["a", "b c", "a"]"#,
    r#"["a", 1]"#,
    r#"[1, "a"]"#,
    r#"["a", null]"#,
    r#"["a", ["b"]]"#,
    r#"[["a"]]"#,
    r#"["a", {}]"#,
    "{}",
    r#"{"a": "b"}"#,
    r#"["a" "b"]"#,
    r#"["a",]"#,
    r#"[""#,
];

#[test]
fn audience_and_scope_lists_are_read_as_the_untagged_enum_read_them() {
    for sample in WORDS_SAMPLES {
        for json in [
            format!(r#"{{"aud": {sample}}}"#),
            format!(r#"{{"aud": {sample}, "x": 1}}"#),
            format!(r#"{{"aud": "first", "aud": {sample}}}"#),
        ] {
            let untagged = serde_json::from_str::<WithUntagged>(&json).map(|c| c.aud);
            let words = serde_json::from_str::<WithWords>(&json).map(|c| {
                c.aud.map(|words| match words {
                    Words::One(word) => UntaggedWords::One(word),
                    Words::Many(words) => UntaggedWords::Many(words),
                })
            });
            assert_eq!(words.is_ok(), untagged.is_ok(), "{json}");
            assert_eq!(words.ok(), untagged.ok(), "{json}");
        }
    }
}
