//! DPoP (RFC 9449) through the scripted driver: the schemes each policy
//! takes, the proof checked on every request (a cached token included), the
//! replay stores, nonces, and that nothing refused reaches the origin.

use std::rc::Rc;

use serde_json::{json, Value};

use super::*;
use crate::flow::script::{Run, Script};
use crate::testkit::{config, dpop_proof, good_claims, jkt, jwks_json, mint, with, NOW};

const JWKS: &str = "https://auth.example.com/jwks";
const URL: &str = "https://mcp.example.com/mcp";
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#;
const NONCE_SECRET: &str = "a-nonce-secret-of-thirty-two-characters!";

fn gate(extra: &[(&str, &str)]) -> Rc<Gate> {
    Rc::new(Gate::new(Ok(config(extra)), [7; 32]))
}

fn script() -> Script {
    let mut script = Script::default();
    script.serve(JWKS, &jwks_json());
    script.body = Ok(CALL.as_bytes().to_vec());
    script
}

/// A token bound to the ES256 test key (the proofs' key unless said).
fn bound_token() -> String {
    let claims = with(
        &good_claims(),
        json!({"cnf": {"jkt": jkt(JwsAlgorithm::Es256)}}),
    );
    mint(JwsAlgorithm::EdDsa, &claims)
}

fn unbound_token() -> String {
    mint(JwsAlgorithm::EdDsa, &good_claims())
}

fn proof(token: &str, claims: Value) -> String {
    dpop_proof(
        JwsAlgorithm::Es256,
        ("POST", URL, token, NOW),
        json!({}),
        claims,
    )
}

fn post(scheme: &str, token: &str, proofs: &[&str]) -> Request {
    let mut headers = vec![
        ("authorization".to_owned(), format!("{scheme} {token}")),
        ("content-type".to_owned(), "application/json".to_owned()),
    ];
    for proof in proofs {
        headers.push(("DPoP".to_owned(), (*proof).to_owned()));
    }
    Request {
        method: "POST".into(),
        path: "/mcp".into(),
        query: None,
        headers,
        base: Some("https://mcp.example.com".into()),
    }
}

fn header<'r>(run: &'r Run, name: &str) -> Option<&'r str> {
    run.response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Refused with `status` and `reason`, the origin untouched.
fn refused(run: &Run, status: u16, reason: &str) {
    assert_eq!(run.response.status, status, "{}", run.response.log);
    assert_eq!(run.decision.reason, reason);
    assert!(
        run.forwarded.is_none(),
        "a refused request reached the origin"
    );
}

fn verifies(script: &Script) -> usize {
    script
        .needs
        .iter()
        .filter(|need| matches!(need, Need::Verify(_)))
        .count()
}

#[test]
fn a_bound_token_with_its_proof_passes_and_the_origin_sees_neither() {
    let gate = gate(&[("DPOP", "dpop")]);
    let mut script = script();
    let token = bound_token();
    let run = script.run(
        &gate,
        post("DPoP", &token, &[&proof(&token, json!({}))]),
        NOW,
    );
    assert_eq!(run.response.status, 200, "{}", run.response.log);
    assert_eq!(run.decision.reason, "authorized");
    let (forwarded, _) = run.forwarded.as_ref().expect("forwarded");
    for (name, value) in &forwarded.headers {
        assert!(
            !name.eq_ignore_ascii_case("dpop"),
            "the proof was forwarded"
        );
        assert!(!value.contains(&token), "the token was forwarded in {name}");
    }
    // The token's signature, then the proof's.
    assert_eq!(verifies(&script), 2);
    // No nonces configured: none given.
    assert_eq!(header(&run, "dpop-nonce"), None);
}

#[test]
fn a_cached_token_is_still_proved_on_every_request_and_a_proof_is_used_once() {
    let gate = gate(&[("DPOP", "dpop")]);
    let mut script = script();
    let token = bound_token();
    let first = proof(&token, json!({"jti": "one"}));
    assert!(script
        .run(&gate, post("DPoP", &token, &[&first]), NOW)
        .forwarded
        .is_some());
    // The token comes from the cache; the proof's signature is checked again.
    script.needs.clear();
    let second = proof(&token, json!({"jti": "two"}));
    assert!(script
        .run(&gate, post("DPoP", &token, &[&second]), NOW)
        .forwarded
        .is_some());
    assert_eq!(verifies(&script), 1);
    // The same proof again: a replay, whatever the cache holds.
    let replay = script.run(&gate, post("DPoP", &token, &[&second]), NOW + 1);
    refused(&replay, 401, "dpop_replayed");
    let challenge = header(&replay, "www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"invalid_dpop_proof\""),
        "{challenge}"
    );
    // A cached token whose proof is forged is refused too.
    let (head, _) = second.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    let forged = script.run(&gate, post("DPoP", &token, &[&forged]), NOW);
    refused(&forged, 401, "dpop_bad_signature");
}

