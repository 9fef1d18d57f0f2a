//! The decision, run through the request machine and its scripted driver
//! ([`crate::flow::script`]): routes, credentials, tokens, scopes and
//! bodies, as the edge decides them.

use std::cell::Cell;
use std::rc::Rc;

use serde_json::json;

use super::*;
use crate::flow::machine::{Gate, Request};
use crate::flow::script::Script;
use crate::forward::reply::Denial;
use crate::io::FetchError;
use crate::parse::bearer::BearerError;
use crate::testkit::{config, good_claims, jwks_json, mint, mint_raw, with, NOW};
use crate::verify::introspect_cache::IntrospectionMemory;
use crate::verify::jwk::{JwsAlgorithm, KeySet};
use crate::verify::jwt::TokenError;
use crate::verify::keys::KeyMemory;
use crate::verify::token_cache::{TokenKey, VerifiedTokens};

/// The issuers' JWKS endpoints the test configurations name.
const JWKS_URLS: [&str; 2] = [
    "https://auth.example.com/jwks",
    "https://partner.example.com/jwks",
];

/// Whether the issuers serve their key sets, and how often they were asked.
struct FakeKeys {
    available: bool,
    /// Key set fetches.
    current: Cell<usize>,
}

impl FakeKeys {
    fn up() -> Self {
        FakeKeys {
            available: true,
            current: Cell::new(0),
        }
    }
    fn down() -> Self {
        FakeKeys {
            available: false,
            ..Self::up()
        }
    }

    /// A script serving the key sets (or failing), with a JSON-RPC body
    /// every route may receive.
    fn script(&self) -> Script {
        let mut script = Script::default();
        for url in JWKS_URLS {
            if self.available {
                script.serve(url, &jwks_json());
            } else {
                script
                    .documents
                    .insert(url.to_owned(), Err(FetchError::Network));
            }
        }
        script.body = Ok(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#.to_vec());
        script
    }

    fn count(&self, script: &Script) {
        let fetched: usize = JWKS_URLS.iter().map(|url| script.fetches(url)).sum();
        self.current.set(self.current.get() + fetched);
    }
}

fn request<'a>(
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [(String, String)],
) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        query,
        headers,
    }
}

fn owned(req: &RequestHead<'_>) -> Request {
    Request {
        method: req.method.to_owned(),
        path: req.path.to_owned(),
        query: req.query.map(str::to_owned),
        headers: req.headers.to_vec(),
        base: Some("https://mcp.example.com".to_owned()),
    }
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".to_owned(), format!("Bearer {token}"))]
}

/// A gate with cold caches that remembers no verified token.
fn cold_gate(config: &Config) -> Rc<Gate> {
    Rc::new(Gate {
        config: Ok(config.clone()),
        keys: Rc::new(KeyMemory::default()),
        introspection: IntrospectionMemory::default(),
        tokens: VerifiedTokens::with_capacity(0),
        tool_schemas: Rc::default(),
        jtis: crate::forward::assertion::JtiSource::new([7; 32]),
        replays: Default::default(),
    })
}

/// Runs `req` on `gate` at `now`; the decision as the log records it.
fn run_on(gate: &Rc<Gate>, req: &RequestHead<'_>, keys: &FakeKeys, now: i64) -> Decision {
    let mut script = keys.script();
    let run = script.run(gate, owned(req), now);
    keys.count(&script);
    run.decision
}

fn run(config: &Config, req: &RequestHead<'_>, keys: &FakeKeys) -> Decision {
    run_on(&cold_gate(config), req, keys, NOW)
}

fn reply(decision: &Decision) -> &Reply {
    match &decision.outcome {
        Outcome::Reply(reply) => reply,
        Outcome::Forward(forward) => panic!("unexpected forward to {}", forward.url),
        Outcome::Undecided => panic!("undecided: {}", decision.reason),
    }
}

const METADATA_URL: &str = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp";

#[test]
fn serves_metadata_at_both_well_known_paths() {
    let config = config(&[
        ("MCP_SCOPES_SUPPORTED", "mcp:read mcp:write"),
        ("MCP_RESOURCE_NAME", "Invoices"),
    ]);
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let decision = run(&config, &request("GET", path, None, &[]), &FakeKeys::up());
        let reply = reply(&decision);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
        assert!(reply.header("cache-control").unwrap().contains("max-age="));
        let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            body,
            json!({
                "resource": "https://mcp.example.com/mcp",
                "authorization_servers": ["https://auth.example.com"],
                "scopes_supported": ["mcp:read", "mcp:write"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Invoices",
            })
        );
        assert_eq!(decision.verdict(), Verdict::Serve);
    }
    let preflight = run(
        &config,
        &request("OPTIONS", crate::config::ROOT_METADATA_PATH, None, &[]),
        &FakeKeys::up(),
    );
    assert_eq!(reply(&preflight).status, 204);
    let post = run(
        &config,
        &request("POST", crate::config::ROOT_METADATA_PATH, None, &[]),
        &FakeKeys::up(),
    );
    assert_eq!(reply(&post).status, 405);
}

