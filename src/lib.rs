//! The Cloudflare Workers glue: the calls through which the JavaScript entry
//! (src/entry.mjs), the one driver on the edge, runs a request's state
//! machine ([`portcullis_core::flow::machine::Flow`]). Each call is
//! synchronous and runs the machine to its next need, handed back as a small
//! array; the entry performs it in plain JavaScript (KV, `fetch`, timers,
//! WebCrypto, the body, the forward) and resumes the machine with the
//! outcome. No future, no await and no I/O live on this side.
//!
//! Why a JavaScript driver: in workerd each `await` of a Rust future and each
//! object built through wasm-bindgen is a crossing between JavaScript and
//! WebAssembly, and on a forwarded request those crossings, not the checks,
//! were most of the gate's cost. Here a request costs one call per need.
//!
//! Machines live in a table of this isolate, named by a handle; header lists
//! cross as one `name\0value\0...` text (field names and values never hold
//! NUL). Compiled only for `wasm32`, so the core can never come to depend
//! on it.

#![cfg(target_arch = "wasm32")]

#[cfg(feature = "verify-probe")]
mod verify_probe;
mod webcrypto;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Array, Uint8Array};
use wasm_bindgen::prelude::*;
use worker::Env;

use portcullis_core::config::{Bindings, Config};
use portcullis_core::flow::machine::{
    Answer, Body, BodyError, Check, Flow, Gate, Need, Request, Response, Step,
};
use portcullis_core::forward::log::event_log;
use portcullis_core::forward::reply::Denial;
use portcullis_core::io::{FetchError, FetchedDocument, Io, IoAnswer};

thread_local! {
    static GATE: RefCell<Option<Rc<Gate>>> = const { RefCell::new(None) };
    static FLOWS: RefCell<Flows> = RefCell::new(Flows::default());
}

struct EnvBindings<'e>(&'e Env);

impl Bindings for EnvBindings<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|value| value.to_string())
    }
    fn has_kv_namespace(&self, name: &str) -> bool {
        self.0.kv(name).is_ok()
    }
}

/// The isolate's gate, parsing the configuration on first use. A bad
/// configuration is logged once, naming every problem, and then refuses
/// every request.
fn gate(env: &Env) -> Rc<Gate> {
    GATE.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                install_panic_hook();
                let config = Config::parse(&EnvBindings(env));
                if let Err(error) = &config {
                    let problems = error.to_string();
                    log(&event_log("config_invalid", "problems", Some(&problems)));
                }
                Rc::new(Gate::new(config))
            })
            .clone()
    })
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn log(line: &str);
}

/// Logs a panic as one JSON line, then hands it to the hook worker's start
/// function installed (which marks the instance for re-creation). The
/// panic's message is left out: it may quote whatever value was being
/// handled. A panic aborts the wasm instance (`panic = "abort"` on wasm32);
/// every call here is synchronous, so it throws from the very call the
/// entry made, which answers that request with a generic 500 and never
/// forwards it.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()));
        log(&event_log("panic", "location", location.as_deref()));
        previous(info);
    }));
}

/// Test builds only (feature `panic-probe`): panics where an authorized
/// request is about to be forwarded, when the request asks for it.
#[cfg(feature = "panic-probe")]
fn panic_probe(headers: &[(String, String)]) {
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("x-portcullis-panic-probe"))
    {
        panic!("panic probe");
    }
}

/// Most machines alive at once in an isolate; past it the oldest is dropped
/// (its request then fails closed with a 500 at its next call). Long
/// `tools/list` streams hold one each while they are filtered.
const MAX_FLOWS: usize = 4096;

/// A request's machine, and the signature check it waits on while the entry
/// imports the key (`[IMPORT]`).
struct Slot {
    handle: u32,
    flow: Flow,
    import: Option<Check>,
}

/// The machines of the requests in flight, by handle. A handle carries a
/// generation, so a dropped machine's handle never names a newer one.
#[derive(Default)]
struct Flows {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    generation: u32,
    order: std::collections::VecDeque<u32>,
}

impl Flows {
    fn insert(&mut self, flow: Flow) -> u32 {
        if self.order.len() >= MAX_FLOWS {
            if let Some(oldest) = self.order.pop_front() {
                self.remove(oldest);
            }
        }
        self.generation = self.generation.wrapping_add(1) & 0xFFFF;
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        let handle = ((index as u32) << 16) | self.generation;
        self.slots[index] = Some(Slot {
            handle,
            flow,
            import: None,
        });
        self.order.push_back(handle);
        handle
    }

