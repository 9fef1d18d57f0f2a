// The worker's entry point (build/index.js), wrapping the module worker-build
// generates (build/gate.mjs).
//
// Fast path: the gate decides in synchronous passes (crates/core/src/flow/pass.rs through
// src/fast.rs) and this module performs what a pass asks for in plain
// JavaScript: a WebCrypto signature check, a KV read of a session's owner,
// reading the body, and finally the forward itself with the headers the
// pass built (the client's token removed). A request whose token is cached
// costs one pass; a new token one pass and its check. Whatever a pass cannot
// decide from isolate memory (a key set or introspection fetch, a key not
// imported yet, a stale key set, a tools/list answer to filter) goes to the
// full path, the Rust fetch handler, unchanged.
//
// Panics: a panic aborts the wasm instance (wasm32 has no unwinding on
// stable Rust). During a pass it throws from that synchronous call; in the
// full path the future serving the request never completes, so the Rust
// panic hook (src/lib.rs) logs {"event":"panic"} and calls the listener
// below, which fails every full-path request in flight. Either way the
// request is answered with a generic 500 (the body of `Denial::Misconfigured`,
// nothing of the panic) and a JSON log line, and nothing is forwarded: the
// panicking request dies before it reaches the origin. The instance is
// re-created (`new Gate`) before the next request, so the isolate keeps
// serving.

import Gate from './gate.mjs';

// The fast path's calls into the gate (src/fast.rs). worker-build puts
// the module's exported functions on the entry class's prototype.
const { gatePass, gateSettle, gateClientHeaders } = Gate.prototype;

/**
 * worker-build's record of whether the wasm instance died (gate.mjs sets it
 * on the global object); constructing a `Gate` re-creates the instance when
 * it did.
 */
const instanceState = globalThis.__worker_init_state;

const FAILURE_BODY = JSON.stringify({ error: 'server_error', error_description: 'Internal error' });

/** Requests in flight in this isolate: the callbacks that fail each one. */
const inFlight = new Set();

globalThis.__portcullisPanicked = () => {
  for (const fail of inFlight) fail(new Error('panic'));
};

function failure() {
  return new Response(FAILURE_BODY, {
    status: 500,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
  });
}

// A plain module-worker handler, not a WorkerEntrypoint class: workerd would
// construct an instance of the class for every request, which showed in the
// profile (bench/profile.mjs). `new Gate(...)` is kept for the full path:
// worker-build's constructor hook is what re-creates the wasm instance after
// a panic.
export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    try {
      // A panic during an earlier pass left the instance dead: revive it.
      if (instanceState?.criticalError) new Gate(ctx, env);
      return await serve(request, env, ctx, started);
    } catch (error) {
      const panicked = error instanceof WebAssembly.RuntimeError;
      if (panicked && instanceState) instanceState.criticalError = true;
      // The message is not logged: it may quote a value the gate was handling.
      const reason = panicked || error?.message === 'panic' ? 'panic' : 'runtime_error';
      console.log(
        JSON.stringify({
          event: 'request',
          decision: 'deny',
          reason,
          status: 500,
          method: request.method,
          path: new URL(request.url).pathname,
          duration_ms: Date.now() - started,
        }),
      );
      return failure();
    }
  },
};

// What a pass asks for (src/fast.rs, `Step`).
const FULL = 0;
const FORWARD = 1;
const REPLY = 2;
const VERIFY = 3;
const SESSION = 4;
const BODY = 5;
const BIND = 6;
/** More passes than any request needs; past it the full path serves it. */
const MAX_PASSES = 8;

/**
 * The fast path: the gate decides in synchronous passes (src/fast.rs)
 * and this function performs what they ask (a WebCrypto check, a KV read,
 * reading the body, the forward itself). Whatever a pass cannot decide from
 * isolate memory goes to the full path (the Rust fetch handler).
 */
