// The worker's entry point (build/index.js), wrapping the module worker-build
// generates (build/gate.mjs): the one driver of the gate's request machine
// on the edge.
//
// A request's decision is a sans-IO state machine in Rust
// (crates/core/src/flow/machine.rs, through src/lib.rs). Each call into it
// is synchronous: it runs the machine to the next thing it needs and returns
// that need, as one `\0`-separated text (most steps) or as an array with the
// same fields (steps carrying a CryptoKey or bytes). This module performs it in plain JavaScript
// (a KV read or write, a claim in the replay store, a fetch with a deadline
// and a size cap, a timer, a WebCrypto import, verify or sign, reading the
// body, the forward, reading the origin's body) and resumes the machine
// with the outcome, until the machine hands over the answer. Nothing here
// decides anything: every answer, every refusal and every log line is the
// machine's.
//
// DPoP proofs are claimed once in the replay store, a Durable Object
// (src/replay.mjs, DpopReplay): this module exports its class, so the
// deployment that runs the gate also hosts the store.
//
// Panics: a panic aborts the wasm instance (wasm32 has no unwinding on
// stable Rust) and, every call being synchronous, throws from the very call
// this module made. The request is answered with a generic 500 (the body of
// the gate's own server error, fetched once at start) and a JSON log line,
// and nothing is forwarded: the machine had not handed out a forward. The
// instance is re-created (`new Gate`) before the next request; requests in
// flight in the old instance fail closed at their next call.

import Gate from './gate.mjs';

// Wrangler and Miniflare find a Durable Object class among the exports of the main module.
export { DpopReplay } from './replay.mjs';

const {
  gateStart,
  gateStep,
  gateKv,
  gateKvFault,
  gateDone,
  gateFetched,
  gateVerdict,
  gateImported,
  gateUnsigned,
  gateAssertionHeader,
  gateBody,
  gateOrigin,
  gateOriginFailed,
  gateOriginBody,
  gateCounted,
  gateClaimed,
  gateFilter,
  gateEnd,
  gateFailureBody,
  gateOriginFields,
  gateProbePath,
  gateProbeCases,
  gateProbeCaches,
} = Gate.prototype;

/**
 * worker-build's record of whether the wasm instance died (gate.mjs sets it
 * on the global object); constructing a `Gate` re-creates the instance when
 * it did.
 */
const instanceState = globalThis.__worker_init_state;

const FAILURE_BODY = gateFailureBody();
/**
 * The origin's header fields the machine decides on (handed to it), and
 * those removed from the origin's answer before a RESPOND's headers are
 * laid over it: the machine reads and replaces no other.
 */
const [ORIGIN_DECIDED, ORIGIN_REPLACED] = gateOriginFields()
  .split('\n')
  .map((names) => names.split('\0'));
/** The request field the origin's signed assertion goes in. */
const ASSERTION_HEADER = gateAssertionHeader();
/** Test builds only: the path of the signature probe (src/verify_probe.rs). */
const PROBE_PATH = gateProbePath?.();

// What the machine needs (src/lib.rs).
const KV_GET = 0;
const KV_PUT = 1;
const FETCH = 2;
const SLEEP = 3;
const VERIFY = 4;
const IMPORT = 5;
const READ_BODY = 6;
const FORWARD = 7;
const READ_ORIGIN_BODY = 8;
const RESPOND = 9;
const DONE = 10;
const RATE_LIMIT = 11;
const CLAIM_PROOF = 12;
/** How long a rate limit binding may take before its count is taken as failed. */
const RATE_LIMIT_TIMEOUT_MS = 1000;
/** How long the replay store may take to answer a claim before it is taken as failed. */
const CLAIM_TIMEOUT_MS = 1000;
/**
 * How long a Workers KV read or write may take before it is taken as
 * failed (the machine decides what that means: a miss for a cache, a 503
 * for a session's owner).
 */
const KV_TIMEOUT_MS = 2000;
// How a RESPOND's body is given.
const BODY_ORIGIN = 1;
const BODY_FILTERED = 2;

