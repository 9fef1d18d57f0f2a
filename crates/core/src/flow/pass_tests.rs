use std::collections::HashMap;

use serde_json::json;
use url::Url;

use super::*;
use crate::testkit::{config, good_claims, jwks_json, mint, with, ISSUER, NOW, RESOURCE};
use crate::verify::introspect_cache::NoIntrospection;
use crate::verify::keys::{CacheSettings, KeyDemand, KeySource};
use crate::verify::signature::RustCrypto;

/// Serves the test key set at the configured JWKS URI.
struct JwksServer;

impl HttpClient for JwksServer {
    async fn get(&self, url: &Url, _: FetchLimits) -> Result<FetchedDocument, FetchError> {
        assert_eq!(url.as_str(), "https://auth.example.com/jwks");
        Ok(FetchedDocument {
            status: 200,
            body: jwks_json().into_bytes(),
            ..Default::default()
        })
    }
}

/// A store that holds nothing and keeps nothing.
struct EmptyStore;

impl KvStore for EmptyStore {
    async fn get(&self, _: &str) -> Option<String> {
        None
    }
    async fn put(&self, _: &str, _: &str, _: u64) {}
}

/// Every key ready, none ready, or every key refused.
struct Imported(Option<bool>);

impl ImportedKeys for Imported {
    fn readiness(&self, _: JwsAlgorithm, _: &PublicKey) -> Option<bool> {
        self.0
    }
}

const READY: Imported = Imported(Some(true));

/// What an isolate holds.
struct Isolate {
    config: Config,
    keys: Rc<KeyMemory>,
    introspection: IntrospectionMemory,
    tokens: VerifiedTokens,
}

impl Isolate {
    fn new(config: Config) -> Self {
        Isolate {
            config,
            keys: Rc::new(KeyMemory::default()),
            introspection: IntrospectionMemory::default(),
            tokens: VerifiedTokens::default(),
        }
    }

    /// An isolate that fetched the issuer's key set at `at`.
    fn warm(config: Config, at: i64) -> Self {
        let isolate = Isolate::new(config);
        let cache = isolate.full_path_keys();
        let issuer = isolate.config.issuer(ISSUER).expect("configured issuer");
        pollster::block_on(cache.key_set(issuer, KeyDemand::Current, at)).expect("key set");
        isolate
    }

    fn full_path_keys(&self) -> JwksCache<JwksServer, EmptyStore> {
        JwksCache::new(
            Rc::clone(&self.keys),
            JwksServer,
            EmptyStore,
            CacheSettings::default(),
        )
    }

    fn memory(&self) -> Memory<'_> {
        Memory {
            keys: &self.keys,
            introspection: &self.introspection,
            tokens: &self.tokens,
        }
    }

    fn pass(&self, request: &GateRequest<'_>, answers: &Answers, imported: &Imported) -> Step {
        pass(
            &self.config,
            &self.memory(),
            request,
            answers,
            imported,
            NOW,
        )
    }

    /// Passes as the edge's entry does, answering each step from `store`
    /// (sessions) and `body`, with the native signature backend; the passes
    /// made (named by the step each returned) and the step acted on last.
    fn drive(
        &self,
        request: &GateRequest<'_>,
        store: &HashMap<String, String>,
        body: Option<&[u8]>,
    ) -> (Vec<&'static str>, Step) {
        let mut answers = Answers::default();
        let mut taken = Vec::new();
        loop {
            let step = self.pass(request, &answers, &READY);
            taken.push(name(&step));
            match step {
                Step::Verify { check, then } => {
                    let verdict = pollster::block_on(RustCrypto.verify(
                        check.alg,
                        &check.key,
                        &check.message,
                        &check.signature,
                    ));
                    answers.verdict = Some((check.fingerprint, verdict));
                    match then {
                        AfterVerify::PassAgain => {}
                        AfterVerify::ReadBody => {
                            answers.body = Some(body.expect("a body to read").to_vec());
                        }
                        AfterVerify::ReadSession { key } => {
                            answers.session = Some(store.get(&key).cloned());
                        }
                        AfterVerify::Forward(provisional) if verdict => {
                            let ProvisionalForward {
                                decision,
                                request,
                                remember,
                            } = *provisional;
                            if let Some(remember) = remember {
                                remember.commit(&self.tokens);
                            }
                            return (taken, Step::Forward { decision, request });
                        }
                        AfterVerify::Forward(_) => {}
                    }
                }
                Step::Session { key } => answers.session = Some(store.get(&key).cloned()),
                Step::Body => answers.body = Some(body.expect("a body to read").to_vec()),
                last => return (taken, last),
            }
            assert!(taken.len() < 8, "passes never settle: {taken:?}");
        }
    }
}

