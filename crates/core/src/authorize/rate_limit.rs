//! Rate limits per subject, client, tool, method and client address, counted
//! by Workers' Rate Limiting binding (`[[ratelimits]]`, `env.NAME.limit({
//! key })`; Cloudflare Workers docs, "Rate Limiting"). This module owns the
//! rules: their one parser (the `RATE_LIMITS` binding and each
//! `MCP_ROUTES` entry's `rate_limits` member), and which keys a request
//! counts under each rule. The counting itself is a need of the request
//! machine, performed by the driver.
//!
//! Two moments, so that neither a caller nor a flood can spend what it
//! should not:
//! - identity rules (`subject`, `client`, `subject+tool`, `client+tool`,
//!   `method`) count after the request is authorized, once per JSON-RPC
//!   message of the body, so a caller can only ever spend the quota of the
//!   identity its verified token names;
//! - address rules count the client address (`CF-Connecting-IP`) before
//!   the first signature check or introspection call of a token the gate
//!   has not verified yet, so a flood of forged or expired tokens is
//!   refused before it costs a check, and a token already verified (in the
//!   isolate's cache) is never counted.
//!
//! Keys are a SHA-256 of the rule and the values counted, so subjects and
//! addresses never reach the rate limiter in clear, and every key is short.

use base64ct::{Base64UrlUnpadded, Encoding};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::verify::jwt::AccessToken;

/// The `period` of a rule that names none.
pub const DEFAULT_PERIOD: u32 = 60;
/// The JSON-RPC error code of a `POST` over its limit: the implementation-
/// defined server error range (JSON-RPC 2.0 §5.1).
pub const RATE_LIMITED_CODE: i64 = -32029;

/// What a rule counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The token's subject (`iss` + `sub`).
    Subject,
    /// The token's client (`iss` + `client_id`).
    Client,
    /// The subject and the tool of each `tools/call`.
    SubjectTool,
    /// The client and the tool of each `tools/call`.
    ClientTool,
    /// The JSON-RPC method of each message, whoever sends it.
    Method,
    /// The client address, for tokens not verified yet.
    Address,
}

impl KeyKind {
    const ALL: [(&'static str, KeyKind); 6] = [
        ("subject", KeyKind::Subject),
        ("client", KeyKind::Client),
        ("subject+tool", KeyKind::SubjectTool),
        ("client+tool", KeyKind::ClientTool),
        ("method", KeyKind::Method),
        ("address", KeyKind::Address),
    ];

    /// The name a rule's `key` gives it.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("", |(name, _)| name)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, kind)| *kind)
    }
}

/// What happens when the binding itself fails (throws, or does not answer
/// in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Let the request go on uncounted, and log it (the default, and the
    /// platform's guidance: the limiter meters cost, it does not grant
    /// access, so its outage must not become the service's).
    Allow,
    /// Refuse with `503` and `Retry-After`.
    Refuse,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRule {
    /// The Rate Limiting binding that counts (its limit and period are set
    /// in `wrangler.toml`).
    pub binding: String,
    /// What it counts by.
    pub key: KeyKind,
    /// Only `tools/call` messages of these tools count; empty: any message.
    pub tools: Vec<String>,
    /// Only messages of these JSON-RPC methods count; empty: any message.
    pub methods: Vec<String>,
    /// The binding's period in seconds: the `Retry-After` of a refusal.
    pub period: u32,
    /// When the binding fails.
    pub on_error: OnError,
    /// For the log: the `name` given, else `BINDING:key`.
    pub name: String,
    /// Keys of this rule are made from this, so two rules sharing a binding
    /// never share a counter: the rule as written, and the route's resource
    /// for a route's own rule (empty for a global one).
    id: String,
}

/// One message a request counts as, for the identity rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit<'a> {
    /// Its JSON-RPC method; `None` for a response, and for a `GET` or
    /// `DELETE` (no body).
    pub method: Option<&'a str>,
    /// The tool of a `tools/call`.
    pub tool: Option<&'a str>,
}

/// One call of a binding's `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The index of the rule in the route's list.
    pub rule: usize,
    /// The binding.
    pub binding: String,
    /// The key (a hash: see the module header).
    pub key: String,
}