export default {
  async fetch(request, env, ctx) {
    const started = Date.now();
    let handle;
    try {
      // A panic during an earlier request left the instance dead: revive it.
      if (instanceState?.criticalError) new Gate(ctx, env);
      if (PROBE_PATH !== undefined && new URL(request.url).pathname.startsWith(PROBE_PATH)) return await probe(request);
      const next = fields(gateStart(env, request.method, request.url, joined(request.headers), started));
      handle = +next.shift();
      return await drive(request, env, ctx, started, handle, next);
    } catch (error) {
      const panicked = error instanceof WebAssembly.RuntimeError;
      if (panicked && instanceState) instanceState.criticalError = true;
      if (handle !== undefined && !panicked) gateEnd(handle);
      // The message is not logged: it may quote a value the gate was handling.
      console.log(
        JSON.stringify({
          event: 'request',
          decision: 'deny',
          reason: panicked ? 'panic' : 'runtime_error',
          status: 500,
          method: request.method,
          path: new URL(request.url).pathname,
          duration_ms: Date.now() - started,
        }),
      );
      return new Response(FAILURE_BODY, {
        status: 500,
        headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
      });
    }
  },
};

/** Fails a request whose instance was re-created or died while it waited. */
function alive(instance) {
  if (instanceState && (instanceState.criticalError || instanceState.instanceId !== instance)) {
    throw new Error('instance lost');
  }
}

/** A step's fields: the text split at NUL, or the array as it is. */
function fields(step) {
  return typeof step === 'string' ? step.split('\0') : step;
}

/**
 * Header pairs from `fields`, starting at `at`. A sequence of pairs, not a
 * `Headers` filled by `append`: workerd takes the former much faster.
 */
function pairsFrom(fields, at) {
  const pairs = [];
  for (let i = at; i + 1 < fields.length; i += 2) pairs.push([fields[i], fields[i + 1]]);
  return pairs;
}

/** Runs the machine until it answers the client; background work goes on after. */
async function drive(request, env, ctx, started, handle, next) {
  const instance = instanceState?.instanceId;
  let origin;
  /** The body as read for the machine: the bytes it authorized are the bytes forwarded. */
  let read;
  for (;;) {
    switch (+next[0]) {
      case RESPOND: {
        // RESPOND, status, body kind, background, base, ends, log, body, headers...
        const kind = +next[2];
        const body = next[7];
        let stream = null;
        if (kind === BODY_ORIGIN || kind === BODY_FILTERED) {
          const stages = [];
          if (kind === BODY_FILTERED) stages.push(filter(handle));
          if (next[5] !== '') stages.push(ending(+next[5]));
          stream = watched(origin.body, stages, request, started);
        } else if (origin?.body && !origin.bodyUsed) {
          // The gate answers instead of the origin (a session it could not
          // bind, an answer it could not filter): the origin's body is not read.
          origin.body.cancel().catch(() => {});
        }
        const response = new Response(stream ?? (body === '' ? null : body), {
          status: +next[1],
          headers: next[4] === '1' ? laidOver(origin.headers, next, 8) : pairsFrom(next, 8),
        });
        console.log(`${next[6]},"duration_ms":${Date.now() - started}}`);
        if (next[3] == 1) ctx.waitUntil(runBackground(env, handle, instance));
        return response;
      }
      case FORWARD: {
        // FORWARD, url, body (the machine's rewrite of the body, or empty),
        // binding, alg, signing input (the assertion to sign; empty: none),
        // connect timeout, first-byte timeout (ms), headers...
        const { method } = request;
        const body = next[2] !== '' ? encoder.encode(next[2]) : (read ?? (method === 'GET' || method === 'HEAD' ? undefined : request.body));
        const headers = pairsFrom(next, 8);
        if (next[3] !== '') {
          let key = signingKeys.get(next[3]) ?? signingKey(env, next[3], next[4]);
          if (key instanceof Promise) key = await key;
          const signature = key === null ? undefined : await sign(key, next[4], next[5]);
          alive(instance);
          if (signature === undefined) {
            next = fields(gateUnsigned(handle));
            break;
          }
          headers.push([ASSERTION_HEADER, `${next[5]}.${signature}`]);
        }
        const sent = await sendToOrigin(next[1], method, headers, body, +next[6], +next[7]);
        alive(instance);
        if (typeof sent === 'number') {
          next = fields(gateOriginFailed(handle, sent));
        } else {
          origin = sent;
          next = fields(gateOrigin(handle, origin.status, decided(origin.headers)));
        }
        break;
      }
      case READ_BODY: {
        // READ_BODY, cap, declared length (empty: none). A declared length
        // within the cap is read whole at once; anything else chunk by
        // chunk, refused once past the cap.
        const body = next[2] === '' ? await readCapped(request.body, +next[1]) : await readWhole(request, +next[1]);
        alive(instance);
        if (body === TOO_LARGE || body === UNREADABLE) {
          next = fields(gateBody(handle, undefined, body === TOO_LARGE));
        } else {
          read = body;
          next = fields(gateBody(handle, body, false));
        }
        break;
      }
      case READ_ORIGIN_BODY: {
        let body;
        try {
          body = new Uint8Array(await origin.arrayBuffer());
        } catch {
          body = undefined;
        }
        alive(instance);
        next = fields(gateOriginBody(handle, body));
        break;
      }
      case RATE_LIMIT: {
        // RATE_LIMIT, binding, key, binding, key... : all counted at once.
        const counts = [];
        for (let i = 1; i + 1 < next.length; i += 2) counts.push(count(env[next[i]], next[i + 1]));
        const outcomes = await Promise.all(counts);
        alive(instance);
        next = fields(gateCounted(handle, outcomes.join('')));
        break;
      }
      case CLAIM_PROOF: {
        // CLAIM_PROOF, binding, key, expires at (unix seconds).
        const outcome = await claim(env[next[1]], next[2], +next[3]);
        alive(instance);
        next = fields(gateClaimed(handle, outcome));
        break;
      }
      case DONE:
        throw new Error('finished without an answer');
      default:
        next = fields(await perform(env, handle, next));
        alive(instance);
    }
  }
}

