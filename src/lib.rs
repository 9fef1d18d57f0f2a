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

use portcullis_core::authorize::rate_limit::Counted;
use portcullis_core::config::{Bindings, Config};
use portcullis_core::flow::machine::{
    origin_fields_replaced, Answer, Body, BodyError, Check, Flow, Gate, Need, Request, Response,
    Step, ORIGIN_FIELDS_DECIDED,
};
use portcullis_core::forward::assertion::ASSERTION_HEADER;
use portcullis_core::forward::log::event_log;
use portcullis_core::forward::origin::OriginFault;
use portcullis_core::forward::reply::Denial;
use portcullis_core::io::{FetchError, FetchedDocument, Io, IoAnswer, StoreFault};

thread_local! {
    static GATE: RefCell<Option<Rc<Gate>>> = const { RefCell::new(None) };
    static FLOWS: RefCell<Flows> = RefCell::new(Flows::default());
}

struct EnvBindings<'e>(&'e Env);

impl Bindings for EnvBindings<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.0.var(name).ok().map(|value| value.to_string())
    }
    /// A binding whose `get` and `put` are functions: what the entry calls
    /// (a KV namespace, or a wrapped binding standing in for one).
    fn has_kv_namespace(&self, name: &str) -> bool {
        self.has_method(name, "get") && self.has_method(name, "put")
    }
    /// A binding whose `limit` is a function: what the entry calls.
    fn has_rate_limiter(&self, name: &str) -> bool {
        self.has_method(name, "limit")
    }
    /// A binding whose `idFromName` is a function: a Durable Object namespace.
    fn has_durable_object(&self, name: &str) -> bool {
        self.has_method(name, "idFromName")
    }
}

impl EnvBindings<'_> {
    /// Whether `env[name]` is an object whose `method` is a function.
    fn has_method(&self, name: &str, method: &str) -> bool {
        let env: &JsValue = self.0.as_ref();
        js_sys::Reflect::get(env, &JsValue::from_str(name))
            .ok()
            .filter(JsValue::is_object)
            .and_then(|binding| js_sys::Reflect::get(&binding, &JsValue::from_str(method)).ok())
            .is_some_and(|value| value.is_function())
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
                match &config {
                    Err(error) => {
                        let problems = error.to_string();
                        log(&event_log("config_invalid", "problems", Some(&problems)));
                    }
                    Ok(config) => {
                        for warning in &config.warnings {
                            log(&event_log("config_warning", "warning", Some(warning)));
                        }
                    }
                }
                // The seed of the assertions' `jti`s: new for each isolate.
                let mut seed = [0u8; 32];
                random_values(&mut seed);
                Rc::new(Gate::new(config, seed))
            })
            .clone()
    })
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn log(line: &str);
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues)]
    fn random_values(buffer: &mut [u8]);
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

// What a step asks the entry to do: its first field.
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
const RATE_LIMIT: u8 = 11;
const CLAIM_PROOF: u8 = 12;

// How a RESPOND's body is given.
const BODY_BYTES: u8 = 0;
const BODY_ORIGIN: u8 = 1;
const BODY_FILTERED: u8 = 2;

/// A step as the entry receives it. Most are one text of `\0`-separated
/// fields, which crosses to JavaScript as a single string (the entry
/// splits it); each element pushed onto an array would be a crossing of its
/// own. Steps carrying JavaScript objects (a `CryptoKey`, bytes) are arrays
/// with the same fields in the same order. Fields never hold NUL: header
/// names and values cannot, URLs and store keys are ASCII without it, and
/// JSON escapes it.
enum Out {
    Text(String),
    Values(Array),
}

