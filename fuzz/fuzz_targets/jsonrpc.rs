//! Fuzzes the JSON-RPC 2.0 inspection of MCP request bodies (JSON-RPC 2.0
//! §4–6, MCP 2026-07-28 routing headers, crates/core/src/parse/jsonrpc.rs) and the scope policy
//! applied to what it finds (crates/core/src/authorize/policy.rs). Input: line 1 the Mcp-Method
//! header, line 2 the Mcp-Name header (empty: absent), then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::authorize::policy::{ScopeMap, ScopePolicy};
use portcullis_core::parse::jsonrpc::{check_routing_headers, parse_body, RoutingHeaders};
use std::sync::OnceLock;

fn policy() -> &'static ScopePolicy {
    static POLICY: OnceLock<ScopePolicy> = OnceLock::new();
    POLICY.get_or_init(|| ScopePolicy {
        required: vec!["mcp".to_owned()],
        methods: ScopeMap::parse(r#"{"tools/call":"mcp:call","*":"mcp:read"}"#)
            .expect("policy parses"),
        tools: ScopeMap::parse(r#"{"void_invoice":["invoices:write"],"*":"mcp:call"}"#)
            .expect("policy parses"),
        implies: Default::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let (Some(method), Some(name), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let header = |raw: &[u8]| {
        std::str::from_utf8(raw)
            .ok()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let (method, name) = (header(method), header(name));
    let Ok(messages) = parse_body(body) else {
        return;
    };
    assert!(!messages.is_empty());
    // With and without the protocol version that makes the headers required.
    for protocol_version in [None, Some("2026-07-28")] {
        let headers = RoutingHeaders {
            protocol_version,
            method: method.as_deref(),
            name: name.as_deref(),
        };
        let _ = check_routing_headers(headers, &messages);
    }
    let needed = policy().required_for(&messages);
    assert!(needed.contains("mcp"));
    for message in &messages {
        if let Some(tool) = message.tool() {
            let held: Vec<String> = needed.iter().cloned().collect();
            let _ = policy().may_call_tool(tool, &held);
        }
    }
});
