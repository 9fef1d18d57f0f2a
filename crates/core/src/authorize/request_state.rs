//! `requestState` bound to the user it was issued to (MCP 2026-07-28,
//! "Multi Round-Trip Requests", SEP-2322, and the security best practices'
//! state handles).
//!
//! A server that needs input in the middle of `tools/call`, `prompts/get` or
//! `resources/read` answers with an `InputRequiredResult` carrying an opaque
//! `result.requestState`; the client retries the same request with it in
//! `params.requestState`. The state round-trips through the client, so the
//! echo is attacker-controlled: a state handed to one user must not resume
//! a call for another, and a server that keeps no session cannot tell.
//!
//! The gate seals every state the origin hands out under `MCP_STATE_SECRET`
//! (HMAC-SHA-256): the client sees `pc1.<expiry>.<tag>.<origin's state>`,
//! the tag covering the protected resource, the token's `iss`, `sub` and
//! `client_id`, the method, its target (tool or prompt name, resource URI),
//! a digest of its arguments, the expiry and the state. A retry's state
//! must open for the caller's own identity and the same call, before its
//! lifetime ends; the origin then receives its own state, unchanged. Any
//! failure is one generic `-32602` (as the Python SDK's own boundary
//! answers); the reason goes to the log. Sealing adds integrity and
//! binding, not secrecy: the origin's state stays as readable to the
//! client as the origin made it.

use std::fmt;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::parse::jsonrpc::target_of;

/// The methods whose results may ask for input and carry `requestState`.
pub const STATEFUL_METHODS: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];

use crate::verify::secret::parse_secrets;
pub use crate::verify::secret::MIN_SECRET_BYTES;

/// How long a sealed state can be used (the Python SDK's default TTL).
pub const STATE_LIFETIME_SECONDS: i64 = 600;

/// The prefix of a state the gate sealed (format version 1).
const SEALED_PREFIX: &str = "pc1.";

/// Separates what the tag covers from any other use of the same secret.
const DOMAIN: &[u8] = b"portcullis/request-state/v1";

const PARAM: &str = "requestState";

/// The sealing secrets from `MCP_STATE_SECRET`: the first seals, any opens,
/// so a secret can be rotated without refusing the states out in clients.
/// Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey {
    secrets: Vec<Vec<u8>>,
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

/// Whom a state belongs to: the verified token's identity on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The protected resource.
    pub resource: String,
    /// `iss`.
    pub issuer: String,
    /// `sub`, when the token has one.
    pub subject: Option<String>,
    /// `client_id`, when the token has one.
    pub client_id: Option<String>,
}

/// The call a state continues.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    method: String,
    target: Option<String>,
    /// SHA-256 of `params.arguments` as JSON (absent: of `null`).
    arguments: [u8; 32],
}

impl Call {
    /// The call a request message makes, when its method is stateful.
    fn of(message: &Map<String, Value>) -> Option<Call> {
        let method = message.get("method")?.as_str()?;
        if !STATEFUL_METHODS.contains(&method) {
            return None;
        }
        let params = message.get("params").and_then(Value::as_object);
        let target = target_of(method, params).ok()?;
        let arguments = params
            .and_then(|params| params.get("arguments"))
            .unwrap_or(&Value::Null);
        let json = serde_json::to_vec(arguments).ok()?;
        Some(Call {
            method: method.to_owned(),
            target,
            arguments: Sha256::digest(json).into(),
        })
    }
}

/// Why a `requestState` was refused; each is a log reason, the wire answer
/// is the same for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRefusal {
    /// Not a string, or not in the gate's sealed form.
    Malformed,
    /// Sealed for someone else or another call, or altered.
    Foreign,
    /// Past its lifetime.
    Expired,
}

impl StateRefusal {
    /// Stable reason code for the structured log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "request_state_malformed",
            Self::Foreign => "request_state_foreign",
            Self::Expired => "request_state_expired",
        }
    }
}