    fn get(&mut self, handle: u32) -> Option<&mut Slot> {
        match self.slots.get_mut((handle >> 16) as usize) {
            Some(Some(slot)) if slot.handle == handle => Some(slot),
            _ => None,
        }
    }

    fn remove(&mut self, handle: u32) {
        if self.get(handle).is_some() {
            let index = (handle >> 16) as usize;
            self.slots[index] = None;
            self.free.push(index);
            self.order.retain(|held| *held != handle);
        }
    }
}

// What a step asks the entry to do: the first element of every array.
const KV_GET: u8 = 0;
const KV_PUT: u8 = 1;
const FETCH: u8 = 2;
const SLEEP: u8 = 3;
const VERIFY: u8 = 4;
const IMPORT: u8 = 5;
const READ_BODY: u8 = 6;
const FORWARD: u8 = 7;
const READ_ORIGIN_BODY: u8 = 8;
const RESPOND: u8 = 9;
const DONE: u8 = 10;

// How a RESPOND's body is given.
const BODY_BYTES: u8 = 0;
const BODY_ORIGIN: u8 = 1;
const BODY_FILTERED: u8 = 2;

/// Starts the machine for a request and runs it to its first step:
/// `[handle, step...]`.
#[wasm_bindgen(js_name = gateStart)]
pub fn gate_start(env: Env, method: &str, url: &str, headers: &str, now_ms: f64) -> Array {
    let gate = gate(&env);
    let now = (now_ms / 1000.0) as i64;
    let Some(request) = Request::from_url(method, url, pairs(headers)) else {
        // The runtime always gives an absolute URL; refuse rather than guess.
        let array = Array::new();
        array.push(&0.into());
        push_failure(&array);
        return array;
    };
    let flow = Flow::new(gate, request, now);
    let handle = FLOWS.with(|flows| flows.borrow_mut().insert(flow));
    let array = Array::new();
    array.push(&handle.into());
    advance(handle, &array, None);
    array
}

/// Steps the machine without an answer: after `[RESPOND, ...]` whose last
/// element says background work follows.
#[wasm_bindgen(js_name = gateStep)]
pub fn gate_step(handle: u32) -> Array {
    let array = Array::new();
    advance(handle, &array, None);
    array
}

/// Resumes after `[KV_GET]` with the value read (`undefined`: none, or the
/// read failed).
#[wasm_bindgen(js_name = gateKv)]
pub fn gate_kv(handle: u32, value: Option<String>) -> Array {
    resume(handle, Answer::Io(IoAnswer::Kv(value)))
}

/// Resumes after `[KV_PUT]` or `[SLEEP]`.
#[wasm_bindgen(js_name = gateDone)]
pub fn gate_done(handle: u32) -> Array {
    resume(handle, Answer::Io(IoAnswer::Done))
}

/// Resumes after `[FETCH]`: `failure` 0 for an answer (the other
/// arguments), 1 network, 2 timeout, 3 too large.
#[allow(clippy::too_many_arguments)]
#[wasm_bindgen(js_name = gateFetched)]
pub fn gate_fetched(
    handle: u32,
    failure: u8,
    status: u16,
    body: Option<Vec<u8>>,
    cache_control: Option<String>,
    expires: Option<String>,
    date: Option<String>,
    location: Option<String>,
) -> Array {
    let outcome = match failure {
        0 => Ok(FetchedDocument {
            status,
            body: body.unwrap_or_default(),
            cache_control,
            expires,
            date,
            location,
        }),
        2 => Err(FetchError::Timeout),
        3 => Err(FetchError::TooLarge),
        _ => Err(FetchError::Network),
    };
    resume(handle, Answer::Io(IoAnswer::Fetched(outcome)))
}

/// Resumes after `[VERIFY]` with WebCrypto's verdict.
#[wasm_bindgen(js_name = gateVerdict)]
pub fn gate_verdict(handle: u32, verified: bool) -> Array {
    resume(handle, Answer::Verdict(verified))
}

