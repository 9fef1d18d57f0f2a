// The soak engine (issue 22): mixed traffic at a fixed rate through the built
// gate (the probe build, build-probe/, in Miniflare's workerd) while faults
// come and go under it, and an oracle that decides, request by request,
// whether the gate's answer was right.
//
// Why a soak and not only one test per fault: the single-fault tests show
// each answer in isolation; only traffic that keeps flowing across the
// switches shows that nothing leaks between requests (a refused token that
// is let through while KV is down, a session answered on another request's
// stream, an isolate cache that grows without bound, a request left hanging
// after the origin came back).
//
// The stack (startStack): the demo issuer (mints tokens with jose), the
// demo origin (a real MCP server, official SDK, recording
// `origin.requests`), a faulty origin proxy between the gate and the demo
// origin, and the gate with its KV binding behind a fault switch
// (tests/helpers/faults.mjs). The origin assertion is off here: the demo
// origin checks `htu` against its own port, and the gate sends to the
// proxy's.
//
// Every request carries a tag (header `x-soak-tag`, and the same string as
// its JSON-RPC id) so the oracle can tell whether the origin (the proxy, or
// the demo origin behind it) ever received it. The oracle's verdicts:
// - wrong answer: a request that must be refused (expired, forged, missing
//   a scope) reached the origin or got a 2xx; a request that should pass
//   got no 2xx outside every fault window (a window is a fault's on-time
//   plus `graceMs`, and a request is inside when its send..answer-head span
//   touches one); an answer carrying another request's JSON-RPC id; a
//   complete 200 outside faults without the answer to its request; a
//   refusal carrying an Mcp-Session-Id (a session the gate did not bind).
// - 5xx outside faults, any 500 (never the gate's answer to a fault), hangs
//   (no whole answer within `hangMs`), streams that broke outside faults,
//   and streams the client left that the origin did not see close within 3 s.
//
//   import { runSoak } from './helpers/soak.mjs';
//   const figures = await runSoak({ durationMs: 60_000, rate: 12 });

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateSigningKey } from '../../demo/issuer.mjs';
import { CACHE_BOUNDS, CACHES_PATH, PROBE_BUILD } from './faults.mjs';
import { takeSseData } from './http.mjs';
import { startStack } from './stack.mjs';
import { corruptSignature } from './tokens.mjs';

export { PROBE_BUILD };

/** Each fault the schedule switches on, and how: a KV mode or an origin proxy mode. */
export const FAULTS = {
  'kv-get-fail': { kv: { get: 'fail', put: 'ok' } },
  'kv-get-stall': { kv: { get: 'stall', put: 'ok' } },
  'kv-put-fail': { kv: { get: 'ok', put: 'fail' } },
  'kv-put-limit': { kv: { get: 'ok', put: 'limit' } },
  'origin-head-stall': { origin: 'head-stall' },
  'origin-reset-mid-stream': { origin: 'reset-mid-stream' },
  'origin-refuse': { origin: 'refuse' },
};

/**
 * How often each kind of operation is picked (relative weights). Session
 * operations run on a session the soak opened with `initialize`
 * (2025-06-18, a session-carrying revision: the demo origin needs one).
 */
export const DEFAULT_MIX = {
  list: 16, // tools/list, a reused token
  call: 14, // tools/call lookup_invoice, a reused token
  callNewToken: 12, // tools/call lookup_invoice, a token never seen before
  expired: 8, // must be refused: 401
  forged: 8, // bad signature (bit flipped, or a foreign key under a published kid): 401
  stepUp: 8, // void_invoice with invoices:read only (403), then with invoices:write (200)
  countdown: 6, // a slow tool streaming notifications, read to its end
  countdownAbort: 4, // the same, the client leaves after the first event
  getStream: 4, // the standalone GET event stream, held 1-2.5 s, then closed by the client
  initialize: 5, // a new session (initialize + notifications/initialized); an old one is closed (DELETE)
};

