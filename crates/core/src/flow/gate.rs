//! The gate's decision for one request: route it, read its credentials,
//! verify the token, check scopes, and either answer it or describe the
//! request to send to the origin. Pure apart from the key source, with `now`
//! passed in; the Workers glue only performs the I/O this describes.
//!
//! Order matters for what a prober can learn and what the origin can see:
//! unknown paths and methods are refused before credentials are read, and
//! nothing reaches the origin unless every check passed.

use serde::Serialize;

use crate::authorize::tool_filter::ToolListFilter;
use crate::config::{Config, Route, TokenFormat};
use crate::forward::origin::{origin_headers, origin_url, OriginRequest};
use crate::forward::reply::{
    mcp_preflight_reply, metadata_preflight_reply, metadata_reply, Denial, Reply,
};
use crate::parse::bearer::{extract_bearer, CredentialCarriers};
use crate::parse::jsonrpc::{check_routing_headers, parse_body, TOOLS_CALL, TOOLS_LIST};
use crate::verify::introspect::{looks_like_jwt, IntrospectionPolicy};
use crate::verify::introspect_cache::Introspector;
use crate::verify::jwt::{verify_with, AccessToken, ClaimsPolicy, TokenError, UnverifiedJwt};
use crate::verify::keys::{KeyDemand, KeySource};
use crate::verify::signature::SignatureVerifier;
use crate::verify::token_cache::{TokenKey, TokenMemory};

/// Methods forwarded to the origin (MCP Streamable HTTP transport).
pub const FORWARDED_METHODS: &str = "GET, POST, DELETE";

/// The parts of an incoming request the gate reads.
#[derive(Debug, Clone, Copy)]
pub struct GateRequest<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// URL path, as the runtime parsed it.
    pub path: &'a str,
    /// Raw query, without `?`.
    pub query: Option<&'a str>,
    /// Header fields; names in any case.
    pub headers: &'a [(String, String)],
}

impl GateRequest<'_> {
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Answer it from the gate.
    Reply(Reply),
    /// Send this to the origin and stream its answer back.
    Forward(OriginRequest),
}

/// The outcome plus what the structured log should say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub outcome: Outcome,
    /// Why, for the log.
    pub reason: &'static str,
    /// The verified token, when there is one.
    pub token: Option<AccessToken>,
    /// What the JSON-RPC body asked for, once read.
    pub audit: Option<RpcAudit>,
    /// The allowed browser origin to answer with CORS headers.
    pub cors_origin: Option<String>,
    /// The index in [`Config::routes`] of the route the request is for.
    pub route: Option<usize>,
}

/// The log line's `decision` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Forwarded to the origin.
    Allow,
    /// Refused.
    Deny,
    /// Answered by the gate itself (metadata, preflight).
    Serve,
}

impl Decision {
    fn deny(denial: Denial, route: Option<(usize, &Route)>) -> Self {
        Decision {
            outcome: Outcome::Reply(denial.reply(route.map(|(_, route)| route))),
            reason: denial.reason(),
            token: None,
            audit: None,
            cors_origin: None,
            route: route.map(|(index, _)| index),
        }
    }

    /// Turns an allowed decision into a refusal found after it (session,
    /// body), keeping the token and audit for the log.
    pub fn refuse(&mut self, denial: &Denial, route: &Route) {
        self.outcome = Outcome::Reply(denial.reply(Some(route)));
        self.reason = denial.reason();
    }

    fn serve(reply: Reply, reason: &'static str, route: Option<usize>) -> Self {
        Decision {
            outcome: Outcome::Reply(reply),
            reason,
            token: None,
            audit: None,
            cors_origin: None,
            route,
        }
    }

    /// Allow, deny or serve.
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            Outcome::Forward(_) => Verdict::Allow,
            Outcome::Reply(reply) if reply.status < 400 => Verdict::Serve,
            Outcome::Reply(_) => Verdict::Deny,
        }
    }
}

