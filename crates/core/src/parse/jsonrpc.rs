//! Inspection of MCP request bodies: JSON-RPC 2.0 messages (JSON-RPC 2.0
//! §4–§6, MCP basic protocol "Messages"), single or batched, reduced to what
//! authorization needs: each request's method and, for the methods that name
//! one, its target (the tool of `tools/call`, the prompt of `prompts/get`, the
//! resource URI of `resources/read`). Also the MCP 2026-07-28 Streamable HTTP
//! routing headers `Mcp-Method` / `Mcp-Name`, which must agree with the body:
//! a gate that authorizes on one and lets the origin execute the other would
//! be a confused deputy.

use serde_json::{Map, Value};

/// One JSON-RPC message of a request body, as far as authorization cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMessage {
    /// The method of a request or notification; `None` for a response the
    /// client sends to a server-initiated request.
    pub method: Option<String>,
    /// What the method acts on: `params.name` of `tools/call` and
    /// `prompts/get`, `params.uri` of `resources/read`, `resources/subscribe`
    /// and `resources/unsubscribe`.
    pub target: Option<String>,
    /// The request id; `None` for notifications and responses.
    pub id: Option<Value>,
}

impl RpcMessage {
    /// The tool this message calls, when it is a `tools/call`.
    pub fn tool(&self) -> Option<&str> {
        match self.method.as_deref() {
            Some(TOOLS_CALL) => self.target.as_deref(),
            _ => None,
        }
    }
}

/// The method whose target is a tool name.
pub const TOOLS_CALL: &str = "tools/call";
/// The method whose response lists tools.
pub const TOOLS_LIST: &str = "tools/list";

/// Why a body is refused. Each maps to a JSON-RPC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcError {
    /// Not JSON at all (or not UTF-8).
    NotJson,
    /// JSON, but not a JSON-RPC 2.0 message or batch.
    NotJsonRpc,
    /// A method the gate authorizes by target lacks a string target.
    InvalidParams,
    /// `Mcp-Method` / `Mcp-Name` disagree with the body.
    HeaderMismatch,
}

impl RpcError {
    /// The JSON-RPC error code (JSON-RPC 2.0 §5.1; -32020 is MCP 2026-07-28's
    /// HeaderMismatch).
    pub fn code(self) -> i64 {
        match self {
            Self::NotJson => -32700,
            Self::NotJsonRpc => -32600,
            Self::InvalidParams => -32602,
            Self::HeaderMismatch => -32020,
        }
    }

    /// The generic message sent to the client.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotJson => "Parse error",
            Self::NotJsonRpc => "Invalid Request",
            Self::InvalidParams => "Invalid params",
            Self::HeaderMismatch => "Header mismatch",
        }
    }

    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotJson => "body_not_json",
            Self::NotJsonRpc => "body_not_jsonrpc",
            Self::InvalidParams => "rpc_invalid_params",
            Self::HeaderMismatch => "mcp_header_mismatch",
        }
    }
}

/// Parses a POST body: one JSON-RPC message or a non-empty batch.
pub fn parse_body(body: &[u8]) -> Result<Vec<RpcMessage>, RpcError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| RpcError::NotJson)?;
    match value {
        Value::Array(items) if items.is_empty() => Err(RpcError::NotJsonRpc),
        Value::Array(items) => items.iter().map(parse_message).collect(),
        single => Ok(vec![parse_message(&single)?]),
    }
}

fn parse_message(value: &Value) -> Result<RpcMessage, RpcError> {
    let object = value.as_object().ok_or(RpcError::NotJsonRpc)?;
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(RpcError::NotJsonRpc);
    }
    let id = match object.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        // JSON-RPC allows a null id only in error responses.
        Some(Value::Null) if object.contains_key("error") => Some(Value::Null),
        Some(_) => return Err(RpcError::NotJsonRpc),
    };
    let Some(method) = object.get("method") else {
        // A response to a server-initiated request: exactly one of result / error.
        let is_response =
            id.is_some() && (object.contains_key("result") != object.contains_key("error"));
        return if is_response {
            Ok(RpcMessage {
                method: None,
                target: None,
                id,
            })
        } else {
            Err(RpcError::NotJsonRpc)
        };
    };
    let method = method.as_str().ok_or(RpcError::NotJsonRpc)?.to_owned();
    let params = match object.get("params") {
        None => None,
        Some(Value::Object(params)) => Some(params),
        Some(Value::Array(_)) => None,
        Some(_) => return Err(RpcError::NotJsonRpc),
    };
    let target = target_of(&method, params)?;
    Ok(RpcMessage {
        method: Some(method),
        target,
        id,
    })
}