const PROTOCOL_VERSION = '2025-06-18';
const TOOL_SCOPES = { lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' };
/** Reused tokens are re-minted this often, so none nears its expiry (300 s) during a long soak. */
const REUSED_TOKEN_MAX_AGE_MS = 60_000;
/** Sessions kept open at once; older ones are retired (DELETE) once nothing uses them. */
const MIN_SESSIONS = 3;
const MAX_SESSIONS = 6;
const RSS_SAMPLE_MS = 10_000;
/** How soon the origin must see a client's close of a stream (contract: < 3 s). */
const STREAM_CLOSE_BOUND_MS = 3000;

/**
 * Runs one soak and returns its figures (and prints its summary through `log`).
 *
 * @param {object} [options]
 * @param {number} [options.durationMs=45000] how long traffic is sent.
 * @param {number} [options.rate=10] operations started per second (a step-up or an initialize is two requests).
 * @param {number} [options.warmupMs=3000] calm time before the first fault.
 * @param {number} [options.faultMs=2500] how long each fault stays on.
 * @param {number} [options.calmMs=5500] time between a fault's end and the next one's start.
 * @param {number} [options.graceMs=3000] after a fault ends, how long requests still count as inside its window
 *   (in-flight requests, the gate's 2 s KV deadline, the origin timeouts).
 * @param {number} [options.hangMs=20000] a request without its whole answer after this long is a hang (and is aborted).
 * @param {string[]} [options.faults] fault kinds (keys of FAULTS), cycled in this order.
 * @param {object} [options.mix] operation weights (DEFAULT_MIX).
 * @param {number} [options.seed] seed of the operation picker (printed, so a run can be repeated).
 * @param {string} [options.buildDir=PROBE_BUILD] the build the gate runs.
 * @param {object} [options.harness] { startFaultyGate, startFaultyOrigin } (default: ./faults.mjs).
 * @param {(line: string) => void|null} [options.log=console.log] where the summary goes (null: nowhere).
 */
export async function runSoak({
  durationMs = 45_000,
  rate = 10,
  warmupMs = 3000,
  faultMs = 2500,
  calmMs = 5500,
  graceMs = 3000,
  hangMs = 20_000,
  faults = Object.keys(FAULTS),
  mix = DEFAULT_MIX,
  seed = Date.now() % 2 ** 31,
  buildDir = PROBE_BUILD,
  harness,
  log = console.log,
} = {}) {
  for (const kind of faults) if (!FAULTS[kind]) throw new Error(`unknown fault kind ${kind}`);
  harness ??= await import('./faults.mjs');
  const stack = await startSoakStack({ buildDir, harness });
  try {
    const rssStart = workerdMemory();
    // Sampled along the way too: a trend says more than two points (V8 grows its heap lazily).
    const rssSamples = [];
    const sampler = setInterval(() => rssSamples.push(workerdMemory()?.totalKiB ?? null), RSS_SAMPLE_MS);
    // If the gate's workerd goes away (a crash, or something killing it from
    // outside), every later request fails: say so rather than let it pass as
    // the gate's wrong answers.
    const started = performance.now();
    const pids = rssStart?.processes.map((p) => p.pid) ?? [];
    let gateGoneAfterMs = null;
    const watcher = setInterval(() => {
      if (gateGoneAfterMs === null && pids.some((pid) => !existsSync(`/proc/${pid}`))) gateGoneAfterMs = Math.round(performance.now() - started);
    }, 1000);
    let run;
    try {
      run = await drive({ stack, durationMs, rate, warmupMs, faultMs, calmMs, hangMs, faults, mix, seed });
    } finally {
      clearInterval(sampler);
      clearInterval(watcher);
    }
    // A forwarded request may still be landing at the origin.
    await sleep(300);
    const figures = judge({ stack, run, graceMs });
    figures.gateGoneAfterMs = gateGoneAfterMs;
    figures.seed = seed;
    figures.options = { durationMs, rate, warmupMs, faultMs, calmMs, graceMs, hangMs };
    figures.caches = await cacheSizes(stack.gate);
    figures.rss = { start: rssStart, end: workerdMemory(), everyTenSecondsKiB: rssSamples };
    if (log) printSummary(figures, log);
    return figures;
  } finally {
    await stack.close();
  }
}

/**
 * The stack (tests/helpers/stack.mjs) with the faulty gate and the faulty
 * origin proxy between the gate and the demo origin. No origin assertion:
 * the demo origin checks its `htu` against its own URL, which the proxy
 * in front changes.
 */
export async function startSoakStack({ buildDir = PROBE_BUILD, harness }) {
  return startStack({
    buildDir,
    assertion: false,
    issuer: { algs: ['RS256', 'ES256', 'EdDSA'] },
    origin: { countdownIntervalMs: 200 },
    gate: harness.startFaultyGate,
    proxy: (origin) => harness.startFaultyOrigin({ target: origin.url }),
    bindings: () => ({
      MCP_TOOL_SCOPES: JSON.stringify(TOOL_SCOPES),
      // Short, so a stalled origin is answered (504) well inside its fault's grace.
      ORIGIN_CONNECT_TIMEOUT_MS: '2000',
      ORIGIN_FIRST_BYTE_TIMEOUT_MS: '3000',
    }),
  });
}

/** Sends the traffic and runs the fault schedule; returns what happened, unjudged. */
async function drive({ stack, durationMs, rate, warmupMs, faultMs, calmMs, hangMs, faults, mix, seed }) {
  const { issuer, gate, proxy, resource } = stack;
  const random = mulberry32(seed);
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  /** Every request: see `send`. */
  const records = [];
  /** Fault windows, ms since t0: { kind, start, end }. */
  const windows = [];
  /** Mistakes of the soak itself (never the gate's): reported, so a broken soak cannot pass silently. */
  const engineErrors = [];
  const sessions = [];
  let initializing = 0;
  let sequence = 0;

  // --- tokens -----------------------------------------------------------
  const algs = ['RS256', 'ES256', 'EdDSA'];
  const pickAlg = () => algs[Math.floor(random() * algs.length)];
  const foreignKeys = await Promise.all(['ES256', 'EdDSA'].map((alg) => generateSigningKey(alg, { kid: issuer.keys[alg].kid })));
  const pools = { full: [], readOnly: [], expired: [], forged: [] };
  const mintFull = () => issuer.mint({}, { alg: pickAlg() });
  const mintReadOnly = () => issuer.mint({ scope: 'invoices:read' }, { alg: pickAlg() });
  const mintExpired = () => {
    const seconds = Math.floor(Date.now() / 1000);
    // Well past the gate's 60 s leeway.
    return issuer.mint({ iat: seconds - 1200, exp: seconds - 600 }, { alg: pickAlg() });
  };
  const mintForged = async () => {
    if (random() < 0.5) return corruptSignature(await mintFull());
    // Signed by a key the issuer never published, under a kid it did.
    return issuer.mint({}, { key: foreignKeys[Math.floor(random() * foreignKeys.length)] });
  };
  /** One of a small pool of reused tokens (`size`), re-minted when old. */
  async function reused(pool, size, mint) {
    const index = Math.floor(random() * size);
    const entry = pool[index];
    if (entry && performance.now() - entry.at < REUSED_TOKEN_MAX_AGE_MS) return entry.token;
    const fresh = { token: await mint(), at: performance.now() };
    pool[index] = fresh;
    return fresh.token;
  }
  const tokens = {
    full: () => reused(pools.full, 3, mintFull),
    readOnly: () => reused(pools.readOnly, 2, mintReadOnly),
    fresh: mintFull,
    expired: () => (random() < 0.5 ? reused(pools.expired, 2, mintExpired) : mintExpired()),
    forged: () => (random() < 0.5 ? reused(pools.forged, 2, mintForged) : mintForged()),
  };

  // --- one request --------------------------------------------------------
  /**
   * Sends one request to the gate and reads its answer as `read` says:
   * 'full' (to the end), 'first-event' (until one SSE event, then the
   * client leaves) or a number (hold the stream that many ms, then leave).
   * Never throws: everything goes into the record.
   */
  async function send({ kind, expect, expectStatus, token, method = 'POST', message, session, read = 'full' }) {
    const tag = `soak-${++sequence}`;
    const record = {
      tag,
      kind,
      expect,
      expectStatus,
      method,
      sentAt: now(),
      headAt: null,
      endAt: null,
      status: null,
      error: null,
      bodyError: null,
      hang: false,
      clientClosed: false,
      foreignIds: [],
      answered: false,
    };
    records.push(record);
    const headers = { 'x-soak-tag': tag, accept: method === 'GET' ? 'text/event-stream' : 'application/json, text/event-stream' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (session) {
      headers['mcp-session-id'] = session.id;
      headers['mcp-protocol-version'] = session.protocolVersion;
    }
    let body;
    if (message) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(message.method.startsWith('notifications/') ? { jsonrpc: '2.0', ...message } : { jsonrpc: '2.0', id: tag, ...message });
    }
    const controller = new AbortController();
    const timer = setTimeout(() => {
      record.hang = true;
      controller.abort(new Error('hang'));
    }, hangMs);
    const result = { record, events: [], response: null };
    try {
      let response;
      try {
        response = await fetch(resource, { method, headers, body, redirect: 'manual', signal: controller.signal });
      } catch (error) {
        if (!record.hang) record.error = errorName(error);
        return result;
      }
      record.headAt = now();
      record.status = response.status;
      // A session the gate could not bind to its owner must not reach the client.
      record.refusedWithSession = !response.ok && response.headers.has('mcp-session-id');
      result.response = response;
      const type = response.headers.get('content-type') ?? '';
      try {
        if (type.startsWith('text/event-stream')) {
          const how = await readEvents(response, result.events, {
            stopAfter: read === 'first-event' ? 1 : Infinity,
            holdMs: typeof read === 'number' ? read : Infinity,
          });
          if (read !== 'full') {
            // The stream was to outlive the client's interest in it: ending first is a broken stream.
            if (how === 'ended') record.bodyError = 'the stream ended before the client left';
            record.clientClosed = true;
            record.leftAt = Date.now();
            controller.abort(new Error('client leaves'));
          }
        } else {
          const text = await response.text();
          if (text && type.startsWith('application/json')) {
            try {
              result.events.push(JSON.parse(text));
            } catch {
              // An error body need not be JSON-RPC; the status decides.
            }
          }
        }
      } catch (error) {
        if (!record.hang && !record.clientClosed) record.bodyError = errorName(error);
      }
      // Whether the answer is the one to this request: a JSON-RPC response
      // carrying another request's id is a cross-wired answer.
      for (const event of result.events) {
        for (const item of Array.isArray(event) ? event : [event]) {
          if (!item || typeof item !== 'object' || !('id' in item) || item.method !== undefined) continue;
          if (item.id === tag) record.answered = true;
          else if (item.id !== null) record.foreignIds.push(String(item.id));
        }
      }
      return result;
    } finally {
      clearTimeout(timer);
      record.endAt = now();
      if (record.clientClosed) await originSawClose(record);
    }
  }

  /**
   * After the client left a stream: whether the origin's side of it (the
   * proxy's connection from the gate) closed within the contract's bound.
   * Sets `originClosedMs` (null: not within the bound); left unset when the
   * request never reached the proxy.
   */
  async function originSawClose(record) {
    let seen;
    for (let i = proxy.requests.length - 1; i >= 0 && !seen; i -= 1) if (proxy.requests[i].headers['x-soak-tag'] === record.tag) seen = proxy.requests[i];
    if (!seen) return;
    const entry = await proxy.closed(seen, { timeoutMs: STREAM_CLOSE_BOUND_MS }).catch(() => null);
    record.originClosedMs = entry ? Math.max(0, entry.at - record.leftAt) : null;
  }

  // --- sessions -------------------------------------------------------------
  const usable = (filter = () => true) => sessions.filter((s) => !s.retiring && filter(s));
  function pickSession(filter) {
    const list = usable(filter);
    return list.length ? list[Math.floor(random() * list.length)] : undefined;
  }
  async function onSession(session, fn) {
    session.inflight += 1;
    try {
      return await fn();
    } finally {
      session.inflight -= 1;
      retire();
    }
  }
  /** Closes (DELETE) retired sessions nothing uses any more. */
  function retire() {
    for (const session of sessions.filter((s) => s.retiring && s.inflight === 0 && !s.deleting)) {
      session.deleting = true;
      track(
        (async () => {
          await send({ kind: 'delete', expect: 'pass', token: await tokens.full(), method: 'DELETE', session });
          sessions.splice(sessions.indexOf(session), 1);
        })(),
      );
    }
  }

  // --- operations -------------------------------------------------------------
  const lookup = (id) => ({ method: 'tools/call', params: { name: 'lookup_invoice', arguments: { invoice_id: id } } });
  const ops = {
    async initialize() {
      initializing += 1;
      try {
        const token = await tokens.full();
        const { record, events, response } = await send({
          kind: 'initialize',
          expect: 'pass',
          token,
          message: { method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'soak', version: '0' } } },
        });
        const id = response?.headers.get('mcp-session-id');
        const result = events.find((e) => e?.id === record.tag)?.result;
        if (!(record.status === 200 && id && result)) return;
        const session = { id, protocolVersion: result.protocolVersion ?? PROTOCOL_VERSION, inflight: 0, streaming: false, retiring: false };
        await send({ kind: 'initialized', expect: 'pass', token, message: { method: 'notifications/initialized' }, session });
        sessions.push(session);
        const open = usable();
        if (open.length > MAX_SESSIONS) open[0].retiring = true;
        retire();
      } finally {
        initializing -= 1;
      }
    },
    async list(session) {
      await send({ kind: 'tools/list', expect: 'pass', token: await tokens.full(), message: { method: 'tools/list', params: {} }, session });
    },
    async call(session) {
      await send({ kind: 'tools/call', expect: 'pass', token: await tokens.full(), message: lookup('INV-1001'), session });
    },
    async callNewToken(session) {
      await send({ kind: 'tools/call new token', expect: 'pass', token: await tokens.fresh(), message: lookup('INV-1002'), session });
    },
    async expired(session) {
      await send({ kind: 'expired', expect: 'refuse', expectStatus: 401, token: await tokens.expired(), message: lookup('INV-1003'), session });
    },
    async forged(session) {
      await send({ kind: 'forged', expect: 'refuse', expectStatus: 401, token: await tokens.forged(), message: lookup('INV-1003'), session });
    },
    async stepUp(session) {
      const voiding = { method: 'tools/call', params: { name: 'void_invoice', arguments: { invoice_id: 'INV-1003', reason: 'soak' } } };
      await send({ kind: 'step-up: scope missing', expect: 'refuse', expectStatus: 403, token: await tokens.readOnly(), message: voiding, session });
      await send({ kind: 'step-up: scope granted', expect: 'pass', token: await tokens.fresh(), message: voiding, session });
    },
    async countdown(session) {
      const message = { method: 'tools/call', params: { name: 'countdown', arguments: { from: 3, interval_ms: 150 }, _meta: { progressToken: 1 } } };
      await send({ kind: 'countdown', expect: 'pass', token: await tokens.full(), message, session });
    },
    async countdownAbort(session) {
      // Long enough (4 s) that the origin ends it only if the gate passes the client's leaving on.
      const message = { method: 'tools/call', params: { name: 'countdown', arguments: { from: 20, interval_ms: 200 }, _meta: { progressToken: 1 } } };
      await send({ kind: 'countdown, client leaves', expect: 'pass', token: await tokens.full(), message, session, read: 'first-event' });
    },
    async getStream(session) {
      // One standalone GET stream per session at a time: the SDK answers 409
      // to a second, so the next one waits until the origin saw this one close.
      session.streaming = true;
      let record;
      try {
        ({ record } = await send({ kind: 'GET stream', expect: 'pass', token: await tokens.full(), method: 'GET', session, read: 1000 + Math.floor(random() * 1500) }));
      } finally {
        // A stream the origin may still hold open would make the next one a 409: none on this session again.
        session.streaming = record?.originClosedMs === null;
      }
    },
  };
  const weighted = Object.entries(mix).filter(([name, weight]) => ops[name] && weight > 0);
  const totalWeight = weighted.reduce((sum, [, weight]) => sum + weight, 0);
  function pickOp() {
    let point = random() * totalWeight;
    for (const [name, weight] of weighted) if ((point -= weight) < 0) return name;
    return weighted.at(-1)[0];
  }
  /** Starts one operation; session operations get a session, or open one first. */
  function launch() {
    let name = pickOp();
    if (usable().length + initializing < MIN_SESSIONS) name = 'initialize';
    if (name === 'initialize') return track(ops.initialize());
    const session = name === 'getStream' ? pickSession((s) => !s.streaming) : pickSession();
    if (!session) {
      // Refusals need no session; anything else waits for one.
      return track(name === 'expired' || name === 'forged' ? ops[name]() : ops.initialize());
    }
    return track(onSession(session, () => ops[name](session)));
  }
  const inflight = new Set();
  function track(promise) {
    const tracked = promise
      .catch((error) => engineErrors.push(String(error?.stack ?? error).slice(0, 500)))
      .finally(() => inflight.delete(tracked));
    inflight.add(tracked);
  }

  // --- faults -------------------------------------------------------------
  async function apply(kind, on) {
    const fault = FAULTS[kind];
    if (fault.kv) await gate.kv.set(on ? fault.kv : { get: 'ok', put: 'ok' });
    if (fault.origin) await proxy.set(on ? fault.origin : 'ok');
  }
  let stopping = false;
  async function schedule() {
    await sleep(warmupMs);
    for (let i = 0; faults.length && !stopping && now() + faultMs + calmMs <= durationMs; i += 1) {
      const kind = faults[i % faults.length];
      // The window opens before the switch and closes after it, so no request
      // sent while it was changing can fall outside.
      const window = { kind, start: now(), end: null };
      windows.push(window);
      await apply(kind, true);
      await sleep(faultMs);
      await apply(kind, false);
      window.end = now();
      await sleep(calmMs);
    }
  }

  // --- the run ------------------------------------------------------------
  const scheduled = schedule().catch((error) => engineErrors.push(`fault schedule: ${error?.stack ?? error}`));
  const interval = 1000 / rate;
  for (let tick = 0; ; tick += 1) {
    const at = tick * interval;
    if (at >= durationMs) break;
    const wait = at - now();
    if (wait > 0) await sleep(wait);
    launch();
  }
  stopping = true;
  await scheduled;
  // Everything in flight ends on its own or at its hang bound.
  while (inflight.size) await Promise.allSettled([...inflight]);
  for (const window of windows) window.end ??= now();
  return { records, windows, engineErrors, elapsedMs: now() };
}

