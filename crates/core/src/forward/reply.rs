//! Every answer the gate gives itself, built in one place: protected resource
//! metadata (RFC 9728 §2–3), bearer challenges (RFC 6750 §3, RFC 9728 §5.1)
//! and the status codes of refusals. [`Denial`] is the one place where the
//! gate's error types become HTTP: a single exhaustive `match`, so a new kind
//! of refusal cannot be added without deciding its wire form.

use serde::Serialize;

use crate::authorize::policy::OFFLINE_ACCESS;
use crate::authorize::rate_limit::RATE_LIMITED_CODE;
use crate::authorize::request_state::StateRefusal;
use crate::config::Route;
use crate::forward::assertion::JWKS_MAX_AGE_SECONDS;
use crate::forward::origin::OriginFault;
use crate::io::StoreFault;
use crate::parse::bearer::BearerError;
use crate::parse::jsonrpc::RpcError;
use crate::parse::tool_headers::is_param_header;
use crate::parse::version::Unsupported;
use crate::verify::dpop::{DpopPolicy, NonceError, ProofError, SchemeRefusal};
use crate::verify::introspect::{IntrospectionRefusal, IntrospectionUnavailable};
use crate::verify::jwt::TokenError;
use crate::verify::keys::KeySourceError;

/// MCP 2026-07-28 `UnsupportedProtocolVersionError`.
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// Seconds a client should wait before retrying while keys are unavailable.
pub const RETRY_AFTER_SECONDS: u32 = 30;
/// Seconds a client should wait before retrying while the session store
/// fails: KV faults are short, and the client's next try is an `initialize`.
pub const STORE_RETRY_AFTER_SECONDS: u32 = 5;
/// How long clients and caches may keep the metadata document.
pub const METADATA_MAX_AGE_SECONDS: u32 = 3600;

/// A response the gate produces without the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Header fields, in order.
    pub headers: Vec<(&'static str, String)>,
    /// Body text (JSON, or empty).
    pub body: String,
}

