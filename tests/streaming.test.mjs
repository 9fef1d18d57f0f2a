// Server-Sent Events through the gate arrive one by one, as the origin sends
// them, not buffered until the response ends; and a stream ends when the
// token that opened it stops being accepted (MCP 2026-07-28: long-lived
// streams must not outlive their authorization).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { startIssuer } from '../demo/issuer.mjs';
import { closeAll, startStack } from './helpers/stack.mjs';
import { freePort, startGate, withTimeout } from './helpers/gate.mjs';
import { takeSseData } from './helpers/http.mjs';

const STEPS = 5;
const INTERVAL_MS = 300;

/** Reads an SSE body, timestamping each complete event as it arrives. */
async function readEvents(response, { timeoutMs = 15_000 } = {}) {
  const started = Date.now();
  const events = [];
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = response.body.getReader();
  const deadline = setTimeout(() => reader.cancel(new Error('SSE read timed out')), timeoutMs);
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      let data;
      [data, buffer] = takeSseData(buffer + decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n'));
      for (const text of data) events.push({ at: Date.now() - started, message: JSON.parse(text) });
    }
  } finally {
    clearTimeout(deadline);
  }
  return events;
}

/** Checks that `times` (ms, ascending) are spread out the way the origin sent them. */
function assertSpread(times, label) {
  assert.ok(times.length >= STEPS, `${label}: expected at least ${STEPS} events, got ${times.length}`);
  const first = times[0];
  const last = times[times.length - 1];
  // The origin spaces the notifications INTERVAL_MS apart: the first must
  // arrive long before the last, and the gaps must not collapse to nothing.
  assert.ok(last - first >= (STEPS - 2) * INTERVAL_MS, `${label}: events bunched together: ${times.join(', ')}`);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const spaced = gaps.filter((gap) => gap >= INTERVAL_MS / 3).length;
  assert.ok(spaced >= STEPS - 2, `${label}: too few spaced arrivals: ${times.join(', ')}`);
}

describe('SSE streaming through the gate', () => {
  let stack;
  let token;

  before(async () => {
    stack = await startStack({ origin: { countdownIntervalMs: INTERVAL_MS } });
    token = await stack.issuer.mint();
  });

  after(async () => {
    await stack?.close();
  });

  const headers = () => ({
    authorization: `Bearer ${token}`,
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
  });

  test('raw fetch: each progress event arrives when the origin sends it', async () => {
    const init = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: headers(),
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'sse-probe', version: '0' } },
      }),
    });
    assert.equal(init.status, 200);
    const sessionId = init.headers.get('mcp-session-id');
    assert.ok(sessionId);
    const [initResult] = await readEvents(init);
    assert.equal(initResult.message.id, 1);
    const protocol = { 'mcp-session-id': sessionId, 'mcp-protocol-version': initResult.message.result.protocolVersion };

    const initialized = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { ...headers(), ...protocol },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    assert.equal(initialized.status, 202);
    await initialized.body?.cancel();

    const started = Date.now();
    const call = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { ...headers(), ...protocol },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 2,
        method: 'tools/call',
        params: { name: 'countdown', arguments: { from: STEPS }, _meta: { progressToken: 'p-1' } },
      }),
    });
    const headersAfter = Date.now() - started;
    assert.equal(call.status, 200);
    assert.match(call.headers.get('content-type'), /^text\/event-stream/);
    // The response starts before the tool finishes.
    assert.ok(headersAfter < STEPS * INTERVAL_MS - INTERVAL_MS, `headers took ${headersAfter} ms`);

    const events = await readEvents(call);
    const progress = events.filter((e) => e.message.method === 'notifications/progress');
    const result = events.find((e) => e.message.id === 2);
    assert.equal(progress.length, STEPS);
    assert.deepEqual(progress.map((e) => e.message.params.progress), [1, 2, 3, 4, 5]);
    assert.ok(result, 'the tool result arrives on the same stream');
    assert.match(result.message.result.content[0].text, /Liftoff/);
    assertSpread(progress.map((e) => e.at), 'raw');
    assert.ok(result.at - progress[0].at >= (STEPS - 1) * INTERVAL_MS * 0.8, 'first event well before the result');

    const closed = await stack.gate.fetch('/mcp', { method: 'DELETE', headers: { ...headers(), ...protocol } });
    assert.equal(closed.status, 200);
    await closed.body?.cancel();
  });

  test('POST bodies are read and authorized whole before the origin sees any of them', async () => {
    const encoder = new TextEncoder();
    const pause = 800;
    const body = new ReadableStream({
      async start(controller) {
        controller.enqueue(encoder.encode('{"jsonrpc":"2.0",'));
        await new Promise((resolve) => setTimeout(resolve, pause));
        controller.enqueue(encoder.encode('"id":1,"method":"ping"}'));
        controller.close();
      },
    });
    const started = Date.now();
    const response = await stack.gate.fetch('/mcp/echo', {
      method: 'POST',
      body,
      duplex: 'half',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).body, '{"jsonrpc":"2.0","id":1,"method":"ping"}');
    const seen = stack.origin.requests.at(-1);
    // The per-tool policy needs the whole JSON-RPC body, so nothing is sent before it is complete.
    assert.ok(seen.at - started >= pause * 0.9, `origin got the request ${seen.at - started} ms in, before the body was complete`);
  });

  test('SDK client: progress callbacks fire spread over time, before the result', async () => {
    const client = new Client({ name: 'sse-sdk', version: '0' });
    const transport = new StreamableHTTPClientTransport(new URL(stack.resource), {
      requestInit: { headers: { Authorization: `Bearer ${token}` } },
    });
    await withTimeout(client.connect(transport), 10_000, 'initialize');
    try {
      const started = Date.now();
      const times = [];
      const logs = [];
      client.setNotificationHandler(LoggingMessageNotificationSchema, (notification) =>
        logs.push({ at: Date.now() - started, data: notification.params.data }),
      );
      const result = await client.callTool({ name: 'countdown', arguments: { from: STEPS } }, undefined, {
        onprogress: () => times.push(Date.now() - started),
        timeout: 15_000,
      });
      const finished = Date.now() - started;
      assert.match(result.content[0].text, /Liftoff/);
      assertSpread(times, 'sdk progress');
      assertSpread(logs.map((l) => l.at), 'sdk logging');
      assert.deepEqual(logs.map((l) => l.data), ['T-4', 'T-3', 'T-2', 'T-1', 'T-0']);
      assert.ok(finished - times[0] >= (STEPS - 1) * INTERVAL_MS * 0.8, `first progress at ${times[0]} ms, result at ${finished} ms`);
    } finally {
      await client.close();
    }
  });
});

