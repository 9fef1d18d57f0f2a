//! The pieces of a request's decision that need no I/O: which resource a
//! path names (RFC 9728 §3.1 metadata paths, the protected resources of MCP
//! authorization), what the JSON-RPC body of a POST may ask for (MCP
//! authorization "Scope Challenge Handling", Streamable HTTP routing
//! headers), and the record of the decision the log line is made from.
//! [`crate::flow::machine`] runs them in order for one request.

use std::rc::Rc;

use serde::Serialize;

use crate::authorize::request_state::{open_body, Holder, StateSealer, STATEFUL_METHODS};
use crate::authorize::tool_filter::ToolListFilter;
use crate::config::{Config, Route};
use crate::forward::assertion::{Call, JWKS_PATH};
use crate::forward::origin::OriginRequest;
use crate::forward::reply::{Denial, Reply};
use crate::forward::rewrite::AnswerRewrite;
use crate::parse::jsonrpc::{
    carries_header_metadata, check_routing_headers, parse_body, RoutingHeaders, RpcError,
    RpcMessage, TOOLS_CALL, TOOLS_LIST,
};
use crate::parse::tool_headers::{
    check_param_headers, is_param_header, SchemaLearner, ToolSchemas,
};
use crate::parse::version::{check_minimum, request_revision};
use crate::verify::jwt::AccessToken;

/// Methods forwarded to the origin (MCP Streamable HTTP transport).
pub const FORWARDED_METHODS: &str = "GET, POST, DELETE";

/// The parts of an incoming request the gate reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// HTTP method, upper case.
    pub method: &'a str,
    /// URL path, as the runtime parsed it.
    pub path: &'a str,
    /// Raw query, without `?`.
    pub query: Option<&'a str>,
    /// Header fields; names in any case.
    pub headers: &'a [(String, String)],
}

impl<'a> RequestHead<'a> {
    /// Every value of the field `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&'a str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of the field `name`.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What was done with the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing yet.
    #[default]
    Undecided,
    /// Answer it from the gate.
    Reply(Reply),
    /// Send this to the origin and stream its answer back.
    Forward(OriginRequest),
}