impl Reply {
    /// The value of `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why the gate refuses to forward a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No route for this path.
    NotFound,
    /// The path exists but not for this method.
    MethodNotAllowed {
        /// The methods the path serves.
        allow: &'static str,
    },
    /// No bearer credentials at all.
    NoCredentials,
    /// The credentials could not be read.
    BadRequest(BearerError),
    /// The token is not acceptable.
    InvalidToken(TokenError),
    /// The token is valid but lacks scopes; carries every scope the request needs.
    InsufficientScope {
        /// All scopes the operation requires.
        required: Vec<String>,
    },
    /// No key set could be loaded: the gate cannot judge any token.
    KeysUnavailable(KeySourceError),
    /// Introspection says the opaque token is not acceptable.
    InactiveToken(IntrospectionRefusal),
    /// The introspection endpoint could not judge the token.
    IntrospectionUnavailable(IntrospectionUnavailable),
    /// The JSON-RPC body is larger than `MCP_MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// The body is not a JSON-RPC message the gate can authorize.
    MalformedRpc(RpcError),
    /// The MCP routing headers disagree with the body (MCP 2026-07-28
    /// Streamable HTTP §Server Validation); carries the request's id when
    /// the body is one request, so the client can match the error to it.
    HeaderMismatch {
        /// The id of the body's single request.
        id: Option<serde_json::Value>,
    },
    /// The request speaks an MCP revision older than
    /// `MCP_MIN_PROTOCOL_VERSION` (MCP 2026-07-28
    /// `UnsupportedProtocolVersionError`).
    UnsupportedProtocolVersion {
        /// The id of the body's single request, when there is one.
        id: Option<serde_json::Value>,
        /// What was requested and what the gate lets through.
        refusal: Box<Unsupported>,
    },
    /// The session belongs to another subject or client; answered as the
    /// origin answers an unknown session, so it reveals nothing.
    ForeignSession,
    /// A `requestState` the gate did not seal for this caller and call, or
    /// past its lifetime (MCP 2026-07-28 multi round-trip requests).
    InvalidRequestState {
        /// The id of the request that carried it.
        id: Option<serde_json::Value>,
        /// Why, for the log only.
        why: StateRefusal,
    },
    /// The origin's `tools/list` answer could not be filtered (and so must
    /// not be passed on), or its body could not be read.
    BadGateway,
    /// The origin gave no answer head: unreachable, or past a timeout.
    OriginUnavailable(OriginFault),
    /// The store of session owners (Workers KV) failed or did not answer:
    /// whose the session is cannot be told, or a new session's owner could
    /// not be recorded (its id is then withheld from the client).
    SessionStoreUnavailable(StoreFault),
    /// A browser origin not in `MCP_ALLOWED_ORIGINS` (MCP transport:
    /// servers must validate `Origin`, against DNS rebinding).
    OriginNotAllowed,
    /// The configuration did not parse; the problems are in the log.
    Misconfigured,
    /// The assertion could not be signed: WebCrypto refused the key of the
    /// binding (its private and public parts disagree, or it does not
    /// import). Named in a `config_invalid` log line.
    AssertionKeyUnusable,
    /// Over a rate limit rule's limit (the rule is named in the log).
    RateLimited {
        /// The rule's period, in seconds.
        retry_after: u32,
        /// Answer with a JSON-RPC error (a `POST`).
        json_rpc: bool,
        /// The id of the body's single request, when it was read.
        id: Option<serde_json::Value>,
    },
    /// A rate limit binding failed, and its rule refuses then.
    RateLimitUnavailable,
    /// The DPoP proof is not acceptable (RFC 9449 §7.1 `invalid_dpop_proof`).
    InvalidProof(ProofError),
    /// The proof lacks a fresh nonce of this gate's (RFC 9449 §9
    /// `use_dpop_nonce`); the answer carries a new one.
    UseDpopNonce(NonceError),
    /// The token's scheme does not fit the route or the token.
    WrongScheme(SchemeRefusal),
    /// The Durable Object replay store failed or did not answer: whether
    /// the proof is a replay cannot be told.
    ReplayStoreUnavailable,
}