#[test]
fn unknown_paths_and_tricks_are_not_found() {
    let config = config(&[]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let headers = bearer(&token);
    for path in [
        "/",
        "/mcpx",
        "/other",
        "/.well-known/oauth-protected-resource/../mcp",
        "/mcp/%2e%2e/admin",
        "/mcp/..%2Fadmin",
        "/mcp/./x",
        "/.well-known/openid-configuration",
    ] {
        let decision = run(
            &config,
            &request("POST", path, None, &headers),
            &FakeKeys::up(),
        );
        assert_eq!(reply(&decision).status, 404, "{path}");
    }
}

#[test]
fn unsupported_methods_are_refused_before_credentials() {
    let keys = FakeKeys::up();
    let decision = run(&config(&[]), &request("PUT", "/mcp", None, &[]), &keys);
    assert_eq!(reply(&decision).status, 405);
    assert_eq!(reply(&decision).header("allow"), Some("GET, POST, DELETE"));
    assert_eq!(keys.current.get(), 0);
}

#[test]
fn missing_token_gets_the_discovery_challenge() {
    let config = config(&[("MCP_REQUIRED_SCOPES", "mcp:read")]);
    for headers in [
        vec![],
        vec![("authorization".to_owned(), "Basic dTpw".to_owned())],
    ] {
        let decision = run(
            &config,
            &request("POST", "/mcp", None, &headers),
            &FakeKeys::up(),
        );
        let reply = reply(&decision);
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.header("www-authenticate").unwrap(),
            format!(r#"Bearer scope="mcp:read", resource_metadata="{METADATA_URL}""#)
        );
        assert_eq!(decision.reason, "no_credentials");
    }
    let no_scopes = run(
        &crate::testkit::config(&[]),
        &request("GET", "/mcp", None, &[]),
        &FakeKeys::up(),
    );
    assert_eq!(
        reply(&no_scopes).header("www-authenticate").unwrap(),
        format!(r#"Bearer resource_metadata="{METADATA_URL}""#)
    );
}

#[test]
fn malformed_requests_get_invalid_request() {
    let config = config(&[]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    type Case<'a> = (Vec<(String, String)>, Option<&'a str>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (vec![], Some("access_token=abc"), "token_in_query"),
        (bearer(&token), Some("access_token=abc"), "token_in_query"),
        (
            vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            None,
            "form_encoded_body",
        ),
        (
            vec![(
                "authorization".into(),
                format!("Bearer {}", "a".repeat(9000)),
            )],
            None,
            "authorization_header_too_large",
        ),
        (
            vec![("authorization".into(), "Bearer a b".into())],
            None,
            "malformed_bearer_credentials",
        ),
    ];
    let keys = FakeKeys::up();
    for (headers, query, reason) in cases {
        let decision = run(&config, &request("POST", "/mcp", query, &headers), &keys);
        let reply = reply(&decision);
        assert_eq!(reply.status, 400, "{reason}");
        assert_eq!(decision.reason, reason);
        assert!(reply
            .header("www-authenticate")
            .unwrap()
            .starts_with(r#"Bearer error="invalid_request""#));
    }
    assert_eq!(
        keys.current.get(),
        0,
        "no keys are needed to refuse a malformed request"
    );
    let _ = BearerError::TokenInQuery;
}

#[test]
fn invalid_tokens_get_invalid_token() {
    let config = config(&[]);
    let cases = [
        ("not-a-jwt".to_owned(), "token_malformed"),
        (
            mint(
                JwsAlgorithm::EdDsa,
                &with(&good_claims(), json!({"exp": NOW - 3600})),
            ),
            "token_expired",
        ),
        (
            mint(
                JwsAlgorithm::EdDsa,
                &with(&good_claims(), json!({"nbf": NOW + 3600})),
            ),
            "token_not_yet_valid",
        ),
        (
            mint(
                JwsAlgorithm::EdDsa,
                &with(&good_claims(), json!({"iss": "https://evil.example"})),
            ),
            "untrusted_issuer",
        ),
        (
            mint(
                JwsAlgorithm::EdDsa,
                &with(&good_claims(), json!({"aud": "https://other.example/mcp"})),
            ),
            "audience_mismatch",
        ),
        (
            mint(JwsAlgorithm::Rs512, &good_claims()),
            "algorithm_not_allowed",
        ),
        (
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"gone"}"#,
                &good_claims().to_string(),
            ),
            "unknown_key",
        ),
    ];
    for (token, reason) in cases {
        let decision = run(
            &config,
            &request("POST", "/mcp", None, &bearer(&token)),
            &FakeKeys::up(),
        );
        let reply = reply(&decision);
        assert_eq!(reply.status, 401, "{reason}");
        assert_eq!(decision.reason, reason);
        assert_eq!(
            reply.header("www-authenticate").unwrap(),
            format!(
                r#"Bearer error="invalid_token", error_description="The access token is invalid", resource_metadata="{METADATA_URL}""#
            )
        );
        assert!(
            !reply.body.contains(reason),
            "the wire message stays generic"
        );
    }
}

#[test]
fn unknown_kid_triggers_one_refresh() {
    let token = mint_raw(
        JwsAlgorithm::EdDsa,
        r#"{"alg":"EdDSA","kid":"new"}"#,
        &good_claims().to_string(),
    );
    let req_headers = bearer(&token);
    let req = request("POST", "/mcp", None, &req_headers);
    // A set this request fetched itself is as fresh as it gets: no second fetch.
    let keys = FakeKeys::up();
    assert_eq!(run(&config(&[]), &req, &keys).reason, "unknown_key");
    assert_eq!(keys.current.get(), 1);
    // A set held from before (past the cooldown) is fetched again, once.
    let gate = cold_gate(&config(&[]));
    let good = bearer(&mint(JwsAlgorithm::EdDsa, &good_claims()));
    run_on(
        &gate,
        &request("GET", "/mcp", None, &good),
        &keys,
        NOW - 100,
    );
    let keys = FakeKeys::up();
    assert_eq!(run_on(&gate, &req, &keys, NOW).reason, "unknown_key");
    assert_eq!(keys.current.get(), 1);
}

#[test]
fn missing_scope_gets_insufficient_scope_with_every_required_scope() {
    let config = config(&[("MCP_REQUIRED_SCOPES", "mcp:read mcp:admin")]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let decision = run(
        &config,
        &request("GET", "/mcp", None, &bearer(&token)),
        &FakeKeys::up(),
    );
    let reply = reply(&decision);
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        format!(
            r#"Bearer error="insufficient_scope", error_description="The access token lacks a required scope", scope="mcp:read mcp:admin", resource_metadata="{METADATA_URL}""#
        )
    );
    assert_eq!(
        decision.token.as_ref().unwrap().subject.as_deref(),
        Some("user-1")
    );
}

#[test]
fn unavailable_keys_are_503_not_401() {
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let decision = run(
        &config(&[]),
        &request("POST", "/mcp", None, &bearer(&token)),
        &FakeKeys::down(),
    );
    let reply = reply(&decision);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("30"));
    assert!(reply.header("www-authenticate").is_none());
}

#[test]
fn authorized_requests_are_forwarded_without_the_client_token() {
    let config = config(&[
        ("MCP_REQUIRED_SCOPES", "mcp:read"),
        ("ORIGIN_AUTHORIZATION", "Bearer origin-credential"),
    ]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let mut headers = bearer(&token);
    headers.push(("X-Auth-Subject".into(), "admin".into()));
    headers.push(("Mcp-Session-Id".into(), "abc".into()));
    let decision = run(
        &config,
        &request("POST", "/mcp/sub", Some("x=1"), &headers),
        &FakeKeys::up(),
    );
    let Outcome::Forward(forward) = &decision.outcome else {
        panic!("not forwarded: {:?}", decision.reason)
    };
    assert_eq!(forward.url, "http://origin.internal:8080/mcp/sub?x=1");
    assert!(!format!("{forward:?}").contains(&token));
    let get = |name: &str| {
        forward
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("authorization"), Some("Bearer origin-credential"));
    assert_eq!(get("x-auth-subject"), Some("user-1"));
    assert_eq!(get("x-auth-client-id"), Some("client-1"));
    assert_eq!(get("x-auth-scopes"), Some("mcp:read mcp:write"));
    assert_eq!(get("mcp-session-id"), Some("abc"));
    assert_eq!(decision.verdict(), Verdict::Allow);
}

fn verified(config: &Config, headers: &[(String, String)]) -> AccessToken {
    let decision = run(
        config,
        &request("POST", "/mcp", None, headers),
        &FakeKeys::up(),
    );
    assert!(
        matches!(decision.outcome, Outcome::Forward(_)),
        "{}",
        decision.reason
    );
    decision.token.expect("verified token")
}

fn rpc_config() -> Config {
    config(&[
        ("MCP_REQUIRED_SCOPES", "mcp:read"),
        (
            "MCP_TOOL_SCOPES",
            r#"{"lookup_invoice": "mcp:read", "void_invoice": "invoices:write", "*": "mcp:read"}"#,
        ),
        ("MCP_METHOD_SCOPES", r#"{"resources/read": "files:read"}"#),
    ])
}

fn call(tool: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
}

#[test]
fn post_scopes_are_decided_with_the_body_and_challenge_names_them_all() {
    let config = rpc_config();
    let headers = bearer(&mint(JwsAlgorithm::EdDsa, &good_claims()));
    let token = verified(&config, &headers);
    let req = request("POST", "/mcp", None, &headers);
    let plan = authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        call("lookup_invoice").as_bytes(),
        &Rc::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(plan.audit.tools, ["lookup_invoice"]);
    let (denial, audit) = authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        call("void_invoice").as_bytes(),
        &Rc::default(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        denial,
        Denial::InsufficientScope {
            required: vec!["invoices:write".into(), "mcp:read".into()]
        }
    );
    assert_eq!(audit.unwrap().methods, ["tools/call"]);
    let reply = denial.reply(Some(&config.routes[0]));
    assert_eq!(reply.status, 403);
    assert!(reply
        .header("www-authenticate")
        .unwrap()
        .contains(r#"scope="invoices:write mcp:read""#));
    // A batch with one forbidden message is refused whole.
    let batch = format!("[{}, {}]", call("lookup_invoice"), call("void_invoice"));
    assert!(authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        batch.as_bytes(),
        &Rc::default(),
        NOW
    )
    .is_err());
}

#[test]
fn post_bodies_must_be_json_rpc_and_match_the_routing_headers() {
    let config = rpc_config();
    let mut headers = bearer(&mint(JwsAlgorithm::EdDsa, &good_claims()));
    let token = verified(&config, &headers);
    for body in ["", "not json", "{}", "[]"] {
        let (denial, _) = authorize_rpc(
            &config,
            &config.routes[0],
            &request("POST", "/mcp", None, &headers),
            &token,
            body.as_bytes(),
            &Rc::default(),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(denial, Denial::MalformedRpc(_)), "{body:?}");
        assert_eq!(denial.reply(Some(&config.routes[0])).status, 400);
    }
    headers.push(("Mcp-Method".into(), "tools/call".into()));
    headers.push(("Mcp-Name".into(), "other_tool".into()));
    let req = request("POST", "/mcp", None, &headers);
    let (denial, _) = authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        call("lookup_invoice").as_bytes(),
        &Rc::default(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        denial,
        Denial::HeaderMismatch {
            id: Some(serde_json::Value::from(1))
        }
    );
    let reply = denial.reply(Some(&config.routes[0]));
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (reply.status, &body["error"]["code"], &body["id"]),
        (
            400,
            &serde_json::Value::from(-32020),
            &serde_json::Value::from(1)
        ),
        "the error names the request it refuses"
    );
}

#[test]
fn tools_list_gets_a_filter_only_when_the_policy_can_hide_tools() {
    let list = br#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
    let config = rpc_config();
    let headers = bearer(&mint(JwsAlgorithm::EdDsa, &good_claims()));
    let token = verified(&config, &headers);
    let req = request("POST", "/mcp", None, &headers);
    let filter = authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        list,
        &Rc::default(),
        NOW,
    )
    .unwrap()
    .rewrite
    .and_then(|rewrite| rewrite.tools)
    .unwrap();
    assert_eq!(filter.request_ids, [serde_json::Value::from("l")]);
    let plain = self::config(&[]);
    assert!(authorize_rpc(
        &plain,
        &plain.routes[0],
        &req,
        &token,
        list,
        &Rc::default(),
        NOW
    )
    .unwrap()
    .rewrite
    .and_then(|rewrite| rewrite.tools)
    .is_none());
}

#[test]
fn verified_tokens_are_reused_until_exp_while_their_key_is_held() {
    // Key sets usable for 60 s fresh plus 60 s stale.
    let config = config(&[
        ("JWKS_CACHE_TTL_SECONDS", "60"),
        ("JWKS_MAX_STALE_SECONDS", "60"),
    ]);
    let token = mint(JwsAlgorithm::Es256, &good_claims());
    let headers = bearer(&token);
    let req = request("GET", "/mcp", None, &headers);
    let gate = Rc::new(Gate::new(Ok(config), [7; 32]));
    let keys = FakeKeys::up();
    assert_eq!(run_on(&gate, &req, &keys, NOW).reason, "authorized");
    assert_eq!(gate.tokens.len(), 1);
    let mut script = keys.script();
    script.run(&gate, owned(&req), NOW + 1);
    assert_eq!(script.checks(), 0, "a reused token is not checked again");
    // Keys unavailable once the held set is past its stale age: a cached
    // token is not waved through.
    let decision = run_on(&gate, &req, &FakeKeys::down(), NOW + 200);
    assert_eq!(reply(&decision).status, 503);
    // Past exp: the cached verification no longer counts.
    assert_eq!(
        run_on(&gate, &req, &keys, NOW + 1_000_000).reason,
        "token_expired"
    );
}

#[test]
fn tokens_without_kid_stop_verifying_once_their_key_leaves_the_set() {
    let config = config(&[]);
    let header = json!({"alg": "ES256", "typ": "at+jwt"});
    // Valid for an hour: the set goes stale (600 s) while the token lives.
    let claims = with(&good_claims(), json!({"exp": NOW + 3600}));
    let token = mint_raw(
        JwsAlgorithm::Es256,
        &header.to_string(),
        &claims.to_string(),
    );
    let headers = bearer(&token);
    let req = request("GET", "/mcp", None, &headers);
    let gate = Rc::new(Gate::new(Ok(config), [7; 32]));
    let keys = FakeKeys::up();
    assert_eq!(run_on(&gate, &req, &keys, NOW).reason, "authorized");
    assert_eq!(run_on(&gate, &req, &keys, NOW).reason, "authorized");
    // The issuer withdraws the P-256 key: nothing names it in the token, so a
    // remembered verification could not tell; the token must be checked again.
    let mut document: serde_json::Value = serde_json::from_str(&jwks_json()).unwrap();
    document["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|key| key["kid"] != "ec");
    let mut withdrawn = keys.script();
    withdrawn.serve(JWKS_URLS[0], &document.to_string());
    assert!(KeySet::parse(document.to_string().as_bytes()).is_ok());
    // Past the set's freshness (600 s by default) the withdrawn set is fetched.
    let decision = withdrawn.run(&gate, owned(&req), NOW + 700).decision;
    let decision = match decision.reason {
        // The stale set answered and was refreshed after the answer.
        "authorized" => withdrawn.run(&gate, owned(&req), NOW + 701).decision,
        _ => decision,
    };
    assert_eq!(
        (reply(&decision).status, decision.reason),
        (401, "unknown_key")
    );
}

#[test]
fn a_replayed_bad_signature_costs_one_check() {
    let config = config(&[]);
    let forged = {
        let token = mint(JwsAlgorithm::Es256, &good_claims());
        let (rest, signature) = token.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &signature[1..])
    };
    let headers = bearer(&forged);
    let req = request("GET", "/mcp", None, &headers);
    let gate = Rc::new(Gate::new(Ok(config.clone()), [7; 32]));
    let keys = FakeKeys::up();
    let mut checks = 0;
    for _ in 0..3 {
        let mut script = keys.script();
        let decision = script.run(&gate, owned(&req), NOW).decision;
        assert_eq!(decision.reason, "bad_signature");
        checks += script.checks();
    }
    assert_eq!(checks, 1);
    assert_eq!(
        gate.tokens
            .refusal(&TokenKey::of(&forged, &config.routes[0].check_binding), NOW),
        Some(TokenError::BadSignature)
    );
}

#[test]
fn browser_origins_are_checked_before_anything_else() {
    let config = config(&[("MCP_ALLOWED_ORIGINS", "https://inspector.example.com")]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let mut headers = bearer(&token);
    headers.push(("Origin".into(), "https://evil.example".into()));
    let decision = run(
        &config,
        &request("POST", "/mcp", None, &headers),
        &FakeKeys::up(),
    );
    assert_eq!(
        (reply(&decision).status, decision.reason),
        (403, "origin_not_allowed")
    );

    let allowed = vec![(
        "Origin".to_owned(),
        "https://inspector.example.com".to_owned(),
    )];
    let preflight = run(
        &config,
        &request("OPTIONS", "/mcp", None, &allowed),
        &FakeKeys::up(),
    );
    let answer = reply(&preflight);
    assert_eq!(answer.status, 204);
    assert!(answer
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Authorization"));
    let challenge = run(
        &config,
        &request("GET", "/mcp", None, &allowed),
        &FakeKeys::up(),
    );
    assert_eq!(reply(&challenge).status, 401);
    assert_eq!(
        challenge.cors_origin.as_deref(),
        Some("https://inspector.example.com"),
        "the challenge is readable by the allowed origin"
    );
    // The resource's own origin is always allowed; no Origin (non-browser) is fine.
    let own = vec![("Origin".to_owned(), "https://mcp.example.com".to_owned())];
    assert_eq!(
        reply(&run(
            &config,
            &request("GET", "/mcp", None, &own),
            &FakeKeys::up()
        ))
        .status,
        401
    );
    assert_eq!(
        reply(&run(
            &config,
            &request("GET", "/mcp", None, &[]),
            &FakeKeys::up()
        ))
        .status,
        401
    );
}

/// Three routes on one gate, as an `MCP_ROUTES` operator would write them.
fn routed_config() -> Config {
    let routes = r#"[
        {"resource": "https://mcp.example.com/billing", "origin": "http://billing.internal/mcp",
         "tool_scopes": {"void_invoice": "invoices:write"},
         "origin_authorization_secret": "BILLING_ORIGIN_TOKEN"},
        {"resource": "https://mcp.example.com/tickets", "origin": "http://tickets.internal/mcp",
         "required_scopes": "tickets:read"},
        {"resource": "https://mcp.example.com/docs", "origin": "http://docs.internal/",
         "issuers": ["https://partner.example.com"]}
    ]"#;
    let vars = [
        ("MCP_ROUTES", routes),
        (
            "OAUTH_ISSUER",
            "https://auth.example.com https://partner.example.com",
        ),
        (
            "OAUTH_JWKS_URI",
            "https://auth.example.com/jwks https://partner.example.com/jwks",
        ),
        ("BILLING_ORIGIN_TOKEN", "Bearer billing-origin"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Config::parse(&crate::testkit::MapBindings(vars)).expect("routed configuration parses")
}

fn for_route(path: &str) -> String {
    mint(
        JwsAlgorithm::EdDsa,
        &with(
            &good_claims(),
            json!({"aud": format!("https://mcp.example.com{path}"), "scope": "tickets:read"}),
        ),
    )
}

#[test]
fn each_route_serves_its_own_metadata_and_challenge() {
    let config = routed_config();
    let keys = FakeKeys::up();
    let metadata = run(
        &config,
        &request(
            "GET",
            "/.well-known/oauth-protected-resource/docs",
            None,
            &[],
        ),
        &keys,
    );
    let document: serde_json::Value = serde_json::from_str(&reply(&metadata).body).unwrap();
    assert_eq!(document["resource"], "https://mcp.example.com/docs");
    assert_eq!(
        document["authorization_servers"],
        json!(["https://partner.example.com"])
    );
    assert_eq!(metadata.route, Some(2));
    let root = run(
        &config,
        &request("GET", crate::config::ROOT_METADATA_PATH, None, &[]),
        &keys,
    );
    assert_eq!(reply(&root).status, 404, "several routes: no root document");
    let challenge = run(&config, &request("GET", "/tickets", None, &[]), &keys);
    let header = reply(&challenge).header("www-authenticate").unwrap();
    assert!(header.contains(
        r#"resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/tickets""#
    ));
    assert!(header.contains(r#"scope="tickets:read""#), "{header}");
    for unknown in [
        "/",
        "/mcp",
        "/billingx",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let decision = run(&config, &request("GET", unknown, None, &[]), &keys);
        assert_eq!(reply(&decision).status, 404, "{unknown}");
        assert_eq!(decision.route, None);
    }
}

#[test]
fn a_token_for_one_route_is_refused_at_another_even_when_cached() {
    let config = routed_config();
    let keys = FakeKeys::up();
    let gate = Rc::new(Gate::new(Ok(config.clone()), [7; 32]));
    let billing_token = for_route("/billing");
    let headers = bearer(&billing_token);
    let decide_at = |path: &str| run_on(&gate, &request("GET", path, None, &headers), &keys, NOW);
    for _ in 0..2 {
        let allowed = decide_at("/billing");
        let Outcome::Forward(forward) = &allowed.outcome else {
            panic!("billing refused: {}", allowed.reason);
        };
        assert_eq!(forward.url, "http://billing.internal/mcp");
        assert!(forward
            .headers
            .iter()
            .any(|(n, v)| n == "authorization" && v == "Bearer billing-origin"));
        let replayed = decide_at("/tickets");
        assert_eq!(
            (reply(&replayed).status, replayed.reason),
            (401, "audience_mismatch")
        );
    }
    // The tickets route's own token goes through, to its own origin, without
    // the billing origin's credential.
    let tickets_headers = bearer(&for_route("/tickets"));
    let decision = run(
        &config,
        &request("POST", "/tickets/", None, &tickets_headers),
        &keys,
    );
    let Outcome::Forward(forward) = &decision.outcome else {
        panic!("tickets refused: {}", decision.reason);
    };
    assert_eq!(forward.url, "http://tickets.internal/mcp/");
    assert!(!forward
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v.contains("billing-origin")));
    assert_eq!(decision.route, Some(1));
}

#[test]
fn a_route_accepts_only_its_own_issuers() {
    let config = routed_config();
    let keys = FakeKeys::up();
    let docs = for_route("/docs");
    let decision = run(
        &config,
        &request("GET", "/docs", None, &bearer(&docs)),
        &keys,
    );
    assert_eq!(
        (reply(&decision).status, decision.reason),
        (401, "untrusted_issuer")
    );
    let partner = mint(
        JwsAlgorithm::EdDsa,
        &with(
            &good_claims(),
            json!({"aud": "https://mcp.example.com/docs", "iss": "https://partner.example.com"}),
        ),
    );
    let decision = run(
        &config,
        &request("GET", "/docs", None, &bearer(&partner)),
        &keys,
    );
    assert!(
        matches!(decision.outcome, Outcome::Forward(_)),
        "{}",
        decision.reason
    );
}

#[test]
fn per_route_tool_scopes_apply_only_on_their_route() {
    let config = routed_config();
    let token = crate::verify::jwt::AccessToken {
        issuer: ISSUER_ID.into(),
        subject: Some("u".into()),
        client_id: None,
        scopes: vec!["tickets:read".into()],
        expires_at: NOW + 60,
        not_before: None,
        token_id: None,
        confirmation: None,
    };
    let req = request("POST", "/billing", None, &[]);
    let (denial, _) = authorize_rpc(
        &config,
        &config.routes[0],
        &req,
        &token,
        call("void_invoice").as_bytes(),
        &Rc::default(),
        NOW,
    )
    .unwrap_err();
    assert_eq!(
        denial,
        Denial::InsufficientScope {
            required: vec!["invoices:write".into()]
        }
    );
    let req = request("POST", "/tickets", None, &[]);
    assert!(authorize_rpc(
        &config,
        &config.routes[1],
        &req,
        &token,
        call("void_invoice").as_bytes(),
        &Rc::default(),
        NOW
    )
    .is_ok());
}

const ISSUER_ID: &str = crate::testkit::ISSUER;

fn header(name: &str, value: &str) -> (String, String) {
    (name.to_owned(), value.to_owned())
}

/// The request-level part of the hostile-input catalog (SECURITY.md): each is
/// answered by the gate with its status (`reply` panics on a forward), and
/// refusals before the token need no key.
#[test]
fn hostile_requests_are_refused_and_never_forwarded() {
    let config = config(&[("AUTHORIZATION_MAX_BYTES", "2048")]);
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let flattened =
        json!({"protected": "eyJhbGciOiJFZERTQSJ9", "payload": "e30", "signature": "AA"});
    type Case<'a> = (&'a str, Vec<(String, String)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "two Authorization fields",
            vec![
                header("Authorization", &format!("Bearer {token}")),
                header("authorization", &format!("Bearer {token}")),
            ],
            400,
            "repeated_authorization_header",
        ),
        (
            "Authorization over AUTHORIZATION_MAX_BYTES",
            vec![header(
                "Authorization",
                &format!("Bearer {}", "a".repeat(2042)),
            )],
            400,
            "authorization_header_too_large",
        ),
        (
            "oversized garbage in another scheme",
            vec![header(
                "Authorization",
                &format!("Basic {}", "%".repeat(4000)),
            )],
            400,
            "authorization_header_too_large",
        ),
        (
            "token in a cookie only",
            vec![header("Cookie", &format!("access_token={token}"))],
            401,
            "no_credentials",
        ),
        (
            "token in a form body",
            vec![header("Content-Type", "application/x-www-form-urlencoded")],
            400,
            "form_encoded_body",
        ),
        (
            "JWS JSON serialization",
            vec![header("Authorization", &format!("Bearer {flattened}"))],
            400,
            "malformed_bearer_credentials",
        ),
    ];
    for (name, headers, status, reason) in cases {
        let keys = FakeKeys::up();
        let decision = run(&config, &request("POST", "/mcp", None, &headers), &keys);
        assert_eq!(reply(&decision).status, status, "{name}");
        assert_eq!(decision.reason, reason, "{name}");
        assert_eq!(keys.current.get(), 0, "{name}: no key set needed");
    }
    // At the cap exactly, the token is read.
    let at_cap = format!("Bearer {token}");
    assert!(at_cap.len() < 2048);
    let headers = vec![header("Authorization", &at_cap)];
    let decision = run(
        &config,
        &request("GET", "/mcp", None, &headers),
        &FakeKeys::up(),
    );
    assert!(matches!(decision.outcome, Outcome::Forward(_)));
}

/// The token-level part of the catalog through `decide`, with the new knobs.
#[test]
fn hostile_tokens_get_invalid_token_and_never_reach_the_origin() {
    let strict = config(&[
        ("JWT_REQUIRE_TYP_AT_JWT", "true"),
        ("JWT_MAX_LIFETIME_SECONDS", "3600"),
    ]);
    let claims = good_claims().to_string();
    let token = mint(JwsAlgorithm::EdDsa, &good_claims());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "typ JWT in strict mode",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed","typ":"JWT"}"#,
                &claims,
            ),
            "wrong_token_type",
        ),
        (
            "no typ in strict mode",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed"}"#,
                &claims,
            ),
            "wrong_token_type",
        ),
        (
            "lifetime of a day with a one-hour cap",
            mint(
                JwsAlgorithm::EdDsa,
                &with(&good_claims(), json!({"exp": NOW + 86_400})),
            ),
            "token_lifetime_too_long",
        ),
        (
            "cnf presented as a bearer token",
            mint(
                JwsAlgorithm::EdDsa,
                &with(
                    &good_claims(),
                    json!({"cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}),
                ),
            ),
            "sender_constrained_token",
        ),
        (
            "crit b64:false",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed","typ":"at+jwt","b64":false,"crit":["b64"]}"#,
                &claims,
            ),
            "forbidden_header_parameter",
        ),
        (
            "embedded jwk",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","typ":"at+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#,
                &claims,
            ),
            "forbidden_header_parameter",
        ),
        (
            "jku",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","typ":"at+jwt","jku":"https://evil.example/jwks"}"#,
                &claims,
            ),
            "forbidden_header_parameter",
        ),
        (
            "five-part JWE",
            format!("{token}.AAAA.BBBB"),
            "token_malformed",
        ),
        (
            "signed array for claims",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"ed","typ":"at+jwt"}"#,
                &json!([
                    crate::testkit::ISSUER,
                    "user-1",
                    crate::testkit::RESOURCE,
                    NOW + 300
                ])
                .to_string(),
            ),
            "token_malformed",
        ),
        (
            "kid with a path",
            mint_raw(
                JwsAlgorithm::EdDsa,
                r#"{"alg":"EdDSA","kid":"../../jwks","typ":"at+jwt"}"#,
                &claims,
            ),
            "unknown_key",
        ),
    ];
    for (name, token, reason) in cases {
        let decision = run(
            &strict,
            &request("POST", "/mcp", None, &bearer(&token)),
            &FakeKeys::up(),
        );
        assert_eq!(reply(&decision).status, 401, "{name}");
        assert_eq!(decision.reason, reason, "{name}");
    }
    // The same strict configuration forwards a conforming token.
    let decision = run(
        &strict,
        &request("GET", "/mcp", None, &bearer(&token)),
        &FakeKeys::up(),
    );
    assert!(matches!(decision.outcome, Outcome::Forward(_)));
}

