//! `portcullis explain`: the decision the gate would make for one token on
//! one route, method and tool, made by the gate's own request machine
//! ([`Flow`]) driven natively: its fetches (RFC 8414 / OIDC discovery, the
//! JWK Set, RFC 7662 introspection) go to the real servers, its signature
//! checks run on the core's native backend, and it stops where the edge
//! would forward, so no origin is called. The reason printed is the
//! `reason` the gate logs for that request.
//!
//! Explain starts cold, as a new isolate with an empty KV namespace does,
//! and does not count rate limits (the Workers binding does that at the
//! edge). The token is never printed.

use std::rc::Rc;
use std::time::Duration;

use base64ct::{Base64UrlUnpadded, Encoding};
use portcullis_core::authorize::rate_limit::Counted;
use portcullis_core::config::{Config, Route};
use portcullis_core::flow::gate::Outcome;
use portcullis_core::flow::machine::{Answer, Flow, Gate, Need, Request, Step as FlowStep};
use portcullis_core::io::{FetchError, FetchedDocument, Io, IoAnswer};
use portcullis_core::verify::dpop::DpopPolicy;
use portcullis_core::verify::signature::verify_signature;
use serde_json::{json, Value};

use crate::http::{self, HttpError, Limits};
use crate::output::{Report, Status, Step};

/// What to ask the gate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The route: a path or the resource URL; `None`: the first route.
    pub route: Option<String>,
    /// HTTP method.
    pub http_method: String,
    /// JSON-RPC method of a POST.
    pub rpc_method: String,
    /// The tool of a `tools/call`.
    pub tool: Option<String>,
    /// `MCP-Protocol-Version`.
    pub protocol_version: String,
    /// When, in seconds since the epoch.
    pub at: i64,
}

/// The gate's decision and how it came about.
#[derive(Debug)]
pub struct Explanation {
    /// One step per check, in the gate's order.
    pub report: Report,
    /// `allow`, `deny` or `serve`.
    pub verdict: &'static str,
    /// The log's `reason`.
    pub reason: String,
    /// The status the client would get (`None`: forwarded, the origin's).
    pub status: Option<u16>,
    /// The `WWW-Authenticate` the client would get.
    pub challenge: Option<String>,
    /// What the machine fetched, in order (`GET url -> 200`).
    pub fetches: Vec<String>,
}

impl Explanation {
    /// As JSON for `--json`.
    pub fn json(&self) -> Value {
        json!({
            "command": "explain",
            "decision": self.verdict,
            "reason": self.reason,
            "status": self.status,
            "www_authenticate": self.challenge,
            "checks": self.report.json_steps(),
            "fetches": self.fetches,
        })
    }
}

/// The checks in the order the gate makes them, with the log reasons each
/// can end a request with.
const CHECKS: [(&str, &str, &[&str]); 13] = [
    (
        "route",
        "route",
        &[
            "no_route",
            "method_not_allowed",
            "origin_not_allowed",
            "misconfigured",
        ],
    ),
    (
        "credentials",
        "credentials (RFC 6750 §2)",
        &[
            "no_credentials",
            "token_in_query",
            "form_encoded_body",
            "authorization_header_too_large",
            "malformed_bearer_credentials",
            "repeated_authorization_header",
            "dpop_required",
        ],
    ),
    (
        "header",
        "JOSE header (RFC 8725, RFC 9068 §2.1)",
        &[
            "token_malformed",
            "algorithm_not_allowed",
            "forbidden_header_parameter",
            "wrong_token_type",
        ],
    ),
    ("issuer", "issuer", &["untrusted_issuer"]),
    (
        "keys",
        "signing keys (RFC 8414, RFC 7517)",
        &[
            "jwks_fetch_failed",
            "jwks_fetch_timeout",
            "jwks_too_large",
            "jwks_bad_status",
            "jwks_redirect_refused",
            "jwks_invalid",
            "discovery_failed",
            "jwks_backing_off",
            "unknown_key",
        ],
    ),
    ("signature", "signature", &["bad_signature"]),
    (
        "introspection",
        "introspection (RFC 7662)",
        &[
            "token_inactive",
            "not_an_access_token",
            "introspection_fetch_failed",
            "introspection_timeout",
            "introspection_too_large",
            "introspection_bad_status",
            "introspection_invalid",
            "introspection_discovery_failed",
            "introspection_backing_off",
        ],
    ),
    (
        "claims",
        "validity (RFC 7519 §4.1, RFC 9068 §2.2)",
        &[
            "invalid_claims",
            "missing_exp",
            "missing_sub",
            "sender_constrained_token",
            "token_expired",
            "token_not_yet_valid",
            "token_issued_in_future",
            "token_lifetime_too_long",
        ],
    ),
    ("audience", "audience (RFC 8707 §2)", &["audience_mismatch"]),
    (
        "binding",
        "sender binding (RFC 9449 §6-7)",
        &[
            "dpop_bound_token_as_bearer",
            "dpop_token_not_bound",
            "dpop_jkt_mismatch",
            "dpop_replayed",
            "dpop_replay_unavailable",
        ],
    ),
    ("request", "request", &[]),
    ("scopes", "scopes", &["insufficient_scope"]),
    (
        "rate_limits",
        "rate limits",
        &["rate_limited", "rate_limit_unavailable"],
    ),
];

