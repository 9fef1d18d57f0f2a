//! Rate limits through the scripted driver: when each kind of rule counts,
//! what a refusal looks like, and that nothing over a limit reaches the
//! origin.

use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::flow::script::{Run, Script};
use crate::testkit::{config, good_claims, jwks_json, mint, with, NOW};

const JWKS: &str = "https://auth.example.com/jwks";
const CALL_VOID: &str =
    r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"void","arguments":{}}}"#;
const CALL_LOOKUP: &str =
    r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#;

fn gate(rules: serde_json::Value) -> Rc<Gate> {
    let rules = rules.to_string();
    Rc::new(Gate::new(Ok(config(&[("RATE_LIMITS", &rules)])), [7; 32]))
}

/// A script whose bindings `RL_*` allow `limit` counts per key.
fn script(limits: &[(&str, u32)]) -> Script {
    let mut script = Script::default();
    script.serve(JWKS, &jwks_json());
    for (binding, limit) in limits {
        script.limits.insert((*binding).to_owned(), *limit);
    }
    script
}

fn post(token: &str, body: &str, address: &str) -> (Request, Vec<u8>) {
    let request = Request {
        method: "POST".into(),
        path: "/mcp".into(),
        query: None,
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".into()),
            ("cf-connecting-ip".into(), address.into()),
        ],
        base: None,
    };
    (request, body.as_bytes().to_vec())
}

fn run(gate: &Rc<Gate>, script: &mut Script, token: &str, body: &str, address: &str) -> Run {
    let (request, body) = post(token, body, address);
    script.body = Ok(body);
    script.run(gate, request, NOW)
}

fn token_of(sub: &str) -> String {
    mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({ "sub": sub })),
    )
}

fn limited(run: &Run, reason: &str) -> serde_json::Value {
    assert_eq!(run.decision.reason, reason);
    assert!(run.forwarded.is_none(), "forwarded over a limit");
    serde_json::from_slice(&run.body).expect("JSON body")
}