/// After `[IMPORT]`: the imported `CryptoKey`, or `undefined` when
/// WebCrypto refused the key (it then never verifies). Runs on to the
/// `[VERIFY]` of the same check, or past its refusal.
#[wasm_bindgen(js_name = gateImported)]
pub fn gate_imported(handle: u32, key: JsValue) -> Array {
    let check = FLOWS.with(|flows| flows.borrow_mut().get(handle)?.import.take());
    let array = Array::new();
    let Some(check) = check else {
        push_failure(&array);
        return array;
    };
    match webcrypto::store(&check, key) {
        Some(imported) => push_verify(&array, imported, &check),
        None => advance(handle, &array, Some(Answer::Verdict(false))),
    }
    array
}

/// Resumes after `[READ_BODY]`: the body, or `undefined` with `too_large`
/// saying why it could not be read.
#[wasm_bindgen(js_name = gateBody)]
pub fn gate_body(handle: u32, body: Option<Vec<u8>>, too_large: bool) -> Array {
    let body = match body {
        Some(body) => Ok(body),
        None if too_large => Err(BodyError::TooLarge),
        None => Err(BodyError::Unreadable),
    };
    resume(handle, Answer::Body(body))
}

/// Resumes after `[FORWARD]` with the origin's status and header fields
/// (`status` 0: the origin could not be reached).
#[wasm_bindgen(js_name = gateOrigin)]
pub fn gate_origin(handle: u32, status: u16, headers: &str) -> Array {
    let origin = if status == 0 {
        Err(())
    } else {
        Ok((status, pairs(headers)))
    };
    resume(handle, Answer::Origin(origin))
}

/// Resumes after `[READ_ORIGIN_BODY]` (`undefined`: it could not be read).
#[wasm_bindgen(js_name = gateOriginBody)]
pub fn gate_origin_body(handle: u32, body: Option<Vec<u8>>) -> Array {
    resume(handle, Answer::OriginBody(body.ok_or(())))
}

/// One chunk of a filtered origin stream; `None` at its end gives what the
/// filter held back.
#[wasm_bindgen(js_name = gateFilter)]
pub fn gate_filter(handle: u32, chunk: Option<Vec<u8>>) -> Option<Vec<u8>> {
    FLOWS.with(|flows| {
        let mut flows = flows.borrow_mut();
        let flow = &mut flows.get(handle)?.flow;
        let out = match chunk {
            Some(chunk) => flow.filter_chunk(&chunk),
            None => flow.filter_end(),
        };
        if flow.is_spent() {
            flows.remove(handle);
        }
        Some(out)
    })
}

/// Drops the machine: the request is answered and its background work done,
/// or the driver gave up on it.
#[wasm_bindgen(js_name = gateEnd)]
pub fn gate_end(handle: u32) {
    FLOWS.with(|flows| flows.borrow_mut().remove(handle));
}

/// The body of the generic 500 the entry answers with when the instance
/// failed (a panic) or the runtime threw: taken from the one place every
/// error answer is made.
#[wasm_bindgen(js_name = gateFailureBody)]
pub fn gate_failure_body() -> String {
    Denial::Misconfigured.reply(None).body
}

fn resume(handle: u32, answer: Answer) -> Array {
    let array = Array::new();
    advance(handle, &array, Some(answer));
    array
}

/// Resumes the machine with `answer`, if any, steps it and pushes the step
/// onto `array`. An unknown handle (a machine dropped as the oldest, or a
/// re-created instance) fails the request closed.
fn advance(handle: u32, array: &Array, answer: Option<Answer>) {
    let next = FLOWS.with(|flows| {
        let mut flows = flows.borrow_mut();
        let slot = flows.get(handle)?;
        if let Some(answer) = answer {
            slot.flow.resume(answer);
        }
        loop {
            let step = slot.flow.step();
            let Step::Need(Need::Verify(check)) = &step else {
                let background = matches!(step, Step::Respond(_)) && slot.flow.has_background();
                if slot.flow.is_spent() {
                    flows.remove(handle);
                }
                return Some(Next::Step(step, background));
            };
            match webcrypto::imported(check) {
                // Refused before: answered here, without a round trip.
                Some(None) => slot.flow.resume(Answer::Verdict(false)),
                Some(Some(imported)) => return Some(Next::Verify(imported, check.clone())),
                None => {
                    slot.import = Some(check.clone());
                    return Some(Next::Import(check.clone()));
                }
            }
        }
    });
    match next {
        None => push_failure(array),
        Some(Next::Step(step, background)) => push_step(array, step, background),
        Some(Next::Verify(imported, check)) => push_verify(array, imported, &check),
        Some(Next::Import(check)) => {
            let (jwk, params) = webcrypto::import_request(&check);
            array.push(&IMPORT.into());
            array.push(&jwk);
            array.push(&params);
        }
    }
}

