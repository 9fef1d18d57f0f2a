//! The structured log: one JSON line per request, the one place a line is
//! made. Lines name the route, the verified identity, what the JSON-RPC body
//! asked for and the reason of the decision (a stable code per refusal,
//! from [`crate::forward::reply::Denial::reason`]); never the token, a key or
//! a secret. The driver measures the duration, so a line is handed over
//! without `duration_ms` and its closing brace.

use serde::Serialize;

use crate::config::Config;
use crate::flow::gate::{Decision, RpcAudit, Verdict};

/// One line per request.
#[derive(Serialize)]
struct RequestLog<'a> {
    event: &'static str,
    decision: Verdict,
    reason: &'a str,
    method: &'a str,
    path: &'a str,
    /// The path of the route (protected resource) the request was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<String>,
    /// JSON-RPC methods, tools and the scopes they required (POST bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc: Option<&'a RpcAudit>,
    /// The rate limit rule that refused the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_rule: Option<&'a str>,
    /// Rules whose binding failed, letting the request go on uncounted.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    rate_limit_errors: &'a [String],
    /// Workers KV faults the request met (caches gone without, or the
    /// session store that refused it).
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    store_faults: &'a [&'static str],
    status: u16,
}

/// The request's line for `decision`, answered with `status`: without
/// `duration_ms` and the closing brace, which the driver adds
/// (`,"duration_ms":N}`).
pub fn request_log(
    config: Option<&Config>,
    decision: &Decision,
    method: &str,
    path: &str,
    status: u16,
) -> String {
    let token = decision.token.as_ref();
    let line = RequestLog {
        event: "request",
        decision: decision.verdict(),
        reason: decision.reason,
        method,
        path,
        route: decision
            .route
            .zip(config)
            .and_then(|(index, config)| config.routes.get(index))
            .map(|route| route.resource.path.as_str()),
        iss: token.map(|t| t.issuer.as_str()),
        sub: token.and_then(|t| t.subject.as_deref()),
        client_id: token.and_then(|t| t.client_id.as_deref()),
        scopes: token.map(|t| t.scopes.join(" ")),
        rpc: decision.audit.as_ref(),
        rate_rule: decision.rate_rule.as_deref(),
        rate_limit_errors: &decision.rate_limit_errors,
        store_faults: &decision.store_faults,
        status,
    };
    let mut text = serde_json::to_string(&line).unwrap_or_else(|_| String::from("{}"));
    text.pop();
    text
}

/// A background key set refresh (stale-while-revalidate), so operators see
/// an authorization server that stopped answering while stale keys still
/// serve. A whole line.
pub fn refresh_log(issuer: &str, failure: Option<&'static str>) -> String {
    #[derive(Serialize)]
    struct RefreshLog<'a> {
        event: &'static str,
        iss: &'a str,
        outcome: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
    }
    serde_json::to_string(&RefreshLog {
        event: "jwks_refresh",
        iss: issuer,
        outcome: if failure.is_none() {
            "refreshed"
        } else {
            "failed"
        },
        reason: failure,
    })
    .unwrap_or_default()
}

/// Any other event (`config_invalid`, `panic`, `runtime_error`): a whole
/// line with a detail that never quotes request data.
pub fn event_log(event: &'static str, field: &'static str, detail: Option<&str>) -> String {
    let mut line = serde_json::Map::new();
    line.insert("event".into(), event.into());
    if let Some(detail) = detail {
        line.insert(field.into(), detail.into());
    }
    serde_json::Value::Object(line).to_string()
}