#[test]
fn each_scheme_is_taken_only_where_the_policy_says() {
    let bound = bound_token();
    let unbound = unbound_token();
    let cases: [(&str, &str, &str, bool, u16, &str); 9] = [
        // policy, scheme, token, with a proof, status, reason
        ("dpop", "Bearer", &bound, false, 401, "dpop_required"),
        ("dpop", "Bearer", &unbound, false, 401, "dpop_required"),
        ("dpop", "DPoP", &unbound, true, 401, "dpop_token_not_bound"),
        (
            "either",
            "Bearer",
            &bound,
            false,
            401,
            "dpop_bound_token_as_bearer",
        ),
        ("either", "Bearer", &unbound, false, 200, "authorized"),
        ("either", "DPoP", &bound, true, 200, "authorized"),
        (
            "bearer",
            "Bearer",
            &bound,
            false,
            401,
            "sender_constrained_token",
        ),
        ("bearer", "Bearer", &unbound, false, 200, "authorized"),
        // A route taking bearer tokens only does not know the scheme.
        ("bearer", "DPoP", &bound, true, 401, "no_credentials"),
    ];
    for (policy, scheme, token, with_proof, status, reason) in cases {
        let gate = gate(&[("DPOP", policy)]);
        let proof = proof(token, json!({}));
        let proofs: &[&str] = if with_proof { &[&proof] } else { &[] };
        let run = script().run(&gate, post(scheme, token, proofs), NOW);
        assert_eq!(
            (run.response.status, run.decision.reason),
            (status, reason),
            "{policy} {scheme}"
        );
        assert_eq!(run.forwarded.is_some(), status == 200, "{policy} {scheme}");
    }
}

#[test]
fn proofs_that_do_not_fit_the_request_or_the_token_are_refused() {
    let gate = gate(&[("DPOP", "either")]);
    let token = bound_token();
    let good = proof(&token, json!({}));
    let ed = dpop_proof(
        JwsAlgorithm::EdDsa,
        ("POST", URL, &token, NOW),
        json!({}),
        json!({}),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "dpop_proof_missing"),
        (vec![&good, &good], "dpop_proof_repeated"),
        // Another key than the token's `cnf.jkt`.
        (vec![&ed], "dpop_jkt_mismatch"),
    ];
    for (proofs, reason) in cases {
        let run = script().run(&gate, post("DPoP", &token, &proofs), NOW);
        refused(&run, 401, reason);
        let challenge = header(&run, "www-authenticate").unwrap();
        // Under `either`, both schemes are offered; the error is the proof's.
        assert!(
            challenge.starts_with("Bearer resource_metadata="),
            "{challenge}"
        );
        assert!(
            challenge.contains(", DPoP error=\"invalid_dpop_proof\""),
            "{challenge}"
        );
        assert!(
            challenge.ends_with("algs=\"ES256 EdDSA RS256 PS256\""),
            "{challenge}"
        );
    }
    // A proof for another request: the method, the URL.
    let get = proof(&token, json!({"htm": "GET"}));
    refused(
        &script().run(&gate, post("DPoP", &token, &[&get]), NOW),
        401,
        "dpop_htm_mismatch",
    );
    let elsewhere = proof(&token, json!({"htu": "https://mcp.example.com/other"}));
    let run = script().run(&gate, post("DPoP", &token, &[&elsewhere]), NOW);
    refused(&run, 401, "dpop_htu_mismatch");
}