/// Most machine steps before explain calls it a loop.
const MAX_STEPS: usize = 1_000;

/// Runs `token` through a gate of `config` as `options` describe.
pub fn run(config: &Config, token: &str, options: &Options) -> Result<Explanation, String> {
    let route = pick_route(config, options.route.as_deref())?;
    let mut headers = vec![
        ("authorization".to_owned(), format!("Bearer {token}")),
        (
            "accept".to_owned(),
            "application/json, text/event-stream".to_owned(),
        ),
        (
            "mcp-protocol-version".to_owned(),
            options.protocol_version.clone(),
        ),
    ];
    let mut params = json!({});
    if let Some(tool) = &options.tool {
        params = json!({ "name": tool, "arguments": {} });
    }
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": options.rpc_method, "params": params });
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let post = options.http_method.eq_ignore_ascii_case("POST");
    if post {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
        headers.push(("content-length".to_owned(), body.len().to_string()));
        // MCP 2026-07-28 routing headers, as a client of that revision sends them.
        if options.protocol_version.as_str() >= "2026-07-28" {
            headers.push(("mcp-method".to_owned(), options.rpc_method.clone()));
            if let Some(tool) = &options.tool {
                headers.push(("mcp-name".to_owned(), tool.clone()));
            }
        }
    }
    let method = options.http_method.to_ascii_uppercase();
    let request = Request::from_url(&method, &route.resource.uri, headers)
        .ok_or("the route's resource URL does not parse")?;

    let gate = Rc::new(Gate::new(Ok(config.clone()), [7; 32]));
    let mut flow = Flow::new(gate, request, options.at);
    let mut fetches = Vec::new();
    let mut forwarded_to = None;
    let mut response = None;
    let mut rate_counts = 0;
    for _ in 0..MAX_STEPS {
        let need = match flow.step() {
            FlowStep::Need(need) => need,
            FlowStep::Respond(answer) => {
                response = Some(answer);
                continue;
            }
            FlowStep::Done(_) => break,
        };
        let answer = match need {
            Need::Io(io) => Answer::Io(perform(io, &mut fetches)),
            Need::Verify(check) => {
                let valid =
                    verify_signature(check.alg, &check.key, &check.message, &check.signature);
                fetches.push(format!(
                    "signature {} -> {}",
                    check.alg.name(),
                    if valid { "valid" } else { "invalid" }
                ));
                Answer::Verdict(valid)
            }
            Need::ReadBody { .. } => Answer::Body(Ok(if post { body.clone() } else { Vec::new() })),
            Need::Forward(origin) => {
                forwarded_to = Some(origin.url);
                break;
            }
            Need::ReadOriginBody => Answer::OriginBody(Err(())),
            Need::RateLimit(counts) => {
                rate_counts += counts.len();
                Answer::Counted(counts.iter().map(|_| Counted::Within).collect())
            }
            // Not a stored store: a proof made for this run is new.
            Need::ClaimProof { .. } => Answer::Claimed(Ok(true)),
        };
        flow.resume(answer);
    }

    let decision = flow.decision().clone();
    let (status, challenge) = match (&response, &decision.outcome) {
        (Some(answer), _) => (
            Some(answer.status),
            answer
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
                .map(|(_, value)| value.clone()),
        ),
        (None, Outcome::Reply(reply)) => (
            Some(reply.status),
            reply.header("www-authenticate").map(str::to_owned),
        ),
        (None, _) => (None, None),
    };
    let verdict = if forwarded_to.is_some() {
        "allow"
    } else if status.is_some_and(|s| s < 400) {
        "serve"
    } else {
        "deny"
    };
    let reason = decision.reason.to_owned();

    let claims = Claims::decode(token);
    let failing = failing_check(&reason, decision.token.is_some(), verdict);
    let opaque = claims.is_none();
    let mut report = Report::default();
    for (index, (id, title, _)) in CHECKS.iter().enumerate() {
        // Only the checks of the token's kind.
        let skip = if opaque {
            matches!(*id, "header" | "keys" | "signature")
        } else {
            *id == "introspection"
        };
        if skip {
            continue;
        }
        let status = match failing {
            Some(at) if index == at => Status::Fail,
            Some(at) if index > at => Status::Info,
            _ => Status::Pass,
        };
        let detail = if status == Status::Info {
            "not reached".to_owned()
        } else {
            detail(
                id,
                route,
                config,
                &claims,
                options,
                &fetches,
                &decision.token,
                rate_counts,
                challenge.as_deref(),
            )
        };
        let mut step = Step::new(id, title, status, detail);
        if status == Status::Fail {
            step.detail = format!("{} (log reason {reason})", step.detail);
            if let Some(fix) = fix_for(&reason) {
                step = step.fix(fix);
            }
        }
        report.push(step);
    }
    let forward = match &forwarded_to {
        Some(url) => Step::new(
            "forward",
            "forward",
            Status::Pass,
            format!("would forward to {url}"),
        ),
        None if failing.is_none() => Step::new(
            "forward",
            "forward",
            Status::Fail,
            format!("not forwarded: {reason}"),
        ),
        None => Step::new("forward", "forward", Status::Info, "not reached"),
    };
    report.push(forward);
    Ok(Explanation {
        report,
        verdict,
        reason,
        status,
        challenge,
        fetches,
    })
}

