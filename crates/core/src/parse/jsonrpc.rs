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
    /// The protocol version the message carries in
    /// `params._meta["io.modelcontextprotocol/protocolVersion"]` (MCP
    /// 2026-07-28 per-request metadata); `None` when it carries none.
    pub protocol_version: Option<String>,
    /// The `params.protocolVersion` an `initialize` offers (MCP lifecycle,
    /// 2025 revisions); `None` for any other message.
    pub offered_version: Option<String>,
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
                protocol_version: None,
                offered_version: None,
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
    let protocol_version = params
        .and_then(|params| params.get("_meta"))
        .and_then(|meta| meta.get(PROTOCOL_VERSION_META))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let offered_version = params
        .filter(|_| method == "initialize")
        .and_then(|params| params.get("protocolVersion"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(RpcMessage {
        method: Some(method),
        target,
        id,
        protocol_version,
        offered_version,
    })
}

/// The member naming what `method` acts on in `params` (see
/// [`RpcMessage::target`]); required where scopes may depend on it, so `Err`
/// when a method that names a target lacks it.
pub fn target_of(
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

/// The `_meta` member carrying a request's protocol version (MCP 2026-07-28).
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// The first revision whose requests carry their metadata in headers that a
/// server must validate against the body.
pub const HEADER_METADATA_SINCE: &str = "2026-07-28";

/// The MCP request metadata headers of a POST (MCP 2026-07-28 Streamable
/// HTTP §Request Metadata), as received (several fields of one name joined
/// with `,`).
#[derive(Debug, Clone, Copy, Default)]
pub struct RoutingHeaders<'a> {
    /// `MCP-Protocol-Version`.
    pub protocol_version: Option<&'a str>,
    /// `Mcp-Method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`.
    pub name: Option<&'a str>,
}

/// Whether a protocol version (`YYYY-MM-DD`) is `HEADER_METADATA_SINCE` or
/// later (the revision that also brought multi round-trip requests).
/// Anything not shaped like a date is not.
pub fn carries_header_metadata(version: &str) -> bool {
    let shaped = version.len() == 10
        && version.bytes().enumerate().all(|(i, byte)| match i {
            4 | 7 => byte == b'-',
            _ => byte.is_ascii_digit(),
        });
    shaped && version >= HEADER_METADATA_SINCE
}

/// Checks the MCP routing headers against the body (MCP 2026-07-28
/// Streamable HTTP §Server Validation): a gate that authorizes on one and
/// lets something downstream act on the other would be a confused deputy.
///
/// - Headers present describe exactly one message, so they must match a
///   single message, whatever the revision (earlier clients may send them).
/// - A 2026-07-28 request (its `MCP-Protocol-Version` header or its body's
///   `_meta` protocol version says so) must also carry them: the version
///   header, equal to the body's; `Mcp-Method` on a request; `Mcp-Name` on
///   `tools/call`, `resources/read` and `prompts/get`.
/// - `Mcp-Name` is compared after decoding its Base64 form (§Value
///   Encoding: servers MUST decode it before comparing); a value that is
///   neither plain visible ASCII nor valid encoded UTF-8 is a mismatch
///   ("contains invalid characters").
pub fn check_routing_headers(
    headers: RoutingHeaders<'_>,
    messages: &[RpcMessage],
) -> Result<(), RpcError> {
    let header_version = headers.protocol_version.map(str::trim);
    let single = match messages {
        [message] => Some(message),
        _ => None,
    };
    let body_version = single.and_then(|message| message.protocol_version.as_deref());
    let modern = header_version.is_some_and(carries_header_metadata)
        || body_version.is_some_and(carries_header_metadata);
    if modern {
        let message = single.ok_or(RpcError::HeaderMismatch)?;
        if header_version.is_none() || header_version != body_version {
            return Err(RpcError::HeaderMismatch);
        }
        let is_request = message.method.is_some() && message.id.is_some();
        if is_request && headers.method.is_none() {
            return Err(RpcError::HeaderMismatch);
        }
        let names_a_target = matches!(
            message.method.as_deref(),
            Some(TOOLS_CALL | "resources/read" | "prompts/get")
        );
        if names_a_target && headers.name.is_none() {
            return Err(RpcError::HeaderMismatch);
        }
    }
    if headers.method.is_none() && headers.name.is_none() {
        return Ok(());
    }
    let message = single.ok_or(RpcError::HeaderMismatch)?;
    if let Some(method) = headers.method {
        if message.method.as_deref() != Some(method.trim()) {
            return Err(RpcError::HeaderMismatch);
        }
    }
    if let Some(name) = headers.name {
        let name = decode_header_value(name.trim()).ok_or(RpcError::HeaderMismatch)?;
        if message.target.as_deref() != Some(name.as_ref()) {
            return Err(RpcError::HeaderMismatch);
        }
    }
    Ok(())
}

/// Opening marker of the Base64 form of an MCP header value (lower case,
/// case-sensitive).
const ENCODED_PREFIX: &str = "=?base64?";
/// Closing marker of the Base64 form.
const ENCODED_SUFFIX: &str = "?=";

/// The value an `Mcp-Name` or `Mcp-Param-*` header carries: plain visible
/// ASCII (and inner spaces) as it is, or `=?base64?…?=` decoded (standard
/// alphabet, padded, over UTF-8). `None` for anything else: a plain value
/// with other characters, or an encoded one that does not decode to UTF-8.
/// A plain value that looks like the marker is never plain: clients must
/// encode it, so it is read as encoded.
pub fn decode_header_value(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    use base64ct::{Base64, Encoding};
    match raw
        .strip_prefix(ENCODED_PREFIX)
        .and_then(|rest| rest.strip_suffix(ENCODED_SUFFIX))
    {
        Some(encoded) => {
            let bytes = Base64::decode_vec(encoded).ok()?;
            String::from_utf8(bytes).ok().map(std::borrow::Cow::Owned)
        }
        None => raw
            .bytes()
            .all(|byte| (0x20..0x7F).contains(&byte))
            .then_some(std::borrow::Cow::Borrowed(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MCP 2026-07-28 Streamable HTTP §Value Encoding, the examples table.
    #[test]
    fn header_values_decode_as_the_spec_encodes_them() {
        for (encoded, value) in [
            ("us-west1", "us-west1"),
            ("=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"),
            ("=?base64?IHBhZGRlZCA=?=", " padded "),
            ("=?base64?bGluZTEKbGluZTI=?=", "line1\nline2"),
            ("=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=", "=?base64?literal?="),
            ("a name with spaces", "a name with spaces"),
        ] {
            assert_eq!(
                decode_header_value(encoded).as_deref(),
                Some(value),
                "{encoded}"
            );
        }
        for bad in [
            "=?base64?not base64?=",
            "=?base64?SGVsbG8?=",
            "=?base64?/w==?=",
            "caf\u{e9}",
            "tab\there",
        ] {
            assert_eq!(decode_header_value(bad), None, "{bad}");
        }
        // The markers are case-sensitive: an upper-case one is a plain value.
        assert_eq!(
            decode_header_value("=?BASE64?SGk=?=").as_deref(),
            Some("=?BASE64?SGk=?=")
        );
    }

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

    /// The headers of an earlier revision's request (no protocol version).
    fn check(
        method: Option<&str>,
        name: Option<&str>,
        messages: &[RpcMessage],
    ) -> Result<(), RpcError> {
        check_routing_headers(
            RoutingHeaders {
                protocol_version: None,
                method,
                name,
            },
            messages,
        )
    }

    /// MCP 2026-07-28 Streamable HTTP §Protocol Version Header, §Standard
    /// Request Headers, §Server Validation.
    #[test]
    fn a_2026_07_28_request_carries_every_header_and_its_version_agrees() {
        let call = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        let headers = |version, method, name| RoutingHeaders {
            protocol_version: version,
            method,
            name,
        };
        let modern = Some("2026-07-28");
        assert_eq!(
            check_routing_headers(headers(modern, Some("tools/call"), Some("lookup")), &call),
            Ok(())
        );
        for (version, method, name) in [
            (None, Some("tools/call"), Some("lookup")),
            (Some("2025-11-25"), Some("tools/call"), Some("lookup")),
            (modern, None, Some("lookup")),
            (modern, Some("tools/call"), None),
        ] {
            assert_eq!(
                check_routing_headers(headers(version, method, name), &call),
                Err(RpcError::HeaderMismatch),
                "{version:?} {method:?} {name:?}"
            );
        }
        // The version header alone makes the request modern: the body must agree.
        let bare = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            check_routing_headers(headers(modern, Some("tools/list"), None), &bare),
            Err(RpcError::HeaderMismatch)
        );
        // Earlier revisions need none of it.
        assert_eq!(
            check_routing_headers(headers(Some("2025-06-18"), None, None), &bare),
            Ok(())
        );
        let list = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        )
        .unwrap();
        assert_eq!(
            check_routing_headers(headers(modern, Some("tools/list"), None), &list),
            Ok(()),
            "tools/list names no target"
        );
    }

    #[test]
    fn routing_headers_must_match_the_single_message() {
        let call = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup"}}"#,
        )
        .unwrap();
        assert_eq!(check(None, None, &call), Ok(()));
        assert_eq!(check(Some("tools/call"), Some("lookup"), &call), Ok(()));
        assert_eq!(check(Some("tools/call"), None, &call), Ok(()));
        for (method, name) in [
            (Some("tools/list"), None),
            (Some("tools/call"), Some("void")),
            (None, Some("void")),
            (Some("TOOLS/CALL"), Some("lookup")),
        ] {
            assert_eq!(check(method, name, &call), Err(RpcError::HeaderMismatch));
        }
        let batch = parse_body(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#).unwrap();
        // The Base64 form is decoded before comparing.
        let unicode = parse_body(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"résumé 世界"}}"#
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            check(
                Some("tools/call"),
                Some("=?base64?csOpc3Vtw6kg5LiW55WM?="),
                &unicode
            ),
            Ok(())
        );
        assert_eq!(
            check(Some("tools/call"), Some("résumé 世界"), &unicode),
            Err(RpcError::HeaderMismatch),
            "a raw non-ASCII value is not a header value"
        );
        assert_eq!(
            check(Some("ping"), None, &batch),
            Err(RpcError::HeaderMismatch)
        );
        assert_eq!(check(None, None, &batch), Ok(()));
    }
}
