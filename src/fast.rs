//! The fast path's calls from the JS entry (src/entry.mjs): one
//! synchronous pass of the decision ([`portcullis_core::flow::pass`]) per call, its step
//! handed back as a small array the entry acts on in plain JavaScript.
//!
//! Why: in workerd every `await` of a Rust future, every `Headers` entry read
//! and every object built through wasm-bindgen is a crossing between
//! JavaScript and WebAssembly, and on a forwarded request those crossings,
//! not the checks, were most of the gate's cost (bench/profile.mjs). Here a
//! request whose token and keys are in isolate memory costs one call, and
//! each thing the decision needs from outside (a WebCrypto verdict, a
//! session's owner from KV, the body) one more, performed by the entry.
//!
//! Header lists cross as one `name\0value\0...` text (field names and values
//! never hold NUL), not entry by entry.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use worker::Env;

use super::webcrypto::imported_already;
use super::{isolate, request_log};
use portcullis_core::flow::gate::GateRequest;
use portcullis_core::flow::pass::{
    pass, AfterVerify, Answers, ImportedKeys, Memory, ProvisionalForward, Remember, Step,
};
use portcullis_core::forward::origin::client_response_headers;
use portcullis_core::forward::reply::with_cors;
use portcullis_core::verify::jwk::{JwsAlgorithm, PublicKey};

/// The step codes, the first element of every array a pass returns:
/// `[0]` full path; `[1, url, cors origin, log, headers]` forward;
/// `[2, status, body, log, headers]` answer; `[3, key, params, signature,
/// data, fingerprint]` verify; `[4, kv key]` read the session's owner;
/// `[5]` read the body; `[6, kv key, owner, ttl]` bind the origin's session
/// (key empty: nothing to bind). The log is the request's JSON line without
/// `status`, `duration_ms` and the closing brace, which the entry adds.
///
/// A verify step goes on with what a good verdict leads to ([`AfterVerify`]):
/// `0` pass again with the verdict; `[5]` read the body as well; `[4, kv
/// key]` read the session's owner as well; `[1, stage]` a forward, staged
/// here: [`gate_settle`] hands it out for a good verdict only.
const FULL: u8 = 0;
const FORWARD: u8 = 1;
const REPLY: u8 = 2;
const VERIFY: u8 = 3;
const SESSION: u8 = 4;
const BODY: u8 = 5;
const BIND: u8 = 6;
/// After a verify step: pass again with the verdict.
const PASS_AGAIN: u8 = 0;

/// Forwards decided as if a signature were good, waiting for its verdict.
/// Bounded: one evicted before its verdict arrives costs that request
/// another pass, nothing else.
const MAX_STAGED: usize = 1024;

/// A forward waiting for its verdict: the `[1, ...]` array and the
/// verification to remember.
struct Staged {
    id: u32,
    forward: Array,
    remember: Option<Remember>,
}

thread_local! {
    static STAGED: RefCell<VecDeque<Staged>> = const { RefCell::new(VecDeque::new()) };
    static NEXT_STAGE: Cell<u32> = const { Cell::new(0) };
}

/// One pass over a request. The arguments after `now_ms` answer the steps
/// earlier passes of the same request asked for (absent until asked).
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen(js_name = gatePass)]
pub fn gate_pass(
    env: Env,
    method: &str,
    url: &str,
    headers: &str,
    now_ms: f64,
    verdict_fingerprint: Option<u32>,
    verdict: bool,
    session_read: bool,
    session_owner: Option<String>,
    body: Option<Vec<u8>>,
    origin_failed: bool,
    origin_session: Option<String>,
) -> Array {
    let isolate = isolate(&env);
    let (Ok(config), Ok(parsed)) = (&isolate.config, url::Url::parse(url)) else {
        // The full path answers and logs a bad configuration.
        return Array::of1(&FULL.into());
    };
    #[cfg(feature = "verify-probe")]
    if parsed.path() == super::verify_probe::PATH {
        return Array::of1(&FULL.into());
    }
    let headers = pairs(headers);
    let request = GateRequest {
        method,
        path: parsed.path(),
        query: parsed.query(),
        headers: &headers,
    };
    let answers = Answers {
        verdict: verdict_fingerprint.map(|fingerprint| (fingerprint, verdict)),
        session: session_read.then_some(session_owner),
        body,
        origin_failed,
        origin_session,
    };
    let memory = Memory {
        keys: &isolate.key_memory,
        introspection: &isolate.introspection_memory,
        tokens: &isolate.verified_tokens,
    };
    let now = (now_ms / 1000.0) as i64;
    let step = pass(config, &memory, &request, &answers, &WebCryptoKeys, now);
    let array = Array::new();
    let push = |value: JsValue| {
        array.push(&value);
    };
    match step {
        Step::Full => push(FULL.into()),
        Step::Forward {
            decision,
            request: forward,
        } => {
            #[cfg(feature = "panic-probe")]
            super::panic_probe(request.headers);
            push_forward(&array, config, &decision, &request, &forward);
        }
        Step::Reply {
            decision,
            status,
            headers,
            body,
        } => {
            push(REPLY.into());
            push(status.into());
            push(body.as_str().into());
            push(request_log(config, &decision, request.method, request.path).into());
            push(joined(&headers).into());
        }
        Step::Verify { check, then } => match imported_already(check.alg, &check.key) {
            Some(Some(imported)) => {
                push(VERIFY.into());
                push(imported.key);
                push(imported.verify_params);
                push(Uint8Array::from(check.signature.as_slice()).into());
                push(Uint8Array::from(check.message.as_slice()).into());
                push(check.fingerprint.into());
                match then {
                    AfterVerify::PassAgain => push(PASS_AGAIN.into()),
                    AfterVerify::ReadBody => push(BODY.into()),
                    AfterVerify::ReadSession { key } => {
                        push(SESSION.into());
                        push(key.into());
                    }
                    AfterVerify::Forward(provisional) => {
                        let ProvisionalForward {
                            decision,
                            request: forward,
                            remember,
                        } = *provisional;
                        #[cfg(feature = "panic-probe")]
                        super::panic_probe(request.headers);
                        let staged = Array::new();
                        push_forward(&staged, config, &decision, &request, &forward);
                        push(FORWARD.into());
                        push(stage(staged, remember).into());
                    }
                }
            }
            _ => push(FULL.into()),
        },
        Step::Session { key } => {
            push(SESSION.into());
            push(key.into());
        }
        Step::Body => push(BODY.into()),
        Step::Bind { record } => {
            let record = record.unwrap_or_default();
            push(BIND.into());
            push(record.key.into());
            push(record.owner.into());
            push((record.ttl_seconds as f64).into());
        }
    }
    array
}