fn name(step: &Step) -> &'static str {
    match step {
        Step::Full => "full",
        Step::Forward { .. } => "forward",
        Step::Reply { .. } => "reply",
        Step::Verify { .. } => "verify",
        Step::Session { .. } => "session",
        Step::Body => "body",
        Step::Bind { .. } => "bind",
    }
}

fn request<'a>(method: &'a str, headers: &'a [(String, String)]) -> GateRequest<'a> {
    GateRequest {
        method,
        path: "/mcp",
        query: None,
        headers,
    }
}

fn headers(token: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut list = vec![("authorization".to_owned(), format!("Bearer {token}"))];
    list.extend(
        extra
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    list
}

fn token() -> String {
    mint(JwsAlgorithm::Rs256, &good_claims())
}

fn status(step: &Step) -> u16 {
    match step {
        Step::Reply { status, .. } => *status,
        other => panic!("expected an answer, got {}", name(other)),
    }
}

#[test]
fn a_new_token_is_checked_once_and_every_request_takes_one_pass() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let headers = headers(&token(), &[("accept", "application/json")]);
    let get = request("GET", &headers);

    let (taken, step) = isolate.drive(&get, &HashMap::new(), None);
    assert_eq!(
        taken,
        ["verify"],
        "one pass: the forward waits only for the check"
    );
    let Step::Forward {
        request: sent,
        decision,
    } = step
    else {
        unreachable!()
    };

    // The full path, from the same isolate state, forwards exactly the same.
    let full = pollster::block_on(decide(
        &isolate.config,
        &get,
        &isolate.full_path_keys(),
        &NoIntrospection,
        &RustCrypto,
        &isolate.tokens,
        NOW,
    ));
    assert_eq!(full.outcome, Outcome::Forward(sent.clone()));
    assert_eq!(full.token, decision.token);
    assert!(
        !sent.headers.iter().any(|(name, _)| name == "authorization"),
        "the token is never forwarded"
    );

    // Verified once: the same token now needs no check and no I/O.
    let (taken, _) = isolate.drive(&get, &HashMap::new(), None);
    assert_eq!(taken, ["forward"]);
}

#[test]
fn nothing_decided_before_the_verdict_is_kept_or_sent_unless_the_signature_verifies() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let good = headers(&token(), &[]);
    let get = request("GET", &good);
    let Step::Verify {
        then: AfterVerify::Forward(provisional),
        ..
    } = isolate.pass(&get, &Answers::default(), &READY)
    else {
        panic!("a new token's forward is decided in its first pass");
    };
    assert!(
        isolate.tokens.is_empty(),
        "not remembered before the verdict"
    );
    assert!(provisional.remember.is_some());
    // Without the verdict, the next request with it is checked again.
    assert_eq!(
        name(&isolate.pass(&get, &Answers::default(), &READY)),
        "verify"
    );

    // A forged signature: the forward is never acted on, the next pass refuses.
    let forged = {
        let token = token();
        let (rest, signature) = token.rsplit_once('.').expect("a JWS");
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &signature[1..])
    };
    let forged_headers = headers(&forged, &[]);
    let (taken, step) = isolate.drive(&request("GET", &forged_headers), &HashMap::new(), None);
    assert_eq!(taken, ["verify", "reply"]);
    assert_eq!(status(&step), 401);
    assert!(isolate.tokens.is_empty());

    // A refusal decided before the verdict (expired) is not remembered either:
    // the reason it gives may not be the one the signature would have given.
    let expired = mint(
        JwsAlgorithm::Rs256,
        &with(&good_claims(), json!({"exp": NOW - 3600})),
    );
    let expired_headers = headers(&expired, &[]);
    let expired_get = request("GET", &expired_headers);
    let Step::Verify {
        then: AfterVerify::PassAgain,
        ..
    } = isolate.pass(&expired_get, &Answers::default(), &READY)
    else {
        panic!("a refusal waits for the verdict");
    };
    assert_eq!(
        name(&isolate.pass(&expired_get, &Answers::default(), &READY)),
        "verify"
    );
    let (_, step) = isolate.drive(&expired_get, &HashMap::new(), None);
    let Step::Reply { decision, .. } = step else {
        panic!("refused");
    };
    assert_eq!(decision.reason, "token_expired");
}