impl Out {
    /// A text step: `code`, then `fields`.
    fn text<'a>(code: u8, fields: impl IntoIterator<Item = &'a str>) -> Self {
        let mut text = code.to_string();
        for field in fields {
            text.push('\0');
            text.push_str(field);
        }
        Out::Text(text)
    }

    /// Appends header pairs as fields (always last in a step).
    fn with_headers(mut self, headers: &[(String, String)]) -> Self {
        if let Out::Text(text) = &mut self {
            for (name, value) in headers {
                text.push('\0');
                text.push_str(name);
                text.push('\0');
                text.push_str(value);
            }
        }
        self
    }

    fn values(items: &[JsValue]) -> Self {
        let array = Array::new();
        for item in items {
            array.push(item);
        }
        Out::Values(array)
    }

    fn into_js(self) -> JsValue {
        match self {
            Out::Text(text) => text.into(),
            Out::Values(array) => array.into(),
        }
    }
}

/// Starts the machine for a request and runs it to its first step, with the
/// handle as the step's first field.
#[wasm_bindgen(js_name = gateStart)]
pub fn gate_start(env: Env, method: &str, url: &str, headers: &str, now_ms: f64) -> JsValue {
    let gate = gate(&env);
    let now = (now_ms / 1000.0) as i64;
    let (handle, out) = match Request::from_url(method, url, pairs(headers)) {
        Some(request) => {
            let flow = Flow::new(gate, request, now);
            let handle = FLOWS.with(|flows| flows.borrow_mut().insert(flow));
            (handle, advance(handle, None))
        }
        // The runtime always gives an absolute URL; refuse rather than guess.
        None => (0, failure()),
    };
    match out {
        Out::Text(text) => format!("{handle}\0{text}").into(),
        Out::Values(array) => {
            array.unshift(&handle.into());
            array.into()
        }
    }
}

/// Steps the machine without an answer: after a RESPOND whose background
/// field says work follows.
#[wasm_bindgen(js_name = gateStep)]
pub fn gate_step(handle: u32) -> JsValue {
    advance(handle, None).into_js()
}

/// Resumes after KV_GET with the value read (`undefined`: no such key).
#[wasm_bindgen(js_name = gateKv)]
pub fn gate_kv(handle: u32, value: Option<String>) -> JsValue {
    resume(handle, Answer::Io(IoAnswer::Kv(value)))
}

/// Resumes after KV_GET or KV_PUT that failed: `fault` 0 a read threw,
/// 1 a read timed out, 2 a write threw, 3 a write timed out, 4 a write was
/// refused over a limit (Workers KV's 429).
#[wasm_bindgen(js_name = gateKvFault)]
pub fn gate_kv_fault(handle: u32, fault: u8) -> JsValue {
    let fault = match fault {
        0 => StoreFault::ReadFailed,
        1 => StoreFault::ReadTimedOut,
        3 => StoreFault::WriteTimedOut,
        4 => StoreFault::WriteLimited,
        _ => StoreFault::WriteFailed,
    };
    resume(handle, Answer::Io(IoAnswer::KvFault(fault)))
}

/// Resumes after KV_PUT or SLEEP.
#[wasm_bindgen(js_name = gateDone)]
pub fn gate_done(handle: u32) -> JsValue {
    resume(handle, Answer::Io(IoAnswer::Done))
}

