//! The machine through the scripted driver: one test per need it can name
//! and per refusal, each asserting what reached the origin.

use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::flow::script::{Run, Script, Verdicts};
use crate::forward::origin::OriginFault;
use crate::io::{FetchError, StoreFault};
use crate::testkit::{config, good_claims, jwks_json, mint, mint_raw, with, NOW};

const JWKS: &str = "https://auth.example.com/jwks";
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{}}}"#;

fn gate(extra: &[(&str, &str)]) -> Rc<Gate> {
    Rc::new(Gate::new(Ok(config(extra)), [7; 32]))
}

fn script() -> Script {
    let mut script = Script::default();
    script.serve(JWKS, &jwks_json());
    script.body = Ok(CALL.as_bytes().to_vec());
    script
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: None,
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        base: Some("https://mcp.example.com".to_owned()),
    }
}

fn post(token: &str) -> Request {
    let bearer = format!("Bearer {token}");
    request(
        "POST",
        "/mcp",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
    )
}

fn token() -> String {
    mint(JwsAlgorithm::EdDsa, &good_claims())
}

fn header<'r>(run: &'r Run, name: &str) -> Option<&'r str> {
    run.response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Asserts a refusal: the status, the log reason, nothing forwarded.
fn refused(run: &Run, status: u16, reason: &str) {
    assert_eq!(run.response.status, status, "{:?}", run.decision.reason);
    assert_eq!(run.decision.reason, reason);
    assert!(run.forwarded.is_none(), "forwarded: {:?}", run.forwarded);
    assert!(run
        .response
        .log
        .contains(&format!(r#""reason":"{reason}""#)));
}

#[test]
fn a_good_token_is_forwarded_after_its_key_set_its_check_and_its_body() {
    let gate = gate(&[]);
    let mut script = script();
    let token = token();
    let run = script.run(&gate, post(&token), NOW);
    assert_eq!(run.response.status, 200);
    assert_eq!(run.decision.reason, "authorized");
    let (forward, body) = run.forwarded.as_ref().expect("forwarded");
    assert_eq!(body.as_deref(), Some(CALL.as_bytes()));
    assert!(
        !format!("{forward:?}").contains(&token),
        "the token reached the origin"
    );
    assert_eq!(run.response.body, Body::Origin);
    assert_eq!(run.body, b"{}");
    // The needs, in order: the store's copy of the set, the set, the store
    // write, the check, the body, the forward.
    let kinds: Vec<&str> = script
        .needs
        .iter()
        .map(|need| match need {
            Need::Io(Io::KvGet { .. }) => "kv_get",
            Need::Io(Io::KvPut { .. }) => "kv_put",
            Need::Io(Io::Get { .. }) => "get",
            Need::Io(_) => "io",
            Need::Verify(_) => "verify",
            Need::ReadBody { .. } => "body",
            Need::Forward(_) => "forward",
            Need::ReadOriginBody => "origin_body",
            Need::RateLimit(_) => "rate_limit",
            Need::ClaimProof { .. } => "claim_proof",
        })
        .collect();
    assert_eq!(
        kinds,
        ["kv_get", "get", "kv_put", "verify", "body", "forward"]
    );
    assert!(run
        .response
        .log
        .starts_with(r#"{"event":"request","decision":"allow""#));
    assert!(!run.response.log.contains(&token));
}

#[test]
fn a_reused_token_needs_only_its_body_and_the_forward() {
    let gate = gate(&[]);
    let token = token();
    script().run(&gate, post(&token), NOW);
    let mut again = script();
    let run = again.run(&gate, post(&token), NOW + 1);
    assert_eq!(run.response.status, 200);
    assert_eq!(again.checks(), 0);
    assert_eq!(again.needs.len(), 2, "{:?}", again.needs);
}

#[test]
fn a_bad_signature_is_refused_remembered_and_never_forwarded() {
    let gate = gate(&[]);
    let mut script = script();
    script.verdicts = Verdicts::Fixed(false);
    let token = token();
    let run = script.run(&gate, post(&token), NOW);
    refused(&run, 401, "bad_signature");
    assert!(header(&run, "www-authenticate")
        .unwrap()
        .contains("invalid_token"));
    // Nothing was remembered as verified: a good verdict later still checks.
    let mut honest = crate::flow::script::Script::default();
    honest.serve(JWKS, &jwks_json());
    honest.body = Ok(CALL.as_bytes().to_vec());
    let again = honest.run(&gate, post(&token), NOW + 1);
    refused(&again, 401, "bad_signature");
    assert_eq!(
        honest.checks(),
        0,
        "the refusal is remembered, not re-checked"
    );
}

#[test]
fn no_verified_token_survives_a_bad_verdict() {
    let gate = gate(&[]);
    let token = token();
    let mut bad = script();
    bad.verdicts = Verdicts::Fixed(false);
    bad.run(&gate, post(&token), NOW);
    let key = crate::verify::token_cache::TokenKey::of(
        &token,
        &gate.config.as_ref().unwrap().routes[0].check_binding,
    );
    assert!(gate.tokens.get(&key, NOW, 0).is_none());
}

#[test]
fn no_token_gets_the_discovery_challenge_without_any_io() {
    let gate = gate(&[]);
    let mut script = script();
    let run = script.run(&gate, request("POST", "/mcp", &[]), NOW);
    refused(&run, 401, "no_credentials");
    assert!(script.needs.is_empty());
    assert!(header(&run, "www-authenticate")
        .unwrap()
        .contains("resource_metadata="));
}

#[test]
fn unavailable_keys_are_503() {
    let gate = gate(&[]);
    let mut script = script();
    script
        .documents
        .insert(JWKS.to_owned(), Err(FetchError::Network));
    let run = script.run(&gate, post(&token()), NOW);
    refused(&run, 503, "jwks_fetch_failed");
    assert_eq!(header(&run, "retry-after"), Some("30"));
}

#[test]
fn an_expired_token_is_refused_after_its_check() {
    let gate = gate(&[]);
    let mut script = script();
    let claims = with(
        &good_claims(),
        json!({"exp": NOW - 3600, "iat": NOW - 7200}),
    );
    let run = script.run(&gate, post(&mint(JwsAlgorithm::EdDsa, &claims)), NOW);
    refused(&run, 401, "token_expired");
}

#[test]
fn a_body_past_the_cap_is_413_and_its_declared_length_is_refused_before_reading() {
    let gate = gate(&[("MCP_MAX_BODY_BYTES", "1024")]);
    let mut oversized = script();
    oversized.body = Ok(vec![b' '; 2048]);
    let run = oversized.run(&gate, post(&token()), NOW);
    refused(&run, 413, "body_too_large");
    let mut declared = script();
    let bearer = format!("Bearer {}", token());
    let run = declared.run(
        &gate,
        request(
            "POST",
            "/mcp",
            &[("authorization", &bearer), ("content-length", "4096")],
        ),
        NOW + 1,
    );
    refused(&run, 413, "body_too_large");
    assert!(!declared
        .needs
        .iter()
        .any(|need| matches!(need, Need::ReadBody { .. })));
}

#[test]
fn an_unreadable_body_is_refused() {
    let gate = gate(&[]);
    let mut script = script();
    script.body = Err(BodyError::Unreadable);
    let run = script.run(&gate, post(&token()), NOW);
    refused(&run, 400, "body_not_json");
}

#[test]
fn a_missing_tool_scope_is_403_with_the_scope_named() {
    let gate = gate(&[("MCP_TOOL_SCOPES", r#"{"lookup":["invoices:read"]}"#)]);
    let mut script = script();
    let run = script.run(&gate, post(&token()), NOW);
    refused(&run, 403, "insufficient_scope");
    assert!(header(&run, "www-authenticate")
        .unwrap()
        .contains(r#"scope="invoices:read""#));
    assert!(run.response.log.contains(r#""tools":["lookup"]"#));
}

#[test]
fn a_session_of_another_subject_is_refused_after_its_owner_is_read() {
    let gate = gate(&[]);
    let mut first = script();
    first.origin = Ok((200, vec![("mcp-session-id".into(), "s-1".into())]));
    let run = first.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.status, 200);
    assert_eq!(
        first
            .kv
            .keys()
            .filter(|k| k.starts_with("session:"))
            .count(),
        1
    );
    // Another subject presents the session.
    let other = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"sub": "user-2"})),
    );
    let mut second = script();
    second.kv = first.kv.clone();
    let bearer = format!("Bearer {other}");
    let run = second.run(
        &gate,
        request(
            "POST",
            "/mcp",
            &[("authorization", &bearer), ("mcp-session-id", "s-1")],
        ),
        NOW + 1,
    );
    refused(&run, 404, "foreign_session");
}

#[test]
fn an_origin_without_an_answer_head_is_502_or_504_by_its_fault() {
    let gate = gate(&[]);
    for (fault, status, reason) in [
        (OriginFault::Unreachable, 502, "origin_unreachable"),
        (OriginFault::ConnectTimeout, 504, "origin_connect_timeout"),
        (OriginFault::FirstByteTimeout, 504, "origin_timeout"),
    ] {
        let mut script = script();
        script.origin = Err(fault);
        let run = script.run(&gate, post(&token()), NOW);
        assert_eq!(run.response.status, status);
        assert_eq!(run.decision.reason, reason);
        assert!(run
            .response
            .log
            .contains(&format!(r#""reason":"{reason}""#)));
    }
}

#[test]
fn the_origin_timeouts_default_and_are_bound_into_the_forward() {
    let run = script().run(&gate(&[]), post(&token()), NOW);
    let (forward, _) = run.forwarded.expect("forwarded");
    assert_eq!(forward.connect_timeout_ms, 5_000);
    assert_eq!(forward.first_byte_timeout_ms, 60_000);
    let bound = gate(&[
        ("ORIGIN_CONNECT_TIMEOUT_MS", "250"),
        ("ORIGIN_FIRST_BYTE_TIMEOUT_MS", "1500"),
    ]);
    let (forward, _) = script().run(&bound, post(&token()), NOW).forwarded.unwrap();
    assert_eq!(
        (forward.connect_timeout_ms, forward.first_byte_timeout_ms),
        (250, 1500)
    );
}

#[test]
fn cache_store_faults_are_logged_and_the_request_goes_on() {
    let gate = gate(&[]);
    let mut script = script();
    script.kv_faults = vec![
        (String::new(), StoreFault::ReadTimedOut),
        (String::new(), StoreFault::WriteLimited),
    ];
    let run = script.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.status, 200);
    assert!(run.forwarded.is_some());
    assert!(
        run.response
            .log
            .contains(r#""store_faults":["kv_read_timeout","kv_write_limited"]"#),
        "{}",
        run.response.log
    );
}

#[test]
fn a_session_whose_owner_cannot_be_read_is_refused_503_not_forwarded() {
    let gate = gate(&[]);
    for fault in [StoreFault::ReadFailed, StoreFault::ReadTimedOut] {
        let mut script = script();
        script.kv_faults = vec![("session:".into(), fault)];
        let bearer = format!("Bearer {}", token());
        let run = script.run(
            &gate,
            request(
                "POST",
                "/mcp",
                &[("authorization", &bearer), ("mcp-session-id", "s-1")],
            ),
            NOW,
        );
        refused(&run, 503, "session_store_unavailable");
        assert_eq!(header(&run, "retry-after"), Some("5"));
        assert!(run.response.log.contains(fault.reason()));
    }
}

#[test]
fn a_session_whose_owner_cannot_be_stored_is_withheld_from_the_client() {
    let gate = gate(&[]);
    for fault in [
        StoreFault::ReadFailed,
        StoreFault::WriteFailed,
        StoreFault::WriteTimedOut,
        StoreFault::WriteLimited,
    ] {
        let mut script = script();
        script.origin = Ok((200, vec![("mcp-session-id".into(), "s-1".into())]));
        script.kv_faults = vec![("session:".into(), fault)];
        let run = script.run(&gate, post(&token()), NOW);
        // The origin answered; the client is told to retry instead of being
        // given a session no owner guards.
        assert!(run.forwarded.is_some());
        assert_eq!(run.response.status, 503, "{fault:?}");
        assert_eq!(run.decision.reason, "session_store_unavailable");
        assert_eq!(header(&run, "mcp-session-id"), None);
        assert_eq!(header(&run, "retry-after"), Some("5"));
        assert!(!script.kv.keys().any(|k| k.starts_with("session:")));
    }
}

#[test]
fn an_event_stream_ends_when_its_token_stops_being_accepted() {
    let gate = gate(&[("JWT_LEEWAY_SECONDS", "30")]);
    let mut sse = script();
    sse.origin = Ok((
        200,
        vec![(
            "content-type".into(),
            "Text/Event-Stream; charset=utf-8".into(),
        )],
    ));
    let run = sse.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.body, Body::Origin);
    assert_eq!(run.response.ends_at, Some(NOW + 300 + 30), "exp + leeway");
    // A JSON answer ends by itself; the gate's own answers too.
    let run = script().run(&gate, post(&token()), NOW + 1);
    assert_eq!(run.response.ends_at, None);
    let run = script().run(&gate, request("POST", "/mcp", &[]), NOW);
    assert_eq!((run.response.status, run.response.ends_at), (401, None));
}

#[test]
fn a_filtered_tools_list_hides_tools_in_json_and_in_sse() {
    let gate = gate(&[("MCP_TOOL_SCOPES", r#"{"void":["invoices:write"]}"#)]);
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let answer =
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"lookup"},{"name":"void"}]}}"#;
    let mut json = script();
    json.body = Ok(list.as_bytes().to_vec());
    json.origin_body = answer.as_bytes().to_vec();
    let run = json.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.status, 200);
    let text = String::from_utf8(run.body.clone()).unwrap();
    assert!(text.contains("lookup") && !text.contains("void"), "{text}");
    let mut sse = script();
    sse.body = Ok(list.as_bytes().to_vec());
    sse.origin = Ok((
        200,
        vec![("content-type".into(), "text/event-stream".into())],
    ));
    sse.origin_body = format!("event: message\ndata: {answer}\n\n").into_bytes();
    let run = sse.run(&gate, post(&token()), NOW + 1);
    assert_eq!(run.response.body, Body::OriginFiltered);
    let text = String::from_utf8(run.body.clone()).unwrap();
    assert!(text.contains("lookup") && !text.contains("void"), "{text}");
}

/// MCP 2026-07-28 multi round-trip requests: the origin's `requestState`
/// reaches the client sealed to its user and call (JSON and SSE); a retry
/// from another user is refused and never forwarded; the owner's retry
/// reaches the origin with the origin's own state.
#[test]
fn a_request_state_is_sealed_to_its_user_and_opened_for_them_only() {
    let gate = gate(&[("MCP_STATE_SECRET", "0123456789abcdef0123456789abcdef")]);
    let modern = |token: &str| {
        let mut request = post(token);
        for (name, value) in [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "lookup"),
        ] {
            request.headers.push((name.into(), value.into()));
        }
        request
    };
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let paused = r#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{},"requestState":"origin-state"}}"#;
    let mut first = script();
    first.body = Ok(call.as_bytes().to_vec());
    first.origin_body = paused.as_bytes().to_vec();
    let run = first.run(&gate, modern(&token()), NOW);
    assert_eq!(run.response.status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&run.body).unwrap();
    let sealed = answer["result"]["requestState"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        sealed.starts_with("pc1.") && sealed.ends_with(".origin-state"),
        "{sealed}"
    );

    let mut sse = script();
    sse.body = Ok(call.as_bytes().to_vec());
    sse.origin = Ok((
        200,
        vec![("content-type".into(), "text/event-stream".into())],
    ));
    sse.origin_body = format!("event: message\ndata: {paused}\n\n").into_bytes();
    let run = sse.run(&gate, modern(&token()), NOW);
    assert_eq!(run.response.body, Body::OriginFiltered);
    let text = String::from_utf8(run.body.clone()).unwrap();
    assert!(text.contains(r#""requestState":"pc1."#), "{text}");
    // A 2025 client's answers carry no state: streamed as they come.
    let mut legacy = script();
    legacy.origin_body = paused.as_bytes().to_vec();
    let run = legacy.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.body, Body::Origin);

    let retry = call.replace(
        r#""arguments":{}"#,
        &format!(r#""arguments":{{}},"requestState":"{sealed}""#),
    );
    let mut someone_else = script();
    someone_else.body = Ok(retry.clone().into_bytes());
    let other = mint(
        JwsAlgorithm::EdDsa,
        &with(&good_claims(), json!({"sub": "user-2", "jti": "t-2"})),
    );
    let run = someone_else.run(&gate, modern(&other), NOW + 5);
    refused(&run, 400, "request_state_foreign");
    let reply: serde_json::Value = serde_json::from_slice(&run.body).unwrap();
    assert_eq!(
        (reply["id"].clone(), reply["error"]["code"].clone()),
        (json!(1), json!(-32602))
    );

    let mut owner = script();
    owner.body = Ok(retry.into_bytes());
    let run = owner.run(&gate, modern(&token()), NOW + 5);
    let (_, body) = run.forwarded.as_ref().expect("forwarded");
    let forwarded: serde_json::Value = serde_json::from_slice(body.as_deref().unwrap()).unwrap();
    assert_eq!(forwarded["params"]["requestState"], "origin-state");
    // An answer without a state passes as the origin gave it, unparsed.
    assert_eq!(run.body, b"{}");
}

/// MCP 2026-07-28 §Custom Headers: a tool's `x-mcp-header` marks, learned
/// from the `tools/list` answer the gate passed on, decide which argument
/// each `Mcp-Param-*` must mirror; an earlier revision's call needs none.
#[test]
fn param_headers_are_checked_by_the_schema_the_gate_saw_listed() {
    let gate = gate(&[]);
    let headers = |method: &str, extra: &[(&str, &str)]| {
        let mut request = post(&token());
        request
            .headers
            .push(("mcp-protocol-version".into(), "2026-07-28".into()));
        request.headers.push(("mcp-method".into(), method.into()));
        for (name, value) in extra {
            request.headers.push(((*name).into(), (*value).into()));
        }
        request
    };
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    let mut list = script();
    list.body = Ok(format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{meta}}}}}"#
    )
    .into_bytes());
    list.origin_body = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"lookup","inputSchema":{"type":"object","properties":{"region":{"type":"string","x-mcp-header":"Region"},"city":{"type":"string"}}}}]}}"#.to_vec();
    let run = list.run(&gate, headers("tools/list", &[]), NOW);
    assert_eq!(run.response.status, 200);
    assert_eq!(run.body, list.origin_body, "passed on unchanged");

    let call = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"lookup","arguments":{{"region":"eu","city":"us"}},{meta}}}}}"#
    );
    let attempt = |extra: &[(&str, &str)]| {
        let mut script = script();
        script.body = Ok(call.clone().into_bytes());
        let mut all = vec![("mcp-name", "lookup")];
        all.extend_from_slice(extra);
        script.run(&gate, headers("tools/call", &all), NOW + 1)
    };
    refused(
        &attempt(&[("mcp-param-region", "us")]),
        400,
        "mcp_header_mismatch",
    );
    refused(&attempt(&[]), 400, "mcp_header_mismatch");
    assert!(attempt(&[("Mcp-Param-Region", "eu")]).forwarded.is_some());
    // A 2025 client mirrors nothing, and is not asked to.
    let mut legacy = script();
    legacy.body = Ok(call.replace(meta, r#""_meta":{}"#).into_bytes());
    assert!(legacy
        .run(&gate, post(&token()), NOW + 1)
        .forwarded
        .is_some());
}

#[test]
fn a_kid_unknown_to_a_fetched_set_is_not_fetched_again() {
    let gate = gate(&[]);
    let mut script = script();
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"new"}"#,
        &good_claims().to_string(),
    );
    let run = script.run(&gate, post(&token), NOW);
    refused(&run, 401, "unknown_key");
    assert_eq!(script.fetches(JWKS), 1);
}