/// The member naming what `method` acts on; required where scopes may depend on it.
fn target_of(
    method: &str,
    params: Option<&Map<String, Value>>,
) -> Result<Option<String>, RpcError> {
    let member = match method {
        TOOLS_CALL | "prompts/get" => "name",
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
        _ => return Ok(None),
    };
    params
        .and_then(|params| params.get(member))
        .and_then(Value::as_str)
        .map(|target| Some(target.to_owned()))
        .ok_or(RpcError::InvalidParams)
}

/// Checks the MCP 2026-07-28 routing headers against the body. Absent headers
/// are not required here (older protocol revisions do not send them); present
/// ones describe exactly one request, so they must match a single message.
pub fn check_routing_headers(
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    messages: &[RpcMessage],
) -> Result<(), RpcError> {
    if mcp_method.is_none() && mcp_name.is_none() {
        return Ok(());
    }
    let [message] = messages else {
        return Err(RpcError::HeaderMismatch);
    };
    if let Some(method) = mcp_method {
        if message.method.as_deref() != Some(method.trim()) {
            return Err(RpcError::HeaderMismatch);
        }
    }
    if let Some(name) = mcp_name {
        if message.target.as_deref() != Some(name.trim()) {
            return Err(RpcError::HeaderMismatch);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> RpcMessage {
        let mut messages = parse_body(body.as_bytes()).unwrap();
        assert_eq!(messages.len(), 1);
        messages.remove(0)
    }

    #[test]
    fn reads_method_target_and_id() {
        let call = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"void_invoice","arguments":{}}}"#,
        );
        assert_eq!(call.method.as_deref(), Some("tools/call"));
        assert_eq!(call.tool(), Some("void_invoice"));
        assert_eq!(call.id, Some(Value::from(7)));
        let read = one(
            r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#,
        );
        assert_eq!(read.target.as_deref(), Some("file:///x"));
        assert_eq!(read.tool(), None);
        let note = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!(
            (note.method.as_deref(), note.id),
            (Some("notifications/initialized"), None)
        );
        let response = one(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#);
        assert_eq!(response.method, None);
    }

    #[test]
    fn batches_keep_every_message() {
        let batch = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
                {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a"}}]"#,
        )
        .unwrap();
        let methods: Vec<_> = batch.iter().map(|m| m.method.as_deref()).collect();
        assert_eq!(methods, [Some("tools/list"), Some("tools/call")]);
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        for (body, error) in [
            ("", RpcError::NotJson),
            ("{", RpcError::NotJson),
            ("\u{feff}{}", RpcError::NotJson),
            ("[]", RpcError::NotJsonRpc),
            ("42", RpcError::NotJsonRpc),
            ("{}", RpcError::NotJsonRpc),
            (r#"{"jsonrpc":"1.0","method":"x"}"#, RpcError::NotJsonRpc),
            (r#"{"jsonrpc":"2.0","method":5}"#, RpcError::NotJsonRpc),
            (
                r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
                RpcError::NotJsonRpc,
            ),
            (
                r#"{"jsonrpc":"2.0","method":"x","params":"s"}"#,
                RpcError::NotJsonRpc,
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, RpcError::NotJsonRpc),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
                RpcError::NotJsonRpc,
            ),
            (
                r#"[{"jsonrpc":"2.0","method":"ping","id":1}, 3]"#,
                RpcError::NotJsonRpc,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                RpcError::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
                RpcError::InvalidParams,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{}}"#,
                RpcError::InvalidParams,
            ),
        ] {
            assert_eq!(parse_body(body.as_bytes()), Err(error), "{body}");
        }
    }

    #[test]
    fn routing_headers_must_match_the_single_message() {
        let call = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup"}}"#,
        )
        .unwrap();
        assert_eq!(check_routing_headers(None, None, &call), Ok(()));
        assert_eq!(
            check_routing_headers(Some("tools/call"), Some("lookup"), &call),
            Ok(())
        );
        assert_eq!(
            check_routing_headers(Some("tools/call"), None, &call),
            Ok(())
        );
        for (method, name) in [
            (Some("tools/list"), None),
            (Some("tools/call"), Some("void")),
            (None, Some("void")),
            (Some("TOOLS/CALL"), Some("lookup")),
        ] {
            assert_eq!(
                check_routing_headers(method, name, &call),
                Err(RpcError::HeaderMismatch)
            );
        }
        let batch = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#).unwrap();
        assert_eq!(
            check_routing_headers(Some("ping"), None, &batch),
            Err(RpcError::HeaderMismatch)
        );
        assert_eq!(check_routing_headers(None, None, &batch), Ok(()));
    }
}