/// The route named by path or URL, else the first.
fn pick_route<'c>(config: &'c Config, wanted: Option<&str>) -> Result<&'c Route, String> {
    let Some(wanted) = wanted else {
        return config
            .routes
            .first()
            .ok_or_else(|| "no route configured".to_owned());
    };
    config
        .routes
        .iter()
        .find(|route| route.resource.uri == wanted || route.resource.path == wanted)
        .ok_or_else(|| {
            let known: Vec<&str> = config
                .routes
                .iter()
                .map(|r| r.resource.uri.as_str())
                .collect();
            format!("no route {wanted}; the routes are {}", known.join(", "))
        })
}

/// The index in [`CHECKS`] of the check that refused, `None` when the
/// request was let through (or served).
fn failing_check(reason: &str, verified: bool, verdict: &str) -> Option<usize> {
    if verdict != "deny" {
        return None;
    }
    if let Some(index) = CHECKS
        .iter()
        .position(|(_, _, reasons)| reasons.contains(&reason))
    {
        return Some(index);
    }
    // A verified token refused for what the request asks: the body, the
    // session, the protocol revision, the requestState.
    let request = CHECKS.iter().position(|(id, ..)| *id == "request");
    if verified {
        request
    } else {
        Some(0)
    }
}

/// What a check looked at, for a check that passed or failed.
#[allow(clippy::too_many_arguments)]
fn detail(
    id: &str,
    route: &Route,
    config: &Config,
    claims: &Option<Claims>,
    options: &Options,
    fetches: &[String],
    token: &Option<portcullis_core::verify::jwt::AccessToken>,
    rate_counts: usize,
    challenge: Option<&str>,
) -> String {
    let claim = |name: &str| claims.as_ref().and_then(|c| c.payload.get(name)).cloned();
    let show = |value: Option<Value>| value.map_or_else(|| "absent".to_owned(), |v| v.to_string());
    match id {
        "route" => format!("{} {} (route {})", options.http_method.to_ascii_uppercase(), route.resource.uri, route.resource.path),
        "credentials" => "an Authorization: Bearer token".to_owned(),
        "header" => {
            let header = |name: &str| claims.as_ref().and_then(|c| c.header.get(name)).cloned();
            format!(
                "alg {}, kid {}, typ {}; allowed: {}",
                show(header("alg")),
                show(header("kid")),
                show(header("typ")),
                config.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ")
            )
        }
        "issuer" => format!("iss {}; trusted on this route: {}", show(claim("iss")), route.issuers.join(" ")),
        "keys" | "introspection" | "signature" => {
            let wanted: Vec<&String> = fetches
                .iter()
                .filter(|line| match id {
                    "signature" => line.starts_with("signature"),
                    _ => !line.starts_with("signature"),
                })
                .collect();
            if wanted.is_empty() {
                "nothing fetched".to_owned()
            } else {
                wanted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
            }
        }
        "claims" => {
            let at = options.at;
            let time = |name: &str| match claim(name).and_then(|v| v.as_i64()) {
                Some(t) => format!("{name} {t} ({})", relative(t - at)),
                None => format!("{name} absent"),
            };
            format!("{}, {}, {}; leeway {} s", time("exp"), time("nbf"), time("iat"), config.leeway_seconds)
        }
        "audience" => format!("aud {}; accepted: {}", show(claim("aud")), route.audiences.join(" ")),
        "binding" => {
            let takes = match route.dpop {
                DpopPolicy::Bearer => "bearer tokens only",
                DpopPolicy::Required => "DPoP-bound tokens only",
                DpopPolicy::Either => "bearer or DPoP-bound tokens",
            };
            format!("cnf {}; this route takes {takes}", show(claim("cnf")))
        }
        "request" => match &options.tool {
            Some(tool) => format!("{} {} name={tool}", options.rpc_method, options.protocol_version),
            None => format!("{} {}", options.rpc_method, options.protocol_version),
        },
        "scopes" => {
            let granted = token
                .as_ref()
                .map(|t| t.scopes.join(" "))
                .or_else(|| claim("scope").and_then(|v| v.as_str().map(str::to_owned)))
                .unwrap_or_default();
            let required = challenge
                .and_then(|c| c.split("scope=\"").nth(1))
                .and_then(|rest| rest.split('"').next());
            match required {
                Some(required) => format!("granted: {granted}; required: {required}"),
                None => format!("granted: {granted}"),
            }
        }
        "rate_limits" => match route.rate_limits.len() {
            0 => "no rules on this route".to_owned(),
            rules => format!("{rules} rule(s), {rate_counts} count(s) asked; explain does not count (the Workers binding does, at the edge)"),
        },
        _ => String::new(),
    }
}