enum Target<'c, 'p> {
    Metadata(usize, &'c Route),
    Protected {
        index: usize,
        route: &'c Route,
        suffix: &'p str,
    },
    Unknown,
}

/// Routes by path: a route's metadata, or the longest route path covering
/// the request (MCP authorization: each protected resource is its own).
fn target<'c, 'p>(config: &'c Config, path: &'p str) -> Target<'c, 'p> {
    if let Some(index) = config.route_for_metadata(path) {
        return Target::Metadata(index, &config.routes[index]);
    }
    if has_path_trickery(path) || path.starts_with("/.well-known/") {
        return Target::Unknown;
    }
    match config.route_for(path) {
        Some((index, suffix)) => Target::Protected {
            index,
            route: &config.routes[index],
            suffix,
        },
        None => Target::Unknown,
    }
}

/// Dot segments and encoded separators could make the origin resolve a path
/// outside the protected resource; such paths are never routed.
fn has_path_trickery(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "\\"]
        .iter()
        .any(|needle| lower.contains(needle))
        || path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

/// Decides what to do with `request` at time `now` (seconds since the epoch).
pub async fn decide<K: KeySource, I: Introspector, V: SignatureVerifier, T: TokenMemory>(
    config: &Config,
    request: &GateRequest<'_>,
    keys: &K,
    introspector: &I,
    signatures: &V,
    tokens: &T,
    now: i64,
) -> Decision {
    let (index, route, suffix) = match target(config, request.path) {
        Target::Unknown => return Decision::deny(Denial::NotFound, None),
        Target::Metadata(index, route) => {
            let at = Some((index, route));
            return match request.method {
                "GET" | "HEAD" => Decision::serve(metadata_reply(route), "metadata", Some(index)),
                "OPTIONS" => Decision::serve(metadata_preflight_reply(), "preflight", Some(index)),
                _ => Decision::deny(
                    Denial::MethodNotAllowed {
                        allow: "GET, HEAD, OPTIONS",
                    },
                    at,
                ),
            };
        }
        Target::Protected {
            index,
            route,
            suffix,
        } => (index, route, suffix),
    };
    let at = Some((index, route));
    // MCP transport: validate Origin (DNS rebinding); browsers from allowed
    // origins get CORS headers on every answer, refusals included.
    let origin = request
        .header_values("origin")
        .first()
        .map(|o| (*o).to_owned());
    if let Some(origin) = &origin {
        if !config
            .allowed_origins
            .iter()
            .any(|allowed| allowed == origin)
        {
            return Decision::deny(Denial::OriginNotAllowed, at);
        }
        if request.method == "OPTIONS" {
            let mut decision =
                Decision::serve(mcp_preflight_reply(origin), "preflight", Some(index));
            decision.cors_origin = Some(origin.clone());
            return decision;
        }
    }
    let mut decision = authorize(
        config,
        (index, route),
        request,
        suffix,
        keys,
        introspector,
        signatures,
        tokens,
        now,
    )
    .await;
    decision.cors_origin = origin;
    decision
}

/// The protected resource: method, credentials, route-level scopes.
#[allow(clippy::too_many_arguments)]
async fn authorize<K: KeySource, I: Introspector, V: SignatureVerifier, T: TokenMemory>(
    config: &Config,
    (index, route): (usize, &Route),
    request: &GateRequest<'_>,
    suffix: &str,
    keys: &K,
    introspector: &I,
    signatures: &V,
    tokens: &T,
    now: i64,
) -> Decision {
    if !matches!(request.method, "GET" | "POST" | "DELETE") {
        return Decision::deny(
            Denial::MethodNotAllowed {
                allow: FORWARDED_METHODS,
            },
            Some((index, route)),
        );
    }
    let token = match authenticate(
        config,
        route,
        request,
        keys,
        introspector,
        signatures,
        tokens,
        now,
    )
    .await
    {
        Ok(token) => token,
        Err(denial) => return Decision::deny(denial, Some((index, route))),
    };
    // A POST's scopes are decided with its body (`authorize_rpc`), so that one
    // challenge can name everything the operation needs.
    let missing = route
        .required_scopes
        .iter()
        .any(|scope| !token.has_scope(scope));
    if missing && request.method != "POST" {
        let denial = Denial::InsufficientScope {
            required: route.required_scopes.clone(),
        };
        return Decision {
            token: Some(token),
            ..Decision::deny(denial, Some((index, route)))
        };
    }
    let forward = OriginRequest {
        url: origin_url(&route.origin, suffix, request.query),
        headers: origin_headers(
            request.headers,
            &token,
            route.origin_authorization.as_deref(),
        ),
    };
    Decision {
        outcome: Outcome::Forward(forward),
        reason: "authorized",
        token: Some(token),
        audit: None,
        cors_origin: None,
        route: Some(index),
    }
}

/// What an authorized JSON-RPC body asks for, for the request log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RpcAudit {
    /// Methods of the messages, in order (responses have none).
    pub methods: Vec<String>,
    /// Tools called.
    pub tools: Vec<String>,
    /// Scopes the body required (the union over its messages).
    pub required_scopes: Vec<String>,
}

/// How to forward an authorized JSON-RPC body.
#[derive(Debug, Clone)]
pub struct RpcPlan {
    /// For the log.
    pub audit: RpcAudit,
    /// Set when the body lists tools and the policy may hide some.
    pub tool_filter: Option<ToolListFilter>,
}

