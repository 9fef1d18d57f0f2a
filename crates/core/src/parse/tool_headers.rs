//! `Mcp-Param-*` headers checked against the tool's schema (MCP 2026-07-28
//! Streamable HTTP §Custom Headers, `server/tools` `x-mcp-header`; SEP-2243).
//!
//! A tool's `inputSchema` may mark arguments with `x-mcp-header: <Name>`;
//! clients then mirror each such argument into `Mcp-Param-<Name>`, and a
//! server that processes the body must refuse a request whose headers and
//! body disagree. The gate learns each tool's marks from the `tools/list`
//! answers it passes on ([`ToolSchemas`], per isolate), and checks a
//! `tools/call` of a tool it knows by the rules the official Python SDK
//! applies: a marked argument present in the body needs its header, equal
//! to the argument's rendering (integers compared as numbers); an absent one
//! must have none; a header twice is a mismatch. A tool it has not seen
//! listed (or whose marks break the spec's constraints, so that conforming
//! clients drop it) is checked without its schema: every header must mirror
//! some argument of the body ([`crate::parse::jsonrpc::check_param_headers`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Map, Value};

use crate::parse::jsonrpc::{decode_header_value, RpcError, TOOLS_CALL};

/// The schema member that marks an argument as mirrored in a header.
const X_MCP_HEADER: &str = "x-mcp-header";

/// The prefix of the fields mirroring tool arguments, lower case.
const PARAM_PREFIX: &str = "mcp-param-";

/// Whether a field name is `Mcp-Param-{Name}` (any case, a name after the prefix).
pub fn is_param_header(name: &str) -> bool {
    name.len() > PARAM_PREFIX.len()
        && name.as_bytes()[..PARAM_PREFIX.len()].eq_ignore_ascii_case(PARAM_PREFIX.as_bytes())
}

/// How long a learned schema is used: a tool whose schema changed is
/// checked by its new schema once the origin lists it again, or by none
/// after this.
pub const SCHEMA_LIFETIME_SECONDS: i64 = 600;

/// The most tools remembered per isolate; past it, new tools are checked
/// without their schema until entries expire.
pub const MAX_TOOLS: usize = 1024;

/// The most marks read from one schema (clients mirror a handful).
const MAX_MARKS: usize = 64;