/// What usually mends a refusal, by log reason.
fn fix_for(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "no_credentials" => "send the token as `Authorization: Bearer <token>`",
        "algorithm_not_allowed" => "sign with an asymmetric algorithm listed in JWT_ALGORITHMS (none and HMAC are never accepted)",
        "wrong_token_type" => "issue RFC 9068 access tokens (typ at+jwt), or unset JWT_REQUIRE_TYP_AT_JWT",
        "forbidden_header_parameter" => "issue tokens without jku, x5u, x5c, jwk or crit in the header: keys come from the issuer's JWKS only",
        "untrusted_issuer" => "add the token's iss to OAUTH_ISSUER (or the route's issuers), exactly as the authorization server spells it",
        "unknown_key" => "the issuer's JWKS has no key with this kid and alg: the token is from another issuer or environment, or OAUTH_JWKS_URI names the wrong key set",
        "bad_signature" => "the token was altered, or signed by a key other than the one its kid names",
        "token_expired" => "get a new token (refresh it); if it was just issued, check the authorization server's clock",
        "token_not_yet_valid" | "token_issued_in_future" => "check the clocks: the token's nbf or iat is ahead of the gate's time plus JWT_LEEWAY_SECONDS",
        "token_lifetime_too_long" => "issue shorter-lived tokens, or raise JWT_MAX_LIFETIME_SECONDS",
        "missing_exp" | "missing_sub" | "invalid_claims" => "issue RFC 9068 access tokens: exp, and sub when typ is at+jwt, as numbers and strings",
        "sender_constrained_token" => "the token is bound to a key (cnf): this route takes bearer tokens only; set DPOP (or the route's dpop) to dpop or either to take DPoP-bound tokens",
        "dpop_required" => "this route takes DPoP-bound tokens only (DPOP=dpop): the client must get a DPoP-bound token and send it as `Authorization: DPoP <token>` with a `DPoP` proof (RFC 9449)",
        "dpop_bound_token_as_bearer" => "the token is DPoP-bound (cnf.jkt): the client must send it as `Authorization: DPoP <token>` with a proof of its key; explain sends tokens as Bearer and cannot make that proof",
        "audience_mismatch" => "the client must ask for this resource (resource=<MCP URL>, RFC 8707) and the authorization server must put it in aud; or accept that audience (OAUTH_AUDIENCE)",
        "insufficient_scope" => "get a token with the scopes the challenge names (the client steps up to them)",
        "token_inactive" => "the authorization server says the token is not active: revoked, expired, or issued for another client",
        "discovery_failed" | "jwks_fetch_failed" | "jwks_fetch_timeout" | "jwks_bad_status" | "jwks_invalid" | "jwks_too_large" | "jwks_redirect_refused" => "the gate cannot load the issuer's keys: check OAUTH_ISSUER's metadata (RFC 8414) or OAUTH_JWKS_URI answers 200 with a JWK Set, without redirects",
        "introspection_fetch_failed" | "introspection_timeout" | "introspection_bad_status" | "introspection_invalid" | "introspection_discovery_failed" => "check OAUTH_INTROSPECTION_URI (or the issuer's introspection_endpoint) and the gate's client credentials",
        _ => return None,
    })
}

