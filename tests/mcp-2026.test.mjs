// MCP 2026-07-28, black box: the request metadata headers as the revision
// defines them (Streamable HTTP §Request Metadata, §Value Encoding, §Server
// Validation), CORS for the Mcp-Param-* headers a tool's schema asks for,
// scope hierarchies (authorization §Scope Challenge Handling), filtered list
// results private to their token (SEP-2549 `cacheScope`), and no
// offline_access in challenges or metadata (authorization §Refresh Tokens).
// Earlier revisions' requests keep working (mcp.test.mjs,
// mcp-policy.test.mjs).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startIssuer } from '../demo/issuer.mjs';
import { freePort, startGate } from './helpers/gate.mjs';
import { expectOriginUntouched, parseChallenge } from './helpers/http.mjs';
import { closeAll, startStack } from './helpers/stack.mjs';

const MODERN = '2026-07-28';
const APP = 'https://app.example';

/** The revision's per-request metadata, as a 2026-07-28 client puts it in `params._meta`. */
const meta = (version = MODERN) => ({
  'io.modelcontextprotocol/protocolVersion': version,
  'io.modelcontextprotocol/clientInfo': { name: 'tests', version: '0' },
  'io.modelcontextprotocol/clientCapabilities': {},
});

/** The Base64 form of a header value (§Value Encoding). */
const encoded = (value) => `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`;

/** POSTs `body`; a header given as `undefined` is left out. */
function post(gate, token, body, headers = {}) {
  const all = { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers };
  return gate.fetch('/mcp', {
    method: 'POST',
    headers: Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined)),
    body: JSON.stringify(body),
  });
}