/** Decides each request's verdict and counts the figures. */
function judge({ stack, run, graceMs }) {
  const { records, windows, engineErrors } = run;
  // What reached the origin: the proxy's records (the gate's first hop) and the demo origin's.
  const reached = new Set();
  for (const r of [...(stack.proxy.requests ?? []), ...stack.origin.requests]) {
    const tag = r.headers?.['x-soak-tag'];
    if (tag) reached.add(Array.isArray(tag) ? tag[0] : tag);
  }
  const inFault = (from, to) => windows.some((w) => from <= w.end + graceMs && to >= w.start);
  const byStatus = {};
  const byKind = {};
  const wrong = [];
  const outside5xx = [];
  const internal = [];
  const hangs = [];
  const streamErrors = [];
  const unexpected = [];
  const noAnswer = [];
  let answered = 0;
  let insideFaults = 0;
  let clientClosed = 0;
  /** Per fault kind: requests inside its windows, and how many of them got no 2xx (what the fault did). */
  const perFault = {};
  let closesChecked = 0;
  const closesByKind = {};
  const closesMissed = [];
  for (const r of records) {
    const status = r.status ?? (r.hang ? 'hang' : 'error');
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    const kind = (byKind[r.kind] ??= { sent: 0, byStatus: {} });
    kind.sent += 1;
    kind.byStatus[status] = (kind.byStatus[status] ?? 0) + 1;
    if (r.status !== null) answered += 1;
    if (r.clientClosed) clientClosed += 1;
    // A status is decided when the head arrives; a body error when the body ends.
    const headInFault = inFault(r.sentAt, r.headAt ?? r.endAt);
    if (headInFault) insideFaults += 1;
    for (const w of windows) {
      if (!(r.sentAt <= w.end + graceMs && (r.headAt ?? r.endAt) >= w.start)) continue;
      const effect = (perFault[w.kind] ??= { requests: 0, notAnswered2xx: 0 });
      effect.requests += 1;
      if (!(r.status >= 200 && r.status < 300)) effect.notAnswered2xx += 1;
    }
    const ok = r.status !== null && r.status >= 200 && r.status < 300;
    const sample = { tag: r.tag, kind: r.kind, status: r.status, at: Math.round(r.sentAt), ms: Math.round((r.headAt ?? r.endAt) - r.sentAt) };
    if (r.expect === 'refuse') {
      if (reached.has(r.tag)) wrong.push({ ...sample, why: 'must be refused, reached the origin' });
      else if (ok) wrong.push({ ...sample, why: 'must be refused, answered 2xx' });
      else if (r.status !== null && r.status !== r.expectStatus && !headInFault) unexpected.push(sample);
    } else if (!ok && !headInFault && !r.hang) {
      wrong.push({ ...sample, why: r.status === null ? `should pass, no answer (${r.error})` : 'should pass, refused outside a fault window' });
    }
    if (r.refusedWithSession) wrong.push({ ...sample, why: 'a refusal carrying an Mcp-Session-Id' });
    if (r.foreignIds.length) wrong.push({ ...sample, why: `answer carries another request's id (${r.foreignIds[0]})` });
    // A complete 200 answer to a request, outside faults, must be the answer to it.
    if (ok && r.expect === 'pass' && r.status === 200 && r.method === 'POST' && !r.clientClosed && !r.bodyError && !r.hang && !r.answered && !inFault(r.sentAt, r.endAt)) {
      noAnswer.push(sample);
    }
    if (r.status >= 500 && !headInFault) outside5xx.push(sample);
    if (r.status === 500) internal.push(sample);
    if (r.hang) hangs.push(sample);
    if (r.bodyError && !inFault(r.sentAt, r.endAt)) streamErrors.push({ ...sample, error: r.bodyError });
    // Judged in fault windows too: a fault can only close the origin's side sooner (a reset, a refusal), never keep it open.
    if (r.clientClosed && r.originClosedMs !== undefined) {
      closesChecked += 1;
      const tally = (closesByKind[r.kind] ??= { checked: 0, notSeenByOrigin: 0, slowestMs: 0 });
      tally.checked += 1;
      if (r.originClosedMs === null) {
        tally.notSeenByOrigin += 1;
        closesMissed.push(sample);
      } else tally.slowestMs = Math.max(tally.slowestMs, r.originClosedMs);
    }
  }
  const logs = stack.gate.output.json();
  const reasons = {};
  const streamEnded = {};
  const storeFaults = {};
  for (const line of logs) {
    if (line.event === 'stream_ended') streamEnded[line.reason] = (streamEnded[line.reason] ?? 0) + 1;
    else if (line.event === 'request' || 'decision' in line) {
      const key = `${line.status} ${line.reason ?? line.decision}`;
      reasons[key] = (reasons[key] ?? 0) + 1;
    }
    for (const fault of line.store_faults ?? []) storeFaults[fault] = (storeFaults[fault] ?? 0) + 1;
  }
  const first = (list) => list.slice(0, 10);
  return {
    elapsedMs: Math.round(run.elapsedMs),
    requests: {
      sent: records.length,
      answered,
      byStatus,
      insideFaultWindows: insideFaults,
      outsideFaultWindows: records.length - insideFaults,
      clientClosedStreams: clientClosed,
      forwardedToOrigin: reached.size,
      byKind,
    },
    wrongAnswers: wrong.length + noAnswer.length,
    fiveXXOutsideFaults: outside5xx.length,
    internalErrors: internal.length,
    hangs: hangs.length,
    streamErrorsOutsideFaults: streamErrors.length,
    unexpectedRefusals: unexpected.length,
    // Streams the client left (that reached the origin), and those of them the origin did not see close within 3 s.
    clientCloses: { checked: closesChecked, notSeenByOrigin: closesMissed.length, byKind: closesByKind },
    samples: {
      wrong: first([...wrong, ...noAnswer.map((s) => ({ ...s, why: 'a 200 without the answer to this request' }))]),
      fiveXXOutsideFaults: first(outside5xx),
      internalErrors: first(internal),
      hangs: first(hangs),
      streamErrorsOutsideFaults: first(streamErrors),
      unexpectedRefusals: first(unexpected),
      clientClosesNotSeenByOrigin: first(closesMissed),
    },
    faults: windows.map((w) => ({ kind: w.kind, start: Math.round(w.start), end: Math.round(w.end) })),
    perFault,
    kv: stack.gate.kv?.counts?.() ?? null,
    gateLog: { reasons, streamEnded, storeFaults },
    engineErrors: first(engineErrors),
    // What workerd printed besides the gate's JSON lines (a crash, an uncaught error), the last of it.
    gateOtherOutput: stack.gate.output.lines.filter((l) => l.json === undefined).slice(-10).map((l) => l.line.slice(0, 300)),
  };
}