/// JSON Schema 2020-12 applicators whose value is one schema.
const SINGLE: [&str; 11] = [
    "items",
    "contains",
    "unevaluatedItems",
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
/// Applicators whose value is a list of schemas.
const LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Applicators whose value is a map of schemas.
const MAP: [&str; 4] = [
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// One argument mirrored in a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// The `properties` keys from the arguments' root to the argument.
    pub path: Vec<String>,
    /// The header's full name, lower case (`mcp-param-region`).
    pub header: String,
    /// The argument is declared `integer` (compared as a number).
    pub integer: bool,
}

/// The marks of a tool's `inputSchema`, or `None` when a mark breaks the
/// spec's constraints (the tool is then one conforming clients drop): an
/// empty name or one that is not an RFC 9110 token, a type other than
/// `string`, `integer` or `boolean`, a name used twice (in any case), or a
/// mark reachable other than through `properties` alone.
pub fn marks(input_schema: &Value) -> Option<Vec<Mark>> {
    let mut found: Vec<Mark> = Vec::new();
    // An explicit stack: any finite JSON is walked without deep recursion.
    let mut stack: Vec<(Option<Vec<String>>, &Value)> = vec![(Some(Vec::new()), input_schema)];
    while let Some((path, node)) = stack.pop() {
        let Some(schema) = node.as_object() else {
            continue;
        };
        if let Some(name) = schema.get(X_MCP_HEADER) {
            let path = path.clone().filter(|path| !path.is_empty())?;
            let name = name.as_str().filter(|name| is_token(name))?;
            let integer = match schema.get("type").and_then(Value::as_str)? {
                "integer" => true,
                "string" | "boolean" => false,
                _ => return None,
            };
            let header = [PARAM_PREFIX, &name.to_ascii_lowercase()].concat();
            if found.iter().any(|mark| mark.header == header) || found.len() == MAX_MARKS {
                return None;
            }
            found.push(Mark {
                path,
                header,
                integer,
            });
        }
        for (keyword, value) in schema {
            match (keyword.as_str(), value) {
                ("properties", Value::Object(properties)) => {
                    for (name, sub) in properties {
                        let path = path.as_ref().map(|path| {
                            let mut path = path.clone();
                            path.push(name.clone());
                            path
                        });
                        stack.push((path, sub));
                    }
                }
                (keyword, value) if SINGLE.contains(&keyword) => stack.push((None, value)),
                (keyword, Value::Array(subs)) if LIST.contains(&keyword) => {
                    stack.extend(subs.iter().map(|sub| (None, sub)));
                }
                (keyword, Value::Object(subs)) if MAP.contains(&keyword) => {
                    stack.extend(subs.values().map(|sub| (None, sub)));
                }
                _ => {}
            }
        }
    }
    Some(found)
}

/// RFC 9110 §5.6.2 `token`.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Why the headers disagree with the body (the log has no finer reason: the
/// wire answer is `-32020` either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disagrees;

/// Checks the `Mcp-Param-*` fields of a request (`params`: name and value of
/// each) against its body. With the tool's `marks`, by them
/// ([`check_marks`]); fields no mark names, and every field when the schema
/// is unknown, must each decode (§Value Encoding) to the value of an
/// argument the body carries, at any depth of plain objects, rendered as
/// the client renders it: a field naming a value the body never carries is
/// the confused-deputy case the check exists for, something downstream
/// routing on a value the origin will not act on.
pub fn check_param_headers(
    params: &[(&str, &str)],
    body: &[u8],
    marks: Option<&[Mark]>,
) -> Result<(), RpcError> {
    if params.is_empty() && marks.is_none_or(<[Mark]>::is_empty) {
        return Ok(());
    }
    let value: Value = serde_json::from_slice(body).map_err(|_| RpcError::NotJson)?;
    let is_call = value.get("method").and_then(Value::as_str) == Some(TOOLS_CALL);
    let empty = Map::new();
    let arguments = match value
        .get("params")
        .and_then(|params| params.get("arguments"))
    {
        Some(Value::Object(arguments)) if is_call => arguments,
        None if is_call && marks.is_some() => &empty,
        _ => return Err(RpcError::HeaderMismatch),
    };
    let named: Vec<(String, &str)> = params
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), *value))
        .collect();
    let marks = marks.unwrap_or_default();
    check_marks(marks, arguments, &named).map_err(|_| RpcError::HeaderMismatch)?;
    for (name, raw) in &named {
        if marks.iter().any(|mark| mark.header == *name) {
            continue;
        }
        let decoded = decode_header_value(raw.trim()).ok_or(RpcError::HeaderMismatch)?;
        if !arguments
            .values()
            .any(|member| mirrors_an_argument(member, &decoded))
        {
            return Err(RpcError::HeaderMismatch);
        }
    }
    Ok(())
}

/// Whether `header` is the client's rendering of a scalar in `node`, or in
/// an object below it: a string as it is, a boolean as `true` / `false`, an
/// integer in decimal (compared as a number, so `42` matches `42.0`).
fn mirrors_an_argument(node: &Value, header: &str) -> bool {
    match node {
        Value::Object(members) => members
            .values()
            .any(|member| mirrors_an_argument(member, header)),
        Value::Number(_) => match (integral(node), integer_header(header)) {
            (Some(body), Some(header)) => body == header,
            _ => render(node).is_some_and(|rendered| rendered == header),
        },
        scalar => render(scalar).is_some_and(|rendered| rendered == header),
    }
}

