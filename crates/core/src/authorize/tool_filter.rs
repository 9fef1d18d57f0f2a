//! Filtered discovery: the `tools/list` result (MCP server features, "Tools",
//! listing) a client receives holds only the tools its token may call, so a
//! client cannot learn the names of tools it may not use. Works on one
//! JSON-RPC response; [`crate::forward::rewrite`] applies it to a JSON body
//! or an event stream.

use serde_json::Value;

use crate::authorize::policy::ScopePolicy;

/// The result member saying who may reuse a list (MCP 2026-07-28).
const CACHE_SCOPE: &str = "cacheScope";
/// The result member saying for how long, in milliseconds.
const TTL_MS: &str = "ttlMs";
/// The scope of a result only its requester may reuse.
const PRIVATE: &str = "private";

/// Which responses to filter, and what the token may call.
#[derive(Debug, Clone)]
pub struct ToolListFilter {
    /// Ids of the `tools/list` requests in the request body.
    pub request_ids: Vec<Value>,
    /// The policy the token is judged by.
    pub policy: ScopePolicy,
    /// The token's scopes.
    pub held: Vec<String>,
}

impl ToolListFilter {
    /// Removes tools from `message` when it is the response to one of the
    /// `tools/list` requests; returns whether anything changed.
    ///
    /// A list the gate filters depends on the token, so a result that says
    /// how it may be cached (MCP 2026-07-28 `ttlMs` / `cacheScope`, SEP-2549)
    /// is marked `"private"`: a cache shared across users must not hand one
    /// user's list to another, naming tools they may not call. The origin's
    /// `ttlMs` is kept (0 when it gave none). Results of earlier revisions,
    /// which carry neither member, are left without them.
    pub fn filter_message(&self, message: &mut Value) -> bool {
        let is_ours = message
            .get("id")
            .is_some_and(|id| self.request_ids.contains(id));
        if !is_ours {
            return false;
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            return false;
        };
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return false;
        };
        let before = tools.len();
        tools.retain(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| self.policy.may_call_tool(name, &self.held))
        });
        let mut changed = tools.len() != before;
        let cacheable = result.contains_key(CACHE_SCOPE) || result.contains_key(TTL_MS);
        if cacheable && result.get(CACHE_SCOPE).and_then(Value::as_str) != Some(PRIVATE) {
            result.insert(CACHE_SCOPE.to_owned(), Value::from(PRIVATE));
            result.entry(TTL_MS).or_insert(Value::from(0));
            changed = true;
        }
        changed
    }
}