/**
 * One count of a Rate Limiting binding: '1' within the limit, '0' over it,
 * '2' when the binding threw, answered something else, or took longer than
 * RATE_LIMIT_TIMEOUT_MS (the machine decides what a failure means).
 */
function count(binding, key) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, RATE_LIMIT_TIMEOUT_MS, '2');
  });
  const counted = (async () => {
    const outcome = await binding.limit({ key });
    return outcome?.success === true ? '1' : outcome?.success === false ? '0' : '2';
  })().catch(() => '2');
  return Promise.race([counted, late]).finally(() => clearTimeout(timer));
}

/**
 * Claims a DPoP proof's key in the replay store `namespace` (a Durable
 * Object namespace of class DpopReplay): 1 its first use, 0 a replay, -1
 * when the store threw, answered something else, or took longer than
 * CLAIM_TIMEOUT_MS (the machine decides what a failure means). The object
 * is named by the key's first two hex digits: 256 objects share the load,
 * and a key always reaches the same one, so it is claimed once worldwide.
 */
function claim(namespace, key, expiresAt) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, CLAIM_TIMEOUT_MS, -1);
  });
  const claimed = (async () => {
    const stub = namespace.get(namespace.idFromName(key.slice(0, 2)));
    const first = await stub.claim(key, expiresAt);
    return first === true ? 1 : first === false ? 0 : -1;
  })().catch(() => -1);
  return Promise.race([claimed, late]).finally(() => clearTimeout(timer));
}

/** The needs a request and its background work share: KV, fetch, timers, WebCrypto. */
async function perform(env, handle, next) {
  switch (+next[0]) {
    case KV_GET: {
      let value;
      try {
        value = await withinDeadline(env.JWKS_CACHE.get(next[1]), KV_TIMEOUT_MS);
      } catch {
        return gateKvFault(handle, KV_READ_FAILED);
      }
      return value === LATE ? gateKvFault(handle, KV_READ_TIMED_OUT) : gateKv(handle, value ?? undefined);
    }
    case KV_PUT: {
      // KV_PUT, ttl, key, value
      let done;
      try {
        done = await withinDeadline(env.JWKS_CACHE.put(next[2], next[3], { expirationTtl: +next[1] }), KV_TIMEOUT_MS);
      } catch (error) {
        // Workers KV refuses writes over its limits with a 429 in the message.
        const limited = /\b429\b|too many requests/i.test(String(error?.message));
        return gateKvFault(handle, limited ? KV_WRITE_LIMITED : KV_WRITE_FAILED);
      }
      return done === LATE ? gateKvFault(handle, KV_WRITE_TIMED_OUT) : gateDone(handle);
    }
    case FETCH:
      return fetchDocument(handle, next);
    case SLEEP:
      await new Promise((resolve) => setTimeout(resolve, +next[1]));
      return gateDone(handle);
    case VERIFY:
      return gateVerdict(handle, await verify(next[1], next[2], next[3], next[4]));
    case IMPORT:
      return gateImported(handle, await importKey(next[1], next[2]));
    default:
      throw new Error(`unexpected step ${next[0]}`);
  }
}