describe('MCP 2026-07-28 request metadata headers', () => {
  let stack;
  let token;
  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_ALLOWED_ORIGINS: APP }) });
    token = await stack.issuer.mint({ scope: 'invoices:read' });
  });
  after(() => stack?.close());

  /** A tools/call as a 2026-07-28 client sends it, headers and all. */
  const call = (id, name, { version = MODERN, headers = {} } = {}) => ({
    body: { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {}, _meta: meta(version) } },
    headers: { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': name, ...headers },
  });

  /**
   * Asserts the request reached the origin once (whatever the origin, an
   * SDK server with sessions, makes of it) and was not refused by the gate.
   */
  async function forwarded(label, { body, headers }) {
    const before = stack.origin.requests.length;
    const response = await post(stack.gate, token, body, headers);
    const text = await response.text();
    const requests = stack.origin.requests.slice(before);
    assert.equal(requests.length, 1, `${label}: forwarded once`);
    assert.ok(!text.includes('-32020'), `${label}: ${text}`);
    return requests[0];
  }

  /** Asserts a 400 HeaderMismatch naming the request's id, the origin untouched. */
  async function mismatch(label, { body, headers }) {
    const response = await expectOriginUntouched(stack.origin, () => post(stack.gate, token, body, headers));
    assert.equal(response.status, 400, label);
    const answer = await response.json();
    assert.deepEqual([answer.error?.code, answer.id], [-32020, body.id], label);
  }

  test('a tool whose name is not ASCII is reached through the Base64 form of Mcp-Name', async () => {
    const name = 'résumé_lookup 世界';
    const received = await forwarded('encoded name', call(41, name, { headers: { 'mcp-name': encoded(name) } }));
    assert.equal(received.headers['mcp-name'], encoded(name), 'the header reaches the origin as the client sent it');
  });

  test('an encoded Mcp-Name for another name, or one that is not Base64 UTF-8: 400 -32020 with the id, never forwarded', async () => {
    await mismatch('another name', call(42, 'lookup_invoice', { headers: { 'mcp-name': encoded('void_invoice') } }));
    await mismatch('not base64', call(43, 'lookup_invoice', { headers: { 'mcp-name': '=?base64?not base64!?=' } }));
    await mismatch('not UTF-8', call(44, 'lookup_invoice', { headers: { 'mcp-name': '=?base64?/w==?=' } }));
  });

  test('a 2026-07-28 request must carry every header, its version equal to the body\'s: 400 -32020 with the id', async () => {
    await mismatch('no MCP-Protocol-Version', call(51, 'lookup_invoice', { headers: { 'mcp-protocol-version': undefined } }));
    await mismatch('version differs from _meta', call(52, 'lookup_invoice', { headers: { 'mcp-protocol-version': '2025-11-25' } }));
    await mismatch('no Mcp-Method', call(53, 'lookup_invoice', { headers: { 'mcp-method': undefined } }));
    await mismatch('no Mcp-Name on tools/call', call(54, 'lookup_invoice', { headers: { 'mcp-name': undefined } }));
    const list = {
      body: { jsonrpc: '2.0', id: 55, method: 'tools/list', params: { _meta: meta() } },
      headers: { 'mcp-protocol-version': MODERN },
    };
    await mismatch('no Mcp-Method on tools/list', list);
  });

  test('a complete 2026-07-28 request is forwarded; a request of an earlier revision needs none of the headers', async () => {
    await forwarded('complete', call(61, 'lookup_invoice'));
    await forwarded('2025-06-18', { body: { jsonrpc: '2.0', id: 62, method: 'ping' }, headers: { 'mcp-protocol-version': '2025-06-18' } });
  });

  test('Mcp-Param-* headers that mirror an argument of the call are forwarded; one naming a value the body lacks is 400 -32020', async () => {
    const withArgs = (id, args, headers) => {
      const request = call(id, 'lookup_invoice', { headers });
      request.body.params.arguments = args;
      return request;
    };
    const args = { invoice_id: 'INV-1001', where: { region: 'eu-west1', priority: 3, urgent: false, note: 'für' } };
    const good = { 'mcp-param-region': 'eu-west1', 'mcp-param-priority': '3', 'mcp-param-urgent': 'false', 'mcp-param-note': encoded('für') };
    const received = await forwarded('mirrored', withArgs(71, args, good));
    assert.equal(received.headers['mcp-param-region'], 'eu-west1', 'forwarded as sent');
    await mismatch('a region the body lacks', withArgs(72, args, { 'mcp-param-region': 'us-east1' }));
    await mismatch('not Base64 UTF-8', withArgs(73, args, { 'mcp-param-note': '=?base64?/w==?=' }));
    const list = { body: { jsonrpc: '2.0', id: 74, method: 'tools/list', params: { _meta: meta() } }, headers: { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list', 'mcp-param-region': 'eu-west1' } };
    await mismatch('on a request that has no arguments', list);
  });

  test('a CORS preflight allows the Mcp-Param-* headers the browser asks for, and nothing else it made up', async () => {
    const response = await stack.gate.fetch('/mcp', {
      method: 'OPTIONS',
      headers: {
        origin: APP,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type, mcp-method, mcp-name, mcp-param-region, x-made-up',
      },
    });
    assert.equal(response.status, 204);
    const allowed = response.headers.get('access-control-allow-headers').toLowerCase().split(/,\s*/);
    for (const name of ['authorization', 'mcp-method', 'mcp-name', 'mcp-param-region', 'mcp-protocol-version']) assert.ok(allowed.includes(name), name);
    assert.ok(!allowed.includes('x-made-up'));
  });
});

describe('a minimum protocol revision (MCP_MIN_PROTOCOL_VERSION)', () => {
  let stack;
  let token;
  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_MIN_PROTOCOL_VERSION: '2025-11-25' }) });
    token = await stack.issuer.mint({ scope: 'invoices:read' });
  });
  after(() => stack?.close());

  /** Asserts a 400 UnsupportedProtocolVersionError (-32022) naming what was asked and what is let through. */
  async function unsupported(label, send, { id, requested }) {
    const response = await expectOriginUntouched(stack.origin, send);
    assert.equal(response.status, 400, label);
    const answer = await response.json();
    assert.deepEqual(
      [answer.id, answer.error?.code, answer.error?.data],
      [id, -32022, { supported: ['2025-11-25', MODERN], requested }],
      label,
    );
  }

  test('older revisions are refused with -32022, whether the header, the initialize or nothing names them; never forwarded', async () => {
    const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'old', version: '0' } } };
    await unsupported('initialize offering 2025-06-18', () => post(stack.gate, token, initialize), { id: 1, requested: '2025-06-18' });
    const list = { jsonrpc: '2.0', id: 2, method: 'tools/list' };
    await unsupported('header 2025-06-18', () => post(stack.gate, token, list, { 'mcp-protocol-version': '2025-06-18' }), { id: 2, requested: '2025-06-18' });
    await unsupported('no version at all: 2025-03-26 assumed', () => post(stack.gate, token, list), { id: 2, requested: '2025-03-26' });
    const stream = () => stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
    await unsupported('a GET stream without the header', stream, { id: null, requested: '2025-03-26' });
    const [line] = await stack.gate.output.waitFor((entry) => entry.reason === 'protocol_version_unsupported');
    assert.equal(line.status, 400);
  });

  test('the minimum and later revisions pass', async () => {
    const before = stack.origin.requests.length;
    const initialize = { jsonrpc: '2.0', id: 3, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'new', version: '0' } } };
    const response = await post(stack.gate, token, initialize);
    assert.equal(response.status, 200);
    await response.body?.cancel();
    const discover = { jsonrpc: '2.0', id: 4, method: 'server/discover', params: { _meta: meta() } };
    const modern = await post(stack.gate, token, discover, { 'mcp-protocol-version': MODERN, 'mcp-method': 'server/discover' });
    assert.ok(!(await modern.text()).includes('-32022'));
    assert.equal(stack.origin.requests.length, before + 2);
  });

  test('without the binding every revision passes (mcp.test.mjs runs the earlier revisions)', async () => {
    const plain = await startStack();
    try {
      const old = await plain.issuer.mint({ scope: 'invoices:read' });
      const initialize = { jsonrpc: '2.0', id: 5, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'old', version: '0' } } };
      const response = await post(plain.gate, old, initialize);
      assert.equal(response.status, 200);
      await response.body?.cancel();
    } finally {
      await plain.close();
    }
  });
});

