//! The Cloudflare Workers glue: the fetch handler and the runtime-backed
//! implementations of the core's ports (outbound HTTP, Workers KV, clock,
//! log). Deliberately thin: every decision is made by [`crate::gate`].
//!
//! Compiled only for `wasm32`, so the core can never come to depend on it.

mod io;

use std::cell::RefCell;
use std::rc::Rc;

use serde::Serialize;
use worker::{
    console_log, event, Context, Date, Env, Fetch, Headers, Method, Request, RequestInit,
    RequestRedirect, Response,
};

use crate::config::{binding, Bindings, Config, ConfigError};
use crate::forward::{client_response_headers, OriginRequest};
use crate::gate::{decide, Decision, GateRequest, Outcome, Verdict};
use crate::keys::{JwksCache, KeyMemory, KeySourceError};
use crate::reply::{Denial, Reply};

/// What an isolate keeps between requests.
struct Isolate {
    config: Result<Config, ConfigError>,
    key_memory: Rc<KeyMemory>,
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
                console_error_panic_hook::set_once();
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
                })
            })
            .clone()
    })
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
    status: u16,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<String>,
    duration_ms: f64,
}

fn log_line<T: Serialize>(line: &T) {
    if let Ok(text) = serde_json::to_string(line) {
        console_log!("{text}");
    }
}

#[event(fetch)]
async fn fetch(request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let started = Date::now().as_millis();
    let method = request.method().to_string();
    let url = request.url().ok();
    let path = url
        .as_ref()
        .map(|url| url.path().to_owned())
        .unwrap_or_default();
    let isolate = isolate(&env);

    let (decision, response) = match &isolate.config {
        Ok(config) => handle(config, &isolate.key_memory, request, &env, &ctx, started).await,
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
    let token = decision.as_ref().and_then(|d| d.token.as_ref());
    log_line(&RequestLog {
        event: "request",
        decision: decision.as_ref().map_or(Verdict::Deny, Decision::verdict),
        reason,
        status,
        method: &method,
        path: &path,
        iss: token.map(|t| t.issuer.as_str()),
        sub: token.and_then(|t| t.subject.as_deref()),
        client_id: token.and_then(|t| t.client_id.as_deref()),
        scopes: token.map(|t| t.scopes.join(" ")),
        duration_ms: Date::now().as_millis().saturating_sub(started) as f64,
    });
    Ok(response)
}

type Answer = worker::Result<(Response, u16)>;

async fn handle(
    config: &Config,
    key_memory: &Rc<KeyMemory>,
    request: Request,
    env: &Env,
    ctx: &Context,
    started: u64,
) -> (Option<Decision>, Answer) {
    let url = match request.url() {
        Ok(url) => url,
        Err(error) => return (None, Err(error)),
    };
    let headers: Vec<(String, String)> = request.headers().entries().collect();
    let method = request.method().to_string();
    let gate_request = GateRequest {
        method: &method,
        path: url.path(),
        query: url.query(),
        headers: &headers,
    };
    let store = match env.kv(binding::JWKS_CACHE) {
        Ok(kv) => io::EdgeKv(kv),
        Err(error) => return (None, Err(error)),
    };
    let cache = Rc::new(JwksCache::new(
        Rc::clone(key_memory),
        io::EdgeHttp,
        store,
        config.key_cache,
    ));
    let now = i64::try_from(started / 1000).unwrap_or(i64::MAX);
    let decision = decide(config, &gate_request, cache.as_ref(), now).await;
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
    let answer = match &decision.outcome {
        Outcome::Reply(reply) => reply_response(reply),
        Outcome::Forward(forward) => forward_to_origin(request, forward).await,
    };
    (Some(decision), answer)
}

fn reply_response(reply: &Reply) -> Answer {
    let headers = Headers::new();
    for (name, value) in &reply.headers {
        headers.append(name, value)?;
    }
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
/// unbuffered, so Server-Sent Events arrive event by event.
async fn forward_to_origin(request: Request, forward: &OriginRequest) -> Answer {
    let headers = Headers::new();
    for (name, value) in &forward.headers {
        headers.append(name, value)?;
    }
    let method = request.method();
    let mut init = RequestInit::new();
    init.with_method(method.clone())
        .with_headers(headers)
        .with_redirect(RequestRedirect::Manual);
    if !matches!(method, Method::Get | Method::Head) {
        init.with_body(request.inner().body().map(Into::into));
    }
    let outbound = Request::new_with_init(&forward.url, &init)?;
    let origin_response = match Fetch::Request(outbound).send().await {
        Ok(response) => response,
        Err(_) => {
            let reply = Reply {
                status: 502,
                headers: vec![("content-type", "application/json".to_owned())],
                body: r#"{"error":"bad_gateway","error_description":"The upstream server is unavailable"}"#.to_owned(),
            };
            return reply_response(&reply);
        }
    };
    let status = origin_response.status_code();
    let origin_headers: Vec<(String, String)> = origin_response.headers().entries().collect();
    let client_headers = Headers::new();
    for (name, value) in client_response_headers(&origin_headers) {
        client_headers.append(&name, &value)?;
    }
    let (_, body) = origin_response.into_parts();
    Ok((
        Response::builder()
            .with_status(status)
            .with_headers(client_headers)
            .body(body),
        status,
    ))
}
