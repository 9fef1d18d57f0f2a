//! The origin's answer as the client receives it: each JSON-RPC response in
//! a JSON body (single or batch) or, incrementally, in a Server-Sent Events
//! stream (WHATWG HTML §9.2 event stream format, as MCP Streamable HTTP uses
//! it) passes through the rewrites the request's authorization asked for:
//! the `tools/list` filter ([`crate::authorize::tool_filter`]) and the
//! sealing of `requestState` ([`crate::authorize::request_state`]); the
//! tools' header marks are learned on the way
//! ([`crate::parse::tool_headers`]).
//! Complete events pass on as soon as they are complete; only the `data` of
//! a response that changes is rewritten.

use serde_json::Value;

use crate::authorize::request_state::StateSealer;
use crate::authorize::tool_filter::ToolListFilter;
use crate::parse::tool_headers::SchemaLearner;

/// The rewrites of one request's answer, and what the gate learns from it;
/// at least one is set.
#[derive(Debug, Clone)]
pub struct AnswerRewrite {
    /// Learns the tools' header marks from a `tools/list` answer (before it
    /// is filtered: the marks of a tool are the same for every caller).
    pub learn: Option<SchemaLearner>,
    /// Hides the tools the token may not call.
    pub tools: Option<ToolListFilter>,
    /// Seals the origin's `requestState` to the caller.
    pub states: Option<StateSealer>,
}

/// The origin's answer could not be read, so it cannot be rewritten; it
/// must not reach the client as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unrewritable;

impl AnswerRewrite {
    /// Whether `bytes` may hold a response this rewrites: a cheap test that
    /// spares parsing answers to calls whose state needs no sealing.
    fn may_concern(&self, bytes: &[u8]) -> bool {
        self.tools.is_some() || self.learn.is_some() || StateSealer::may_concern(bytes)
    }

    fn rewrite_message(&self, message: &mut Value) -> bool {
        if let Some(learn) = &self.learn {
            learn.learn_message(message);
        }
        let filtered = self
            .tools
            .as_ref()
            .is_some_and(|tools| tools.filter_message(message));
        let sealed = self
            .states
            .as_ref()
            .is_some_and(|states| states.seal_message(message));
        filtered | sealed
    }

    fn rewrite_value(&self, value: &mut Value) -> bool {
        match value {
            Value::Array(messages) => messages.iter_mut().fold(false, |changed, message| {
                self.rewrite_message(message) | changed
            }),
            message => self.rewrite_message(message),
        }
    }

    /// Rewrites a complete JSON response body. `Ok(None)`: pass it unchanged.
    /// A body that is not JSON is [`Unrewritable`] when it may list tools;
    /// an answer to a call whose state is sealed passes (no state in it can
    /// be echoed back in a form the gate opens).
    pub fn rewrite_json(&self, body: &[u8]) -> Result<Option<Vec<u8>>, Unrewritable> {
        if !self.may_concern(body) {
            return Ok(None);
        }
        let mut value: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) if self.tools.is_none() => return Ok(None),
            Err(_) => return Err(Unrewritable),
        };
        if !self.rewrite_value(&mut value) {
            return Ok(None);
        }
        serde_json::to_vec(&value)
            .map(Some)
            .map_err(|_| Unrewritable)
    }

    /// An incremental rewrite for an event stream.
    pub fn sse(self) -> SseRewrite {
        SseRewrite {
            rewrite: self,
            pending: Vec::new(),
        }
    }
}

/// Rewrites an SSE stream chunk by chunk, holding back only an incomplete
/// event.
#[derive(Debug)]
pub struct SseRewrite {
    rewrite: AnswerRewrite,
    pending: Vec<u8>,
}

impl SseRewrite {
    /// Takes the next chunk; returns the bytes that may be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            out.extend(self.rewrite_event(event));
        }
        out
    }

    /// The end of the stream: whatever is left (an unterminated event is
    /// dispatched by no client, but is rewritten all the same).
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        if rest.is_empty() {
            rest
        } else {
            self.rewrite_event(rest)
        }
    }

    /// Rewrites the event's data when it is a response to rewrite, keeping
    /// every other field and line ending as they were.
    fn rewrite_event(&self, event: Vec<u8>) -> Vec<u8> {
        if !self.rewrite.may_concern(&event) {
            return event;
        }
        let Ok(text) = std::str::from_utf8(&event) else {
            return event;
        };
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|line| field_value(line, "data"))
            .collect();
        if data.is_empty() {
            return event;
        }
        let mut message: Value = match serde_json::from_str(&data.join("\n")) {
            Ok(message) => message,
            Err(_) => return event,
        };
        if !self.rewrite.rewrite_value(&mut message) {
            return event;
        }
        let Ok(json) = serde_json::to_string(&message) else {
            return event;
        };
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let mut out = String::with_capacity(text.len());
        let mut data_written = false;
        for line in lines {
            if field_value(line, "data").is_some() {
                if !data_written {
                    out.push_str("data: ");
                    out.push_str(&json);
                    out.push_str(newline);
                    data_written = true;
                }
            } else {
                out.push_str(line);
            }
        }
        out.into_bytes()
    }
}