impl StateKey {
    /// The key from the binding's text: secrets separated by white space,
    /// the sealing one first. `Err` (never echoing a secret) when one is
    /// shorter than [`MIN_SECRET_BYTES`] or none is given.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        parse_secrets(text).map(|secrets| StateKey { secrets })
    }

    /// The tag's MAC state; `None` never happens (HMAC takes a key of any
    /// length), and would make every state fail to seal and to open.
    fn tag(
        &self,
        secret: &[u8],
        holder: &Holder,
        call: &Call,
        expires: i64,
        state: &str,
    ) -> Option<Hmac<Sha256>> {
        // Invariant: every field is length-prefixed, so no two different
        // field lists produce the same input.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        let absent = "\u{0}absent";
        for field in [
            DOMAIN,
            holder.resource.as_bytes(),
            holder.issuer.as_bytes(),
            holder.subject.as_deref().unwrap_or(absent).as_bytes(),
            holder.client_id.as_deref().unwrap_or(absent).as_bytes(),
            call.method.as_bytes(),
            call.target.as_deref().unwrap_or(absent).as_bytes(),
            &call.arguments,
            expires.to_string().as_bytes(),
            state.as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        Some(mac)
    }

    fn seal(&self, holder: &Holder, call: &Call, now: i64, state: &str) -> Option<String> {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let expires = now.saturating_add(STATE_LIFETIME_SECONDS);
        let tag = self
            .tag(self.secrets.first()?, holder, call, expires, state)?
            .finalize()
            .into_bytes();
        let mut sealed = String::from(SEALED_PREFIX);
        for part in [
            &expires.to_string(),
            &Base64UrlUnpadded::encode_string(&tag),
            state,
        ] {
            sealed.push_str(part);
            sealed.push('.');
        }
        sealed.pop();
        Some(sealed)
    }

    fn open<'s>(
        &self,
        holder: &Holder,
        call: &Call,
        now: i64,
        sealed: &'s str,
    ) -> Result<&'s str, StateRefusal> {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let rest = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(StateRefusal::Malformed)?;
        let mut parts = rest.splitn(3, '.');
        let (Some(expires), Some(tag), Some(state)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(StateRefusal::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| StateRefusal::Malformed)?;
        let tag = Base64UrlUnpadded::decode_vec(tag).map_err(|_| StateRefusal::Malformed)?;
        // Constant-time comparison (`verify_slice`), under every secret.
        let genuine = self.secrets.iter().any(|secret| {
            self.tag(secret, holder, call, expires, state)
                .is_some_and(|mac| mac.verify_slice(&tag).is_ok())
        });
        if !genuine {
            return Err(StateRefusal::Foreign);
        }
        if now > expires {
            return Err(StateRefusal::Expired);
        }
        Ok(state)
    }
}

/// A request body's states opened, and what the answer's states are sealed
/// for.
#[derive(Debug)]
pub struct Opened {
    /// The body to forward, with the origin's own states; `None`: the body
    /// carried none, forward it as it came.
    pub body: Option<Vec<u8>>,
    /// Seals the states in the origin's answer; `None` when no request of
    /// the body can be answered with one.
    pub sealer: Option<StateSealer>,
}

/// A refused state, and the id of the request that carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Why.
    pub why: StateRefusal,
    /// The carrying request's id.
    pub id: Option<Value>,
}