/// RFC 9728 §3.3: the metadata and every challenge are built from
/// configuration. `Host`, `X-Forwarded-Host`, `X-Forwarded-Proto` and
/// `Forwarded` change nothing.
#[test]
fn metadata_and_challenges_ignore_host_headers() {
    let config = config(&[]);
    let spoof = vec![
        header("Host", "evil.example"),
        header("X-Forwarded-Host", "evil.example"),
        header("X-Forwarded-Proto", "http"),
        header("Forwarded", "host=evil.example;proto=http"),
    ];
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        crate::config::ROOT_METADATA_PATH,
    ] {
        let decision = run(
            &config,
            &request("GET", path, None, &spoof),
            &FakeKeys::up(),
        );
        let body = &reply(&decision).body;
        assert!(!body.contains("evil"), "{body}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["resource"], "https://mcp.example.com/mcp");
    }
    let mut with_bad_token = spoof.clone();
    with_bad_token.push(header("Authorization", "Bearer not-a-jwt"));
    for headers in [&spoof, &with_bad_token] {
        let decision = run(
            &config,
            &request("GET", "/mcp", None, headers),
            &FakeKeys::up(),
        );
        let challenge = reply(&decision).header("www-authenticate").unwrap();
        assert!(challenge.contains(&format!(r#"resource_metadata="{METADATA_URL}""#)));
        assert!(!challenge.contains("evil"), "{challenge}");
    }
}
