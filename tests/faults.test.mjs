// The platform failing under the gate (issue 22), black box: Workers KV that
// throws, stalls or is rate limited (tests/helpers/faults.mjs switches the
// real KV namespace of the built worker), and an origin that refuses,
// stalls, resets, garbles, floods, or loses its client mid-stream (a proxy
// in front of the demo origin). Each test asserts the client's answer (status,
// Retry-After, no Mcp-Session-Id where a session could not be guarded), the
// reason the gate logs, and what the origin and the proxy received: a fault
// must have a decided answer and must never let a request through that a
// working store would have stopped.
//
// The answers are those of the README's "Failure behaviour" table.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import { startStack } from './helpers/stack.mjs';
import { startFaultyGate, startFaultyOrigin } from './helpers/faults.mjs';
import { errorBody } from './helpers/http.mjs';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const PROTOCOL = { 'mcp-protocol-version': '2025-06-18' };
/** A stalled KV operation is given up after 2 s (the driver's deadline): the answer comes within this. */
const STALLED_ANSWER_MS = 5000;
/** How long a test waits for an answer that should come before the per-test limit. */
const ANSWER_LIMIT_MS = 10_000;

function rpc(id, method, params) {
  return { jsonrpc: '2.0', id, method, ...(params ? { params } : {}) };
}

const INITIALIZE = rpc(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'faults', version: '0' } });

/** POSTs JSON-RPC `body` to /mcp through the gate. */
function post(stack, token, body, headers = {}) {
  return stack.gate.fetch('/mcp', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...PROTOCOL,
      ...headers,
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(ANSWER_LIMIT_MS),
  });
}

/** GETs /mcp/echo with `token`; returns the status (the body is read). */
async function echo(stack, token) {
  const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(ANSWER_LIMIT_MS) });
  await response.text();
  return response.status;
}

