//! The Cloudflare Workers glue: the fetch handler and the runtime-backed
//! implementations of the core's ports (outbound HTTP, Workers KV, clock,
//! log). Deliberately thin: every decision is made by [`portcullis_core::flow::gate`].
//!
//! Compiled only for `wasm32`, so the core can never come to depend on it.

#![cfg(target_arch = "wasm32")]

mod fast;
mod io;
#[cfg(feature = "verify-probe")]
mod verify_probe;
mod webcrypto;

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use wasm_bindgen::JsValue;
use worker::{console_log, event, ByteStream, Context, Date, Env, Headers, Response};

use futures_util::StreamExt;
use portcullis_core::authorize::sessions::{
    is_valid_session_id, may_use_session, session_key, SessionOwner,
};
use portcullis_core::authorize::tool_filter::ToolListFilter;
use portcullis_core::config::{binding, Bindings, Config, ConfigError, Route};
use portcullis_core::flow::gate::{
    authorize_rpc, decide, Decision, GateRequest, Outcome, RpcAudit, Verdict,
};
use portcullis_core::forward::origin::{client_response_headers, OriginRequest};
use portcullis_core::forward::reply::{cors_headers, Denial, Reply};
use portcullis_core::parse::jsonrpc::RpcError;
use portcullis_core::verify::introspect_cache::{IntrospectionCache, IntrospectionMemory};
use portcullis_core::verify::keys::KvStore;
use portcullis_core::verify::keys::{JwksCache, KeyMemory, KeySourceError};
use portcullis_core::verify::token_cache::VerifiedTokens;
use worker::wasm_bindgen::JsCast;

/// What an isolate keeps between requests.
struct Isolate {
    config: Result<Config, ConfigError>,
    key_memory: Rc<KeyMemory>,
    introspection_memory: IntrospectionMemory,
    verified_tokens: VerifiedTokens,
}

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
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

/// The isolate's state, parsing the configuration on first use. A bad
/// configuration is logged once, naming every problem, and then refuses
/// every request.
fn isolate(env: &Env) -> Rc<Isolate> {
    ISOLATE.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                install_panic_hook();
                let config = Config::parse(&EnvBindings(env));
                if let Err(error) = &config {
                    log_line(&ConfigLog {
                        event: "config_invalid",
                        problems: &error.to_string(),
                    });
                }
                Rc::new(Isolate {
                    config,
                    key_memory: Rc::new(KeyMemory::default()),
                    introspection_memory: IntrospectionMemory::default(),
                    verified_tokens: VerifiedTokens::default(),
                })
            })
            .clone()
    })
}

/// The function the JS entry point (src/entry.mjs) sets on the global
/// object to learn of a panic.
const PANIC_LISTENER: &str = "__portcullisPanicked";

/// Logs a panic as one JSON line, tells the JS entry point, then hands the
/// panic to the hook worker's start function installed (which marks the
/// instance for re-creation before the next request). The panic's message is
/// left out of our line: it may quote whatever value was being handled.
/// A panic aborts the wasm instance (`panic = "abort"` on wasm32), so the
/// request it happened in can never be answered from Rust: the entry point
/// answers it with a generic 500, and it is never forwarded.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|at| format!("{}:{}", at.file(), at.line()));
        log_line(&PanicLog {
            event: "panic",
            location: location.as_deref(),
        });
        let global = worker::js_sys::global();
        if let Ok(listener) = worker::js_sys::Reflect::get(&global, &PANIC_LISTENER.into()) {
            if let Some(listener) = listener.dyn_ref::<worker::js_sys::Function>() {
                let _ = listener.call0(&global);
            }
        }
        previous(info);
    }));
}

#[derive(Serialize)]
struct PanicLog<'a> {
    event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<&'a str>,
}

/// A background key set refresh (stale-while-revalidate), so operators see
/// an authorization server that stopped answering while stale keys still serve.
#[derive(Serialize)]
struct RefreshLog<'a> {
    event: &'static str,
    iss: &'a str,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

#[derive(Serialize)]
struct ConfigLog<'a> {
    event: &'static str,
    problems: &'a str,
}

/// One structured line per request. Never the token.
#[derive(Serialize)]
struct RequestLog<'a> {
    event: &'static str,
    decision: Verdict,
    reason: &'a str,
    method: &'a str,
    path: &'a str,
    /// The path of the route (protected resource) the request was for.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<String>,
    /// JSON-RPC methods, tools and the scopes they required (POST bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    rpc: Option<&'a RpcAudit>,
    /// Absent only from the lines the fast path hands to the JS entry, which
    /// adds both once the answer is known (src/entry.mjs).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<f64>,
}