#[test]
fn whatever_needs_the_network_or_an_unimported_key_goes_to_the_full_path() {
    let headers = headers(&token(), &[]);
    let get = request("GET", &headers);

    let cold = Isolate::new(config(&[]));
    assert_eq!(name(&cold.pass(&get, &Answers::default(), &READY)), "full");

    let warm = Isolate::warm(config(&[]), NOW);
    assert_eq!(
        name(&warm.pass(&get, &Answers::default(), &Imported(None))),
        "full"
    );

    // A set past its freshness is served stale only by the full path, which
    // then refreshes it.
    let stale = Isolate::warm(config(&[]), NOW - 100_000);
    assert_eq!(name(&stale.pass(&get, &Answers::default(), &READY)), "full");

    // Introspection that is not cached yet is a network call.
    let opaque = Isolate::warm(
        config(&[
            ("OAUTH_TOKEN_FORMAT", "opaque"),
            (
                "OAUTH_INTROSPECTION_URI",
                "https://auth.example.com/introspect",
            ),
            ("OAUTH_INTROSPECTION_CLIENT_ID", "gate"),
            ("OAUTH_INTROSPECTION_CLIENT_SECRET", "secret"),
        ]),
        NOW,
    );
    let opaque_headers = [(
        "authorization".to_owned(),
        "Bearer opaque-token-value".to_owned(),
    )];
    let step = opaque.pass(
        &request("GET", &opaque_headers),
        &Answers::default(),
        &READY,
    );
    assert_eq!(name(&step), "full");
}

#[test]
fn a_verdict_counts_only_for_the_check_it_was_given_for() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let headers = headers(&token(), &[]);
    let get = request("GET", &headers);
    let Step::Verify { check, .. } = isolate.pass(&get, &Answers::default(), &READY) else {
        panic!("a new token is checked first");
    };
    let other = Answers {
        verdict: Some((check.fingerprint ^ 1, true)),
        ..Answers::default()
    };
    assert_eq!(name(&isolate.pass(&get, &other, &READY)), "full");
    assert!(isolate.tokens.is_empty(), "nothing was accepted");

    let refused = Answers {
        verdict: Some((check.fingerprint, false)),
        ..Answers::default()
    };
    let step = isolate.pass(&get, &refused, &READY);
    assert_eq!(status(&step), 401);
    let Step::Reply {
        decision, headers, ..
    } = step
    else {
        unreachable!()
    };
    assert_eq!(decision.reason, "bad_signature");
    assert!(headers
        .iter()
        .any(|(name, value)| name == "www-authenticate" && value.contains("invalid_token")));
    // Remembered as refused: the next pass answers without asking again.
    assert_eq!(
        status(&isolate.pass(&get, &Answers::default(), &READY)),
        401
    );
}

#[test]
fn a_key_the_backend_refused_never_verifies() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let headers = headers(&token(), &[]);
    let step = isolate.pass(
        &request("GET", &headers),
        &Answers::default(),
        &Imported(Some(false)),
    );
    assert_eq!(status(&step), 401);
}

#[test]
fn a_session_is_used_only_by_its_owner() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let headers = headers(&token(), &[("mcp-session-id", "session-1")]);
    let get = request("GET", &headers);
    let key = crate::authorize::sessions::session_key(RESOURCE, "session-1");

    let (taken, _) = isolate.drive(&get, &HashMap::new(), None);
    assert_eq!(
        taken,
        ["verify", "forward"],
        "an unbound session is usable; read while the signature is checked"
    );

    let owner = json!({"iss": ISSUER, "sub": "user-1", "client_id": "client-1"}).to_string();
    let (taken, _) = isolate.drive(&get, &HashMap::from([(key.clone(), owner)]), None);
    assert_eq!(taken, ["session", "forward"]);

    let stranger = json!({"iss": ISSUER, "sub": "user-2", "client_id": "client-1"}).to_string();
    let (_, step) = isolate.drive(&get, &HashMap::from([(key, stranger)]), None);
    assert_eq!(status(&step), 404);

    let bad = headers_with_session("bad id");
    let (_, step) = isolate.drive(&request("GET", &bad), &HashMap::new(), None);
    assert_eq!(status(&step), 404);
}

fn headers_with_session(id: &str) -> Vec<(String, String)> {
    headers(&token(), &[("mcp-session-id", id)])
}