/// Checks a `tools/call`'s `Mcp-Param-*` headers (`name` lower case, value
/// as sent) against its `arguments` by the tool's `marks`.
pub fn check_marks(
    marks: &[Mark],
    arguments: &Map<String, Value>,
    headers: &[(String, &str)],
) -> Result<(), Disagrees> {
    for mark in marks {
        let mut sent = headers.iter().filter(|(name, _)| *name == mark.header);
        let raw = sent.next().map(|(_, value)| value.trim());
        if sent.next().is_some() {
            return Err(Disagrees);
        }
        let value = value_at(arguments, &mark.path).filter(|value| !value.is_null());
        let rendered = value.and_then(render);
        match (raw, value, rendered) {
            (None, None, _) | (None, Some(_), None) => {}
            (Some(_), None, _) | (Some(_), Some(_), None) | (None, Some(_), Some(_)) => {
                return Err(Disagrees)
            }
            (Some(raw), Some(value), Some(rendered)) => {
                let decoded = decode_header_value(raw).ok_or(Disagrees)?;
                let equal = match (mark.integer, integral(value)) {
                    (true, Some(number)) => integer_header(&decoded) == Some(number),
                    _ => decoded == rendered,
                };
                if !equal {
                    return Err(Disagrees);
                }
            }
        }
    }
    Ok(())
}

/// The value at `path` below `arguments`, if every step is an object.
fn value_at<'a>(arguments: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(arguments.get(first)?, |node, key| {
        node.as_object()?.get(key)
    })
}

/// A scalar as a client mirrors it: a string as it is, `true` / `false`, a
/// number as JSON writes it; `None` for anything else.
fn render(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(text) => Some(std::borrow::Cow::Borrowed(text)),
        Value::Bool(flag) => Some(std::borrow::Cow::Borrowed(if *flag {
            "true"
        } else {
            "false"
        })),
        Value::Number(number) => Some(std::borrow::Cow::Owned(number.to_string())),
        _ => None,
    }
}

/// A JSON number's value when it is a whole number within `i64` (the spec
/// holds marked integers to JavaScript's safe range, far inside it).
fn integral(value: &Value) -> Option<i64> {
    let number = value.as_number()?;
    if let Some(whole) = number.as_i64() {
        return Some(whole);
    }
    let float = number.as_f64()?;
    // Whole floats below 2^62 in magnitude convert exactly.
    (float.fract() == 0.0 && float.abs() < 4.6e18).then_some(float as i64)
}

/// A header in canonical decimal (`-?[0-9]+(\.0+)?`) as an integer.
fn integer_header(header: &str) -> Option<i64> {
    let (whole, fraction) = header.split_once('.').unwrap_or((header, ""));
    let digits = whole.strip_prefix('-').unwrap_or(whole);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && (header.find('.').is_none() || !fraction.is_empty())
        && fraction.bytes().all(|byte| byte == b'0');
    canonical.then(|| whole.parse().ok()).flatten()
}

/// Learns the tools' marks from the origin's answers to `tools/list`
/// requests.
#[derive(Debug, Clone)]
pub struct SchemaLearner {
    /// Where they are kept.
    pub schemas: Rc<ToolSchemas>,
    /// The protected resource the tools are on.
    pub resource: String,
    /// The ids of the `tools/list` requests.
    pub list_ids: Vec<Value>,
    /// When.
    pub now: i64,
}

impl SchemaLearner {
    /// Learns from `message` when it answers one of the requests.
    pub fn learn_message(&self, message: &Value) {
        let ours = message
            .get("id")
            .is_some_and(|id| self.list_ids.contains(id));
        if let (true, Some(result)) = (ours, message.get("result")) {
            self.schemas.learn(&self.resource, result, self.now);
        }
    }
}

/// What one isolate learned of the tools' schemas, by protected resource and
/// tool name, each with when it was learned. Bounded by [`MAX_TOOLS`].
#[derive(Debug, Default)]
pub struct ToolSchemas {
    tools: RefCell<HashMap<ToolKey, Learned>>,
}

/// A protected resource and a tool name on it.
type ToolKey = (String, String);

/// A tool's marks and when they were learned.
type Learned = (Rc<Vec<Mark>>, i64);

impl ToolSchemas {
    /// The marks of `tool` on `resource`, if learned within the lifetime.
    pub fn marks(&self, resource: &str, tool: &str, now: i64) -> Option<Rc<Vec<Mark>>> {
        let tools = self.tools.borrow();
        let (marks, learned) = tools.get(&(resource.to_owned(), tool.to_owned()))?;
        (now - learned <= SCHEMA_LIFETIME_SECONDS).then(|| Rc::clone(marks))
    }