impl Denial {
    /// Stable reason code for the structured log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound => "no_route",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::NoCredentials => "no_credentials",
            Self::BadRequest(error) => error.reason(),
            Self::InvalidToken(error) => error.reason(),
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::KeysUnavailable(error) => error.reason(),
            Self::InactiveToken(refusal) => refusal.reason(),
            Self::IntrospectionUnavailable(error) => error.reason(),
            Self::PayloadTooLarge => "body_too_large",
            Self::MalformedRpc(error) => error.reason(),
            Self::HeaderMismatch { .. } => RpcError::HeaderMismatch.reason(),
            Self::UnsupportedProtocolVersion { .. } => "protocol_version_unsupported",
            Self::ForeignSession => "foreign_session",
            Self::InvalidRequestState { why, .. } => why.reason(),
            Self::BadGateway => "bad_gateway",
            Self::OriginUnavailable(fault) => fault.reason(),
            Self::SessionStoreUnavailable(_) => "session_store_unavailable",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::Misconfigured => "misconfigured",
            Self::AssertionKeyUnusable => "assertion_key_unusable",
            Self::RateLimited { .. } => "rate_limited",
            Self::RateLimitUnavailable => "rate_limit_unavailable",
            Self::InvalidProof(error) => error.reason(),
            Self::UseDpopNonce(error) => error.reason(),
            Self::WrongScheme(refusal) => refusal.reason(),
            Self::ReplayStoreUnavailable => "dpop_replay_unavailable",
        }
    }

    /// The wire form of this refusal. `route` is the protected resource the
    /// request was for; `None` when no route matched or the configuration
    /// itself is what failed (challenges then carry no `resource_metadata`).
    pub fn reply(&self, route: Option<&Route>) -> Reply {
        let challenge = |error: Option<&str>, description: Option<&str>, scope: Option<&str>| {
            challenge(route, error, description, scope, false)
        };
        match self {
            Self::NotFound => json_reply(404, "not_found", "No such resource", Vec::new()),
            Self::MethodNotAllowed { allow } => json_reply(
                405,
                "method_not_allowed",
                "Method not allowed",
                vec![("allow", (*allow).to_owned())],
            ),
            Self::NoCredentials => {
                // RFC 6750 §3.1: no error code when the request had no credentials.
                let scope = route
                    .map(|r| r.required_scopes.join(" "))
                    .filter(|s| !s.is_empty());
                let challenge = challenge(None, None, scope.as_deref());
                json_reply(
                    401,
                    "unauthorized",
                    "Authorization required",
                    vec![("www-authenticate", challenge)],
                )
            }
            Self::BadRequest(_) => {
                let description = "The request is malformed";
                let challenge = challenge(Some("invalid_request"), Some(description), None);
                json_reply(
                    400,
                    "invalid_request",
                    description,
                    vec![("www-authenticate", challenge)],
                )
            }
            Self::InvalidToken(_) | Self::InactiveToken(_) | Self::WrongScheme(_) => {
                let description = "The access token is invalid";
                let challenge = challenge(Some("invalid_token"), Some(description), None);
                json_reply(
                    401,
                    "invalid_token",
                    description,
                    vec![("www-authenticate", challenge)],
                )
            }
            Self::InsufficientScope { required } => {
                let description = "The access token lacks a required scope";
                let scope = required.join(" ");
                let challenge =
                    challenge(Some("insufficient_scope"), Some(description), Some(&scope));
                json_reply(
                    403,
                    "insufficient_scope",
                    description,
                    vec![("www-authenticate", challenge)],
                )
            }
            Self::KeysUnavailable(_) | Self::IntrospectionUnavailable(_) => json_reply(
                503,
                "temporarily_unavailable",
                "Authorization is temporarily unavailable",
                vec![("retry-after", RETRY_AFTER_SECONDS.to_string())],
            ),
            Self::PayloadTooLarge => json_reply(
                413,
                "payload_too_large",
                "The request body is too large",
                Vec::new(),
            ),
            Self::MalformedRpc(error) => {
                rpc_error_reply(400, error.code(), error.message(), None, None)
            }
            Self::HeaderMismatch { id } => rpc_error_reply(
                400,
                RpcError::HeaderMismatch.code(),
                RpcError::HeaderMismatch.message(),
                id.as_ref(),
                None,
            ),
            Self::UnsupportedProtocolVersion { id, refusal } => rpc_error_reply(
                400,
                UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                id.as_ref(),
                Some(refusal),
            ),
            // The MCP SDKs' answer to an unknown session: 404 with a JSON-RPC error.
            Self::ForeignSession => rpc_error_reply(404, -32001, "Session not found", None, None),
            // The Python SDK's own answer to a state that does not open: one
            // message whatever the reason.
            Self::InvalidRequestState { id, .. } => rpc_error_reply(
                400,
                -32602,
                "Invalid or expired requestState",
                id.as_ref(),
                None,
            ),
            Self::BadGateway | Self::OriginUnavailable(OriginFault::Unreachable) => json_reply(
                502,
                "bad_gateway",
                "The upstream server is unavailable",
                Vec::new(),
            ),
            Self::OriginUnavailable(
                OriginFault::ConnectTimeout | OriginFault::FirstByteTimeout,
            ) => json_reply(
                504,
                "gateway_timeout",
                "The upstream server did not answer in time",
                Vec::new(),
            ),
            Self::SessionStoreUnavailable(_) => json_reply(
                503,
                "temporarily_unavailable",
                "The service is temporarily unavailable",
                vec![("retry-after", STORE_RETRY_AFTER_SECONDS.to_string())],
            ),
            Self::OriginNotAllowed => {
                json_reply(403, "forbidden", "Origin not allowed", Vec::new())
            }
            Self::Misconfigured | Self::AssertionKeyUnusable => {
                json_reply(500, "server_error", "Internal error", Vec::new())
            }
            Self::RateLimited {
                retry_after,
                json_rpc,
                id,
            } => {
                let mut reply = if *json_rpc {
                    rpc_error_reply(
                        429,
                        RATE_LIMITED_CODE,
                        "Too many requests",
                        id.as_ref(),
                        None,
                    )
                } else {
                    json_reply(429, "rate_limited", "Too many requests", Vec::new())
                };
                reply.headers.push(("retry-after", retry_after.to_string()));
                reply
            }
            Self::RateLimitUnavailable | Self::ReplayStoreUnavailable => json_reply(
                503,
                "temporarily_unavailable",
                "The service is temporarily unavailable",
                vec![("retry-after", RETRY_AFTER_SECONDS.to_string())],
            ),
            Self::InvalidProof(_) => {
                let description = "The DPoP proof is invalid";
                let header = self::challenge(
                    route,
                    Some("invalid_dpop_proof"),
                    Some(description),
                    None,
                    true,
                );
                json_reply(
                    401,
                    "invalid_dpop_proof",
                    description,
                    vec![("www-authenticate", header)],
                )
            }
            Self::UseDpopNonce(_) => {
                // The fresh nonce itself is added by the machine, as on every
                // answer of a route that takes DPoP.
                let description = "A fresh DPoP nonce is required";
                let header =
                    self::challenge(route, Some("use_dpop_nonce"), Some(description), None, true);
                json_reply(
                    401,
                    "use_dpop_nonce",
                    description,
                    vec![("www-authenticate", header)],
                )
            }
        }
    }
}