describe('scope hierarchies (MCP_SCOPE_IMPLIES)', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      bindings: () => ({
        MCP_TOOL_SCOPES: JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' }),
        MCP_SCOPES_SUPPORTED: 'invoices:read invoices:write invoices:admin',
        MCP_SCOPE_IMPLIES: JSON.stringify({ 'invoices:write': 'invoices:read', 'invoices:admin': '*' }),
      }),
    });
  });
  after(() => stack?.close());

  /** A session opened with raw requests (the demo origin speaks 2025-06-18). */
  async function session(token) {
    const headers = { 'mcp-protocol-version': '2025-06-18' };
    const init = await post(stack.gate, token, { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '0' } } }, headers);
    assert.equal(init.status, 200);
    await init.text();
    const id = init.headers.get('mcp-session-id');
    const done = await post(stack.gate, token, { jsonrpc: '2.0', method: 'notifications/initialized' }, { ...headers, 'mcp-session-id': id });
    await done.body?.cancel();
    return { ...headers, 'mcp-session-id': id };
  }

  const names = async (response) => {
    const text = await response.text();
    const data = response.headers.get('content-type').startsWith('text/event-stream') ? text.split('\n').find((l) => l.startsWith('data:')).slice(5) : text;
    return JSON.parse(data).result.tools.map((t) => t.name).sort();
  };

  test('a broader scope holds the narrower ones: invoices:write calls the read tool and lists every tool', async () => {
    const writer = await stack.issuer.mint({ scope: 'invoices:write' });
    const headers = await session(writer);
    const lookup = await post(stack.gate, writer, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } } }, headers);
    assert.equal(lookup.status, 200);
    await lookup.body?.cancel();
    const list = await post(stack.gate, writer, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, headers);
    assert.deepEqual(await names(list), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);
    const admin = await stack.issuer.mint({ scope: 'invoices:admin' });
    const adminHeaders = await session(admin);
    const voided = await post(stack.gate, admin, { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'void_invoice', arguments: { invoice_id: 'INV-1002', reason: 'test' } } }, adminHeaders);
    assert.equal(voided.status, 200, '"*" implies every scope of the route');
    await voided.body?.cancel();
  });

  test('the step-up challenge names what the operation needs once: the broader scope, not what it implies', async () => {
    const none = await stack.issuer.mint({ scope: 'profile' });
    const batch = [
      { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } } },
      { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'void_invoice', arguments: { invoice_id: 'INV-1001', reason: 'x' } } },
    ];
    const response = await expectOriginUntouched(stack.origin, () => post(stack.gate, none, batch, { 'mcp-protocol-version': '2025-06-18' }));
    assert.equal(response.status, 403);
    assert.equal(parseChallenge(response.headers.get('www-authenticate')).params.scope, 'invoices:write');
    await response.body?.cancel();
  });
});

/**
 * An origin answering every POST with a tools/list result of the 2026-07-28
 * form (`ttlMs`, `cacheScope: "public"`), as JSON or, when the path ends in
 * /sse, as one SSE event.
 */
