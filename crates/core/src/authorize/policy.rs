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

/// The scope that asks an authorization server for a refresh token (OpenID
/// Connect Core §11). A protected resource SHOULD NOT name it in a
/// challenge or in `scopes_supported` (MCP 2026-07-28 authorization
/// §Refresh Tokens): refresh tokens are not a resource requirement.
pub const OFFLINE_ACCESS: &str = "offline_access";

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

/// Which scopes imply which: a token holding a broader scope holds every
/// narrower one it implies, transitively (MCP 2026-07-28 authorization
/// §Scope Challenge Handling: servers MUST account for scope hierarchies
/// when deciding whether a token is sufficient). Configured per route
/// (`MCP_SCOPE_IMPLIES`); the closure is computed once, when it is parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeHierarchy {
    /// Each broader scope and every scope it implies, directly or not.
    implied: BTreeMap<String, BTreeSet<String>>,
}

impl ScopeHierarchy {
    /// Parses a JSON object of scope to the scopes it implies (a
    /// space-separated string or an array; `"*"` for every scope of the
    /// route). `known` is every scope the route names; a hierarchy naming
    /// another, or in which a scope implies itself through others, is
    /// refused. Every problem is named.
    pub fn from_value(value: Value, known: &BTreeSet<String>) -> Result<Self, Vec<String>> {
        let map = ScopeMap::from_value(value)?;
        let mut problems = Vec::new();
        if !map.default.is_empty() {
            problems.push(format!(
                "{DEFAULT_ENTRY:?} cannot imply scopes: name the broader scope"
            ));
        }
        let mut direct: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (broader, narrower) in &map.entries {
            if !known.contains(broader) {
                problems.push(format!("{broader:?} is not a scope of this route"));
            }
            let mut implied = BTreeSet::new();
            for scope in narrower {
                if scope == DEFAULT_ENTRY {
                    implied.extend(known.iter().filter(|s| *s != broader).cloned());
                } else if known.contains(scope) {
                    implied.insert(scope.clone());
                } else {
                    problems.push(format!(
                        "{broader:?}: {scope:?} is not a scope of this route"
                    ));
                }
            }
            direct.insert(broader.clone(), implied);
        }
        let mut implied = BTreeMap::new();
        for broader in direct.keys() {
            let mut reached = BTreeSet::new();
            let mut next: Vec<&String> = direct[broader].iter().collect();
            while let Some(scope) = next.pop() {
                if reached.insert(scope.clone()) {
                    next.extend(direct.get(scope).into_iter().flatten());
                }
            }
            if reached.contains(broader) {
                problems.push(format!("{broader:?} implies itself (a cycle)"));
            }
            implied.insert(broader.clone(), reached);
        }
        if problems.is_empty() {
            Ok(ScopeHierarchy { implied })
        } else {
            Err(problems)
        }
    }

    /// The scopes a token holding `held` has: `held` and all they imply.
    pub fn effective(&self, held: &[String]) -> Vec<String> {
        let mut all: BTreeSet<String> = held.iter().cloned().collect();
        for scope in held {
            all.extend(self.implied.get(scope).into_iter().flatten().cloned());
        }
        all.into_iter().collect()
    }

    /// The scopes a challenge names for an operation that needs `required`:
    /// each, unless another of them already implies it, so that one
    /// authorization round gives the client everything (and nothing twice).
    pub fn broadest(&self, required: &[String]) -> Vec<String> {
        required
            .iter()
            .filter(|scope| {
                !required.iter().any(|other| {
                    other != *scope
                        && self
                            .implied
                            .get(other)
                            .is_some_and(|implied| implied.contains(*scope))
                })
            })
            .cloned()
            .collect()
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
    /// Which scopes imply which (`MCP_SCOPE_IMPLIES`).
    pub implies: ScopeHierarchy,
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

    /// Whether a token holding `held` (its effective scopes,
    /// [`ScopeHierarchy::effective`]) may call `tool`: the test a listed
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

    fn known(scopes: &[&str]) -> BTreeSet<String> {
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    /// MCP 2026-07-28 authorization: a broader scope implies narrower ones.
    #[test]
    fn a_broader_scope_holds_every_scope_it_implies() {
        let route = known(&["inv:read", "inv:write", "inv:admin", "files:read"]);
        let hierarchy = ScopeHierarchy::from_value(
            serde_json::json!({"inv:write": "inv:read", "inv:admin": ["inv:write"]}),
            &route,
        )
        .unwrap();
        assert_eq!(
            hierarchy.effective(&strings(&["inv:admin"])),
            strings(&["inv:admin", "inv:read", "inv:write"]),
            "transitively"
        );
        assert_eq!(
            hierarchy.effective(&strings(&["inv:read"])),
            strings(&["inv:read"])
        );
        assert_eq!(
            hierarchy.broadest(&strings(&["inv:read", "inv:write", "files:read"])),
            strings(&["inv:write", "files:read"]),
            "the challenge names what covers the rest"
        );
        let everything =
            ScopeHierarchy::from_value(serde_json::json!({"inv:admin": "*"}), &route).unwrap();
        assert_eq!(
            everything.effective(&strings(&["inv:admin"])).len(),
            route.len()
        );
    }

    #[test]
    fn cycles_and_unknown_scopes_are_refused_by_name() {
        let route = known(&["a", "b", "c"]);
        let problems = ScopeHierarchy::from_value(
            serde_json::json!({"a": "b", "b": "c", "c": "a", "d": "a", "*": "a"}),
            &route,
        )
        .unwrap_err();
        for expected in [
            r#""a" implies itself (a cycle)"#,
            r#""d" is not a scope of this route"#,
            r#""*" cannot imply scopes"#,
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected}: {problems:?}"
            );
        }
        let problems =
            ScopeHierarchy::from_value(serde_json::json!({"a": "zzz"}), &route).unwrap_err();
        assert_eq!(problems, [r#""a": "zzz" is not a scope of this route"#]);
        let problems = ScopeHierarchy::from_value(serde_json::json!({"a": "*", "b": "a"}), &route)
            .unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("a cycle")),
            "{problems:?}"
        );
    }
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
            implies: ScopeHierarchy::default(),
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
