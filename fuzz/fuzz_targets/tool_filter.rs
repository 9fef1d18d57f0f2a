//! Fuzzes the rewriting of the origin's answers (MCP "Tools" listing and
//! multi round-trip `requestState`; WHATWG HTML §9.2 event streams;
//! crates/core/src/forward/rewrite.rs) on JSON bodies and on event streams
//! cut into chunks at fuzzer-chosen places. No input may panic; filtering is
//! idempotent (a filtered answer holds nothing left to remove), and a sealed
//! answer is still JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::authorize::policy::{ScopeMap, ScopePolicy};
use portcullis_core::authorize::request_state::{open_body, Holder, StateKey};
use portcullis_core::authorize::tool_filter::ToolListFilter;
use portcullis_core::forward::rewrite::AnswerRewrite;
use serde_json::Value;

fn filter() -> AnswerRewrite {
    let tools = ToolListFilter {
        request_ids: vec![Value::from(1), Value::from("a")],
        policy: ScopePolicy {
            required: Vec::new(),
            methods: ScopeMap::default(),
            tools: ScopeMap::parse(r#"{"void_invoice":"invoices:write","*":"mcp:call"}"#)
                .expect("policy parses"),
            implies: Default::default(),
        },
        held: vec!["mcp:call".to_owned()],
    };
    AnswerRewrite {
        learn: None,
        tools: Some(tools),
        states: None,
    }
}

/// Seals the states of answers to two calls, ids 1 and "a".
fn sealer() -> AnswerRewrite {
    let key = StateKey::parse("fuzz-fuzz-fuzz-fuzz-fuzz-fuzz-fuzz").expect("a long secret");
    let holder = Holder {
        resource: "https://mcp.example.com/mcp".to_owned(),
        issuer: "https://as.example.com".to_owned(),
        subject: Some("user".to_owned()),
        client_id: None,
    };
    let calls = br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}},{"jsonrpc":"2.0","id":"a","method":"prompts/get","params":{"name":"p"}}]"#;
    let opened = open_body(&key, &holder, 0, calls).expect("no state to open");
    AnswerRewrite {
        learn: None,
        tools: None,
        states: opened.sealer,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(filtered)) = filter().rewrite_json(data) {
        // What changed must still be JSON, and filtering it again changes nothing.
        assert!(serde_json::from_slice::<Value>(&filtered).is_ok());
        assert_eq!(filter().rewrite_json(&filtered), Ok(None));
    }
    if let Ok(Some(sealed)) = sealer().rewrite_json(data) {
        assert!(serde_json::from_slice::<Value>(&sealed).is_ok());
    }
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for rewrite in [filter(), sealer()] {
        let mut sse = rewrite.sse();
        let mut out = Vec::new();
        for chunk in data.chunks(step) {
            out.extend(sse.push(chunk));
        }
        out.extend(sse.finish());
    }
});