    /// Learns the tools of a `tools/list` result for `resource`.
    pub fn learn(&self, resource: &str, result: &Value, now: i64) {
        let Some(tools) = result.get("tools").and_then(Value::as_array) else {
            return;
        };
        let mut known = self.tools.borrow_mut();
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let key = (resource.to_owned(), name.to_owned());
            let marks = tool.get("inputSchema").and_then(marks);
            let Some(marks) = marks else {
                // A tool clients drop: checked without a schema.
                known.remove(&key);
                continue;
            };
            if known.len() >= MAX_TOOLS && !known.contains_key(&key) {
                known.retain(|_, (_, learned)| now - *learned <= SCHEMA_LIFETIME_SECONDS);
                if known.len() >= MAX_TOOLS {
                    continue;
                }
            }
            known.insert(key, (Rc::new(marks), now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The argument headers of MCP 2026-07-28 §Custom Headers from Tool
    /// Parameters, checked without the schema; with it, each by its mark.
    #[test]
    fn argument_headers_must_mirror_a_value_of_the_call() {
        let call = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"execute_sql","arguments":{"region":"us-west1","query":"SELECT 1","opts":{"priority":42,"dry":true,"tenant":"caf\u00e9"}}}}"#;
        for good in [
            vec![("Mcp-Param-Region", "us-west1")],
            vec![("mcp-param-priority", "42"), ("mcp-param-dry", "true")],
            vec![("Mcp-Param-Priority", "42.0")],
            vec![("Mcp-Param-Tenant", "=?base64?Y2Fmw6k=?=")],
            vec![],
        ] {
            assert_eq!(check_param_headers(&good, call, None), Ok(()), "{good:?}");
        }
        for bad in [
            vec![("Mcp-Param-Region", "eu-west1")],
            vec![("Mcp-Param-Region", "us-west1"), ("Mcp-Param-Dry", "false")],
            vec![("Mcp-Param-Priority", "42.5")],
            vec![("Mcp-Param-Tenant", "=?base64?not base64?=")],
            vec![("Mcp-Param-Tenant", "caf\u{e9}")],
        ] {
            assert_eq!(
                check_param_headers(&bad, call, None),
                Err(RpcError::HeaderMismatch),
                "{bad:?}"
            );
        }
        let list = br#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
        assert_eq!(
            check_param_headers(&[("Mcp-Param-Region", "us-west1")], list, None),
            Err(RpcError::HeaderMismatch),
            "only a tools/call has arguments to mirror"
        );
        let marks =
            marks(&json!({"properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}))
                .unwrap();
        assert_eq!(
            check_param_headers(&[("Mcp-Param-Region", "SELECT 1")], call, None),
            Ok(()),
            "without the schema, any argument's value"
        );
        assert_eq!(
            check_param_headers(&[("Mcp-Param-Region", "SELECT 1")], call, Some(&marks)),
            Err(RpcError::HeaderMismatch),
            "with it, the marked argument's"
        );
        assert_eq!(
            check_param_headers(&[], call, Some(&marks)),
            Err(RpcError::HeaderMismatch),
            "a marked argument without its header"
        );
        assert_eq!(
            check_param_headers(
                &[("mcp-param-region", "us-west1"), ("mcp-param-dry", "true")],
                call,
                Some(&marks)
            ),
            Ok(())
        );
    }

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "days": {"type": "integer", "x-mcp-header": "Days"},
                "where": {"type": "object", "properties": {
                    "zone": {"type": "string", "x-mcp-header": "Zone"}
                }},
                "note": {"type": "string"}
            }
        })
    }