// How a KV operation failed (gateKvFault).
const KV_READ_FAILED = 0;
const KV_READ_TIMED_OUT = 1;
const KV_WRITE_FAILED = 2;
const KV_WRITE_TIMED_OUT = 3;
const KV_WRITE_LIMITED = 4;
/** What `withinDeadline` resolves to when the deadline came first. */
const LATE = Symbol('late');

/** `promise`, or LATE once `ms` passed (the operation itself is left to finish or fail). */
function withinDeadline(promise, ms) {
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, LATE);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

// Why the origin gave no answer head (gateOriginFailed).
const ORIGIN_UNREACHABLE = 0;
const ORIGIN_CONNECT_TIMEOUT = 1;
const ORIGIN_FIRST_BYTE_TIMEOUT = 2;

/**
 * Origins (scheme and host) whose last forward got no answer head. Their
 * next forwards watch for the connection, so that while such an origin is
 * down each request fails at the connect timeout; a healthy origin's
 * forwards do not pay for the watch. At most one entry per origin the
 * configuration names.
 */
const suspectOrigins = new Set();

/**
 * Sends the forward and waits for the origin's answer head: the Response,
 * or why there was none (ORIGIN_*). Workers' fetch does not say when the
 * connection is made, but the runtime pulls a request body's second chunk
 * only once the first was written to the connection. To a suspect origin
 * (above), a body is sent as one chunk from a stream, and that second pull
 * ends the connect wait and starts the first-byte wait. Otherwise, and for
 * a request without a body, there is one wait, the two timeouts together,
 * and running out of it is a first-byte timeout.
 */