/// Authorizes the JSON-RPC body of a POST from a verified `token`: the body
/// must be JSON-RPC, agree with the MCP routing headers, and the token must
/// hold every scope its messages need (route-level, per method, per tool).
/// The refusal carries the audit record when the body could be read.
pub fn authorize_rpc(
    route: &Route,
    request: &GateRequest<'_>,
    token: &AccessToken,
    body: &[u8],
) -> Result<RpcPlan, (Denial, Option<RpcAudit>)> {
    let messages = parse_body(body).map_err(|error| (Denial::MalformedRpc(error), None))?;
    let header = |name: &str| {
        let values = request.header_values(name);
        (!values.is_empty()).then(|| values.join(","))
    };
    let required = route.policy.required_for(&messages);
    let audit = RpcAudit {
        methods: messages.iter().filter_map(|m| m.method.clone()).collect(),
        tools: messages
            .iter()
            .filter_map(|m| m.tool().map(str::to_owned))
            .collect(),
        required_scopes: required.iter().cloned().collect(),
    };
    if let Err(error) = check_routing_headers(
        header("mcp-method").as_deref(),
        header("mcp-name").as_deref(),
        &messages,
    ) {
        return Err((Denial::MalformedRpc(error), Some(audit)));
    }
    if required.iter().any(|scope| !token.has_scope(scope)) {
        let denial = Denial::InsufficientScope {
            required: audit.required_scopes.clone(),
        };
        return Err((denial, Some(audit)));
    }
    let list_ids: Vec<_> = messages
        .iter()
        .filter(|m| m.method.as_deref() == Some(TOOLS_LIST))
        .filter_map(|m| m.id.clone())
        .collect();
    let policy = &route.policy;
    let may_hide_tools =
        !policy.tools.is_empty() || !policy.methods.scopes_for(TOOLS_CALL).is_empty();
    let tool_filter = (!list_ids.is_empty() && may_hide_tools).then(|| ToolListFilter {
        request_ids: list_ids,
        policy: policy.clone(),
        held: token.scopes.clone(),
    });
    Ok(RpcPlan { audit, tool_filter })
}

#[allow(clippy::too_many_arguments)]
async fn authenticate<K: KeySource, I: Introspector, V: SignatureVerifier, T: TokenMemory>(
    config: &Config,
    route: &Route,
    request: &GateRequest<'_>,
    keys: &K,
    introspector: &I,
    signatures: &V,
    tokens: &T,
    now: i64,
) -> Result<AccessToken, Denial> {
    let authorization = request.header_values("authorization");
    let content_type = request.header_values("content-type");
    let carriers = CredentialCarriers {
        authorization: &authorization,
        query: request.query,
        content_type: content_type.first().copied(),
        max_authorization_bytes: config.max_authorization_bytes,
    };
    let raw = extract_bearer(&carriers)
        .map_err(Denial::BadRequest)?
        .ok_or(Denial::NoCredentials)?;
    let introspect = match config.introspection.format {
        TokenFormat::Jwt => false,
        TokenFormat::Opaque => true,
        TokenFormat::Auto => !looks_like_jwt(raw),
    };
    let leeway = i64::try_from(config.leeway_seconds).unwrap_or(0);
    if introspect {
        let policy = IntrospectionPolicy {
            issuers: &route.issuers,
            audiences: &route.audiences,
            leeway_seconds: leeway,
        };
        return introspector
            .introspect(raw, &policy, now)
            .await
            .map_err(Denial::IntrospectionUnavailable)?
            .map_err(Denial::InactiveToken);
    }
    let binding = route.check_binding.as_str();
    let key = TokenKey::of(raw, binding);
    if let Some((cached, kid)) = tokens.get(&key, now, leeway) {
        // Honoured only while the issuer's current set still holds the key;
        // asking for the set also keeps it refreshed.
        if let Some(issuer) = config
            .issuer(&cached.issuer)
            .filter(|issuer| route.trusts(&issuer.issuer))
        {
            let held = keys
                .key_set(issuer, KeyDemand::Current, now)
                .await
                .map_err(Denial::KeysUnavailable)?;
            if kid.as_deref().is_some_and(|kid| held.has_kid(kid)) {
                return Ok(cached);
            }
        }
        tokens.forget(&key);
    }
    if let Some(error) = tokens.refusal(&key, now) {
        return Err(Denial::InvalidToken(error));
    }
    let token = UnverifiedJwt::parse(raw, &config.algorithms).map_err(Denial::InvalidToken)?;
    if config.require_at_jwt_typ {
        token
            .require_access_token_type()
            .map_err(Denial::InvalidToken)?;
    }
    let issuer = token
        .issuer()
        .filter(|iss| route.trusts(iss))
        .and_then(|iss| config.issuer(iss))
        .ok_or(Denial::InvalidToken(TokenError::UntrustedIssuer))?;
    let mut key_set = keys
        .key_set(issuer, KeyDemand::Current, now)
        .await
        .map_err(Denial::KeysUnavailable)?;
    if !token.has_candidate_key(&key_set) {
        // Perhaps the issuer rotated keys since the set was cached.
        key_set = keys
            .key_set(issuer, KeyDemand::UnknownKid, now)
            .await
            .map_err(Denial::KeysUnavailable)?;
    }
    let policy = ClaimsPolicy {
        issuer: &issuer.issuer,
        audiences: &route.audiences,
        leeway_seconds: config.leeway_seconds,
        max_lifetime_seconds: config.max_token_lifetime_seconds,
    };
    let verified = verify_with(&token, &key_set, &policy, now, signatures).await;
    let verified = verified.map_err(|error| {
        tokens.remember_refusal(&key, error, now);
        Denial::InvalidToken(error)
    })?;
    // A token without `kid` is not remembered: nothing would tell when the key
    // that verified it leaves the set, so it is verified on every request.
    if token.kid().is_some() {
        tokens.insert(&key, &verified, token.kid(), now);
    }
    Ok(verified)
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