/** Opens an MCP session through the gate (initialize, then initialized); returns its id. */
async function openSession(stack, token) {
  const init = await post(stack, token, INITIALIZE);
  const text = await init.text();
  assert.equal(init.status, 200, `initialize: ${text.slice(0, 300)}`);
  const sessionId = init.headers.get('mcp-session-id');
  assert.ok(sessionId, 'the origin issued a session');
  const initialized = await post(stack, token, { jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-session-id': sessionId });
  assert.equal(initialized.status, 202);
  await initialized.body?.cancel();
  return sessionId;
}

/** The JSON lines the gate printed since `mark` (an index into its output's lines). */
function jsonSince(stack, mark) {
  return stack.gate.output.lines
    .slice(mark)
    .map((line) => line.json)
    .filter(Boolean);
}

/** Waits for a JSON line printed since `mark` that `filter` accepts; returns it. */
async function lineSince(stack, mark, filter, what, { timeoutMs = 5000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = jsonSince(stack, mark).find(filter);
    if (found) return found;
    if (Date.now() > deadline) assert.fail(`no log line with ${what} within ${timeoutMs} ms; last output:\n${stack.gate.output.text.slice(-3000)}`);
    await sleep(50);
  }
}

/** The request line since `mark` with this `reason` and `status`. */
function requestLine(stack, mark, reason, status) {
  return lineSince(stack, mark, (line) => line.event === 'request' && line.reason === reason && line.status === status, `reason ${reason} (status ${status})`);
}

/** A line since `mark` whose store_faults names `fault` (on the request's line, or a background line). */
function storeFaultLine(stack, mark, fault) {
  return lineSince(stack, mark, (line) => Array.isArray(line.store_faults) && line.store_faults.includes(fault), `store_faults [${fault}]`);
}

/** Requests the origin received whose body is an `initialize`. */
function initializes(origin) {
  return origin.requests.filter((r) => r.method === 'POST' && r.body.includes('"method":"initialize"'));
}

/** Checks the gate's 503 for a session store that failed: Retry-After, no session id, the body. */
async function expectStoreUnavailable(response) {
  const text = await response.clone().text();
  assert.equal(response.status, 503, `status (body: ${text.slice(0, 300)})`);
  assert.equal(response.headers.get('retry-after'), '5');
  assert.equal(response.headers.get('mcp-session-id'), null, 'no Mcp-Session-Id: the session could not be guarded');
  await errorBody(response, 'temporarily_unavailable');
}

describe('Workers KV faults', () => {
  let stack;
  let token;

  before(async () => {
    stack = await startStack({ gate: startFaultyGate });
    token = await stack.issuer.mint({ sub: 'alice' });
  });
  afterEach(() => stack?.gate.kv.reset());
  after(() => stack?.close());

  /** A fresh isolate: nothing in memory, so the key set is read from KV (or fetched). */
  async function freshIsolate({ emptyStore = false } = {}) {
    stack.gate.kv.reset();
    if (emptyStore) await stack.gate.kv.clear();
    else assert.equal(await echo(stack, token), 200, 'the key set is in KV before the fault');
    await stack.gate.restart();
  }

  test('a key-set read that fails is a miss: the issuer is asked, the request passes, the log names kv_read_failed', async () => {
    await freshIsolate();
    const fetches = stack.issuer.count('/jwks');
    const forwarded = stack.origin.requests.length;
    const mark = stack.gate.output.lines.length;
    stack.gate.kv.set({ get: 'fail' });
    assert.equal(await echo(stack, token), 200);
    assert.ok(stack.gate.kv.counts().failedGets >= 1, 'the read met the fault');
    assert.ok(stack.issuer.count('/jwks') > fetches, 'the key set was fetched from the issuer instead');
    assert.equal(stack.origin.requests.length, forwarded + 1, 'the request reached the origin');
    const line = await storeFaultLine(stack, mark, 'kv_read_failed');
    assert.equal(line.status, 200);
  });

  test('a key-set read that stalls is given up after the deadline: the request passes within ~2 s, kv_read_timeout', async () => {
    await freshIsolate();
    const forwarded = stack.origin.requests.length;
    const mark = stack.gate.output.lines.length;
    stack.gate.kv.set({ get: 'stall' });
    const started = Date.now();
    assert.equal(await echo(stack, token), 200);
    const elapsed = Date.now() - started;
    assert.ok(elapsed < STALLED_ANSWER_MS, `answered after ${elapsed} ms`);
    assert.ok(elapsed >= 1500, `answered after ${elapsed} ms: the stall was not waited on`);
    assert.equal(stack.origin.requests.length, forwarded + 1);
    await storeFaultLine(stack, mark, 'kv_read_timeout');
  });

  for (const [mode, fault] of [
    ['fail', 'kv_write_failed'],
    ['limit', 'kv_write_limited'],
    ['stall', 'kv_write_timeout'],
  ]) {
    test(`a key-set write that ${mode === 'limit' ? 'is over the limit (429)' : `${mode}s`} costs nothing but the cache: 200, ${fault}`, async () => {
      // KV emptied and a fresh isolate: the key set must be fetched, then written.
      await freshIsolate({ emptyStore: true });
      const forwarded = stack.origin.requests.length;
      const mark = stack.gate.output.lines.length;
      stack.gate.kv.set({ put: mode });
      const started = Date.now();
      assert.equal(await echo(stack, token), 200);
      const elapsed = Date.now() - started;
      assert.ok(elapsed < STALLED_ANSWER_MS, `answered after ${elapsed} ms`);
      assert.ok(stack.gate.kv.counts().failedPuts >= 1, 'the write met the fault');
      assert.equal(stack.origin.requests.length, forwarded + 1, 'the request reached the origin');
      await storeFaultLine(stack, mark, fault);
    });
  }

  for (const mode of ['fail', 'stall']) {
    test(`a session-owner read that ${mode}s: 503 + Retry-After, session_store_unavailable, nothing forwarded`, async () => {
      const sessionId = await openSession(stack, token);
      const forwarded = stack.origin.requests.length;
      const mark = stack.gate.output.lines.length;
      stack.gate.kv.set({ get: mode, keys: 'session:' });
      const started = Date.now();
      const response = await post(stack, token, rpc(1, 'tools/list'), { 'mcp-session-id': sessionId });
      const elapsed = Date.now() - started;
      await expectStoreUnavailable(response);
      assert.ok(elapsed < STALLED_ANSWER_MS, `answered after ${elapsed} ms`);
      await requestLine(stack, mark, 'session_store_unavailable', 503);
      await sleep(50);
      assert.equal(stack.origin.requests.length, forwarded, 'the origin received nothing');

      // The store back, the session works for its owner.
      stack.gate.kv.reset();
      const again = await post(stack, token, rpc(2, 'tools/list'), { 'mcp-session-id': sessionId });
      assert.equal(again.status, 200);
      await again.text();
    });
  }

  for (const [what, modes] of [
    ['the owner write fails', { put: 'fail' }],
    ['the owner write stalls', { put: 'stall' }],
    ['the owner write is over the limit (429)', { put: 'limit' }],
    ['the read before the owner write fails', { get: 'fail' }],
  ]) {
    test(`a new session whose binding fails (${what}): 503, its id withheld, one initialize at the origin; a retry opens a working session`, async () => {
      const before = initializes(stack.origin).length;
      const mark = stack.gate.output.lines.length;
      stack.gate.kv.set({ ...modes, keys: 'session:' });
      const started = Date.now();
      const response = await post(stack, token, INITIALIZE);
      const elapsed = Date.now() - started;
      await expectStoreUnavailable(response);
      assert.ok(elapsed < STALLED_ANSWER_MS, `answered after ${elapsed} ms`);
      await requestLine(stack, mark, 'session_store_unavailable', 503);
      assert.equal(initializes(stack.origin).length, before + 1, 'the origin received exactly one initialize');

      // The fault cleared, the client's retry opens a new session that works.
      stack.gate.kv.reset();
      const sessionId = await openSession(stack, token);
      assert.equal(initializes(stack.origin).length, before + 2);
      const listed = await post(stack, token, rpc(1, 'tools/list'), { 'mcp-session-id': sessionId });
      assert.equal(listed.status, 200);
      assert.match(await listed.text(), /lookup_invoice/);
    });
  }
});

describe('origin faults', () => {
  /** Small timeouts, different, so the one that fired can be told apart by when the answer came. */
  const CONNECT_TIMEOUT_MS = 1000;
  const FIRST_BYTE_TIMEOUT_MS = 1500;
  let stack;
  let proxy;
  let token;

  before(async () => {
    stack = await startStack({
      // The demo origin checks an assertion's htu against its own URL, which the proxy changes.
      assertion: false,
      proxy: (origin) => startFaultyOrigin({ target: origin.url }),
      bindings: () => ({ ORIGIN_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS), ORIGIN_FIRST_BYTE_TIMEOUT_MS: String(FIRST_BYTE_TIMEOUT_MS) }),
    });
    proxy = stack.proxy;
    token = await stack.issuer.mint({ sub: 'alice' });
  });
  afterEach(() => proxy?.set('ok'));
  after(() => stack?.close());

  /**
   * POSTs an initialize with the proxy in `mode`; checks `status`, the body's
   * error and the log reason (one of `reasons`), that the demo origin received
   * nothing and the proxy `proxied` requests. Returns the elapsed time.
   */
  async function expectOriginFault(mode, { status, error, reasons, proxied, send = () => post(stack, token, INITIALIZE) }) {
    await proxy.set(mode);
    const seen = proxy.requests.length;
    const forwarded = stack.origin.requests.length;
    const mark = stack.gate.output.lines.length;
    const started = Date.now();
    const response = await send();
    const elapsed = Date.now() - started;
    const body = await errorBody(response, error);
    assert.equal(response.status, status, `status (body: ${JSON.stringify(body)})`);
    assert.equal(response.headers.get('mcp-session-id'), null);
    const line = await lineSince(stack, mark, (l) => l.event === 'request' && l.status === status, `status ${status}`);
    assert.ok(reasons.includes(line.reason), `log reason ${line.reason}, expected ${reasons.join(' or ')}`);
    assert.equal(stack.origin.requests.length, forwarded, 'the demo origin received nothing');
    assert.equal(proxy.requests.length, seen + proxied, `the proxy received ${proxy.requests.length - seen} request(s)`);
    return { elapsed, body, line };
  }

  test('an origin that refuses the connection: 502 bad_gateway, origin_unreachable; served again once it listens', async () => {
    const { body } = await expectOriginFault('refuse', { status: 502, error: 'bad_gateway', reasons: ['origin_unreachable'], proxied: 0 });
    assert.equal(body.error_description, 'The upstream server is unavailable');
    await proxy.set('ok');
    assert.equal(await echo(stack, token), 200, 'the origin is reached again');
  });

  test('an origin that resets the connection before answering: 502, origin_unreachable', async () => {
    await expectOriginFault('reset-before-head', { status: 502, error: 'bad_gateway', reasons: ['origin_unreachable'], proxied: 1 });
  });

  test('an origin that answers with bytes that are not HTTP: 502, origin_unreachable', async () => {
    await expectOriginFault('garble', { status: 502, error: 'bad_gateway', reasons: ['origin_unreachable'], proxied: 1 });
  });

  test('an origin that takes the request and never answers: 504 gateway_timeout at ORIGIN_FIRST_BYTE_TIMEOUT_MS, origin_timeout', async () => {
    const { elapsed } = await expectOriginFault('head-stall', { status: 504, error: 'gateway_timeout', reasons: ['origin_timeout'], proxied: 1 });
    assert.ok(elapsed >= FIRST_BYTE_TIMEOUT_MS - 100, `answered after ${elapsed} ms, before the first-byte timeout`);
    assert.ok(elapsed < FIRST_BYTE_TIMEOUT_MS + 2000, `answered after ${elapsed} ms`);
    // The gate gave up on the request: its connection to the origin goes too.
    const stalled = proxy.requests.at(-1);
    const closed = await proxy.closed(stalled, { timeoutMs: 3000 });
    assert.equal(closed.finished, false);
  });

  // Once an origin has given no answer head, the gate watches the next
  // forwards' connection (the runtime pulls a POST body's second chunk only
  // once the first is written: src/entry.mjs sendToOrigin), so while it is
  // down a request fails at the connect timeout. The first request to a
  // dead origin has one wait, both timeouts together.
  test('an origin that never accepts the connection: 504 gateway_timeout; once suspect, origin_connect_timeout near the connect timeout', async (t) => {
    await expectOriginFault('connect-stall', { status: 504, error: 'gateway_timeout', reasons: ['origin_timeout', 'origin_connect_timeout'], proxied: 0 });
    const { elapsed } = await expectOriginFault('connect-stall', { status: 504, error: 'gateway_timeout', reasons: ['origin_connect_timeout'], proxied: 0 });
    t.diagnostic(`origin_connect_timeout after ${elapsed} ms`);
    assert.ok(elapsed >= CONNECT_TIMEOUT_MS - 100, `answered after ${elapsed} ms, before the connect timeout`);
    assert.ok(elapsed < CONNECT_TIMEOUT_MS + 1000, `answered after ${elapsed} ms`);
  });

  // Without a body there is no such sign: one wait, both timeouts together.
  test('a request without a body to an origin that never accepts: 504 gateway_timeout, origin_timeout, after both timeouts', async (t) => {
    const send = () => stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(ANSWER_LIMIT_MS) });
    const { elapsed } = await expectOriginFault('connect-stall', { status: 504, error: 'gateway_timeout', reasons: ['origin_timeout'], proxied: 0, send });
    t.diagnostic(`origin_timeout after ${elapsed} ms`);
    assert.ok(elapsed >= CONNECT_TIMEOUT_MS + FIRST_BYTE_TIMEOUT_MS - 100, `answered after ${elapsed} ms, before both timeouts`);
    assert.ok(elapsed < CONNECT_TIMEOUT_MS + FIRST_BYTE_TIMEOUT_MS + 1000, `answered after ${elapsed} ms`);
  });

  test('an origin that resets mid-stream: the client\'s stream ends promptly, stream_ended origin_reset is logged', async () => {
    const sessionId = await openSession(stack, token);
    await proxy.set('reset-mid-stream');
    const mark = stack.gate.output.lines.length;
    const seen = proxy.requests.length;
    const response = await post(stack, token, rpc(5, 'tools/call', { name: 'countdown', arguments: { from: 20, interval_ms: 300 } }), { 'mcp-session-id': sessionId });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let received = '';
    let ended;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          ended = 'done';
          break;
        }
        received += decoder.decode(value, { stream: true });
      }
    } catch (error) {
      ended = `error: ${error.message}`;
    }
    const endedAt = Date.now();
    const record = proxy.requests[seen];
    assert.ok(record?.resetAt, 'the proxy reset the stream');
    assert.match(received, /notifications\//, 'the first event reached the client before the reset');
    assert.ok(endedAt - record.resetAt < 2000, `the client's read ended ${endedAt - record.resetAt} ms after the reset (${ended})`);
    assert.doesNotMatch(received, /Liftoff/, 'the stream was cut, not finished');
    await lineSince(stack, mark, (l) => l.event === 'stream_ended' && l.reason === 'origin_reset', 'stream_ended origin_reset');
  });

  /**
   * Opens an SSE stream through the gate (`open(signal)` returns the
   * response), reads `firstReads` chunks, leaves, and checks that the
   * origin's request closes within 3 s.
   */
  async function expectClientGone(open, { firstReads }) {
    const mark = stack.gate.output.lines.length;
    const seen = proxy.requests.length;
    const leaving = new AbortController();
    const response = await open(leaving.signal);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const reader = response.body.getReader();
    for (let i = 0; i < firstReads; i += 1) await reader.read();
    const stream = proxy.requests[seen];
    assert.ok(stream, 'the stream reached the origin');
    await sleep(200);
    assert.equal(stream.closedAt, undefined, 'the stream is open while the client reads');
    const left = Date.now();
    leaving.abort();
    const closed = await proxy.closed(stream, { timeoutMs: 3000 });
    assert.equal(closed.finished, false, 'the stream was cut, not finished');
    assert.ok(closed.at - left < 3000, `the origin's request closed ${closed.at - left} ms after the client left`);
  }

  test('a client that leaves an SSE stream the origin is writing to: the origin\'s request is closed within 3 s', async () => {
    const sessionId = await openSession(stack, token);
    // A tool call whose answer streams a notification every 300 ms for 6 s.
    await expectClientGone(
      (signal) =>
        stack.gate.fetch('/mcp', {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId, ...PROTOCOL },
          body: JSON.stringify(rpc(7, 'tools/call', { name: 'countdown', arguments: { from: 20, interval_ms: 300 } })),
          signal,
        }),
      { firstReads: 1 },
    );
  });

  // A client that leaves an idle stream (the origin sends nothing) is not
  // noticed until the origin next writes: workerd learns that a connection
  // closed only when it writes to it. Documented in the README ("Failure
  // behaviour"); not a test, as there is nothing to wait for.

  test('a client that reads nothing from an endless stream: the origin manages to write only a bounded amount', async (t) => {
    await proxy.set('flood');
    const seen = proxy.requests.length;
    const url = new URL('/mcp', stack.gate.url);
    const request = http.get(url, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', ...PROTOCOL } });
    request.on('error', () => {});
    try {
      const response = await new Promise((resolve, reject) => {
        request.once('response', resolve);
        request.once('error', reject);
        setTimeout(() => reject(new Error('no answer head within 5 s')), 5000);
      });
      // Read nothing: the only pull on the origin is what buffers accept.
      response.pause();
      assert.equal(response.statusCode, 200);
      await sleep(5000);
      const flood = proxy.requests[seen];
      assert.equal(flood?.mode, 'flood');
      assert.ok(flood.bytesWritten > 0, 'the origin started writing');
      assert.ok(flood.bytesWritten < 64 * 1024 ** 2, `the origin wrote ${flood.bytesWritten} bytes to a client that read nothing`);
      t.diagnostic(`the origin wrote ${(flood.bytesWritten / 1024 ** 2).toFixed(1)} MiB in 5 s to a client that read nothing`);
      // Still held back, not merely slow: a second look writes little more.
      const first = flood.bytesWritten;
      await sleep(1000);
      assert.ok(flood.bytesWritten - first < 8 * 1024 ** 2, `${flood.bytesWritten - first} more bytes in 1 s`);
    } finally {
      request.destroy();
    }
    // The client gone, the flood stops.
    await proxy.closed(proxy.requests[seen], { timeoutMs: 3000 });
  });
});
