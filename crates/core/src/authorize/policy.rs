//! Per-operation scope policy for MCP: which OAuth scopes (RFC 6749 §3.3)
//! each JSON-RPC method and each tool needs, so the gate can require the union
//! for a request and name all of it in one `insufficient_scope` challenge
//! (MCP authorization 2025-11-25 "Scope Challenge Handling"; 2026-07-28: the
//! challenge names the scopes the operation needs).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::parse::jsonrpc::{RpcMessage, TOOLS_CALL};

/// The entry that applies to names not listed.
pub const DEFAULT_ENTRY: &str = "*";

/// A name → scopes map, as configured in `MCP_TOOL_SCOPES` / `MCP_METHOD_SCOPES`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeMap {
    entries: BTreeMap<String, Vec<String>>,
    default: Vec<String>,
}

impl ScopeMap {
    /// Parses a JSON object whose values are a space-separated scope string or
    /// an array of scope tokens; `"*"` is the default for unlisted names.
    /// Every problem is named.
    pub fn parse(raw: &str) -> Result<ScopeMap, Vec<String>> {
        let value: Value =
            serde_json::from_str(raw).map_err(|_| vec!["is not valid JSON".to_owned()])?;
        ScopeMap::from_value(value)
    }

    /// As [`ScopeMap::parse`], from JSON already read (an `MCP_ROUTES` entry).
    pub fn from_value(value: Value) -> Result<ScopeMap, Vec<String>> {
        let Value::Object(object) = value else {
            return Err(vec!["must be a JSON object of name to scopes".to_owned()]);
        };
        let mut problems = Vec::new();
        let mut map = ScopeMap::default();
        for (name, scopes) in object {
            let parsed: Option<Vec<String>> = match &scopes {
                Value::String(text) => Some(
                    text.split(' ')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(str::to_owned))
                    .collect(),
                _ => None,
            };
            let Some(parsed) = parsed else {
                problems.push(format!(
                    "{name:?}: scopes must be a string or an array of strings"
                ));
                continue;
            };
            if let Some(bad) = parsed.iter().find(|scope| !is_scope_token(scope)) {
                problems.push(format!("{name:?}: {bad:?} is not a valid scope"));
                continue;
            }
            if name.is_empty() {
                problems.push("an empty name is not allowed".to_owned());
            } else if name == DEFAULT_ENTRY {
                map.default = parsed;
            } else {
                map.entries.insert(name, parsed);
            }
        }
        if problems.is_empty() {
            Ok(map)
        } else {
            Err(problems)
        }
    }

    /// The scopes `name` needs: its entry, else the default.
    pub fn scopes_for(&self, name: &str) -> &[String] {
        self.entries.get(name).unwrap_or(&self.default)
    }

    /// Every scope the map mentions.
    pub fn all_scopes(&self) -> impl Iterator<Item = &String> {
        self.entries.values().flatten().chain(&self.default)
    }

    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.default.is_empty()
    }
}

/// The scopes each request needs: route-level, per method, per tool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopePolicy {
    /// Scopes every request needs (`MCP_REQUIRED_SCOPES`).
    pub required: Vec<String>,
    /// Per JSON-RPC method (`MCP_METHOD_SCOPES`).
    pub methods: ScopeMap,
    /// Per tool, for `tools/call` (`MCP_TOOL_SCOPES`).
    pub tools: ScopeMap,
}

impl ScopePolicy {
    /// The union of the scopes every message of a request needs. Responses to
    /// server-initiated requests need only the route-level scopes.
    pub fn required_for(&self, messages: &[RpcMessage]) -> BTreeSet<String> {
        let mut needed: BTreeSet<String> = self.required.iter().cloned().collect();
        for message in messages {
            let Some(method) = message.method.as_deref() else {
                continue;
            };
            needed.extend(self.methods.scopes_for(method).iter().cloned());
            if let Some(tool) = message.tool() {
                needed.extend(self.tools.scopes_for(tool).iter().cloned());
            }
        }
        needed
    }

    /// Whether a token holding `held` may call `tool`: the test a listed
    /// tool must pass to stay in a filtered `tools/list`.
    pub fn may_call_tool(&self, tool: &str, held: &[String]) -> bool {
        let holds = |scope: &String| held.contains(scope);
        self.required.iter().all(holds)
            && self.methods.scopes_for(TOOLS_CALL).iter().all(holds)
            && self.tools.scopes_for(tool).iter().all(holds)
    }
}

/// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3). Also what
/// keeps a scope safe inside a quoted `WWW-Authenticate` parameter.
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::jsonrpc::parse_body;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn example() -> ScopePolicy {
        ScopePolicy {
            required: strings(&["mcp"]),
            methods: ScopeMap::parse(r#"{"resources/read": "files:read", "prompts/get": ["prompts"]}"#).unwrap(),
            tools: ScopeMap::parse(
                r#"{"lookup_invoice": "invoices:read", "void_invoice": "invoices:write invoices:read", "*": "invoices:read"}"#,
            )
            .unwrap(),
        }
    }

    #[test]
    fn parses_strings_arrays_and_the_default() {
        let map = ScopeMap::parse(r#"{"a": "x y", "b": ["z"], "c": "", "*": "d"}"#).unwrap();
        assert_eq!(map.scopes_for("a"), ["x", "y"]);
        assert_eq!(map.scopes_for("b"), ["z"]);
        assert!(
            map.scopes_for("c").is_empty(),
            "an explicit empty entry needs nothing"
        );
        assert_eq!(map.scopes_for("unlisted"), ["d"]);
        assert!(ScopeMap::parse("{}").unwrap().scopes_for("x").is_empty());
    }

    #[test]
    fn names_every_problem() {
        assert_eq!(ScopeMap::parse("{").unwrap_err(), ["is not valid JSON"]);
        assert_eq!(ScopeMap::parse(r#"["a"]"#).unwrap_err().len(), 1);
        let problems =
            ScopeMap::parse(r#"{"a": 5, "b": ["ok", 3], "c": "bad\"scope", "": "x"}"#).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"a\"")), "{problems:?}");
    }

    #[test]
    fn requires_the_union_over_a_batch() {
        let policy = example();
        let read = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_invoice"}}"#,
        )
        .unwrap();
        let needed: Vec<_> = policy.required_for(&read).into_iter().collect();
        assert_eq!(needed, ["invoices:read", "mcp"]);
        let batch = parse_body(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"lookup_invoice"}},
                {"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"void_invoice"}},
                {"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a"}},
                {"jsonrpc":"2.0","id":4,"result":{}}]"#,
        )
        .unwrap();
        let needed: Vec<_> = policy.required_for(&batch).into_iter().collect();
        assert_eq!(
            needed,
            ["files:read", "invoices:read", "invoices:write", "mcp"]
        );
        let other = parse_body(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"unlisted"}}"#,
        )
        .unwrap();
        assert!(
            policy.required_for(&other).contains("invoices:read"),
            "default entry applies"
        );
        let list = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
        assert_eq!(
            policy.required_for(&list).len(),
            1,
            "listing needs only the route-level scope"
        );
    }

    #[test]
    fn decides_which_tools_a_token_may_call() {
        let policy = example();
        let reader = strings(&["mcp", "invoices:read"]);
        assert!(policy.may_call_tool("lookup_invoice", &reader));
        assert!(policy.may_call_tool("anything_else", &reader));
        assert!(!policy.may_call_tool("void_invoice", &reader));
        assert!(
            !policy.may_call_tool("lookup_invoice", &strings(&["invoices:read"])),
            "route-level scope too"
        );
    }
}