/// The value of `field` on this line (`field: value` or `field:value`).
fn field_value<'l>(line: &'l str, field: &str) -> Option<&'l str> {
    let line = line.trim_end_matches(['\n', '\r']);
    let rest = line.strip_prefix(field)?.strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// The index just past the blank line ending the first complete event.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    let mut i = 0;
    while i < buffer.len() {
        let terminator = match buffer[i] {
            b'\n' => 1,
            b'\r' if buffer.get(i + 1) == Some(&b'\n') => 2,
            // A lone CR may be the first half of a CRLF still to come.
            b'\r' if i + 1 == buffer.len() => return None,
            b'\r' => 1,
            _ => {
                i += 1;
                continue;
            }
        };
        if i == line_start {
            return Some(i + terminator);
        }
        i += terminator;
        line_start = i;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authorize::policy::{ScopeMap, ScopePolicy};

    fn filter() -> AnswerRewrite {
        let tools = ToolListFilter {
            request_ids: vec![Value::from(2)],
            policy: ScopePolicy {
                required: Vec::new(),
                methods: ScopeMap::default(),
                tools: ScopeMap::parse(r#"{"lookup": "read", "void": "write"}"#).unwrap(),
                implies: Default::default(),
            },
            held: vec!["read".to_owned()],
        };
        AnswerRewrite {
            learn: None,
            tools: Some(tools),
            states: None,
        }
    }

    const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup"},{"name":"void"},{"name":"free"}]}}"#;

    fn names(body: &[u8]) -> Vec<String> {
        let value: Value = serde_json::from_slice(body).unwrap();
        value["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn json_responses_keep_only_callable_tools() {
        let filtered = filter().rewrite_json(LIST.as_bytes()).unwrap().unwrap();
        assert_eq!(names(&filtered), ["lookup", "free"]);
        let batch = format!("[{LIST}, {}]", LIST.replace("\"id\":2", "\"id\":3"));
        let filtered: Value =
            serde_json::from_slice(&filter().rewrite_json(batch.as_bytes()).unwrap().unwrap())
                .unwrap();
        assert_eq!(filtered[0]["result"]["tools"].as_array().unwrap().len(), 2);
        assert_eq!(
            filtered[1]["result"]["tools"].as_array().unwrap().len(),
            3,
            "id 3 was not a tools/list"
        );
        assert_eq!(
            filter().rewrite_json(br#"{"jsonrpc":"2.0","id":2,"error":{"code":1}}"#),
            Ok(None)
        );
        assert_eq!(filter().rewrite_json(b"<html>"), Err(Unrewritable));
    }

    /// MCP 2026-07-28 (SEP-2549): a list the gate filtered for one token is
    /// private to it, in JSON and in SSE; results without caching members
    /// (earlier revisions) get none.
    #[test]
    fn filtered_lists_are_private_to_their_token() {
        let filtered = |body: &str| -> Value {
            serde_json::from_slice(&filter().rewrite_json(body.as_bytes()).unwrap().unwrap())
                .unwrap()
        };
        let caching = |result: &Value| (result["cacheScope"].clone(), result["ttlMs"].clone());
        let public = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup"},{"name":"void"}],"ttlMs":60000,"cacheScope":"public"}}"#;
        assert_eq!(
            caching(&filtered(public)["result"]),
            (Value::from("private"), Value::from(60000))
        );
        // Nothing hidden for this token, yet the list still depends on it.
        let readable = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"lookup"}],"cacheScope":"public"}}"#;
        assert_eq!(
            caching(&filtered(readable)["result"]),
            (Value::from("private"), Value::from(0))
        );
        let older = filtered(LIST);
        assert!(older["result"].get("cacheScope").is_none());
        let mut sse = filter().sse();
        let mut out = sse.push(format!("event: message\ndata: {public}\n\n").as_bytes());
        out.extend(sse.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""cacheScope":"private""#), "{text}");
    }

    #[test]
    fn sse_events_are_filtered_across_chunk_boundaries() {
        for newline in ["\n", "\r\n"] {
            let stream = format!(
                "event: message{n}id: 1{n}data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}{n}{n}event: message{n}data: {LIST}{n}{n}",
                n = newline
            );
            for split in 1..stream.len() {
                let mut sse = filter().sse();
                let mut out = sse.push(&stream.as_bytes()[..split]);
                out.extend(sse.push(&stream.as_bytes()[split..]));
                out.extend(sse.finish());
                let text = String::from_utf8(out).unwrap();
                assert!(text.starts_with("event: message"), "{text:?}");
                assert!(text.contains("notifications/progress"));
                assert!(!text.contains("\"void\""), "split {split}: {text:?}");
                assert!(text.contains("\"lookup\"") && text.contains("\"free\""));
                assert!(text.ends_with(&format!("{newline}{newline}")), "{text:?}");
            }
        }
    }

    #[test]
    fn sse_passes_complete_events_at_once_and_others_untouched() {
        let mut sse = filter().sse();
        let first = sse.push(
            b": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n\ndata: partial",
        );
        assert_eq!(
            first,
            b": keep-alive\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n\n".to_vec()
        );
        assert_eq!(sse.finish(), b"data: partial".to_vec());
    }

    #[test]
    fn multi_line_data_is_joined_before_parsing() {
        let mut sse = filter().sse();
        let (head, tail) = LIST.split_at(LIST.find("\"result\"").unwrap());
        let out = sse.push(format!("data: {head}\ndata: {tail}\n\n").as_bytes());
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("void"), "{text}");
    }
}
