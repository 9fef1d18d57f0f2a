//! Fuzzes what MCP 2026-07-28 adds to the gate's reading of attacker- and
//! origin-controlled JSON: `requestState` opened from a request body
//! (crates/core/src/authorize/request_state.rs), a tool's `x-mcp-header`
//! marks read from its schema, and `Mcp-Param-*` headers checked by them
//! (crates/core/src/parse/tool_headers.rs). No input may panic, and no state
//! the gate did not seal opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::authorize::request_state::{open_body, Holder, StateKey};
use portcullis_core::parse::tool_headers::{check_param_headers, marks};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let key = StateKey::parse("fuzz-fuzz-fuzz-fuzz-fuzz-fuzz-fuzz").expect("a long secret");
    let holder = Holder {
        resource: "https://mcp.example.com/mcp".to_owned(),
        issuer: "https://as.example.com".to_owned(),
        subject: Some("user".to_owned()),
        client_id: Some("agent".to_owned()),
    };
    if let Ok(opened) = open_body(&key, &holder, 0, data) {
        // Opening rewrites a body only when it held a state, and only one
        // the key sealed: a fuzzer cannot forge the tag.
        assert!(
            opened.body.is_none(),
            "a state the gate never sealed opened"
        );
    }
    // The first half as a schema, the rest as one header value and a body.
    let (schema, rest) = data.split_at(data.len() / 2);
    let Ok(schema) = serde_json::from_slice::<Value>(schema) else {
        return;
    };
    let Some(found) = marks(&schema) else {
        return;
    };
    let header = String::from_utf8_lossy(rest.get(..rest.len().min(64)).unwrap_or_default());
    let names: Vec<&str> = found.iter().map(|mark| mark.header.as_str()).collect();
    let params: Vec<(&str, &str)> = names.iter().map(|name| (*name, header.as_ref())).collect();
    let _ = check_param_headers(&params, rest, Some(&found));
});