/** The probe build's cache sizes, and whether each is within its bound. */
async function cacheSizes(gate) {
  try {
    const response = await fetch(new URL(CACHES_PATH, gate.url), { signal: AbortSignal.timeout(5000) });
    const text = await response.text();
    if (response.status !== 200) return { sizes: null, withinBounds: false, error: `HTTP ${response.status} from ${CACHES_PATH}` };
    const sizes = JSON.parse(text);
    const over = Object.entries(CACHE_BOUNDS)
      .filter(([name, bound]) => !(Number.isInteger(sizes[name]) && sizes[name] <= bound))
      .map(([name]) => name);
    return { sizes, bounds: CACHE_BOUNDS, withinBounds: over.length === 0, over };
  } catch (error) {
    return { sizes: null, withinBounds: false, error: errorName(error) };
  }
}

/**
 * Resident memory of the workerd processes this node process started
 * (descendants through /proc/<pid>/stat parent links), in KiB. Linux only;
 * elsewhere, null.
 */
export function workerdMemory(root = process.pid) {
  let names;
  try {
    names = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return null;
  }
  const children = new Map();
  const commands = new Map();
  for (const name of names) {
    let stat;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // comm may hold spaces and parentheses: it ends at the last ')'.
    const close = stat.lastIndexOf(')');
    const pid = Number(name);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    commands.set(pid, stat.slice(stat.indexOf('(') + 1, close));
    if (!children.has(ppid)) children.set(ppid, []);
    children.get(ppid).push(pid);
  }
  const processes = [];
  const queue = [...(children.get(root) ?? [])];
  while (queue.length) {
    const pid = queue.shift();
    queue.push(...(children.get(pid) ?? []));
    if (commands.get(pid) !== 'workerd') continue;
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kib = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
      if (Number.isFinite(kib)) processes.push({ pid, rssKiB: kib });
    } catch {
      // Gone in between.
    }
  }
  return { totalKiB: processes.reduce((sum, p) => sum + p.rssKiB, 0), processes };
}