/// Opens every `params.requestState` of a (valid JSON-RPC) request body for
/// `holder` at `now`, and prepares the sealing of the answer's states.
pub fn open_body(
    key: &StateKey,
    holder: &Holder,
    now: i64,
    body: &[u8],
) -> Result<Opened, Refused> {
    let malformed = Refused {
        why: StateRefusal::Malformed,
        id: None,
    };
    let mut value: Value = serde_json::from_slice(body).map_err(|_| malformed.clone())?;
    let mut calls = Vec::new();
    let mut rewritten = false;
    let messages = match &mut value {
        Value::Array(messages) => messages.iter_mut().collect::<Vec<_>>(),
        message => vec![message],
    };
    for message in messages {
        let Some(message) = message.as_object_mut() else {
            continue;
        };
        let Some(call) = Call::of(message) else {
            continue;
        };
        let id = message.get("id").cloned();
        let refused = |why| Refused {
            why,
            id: id.clone(),
        };
        let carried = message
            .get_mut("params")
            .and_then(Value::as_object_mut)
            .and_then(|params| params.get_mut(PARAM));
        if let Some(carried) = carried {
            let sealed = carried.as_str().ok_or(refused(StateRefusal::Malformed))?;
            let state = key.open(holder, &call, now, sealed).map_err(refused)?;
            *carried = Value::from(state.to_owned());
            rewritten = true;
        }
        if let Some(id) = id {
            calls.push((id, call));
        }
    }
    let body = match rewritten {
        true => Some(serde_json::to_vec(&value).map_err(|_| malformed)?),
        false => None,
    };
    Ok(Opened {
        body,
        sealer: (!calls.is_empty()).then(|| StateSealer {
            key: key.clone(),
            holder: holder.clone(),
            now,
            calls,
        }),
    })
}

/// Seals the `result.requestState` of the origin's responses to the stateful
/// requests of one body.
#[derive(Debug, Clone)]
pub struct StateSealer {
    key: StateKey,
    holder: Holder,
    now: i64,
    calls: Vec<(Value, Call)>,
}

impl StateSealer {
    /// Seals the state of `message` when it answers one of the calls;
    /// returns whether anything changed.
    pub fn seal_message(&self, message: &mut Value) -> bool {
        let Some((_, call)) = message
            .get("id")
            .and_then(|id| self.calls.iter().find(|(ours, _)| ours == id))
        else {
            return false;
        };
        let Some(state) = message
            .get_mut("result")
            .and_then(|result| result.get_mut(PARAM))
        else {
            return false;
        };
        // A state that is not a string is passed as it is: no client can
        // echo it in a form the gate would open, so it resumes nothing.
        let Some(text) = state.as_str() else {
            return false;
        };
        // A state that cannot be sealed is left as the origin gave it: its
        // retry is then refused, as a state the gate did not seal.
        let Some(sealed) = self.key.seal(&self.holder, call, self.now, text) else {
            return false;
        };
        *state = Value::from(sealed);
        true
    }

    /// Whether `text` may hold a state to seal (a cheap test before parsing).
    pub fn may_concern(text: &[u8]) -> bool {
        text.windows(PARAM.len())
            .any(|window| window == PARAM.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey::parse("0123456789abcdef0123456789abcdef").unwrap()
    }

    fn holder(subject: &str) -> Holder {
        Holder {
            resource: "https://mcp.example.com/mcp".into(),
            issuer: "https://as.example.com".into(),
            subject: Some(subject.into()),
            client_id: Some("agent".into()),
        }
    }

    fn call(tool: &str, arguments: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
        )
    }