/// The `WWW-Authenticate` value: a `Bearer` challenge (RFC 6750 §3), a
/// `DPoP` challenge with the proof algorithms the gate takes (RFC 9449
/// §7.1), or both, as the route takes either scheme, each with
/// `resource_metadata` (RFC 9728 §5.1) so a client can discover the
/// authorization server whichever it speaks. An error about the proof
/// (`dpop_only`) goes on the `DPoP` challenge alone.
///
/// Every value placed here is a fixed string, a configured URL, algorithm
/// names, or scopes checked against the scope-token syntax, so none needs
/// escaping. `offline_access` is never named (MCP 2026-07-28 authorization
/// §Refresh Tokens); a `scope` left empty is left out.
fn challenge(
    route: Option<&Route>,
    error: Option<&str>,
    description: Option<&str>,
    scope: Option<&str>,
    dpop_only: bool,
) -> String {
    let metadata = route.map(|r| r.resource.metadata_url.as_str());
    let policy = route.map_or(DpopPolicy::Bearer, |route| route.dpop);
    let scope = scope
        .map(|scopes| {
            scopes
                .split(' ')
                .filter(|scope| !scope.is_empty() && *scope != OFFLINE_ACCESS)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|scopes| !scopes.is_empty());
    let scope = scope.as_deref();
    let one =
        |scheme: &str, error: Option<&str>, description: Option<&str>, algs: Option<String>| {
            let params: Vec<String> = [
                error.map(|v| format!("error=\"{v}\"")),
                description.map(|v| format!("error_description=\"{v}\"")),
                scope.map(|v| format!("scope=\"{v}\"")),
                metadata.map(|v| format!("resource_metadata=\"{v}\"")),
                algs.map(|v| format!("algs=\"{v}\"")),
            ]
            .into_iter()
            .flatten()
            .collect();
            if params.is_empty() {
                scheme.to_owned()
            } else {
                format!("{scheme} {}", params.join(", "))
            }
        };
    let algs = || {
        route.map(|route| {
            let names: Vec<&str> = route.dpop_algorithms.iter().map(|alg| alg.name()).collect();
            names.join(" ")
        })
    };
    let bearer = || {
        if dpop_only {
            one("Bearer", None, None, None)
        } else {
            one("Bearer", error, description, None)
        }
    };
    match policy {
        DpopPolicy::Bearer => bearer(),
        DpopPolicy::Required => one("DPoP", error, description, algs()),
        DpopPolicy::Either => format!("{}, {}", bearer(), one("DPoP", error, description, algs())),
    }
}

fn json_reply(
    status: u16,
    error: &str,
    description: &str,
    mut headers: Vec<(&'static str, String)>,
) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        error_description: &'a str,
    }
    let body = serde_json::to_string(&Body {
        error,
        error_description: description,
    })
    .unwrap_or_default();
    headers.insert(0, ("content-type", "application/json".to_owned()));
    headers.push(("cache-control", "no-store".to_owned()));
    Reply {
        status,
        headers,
        body,
    }
}