impl<'a> RequestLog<'a> {
    fn of(
        config: Option<&'a Config>,
        decision: Option<&'a Decision>,
        reason: &'a str,
        method: &'a str,
        path: &'a str,
    ) -> Self {
        let token = decision.and_then(|d| d.token.as_ref());
        RequestLog {
            event: "request",
            decision: decision.map_or(Verdict::Deny, Decision::verdict),
            reason,
            method,
            path,
            route: decision
                .and_then(|d| d.route)
                .zip(config)
                .and_then(|(index, config)| config.routes.get(index))
                .map(|route| route.resource.path.as_str()),
            iss: token.map(|t| t.issuer.as_str()),
            sub: token.and_then(|t| t.subject.as_deref()),
            client_id: token.and_then(|t| t.client_id.as_deref()),
            scopes: token.map(|t| t.scopes.join(" ")),
            rpc: decision.and_then(|d| d.audit.as_ref()),
            status: None,
            duration_ms: None,
        }
    }
}

/// The request's log line for the fast path, without its closing brace:
/// the JS entry appends `status` and `duration_ms` and closes it.
fn request_log(config: &Config, decision: &Decision, method: &str, path: &str) -> String {
    let line = RequestLog::of(Some(config), Some(decision), decision.reason, method, path);
    let mut text = serde_json::to_string(&line).unwrap_or_else(|_| String::from("{}"));
    text.pop();
    text
}

fn log_line<T: Serialize>(line: &T) {
    if let Ok(text) = serde_json::to_string(line) {
        console_log!("{text}");
    }
}

/// The fetch handler. It takes the runtime's `Request` as is: worker's own
/// `Request` parses `request.cf` whenever one is made, a cost per request the
/// gate has no use for.
#[event(fetch)]
async fn fetch(request: web_sys::Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started = Date::now().as_millis();
    let method = request.method();
    let url = url::Url::parse(&request.url());
    let path = url
        .as_ref()
        .map(|url| url.path().to_owned())
        .unwrap_or_default();
    #[cfg(feature = "verify-probe")]
    if path == verify_probe::PATH {
        return verify_probe::answer(request.into()).await;
    }
    let isolate = isolate(&env);

    let (decision, response) = match &isolate.config {
        Ok(config) => match &url {
            Ok(url) => {
                let line = (method.as_str(), url);
                handle(config, &isolate, request, line, &env, &ctx, started).await
            }
            Err(error) => (None, Err((*error).into())),
        },
        Err(_) => (None, reply_response(&Denial::Misconfigured.reply(None))),
    };
    let (response, status, reason) = match response {
        Ok((response, status)) => (
            response,
            status,
            decision.as_ref().map_or("misconfigured", |d| d.reason),
        ),
        // Anything the runtime throws becomes a generic 500; the detail stays in the log.
        Err(error) => {
            log_line(&ConfigLog {
                event: "runtime_error",
                problems: &error.to_string(),
            });
            let fallback = reply_response(&Denial::Misconfigured.reply(None)).map(|(r, _)| r);
            (fallback?, 500, "runtime_error")
        }
    };
    let mut response = response;
    if let Some(origin) = decision.as_ref().and_then(|d| d.cors_origin.as_deref()) {
        let headers = response.headers_mut();
        for (name, value) in cors_headers(origin) {
            let _ = if name == "vary" {
                headers.append(name, &value)
            } else {
                headers.set(name, &value)
            };
        }
    }
    log_line(&RequestLog {
        status: Some(status),
        duration_ms: Some(Date::now().as_millis().saturating_sub(started) as f64),
        ..RequestLog::of(
            isolate.config.as_ref().ok(),
            decision.as_ref(),
            reason,
            &method,
            &path,
        )
    });
    Ok(response)
}

type Answer = worker::Result<(Response, u16)>;