async function sendToOrigin(url, method, headers, body, connectMs, firstByteMs) {
  const origin = url.slice(0, url.indexOf('/', url.indexOf('//') + 2) >>> 0);
  let timer;
  let timedOut;
  const late = new Promise((resolve) => (timedOut = resolve));
  const waitFor = (ms, why) => {
    clearTimeout(timer);
    timer = setTimeout(timedOut, ms, why);
  };
  let sent = body;
  if (suspectOrigins.has(origin) && body instanceof Uint8Array && body.byteLength > 0) {
    waitFor(connectMs, ORIGIN_CONNECT_TIMEOUT);
    sent = announcing(body, () => waitFor(firstByteMs, ORIGIN_FIRST_BYTE_TIMEOUT));
    // A stream has no length of its own: the origin is told the body's.
    headers.push(['content-length', String(body.byteLength)]);
  } else {
    waitFor(connectMs + firstByteMs, ORIGIN_FIRST_BYTE_TIMEOUT);
  }
  // No abort signal: a fetch given up on is cancelled with the request's
  // context, once the gate has answered.
  const answer = fetch(url, { method, headers, body: sent, redirect: 'manual' }).catch(() => ORIGIN_UNREACHABLE);
  let outcome;
  try {
    outcome = await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
  if (typeof outcome === 'number') suspectOrigins.add(origin);
  else if (suspectOrigins.size > 0) suspectOrigins.delete(origin);
  return outcome;
}

/** `bytes` as a one-chunk stream that calls `taken` once the runtime asks for more. */
function announcing(bytes, taken) {
  let given = false;
  return new ReadableStream(
    {
      pull(controller) {
        if (!given) {
          given = true;
          controller.enqueue(bytes);
          return;
        }
        taken();
        controller.close();
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * The origin's body as the client gets it: piped by the runtime through
 * `stages` (TransformStreams; none: an identity stream, pumped without
 * JavaScript), so the origin is read only as fast as the client reads, one
 * chunk in flight, however slow the client. When the origin's stream fails
 * mid-answer the pipe aborts the client's stream at once (its connection is
 * cut, not left hanging), and that is logged. A client that leaves needs
 * nothing here: the runtime drops the request, which cancels the origin's.
 */
function watched(body, stages, request, started) {
  if (body === null) return null;
  const [first = new IdentityTransformStream(), ...rest] = stages;
  body.pipeTo(first.writable).catch(() => {
    // The pipe ended early: the origin failed (its stream errored), or the
    // client's side went away (the origin's stream was cancelled: closed).
    let reader;
    try {
      reader = body.getReader();
    } catch {
      return;
    }
    reader.closed.catch(() => {
      const path = new URL(request.url).pathname;
      console.log(JSON.stringify({ event: 'stream_ended', reason: 'origin_reset', method: request.method, path, duration_ms: Date.now() - started }));
    });
  });
  let stream = first.readable;
  for (const stage of rest) stream = stream.pipeThrough(stage);
  return stream;
}

/** Stale-while-revalidate: the key set refresh after the answer. */
async function runBackground(env, handle, instance) {
  try {
    let next = fields(gateStep(handle));
    while (+next[0] !== DONE) {
      next = fields(await perform(env, handle, next));
      alive(instance);
    }
    if (next[1] !== '') console.log(next[1]);
  } catch {
    // The refresh is retried by a later request; the instance may be gone.
  }
}

function verify(key, params, signature, data) {
  return crypto.subtle.verify(params, key, signature, data).catch(() => false);
}

function importKey(jwk, params) {
  return crypto.subtle.importKey('jwk', jwk, params, false, ['verify']).catch(() => undefined);
}

const SIGN_PARAMS = { ES256: { name: 'ECDSA', hash: 'SHA-256' }, EdDSA: { name: 'Ed25519' } };
const KEY_PARAMS = { ES256: { name: 'ECDSA', namedCurve: 'P-256' }, EdDSA: { name: 'Ed25519' } };
/**
 * The assertion keys of this isolate, by binding: the CryptoKey (null when
 * unusable), or, while the first import runs, the promise of it, which
 * concurrent first requests share.
 */
const signingKeys = new Map();
const encoder = new TextEncoder();

/** Imports the assertion key of `binding`, once per isolate. */
function signingKey(env, binding, alg) {
  const pending = importSigningKey(env[binding], alg).then((key) => {
    signingKeys.set(binding, key ?? null);
    return key ?? null;
  });
  signingKeys.set(binding, pending);
  return pending;
}

/** The signature of the origin's assertion, base64url (RFC 7515 §2), or undefined when WebCrypto fails. */
function sign(key, alg, input) {
  return crypto.subtle.sign(SIGN_PARAMS[alg], key, encoder.encode(input)).then(base64url, () => undefined);
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
function base64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    text += BASE64URL[n >> 18] + BASE64URL[(n >> 12) & 63] + BASE64URL[(n >> 6) & 63] + BASE64URL[n & 63];
  }
  if (i < bytes.length) {
    const n = (bytes[i] << 16) | ((bytes[i + 1] ?? 0) << 8);
    text += BASE64URL[n >> 18] + BASE64URL[(n >> 12) & 63] + (i + 1 < bytes.length ? BASE64URL[(n >> 6) & 63] : '');
  }
  return text;
}

/**
 * Imports a private JWK for signing, non-extractable. Its private part must
 * match its public part, which the gate publishes: a key that signs what the
 * published key cannot verify would fail at every origin, so it is refused.
 * Nothing about the key is logged.
 */
async function importSigningKey(text, alg) {
  try {
    // What a signing JWK may carry beside its members (the machine ignores them too).
    const { d, key_ops: _ops, ext: _ext, ...members } = JSON.parse(text);
    const params = KEY_PARAMS[alg];
    const key = await crypto.subtle.importKey('jwk', { ...members, d }, params, false, ['sign']);
    const published = await crypto.subtle.importKey('jwk', members, params, false, ['verify']);
    const probe = crypto.getRandomValues(new Uint8Array(32));
    const signature = await crypto.subtle.sign(SIGN_PARAMS[alg], key, probe);
    return (await crypto.subtle.verify(SIGN_PARAMS[alg], published, signature, probe)) ? key : undefined;
  } catch {
    return undefined;
  }
}

const TOO_LARGE = Symbol('too large');
const UNREADABLE = Symbol('unreadable');

/** A body read whole, refused once it passes `max` bytes, whatever was declared. */
async function readCapped(stream, max) {
  if (stream === null) return new Uint8Array(0);
  const chunks = [];
  let length = 0;
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.byteLength;
      if (length > max) {
        reader.cancel().catch(() => {});
        return TOO_LARGE;
      }
      chunks.push(value);
    }
  } catch {
    return UNREADABLE;
  }
  if (chunks.length === 1) return chunks[0];
  const body = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    body.set(chunk, at);
    at += chunk.byteLength;
  }
  return body;
}

