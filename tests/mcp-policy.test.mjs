// MCP-aware authorization, black box: per-tool scopes in front of a real SDK
// origin with a read tool and a write tool, the step-up challenge, tools/list
// filtered in JSON and in SSE while streaming, the MCP 2026-07-28 routing
// headers, session binding, body limits, and the audit fields of the log.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, expectOriginUntouched, parseChallenge } from './helpers/http.mjs';
import { withTimeout } from './helpers/gate.mjs';

const TOOL_SCOPES = JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' });
const READ = 'invoices:read';
const WRITE = 'invoices:read invoices:write';
const PROTOCOL = { 'mcp-protocol-version': '2025-06-18' };

const policyBindings = () => ({
  MCP_TOOL_SCOPES: TOOL_SCOPES,
  MCP_METHOD_SCOPES: JSON.stringify({ 'resources/read': 'files:read' }),
  MCP_MAX_BODY_BYTES: '4096',
});

function rpc(id, method, params) {
  return { jsonrpc: '2.0', id, method, ...(params ? { params } : {}) };
}

/** POSTs JSON-RPC `body` to /mcp. */
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
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** Opens a session with raw requests; returns its id. */
async function openSession(stack, token) {
  const init = await post(stack, token, rpc(0, 'initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } }));
  assert.equal(init.status, 200);
  const sessionId = init.headers.get('mcp-session-id');
  assert.ok(sessionId, 'the origin issued a session');
  await init.text();
  const initialized = await post(stack, token, { jsonrpc: '2.0', method: 'notifications/initialized' }, { 'mcp-session-id': sessionId });
  assert.equal(initialized.status, 202);
  await initialized.body?.cancel();
  return sessionId;
}

/** The JSON-RPC messages of a JSON or SSE answer. */
async function messagesOf(response) {
  const text = await response.text();
  if (!(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return [JSON.parse(text)].flat();
  return text
    .split(/\r?\n\r?\n/)
    .map((event) => event.split(/\r?\n/).filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trim()).join('\n'))
    .filter(Boolean)
    .map((data) => JSON.parse(data));
}

function toolNames(messages, id) {
  const answer = messages.find((m) => m.id === id);
  assert.ok(answer?.result?.tools, `no tools/list result for id ${id}: ${JSON.stringify(messages)}`);
  return answer.result.tools.map((tool) => tool.name).sort();
}

async function connect(stack, token) {
  const client = new Client({ name: 'policy-tests', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(stack.resource), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await withTimeout(client.connect(transport), 10_000, 'initialize');
  return { client, transport };
}

describe('per-tool scopes (origin answering in SSE)', () => {
  let stack;
  before(async () => {
    stack = await startStack({ bindings: policyBindings });
  });
  after(() => stack?.close());

  test('a read-only token sees only the tools it may call, and calls the read tool (SDK client)', async () => {
    const { client } = await connect(stack, await stack.issuer.mint({ scope: READ }));
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'whoami']);
      const lookup = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.equal(lookup.isError, undefined, JSON.stringify(lookup));
    } finally {
      await client.close();
    }
  });

  test('a write-scoped token sees every tool', async () => {
    const { client } = await connect(stack, await stack.issuer.mint({ scope: WRITE }));
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);
    } finally {
      await client.close();
    }
  });

  test('the write tool with a read-only token: 403 naming the write scope, origin untouched; step-up then succeeds', async () => {
    const reader = await stack.issuer.mint({ sub: 'alice', client_id: 'agent', scope: READ });
    const sessionId = await openSession(stack, reader);
    const call = rpc(5, 'tools/call', { name: 'void_invoice', arguments: { invoice_id: 'INV-1002', reason: 'test' } });
    const refused = await expectOriginUntouched(stack.origin, () => post(stack, reader, call, { 'mcp-session-id': sessionId }));
    assert.equal(refused.status, 403);
    const challenge = parseChallenge(refused.headers.get('www-authenticate')).params;
    assert.equal(challenge.error, 'insufficient_scope');
    assert.equal(challenge.scope, 'invoices:write');
    assert.equal(challenge.resource_metadata, `${stack.base}/.well-known/oauth-protected-resource/mcp`);
    await refused.body?.cancel();
    const before = stack.origin.invoices.get('INV-1002').status;
    assert.notEqual(before, 'void');

    // Re-authorized for exactly the challenged scope (same user and client): the call goes through.
    const stepped = await stack.issuer.mint({ sub: 'alice', client_id: 'agent', scope: `${READ} ${challenge.scope}` });
    const allowed = await post(stack, stepped, call, { 'mcp-session-id': sessionId });
    assert.equal(allowed.status, 200);
    const [result] = await messagesOf(allowed);
    assert.equal(result.result?.isError, undefined, JSON.stringify(result));
    assert.equal(stack.origin.invoices.get('INV-1002').status, 'void');
  });

  test('a batch with one forbidden call is refused whole; the challenge names every scope the batch needs', async () => {
    const reader = await stack.issuer.mint({ scope: READ });
    const sessionId = await openSession(stack, reader);
    const batch = [
      rpc(1, 'tools/call', { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } }),
      rpc(2, 'tools/call', { name: 'void_invoice', arguments: { invoice_id: 'INV-1001', reason: 'x' } }),
      rpc(3, 'resources/read', { uri: 'invoice://INV-1001' }),
    ];
    const refused = await expectOriginUntouched(stack.origin, () => post(stack, reader, batch, { 'mcp-session-id': sessionId }));
    assert.equal(refused.status, 403);
    assert.equal(parseChallenge(refused.headers.get('www-authenticate')).params.scope, 'files:read invoices:read invoices:write');
    await refused.body?.cancel();
  });

  test('tools/list over SSE is filtered while the stream keeps flowing event by event', async () => {
    const reader = await stack.issuer.mint({ scope: READ });
    const sessionId = await openSession(stack, reader);
    const started = Date.now();
    const response = await post(
      stack,
      reader,
      [rpc('list', 'tools/list'), rpc('count', 'tools/call', { name: 'countdown', arguments: { from: 4 }, _meta: { progressToken: 'p' } })],
      { 'mcp-session-id': sessionId },
    );
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);
    const arrivals = [];
    const decoder = new TextDecoder();
    let text = '';
    for await (const chunk of response.body) {
      text += decoder.decode(chunk, { stream: true });
      arrivals.push({ at: Date.now() - started, progress: (text.match(/notifications\/progress/g) ?? []).length });
    }
    const firstProgress = arrivals.find((a) => a.progress > 0);
    const last = arrivals.at(-1);
    assert.ok(firstProgress, 'progress events arrived');
    assert.ok(last.at - firstProgress.at >= 600, `events did not stream: ${JSON.stringify(arrivals)}`);
    const messages = text
      .split(/\r?\n\r?\n/)
      .map((e) => e.split(/\r?\n/).filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n'))
      .filter(Boolean)
      .map((d) => JSON.parse(d));
    assert.deepEqual(toolNames(messages, 'list'), ['countdown', 'lookup_invoice', 'whoami']);
    assert.ok(!text.includes('void_invoice'), 'the forbidden tool name never reaches the client');
  });

  test('Mcp-Method / Mcp-Name that disagree with the body: 400 (-32020) with the request id, never forwarded', async () => {
    const writer = await stack.issuer.mint({ scope: WRITE });
    const sessionId = await openSession(stack, writer);
    const call = rpc(9, 'tools/call', { name: 'void_invoice', arguments: { invoice_id: 'INV-1003', reason: 'x' } });
    for (const headers of [
      { 'mcp-method': 'tools/list' },
      { 'mcp-method': 'tools/call', 'mcp-name': 'lookup_invoice' },
      { 'mcp-name': 'lookup_invoice' },
    ]) {
      const response = await expectOriginUntouched(stack.origin, () => post(stack, writer, call, { 'mcp-session-id': sessionId, ...headers }));
      assert.equal(response.status, 400, JSON.stringify(headers));
      const answer = await response.json();
      assert.equal(answer.error.code, -32020);
      assert.equal(answer.id, 9, 'the error names the request it refuses');
    }
    const matching = await post(stack, writer, rpc(10, 'tools/call', { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1003' } }), {
      'mcp-session-id': sessionId,
      'mcp-method': 'tools/call',
      'mcp-name': 'lookup_invoice',
    });
    assert.equal(matching.status, 200);
    await matching.body?.cancel();
  });

  test("another subject's or client's token presenting a session: 404, never forwarded; the owner goes on", async () => {
    const alice = await stack.issuer.mint({ sub: 'alice', client_id: 'agent', scope: WRITE });
    const sessionId = await openSession(stack, alice);
    for (const thief of [
      await stack.issuer.mint({ sub: 'mallory', client_id: 'agent', scope: WRITE }),
      await stack.issuer.mint({ sub: 'alice', client_id: 'other-app', scope: WRITE }),
    ]) {
      for (const [method, body] of [['POST', JSON.stringify(rpc(1, 'tools/list'))], ['GET', undefined], ['DELETE', undefined]]) {
        const response = await expectOriginUntouched(stack.origin, () =>
          stack.gate.fetch('/mcp', {
            method,
            headers: { authorization: `Bearer ${thief}`, 'mcp-session-id': sessionId, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...PROTOCOL },
            body,
          }),
        );
        assert.equal(response.status, 404, method);
        assert.equal((await response.json()).error.code, -32001);
      }
    }
    const owner = await post(stack, alice, rpc(2, 'tools/list'), { 'mcp-session-id': sessionId });
    assert.equal(owner.status, 200);
    await owner.body?.cancel();
    // A session never replaces the token.
    const tokenless = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', { method: 'POST', headers: { 'mcp-session-id': sessionId, 'content-type': 'application/json' }, body: JSON.stringify(rpc(3, 'tools/list')) }),
    );
    assert.equal(tokenless.status, 401);
    await tokenless.body?.cancel();
  });

  test('bodies over MCP_MAX_BODY_BYTES: 413, with or without Content-Length, never forwarded', async () => {
    const token = await stack.issuer.mint({ scope: WRITE });
    const big = JSON.stringify(rpc(1, 'tools/call', { name: 'lookup_invoice', arguments: { invoice_id: 'x'.repeat(5000) } }));
    const declared = await expectOriginUntouched(stack.origin, () => post(stack, token, big));
    assert.equal(declared.status, 413);
    await declared.body?.cancel();
    const encoder = new TextEncoder();
    const streamed = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', {
        method: 'POST',
        duplex: 'half',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: new ReadableStream({
          start(controller) {
            for (let i = 0; i < big.length; i += 1000) controller.enqueue(encoder.encode(big.slice(i, i + 1000)));
            controller.close();
          },
        }),
      }),
    );
    assert.equal(streamed.status, 413);
    await streamed.body?.cancel();
  });

  test('bodies that are not JSON or not JSON-RPC: 400 with a JSON-RPC error, never forwarded', async () => {
    const token = await stack.issuer.mint({ scope: WRITE });
    for (const [body, code] of [
      ['not json', -32700],
      ['{"hello":"world"}', -32600],
      ['[]', -32600],
      ['{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}', -32602],
    ]) {
      const response = await expectOriginUntouched(stack.origin, () => post(stack, token, body));
      assert.equal(response.status, 400, body);
      assert.equal((await response.json()).error.code, code, body);
    }
  });

  test('the log line names the method, the tool and the scopes required versus held; no token', async () => {
    const reader = await stack.issuer.mint({ sub: 'auditor', scope: READ });
    const response = await post(stack, reader, rpc(1, 'tools/call', { name: 'void_invoice', arguments: {} }));
    await response.body?.cancel();
    const [line] = await stack.gate.output.waitFor((l) => l.event === 'request' && l.sub === 'auditor');
    assert.equal(line.status, 403);
    assert.equal(line.reason, 'insufficient_scope');
    assert.deepEqual(line.rpc, { methods: ['tools/call'], tools: ['void_invoice'], required_scopes: ['invoices:write'] });
    assert.equal(line.scopes, READ);
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
  });
});

describe('per-tool scopes (origin answering in plain JSON)', () => {
  let stack;
  before(async () => {
    stack = await startStack({ origin: { jsonResponse: true }, bindings: policyBindings });
  });
  after(() => stack?.close());

  test('a JSON tools/list answer is filtered, and the SDK client reads it', async () => {
    const reader = await stack.issuer.mint({ scope: READ });
    const sessionId = await openSession(stack, reader);
    const response = await post(stack, reader, [rpc('a', 'tools/list'), rpc('b', 'ping')], { 'mcp-session-id': sessionId });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^application\/json/);
    const messages = await messagesOf(response);
    assert.deepEqual(toolNames(messages, 'a'), ['countdown', 'lookup_invoice', 'whoami']);
    assert.deepEqual(messages.find((m) => m.id === 'b').result, {});

    const { client } = await connect(stack, reader);
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'whoami']);
    } finally {
      await client.close();
    }
  });
});