#[test]
fn the_durable_object_store_catches_a_replay_another_isolate_would_miss() {
    let extra = [("DPOP", "dpop"), ("DPOP_REPLAY_STORE", "DO_REPLAY")];
    let mut script = script();
    script
        .claimed
        .insert("DO_REPLAY".into(), Default::default());
    let token = bound_token();
    let value = proof(&token, json!({}));
    let first = script.run(&gate(&extra), post("DPoP", &token, &[&value]), NOW);
    assert_eq!(first.response.status, 200, "{}", first.response.log);
    let claims: Vec<&Need> = script
        .needs
        .iter()
        .filter(|need| matches!(need, Need::ClaimProof { .. }))
        .collect();
    assert!(matches!(
        claims[..],
        [Need::ClaimProof { binding, expires_at, .. }] if binding == "DO_REPLAY" && *expires_at == NOW + 300
    ));
    // A new isolate (empty memory): the store still knows the proof.
    let replay = script.run(&gate(&extra), post("DPoP", &token, &[&value]), NOW + 2);
    refused(&replay, 401, "dpop_replayed");
    // The store fails: whether it is a replay cannot be told.
    script.claimed.clear();
    let fresh = proof(&token, json!({"jti": "fresh"}));
    let failed = script.run(&gate(&extra), post("DPoP", &token, &[&fresh]), NOW);
    refused(&failed, 503, "dpop_replay_unavailable");
    assert_eq!(header(&failed, "retry-after"), Some("30"));
}