/// Fills `array` (empty) as the `[1, url, cors origin, log, headers]` step
/// of a forward.
fn push_forward(
    array: &Array,
    config: &portcullis_core::config::Config,
    decision: &portcullis_core::flow::gate::Decision,
    request: &GateRequest<'_>,
    forward: &portcullis_core::forward::origin::OriginRequest,
) {
    array.push(&FORWARD.into());
    array.push(&forward.url.as_str().into());
    array.push(&decision.cors_origin.as_deref().unwrap_or_default().into());
    array.push(&request_log(config, decision, request.method, request.path).into());
    array.push(&joined(&forward.headers).into());
}

fn stage(forward: Array, remember: Option<Remember>) -> u32 {
    let id = NEXT_STAGE.with(|next| {
        let id = next.get();
        next.set(id.wrapping_add(1));
        id
    });
    STAGED.with(|staged| {
        let mut staged = staged.borrow_mut();
        if staged.len() >= MAX_STAGED {
            staged.pop_front();
        }
        staged.push_back(Staged {
            id,
            forward,
            remember,
        });
    });
    id
}

/// The verdict on a staged forward's signature. Verified: the token is
/// remembered and the forward handed out (`[1, ...]`). Otherwise, or if the
/// stage was evicted, `[0]`: the entry passes again with the verdict, and
/// that pass refuses or decides afresh.
#[wasm_bindgen(js_name = gateSettle)]
pub fn gate_settle(env: Env, stage: u32, verified: bool) -> Array {
    let taken = STAGED.with(|staged| {
        let mut staged = staged.borrow_mut();
        let at = staged.iter().position(|entry| entry.id == stage)?;
        staged.remove(at)
    });
    match taken {
        Some(Staged {
            forward, remember, ..
        }) if verified => {
            if let Some(remember) = remember {
                remember.commit(&isolate(&env).verified_tokens);
            }
            forward
        }
        _ => Array::of1(&FULL.into()),
    }
}

/// The response headers the client receives: the origin's, filtered
/// ([`client_response_headers`]), with CORS headers for an allowed browser
/// origin (`cors_origin` empty: none).
#[wasm_bindgen(js_name = gateClientHeaders)]
pub fn gate_client_headers(origin_headers: &str, cors_origin: &str) -> String {
    let mut headers = client_response_headers(&pairs(origin_headers));
    if !cors_origin.is_empty() {
        with_cors(&mut headers, cors_origin);
    }
    joined(&headers)
}

/// Keys the WebCrypto backend imported already (`src/webcrypto.rs`).
struct WebCryptoKeys;

impl ImportedKeys for WebCryptoKeys {
    fn readiness(&self, alg: JwsAlgorithm, key: &PublicKey) -> Option<bool> {
        imported_already(alg, key).map(|imported| imported.is_some())
    }
}

fn pairs(text: &str) -> Vec<(String, String)> {
    let mut fields = text.split('\0');
    let mut pairs = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        pairs.push((name.to_owned(), value.to_owned()));
    }
    pairs
}

fn joined(pairs: &[(String, String)]) -> String {
    let mut text = String::new();
    for (name, value) in pairs {
        if !text.is_empty() {
            text.push('\0');
        }
        text.push_str(name);
        text.push('\0');
        text.push_str(value);
    }
    text
}