/**
 * An origin whose every answer is an event stream that never ends on its
 * own (a `subscriptions/listen` or a standing GET): one event each 200 ms.
 * `closed` counts the streams whose connection went away.
 */
async function startEndlessOrigin() {
  const state = { opened: 0, closed: 0 };
  const server = http.createServer((req, res) => {
    state.opened += 1;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
    let n = 0;
    const timer = setInterval(() => res.write(`event: message\ndata: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":${n++}}}\n\n`), 200);
    res.on('close', () => {
      clearInterval(timer);
      state.closed += 1;
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/mcp`,
    state,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe('a stream ends when its token does', () => {
  const closers = [];
  let gate;
  let issuer;
  let origin;
  before(async () => {
    const port = await freePort();
    const resource = `http://127.0.0.1:${port}/mcp`;
    issuer = await startIssuer({ audience: resource });
    closers.push(() => issuer.close());
    origin = await startEndlessOrigin();
    closers.push(() => origin.close());
    gate = await startGate({
      port,
      bindings: { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri, JWT_LEEWAY_SECONDS: '1' },
    });
    closers.push(() => gate.close());
  });
  after(() => closeAll(closers));

  test('a GET stream opened with a token that expires is closed at exp + leeway, for the client and the origin', async () => {
    const exp = Math.floor(Date.now() / 1000) + 3;
    const token = await issuer.mint({ scope: 'invoices:read', exp });
    const response = await gate.fetch('/mcp', {
      headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream', 'mcp-protocol-version': '2025-11-25' },
    });
    assert.equal(response.status, 200);
    const events = await readEvents(response, { timeoutMs: 15_000 });
    const ended = Date.now();
    // Ended by the gate at exp + 1 s (leeway), not by the read timeout.
    assert.ok(ended >= (exp + 1) * 1000 - 50, `ended ${(exp + 1) * 1000 - ended} ms before exp + leeway`);
    assert.ok(ended <= (exp + 1) * 1000 + 2000, `ended ${ended - (exp + 1) * 1000} ms after exp + leeway`);
    assert.ok(events.length >= 5, `events flowed until then (${events.length})`);
    const deadline = Date.now() + 2000;
    while (origin.state.closed < origin.state.opened && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(origin.state.closed, origin.state.opened, "the origin's stream was closed too");
    await gate.output.waitFor((line) => line.event === 'stream_ended');

    // Reconnecting with the same token is refused: it has expired.
    const again = await gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
    assert.equal(again.status, 401);
    await again.body?.cancel();
  });
});