/** One JSON line with the figures, then a few lines for people. */
export function printSummary(figures, log = console.log) {
  log(JSON.stringify({ soak: figures }));
  const { requests: r, caches, rss } = figures;
  const mib = (m) => (m ? `${(m.totalKiB / 1024).toFixed(1)} MiB` : 'n/a');
  const statuses = Object.entries(r.byStatus)
    .map(([status, n]) => `${status}: ${n}`)
    .join(', ');
  if (figures.gateGoneAfterMs !== null) log(`soak: THE GATE'S WORKERD WENT AWAY ${(figures.gateGoneAfterMs / 1000).toFixed(1)} s in (crashed or killed): the figures after that are void`);
  log(`soak: ${r.sent} requests in ${(figures.elapsedMs / 1000).toFixed(1)} s (seed ${figures.seed}), ${r.answered} answered (${statuses})`);
  log(`soak: ${figures.faults.length} fault windows; ${r.insideFaultWindows} requests inside them, ${r.outsideFaultWindows} outside; ${r.forwardedToOrigin} reached the origin`);
  log(
    `soak: wrong answers ${figures.wrongAnswers}, 5xx outside faults ${figures.fiveXXOutsideFaults}, 500s ${figures.internalErrors}, hangs ${figures.hangs}, ` +
      `broken streams outside faults ${figures.streamErrorsOutsideFaults}, unexpected refusal statuses ${figures.unexpectedRefusals}`,
  );
  log(
    `soak: caches ${caches.sizes ? JSON.stringify(caches.sizes) : `unavailable (${caches.error})`}${caches.sizes ? (caches.withinBounds ? ' within bounds' : ` OVER: ${caches.over.join(', ')}`) : ''}`,
  );
  log(
    `soak: ${figures.clientCloses.checked} streams left by the client, ${figures.clientCloses.notSeenByOrigin} of them not closed at the origin within 3 s ` +
      `(${JSON.stringify(figures.clientCloses.byKind)})`,
  );
  const trend = rss.everyTenSecondsKiB.map((kib) => (kib === null ? '?' : (kib / 1024).toFixed(0))).join(' ');
  log(`soak: workerd RSS ${mib(rss.start)} at start, ${mib(rss.end)} at end (every 10 s, MiB: ${trend})`);
  if (figures.gateOtherOutput.length) log(`soak: workerd also printed (last lines):\n  ${figures.gateOtherOutput.join('\n  ')}`);
  if (figures.engineErrors.length) log(`soak: ${figures.engineErrors.length} soak engine error(s), first: ${figures.engineErrors[0]}`);
}

