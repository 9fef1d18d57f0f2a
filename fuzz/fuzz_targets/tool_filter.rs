//! Fuzzes the `tools/list` response filter (MCP "Tools" listing; WHATWG HTML
//! §9.2 event streams; crates/core/src/authorize/tool_filter.rs) on JSON bodies and on event
//! streams cut into chunks at fuzzer-chosen places. No input may panic, and
//! filtering is idempotent: a filtered answer holds nothing left to remove.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::authorize::policy::{ScopeMap, ScopePolicy};
use portcullis_core::authorize::tool_filter::ToolListFilter;
use serde_json::Value;

fn filter() -> ToolListFilter {
    ToolListFilter {
        request_ids: vec![Value::from(1), Value::from("a")],
        policy: ScopePolicy {
            required: Vec::new(),
            methods: ScopeMap::default(),
            tools: ScopeMap::parse(r#"{"void_invoice":"invoices:write","*":"mcp:call"}"#)
                .expect("policy parses"),
            implies: Default::default(),
        },
        held: vec!["mcp:call".to_owned()],
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(filtered)) = filter().filter_json(data) {
        // What changed must still be JSON, and filtering it again changes nothing.
        assert!(serde_json::from_slice::<Value>(&filtered).is_ok());
        assert_eq!(filter().filter_json(&filtered), Ok(None));
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut sse = filter().sse();
    let mut out = Vec::new();
    for chunk in data.chunks(step) {
        out.extend(sse.push(chunk));
    }
    out.extend(sse.finish());
});