#[test]
fn nonces_make_a_round_trip_and_every_answer_carries_a_fresh_one() {
    let gate = gate(&[("DPOP", "dpop"), ("DPOP_NONCE_SECRET", NONCE_SECRET)]);
    let token = bound_token();
    let without = script().run(
        &gate,
        post("DPoP", &token, &[&proof(&token, json!({}))]),
        NOW,
    );
    refused(&without, 401, "dpop_nonce_missing");
    let challenge = header(&without, "www-authenticate").unwrap();
    assert!(
        challenge.starts_with("DPoP error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let nonce = header(&without, "dpop-nonce").expect("a nonce").to_owned();
    let with_nonce = proof(&token, json!({ "nonce": nonce }));
    let run = script().run(&gate, post("DPoP", &token, &[&with_nonce]), NOW + 5);
    assert_eq!(run.response.status, 200, "{}", run.response.log);
    assert!(header(&run, "dpop-nonce").is_some_and(|next| next != nonce));
    // Past its lifetime, a nonce is stale.
    let late = proof(
        &token,
        json!({ "nonce": nonce, "iat": NOW + 301, "jti": "late" }),
    );
    let stale = script().run(&gate, post("DPoP", &token, &[&late]), NOW + 301);
    refused(&stale, 401, "dpop_nonce_stale");
    assert!(header(&stale, "dpop-nonce").is_some());
}

#[test]
fn challenges_and_metadata_name_the_schemes_and_algorithms() {
    for (policy, starts, required) in [
        ("dpop", "DPoP resource_metadata=", true),
        ("either", "Bearer resource_metadata=", false),
    ] {
        let gate = gate(&[("DPOP", policy), ("DPOP_ALGORITHMS", "ES256 EdDSA")]);
        let mut request = post("Basic", "x", &[]);
        request.headers.retain(|(name, _)| name != "authorization");
        let run = script().run(&gate, request, NOW);
        refused(&run, 401, "no_credentials");
        let challenge = header(&run, "www-authenticate").unwrap();
        assert!(challenge.starts_with(starts), "{challenge}");
        assert!(challenge.ends_with("algs=\"ES256 EdDSA\""), "{challenge}");
        assert!(!challenge.contains("error="), "{challenge}");
        let metadata = Request {
            method: "GET".into(),
            path: "/.well-known/oauth-protected-resource/mcp".into(),
            ..Request::default()
        };
        let run = script().run(&gate, metadata, NOW);
        let document: Value = serde_json::from_slice(&run.body).unwrap();
        assert_eq!(
            document["dpop_signing_alg_values_supported"],
            json!(["ES256", "EdDSA"])
        );
        assert_eq!(
            document.get("dpop_bound_access_tokens_required"),
            required.then_some(&json!(true))
        );
    }
    // A bearer route says nothing of DPoP.
    let gate = gate(&[]);
    let metadata = Request {
        method: "GET".into(),
        path: "/.well-known/oauth-protected-resource/mcp".into(),
        ..Request::default()
    };
    let document: Value = serde_json::from_slice(&script().run(&gate, metadata, NOW).body).unwrap();
    assert!(document.get("dpop_signing_alg_values_supported").is_none());
}

#[test]
fn an_introspected_token_is_bound_by_its_cnf() {
    const INTROSPECT: &str = "https://auth.example.com/introspect";
    let gate = gate(&[
        ("DPOP", "dpop"),
        ("OAUTH_TOKEN_FORMAT", "opaque"),
        ("OAUTH_INTROSPECTION_URI", INTROSPECT),
        ("OAUTH_INTROSPECTION_CLIENT_ID", "gate"),
        ("OAUTH_INTROSPECTION_CLIENT_SECRET", "gate-secret"),
    ]);
    let answer = |jkt: &str| {
        json!({
            "active": true, "iss": "https://auth.example.com", "aud": URL, "sub": "user-1",
            "scope": "mcp:read mcp:write", "exp": NOW + 300, "cnf": {"jkt": jkt},
        })
        .to_string()
    };
    let mut script = script();
    script.serve(INTROSPECT, &answer(&jkt(JwsAlgorithm::Es256)));
    let token = "opaque-token-1";
    let run = script.run(&gate, post("DPoP", token, &[&proof(token, json!({}))]), NOW);
    assert_eq!(run.response.status, 200, "{}", run.response.log);
    let mut script = self::script();
    script.serve(INTROSPECT, &answer(&jkt(JwsAlgorithm::EdDsa)));
    let token = "opaque-token-2";
    let run = script.run(&gate, post("DPoP", token, &[&proof(token, json!({}))]), NOW);
    refused(&run, 401, "dpop_jkt_mismatch");
}

#[test]
fn dpop_configuration_problems_are_named() {
    use crate::config::binding::*;
    let problems = |extra: &[(&str, &str)]| -> Vec<&'static str> {
        let mut vars: std::collections::HashMap<String, String> = [
            ("MCP_RESOURCE", URL),
            ("MCP_ORIGIN", "http://origin.internal:8080/mcp"),
            ("OAUTH_ISSUER", "https://auth.example.com"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (name, value) in extra {
            vars.insert((*name).to_owned(), (*value).to_owned());
        }
        match Config::parse(&crate::testkit::MapBindings(vars)) {
            Ok(_) => Vec::new(),
            Err(error) => error.problems.iter().map(|p| p.binding).collect(),
        }
    };
    assert_eq!(problems(&[("DPOP", "mandatory")]), [DPOP]);
    assert_eq!(
        problems(&[("DPOP", "dpop"), ("DPOP_REPLAY_STORE", "KV_CACHE")]),
        [DPOP_REPLAY_STORE]
    );
    assert_eq!(
        problems(&[("DPOP", "dpop"), ("DPOP_NONCE_SECRET", "short")]),
        [DPOP_NONCE_SECRET]
    );
    assert_eq!(
        problems(&[("DPOP", "dpop"), ("DPOP_ALGORITHMS", "HS256")]),
        [DPOP_ALGORITHMS, DPOP_ALGORITHMS]
    );
    assert_eq!(
        problems(&[("DPOP_IAT_WINDOW_SECONDS", "5")]),
        [DPOP_IAT_WINDOW_SECONDS]
    );
    let routes = json!([{"resource": URL, "origin": "http://origin.internal:8080/mcp", "dpop": "sometimes"}]);
    assert_eq!(
        problems(&[
            ("MCP_ROUTES", &routes.to_string()),
            ("MCP_RESOURCE", ""),
            ("MCP_ORIGIN", "")
        ]),
        [MCP_ROUTES]
    );
    // A route's own policy overrides DPOP; memory only is a warning.
    let routes = json!([
        {"resource": URL, "origin": "http://origin.internal:8080/mcp", "dpop": "dpop"},
        {"resource": "https://mcp.example.com/other", "origin": "http://origin.internal:8080/other"},
    ]);
    let config = config(&[
        ("MCP_ROUTES", &routes.to_string()),
        ("MCP_RESOURCE", ""),
        ("MCP_ORIGIN", ""),
        ("DPOP", "either"),
    ]);
    let policies: Vec<_> = config.routes.iter().map(|route| route.dpop).collect();
    assert_eq!(
        policies,
        [
            crate::verify::dpop::DpopPolicy::Required,
            crate::verify::dpop::DpopPolicy::Either
        ]
    );
    assert!(config.warnings.iter().any(|w| w.starts_with(
        "DPOP_REPLAY_STORE: DPoP proofs are remembered in each isolate's memory only"
    )));
}