/// `in 59m` / `2h ago`.
fn relative(seconds: i64) -> String {
    let magnitude = seconds.unsigned_abs();
    let text = match magnitude {
        0..=119 => format!("{magnitude} s"),
        120..=7199 => format!("{} min", magnitude / 60),
        7200..=172_799 => format!("{} h", magnitude / 3600),
        _ => format!("{} days", magnitude / 86_400),
    };
    if seconds >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A JWT's header and payload, decoded without trusting them (for showing
/// what each check looked at; the machine decides).
#[derive(Debug)]
struct Claims {
    header: Value,
    payload: Value,
}

impl Claims {
    fn decode(token: &str) -> Option<Claims> {
        let mut parts = token.split('.');
        let (header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let decode = |part: &str| -> Option<Value> {
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(part).ok()?).ok()
        };
        Some(Claims {
            header: decode(header).unwrap_or(Value::Null),
            payload: decode(payload).unwrap_or(Value::Null),
        })
    }
}

/// Performs one of the machine's I/O needs; KV is empty (a cold start) and
/// its writes are dropped.
fn perform(io: Io, fetches: &mut Vec<String>) -> IoAnswer {
    match io {
        Io::Get { url, limits } => {
            let outcome = http::get(
                url.as_str(),
                &[("accept", "application/json")],
                limits_of(limits.timeout_ms, limits.max_bytes),
            );
            fetches.push(format!("GET {url} -> {}", describe(&outcome)));
            IoAnswer::Fetched(document(outcome))
        }
        Io::PostForm {
            url,
            body,
            authorization,
            limits,
        } => {
            let mut headers = vec![
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "application/json"),
            ];
            if let Some(value) = authorization.as_deref() {
                headers.push(("authorization", value));
            }
            let outcome = http::send(
                "POST",
                url.as_str(),
                &headers,
                Some(body.as_bytes()),
                limits_of(limits.timeout_ms, limits.max_bytes),
            );
            fetches.push(format!("POST {url} -> {}", describe(&outcome)));
            IoAnswer::Fetched(document(outcome))
        }
        Io::KvGet { .. } => IoAnswer::Kv(None),
        Io::KvPut { .. } => IoAnswer::Done,
        Io::Sleep { ms } => {
            std::thread::sleep(Duration::from_millis(u64::from(ms)));
            IoAnswer::Done
        }
    }
}

fn limits_of(timeout_ms: u32, max_bytes: usize) -> Limits {
    Limits {
        timeout: Duration::from_millis(u64::from(timeout_ms)),
        max_bytes,
    }
}

fn describe(outcome: &Result<http::Reply, HttpError>) -> String {
    match outcome {
        Ok(reply) => reply.status.to_string(),
        Err(error) => error.to_string(),
    }
}