    fn check(arguments: Value, headers: &[(&str, &str)]) -> Result<(), Disagrees> {
        let marks = marks(&schema()).unwrap();
        let headers: Vec<(String, &str)> = headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), *value))
            .collect();
        check_marks(&marks, arguments.as_object().unwrap(), &headers)
    }

    #[test]
    fn marks_are_read_along_properties_only() {
        let mut found = marks(&schema()).unwrap();
        found.sort_by(|a, b| a.header.cmp(&b.header));
        let headers: Vec<&str> = found.iter().map(|m| m.header.as_str()).collect();
        assert_eq!(
            headers,
            ["mcp-param-days", "mcp-param-region", "mcp-param-zone"]
        );
        assert_eq!(found[2].path, ["where", "zone"]);
        assert!(found[0].integer && !found[1].integer);
        for broken in [
            json!({"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": ""}}}),
            json!({"properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}}),
            json!({"anyOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "A"}}}]}),
            json!({"type": "string", "x-mcp-header": "Root"}),
        ] {
            assert_eq!(marks(&broken), None, "{broken}");
        }
        assert_eq!(marks(&json!({"type": "object"})), Some(Vec::new()));
    }

    #[test]
    fn headers_must_mirror_their_own_argument() {
        let body = json!({"region": "eu", "days": 3, "where": {"zone": "b"}, "note": "us"});
        let all = [
            ("Mcp-Param-Region", "eu"),
            ("Mcp-Param-Days", "3"),
            ("Mcp-Param-Zone", "b"),
        ];
        assert_eq!(check(body.clone(), &all), Ok(()));
        // Another argument's value is not this argument's.
        assert_eq!(
            check(body.clone(), &[("Mcp-Param-Region", "us"), all[1], all[2]]),
            Err(Disagrees)
        );
        // Missing while the argument is present; present while it is absent.
        assert_eq!(check(body.clone(), &all[1..]), Err(Disagrees));
        assert_eq!(
            check(json!({"days": 3, "where": {"zone": "b"}}), &all),
            Err(Disagrees)
        );
        assert_eq!(check(json!({}), &[]), Ok(()));
        assert_eq!(check(json!({"region": null}), &[]), Ok(()));
        // Twice.
        let twice = [all[0], all[0], all[1], all[2]];
        assert_eq!(check(body.clone(), &twice), Err(Disagrees));
        // Integers compare as numbers; Base64 form decoded.
        assert_eq!(
            check(json!({"days": 3.0}), &[("Mcp-Param-Days", "3")]),
            Ok(())
        );
        assert_eq!(
            check(json!({"days": 3}), &[("Mcp-Param-Days", "3.00")]),
            Ok(())
        );
        assert_eq!(
            check(json!({"days": 3}), &[("Mcp-Param-Days", "3.5")]),
            Err(Disagrees)
        );
        assert_eq!(
            check(json!({"days": 3}), &[("Mcp-Param-Days", "3e0")]),
            Err(Disagrees)
        );
        assert_eq!(
            check(
                json!({"region": "café"}),
                &[("Mcp-Param-Region", "=?base64?Y2Fmw6k=?=")]
            ),
            Ok(())
        );
        // An argument no header can carry (an object) must come without one.
        assert_eq!(check(json!({"region": {"x": 1}}), &[]), Ok(()));
        assert_eq!(
            check(json!({"region": {"x": 1}}), &[("Mcp-Param-Region", "x")]),
            Err(Disagrees)
        );
    }

    #[test]
    fn schemas_are_learned_per_resource_expire_and_are_bounded() {
        let schemas = ToolSchemas::default();
        let list = json!({"tools": [{"name": "forecast", "inputSchema": schema()},
            {"name": "broken", "inputSchema": {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}}]});
        schemas.learn("https://a/mcp", &list, 100);
        assert_eq!(
            schemas
                .marks("https://a/mcp", "forecast", 100)
                .unwrap()
                .len(),
            3
        );
        assert!(schemas.marks("https://b/mcp", "forecast", 100).is_none());
        assert!(schemas.marks("https://a/mcp", "broken", 100).is_none());
        assert!(schemas
            .marks(
                "https://a/mcp",
                "forecast",
                100 + SCHEMA_LIFETIME_SECONDS + 1
            )
            .is_none());
        for i in 0..MAX_TOOLS + 10 {
            let one = json!({"tools": [{"name": format!("t{i}"), "inputSchema": {}}]});
            schemas.learn("https://a/mcp", &one, 200);
        }
        assert_eq!(schemas.tools.borrow().len(), MAX_TOOLS);
    }
}