    /// The origin's state as the client receives it, sealed for `who`.
    fn sealed_for(who: &str, body: &str, now: i64) -> String {
        let opened = open_body(&key(), &holder(who), now, body.as_bytes()).unwrap();
        assert_eq!(opened.body, None, "the first round carries no state");
        let mut answer: Value = serde_json::from_str(
            r#"{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","requestState":"origin.state"}}"#,
        )
        .unwrap();
        assert!(opened.sealer.as_ref().unwrap().seal_message(&mut answer));
        answer["result"]["requestState"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn retry(body: &str, state: &str) -> String {
        let mut value: Value = serde_json::from_str(body).unwrap();
        value["params"]["requestState"] = Value::from(state);
        value.to_string()
    }

    #[test]
    fn a_state_resumes_only_its_owners_call() {
        let first = call("confirm", r#"{"text":"a"}"#);
        let state = sealed_for("alice", &first, 1000);
        assert!(
            state.starts_with("pc1.1600.") && state.ends_with(".origin.state"),
            "{state}"
        );

        let own = open_body(
            &key(),
            &holder("alice"),
            1100,
            retry(&first, &state).as_bytes(),
        )
        .unwrap();
        let forwarded: Value = serde_json::from_slice(&own.body.unwrap()).unwrap();
        assert_eq!(forwarded["params"]["requestState"], "origin.state");

        let refused = |who: &str, body: &str, state: &str, now: i64| {
            open_body(&key(), &holder(who), now, retry(body, state).as_bytes()).unwrap_err()
        };
        let foreign = Refused {
            why: StateRefusal::Foreign,
            id: Some(Value::from(7)),
        };
        assert_eq!(refused("bob", &first, &state, 1100), foreign);
        assert_eq!(
            refused("alice", &call("other", r#"{"text":"a"}"#), &state, 1100),
            foreign
        );
        assert_eq!(
            refused("alice", &call("confirm", r#"{"text":"b"}"#), &state, 1100),
            foreign
        );
        assert_eq!(
            refused(
                "alice",
                &first,
                &state.replace("origin.state", "origin.other"),
                1100
            ),
            foreign
        );
        assert_eq!(
            refused("alice", &first, &state.replacen("1600", "9600", 1), 1100),
            foreign
        );
        assert_eq!(
            refused("alice", &first, &state, 1601).why,
            StateRefusal::Expired
        );
        for bad in ["origin.state", "pc1.x.y.z", "pc1.1600", "pc1.1600.!!.s"] {
            assert_eq!(
                refused("alice", &first, bad, 1100).why,
                StateRefusal::Malformed,
                "{bad}"
            );
        }
        let number = first.replace(r#""arguments""#, r#""requestState":5,"arguments""#);
        assert_eq!(
            open_body(&key(), &holder("alice"), 1100, number.as_bytes())
                .unwrap_err()
                .why,
            StateRefusal::Malformed
        );
    }

    #[test]
    fn a_rotated_secret_still_opens_what_the_old_one_sealed() {
        let first = call("confirm", "{}");
        let state = sealed_for("alice", &first, 1000);
        let rotated =
            StateKey::parse("ffffffffffffffffffffffffffffffff 0123456789abcdef0123456789abcdef")
                .unwrap();
        assert!(open_body(
            &rotated,
            &holder("alice"),
            1001,
            retry(&first, &state).as_bytes()
        )
        .is_ok());
        let retired = StateKey::parse("ffffffffffffffffffffffffffffffff").unwrap();
        assert_eq!(
            open_body(
                &retired,
                &holder("alice"),
                1001,
                retry(&first, &state).as_bytes()
            )
            .unwrap_err()
            .why,
            StateRefusal::Foreign
        );
    }

    #[test]
    fn short_or_missing_secrets_are_refused_without_echo() {
        assert!(StateKey::parse("").is_err());
        let problem = StateKey::parse("short-secret").unwrap_err();
        assert!(!problem.contains("short-secret"));
        assert_eq!(format!("{:?}", key()), "StateKey(<redacted>)");
    }

    #[test]
    fn only_answers_to_stateful_calls_are_sealed() {
        let body = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"prompts/get","params":{"name":"p"}}]"#;
        let opened = open_body(&key(), &holder("alice"), 0, body.as_bytes()).unwrap();
        let mut list: Value =
            serde_json::from_str(r#"{"jsonrpc":"2.0","id":1,"result":{"requestState":"x"}}"#)
                .unwrap();
        assert!(!opened.sealer.as_ref().unwrap().seal_message(&mut list));
        let mut prompt: Value =
            serde_json::from_str(r#"{"jsonrpc":"2.0","id":2,"result":{"requestState":"x"}}"#)
                .unwrap();
        assert!(opened.sealer.as_ref().unwrap().seal_message(&mut prompt));
        assert!(StateSealer::may_concern(br#"{"requestState":1}"#));
        assert!(!StateSealer::may_concern(br#"{"result":{}}"#));
    }
}