async fn handle(
    config: &Config,
    isolate: &Isolate,
    request: web_sys::Request,
    (method, url): (&str, &url::Url),
    env: &Env,
    ctx: &Context,
    started: u64,
) -> (Option<Decision>, Answer) {
    let headers: Vec<(String, String)> = Headers(request.headers()).entries().collect();
    let gate_request = GateRequest {
        method,
        path: url.path(),
        query: url.query(),
        headers: &headers,
    };
    let store = match env.kv(binding::JWKS_CACHE) {
        Ok(kv) => io::EdgeKv(kv),
        Err(error) => return (None, Err(error)),
    };
    let cache = Rc::new(JwksCache::new(
        Rc::clone(&isolate.key_memory),
        io::EdgeHttp,
        store,
        config.key_cache,
    ));
    let now = i64::try_from(started / 1000).unwrap_or(i64::MAX);
    let introspection_store = match env.kv(binding::JWKS_CACHE) {
        Ok(kv) => io::EdgeKv(kv),
        Err(error) => return (None, Err(error)),
    };
    let introspector = IntrospectionCache {
        memory: &isolate.introspection_memory,
        http: io::EdgeHttp,
        store: introspection_store,
        config: &config.introspection,
        limits: config.key_cache.limits,
    };
    let decision = decide(
        config,
        &gate_request,
        cache.as_ref(),
        &introspector,
        &webcrypto::WebCrypto,
        &isolate.verified_tokens,
        now,
    )
    .await;
    // Stale key sets were served; refresh them after the response is sent.
    for issuer in cache.take_pending_refreshes() {
        let cache = Rc::clone(&cache);
        ctx.wait_until(async move {
            let result = cache.refresh(&issuer, now).await;
            log_line(&RefreshLog {
                event: "jwks_refresh",
                iss: &issuer.issuer,
                outcome: if result.is_ok() {
                    "refreshed"
                } else {
                    "failed"
                },
                reason: result.err().map(KeySourceError::reason),
            });
        });
    }
    let mut decision = decision;
    let route = decision.route.and_then(|index| config.routes.get(index));
    let answer = match (decision.outcome.clone(), route) {
        (Outcome::Reply(reply), _) => reply_response(&reply),
        // A forward always has a route; refuse rather than guess.
        (Outcome::Forward(_), None) => reply_response(&Denial::Misconfigured.reply(None)),
        (Outcome::Forward(forward), Some(route)) => {
            #[cfg(feature = "panic-probe")]
            panic_probe(&headers);
            let sessions = match env.kv(binding::JWKS_CACHE) {
                Ok(kv) => io::EdgeKv(kv),
                Err(error) => return (Some(decision), Err(error)),
            };
            match prepare_forward(
                config,
                route,
                &gate_request_owned(method, url, &headers),
                &request,
                &sessions,
                &mut decision,
            )
            .await
            {
                Err(denial) => {
                    decision.refuse(&denial, route);
                    reply_response(&denial.reply(Some(route)))
                }
                Ok(prepared) => {
                    match forward_to_origin(
                        request, &forward, prepared, config, route, &sessions, &decision,
                    )
                    .await
                    {
                        Ok(Ok(answer)) => Ok(answer),
                        Ok(Err(denial)) => {
                            decision.refuse(&denial, route);
                            reply_response(&denial.reply(Some(route)))
                        }
                        Err(error) => Err(error),
                    }
                }
            }
        }
    };
    (Some(decision), answer)
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

/// Rebuilds the gate's view of the request (the original borrowed headers
/// went into `decide`).
fn gate_request_owned<'a>(
    method: &'a str,
    url: &'a url::Url,
    headers: &'a [(String, String)],
) -> GateRequest<'a> {
    GateRequest {
        method,
        path: url.path(),
        query: url.query(),
        headers,
    }
}

/// What an authorized request carries to the origin besides its headers.
struct Prepared {
    /// The JSON-RPC body, read and authorized (POST only).
    body: Option<Vec<u8>>,
    /// Filter for `tools/list` responses.
    tool_filter: Option<ToolListFilter>,
}

/// The checks that need I/O after the token was verified: the session's
/// owner (KV) and the JSON-RPC body of a POST.
async fn prepare_forward(
    config: &Config,
    route: &Route,
    gate_request: &GateRequest<'_>,
    request: &web_sys::Request,
    sessions: &io::EdgeKv,
    decision: &mut Decision,
) -> Result<Prepared, Denial> {
    let Some(token) = decision.token.clone() else {
        return Err(Denial::Misconfigured);
    };
    if let Some(session_id) = header(gate_request, "mcp-session-id") {
        if !is_valid_session_id(&session_id) {
            return Err(Denial::ForeignSession);
        }
        let stored = sessions
            .get(&session_key(&route.resource.uri, &session_id))
            .await;
        if !may_use_session(stored.as_deref(), &token) {
            return Err(Denial::ForeignSession);
        }
    }
    if gate_request.method != "POST" {
        return Ok(Prepared {
            body: None,
            tool_filter: None,
        });
    }
    let declared =
        header(gate_request, "content-length").and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > config.max_body_bytes as u64) {
        return Err(Denial::PayloadTooLarge);
    }
    let body = read_capped(request, config.max_body_bytes).await?;
    match authorize_rpc(route, gate_request, &token, &body) {
        Ok(plan) => {
            decision.audit = Some(plan.audit);
            Ok(Prepared {
                body: Some(body),
                tool_filter: plan.tool_filter,
            })
        }
        Err((denial, audit)) => {
            decision.audit = audit;
            Err(denial)
        }
    }
}