/** A body whose declared length is within `max` (the runtime holds it to that length). */
async function readWhole(request, max) {
  try {
    const body = new Uint8Array(await request.arrayBuffer());
    return body.byteLength > max ? TOO_LARGE : body;
  } catch {
    return UNREADABLE;
  }
}

/**
 * GET (or POST a form to) a JSON document within a deadline and a size
 * cap; redirects are returned, never followed (the machine decides).
 */
async function fetchDocument(handle, [, url, form, authorization, timeoutMs, maxBytes]) {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const headers = [['accept', 'application/json']];
    if (form !== undefined) {
      headers.push(['content-type', 'application/x-www-form-urlencoded']);
      if (authorization !== undefined) headers.push(['authorization', authorization]);
    }
    const response = await fetch(url, { method: form === undefined ? 'GET' : 'POST', headers, body: form, redirect: 'manual', signal });
    const declared = response.headers.get('content-length');
    if (declared !== null && Number(declared) > maxBytes) {
      response.body?.cancel().catch(() => {});
      return gateFetched(handle, 3, 0);
    }
    const body = await readCapped(response.body, maxBytes);
    if (body === TOO_LARGE) return gateFetched(handle, 3, 0);
    if (body === UNREADABLE) return gateFetched(handle, signal.aborted ? 2 : 1, 0);
    const header = (name) => response.headers.get(name) ?? undefined;
    return gateFetched(handle, 0, response.status, body, header('cache-control'), header('expires'), header('date'), header('location'));
  } catch {
    return gateFetched(handle, signal.aborted ? 2 : 1, 0);
  }
}

/** The longest delay a timer takes (2^31 - 1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A stage that ends an origin event stream at `endsAt` (ms since the epoch):
 * closed for the client, and the origin's body cancelled, so the origin
 * stops too.
 */
function ending(endsAt) {
  let timer;
  return new TransformStream({
    start(controller) {
      timer = setTimeout(() => {
        console.log(JSON.stringify({ event: 'stream_ended', reason: 'token_no_longer_accepted' }));
        controller.terminate();
      }, Math.min(Math.max(0, endsAt - Date.now()), MAX_TIMER_MS));
    },
    flush() {
      clearTimeout(timer);
    },
    cancel() {
      clearTimeout(timer);
    },
  });
}

/** The machine's `tools/list` filter, as a stage of the origin's body. */
function filter(handle) {
  return new TransformStream({
    transform(chunk, controller) {
      const out = gateFilter(handle, chunk);
      if (out === undefined) throw new Error('filter lost');
      if (out.length > 0) controller.enqueue(out);
    },
    flush(controller) {
      const out = gateFilter(handle, undefined);
      if (out !== undefined && out.length > 0) controller.enqueue(out);
    },
  });
}

/** Test builds only: signature cases through this module's own import and verify; `/caches`: the isolate's cache sizes. */
async function probe(request) {
  if (new URL(request.url).pathname === `${PROBE_PATH}/caches`) {
    return new Response(gateProbeCaches(), { headers: { 'content-type': 'application/json' } });
  }
  const verdicts = [];
  for (const entry of gateProbeCases(await request.text())) {
    if (typeof entry === 'string') {
      verdicts.push(entry);
      continue;
    }
    const [jwk, importParams, verifyParams, signature, data] = entry;
    const key = await importKey(jwk, importParams);
    verdicts.push(key !== undefined && (await verify(key, verifyParams, signature, data)) ? 'valid' : 'invalid');
  }
  return Response.json({ verdicts });
}

/** The fields of the origin's answer the machine decides on, as `joined` gives them. */
function decided(headers) {
  let text = '';
  for (const name of ORIGIN_DECIDED) {
    const value = headers.get(name);
    if (value !== null) text += text === '' ? `${name}\0${value}` : `\0${name}\0${value}`;
  }
  return text;
}

/**
 * The origin's header fields without those the machine replaces, and the
 * machine's (`fields` from `at`) added: what it would have answered had it
 * been given every field.
 */
function laidOver(origin, fields, at) {
  const headers = new Headers(origin);
  for (const name of ORIGIN_REPLACED) headers.delete(name);
  for (let i = at; i + 1 < fields.length; i += 2) headers.append(fields[i], fields[i + 1]);
  return headers;
}

/** Header fields as one `name\0value\0...` text (names and values never hold NUL). */
function joined(headers) {
  let text = '';
  for (const [name, value] of headers) text += text === '' ? `${name}\0${value}` : `\0${name}\0${value}`;
  return text;
}