#[test]
fn a_misconfigured_gate_refuses_everything_with_500() {
    let error = crate::config::Config::parse(&crate::testkit::MapBindings(Default::default()))
        .expect_err("an empty configuration is refused");
    let gate = Rc::new(Gate::new(Err(error), [7; 32]));
    let mut script = script();
    let run = script.run(&gate, post(&token()), NOW);
    refused(&run, 500, "misconfigured");
    assert!(script.needs.is_empty());
}

#[test]
fn a_confused_driver_never_gets_a_forward() {
    // Resumed with answers that fit no need, the machine refuses.
    let gate = gate(&[]);
    let mut flow = Flow::new(Rc::clone(&gate), post(&token()), NOW);
    let mut forwarded = false;
    for _ in 0..50 {
        match flow.step() {
            Step::Need(Need::Forward(_)) => forwarded = true,
            Step::Need(_) => flow.resume(Answer::Verdict(true)),
            Step::Respond(_) => {}
            Step::Done(_) => break,
        }
    }
    assert!(!forwarded);
}

/// The runtime's own URLs take the short path; whatever it accepts, the
/// full parser reads the same path and query, and anything unusual goes to
/// the full parser.
#[test]
fn a_url_in_normal_form_splits_as_the_full_parser_reads_it() {
    let short = [
        "http://127.0.0.1:8787/mcp",
        "https://mcp.example.com/mcp/sub/path",
        "https://mcp.example.com/mcp?",
        "https://mcp.example.com/mcp?a=1&b=two+three&c=%20",
        "https://mcp.example.com//double//slash",
        "https://[::1]:8443/mcp/v1.2/tool~x_y-z",
        "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
    ];
    for url in short {
        let split = normal_form(url).unwrap_or_else(|| panic!("{url}: not in normal form"));
        let parsed = crate::io::parse_url(url).unwrap();
        assert_eq!(
            split,
            (parsed.path().to_owned(), parsed.query().map(str::to_owned)),
            "{url}"
        );
    }
    let full = [
        "https://mcp.example.com/mcp/../admin",
        "https://mcp.example.com/mcp/./x",
        "https://mcp.example.com/mcp/..",
        "https://mcp.example.com/%2e%2e/admin",
        "https://mcp.example.com/a b",
        "https://mcp.example.com/mcp#fragment",
        "https://mcp.example.com/mcp?q=<x>",
        "https://user@mcp.example.com/mcp",
        "https://mcp.example.com",
        "HTTPS://mcp.example.com/mcp",
        "ftp://mcp.example.com/mcp",
        "https:///mcp",
        "https://mcp.example.com\\mcp",
    ];
    for url in full {
        assert_eq!(normal_form(url), None, "{url}");
    }
    // Dot segments are resolved by the full parser, never routed raw.
    let request =
        Request::from_url("GET", "https://mcp.example.com/mcp/../admin", Vec::new()).unwrap();
    assert_eq!(request.path, "/admin");
}