fn header<'r>(run: &'r Run, name: &str) -> Option<&'r str> {
    run.response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_subject_over_its_limit_gets_429_and_another_subject_does_not() {
    let gate = gate(json!([{"binding": "RL_USER", "key": "subject", "period": 10}]));
    let mut script = script(&[("RL_USER", 2)]);
    let (alice, bob) = (token_of("alice"), token_of("bob"));
    for _ in 0..2 {
        assert!(run(&gate, &mut script, &alice, CALL_LOOKUP, "192.0.2.1")
            .forwarded
            .is_some());
    }
    let over = run(&gate, &mut script, &alice, CALL_LOOKUP, "192.0.2.1");
    assert_eq!(over.response.status, 429);
    assert_eq!(header(&over, "retry-after"), Some("10"));
    let body = limited(&over, "rate_limited");
    // A POST is answered with a JSON-RPC error for its request.
    assert_eq!(body["id"], 8);
    assert_eq!(body["error"]["code"], -32029);
    assert!(over
        .response
        .log
        .contains(r#""rate_rule":"RL_USER:subject""#));
    assert!(run(&gate, &mut script, &bob, CALL_LOOKUP, "192.0.2.1")
        .forwarded
        .is_some());
}

#[test]
fn a_tool_limit_leaves_other_tools_alone_and_a_batch_counts_each_message() {
    let gate = gate(
        json!([{"binding": "RL_VOID", "key": "subject+tool", "tools": ["void"], "name": "void per user"}]),
    );
    let mut script = script(&[("RL_VOID", 2)]);
    let alice = token_of("alice");
    let batch = format!("[{CALL_VOID},{CALL_VOID}]");
    let run_batch = run(&gate, &mut script, &alice, &batch, "192.0.2.1");
    assert!(run_batch.forwarded.is_some());
    let over = run(&gate, &mut script, &alice, CALL_VOID, "192.0.2.1");
    assert_eq!(over.response.status, 429);
    limited(&over, "rate_limited");
    assert!(over.response.log.contains(r#""rate_rule":"void per user""#));
    for _ in 0..3 {
        assert!(run(&gate, &mut script, &alice, CALL_LOOKUP, "192.0.2.1")
            .forwarded
            .is_some());
    }
}

#[test]
fn identity_rules_count_only_authorized_requests() {
    let gate = gate(json!([{"binding": "RL_USER", "key": "subject"}]));
    let mut script = script(&[("RL_USER", 1)]);
    let expired = mint(
        JwsAlgorithm::EdDsa,
        &with(
            &good_claims(),
            json!({ "sub": "alice", "exp": NOW - 3600, "iat": NOW - 4000 }),
        ),
    );
    for _ in 0..3 {
        let refused = run(&gate, &mut script, &expired, CALL_LOOKUP, "192.0.2.1");
        assert_eq!(refused.response.status, 401);
    }
    assert!(script.counted.is_empty(), "a refused request was counted");
    assert!(run(
        &gate,
        &mut script,
        &token_of("alice"),
        CALL_LOOKUP,
        "192.0.2.1"
    )
    .forwarded
    .is_some());
}

#[test]
fn the_address_rule_counts_before_the_signature_check_and_never_a_verified_token() {
    let gate = gate(json!([{"binding": "RL_IP", "key": "address"}]));
    let mut script = script(&[("RL_IP", 2)]);
    let good = token_of("alice");
    // The first use of a token counts once, before its check.
    assert!(run(&gate, &mut script, &good, CALL_LOOKUP, "192.0.2.1")
        .forwarded
        .is_some());
    let forged = |n: u32| {
        let token = token_of(&format!("mallory-{n}"));
        let (head, _) = token.rsplit_once('.').unwrap();
        format!("{head}.AAAA{}", "A".repeat(82))
    };
    assert_eq!(
        run(&gate, &mut script, &forged(1), CALL_LOOKUP, "192.0.2.1")
            .response
            .status,
        401
    );
    let checks_before = script.checks();
    let over = run(&gate, &mut script, &forged(2), CALL_LOOKUP, "192.0.2.1");
    assert_eq!(over.response.status, 429);
    limited(&over, "rate_limited");
    assert_eq!(
        script.checks(),
        checks_before,
        "a signature check over the limit"
    );
    // The verified token is in the cache: it is not counted, and passes.
    assert!(run(&gate, &mut script, &good, CALL_LOOKUP, "192.0.2.1")
        .forwarded
        .is_some());
    // Another address is not limited.
    assert_eq!(
        run(&gate, &mut script, &forged(3), CALL_LOOKUP, "192.0.2.9")
            .response
            .status,
        401
    );
    // No address (not behind Cloudflare): nothing to count by.
    let (mut request, body) = post(&forged(4), CALL_LOOKUP, "");
    request.headers.pop();
    script.body = Ok(body);
    assert_eq!(script.run(&gate, request, NOW).response.status, 401);
}

#[test]
fn a_failing_binding_lets_the_request_through_unless_its_rule_refuses() {
    let gate = gate(json!([
        {"binding": "RL_DOWN", "key": "subject"},
        {"binding": "RL_STRICT", "key": "client", "on_error": "refuse"}
    ]));
    // RL_DOWN is not in the script's limits: its counts fail.
    let mut script = script(&[("RL_STRICT", 100)]);
    let passed = run(
        &gate,
        &mut script,
        &token_of("alice"),
        CALL_LOOKUP,
        "192.0.2.1",
    );
    assert!(passed.forwarded.is_some());
    assert!(passed
        .response
        .log
        .contains(r#""rate_limit_errors":["RL_DOWN:subject"]"#));
    script.limits.remove("RL_STRICT");
    let refused = run(
        &gate,
        &mut script,
        &token_of("alice"),
        CALL_LOOKUP,
        "192.0.2.1",
    );
    assert_eq!(refused.response.status, 503);
    assert_eq!(header(&refused, "retry-after"), Some("30"));
    limited(&refused, "rate_limit_unavailable");
}

#[test]
fn a_get_is_counted_once_and_answered_in_plain_json() {
    let gate = gate(json!([{"binding": "RL_USER", "key": "subject"}]));
    let mut script = script(&[("RL_USER", 1)]);
    let token = token_of("alice");
    let get = |token: &str| Request {
        method: "GET".into(),
        path: "/mcp".into(),
        query: None,
        headers: vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("accept".into(), "text/event-stream".into()),
        ],
        base: None,
    };
    assert!(script.run(&gate, get(&token), NOW).forwarded.is_some());
    let over = script.run(&gate, get(&token), NOW);
    assert_eq!(over.response.status, 429);
    assert_eq!(limited(&over, "rate_limited")["error"], "rate_limited");
}

#[test]
fn a_rule_naming_an_unbound_binding_refuses_every_request_with_the_problem_named() {
    let error = crate::config::Config::parse(&crate::testkit::MapBindings(
        [
            ("MCP_RESOURCE", "https://mcp.example.com/mcp"),
            ("MCP_ORIGIN", "http://origin.internal/mcp"),
            ("OAUTH_ISSUER", "https://auth.example.com"),
            ("RATE_LIMITS", r#"[{"binding":"MISSING","key":"subject"}]"#),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect(),
    ))
    .unwrap_err();
    assert!(error
        .to_string()
        .contains("RATE_LIMITS: rule 1: binding \"MISSING\" is not a Rate Limiting binding"));
}