/**
 * Reads SSE events into `events` until the stream ends ('ended'), `stopAfter`
 * events arrived ('stopped') or `holdMs` passed ('held'); throws when the
 * stream breaks.
 */
async function readEvents(response, events, { stopAfter = Infinity, holdMs = Infinity } = {}) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let held = false;
  let holding;
  if (Number.isFinite(holdMs)) {
    holding = setTimeout(() => {
      held = true;
      reader.cancel().catch(() => {});
    }, holdMs);
  }
  try {
    while (events.length < stopAfter) {
      const { value, done } = await reader.read();
      if (done) return held ? 'held' : 'ended';
      let data;
      [data, buffer] = takeSseData(buffer + decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n'));
      for (const text of data) {
        try {
          events.push(JSON.parse(text));
        } catch {
          events.push({ unparsable: true });
        }
      }
    }
    await reader.cancel().catch(() => {});
    return 'stopped';
  } finally {
    clearTimeout(holding);
  }
}

/** An error's kind, never its message text beyond a short cause (no token can be in it, but keep it short). */
function errorName(error) {
  const cause = error?.cause?.code ?? error?.cause?.message ?? '';
  return `${error?.name ?? 'Error'}: ${String(error?.message ?? error).slice(0, 80)}${cause ? ` (${String(cause).slice(0, 60)})` : ''}`;
}

/** A small seeded PRNG, so a soak's traffic can be repeated from its seed. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