fn header(request: &GateRequest<'_>, name: &str) -> Option<String> {
    request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Reads the request body, refusing it once it exceeds `max_bytes` (whatever
/// `Content-Length` claimed).
async fn read_capped(request: &web_sys::Request, max_bytes: usize) -> Result<Vec<u8>, Denial> {
    let mut body = Vec::new();
    let Some(stream) = request.body() else {
        return Ok(body);
    };
    let mut stream = ByteStream::from(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Denial::MalformedRpc(RpcError::NotJson))?;
        if body.len() + chunk.len() > max_bytes {
            return Err(Denial::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A `Headers` holding `pairs`, in order.
fn headers_of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> worker::Result<Headers> {
    let headers = Headers::new();
    for (name, value) in pairs {
        headers.append(name, value)?;
    }
    Ok(headers)
}

fn reply_response(reply: &Reply) -> Answer {
    let headers = headers_of(
        reply
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str())),
    )?;
    let builder = Response::builder()
        .with_status(reply.status)
        .with_headers(headers);
    let response = if reply.body.is_empty() {
        builder.empty()
    } else {
        builder.fixed(reply.body.clone().into_bytes())
    };
    Ok((response, reply.status))
}

/// Sends the described request to the origin and streams its answer back
/// unbuffered, so Server-Sent Events arrive event by event; `tools/list`
/// answers are filtered on the way (JSON whole, SSE event by event). Binds a
/// session the origin issues to the token's owner before the client can
/// use it.
async fn forward_to_origin(
    request: web_sys::Request,
    forward: &OriginRequest,
    prepared: Prepared,
    config: &Config,
    route: &Route,
    sessions: &io::EdgeKv,
    decision: &Decision,
) -> worker::Result<Result<(Response, u16), Denial>> {
    let headers = headers_of(
        forward
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )?;
    let method = request.method();
    let body: Option<JsValue> = match prepared.body {
        Some(body) => Some(worker::js_sys::Uint8Array::from(body.as_slice()).into()),
        None if !matches!(method.as_str(), "GET" | "HEAD") => request.body().map(Into::into),
        None => None,
    };
    // The runtime's response, not worker's wrapper, which would parse its
    // `cf` (see io::send).
    let Ok(origin_response) = io::send(&forward.url, &method, &headers, body.as_ref()).await else {
        return Ok(Err(Denial::BadGateway));
    };
    let status = origin_response.status();
    let origin_headers: Vec<(String, String)> =
        Headers(origin_response.headers()).entries().collect();
    if let (Some(token), Some(session_id)) = (
        decision.token.as_ref(),
        origin_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("mcp-session-id"))
            .map(|(_, v)| v.as_str()),
    ) {
        if is_valid_session_id(session_id) {
            let key = session_key(&route.resource.uri, session_id);
            // First owner wins: a session is never re-bound to another token.
            if sessions.get(&key).await.is_none() {
                let owner = SessionOwner::of(token).to_json();
                sessions.put(&key, &owner, config.session_ttl_seconds).await;
            }
        }
    }
    let client_headers = client_response_headers(&origin_headers);
    let client_headers = headers_of(
        client_headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )?;
    let content_type = origin_headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let builder = Response::builder()
        .with_status(status)
        .with_headers(client_headers);
    let filter = prepared
        .tool_filter
        .filter(|_| (200..300).contains(&status));
    let response = match filter {
        None => match origin_response.body() {
            Some(stream) => builder.stream(stream),
            None => builder.empty(),
        },
        Some(filter) if content_type.starts_with("application/json") => {
            let Ok(body) = io::read_all(&origin_response).await else {
                return Ok(Err(Denial::BadGateway));
            };
            match filter.filter_json(&body) {
                Ok(Some(filtered)) => builder.fixed(filtered),
                Ok(None) => builder.fixed(body),
                Err(_) => return Ok(Err(Denial::BadGateway)),
            }
        }
        Some(filter) if content_type.starts_with("text/event-stream") => {
            let Some(stream) = origin_response.body() else {
                return Ok(Err(Denial::BadGateway));
            };
            let stream = ByteStream::from(stream);
            let sse = Rc::new(RefCell::new(filter.sse()));
            let at_end = Rc::clone(&sse);
            let filtered = stream
                .map(move |chunk| chunk.map(|chunk| sse.borrow_mut().push(&chunk)))
                .chain(futures_util::stream::once(async move {
                    Ok(at_end.borrow_mut().finish())
                }));
            builder.from_stream(filtered)?
        }
        // A tools/list answer in a form the gate cannot filter is not passed on.
        Some(_) => return Ok(Err(Denial::BadGateway)),
    };
    Ok(Ok((response, status)))
}