/// A driver may give the machine only the origin's fields it decides on
/// (`ORIGIN_FIELDS_DECIDED`) and lay the machine's headers over the rest of
/// the origin's: the client gets the same fields as when the machine saw
/// them all, and it needs the same (session binding, the origin's body), for
/// sessions, CORS, storing and a filtered `tools/list`.
#[test]
fn the_origin_fields_the_machine_decides_on_are_the_only_ones_it_needs() {
    let fields = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    };
    let answers = [
        fields(&[
            ("Content-Type", "application/json"),
            ("Mcp-Session-Id", "s-123"),
            ("Cache-Control", "public, max-age=5"),
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("Vary", "Accept"),
            ("Access-Control-Allow-Origin", "*"),
            ("access-control-expose-headers", "X-Custom"),
            ("X-Custom", "1"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ]),
        fields(&[
            ("content-type", "text/event-stream"),
            ("cache-control", "no-store"),
            ("upgrade", "h2c"),
        ]),
        fields(&[("content-type", "text/plain")]),
    ];
    let list = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    let listed =
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"lookup"},{"name":"void"}]}}"#;
    let extra = [
        ("MCP_TOOL_SCOPES", r#"{"void":["invoices:write"]}"#),
        ("MCP_ALLOWED_ORIGINS", "https://app.example"),
    ];
    let run = |origin: Vec<(String, String)>, body: &str, cors: bool| {
        let gate = gate(&extra);
        let mut script = script();
        script.body = Ok(body.as_bytes().to_vec());
        script.origin = Ok((200, origin));
        script.origin_body = if body == list {
            listed.as_bytes().to_vec()
        } else {
            b"{}".to_vec()
        };
        let mut request = post(&token());
        if cors {
            request
                .headers
                .push(("origin".to_owned(), "https://app.example".to_owned()));
        }
        let response = script.run(&gate, request, NOW).response;
        (response, script.needs)
    };
    let decided = |name: &str| {
        ORIGIN_FIELDS_DECIDED
            .iter()
            .any(|decided| decided.eq_ignore_ascii_case(name))
    };
    let replaced =
        |name: &str| origin_fields_replaced().any(|replaced| replaced.eq_ignore_ascii_case(name));
    let sorted = |mut list: Vec<(String, String)>| {
        for (name, _) in &mut list {
            name.make_ascii_lowercase();
        }
        list.sort();
        list
    };
    for origin in answers {
        for body in [CALL, list] {
            for cors in [false, true] {
                let (whole, whole_needs) = run(origin.clone(), body, cors);
                let subset = origin.iter().filter(|(n, _)| decided(n)).cloned().collect();
                let (part, part_needs) = run(subset, body, cors);
                // The same session binding, the same reads of the origin's body.
                assert_eq!(whole_needs, part_needs);
                assert_eq!(
                    (whole.status, whole.from_origin),
                    (part.status, part.from_origin)
                );
                if !part.from_origin {
                    assert_eq!(whole.headers, part.headers);
                    continue;
                }
                let mut laid: Vec<(String, String)> = origin
                    .iter()
                    .filter(|(n, _)| !replaced(n))
                    .cloned()
                    .collect();
                laid.extend(part.headers);
                assert_eq!(
                    sorted(whole.headers),
                    sorted(laid),
                    "{origin:?} {body} {cors}"
                );
            }
        }
    }
}