async function serve(request, env, ctx, started) {
  const { method, url } = request;
  let headers = '';
  for (const [name, value] of request.headers) headers += headers === '' ? `${name}\0${value}` : `\0${name}\0${value}`;
  const answers = {
    fingerprint: undefined,
    verdict: false,
    sessionRead: false,
    sessionOwner: undefined,
    body: undefined,
    originFailed: false,
    originSession: undefined,
  };
  const pass = () =>
    gatePass(env, method, url, headers, started, answers.fingerprint, answers.verdict, answers.sessionRead, answers.sessionOwner, answers.body, answers.originFailed, answers.originSession);
  for (let passes = 0; passes < MAX_PASSES; passes += 1) {
    const next = pass();
    switch (next[0]) {
      case FORWARD:
        return forward(request, env, next, answers, pass, started);
      case REPLY:
        return reply(next[1], next[2], next[3], next[4], started);
      case VERIFY: {
        // What a good verdict leads to is done meanwhile when it is a read;
        // a forward waits for the verdict and is handed out for a good one only.
        const [, key, params, signature, data, fingerprint, then, detail] = next;
        const check = crypto.subtle.verify(params, key, signature, data).catch(() => false);
        answers.fingerprint = fingerprint;
        if (then === BODY) {
          [answers.verdict, answers.body] = await Promise.all([check, readBody(request)]);
        } else if (then === SESSION) {
          [answers.verdict, answers.sessionOwner] = await Promise.all([check, readSession(env, detail)]);
          answers.sessionRead = true;
        } else {
          answers.verdict = await check;
        }
        if (then === FORWARD) {
          const settled = gateSettle(env, detail, answers.verdict);
          if (settled[0] === FORWARD) return forward(request, env, settled, answers, pass, started);
        }
        break;
      }
      case SESSION:
        answers.sessionOwner = await readSession(env, next[1]);
        answers.sessionRead = true;
        break;
      case BODY:
        answers.body = await readBody(request);
        break;
      default:
        return full(request, env, ctx, answers.body);
    }
  }
  return full(request, env, ctx, answers.body);
}

async function readBody(request) {
  return new Uint8Array(await request.arrayBuffer());
}

/** The owner stored for a session (`undefined`: none). */
async function readSession(env, key) {
  return (await env.JWKS_CACHE.get(key)) ?? undefined;
}

/**
 * The Rust fetch handler, given the body if a pass already read it. Its
 * future lives in the wasm instance, so a panic there would leave it pending
 * for ever: it races the panic listener. (A panic during a pass throws from
 * that synchronous call instead.)
 */
async function full(request, env, ctx, body) {
  const whole = body === undefined ? request : new Request(request.url, { method: request.method, headers: request.headers, body });
  let fail;
  const crashed = new Promise((_, reject) => {
    fail = reject;
  });
  inFlight.add(fail);
  try {
    return await Promise.race([new Gate(ctx, env).fetch(whole), crashed]);
  } finally {
    inFlight.delete(fail);
  }
}

/**
 * `name\0value\0...` as `[name, value]` pairs. A sequence of pairs, not a
 * `Headers` filled by `append`: workerd takes the former much faster
 * (about a tenth of a forwarded request's cost, bench/ab.mjs).
 */
function headersOf(text) {
  const pairs = [];
  if (text === '') return pairs;
  const fields = text.split('\0');
  for (let i = 0; i + 1 < fields.length; i += 2) pairs.push([fields[i], fields[i + 1]]);
  return pairs;
}

function logRequest(line, status, started) {
  console.log(`${line},"status":${status},"duration_ms":${Date.now() - started}}`);
}

function reply(status, body, line, headers, started) {
  logRequest(line, status, started);
  return new Response(body === '' ? null : body, { status, headers: headersOf(headers) });
}

/**
 * Sends what the pass described to the origin and streams its answer back;
 * a session the origin issues is bound to the token's owner before the
 * client sees it.
 */
async function forward(request, env, plan, answers, pass, started) {
  const [, url, cors, line, headers] = plan;
  const { method } = request;
  const body = method === 'POST' ? answers.body : method === 'GET' || method === 'HEAD' ? undefined : request.body;
  let response;
  try {
    response = await fetch(url, { method, headers: headersOf(headers), body, redirect: 'manual' });
  } catch {
    answers.originFailed = true;
    const refusal = pass();
    if (refusal[0] !== REPLY) throw new Error('origin failed');
    return reply(refusal[1], refusal[2], refusal[3], refusal[4], started);
  }
  const session = response.headers.get('mcp-session-id');
  if (session !== null) {
    answers.originSession = session;
    const bind = pass();
    if (bind[0] !== BIND) {
      // The decision changed (the token expired meanwhile, say): refuse
      // rather than hand out a session nobody owns.
      await response.body?.cancel();
      if (bind[0] === REPLY) return reply(bind[1], bind[2], bind[3], bind[4], started);
      throw new Error('session binding');
    }
    const [, key, owner, ttl] = bind;
    if (key !== '' && (await env.JWKS_CACHE.get(key)) === null) {
      await env.JWKS_CACHE.put(key, owner, { expirationTtl: ttl });
    }
  }
  let origin = '';
  for (const [name, value] of response.headers) origin += origin === '' ? `${name}\0${value}` : `\0${name}\0${value}`;
  const client = new Response(response.body, { status: response.status, headers: headersOf(gateClientHeaders(origin, cors)) });
  logRequest(line, response.status, started);
  return client;
}
