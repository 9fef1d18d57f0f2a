// A real MCP session through the gate with the official SDK client, and
// what the origin receives: never the client's token, the gate's own
// credential instead, and identity headers the client cannot forge.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets } from './helpers/http.mjs';
import { withTimeout } from './helpers/gate.mjs';

describe('MCP through the gate', () => {
  let stack;
  // Generated per run: a stand-in for the operator's secret.
  const originCredential = `Bearer origin-${randomBytes(18).toString('base64url')}`;

  before(async () => {
    stack = await startStack({ bindings: () => ({ ORIGIN_AUTHORIZATION: originCredential, MCP_REQUIRED_SCOPES: 'invoices:read' }) });
  });

  after(async () => {
    await stack?.close();
  });

  async function connect(token, extraHeaders = {}) {
    const client = new Client({ name: 'portcullis-tests', version: '0.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(stack.resource), {
      requestInit: { headers: { Authorization: `Bearer ${token}`, ...extraHeaders } },
    });
    await withTimeout(client.connect(transport), 10_000, 'initialize');
    return { client, transport };
  }

  test('initialize, tools/list and tools/call with the SDK client, session kept, then DELETE', async () => {
    const token = await stack.issuer.mint({ sub: 'alice', client_id: 'invoice-agent', scope: 'invoices:read invoices:write' });
    const firstRequest = stack.origin.requests.length;
    const { client, transport } = await connect(token);
    try {
      assert.equal(client.getServerVersion()?.name, 'portcullis-demo-origin');
      assert.ok(transport.sessionId, 'Mcp-Session-Id came back through the gate');

      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);

      const lookup = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1002' } });
      assert.equal(lookup.isError, undefined);
      assert.match(lookup.content[0].text, /Globex/);

      const voided = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1003', reason: 'duplicate' } });
      assert.equal(voided.isError, undefined, JSON.stringify(voided));
      assert.match(voided.content[0].text, /voided by alice/);
      assert.equal(stack.origin.invoices.get('INV-1003').status, 'void');

      const whoami = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(whoami.structuredContent, {
        subject: 'alice',
        client_id: 'invoice-agent',
        scopes: 'invoices:read invoices:write',
        authorization_scheme: 'Bearer',
        // What the gate's signed assertion says, verified by the origin.
        assertion: { sub: 'alice', client_id: 'invoice-agent', scope: 'invoices:read invoices:write', mcp_name: 'whoami' },
      });

      const sessionId = transport.sessionId;
      await transport.terminateSession();
      const seen = stack.origin.requests.slice(firstRequest);
      assert.ok(seen.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sessionId), 'DELETE reached the origin');
      assert.equal(stack.origin.sessions.has(sessionId), false);
      // Every request after initialize carried the session id and the protocol version.
      const later = seen.filter((r) => r.method !== 'POST' || !r.body.includes('"initialize"'));
      assert.ok(later.length >= 4);
      for (const r of later) {
        assert.equal(r.headers['mcp-session-id'], sessionId, `${r.method} ${r.body.slice(0, 60)}`);
        assert.ok(r.headers['mcp-protocol-version'], 'MCP-Protocol-Version forwarded');
      }
    } finally {
      await client.close();
    }
  });

  test('the origin never sees the client token; it gets ORIGIN_AUTHORIZATION and the verified identity', async () => {
    const token = await stack.issuer.mint({ sub: 'bob', client_id: 'reporting', scope: 'invoices:read' });
    const firstRequest = stack.origin.requests.length;
    const { client } = await connect(token);
    try {
      await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
    } finally {
      await client.close();
    }
    const seen = stack.origin.requests.slice(firstRequest);
    assert.ok(seen.length >= 3);
    for (const r of seen) {
      assert.equal(r.headers.authorization, originCredential);
      assert.equal(r.headers['x-auth-subject'], 'bob');
      assert.equal(r.headers['x-auth-client-id'], 'reporting');
      assert.equal(r.headers['x-auth-scopes'], 'invoices:read');
    }
    assertNoSecrets(JSON.stringify(seen), [token], 'origin requests');
  });

  test('the write tool refuses a read-only token (the origin relies on X-Auth-Scopes)', async () => {
    const token = await stack.issuer.mint({ scope: 'invoices:read' });
    const { client } = await connect(token);
    try {
      const result = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.equal(result.isError, true);
      assert.equal(stack.origin.invoices.get('INV-1001').status, 'open');
    } finally {
      await client.close();
    }
  });

  test('spoofed X-Auth-* headers are dropped and replaced by the verified identity', async () => {
    const token = await stack.issuer.mint({ sub: 'carol', client_id: undefined, azp: 'carol-app', scope: 'invoices:read' });
    const spoofed = {
      'X-Auth-Subject': 'admin',
      'X-Auth-Client-Id': 'root-client',
      'X-Auth-Scopes': 'invoices:read invoices:write admin',
      'X-Auth-Role': 'superuser',
      'x-auth-subject-extra': 'also-dropped',
    };
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}`, ...spoofed } });
    assert.equal(response.status, 200);
    const { headers } = await response.json();
    assert.equal(headers['x-auth-subject'], 'carol');
    assert.equal(headers['x-auth-client-id'], 'carol-app', 'azp stands in for client_id');
    assert.equal(headers['x-auth-scopes'], 'invoices:read');
    assert.equal(headers['x-auth-role'], undefined);
    assert.equal(headers['x-auth-subject-extra'], undefined);

    // Through the SDK as well: the tool sees the token's identity, not the client's claims.
    const { client } = await connect(token, spoofed);
    try {
      const whoami = await client.callTool({ name: 'whoami', arguments: {} });
      assert.equal(whoami.structuredContent.subject, 'carol');
      assert.equal(whoami.structuredContent.scopes, 'invoices:read');
      const write = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.equal(write.isError, true, 'a spoofed X-Auth-Scopes grants nothing');
    } finally {
      await client.close();
    }
  });

  test('sub-paths and query strings are forwarded; MCP and content headers pass both ways', async () => {
    const token = await stack.issuer.mint();
    const response = await stack.gate.fetch('/mcp/echo?tenant=acme&page=2', {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        'mcp-session-id': 'session-123',
        'mcp-protocol-version': '2025-06-18',
        'last-event-id': 'event-42',
      },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^application\/json/);
    const echo = await response.json();
    assert.equal(echo.method, 'POST');
    assert.equal(echo.path, '/mcp/echo');
    assert.equal(echo.query, '?tenant=acme&page=2');
    assert.equal(echo.body, JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }));
    assert.equal(echo.headers['content-type'], 'application/json');
    assert.equal(echo.headers['mcp-session-id'], 'session-123');
    assert.equal(echo.headers['mcp-protocol-version'], '2025-06-18');
    assert.equal(echo.headers['last-event-id'], 'event-42');
    assert.equal(echo.headers.authorization, originCredential);

    // Response side: the session id header the origin sets reaches the client.
    const init = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({
        jsonrpc: '2.0',
        id: 1,
        method: 'initialize',
        params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } },
      }),
    });
    assert.equal(init.status, 200);
    assert.match(init.headers.get('content-type'), /^text\/event-stream/);
    assert.match(init.headers.get('mcp-session-id') ?? '', /^[0-9a-f-]{36}$/);
    await init.body?.cancel();
  });

  test('the origin gets the request method unchanged (GET, POST, DELETE)', async () => {
    const token = await stack.issuer.mint();
    for (const method of ['GET', 'POST', 'DELETE']) {
      const response = await stack.gate.fetch('/mcp/echo', { method, headers: { authorization: `Bearer ${token}` }, body: method === 'POST' ? '{"jsonrpc":"2.0","id":1,"method":"ping"}' : undefined });
      assert.equal(response.status, 200);
      assert.equal((await response.json()).method, method);
    }
  });

  test('allowed requests are logged with sub and client_id; neither token nor origin secret is ever printed', async () => {
    const token = await stack.issuer.mint({ sub: 'dave', client_id: 'logger-check' });
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
    await response.body?.cancel();
    const [line] = await stack.gate.output.waitFor((l) => l.sub === 'dave');
    assert.equal(line.decision, 'allow');
    assert.equal(line.status, 200);
    assert.equal(line.client_id, 'logger-check');
    assertNoSecrets(stack.gate.output.text, [...stack.issuer.minted, originCredential]);
    assert.ok(!stack.gate.output.text.includes(originCredential.split(' ')[1]));
  });
});