/// RFC 8037 appendix A.1: a public example key, never a secret.
const ASSERTION_JWK: &str = r#"{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;

fn asserting_gate() -> Rc<Gate> {
    gate(&[
        ("ASSERTION_KEY", ASSERTION_JWK),
        ("ORIGIN_ASSERTION_AUDIENCE", "https://origin.internal"),
    ])
}

fn decode(part: &str) -> serde_json::Value {
    use base64ct::{Base64UrlUnpadded, Encoding};
    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(part).unwrap()).unwrap()
}

#[test]
fn the_forward_carries_an_assertion_signed_for_the_very_call() {
    use crate::verify::signature::verify_signature;
    use base64ct::{Base64UrlUnpadded, Encoding};
    let gate = asserting_gate();
    let mut script = script();
    script
        .signing_keys
        .insert("ASSERTION_KEY".into(), ASSERTION_JWK.into());
    let token = token();
    let bearer = format!("Bearer {token}");
    // A client's own assertion never reaches the origin.
    let request = request(
        "POST",
        "/mcp",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
            ("Portcullis-Assertion", "forged"),
        ],
    );
    let run = script.run(&gate, request, NOW);
    let (forward, body) = run.forwarded.expect("forwarded");
    let assertions: Vec<&str> = forward
        .headers
        .iter()
        .filter(|(name, _)| name == "portcullis-assertion")
        .map(|(_, value)| value.as_str())
        .collect();
    assert_eq!(assertions.len(), 1);
    let parts: Vec<&str> = assertions[0].split('.').collect();
    let header = decode(parts[0]);
    assert_eq!(header["typ"], "portcullis+jwt");
    let Ok(config) = &gate.config else { panic!() };
    let settings = config.assertion.as_ref().unwrap();
    assert_eq!(header["kid"], settings.signing.kid.as_str());
    let signature = Base64UrlUnpadded::decode_vec(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert!(verify_signature(
        JwsAlgorithm::EdDsa,
        &settings.signing.public,
        input.as_bytes(),
        &signature
    ));
    let claims = decode(parts[1]);
    assert_eq!(claims["aud"], "https://origin.internal");
    assert_eq!(claims["iss"], "https://mcp.example.com");
    assert_eq!(claims["mcp_method"], "tools/call");
    assert_eq!(claims["mcp_name"], "lookup");
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], forward.url.as_str());
    assert_eq!(claims["exp"], NOW + 60);
    use sha2::{Digest, Sha256};
    let hash = Base64UrlUnpadded::encode_string(&Sha256::digest(body.unwrap()));
    assert_eq!(claims["body_sha256"], hash.as_str());
    assert!(!assertions[0].contains(&token));
}