async function startListOrigin() {
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const { id } = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      const answer = JSON.stringify({
        jsonrpc: '2.0',
        id,
        result: { tools: [{ name: 'lookup_invoice', inputSchema: { type: 'object' } }, { name: 'void_invoice', inputSchema: { type: 'object' } }], ttlMs: 60000, cacheScope: 'public' },
      });
      if (req.url.endsWith('/sse')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`event: message\ndata: ${answer}\n\n`);
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(answer);
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/mcp`, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('filtered list results and offline_access', () => {
  const closers = [];
  let gate;
  let issuer;
  let resource;
  before(async () => {
    const port = await freePort();
    resource = `http://127.0.0.1:${port}/mcp`;
    issuer = await startIssuer({ audience: resource });
    closers.push(() => issuer.close());
    const origin = await startListOrigin();
    closers.push(() => origin.close());
    gate = await startGate({
      port,
      bindings: {
        MCP_RESOURCE: resource,
        MCP_ORIGIN: origin.url,
        OAUTH_ISSUER: issuer.issuer,
        OAUTH_JWKS_URI: issuer.jwksUri,
        MCP_TOOL_SCOPES: JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write' }),
        MCP_SCOPES_SUPPORTED: 'invoices:read invoices:write offline_access',
        MCP_REQUIRED_SCOPES: 'invoices:read offline_access',
      },
    });
    closers.push(() => gate.close());
  });
  after(() => closeAll(closers));

  const list = (id) => ({ jsonrpc: '2.0', id, method: 'tools/list', params: { _meta: meta() } });
  const listHeaders = { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/list' };

  test('a tools/list the gate filtered says cacheScope "private", in JSON and in SSE, keeping ttlMs', async () => {
    const reader = await issuer.mint({ scope: 'invoices:read offline_access' });
    const json = await post(gate, reader, list(1), listHeaders);
    assert.equal(json.status, 200);
    const { result } = await json.json();
    assert.deepEqual(result.tools.map((t) => t.name), ['lookup_invoice']);
    assert.deepEqual([result.cacheScope, result.ttlMs], ['private', 60000]);

    const sse = await gate.fetch('/mcp/sse', {
      method: 'POST',
      headers: { authorization: `Bearer ${reader}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...listHeaders },
      body: JSON.stringify(list(2)),
    });
    assert.equal(sse.status, 200);
    const data = (await sse.text()).split('\n').find((line) => line.startsWith('data:')).slice(5);
    const event = JSON.parse(data);
    assert.deepEqual(event.result.tools.map((t) => t.name), ['lookup_invoice']);
    assert.equal(event.result.cacheScope, 'private');

    // A token that may call every tool gets every tool, still private to it.
    const writer = await issuer.mint({ scope: 'invoices:read invoices:write offline_access' });
    const all = await (await post(gate, writer, list(3), listHeaders)).json();
    assert.deepEqual([all.result.tools.length, all.result.cacheScope], [2, 'private']);
  });

  test('offline_access is named in no challenge and not in scopes_supported; the configuration that lists it is warned about', async () => {
    const metadata = await (await gate.fetch('/.well-known/oauth-protected-resource/mcp')).json();
    assert.deepEqual(metadata.scopes_supported, ['invoices:read', 'invoices:write']);

    const unauthenticated = await gate.fetch('/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(unauthenticated.status, 401);
    assert.equal(parseChallenge(unauthenticated.headers.get('www-authenticate')).params.scope, 'invoices:read');
    await unauthenticated.body?.cancel();

    const reader = await issuer.mint({ scope: 'invoices:read offline_access' });
    const call = { jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'void_invoice', arguments: {}, _meta: meta() } };
    const stepUp = await post(gate, reader, call, { 'mcp-protocol-version': MODERN, 'mcp-method': 'tools/call', 'mcp-name': 'void_invoice' });
    assert.equal(stepUp.status, 403);
    assert.equal(parseChallenge(stepUp.headers.get('www-authenticate')).params.scope, 'invoices:read invoices:write');
    await stepUp.body?.cancel();

    const warnings = await gate.output.waitFor((line) => line.event === 'config_warning', { count: 2 });
    assert.ok(warnings.some((line) => line.warning.startsWith('MCP_SCOPES_SUPPORTED: ')), JSON.stringify(warnings));
    assert.ok(warnings.some((line) => line.warning.startsWith('MCP_REQUIRED_SCOPES: ')), JSON.stringify(warnings));
  });
});