/// What [`advance`] found to hand out (a step, and whether background
/// work follows it).
enum Next {
    Step(Step, bool),
    Verify(webcrypto::Imported, Check),
    Import(Check),
}

/// `[VERIFY, key, params, signature, data]`.
fn push_verify(array: &Array, imported: webcrypto::Imported, check: &Check) {
    array.push(&VERIFY.into());
    array.push(&imported.key);
    array.push(&imported.verify_params);
    array.push(&Uint8Array::from(check.signature.as_slice()).into());
    array.push(&Uint8Array::from(check.message.as_slice()).into());
}

fn push_step(array: &Array, step: Step, background: bool) {
    let push = |value: JsValue| {
        array.push(&value);
    };
    match step {
        Step::Need(Need::Io(io)) => match io {
            Io::KvGet { key } => {
                push(KV_GET.into());
                push(key.into());
            }
            Io::KvPut {
                key,
                value,
                ttl_seconds,
            } => {
                push(KV_PUT.into());
                push(key.into());
                push(value.into());
                // Workers KV refuses expirations under 60 s.
                push((ttl_seconds.max(60) as f64).into());
            }
            Io::Get { url, limits } => {
                push(FETCH.into());
                push(url.as_str().into());
                push(JsValue::UNDEFINED);
                push(JsValue::UNDEFINED);
                push(limits.timeout_ms.into());
                push((limits.max_bytes as f64).into());
            }
            Io::PostForm {
                url,
                body,
                authorization,
                limits,
            } => {
                push(FETCH.into());
                push(url.as_str().into());
                push(body.into());
                push(authorization.map_or(JsValue::UNDEFINED, Into::into));
                push(limits.timeout_ms.into());
                push((limits.max_bytes as f64).into());
            }
            Io::Sleep { ms } => {
                push(SLEEP.into());
                push(ms.into());
            }
        },
        // Handed out by `advance` as VERIFY or IMPORT.
        Step::Need(Need::Verify(_)) => push_failure(array),
        Step::Need(Need::ReadBody {
            max_bytes,
            declared,
        }) => {
            push(READ_BODY.into());
            push((max_bytes as f64).into());
            push(declared.map_or(JsValue::UNDEFINED, |length| (length as f64).into()));
        }
        Step::Need(Need::Forward(forward)) => {
            #[cfg(feature = "panic-probe")]
            panic_probe(&forward.headers);
            // The body goes as the entry read it for `[READ_BODY]`: the very
            // bytes the machine authorized.
            push(FORWARD.into());
            push(forward.url.as_str().into());
            push(joined(&forward.headers).into());
        }
        Step::Need(Need::ReadOriginBody) => push(READ_ORIGIN_BODY.into()),
        Step::Respond(response) => {
            push_response(array, response);
            push(background.into());
        }
        Step::Done(line) => {
            push(DONE.into());
            push(line.map_or(JsValue::UNDEFINED, Into::into));
        }
    }
}

/// `[RESPOND, status, headers, body kind, body, log]`; the caller adds
/// whether background work follows.
fn push_response(array: &Array, response: Response) {
    let Response {
        status,
        headers,
        body,
        log,
    } = response;
    array.push(&RESPOND.into());
    array.push(&status.into());
    array.push(&joined(&headers).into());
    match body {
        Body::Bytes(bytes) => {
            array.push(&BODY_BYTES.into());
            array.push(&match String::from_utf8(bytes) {
                Ok(text) => JsValue::from(text),
                Err(bytes) => Uint8Array::from(bytes.as_bytes()).into(),
            });
        }
        Body::Origin => {
            array.push(&BODY_ORIGIN.into());
            array.push(&JsValue::UNDEFINED);
        }
        Body::OriginFiltered => {
            array.push(&BODY_FILTERED.into());
            array.push(&JsValue::UNDEFINED);
        }
    }
    array.push(&log.into());
}

/// A request whose machine is gone: a generic 500, never a forward.
fn push_failure(array: &Array) {
    let reply = Denial::Misconfigured.reply(None);
    let headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    push_response(
        array,
        Response {
            status: reply.status,
            headers,
            body: Body::Bytes(reply.body.into_bytes()),
            log: String::from(
                r#"{"event":"request","decision":"deny","reason":"runtime_error","status":500"#,
            ),
        },
    );
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