#[test]
fn a_key_webcrypto_cannot_sign_with_refuses_and_forwards_nothing() {
    let gate = asserting_gate();
    // No key in the script: the driver's signing fails.
    let run = script().run(&gate, post(&token()), NOW);
    refused(&run, 500, "assertion_key_unusable");
    assert!(!String::from_utf8_lossy(&run.body).contains("ASSERTION"));
}

#[test]
fn the_jwks_is_served_outside_every_route_and_only_when_keys_are_bound() {
    let run = script().run(
        &asserting_gate(),
        request("GET", "/.well-known/portcullis/jwks.json", &[]),
        NOW,
    );
    assert_eq!(run.response.status, 200);
    assert_eq!(
        header(&run, "content-type"),
        Some("application/jwk-set+json")
    );
    assert_eq!(header(&run, "cache-control"), Some("public, max-age=300"));
    let set: serde_json::Value = serde_json::from_slice(&run.body).unwrap();
    assert_eq!(set["keys"][0]["alg"], "EdDSA");
    assert!(set["keys"][0].get("d").is_none());
    let run = script().run(
        &gate(&[]),
        request("GET", "/.well-known/portcullis/jwks.json", &[]),
        NOW,
    );
    refused(&run, 404, "no_route");
}

/// A flood of distinct tokens, good and forged, cannot grow the isolate's
/// caches past their bounds: each evicts, and the gate goes on answering.
#[test]
fn a_flood_of_distinct_tokens_keeps_every_cache_within_its_bound() {
    use crate::verify::token_cache::DEFAULT_CAPACITY;
    let gate = gate(&[]);
    let mut script = script();
    let flood = DEFAULT_CAPACITY + DEFAULT_CAPACITY / 2;
    for n in 0..flood {
        let claims = with(&good_claims(), json!({ "sub": format!("user-{n}") }));
        let good = mint(JwsAlgorithm::EdDsa, &claims);
        let run = script.run(&gate, post(&good), NOW);
        assert_eq!(run.response.status, 200, "{}", run.decision.reason);
        // The same claims with another token's signature: refused, and
        // remembered as refused.
        let forged = format!("{}.{}", good.rsplit_once('.').unwrap().0, "A".repeat(86));
        let run = script.run(&gate, post(&forged), NOW);
        assert_eq!(run.response.status, 401);
    }
    let sizes = gate.cache_sizes();
    assert!(sizes.verified_tokens <= DEFAULT_CAPACITY, "{sizes:?}");
    assert!(sizes.verified_tokens > DEFAULT_CAPACITY / 2, "{sizes:?}");
    assert!(sizes.refused_tokens <= DEFAULT_CAPACITY, "{sizes:?}");
    assert!(sizes.refused_tokens > 0, "{sizes:?}");
    assert_eq!(sizes.key_sets, 1, "{sizes:?}");
    assert_eq!(sizes.introspection_verdicts, 0);
    // The flood did not evict the gate's judgement: a token from before it
    // still passes, a forged one still fails.
    let run = script.run(&gate, post(&token()), NOW);
    assert_eq!(run.response.status, 200);
}