/// The outcome plus what the structured log should say about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The rate limit rule that refused the request, by name.
    pub rate_rule: Option<String>,
    /// Rate limit rules whose binding failed and let the request go on.
    pub rate_limit_errors: Vec<String>,
    /// Workers KV faults met on the way ([`crate::io::StoreFault::reason`]),
    /// each once, whether the request went on without the store or not.
    pub store_faults: Vec<&'static str>,
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
    /// Allow, deny or serve.
    pub fn verdict(&self) -> Verdict {
        match &self.outcome {
            Outcome::Forward(_) => Verdict::Allow,
            Outcome::Reply(reply) if reply.status < 400 => Verdict::Serve,
            Outcome::Reply(_) | Outcome::Undecided => Verdict::Deny,
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The protected resource metadata of the route at this index.
    Metadata(usize),
    /// The JWK Set of the gate's assertion keys.
    AssertionKeys,
    /// The protected resource of the route at `index`; what follows the
    /// route's path starts at byte `suffix` of the path.
    Protected {
        /// Index in [`Config::routes`].
        index: usize,
        /// Byte offset of the sub-path below the resource.
        suffix: usize,
    },
    /// Nothing the gate serves.
    Unknown,
}

/// Routes by path: a route's metadata, or the longest route path covering
/// the request (MCP authorization: each protected resource is its own).
pub fn target(config: &Config, path: &str) -> Target {
    if let Some(index) = config.route_for_metadata(path) {
        return Target::Metadata(index);
    }
    if path == JWKS_PATH && config.assertion.is_some() {
        return Target::AssertionKeys;
    }
    if has_path_trickery(path) || path.starts_with("/.well-known/") {
        return Target::Unknown;
    }
    match config.route_for(path) {
        Some((index, suffix)) => Target::Protected {
            index,
            suffix: path.len() - suffix.len(),
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

/// How to forward an authorized JSON-RPC body, and what its answer needs.
#[derive(Debug, Clone)]
pub struct RpcPlan {
    /// For the log.
    pub audit: RpcAudit,
    /// Set when the answer is rewritten: a `tools/list` the policy may
    /// filter, a `requestState` to seal, tools' header marks to learn.
    pub rewrite: Option<AnswerRewrite>,
    /// The body to forward instead of the client's: its `requestState`
    /// opened back into the origin's own.
    pub forward_body: Option<Vec<u8>>,
    /// The messages that have a method, as the assertion names them.
    pub calls: Vec<Call>,
    /// The id of the body's single request (`None`: a batch, or a
    /// notification), for a later refusal's JSON-RPC error.
    pub single_id: Option<serde_json::Value>,
}

/// Authorizes the JSON-RPC body of a POST from a verified `token`: the body
/// must be JSON-RPC, agree with the MCP routing headers, and the token must
/// hold every scope its messages need (route-level, per method, per tool);
/// a `requestState` it carries must open for the token's holder. `schemas`:
/// the tools' header marks this isolate learned, used and added to at `now`.
/// The refusal carries the audit record when the body could be read.
pub fn authorize_rpc(
    config: &Config,
    route: &Route,
    request: &RequestHead<'_>,
    token: &AccessToken,
    body: &[u8],
    schemas: &Rc<ToolSchemas>,
    now: i64,
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
    let (protocol_version, method, name) = (
        header("mcp-protocol-version"),
        header("mcp-method"),
        header("mcp-name"),
    );
    let routing = RoutingHeaders {
        protocol_version: protocol_version.as_deref(),
        method: method.as_deref(),
        name: name.as_deref(),
    };
    let params: Vec<(&str, &str)> = request
        .headers
        .iter()
        .filter(|(name, _)| is_param_header(name))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // Only 2026-07-28 clients mirror arguments: an earlier one sends no
    // Mcp-Param-* field, and must not be refused for leaving one out.
    let modern = carries_header_metadata(request_revision(protocol_version.as_deref(), &messages));
    let marks = match messages.as_slice() {
        [message] if modern => message
            .tool()
            .and_then(|tool| schemas.marks(&route.resource.uri, tool, now)),
        _ => None,
    };
    let checked = check_routing_headers(routing, &messages)
        .and_then(|()| check_param_headers(&params, body, marks.as_deref().map(Vec::as_slice)));
    if let Err(error) = checked {
        let denial = match (error, messages.as_slice()) {
            (RpcError::HeaderMismatch, [message]) => Denial::HeaderMismatch {
                id: message.id.clone(),
            },
            (RpcError::HeaderMismatch, _) => Denial::HeaderMismatch { id: None },
            (error, _) => Denial::MalformedRpc(error),
        };
        return Err((denial, Some(audit)));
    }
    let min_version = config.min_protocol_version;
    if let Err(denial) = check_revision(min_version, protocol_version.as_deref(), &messages) {
        return Err((denial, Some(audit)));
    }
    // Decisions use the token's effective scopes (a broader scope holds the
    // narrower ones it implies); the challenge names, in one go, every
    // scope the operation needs that another of them does not cover.
    let held = route.policy.implies.effective(&token.scopes);
    if required.iter().any(|scope| !held.contains(scope)) {
        let denial = Denial::InsufficientScope {
            required: route.policy.implies.broadest(&audit.required_scopes),
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
    // Only 2026-07-28 tools carry header marks.
    let learn = (modern && !list_ids.is_empty()).then(|| SchemaLearner {
        schemas: Rc::clone(schemas),
        resource: route.resource.uri.clone(),
        list_ids: list_ids.clone(),
        now,
    });
    let tools = (!list_ids.is_empty() && may_hide_tools).then(|| ToolListFilter {
        request_ids: list_ids,
        policy: policy.clone(),
        held,
    });
    let stateful = messages.iter().any(|message| {
        message
            .method
            .as_deref()
            .is_some_and(|method| STATEFUL_METHODS.contains(&method))
    });
    let (forward_body, states) = match &config.state_key {
        // Answers of earlier revisions carry no state, so their bodies are
        // opened only to refuse one that does.
        Some(key) if stateful && (modern || StateSealer::may_concern(body)) => {
            let holder = Holder {
                resource: route.resource.uri.clone(),
                issuer: token.issuer.clone(),
                subject: token.subject.clone(),
                client_id: token.client_id.clone(),
            };
            match open_body(key, &holder, now, body) {
                Ok(opened) => (opened.body, opened.sealer.filter(|_| modern)),
                Err(refused) => {
                    let denial = Denial::InvalidRequestState {
                        id: refused.id,
                        why: refused.why,
                    };
                    return Err((denial, Some(audit)));
                }
            }
        }
        _ => (None, None),
    };
    let rewrite =
        (tools.is_some() || states.is_some() || learn.is_some()).then_some(AnswerRewrite {
            learn,
            tools,
            states,
        });
    let single_id = match messages.as_slice() {
        [message] => message.id.clone(),
        _ => None,
    };
    let calls = messages
        .into_iter()
        .filter_map(|message| {
            Some(Call {
                method: message.method?,
                name: message.target,
            })
        })
        .collect();
    Ok(RpcPlan {
        audit,
        rewrite,
        forward_body,
        calls,
        single_id,
    })
}

/// Refuses a request whose MCP revision is older than `minimum`
/// (`MCP_MIN_PROTOCOL_VERSION`); `messages` is empty for a request without a
/// JSON-RPC body (`GET`, `DELETE`), whose revision only its header names.
pub fn check_revision(
    minimum: Option<&str>,
    header: Option<&str>,
    messages: &[RpcMessage],
) -> Result<(), Denial> {
    let Some(minimum) = minimum else {
        return Ok(());
    };
    check_minimum(minimum, request_revision(header, messages)).map_err(|refusal| {
        Denial::UnsupportedProtocolVersion {
            id: match messages {
                [message] => message.id.clone(),
                _ => None,
            },
            refusal: Box::new(refusal),
        }
    })
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