/// Resumes after FETCH: `failure` 0 for an answer (the other arguments),
/// 1 network, 2 timeout, 3 too large.
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
) -> JsValue {
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

/// Resumes after VERIFY with WebCrypto's verdict.
#[wasm_bindgen(js_name = gateVerdict)]
pub fn gate_verdict(handle: u32, verified: bool) -> JsValue {
    resume(handle, Answer::Verdict(verified))
}

/// After IMPORT: the imported `CryptoKey`, or `undefined` when WebCrypto
/// refused the key (it then never verifies). Runs on to the VERIFY of the
/// same check, or past its refusal.
#[wasm_bindgen(js_name = gateImported)]
pub fn gate_imported(handle: u32, key: JsValue) -> JsValue {
    let check = FLOWS.with(|flows| flows.borrow_mut().get(handle)?.import.take());
    let Some(check) = check else {
        return failure().into_js();
    };
    match webcrypto::store(&check, key) {
        Some(imported) => verify_step(imported, &check),
        None => advance(handle, Some(Answer::Verdict(false))),
    }
    .into_js()
}

/// Resumes after FORWARD when its assertion could not be signed (WebCrypto
/// could not import the binding's key, or its private and public parts
/// disagree): nothing was sent, the request is refused, and the binding is
/// named in the log once per isolate.
#[wasm_bindgen(js_name = gateUnsigned)]
pub fn gate_unsigned(handle: u32) -> JsValue {
    thread_local! {
        static REPORTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !REPORTED.with(|reported| reported.replace(true)) {
        let binding = GATE.with(|cell| {
            let gate = cell.borrow();
            let config = gate.as_ref()?.config.as_ref().ok()?;
            Some(config.assertion.as_ref()?.signing_binding)
        });
        if let Some(binding) = binding {
            let problem = format!("{binding}: WebCrypto cannot sign with this key (it does not import, or its private part does not match its public part); every request is refused");
            log(&event_log("config_invalid", "problems", Some(&problem)));
        }
    }
    resume(handle, Answer::Unsigned)
}

/// The request field a FORWARD's signed assertion goes in. Read once.
#[wasm_bindgen(js_name = gateAssertionHeader)]
pub fn gate_assertion_header() -> String {
    ASSERTION_HEADER.to_owned()
}

/// Resumes after READ_BODY: the body, or `undefined` with `too_large`
/// saying why it could not be read.
#[wasm_bindgen(js_name = gateBody)]
pub fn gate_body(handle: u32, body: Option<Vec<u8>>, too_large: bool) -> JsValue {
    let body = match body {
        Some(body) => Ok(body),
        None if too_large => Err(BodyError::TooLarge),
        None => Err(BodyError::Unreadable),
    };
    resume(handle, Answer::Body(body))
}

/// The origin's fields the entry hands to [`gate_origin`]
/// (`ORIGIN_FIELDS_DECIDED`), a newline, and those it removes from the
/// origin's answer before laying a RESPOND's headers over it, each list
/// `\0`-separated. Read once: the entry passes the machine these fields
/// alone instead of every field of every answer.
#[wasm_bindgen(js_name = gateOriginFields)]
pub fn gate_origin_fields() -> String {
    let replaced: Vec<&str> = origin_fields_replaced().collect();
    format!(
        "{}\n{}",
        ORIGIN_FIELDS_DECIDED.join("\0"),
        replaced.join("\0")
    )
}

/// Resumes after FORWARD with the origin's status and the header fields of
/// its answer that [`gate_origin_fields`] names.
#[wasm_bindgen(js_name = gateOrigin)]
pub fn gate_origin(handle: u32, status: u16, headers: &str) -> JsValue {
    resume(handle, Answer::Origin(Ok((status, pairs(headers)))))
}

/// Resumes after FORWARD that got no answer head: `fault` 1 no connection
/// within the connect timeout, 2 no head within the first-byte timeout,
/// anything else unreachable (refused, reset, not HTTP).
#[wasm_bindgen(js_name = gateOriginFailed)]
pub fn gate_origin_failed(handle: u32, fault: u8) -> JsValue {
    let fault = match fault {
        1 => OriginFault::ConnectTimeout,
        2 => OriginFault::FirstByteTimeout,
        _ => OriginFault::Unreachable,
    };
    resume(handle, Answer::Origin(Err(fault)))
}

/// Resumes after RATE_LIMIT: one character per count, in order: `1`
/// within the limit, `0` over it, anything else the binding failed.
#[wasm_bindgen(js_name = gateCounted)]
pub fn gate_counted(handle: u32, outcomes: &str) -> JsValue {
    let outcomes = outcomes
        .bytes()
        .map(|outcome| match outcome {
            b'1' => Counted::Within,
            b'0' => Counted::Over,
            _ => Counted::Failed,
        })
        .collect();
    resume(handle, Answer::Counted(outcomes))
}

/// Resumes after CLAIM_PROOF: `1` the proof's first use, `0` a replay,
/// anything else the replay store failed (or did not answer in time).
#[wasm_bindgen(js_name = gateClaimed)]
pub fn gate_claimed(handle: u32, outcome: i32) -> JsValue {
    let claimed = match outcome {
        1 => Ok(true),
        0 => Ok(false),
        _ => Err(()),
    };
    resume(handle, Answer::Claimed(claimed))
}

/// Resumes after READ_ORIGIN_BODY (`undefined`: it could not be read).
#[wasm_bindgen(js_name = gateOriginBody)]
pub fn gate_origin_body(handle: u32, body: Option<Vec<u8>>) -> JsValue {
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

fn resume(handle: u32, answer: Answer) -> JsValue {
    advance(handle, Some(answer)).into_js()
}

/// Resumes the machine with `answer`, if any, and steps it. An unknown
/// handle (a machine dropped as the oldest, or a re-created instance) fails
/// the request closed.
fn advance(handle: u32, answer: Option<Answer>) -> Out {
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
        None => failure(),
        Some(Next::Step(step, background)) => step_out(step, background),
        Some(Next::Verify(imported, check)) => verify_step(imported, &check),
        Some(Next::Import(check)) => {
            let (jwk, params) = webcrypto::import_request(&check);
            Out::values(&[IMPORT.into(), jwk, params])
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
fn verify_step(imported: webcrypto::Imported, check: &Check) -> Out {
    Out::values(&[
        VERIFY.into(),
        imported.key,
        imported.verify_params,
        Uint8Array::from(check.signature.as_slice()).into(),
        Uint8Array::from(check.message.as_slice()).into(),
    ])
}

fn step_out(step: Step, background: bool) -> Out {
    match step {
        Step::Need(Need::Io(io)) => match io {
            Io::KvGet { key } => Out::text(KV_GET, [key.as_str()]),
            Io::KvPut {
                key,
                value,
                ttl_seconds,
            } => {
                // Workers KV refuses expirations under 60 s.
                let ttl = ttl_seconds.max(60).to_string();
                Out::text(KV_PUT, [ttl.as_str(), key.as_str(), value.as_str()])
            }
            Io::Get { url, limits } => Out::values(&[
                FETCH.into(),
                url.as_str().into(),
                JsValue::UNDEFINED,
                JsValue::UNDEFINED,
                limits.timeout_ms.into(),
                (limits.max_bytes as f64).into(),
            ]),
            Io::PostForm {
                url,
                body,
                authorization,
                limits,
            } => Out::values(&[
                FETCH.into(),
                url.as_str().into(),
                body.into(),
                authorization.map_or(JsValue::UNDEFINED, Into::into),
                limits.timeout_ms.into(),
                (limits.max_bytes as f64).into(),
            ]),
            Io::Sleep { ms } => Out::text(SLEEP, [ms.to_string().as_str()]),
        },
        // Handed out by `advance` as VERIFY or IMPORT.
        Step::Need(Need::Verify(_)) => failure(),
        Step::Need(Need::ReadBody {
            max_bytes,
            declared,
        }) => {
            let declared = declared
                .map(|length| length.to_string())
                .unwrap_or_default();
            Out::text(
                READ_BODY,
                [max_bytes.to_string().as_str(), declared.as_str()],
            )
        }
        // `FORWARD, url, body, binding, alg, signing input, connect timeout
        // (ms), first-byte timeout (ms), headers...`. The
        // body is the machine's when it rewrote it (JSON, so text without
        // NUL); empty: the body goes as the entry read it for READ_BODY, the
        // very bytes the machine authorized. With a binding (empty: none),
        // the entry signs the input with its private JWK and sends
        // `input.signature` in the assertion field (`gateAssertionHeader`),
        // or, when it cannot sign, sends nothing and calls `gateUnsigned`.
        Step::Need(Need::Forward(forward)) => {
            #[cfg(feature = "panic-probe")]
            panic_probe(&forward.headers);
            let body = forward
                .body
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .unwrap_or_default();
            let (binding, alg, input) = match &forward.assertion {
                Some(signing) => (signing.binding, signing.alg.name(), signing.input.as_str()),
                None => ("", "", ""),
            };
            Out::text(
                FORWARD,
                [
                    forward.url.as_str(),
                    body.as_str(),
                    binding,
                    alg,
                    input,
                    &forward.connect_timeout_ms.to_string(),
                    &forward.first_byte_timeout_ms.to_string(),
                ],
            )
            .with_headers(&forward.headers)
        }
        Step::Need(Need::ReadOriginBody) => Out::text(READ_ORIGIN_BODY, []),
        // `RATE_LIMIT, binding, key, binding, key...`: answered with
        // `gateCounted`.
        Step::Need(Need::RateLimit(counts)) => {
            let mut out = Out::text(RATE_LIMIT, []);
            if let Out::Text(text) = &mut out {
                for count in &counts {
                    for field in [&count.binding, &count.key] {
                        text.push('\0');
                        text.push_str(field);
                    }
                }
            }
            out
        }
        // `CLAIM_PROOF, binding, key, expires_at`: answered with `gateClaimed`.
        Step::Need(Need::ClaimProof {
            binding,
            key,
            expires_at,
        }) => Out::text(
            CLAIM_PROOF,
            [binding.as_str(), key.as_str(), &expires_at.to_string()],
        ),
        Step::Respond(response) => respond(response, background),
        Step::Done(line) => Out::text(DONE, [line.as_deref().unwrap_or_default()]),
    }
}

/// `RESPOND, status, body kind, background, base, ends, log, body,
/// headers...`; the body is text, or bytes (then the step is an array) when
/// it is not UTF-8 without NUL. `base` 1: the headers are laid over the
/// origin's answer's (`Response::from_origin`), 0: they are all. `ends`: when
/// the driver ends the origin's event stream, in milliseconds since the
/// epoch (`Response::ends_at`), or empty.
fn respond(response: Response, background: bool) -> Out {
    let Response {
        status,
        headers,
        body,
        log,
        from_origin,
        ends_at,
    } = response;
    let (kind, body) = match body {
        Body::Bytes(bytes) => (BODY_BYTES, Some(bytes)),
        Body::Origin => (BODY_ORIGIN, None),
        Body::OriginFiltered => (BODY_FILTERED, None),
    };
    let status = status.to_string();
    let kind = kind.to_string();
    let background = if background { "1" } else { "0" };
    let text = match body {
        None => Ok(String::new()),
        Some(bytes) => String::from_utf8(bytes)
            .map_err(|error| error.into_bytes())
            .and_then(|text| match text.contains('\0') {
                true => Err(text.into_bytes()),
                false => Ok(text),
            }),
    };
    let base = if from_origin { "1" } else { "0" };
    let ends = ends_at
        .map(|seconds| seconds.saturating_mul(1000).to_string())
        .unwrap_or_default();
    let fields = [
        status.as_str(),
        kind.as_str(),
        background,
        base,
        ends.as_str(),
        log.as_str(),
    ];
    match text {
        Ok(body) => {
            Out::text(RESPOND, fields.into_iter().chain([body.as_str()])).with_headers(&headers)
        }
        // Rare (an unfiltered origin body that is not plain text): the same
        // fields as an array, the body as bytes.
        Err(bytes) => {
            let array = Array::new();
            array.push(&RESPOND.into());
            for field in fields {
                array.push(&field.into());
            }
            array.push(&Uint8Array::from(bytes.as_slice()).into());
            for (name, value) in &headers {
                array.push(&name.as_str().into());
                array.push(&value.as_str().into());
            }
            Out::Values(array)
        }
    }
}

/// A request whose machine is gone: a generic 500, never a forward.
fn failure() -> Out {
    let reply = Denial::Misconfigured.reply(None);
    let headers: Vec<(String, String)> = reply
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), value.clone()))
        .collect();
    respond(
        Response {
            status: reply.status,
            headers,
            body: Body::Bytes(reply.body.into_bytes()),
            log: String::from(
                r#"{"event":"request","decision":"deny","reason":"runtime_error","status":500"#,
            ),
            from_origin: false,
            ends_at: None,
        },
        false,
    )
}

fn pairs(text: &str) -> Vec<(String, String)> {
    let mut fields = text.split('\0');
    let mut pairs = Vec::new();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        pairs.push((name.to_owned(), value.to_owned()));
    }
    pairs
}