/// A JSON-RPC error answer; `id` is the request's when the refusal concerns
/// one readable request, else `null` (JSON-RPC 2.0 §5); `data` when the
/// client acts on it (§5.1): what an unsupported revision may be answered
/// with. Members in text order, as serde_json's maps give them.
fn rpc_error_reply(
    status: u16,
    code: i64,
    message: &str,
    id: Option<&serde_json::Value>,
    data: Option<&Unsupported>,
) -> Reply {
    #[derive(Serialize)]
    struct Body<'a> {
        error: Error<'a>,
        /// `None` is written `null`.
        id: Option<&'a serde_json::Value>,
        jsonrpc: &'static str,
    }
    #[derive(Serialize)]
    struct Error<'a> {
        code: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Data<'a>>,
        message: &'a str,
    }
    #[derive(Serialize)]
    struct Data<'a> {
        requested: &'a str,
        supported: &'a [&'static str],
    }
    let body = Body {
        error: Error {
            code,
            data: data.map(|refusal| Data {
                requested: &refusal.requested,
                supported: &refusal.supported,
            }),
            message,
        },
        id,
        jsonrpc: "2.0",
    };
    Reply {
        status,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            ("cache-control", "no-store".to_owned()),
        ],
        body: serde_json::to_string(&body).unwrap_or_default(),
    }
}

/// The protected resource metadata document (RFC 9728 §2, §3.2).
#[derive(Serialize)]
struct ResourceMetadata<'a> {
    resource: &'a str,
    authorization_servers: Vec<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes_supported: &'a [String],
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<&'a str>,
    /// RFC 9728 §2: the proof algorithms taken, on a route that takes DPoP.
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_signing_alg_values_supported: Option<Vec<&'static str>>,
    /// RFC 9728 §2: every token must be DPoP-bound.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dpop_bound_access_tokens_required: bool,
}

/// `200` with the metadata document: JSON, cacheable, readable cross-origin
/// so browser-based clients can discover the authorization server.
pub fn metadata_reply(route: &Route) -> Reply {
    let document = ResourceMetadata {
        resource: &route.resource.uri,
        authorization_servers: route.issuers.iter().map(String::as_str).collect(),
        scopes_supported: &route.scopes_supported,
        bearer_methods_supported: ["header"],
        resource_name: route.resource_name.as_deref(),
        resource_documentation: route.resource_documentation.as_deref(),
        dpop_signing_alg_values_supported: route
            .dpop
            .accepts_dpop()
            .then(|| route.dpop_algorithms.iter().map(|alg| alg.name()).collect()),
        dpop_bound_access_tokens_required: route.dpop == DpopPolicy::Required,
    };
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/json".to_owned()),
            (
                "cache-control",
                format!("public, max-age={METADATA_MAX_AGE_SECONDS}"),
            ),
            ("access-control-allow-origin", "*".to_owned()),
        ],
        body: serde_json::to_string(&document).unwrap_or_default(),
    }
}

/// `200` with the JWK Set of the gate's assertion keys (RFC 7517 §5),
/// cacheable for [`JWKS_MAX_AGE_SECONDS`].
pub fn assertion_keys_reply(jwks: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![
            ("content-type", "application/jwk-set+json".to_owned()),
            (
                "cache-control",
                format!("public, max-age={JWKS_MAX_AGE_SECONDS}"),
            ),
        ],
        body: jwks.to_owned(),
    }
}