#[test]
fn a_post_body_is_read_within_its_limit_and_authorized() {
    let isolate = Isolate::warm(
        config(&[
            ("MCP_TOOL_SCOPES", r#"{"void_invoice": "invoices:write"}"#),
            ("MCP_MAX_BODY_BYTES", "1024"),
        ]),
        NOW,
    );
    let call = |tool: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
    };
    let post = |body: &str| {
        let length = body.len().to_string();
        let headers = headers(
            &token(),
            &[
                ("content-type", "application/json"),
                ("content-length", &length),
            ],
        );
        let step = isolate.drive(
            &request("POST", &headers),
            &HashMap::new(),
            Some(body.as_bytes()),
        );
        (step.0, step.1)
    };

    let (taken, step) = post(&call("lookup_invoice"));
    assert_eq!(
        taken,
        ["verify", "forward"],
        "body read while the signature is checked"
    );
    let Step::Forward { decision, .. } = step else {
        unreachable!()
    };
    assert_eq!(decision.audit.expect("audited").tools, ["lookup_invoice"]);

    let (_, step) = post(&call("void_invoice"));
    assert_eq!(status(&step), 403, "the token lacks invoices:write");

    let (_, step) = post(r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#);
    assert_eq!(
        name(&step),
        "full",
        "tools/list answers are filtered by the full path"
    );

    let too_long = headers(&token(), &[("content-length", "4096")]);
    let (_, step) = isolate.drive(&request("POST", &too_long), &HashMap::new(), None);
    assert_eq!(status(&step), 413, "refused before the body is read");

    let unknown_length = headers(&token(), &[]);
    let (_, step) = isolate.drive(&request("POST", &unknown_length), &HashMap::new(), None);
    assert_eq!(name(&step), "full", "read, bounded, by the full path");

    let lying = headers(&token(), &[("content-length", "10")]);
    let (_, step) = isolate.drive(
        &request("POST", &lying),
        &HashMap::new(),
        Some(&[b' '; 2000]),
    );
    assert_eq!(
        status(&step),
        413,
        "the body read counts, not what was declared"
    );
}

#[test]
fn an_unreachable_origin_is_a_502_and_an_issued_session_is_bound_to_the_token() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let headers = headers(&token(), &[]);
    let get = request("GET", &headers);
    let (_, forward) = isolate.drive(&get, &HashMap::new(), None);
    assert_eq!(name(&forward), "forward");

    let failed = Answers {
        origin_failed: true,
        ..Answers::default()
    };
    let step = isolate.pass(&get, &failed, &READY);
    assert_eq!(status(&step), 502);

    let issued = Answers {
        origin_session: Some("session-9".to_owned()),
        ..Answers::default()
    };
    let Step::Bind {
        record: Some(record),
    } = isolate.pass(&get, &issued, &READY)
    else {
        panic!("a valid session id is bound");
    };
    assert_eq!(
        record.key,
        crate::authorize::sessions::session_key(RESOURCE, "session-9")
    );
    let owner: serde_json::Value = serde_json::from_str(&record.owner).unwrap();
    assert_eq!(
        owner,
        json!({"iss": ISSUER, "sub": "user-1", "client_id": "client-1"})
    );

    let odd = Answers {
        origin_session: Some("no spaces allowed".to_owned()),
        ..Answers::default()
    };
    assert!(matches!(
        isolate.pass(&get, &odd, &READY),
        Step::Bind { record: None }
    ));
}

#[test]
fn answers_to_allowed_browser_origins_carry_cors_headers() {
    let isolate = Isolate::warm(
        config(&[("MCP_ALLOWED_ORIGINS", "https://inspector.example.com")]),
        NOW,
    );
    let browser = [(
        "origin".to_owned(),
        "https://inspector.example.com".to_owned(),
    )];
    let Step::Reply {
        status, headers, ..
    } = isolate.pass(&request("GET", &browser), &Answers::default(), &READY)
    else {
        panic!("no token: an answer");
    };
    assert_eq!(status, 401);
    let allowed = headers
        .iter()
        .filter(|(name, _)| name == "access-control-allow-origin")
        .map(|(_, value)| value.as_str())
        .collect::<Vec<_>>();
    assert_eq!(allowed, ["https://inspector.example.com"]);
}

#[test]
fn a_cached_token_past_its_expiry_is_checked_again_and_refused() {
    let isolate = Isolate::warm(config(&[]), NOW);
    let short = mint(
        JwsAlgorithm::Rs256,
        &with(&good_claims(), json!({"exp": NOW + 1})),
    );
    let headers = headers(&short, &[]);
    let get = request("GET", &headers);
    let (taken, _) = isolate.drive(&get, &HashMap::new(), None);
    assert_eq!(taken, ["verify"]);
    let later = |answers: &Answers| {
        pass(
            &isolate.config,
            &isolate.memory(),
            &get,
            answers,
            &READY,
            NOW + 120,
        )
    };
    let Step::Verify { check, .. } = later(&Answers::default()) else {
        panic!("no longer honoured from the cache");
    };
    let verified = Answers {
        verdict: Some((check.fingerprint, true)),
        ..Answers::default()
    };
    let step = later(&verified);
    assert_eq!(status(&step), 401);
    let Step::Reply { decision, .. } = step else {
        unreachable!()
    };
    assert_eq!(decision.reason, "token_expired");
}