/// What one count came back as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Within the limit.
    Within,
    /// Over it.
    Over,
    /// The binding threw, or did not answer in time.
    Failed,
}

/// Parses a list of rules, written as in `RATE_LIMITS`. `scope`: empty for
/// the global rules, the route's resource for a route's own. `is_bound`
/// says whether a Rate Limiting binding has a name. Returns the rules, or
/// every problem, each naming the rule (`rule 2: …`).
pub fn parse_rules(
    value: Value,
    scope: &str,
    is_bound: &dyn Fn(&str) -> bool,
) -> Result<Vec<RateRule>, Vec<String>> {
    let Value::Array(items) = value else {
        return Err(vec!["must be a JSON array of rules".to_owned()]);
    };
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match parse_rule(item, scope, is_bound) {
            Ok(rule) => rules.push(rule),
            Err(found) => problems.extend(
                found
                    .into_iter()
                    .map(|problem| format!("rule {}: {problem}", index + 1)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

const MEMBERS: &str = "binding, key, tools, methods, period, on_error, name";

fn parse_rule(
    value: Value,
    scope: &str,
    is_bound: &dyn Fn(&str) -> bool,
) -> Result<RateRule, Vec<String>> {
    let Value::Object(members) = value else {
        return Err(vec!["must be an object".to_owned()]);
    };
    let mut problems = Vec::new();
    let mut binding = None;
    let mut key = None;
    let mut tools = Vec::new();
    let mut methods = Vec::new();
    let mut period = DEFAULT_PERIOD;
    let mut on_error = OnError::Allow;
    let mut name = None;
    for (member, value) in members {
        match (member.as_str(), value) {
            ("binding", Value::String(text)) => {
                if !is_binding_name(&text) {
                    problems.push(format!("binding {text:?} is not a binding name"));
                } else if !is_bound(&text) {
                    problems.push(format!("binding {text:?} is not a Rate Limiting binding of this worker (add a [[ratelimits]] entry with name = {text:?} to wrangler.toml)"));
                }
                binding = Some(text);
            }
            ("key", Value::String(text)) => match KeyKind::from_name(&text) {
                Some(kind) => key = Some(kind),
                None => problems.push(format!(
                    "key {text:?} is not one of {}",
                    KeyKind::ALL.map(|(name, _)| name).join(", ")
                )),
            },
            ("tools", value) => match strings(value) {
                Some(list) => tools = list,
                None => problems.push("tools must be an array of tool names".to_owned()),
            },
            ("methods", value) => match strings(value) {
                Some(list) => methods = list,
                None => problems.push("methods must be an array of JSON-RPC methods".to_owned()),
            },
            ("period", value) => match value.as_u64() {
                Some(seconds @ (10 | 60)) => period = seconds as u32,
                _ => problems.push(
                    "period must be 10 or 60 (the periods the Rate Limiting binding allows; give the one of its [[ratelimits]] entry)".to_owned()
                ),
            },
            ("on_error", Value::String(text)) => match text.as_str() {
                "allow" => on_error = OnError::Allow,
                "refuse" => on_error = OnError::Refuse,
                _ => problems.push(format!("on_error {text:?} must be \"allow\" or \"refuse\"")),
            },
            ("name", Value::String(text)) if !text.trim().is_empty() => {
                name = Some(text.trim().to_owned())
            }
            ("binding" | "key" | "on_error" | "name", _) => {
                problems.push(format!("{member} must be a non-empty string"))
            }
            (other, _) => problems.push(format!("unknown member {other:?} (expected {MEMBERS})")),
        }
    }
    if binding.is_none() {
        problems.push("binding is required".to_owned());
    }
    if key.is_none() && !problems.iter().any(|p| p.starts_with("key")) {
        problems.push("key is required".to_owned());
    }
    if key == Some(KeyKind::Address) && !(tools.is_empty() && methods.is_empty()) {
        problems.push(
            "an address rule counts before the body is read, so it takes no tools or methods"
                .to_owned(),
        );
    }
    let (Some(binding), Some(key), true) = (binding, key, problems.is_empty()) else {
        return Err(problems);
    };
    let id = format!(
        "{binding}\n{}\n{}\n{}\n{scope}",
        key.name(),
        tools.join("\u{0}"),
        methods.join("\u{0}")
    );
    Ok(RateRule {
        name: name.unwrap_or_else(|| format!("{binding}:{}", key.name())),
        binding,
        key,
        tools,
        methods,
        period,
        on_error,
        id,
    })
}

/// A Workers binding name: a JavaScript identifier of ASCII letters,
/// digits, `_` and `$`, not starting with a digit.
fn is_binding_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

fn strings(value: Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(text) if !text.is_empty() => Some(text),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

impl RateRule {
    /// Whether this rule counts before the token is verified.
    pub fn is_address(&self) -> bool {
        self.key == KeyKind::Address
    }

    fn matches(&self, unit: &Unit<'_>) -> bool {
        let tool_ok = self.tools.is_empty() || unit.tool.is_some_and(|t| self.has_tool(t));
        let method_ok = self.methods.is_empty()
            || unit
                .method
                .is_some_and(|m| self.methods.iter().any(|x| x == m));
        let kind_ok = match self.key {
            KeyKind::SubjectTool | KeyKind::ClientTool => unit.tool.is_some(),
            KeyKind::Method => unit.method.is_some(),
            KeyKind::Address => false,
            KeyKind::Subject | KeyKind::Client => true,
        };
        tool_ok && method_ok && kind_ok
    }

    fn has_tool(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    /// The key for `parts`, hashed with the rule's identity.
    fn key_of(&self, parts: &[&str]) -> String {
        let mut hash = Sha256::new();
        hash.update(self.id.as_bytes());
        for part in parts {
            // Length-prefixed, so no two lists of parts hash alike.
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        Base64UrlUnpadded::encode_string(&hash.finalize()[..18])
    }
}

/// Who a token's identity rules count: its subject, else its client, else
/// one shared bucket for tokens naming neither (so a token without `sub`
/// never escapes a subject rule).
fn subject_of(token: &AccessToken) -> [&str; 3] {
    match (&token.subject, &token.client_id) {
        (Some(sub), _) => [&token.issuer, "sub", sub],
        (None, Some(client)) => [&token.issuer, "client", client],
        (None, None) => [&token.issuer, "none", ""],
    }
}

fn client_of(token: &AccessToken) -> [&str; 3] {
    match &token.client_id {
        Some(client) => [&token.issuer, "client", client],
        None => [&token.issuer, "none", ""],
    }
}

/// The counts the identity rules among `rules` make for `token`'s request,
/// whose messages are `units` (one unit without method for a `GET` or
/// `DELETE`).
pub fn identity_counts(rules: &[RateRule], token: &AccessToken, units: &[Unit<'_>]) -> Vec<Count> {
    let mut counts = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        for unit in units.iter().filter(|unit| rule.matches(unit)) {
            let tool = unit.tool.unwrap_or_default();
            let key = match rule.key {
                KeyKind::Subject => rule.key_of(&subject_of(token)),
                KeyKind::Client => rule.key_of(&client_of(token)),
                KeyKind::SubjectTool => {
                    let [a, b, c] = subject_of(token);
                    rule.key_of(&[a, b, c, tool])
                }
                KeyKind::ClientTool => {
                    let [a, b, c] = client_of(token);
                    rule.key_of(&[a, b, c, tool])
                }
                KeyKind::Method => rule.key_of(&[unit.method.unwrap_or_default()]),
                KeyKind::Address => continue,
            };
            counts.push(Count {
                rule: index,
                binding: rule.binding.clone(),
                key,
            });
        }
    }
    counts
}

/// The counts the address rules among `rules` make for a request from
/// `address` (`CF-Connecting-IP`); none without an address.
pub fn address_counts(rules: &[RateRule], address: Option<&str>) -> Vec<Count> {
    let Some(address) = address.map(str::trim).filter(|a| !a.is_empty()) else {
        return Vec::new();
    };
    rules
        .iter()
        .enumerate()
        .filter(|(_, rule)| rule.is_address())
        .map(|(index, rule)| Count {
            rule: index,
            binding: rule.binding.clone(),
            key: rule.key_of(&[address]),
        })
        .collect()
}

/// The verdict over a request's counts: the first rule it is over, else the
/// first failed rule that refuses on error; and every failed rule that let
/// the request go on, for the log.
pub fn judge<'r>(
    rules: &'r [RateRule],
    counts: &[Count],
    outcomes: &[Counted],
) -> (Option<Limited<'r>>, Vec<&'r str>) {
    let mut refused = None;
    let mut failed_open = Vec::new();
    // A missing outcome is a failed count: the driver said nothing of it.
    for (index, count) in counts.iter().enumerate() {
        let Some(rule) = rules.get(count.rule) else {
            continue;
        };
        match outcomes.get(index).copied().unwrap_or(Counted::Failed) {
            Counted::Within => {}
            Counted::Over => {
                if !matches!(refused, Some(Limited::Over(_))) {
                    refused = Some(Limited::Over(rule));
                }
            }
            Counted::Failed if rule.on_error == OnError::Refuse => {
                refused.get_or_insert(Limited::Unavailable(rule));
            }
            Counted::Failed => {
                if !failed_open.contains(&rule.name.as_str()) {
                    failed_open.push(rule.name.as_str());
                }
            }
        }
    }
    (refused, failed_open)
}

/// Why a request is refused by a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited<'r> {
    /// Over the rule's limit: `429`.
    Over(&'r RateRule),
    /// The binding failed and the rule refuses then: `503`.
    Unavailable(&'r RateRule),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bound(name: &str) -> bool {
        name.starts_with("RL")
    }

    fn rules(value: Value) -> Vec<RateRule> {
        parse_rules(value, "", &bound).expect("rules parse")
    }

    fn token(sub: Option<&str>, client: Option<&str>) -> AccessToken {
        AccessToken {
            issuer: "https://as.example".into(),
            subject: sub.map(str::to_owned),
            client_id: client.map(str::to_owned),
            scopes: Vec::new(),
            expires_at: 0,
            not_before: None,
            token_id: None,
            confirmation: None,
        }
    }

    const CALL_VOID: Unit<'static> = Unit {
        method: Some("tools/call"),
        tool: Some("void_invoice"),
    };
    const CALL_LOOKUP: Unit<'static> = Unit {
        method: Some("tools/call"),
        tool: Some("lookup_invoice"),
    };
    const LIST: Unit<'static> = Unit {
        method: Some("tools/list"),
        tool: None,
    };

    #[test]
    fn every_problem_of_every_rule_is_named() {
        let problems = parse_rules(
            json!([
                {"binding": "NOPE", "key": "user"},
                {"key": "subject", "period": 30, "colour": 1},
                {"binding": "RL_A", "key": "address", "tools": ["x"]},
                "text",
                {"binding": "RL_A", "key": "subject", "on_error": "maybe", "tools": "x"}
            ]),
            "",
            &bound,
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "rule 1: binding \"NOPE\" is not a Rate Limiting binding of this worker (add a [[ratelimits]] entry with name = \"NOPE\" to wrangler.toml)",
                "rule 1: key \"user\" is not one of subject, client, subject+tool, client+tool, method, address",
                "rule 2: unknown member \"colour\" (expected binding, key, tools, methods, period, on_error, name)",
                "rule 2: period must be 10 or 60 (the periods the Rate Limiting binding allows; give the one of its [[ratelimits]] entry)",
                "rule 2: binding is required",
                "rule 3: an address rule counts before the body is read, so it takes no tools or methods",
                "rule 4: must be an object",
                "rule 5: on_error \"maybe\" must be \"allow\" or \"refuse\"",
                "rule 5: tools must be an array of tool names",
            ]
        );
        assert_eq!(
            parse_rules(json!({}), "", &bound).unwrap_err(),
            ["must be a JSON array of rules"]
        );
    }

    #[test]
    fn subjects_and_tools_count_apart() {
        let rules = rules(json!([
            {"binding": "RL_USER", "key": "subject"},
            {"binding": "RL_TOOL", "key": "subject+tool", "tools": ["void_invoice"], "name": "void"}
        ]));
        assert_eq!(rules[1].name, "void");
        assert_eq!(rules[0].name, "RL_USER:subject");
        let alice = token(Some("alice"), Some("c1"));
        let bob = token(Some("bob"), Some("c1"));
        let a = identity_counts(&rules, &alice, &[CALL_VOID, CALL_LOOKUP, LIST]);
        // Every message counts under the subject rule; only void_invoice under the tool rule.
        assert_eq!(a.iter().filter(|c| c.rule == 0).count(), 3);
        assert_eq!(a.iter().filter(|c| c.rule == 1).count(), 1);
        assert!(a.iter().filter(|c| c.rule == 0).all(|c| c.key == a[0].key));
        let b = identity_counts(&rules, &bob, &[CALL_VOID]);
        assert_ne!(a[0].key, b[0].key);
        assert_ne!(a.last().unwrap().key, b.last().unwrap().key);
        // The key names neither subject nor rule in clear.
        assert!(!a[0].key.contains("alice") && a[0].key.len() == 24);
    }

    #[test]
    fn rules_sharing_a_binding_never_share_a_counter() {
        let global = rules(json!([{"binding": "RL_A", "key": "subject"}]));
        let route = parse_rules(
            json!([{"binding": "RL_A", "key": "subject"}]),
            "https://mcp.example/a",
            &bound,
        )
        .unwrap();
        let filtered =
            rules(json!([{"binding": "RL_A", "key": "subject", "methods": ["tools/list"]}]));
        let alice = token(Some("alice"), None);
        let keys: Vec<String> = [&global, &route, &filtered]
            .iter()
            .map(|rules| identity_counts(rules, &alice, &[LIST])[0].key.clone())
            .collect();
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
    }

    #[test]
    fn a_token_without_subject_counts_as_its_client_and_gets_requests_count_once() {
        let rules = rules(json!([
            {"binding": "RL_USER", "key": "subject"},
            {"binding": "RL_M", "key": "method"},
            {"binding": "RL_T", "key": "client+tool"}
        ]));
        let machine = token(None, Some("c1"));
        let same_client = token(Some("c1"), None);
        let get = [Unit {
            method: None,
            tool: None,
        }];
        let counts = identity_counts(&rules, &machine, &get);
        // A GET counts once under the subject rule, and under no method or tool rule.
        assert_eq!(counts.len(), 1);
        let other = identity_counts(&rules, &same_client, &get);
        assert_ne!(
            counts[0].key, other[0].key,
            "a client id is never taken for a subject"
        );
    }

    #[test]
    fn address_rules_count_only_with_an_address() {
        let rules = rules(json!([
            {"binding": "RL_USER", "key": "subject"},
            {"binding": "RL_IP", "key": "address", "period": 10}
        ]));
        assert!(address_counts(&rules, None).is_empty());
        assert!(address_counts(&rules, Some(" ")).is_empty());
        let counts = address_counts(&rules, Some("192.0.2.1"));
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].rule, counts[0].binding.as_str()), (1, "RL_IP"));
        assert_ne!(
            counts[0].key,
            address_counts(&rules, Some("192.0.2.2"))[0].key
        );
        assert!(identity_counts(&rules, &token(Some("a"), None), &[LIST])
            .iter()
            .all(|c| c.rule == 0));
    }

    #[test]
    fn the_verdict_prefers_over_then_refusing_failures_and_logs_the_rest() {
        let rules = rules(json!([
            {"binding": "RL_A", "key": "subject"},
            {"binding": "RL_B", "key": "subject", "on_error": "refuse"},
            {"binding": "RL_C", "key": "subject"}
        ]));
        let alice = token(Some("alice"), None);
        let counts = identity_counts(&rules, &alice, &[LIST]);
        use Counted::*;
        let (refused, open) = judge(&rules, &counts, &[Within, Within, Within]);
        assert_eq!((refused, open.len()), (None, 0));
        let (refused, open) = judge(&rules, &counts, &[Failed, Within, Failed]);
        assert_eq!(refused, None);
        assert_eq!(open, ["RL_A:subject", "RL_C:subject"]);
        let (refused, _) = judge(&rules, &counts, &[Within, Failed, Over]);
        assert_eq!(refused, Some(Limited::Over(&rules[2])));
        let (refused, _) = judge(&rules, &counts, &[Within, Failed]);
        assert_eq!(refused, Some(Limited::Unavailable(&rules[1])));
        // A count the driver left unanswered is a failure.
        let (refused, open) = judge(&rules, &counts, &[]);
        assert_eq!(refused, Some(Limited::Unavailable(&rules[1])));
        assert_eq!(open.len(), 2);
    }
}