/// Response headers that let a script on an allowed `origin` read the
/// answer, including the challenge, the MCP session headers and the
/// `Retry-After` of a `429` or `503`.
pub fn cors_headers(origin: &str) -> Vec<(&'static str, String)> {
    vec![
        ("access-control-allow-origin", origin.to_owned()),
        (
            "access-control-expose-headers",
            "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After, DPoP-Nonce"
                .to_owned(),
        ),
        ("vary", "Origin".to_owned()),
    ]
}

/// Adds the CORS headers for an allowed `origin` to an answer's `headers`:
/// `Vary` appended, the others replacing any the answer had.
pub fn with_cors(headers: &mut Vec<(String, String)>, origin: &str) {
    for (name, value) in cors_headers(origin) {
        if name != "vary" {
            headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        }
        headers.push((name.to_owned(), value));
    }
}

/// `204` answer to a CORS preflight for the MCP endpoint from an allowed
/// origin. `requested` is the preflight's `Access-Control-Request-Headers`:
/// the `Mcp-Param-*` fields a tool's schema asks clients to send (MCP
/// 2026-07-28 Streamable HTTP §Custom Headers from Tool Parameters) have
/// names no fixed list can hold, so those requested are allowed by name
/// (a wildcard would not cover `Authorization`, Fetch §CORS protocol).
pub fn mcp_preflight_reply(origin: &str, requested: Option<&str>) -> Reply {
    let mut allowed = String::from(
        "Authorization, DPoP, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name",
    );
    for name in requested.unwrap_or_default().split(',').map(str::trim) {
        if is_param_header(name) && name.bytes().all(is_tchar) {
            allowed.push_str(", ");
            allowed.push_str(name);
        }
    }
    let mut headers = cors_headers(origin);
    headers.extend([
        (
            "access-control-allow-methods",
            "GET, POST, DELETE".to_owned(),
        ),
        ("access-control-allow-headers", allowed),
        ("access-control-max-age", "600".to_owned()),
    ]);
    Reply {
        status: 204,
        headers,
        body: String::new(),
    }
}

/// A field-name character (RFC 9110 §5.6.2 `tchar`).
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `204` answer to a CORS preflight for the metadata document.
pub fn metadata_preflight_reply() -> Reply {
    Reply {
        status: 204,
        headers: vec![
            ("access-control-allow-origin", "*".to_owned()),
            (
                "access-control-allow-methods",
                "GET, HEAD, OPTIONS".to_owned(),
            ),
            ("access-control-max-age", "86400".to_owned()),
        ],
        body: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// What `rpc_error_reply` built before: the body as serde_json values.
    fn with_json_values(
        code: i64,
        message: &str,
        id: Option<&Value>,
        data: Option<&Unsupported>,
    ) -> String {
        let mut error = json!({ "code": code, "message": message });
        if let Some(refusal) = data {
            error["data"] = json!({
                "supported": refusal.supported,
                "requested": refusal.requested,
            });
        }
        json!({
            "jsonrpc": "2.0",
            "id": id.cloned().unwrap_or(Value::Null),
            "error": error,
        })
        .to_string()
    }

    #[test]
    fn json_rpc_errors_are_written_as_the_json_values_wrote_them() {
        let refusal = Unsupported {
            requested: "2024-11-05 \"odd\"\n".to_owned(),
            supported: vec!["2025-11-25", "2026-07-28"],
        };
        let none = Unsupported {
            requested: String::new(),
            supported: Vec::new(),
        };
        let ids = [
            None,
            Some(json!(1)),
            Some(json!(-7)),
            Some(json!(1.5)),
            Some(json!("req-1 \u{7}ü")),
            Some(Value::Null),
            Some(json!({"b": [1, {"a": null}], "a": true})),
        ];
        for id in &ids {
            for data in [None, Some(&refusal), Some(&none)] {
                for (code, message) in [(-32600, "Invalid Request"), (i64::MIN, "\"quoted\"\t")] {
                    assert_eq!(
                        rpc_error_reply(400, code, message, id.as_ref(), data).body,
                        with_json_values(code, message, id.as_ref(), data),
                    );
                }
            }
        }
    }
}