fn document(outcome: Result<http::Reply, HttpError>) -> Result<FetchedDocument, FetchError> {
    match outcome {
        Ok(reply) => Ok(FetchedDocument {
            status: reply.status,
            cache_control: reply.header("cache-control").map(str::to_owned),
            expires: reply.header("expires").map(str::to_owned),
            date: reply.header("date").map(str::to_owned),
            location: reply.header("location").map(str::to_owned),
            body: reply.body,
        }),
        Err(HttpError::Timeout) => Err(FetchError::Timeout),
        Err(HttpError::TooLarge) => Err(FetchError::TooLarge),
        Err(HttpError::Network(_)) => Err(FetchError::Network),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::io::FetchError;
    use portcullis_core::parse::bearer::BearerError;
    use portcullis_core::verify::introspect::{IntrospectionRefusal, IntrospectionUnavailable};
    use portcullis_core::verify::jwt::TokenError;
    use portcullis_core::verify::keys::KeySourceError;

    fn check_of(reason: &str, verified: bool) -> &'static str {
        failing_check(reason, verified, "deny").map_or("none", |index| CHECKS[index].0)
    }

    /// Every reason the core's token, key, introspection and credential
    /// errors log is placed at the check that makes it, so explain never
    /// blames the wrong step.
    #[test]
    fn every_refusal_reason_has_its_check() {
        use TokenError::*;
        let tokens = [
            (Malformed, "header"),
            (AlgorithmNotAllowed, "header"),
            (ForbiddenHeader, "header"),
            (WrongType, "header"),
            (UntrustedIssuer, "issuer"),
            (UnknownKey, "keys"),
            (BadSignature, "signature"),
            (InvalidClaims, "claims"),
            (MissingExpiry, "claims"),
            (MissingSubject, "claims"),
            (Expired, "claims"),
            (NotYetValid, "claims"),
            (IssuedInFuture, "claims"),
            (AudienceMismatch, "audience"),
            (ProofOfPossessionRequired, "claims"),
            (LifetimeTooLong, "claims"),
        ];
        for (error, check) in tokens {
            assert_eq!(check_of(error.reason(), false), check, "{error:?}");
        }
        for error in [
            KeySourceError::Fetch(FetchError::Network),
            KeySourceError::Fetch(FetchError::Timeout),
            KeySourceError::Fetch(FetchError::TooLarge),
            KeySourceError::Status(500),
            KeySourceError::Redirect,
            KeySourceError::InvalidMetadata,
            KeySourceError::BackingOff,
        ] {
            assert_eq!(check_of(error.reason(), false), "keys", "{error:?}");
        }
        for error in [
            IntrospectionRefusal::Inactive,
            IntrospectionRefusal::NotAnAccessToken,
        ] {
            assert_eq!(check_of(error.reason(), false), "introspection");
        }
        for (error, check) in [
            (IntrospectionRefusal::Expired, "claims"),
            (IntrospectionRefusal::UntrustedIssuer, "issuer"),
            (IntrospectionRefusal::AudienceMismatch, "audience"),
            (IntrospectionRefusal::ProofOfPossessionRequired, "claims"),
            (IntrospectionRefusal::NotYetValid, "claims"),
            (IntrospectionRefusal::InvalidClaims, "claims"),
        ] {
            assert_eq!(check_of(error.reason(), false), check, "{error:?}");
        }
        for error in [
            IntrospectionUnavailable::Network,
            IntrospectionUnavailable::Timeout,
            IntrospectionUnavailable::TooLarge,
            IntrospectionUnavailable::Status(500),
            IntrospectionUnavailable::Invalid,
            IntrospectionUnavailable::NoEndpoint,
            IntrospectionUnavailable::BackingOff,
        ] {
            assert_eq!(
                check_of(error.reason(), false),
                "introspection",
                "{error:?}"
            );
        }
        for error in [
            BearerError::TokenInQuery,
            BearerError::FormEncodedBody,
            BearerError::HeaderTooLarge,
            BearerError::MalformedCredentials,
            BearerError::RepeatedHeader,
        ] {
            assert_eq!(check_of(error.reason(), false), "credentials", "{error:?}");
        }
        assert_eq!(check_of("no_credentials", false), "credentials");
        use portcullis_core::verify::dpop::SchemeRefusal;
        assert_eq!(
            check_of(SchemeRefusal::DpopRequired.reason(), false),
            "credentials"
        );
        for refusal in [
            SchemeRefusal::BoundTokenAsBearer,
            SchemeRefusal::TokenNotBound,
        ] {
            assert_eq!(check_of(refusal.reason(), true), "binding", "{refusal:?}");
        }
        assert_eq!(check_of("insufficient_scope", true), "scopes");
        assert_eq!(check_of("rate_limited", true), "rate_limits");
        // What the request asks of a verified token.
        assert_eq!(check_of("foreign_session", true), "request");
        assert_eq!(check_of("rpc_malformed_json", true), "request");
        assert_eq!(failing_check("authorized", true, "allow"), None);
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(61), "in 61 s");
        assert_eq!(relative(-61), "61 s ago");
        assert_eq!(relative(3600), "in 60 min");
        assert_eq!(relative(-86_400 * 3), "3 days ago");
    }
}
