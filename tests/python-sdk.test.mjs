// Real MCP 2026-07-28 on both sides of the gate: the official MCP Python SDK
// (`mcp` 2.3.0, pinned in tests/python/requirements.txt, installed into .venv
// by `npm run setup`) as the client (tests/python/mcp_client.py) and as the
// origin (tests/python/origin_server.py, MCPServer, stateless Streamable HTTP).
// That SDK speaks the newest revision: server/discover instead of initialize,
// no sessions, the `_meta` envelope on every request, Mcp-Method / Mcp-Name /
// Mcp-Param-* headers (non-ASCII names in their `=?base64?…?=` form), and
// multi-round-trip calls carrying requestState, so what the gate does to each
// of those is tested with the code users run, not with hand-built requests
// (those are in mcp-2026.test.mjs). Then the SDK's own OAuth flow against
// oidc-provider with step-up, and a matrix by protocol revision: the
// TypeScript SDK at 2025-06-18 and 2025-11-25 against the demo origin
// (sessions), the Python SDK at 2026-07-28 (and, in its legacy mode, at
// 2025-11-25) against the Python origin, all through one gate.
// The gate seals the origin's requestState to its user (MCP_STATE_SECRET, set
// by the stack), so the SDK's multi round trip passes through the sealing and
// a state replayed by another user is refused before the origin.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { SCOPES } from '../demo/authorization-server.mjs';
import { assertNoSecrets, parseChallenge } from './helpers/http.mjs';
import { TOOL_SCOPES, assertInOrder, startOAuthStack } from './helpers/oauth.mjs';
import { assertVenv, runPythonClient, startPythonOrigin } from './helpers/python.mjs';
import { closeAll, startStack } from './helpers/stack.mjs';

const MODERN = '2026-07-28';
/** The route policy of every gate here (the Python origin's void_invoice is its write tool). */
const POLICY = { scopes_supported: SCOPES, required_scopes: 'invoices:read', tool_scopes: JSON.parse(TOOL_SCOPES) };
/** Every tool of the Python origin a read-only token may call. */
const READ_TOOLS = ['café', 'confirm_echo', 'echo', 'forecast', 'whoami'];
/** The Base64 form of a header value (2026-07-28 Streamable HTTP §Value Encoding). */
const encoded = (value) => `=?base64?${Buffer.from(value, 'utf8').toString('base64')}?=`;
/** A compact JWS anywhere in a text: what must never reach the origin. */
const JWT_LIKE = /eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+/;

/** The outcome of each operation of a client summary, by position; errors fail with the whole summary. */
function results(summary) {
  assert.equal(summary.error, undefined, `the client failed: ${JSON.stringify(summary)}`);
  return summary.operations.map((outcome) => {
    assert.equal(outcome.error, undefined, `${outcome.op} ${outcome.name ?? ''}: ${JSON.stringify(outcome.error)}`);
    return outcome.result;
  });
}

/** The JSON a tool of the Python origin answered with. */
const parsed = (result) => JSON.parse(result.texts[0]);

/** Asserts the Python origin saw no token in any request since `from`, and the gate's identity on each. */
async function assertOriginSawNoToken(python, from, { subject, secrets = [] }) {
  const { requests } = await python.record();
  const seen = requests.slice(from).filter((r) => r.path.startsWith('/mcp'));
  assert.ok(seen.length > 0, 'the origin was reached');
  for (const request of seen) {
    assert.equal(request.headers.authorization, undefined, `Authorization reached the origin: ${request.body.slice(0, 200)}`);
    assert.equal(request.headers['x-auth-subject'], subject);
  }
  // The gate's own signed assertion is a JWT by design; no other may reach the origin.
  const text = JSON.stringify(seen.map((r) => ({ ...r, headers: { ...r.headers, 'portcullis-assertion': undefined } })));
  assert.doesNotMatch(text, JWT_LIKE, 'a JWT reached the origin');
  assertNoSecrets(text, secrets, 'what the origin received');
  return seen;
}

/**
 * Sends one 2026-07-28 request as a client would, headers and `_meta`
 * envelope included, without an SDK (which would not let a test change the
 * token between rounds or send wrong headers); the status, the text and the
 * JSON-RPC answer, whether it came as JSON or as an event.
 */
async function sendModern(gate, token, { id, method, params = {}, headers = {}, capabilities = {} }) {
  const meta = {
    'io.modelcontextprotocol/protocolVersion': MODERN,
    'io.modelcontextprotocol/clientInfo': { name: 'raw', version: '0' },
    'io.modelcontextprotocol/clientCapabilities': capabilities,
  };
  const response = await gate.fetch('/mcp', {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': MODERN,
      'mcp-method': method,
      ...headers,
    },
    body: JSON.stringify({ jsonrpc: '2.0', id, method, params: { ...params, _meta: meta } }),
  });
  const text = await response.text();
  const data = response.headers.get('content-type')?.startsWith('text/event-stream') ? text.split('\n').find((l) => l.startsWith('data:'))?.slice(5) : text;
  return { status: response.status, text, answer: data?.startsWith('{') ? JSON.parse(data) : undefined };
}

describe('MCP Python SDK client and origin through the gate (static tokens), and the revision matrix', () => {
  let python;
  let stack;
  let legacyResource;
  const closers = [];

  before(async () => {
    assertVenv();
    python = await startPythonOrigin();
    closers.push(() => python.close());
    // One gate, two routes: the Python origin (2026-07-28) and the TypeScript
    // SDK demo origin (sessions, 2025-*), as an operator fronting both would.
    stack = await startStack({
      bindings: ({ base, resource, origin }) => {
        legacyResource = `${base}/legacy/mcp`;
        return {
          MCP_RESOURCE: undefined,
          MCP_ORIGIN: undefined,
          MCP_ROUTES: JSON.stringify([
            { resource, origin: python.url, ...POLICY },
            { resource: legacyResource, origin: origin.url, ...POLICY },
          ]),
        };
      },
    });
    closers.push(() => stack.close());
  });

  after(() => closeAll(closers));

  test('static token: discover, list, call (ASCII and non-ASCII names, Mcp-Param-*, multi-round trip), resource, prompt', async () => {
    // Straight to the origin (no gate) the list is every tool, and public.
    const [unfiltered] = results(await runPythonClient(python.url, { plan: [{ op: 'list_tools' }] }));
    assert.deepEqual([unfiltered.tools.length, unfiltered.cache_scope, unfiltered.ttl_ms], [READ_TOOLS.length + 1, 'public', 60000]);

    const token = await stack.issuer.mint({ sub: 'py-static-user', scope: 'invoices:read' });
    const { requests: earlier } = await python.record();
    const summary = await runPythonClient(stack.resource, {
      token,
      plan: [
        { op: 'list_tools' },
        { op: 'call', name: 'echo', arguments: { text: 'hello through the gate' } },
        { op: 'call', name: 'café', arguments: { order: 'crème' } },
        { op: 'call', name: 'forecast', arguments: { city: 'Oslo', region: 'eu-north' } },
        { op: 'call', name: 'whoami' },
        { op: 'call', name: 'confirm_echo', arguments: { text: 'twice' } },
        { op: 'read', uri: 'notes://welcome' },
        { op: 'list_prompts' },
        { op: 'prompt', name: 'résumé', arguments: { topic: 'gates' } },
      ],
    });
    const [list, echo, cafe, forecast, whoami, confirmed, resource, prompts, prompt] = results(summary);

    assert.equal(summary.protocol_version, MODERN, 'negotiated by server/discover');
    // Filtered for a read-only token, and so private to it, the origin's ttlMs kept.
    assert.deepEqual(list.tools.sort(), READ_TOOLS);
    assert.deepEqual([list.cache_scope, list.ttl_ms], ['private', 60000]);
    assert.deepEqual(echo.texts, ['hello through the gate']);
    assert.deepEqual(parsed(cafe), { served: 'un crème', mcp_name: encoded('café') }, 'the encoded Mcp-Name passed as sent');
    assert.deepEqual(parsed(forecast), { city: 'Oslo', region: 'eu-north', mcp_param_region: 'eu-north' });
    assert.deepEqual(parsed(whoami), {
      subject: 'py-static-user',
      client_id: 'demo-client',
      scopes: 'invoices:read',
      authorization_received: false,
      protocol_version: MODERN,
    });
    assert.deepEqual(confirmed.texts, ['confirmed: twice']);
    assert.deepEqual(resource.texts, ['Welcome behind the gate.']);
    assert.deepEqual(prompts.prompts, ['résumé']);
    assert.deepEqual(prompt.texts, ['Summarize gates.']);

    // What the client sent: the revision's headers, every answer a 200.
    const sent = (operation) => summary.http.filter((e) => e.operation === operation);
    assert.deepEqual(summary.http.map((e) => e.status).filter((s) => s !== 200), [], JSON.stringify(summary.http));
    assert.deepEqual(sent('connect').map((e) => e.headers), [{ 'mcp-protocol-version': MODERN, 'mcp-method': 'server/discover' }]);
    assert.equal(sent(2)[0].headers['mcp-name'], encoded('café'));
    assert.equal(sent(3)[0].headers['mcp-param-region'], 'eu-north');
    assert.equal(sent(8)[0].headers['mcp-name'], encoded('résumé'));
    // Two rounds: the InputRequiredResult, then the retry with the answer and its requestState.
    assert.equal(sent(5).length, 2);

    // What the origin received: never the token, always the gate's identity,
    // the retry carrying the requestState the origin minted.
    const seen = await assertOriginSawNoToken(python, earlier.length, { subject: 'py-static-user', secrets: [token] });
    assert.ok(seen.every((r) => r.headers['mcp-protocol-version'] === MODERN && r.headers['mcp-session-id'] === undefined));
    const confirmRounds = seen.filter((r) => r.body.includes('"confirm_echo"')).map((r) => JSON.parse(r.body).params);
    assert.equal(confirmRounds.length, 2);
    assert.equal(confirmRounds[0].requestState, undefined);
    assert.equal(typeof confirmRounds[1].requestState, 'string');
    assert.ok(confirmRounds[1].inputResponses, 'the user answer went with the retry');

    const logs = await stack.gate.output.waitFor((l) => l.sub === 'py-static-user', { count: summary.http.length });
    assert.deepEqual(new Set(logs.map((l) => `${l.decision} ${l.route}`)), new Set(['allow /mcp']));
  });

  test('no token: 401 with the challenge, nothing forwarded', async () => {
    const { requests: earlier } = await python.record();
    const summary = await runPythonClient(stack.resource, { plan: [{ op: 'list_tools' }] });
    assert.ok(summary.error, 'the client could not connect');
    assert.ok(summary.http.length > 0);
    for (const exchange of summary.http) {
      assert.equal(exchange.status, 401, JSON.stringify(exchange));
      const { scheme, params } = parseChallenge(exchange.www_authenticate);
      assert.equal(scheme, 'Bearer');
      assert.equal(params.resource_metadata, `${stack.base}/.well-known/oauth-protected-resource/mcp`);
      assert.equal(params.scope, 'invoices:read');
      assert.equal(params.error, undefined, 'no error code without credentials (RFC 6750 §3.1)');
    }
    assert.equal((await python.record()).requests.length, earlier.length, 'the origin untouched');
    const denials = stack.gate.requestLogs().filter((l) => l.reason === 'no_credentials');
    assert.ok(denials.length >= summary.http.length && denials.every((l) => l.status === 401));
  });

  test('a read-only token calling the write tool: 403 insufficient_scope naming invoices:write, the origin untouched; a writer passes', async () => {
    const reader = await stack.issuer.mint({ sub: 'py-reader', scope: 'invoices:read' });
    const before = await python.record();
    const summary = await runPythonClient(stack.resource, {
      token: reader,
      plan: [{ op: 'call', name: 'void_invoice', arguments: { invoice_id: 'INV-PY-1' } }],
    });
    assert.equal(summary.error, undefined, JSON.stringify(summary.error));
    const [refused] = summary.operations;
    assert.ok(refused.error, 'the call failed');
    const exchanges = summary.http.filter((e) => e.operation === 0);
    assert.deepEqual(exchanges.map((e) => e.status), [403]);
    const { params } = parseChallenge(exchanges[0].www_authenticate);
    assert.equal(params.error, 'insufficient_scope');
    assert.ok(params.scope.split(' ').includes('invoices:write'), params.scope);
    assert.equal(params.resource_metadata, `${stack.base}/.well-known/oauth-protected-resource/mcp`);
    const after = await python.record();
    assert.deepEqual(after.voided, before.voided, 'nothing voided');
    assert.ok(!after.requests.slice(before.requests.length).some((r) => r.body.includes('void_invoice')), 'the call never reached the origin');
    const [denial] = await stack.gate.output.waitFor((l) => l.sub === 'py-reader' && l.decision === 'deny');
    assert.deepEqual([denial.status, denial.reason, denial.rpc.tools], [403, 'insufficient_scope', ['void_invoice']]);

    const writer = await stack.issuer.mint({ sub: 'py-writer', scope: 'invoices:read invoices:write' });
    const allowed = await runPythonClient(stack.resource, {
      token: writer,
      plan: [{ op: 'list_tools' }, { op: 'call', name: 'void_invoice', arguments: { invoice_id: 'INV-PY-2' } }],
    });
    const [list, voided] = results(allowed);
    assert.ok(list.tools.includes('void_invoice'));
    assert.deepEqual(voided.texts, ['voided INV-PY-2']);
    assert.deepEqual((await python.record()).voided, [...before.voided, 'INV-PY-2']);
  });

  test('a requestState handed to one user is refused for another, and altered or unsealed ones for anyone: 400 -32602, never forwarded; its owner completes the call', async () => {
    // Raw requests, as a 2026-07-28 client sends them: the SDK client cannot
    // change its token between the two rounds of one call, an attacker can.
    const call = (token, id, params) =>
      sendModern(stack.gate, token, {
        id,
        method: 'tools/call',
        params: { name: 'confirm_echo', arguments: { text: 'for alice only' }, ...params },
        headers: { 'mcp-name': 'confirm_echo' },
        capabilities: { elicitation: { form: {} } },
      });
    const alice = await stack.issuer.mint({ sub: 'alice', scope: 'invoices:read' });
    const bob = await stack.issuer.mint({ sub: 'bob', scope: 'invoices:read' });

    const first = await call(alice, 1, {});
    assert.equal(first.status, 200, first.text);
    const { requestState, inputRequests } = first.answer.result;
    assert.equal(typeof requestState, 'string', 'an InputRequiredResult');
    const retry = { requestState, inputResponses: Object.fromEntries(Object.keys(inputRequests).map((key) => [key, { action: 'accept', content: { confirm: true } }])) };

    const before = (await python.record()).requests.length;
    const stolen = await call(bob, 2, retry);
    assert.ok(stolen.status >= 400 && stolen.status < 500, `bob's retry with alice's requestState: ${stolen.status} ${stolen.text.slice(0, 300)}`);
    // Alice herself with the state altered, or with a state the gate never sealed.
    const altered = `${requestState.slice(0, -1)}${requestState.endsWith('A') ? 'B' : 'A'}`;
    for (const [label, id, state] of [['altered', 4, altered], ['unsealed', 5, 'origin-made-up']]) {
      const refused = await call(alice, id, { ...retry, requestState: state });
      assert.equal(refused.status, 400, `${label}: ${refused.text}`);
      assert.deepEqual([refused.answer.id, refused.answer.error.code, refused.answer.error.message], [id, -32602, 'Invalid or expired requestState'], label);
    }
    assert.equal((await python.record()).requests.length, before, 'never forwarded');

    const own = await call(alice, 3, retry);
    assert.equal(own.status, 200, own.text);
    assert.deepEqual(own.answer.result.content.map((c) => c.text), ['confirmed: for alice only']);
  });

  test("Mcp-Param-* checked by the tool's schema once the gate has seen it listed: another argument's value, or no header for a marked argument, is 400 -32020, never forwarded", async () => {
    const token = await stack.issuer.mint({ sub: 'carol', scope: 'invoices:read' });
    const send = (id, method, params, headers) => sendModern(stack.gate, token, { id, method, params, headers });
    const forecast = (id, headers) => send(id, 'tools/call', { name: 'forecast', arguments: { city: 'us-east', region: 'eu-north' } }, { 'mcp-name': 'forecast', ...headers });

    const listed = await send(1, 'tools/list', {});
    assert.equal(listed.status, 200, listed.text);
    const schema = listed.answer.result.tools.find((tool) => tool.name === 'forecast').inputSchema;
    assert.equal(schema.properties.region['x-mcp-header'], 'Region', 'the origin marks region');

    const before = (await python.record()).requests.length;
    for (const [label, id, headers] of [
      ["another argument's value", 2, { 'mcp-param-region': 'us-east' }],
      ['no header for the marked argument', 3, {}],
      ['the header twice', 4, { 'mcp-param-region': 'eu-north, eu-north' }],
    ]) {
      const refused = await forecast(id, headers);
      assert.equal(refused.status, 400, `${label}: ${refused.text}`);
      assert.equal(refused.answer.error.code, -32020, label);
      assert.equal(refused.answer.id, id, label);
    }
    assert.equal((await python.record()).requests.length, before, 'never forwarded');

    const good = await forecast(5, { 'mcp-param-region': 'eu-north' });
    assert.equal(good.status, 200, good.text);
    assert.deepEqual(JSON.parse(good.answer.result.content[0].text), { city: 'us-east', region: 'eu-north', mcp_param_region: 'eu-north' });
  });

  describe('protocol revision matrix: list and call through the gate', () => {
    /** A fetch for the TypeScript SDK that asks for `version` in initialize, as a client of that revision does. */
    const pinnedFetch = (version) => (url, init = {}) => {
      const message = typeof init.body === 'string' ? JSON.parse(init.body) : undefined;
      if (message?.method !== 'initialize') return fetch(url, init);
      return fetch(url, { ...init, body: JSON.stringify({ ...message, params: { ...message.params, protocolVersion: version } }) });
    };

    for (const version of ['2025-06-18', '2025-11-25']) {
      test(`${version}: TypeScript SDK 1.32.2 client, TypeScript SDK demo origin (initialize, sessions)`, async () => {
        const token = await stack.issuer.mint({ sub: `ts-${version}`, scope: 'invoices:read', aud: legacyResource });
        const from = stack.origin.requests.length;
        const transport = new StreamableHTTPClientTransport(new URL(legacyResource), {
          fetch: pinnedFetch(version),
          requestInit: { headers: { authorization: `Bearer ${token}` } },
        });
        const client = new Client({ name: 'portcullis-matrix', version: '0' });
        await client.connect(transport);
        try {
          assert.equal(transport.protocolVersion, version, 'negotiated');
          assert.ok(transport.sessionId, 'a session');
          const { tools } = await client.listTools();
          assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'whoami']);
          const result = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
          assert.match(result.content[0].text, /Invoice INV-1001: ACME Corp/);
        } finally {
          await transport.terminateSession().catch(() => {});
          await client.close();
        }
        const posts = stack.origin.requests.slice(from).filter((r) => r.method === 'POST');
        assert.equal(JSON.parse(posts[0].body).params.protocolVersion, version);
        for (const request of posts.slice(1)) assert.equal(request.headers['mcp-protocol-version'], version);
        assert.ok(posts.every((r) => r.headers.authorization === undefined && r.headers['x-auth-subject'] === `ts-${version}`));
      });
    }

    for (const [label, mode, version] of [
      ['2026-07-28: Python SDK 2.3.0 client (server/discover)', 'auto', MODERN],
      ['2025-11-25: Python SDK 2.3.0 client in legacy mode (initialize, stateless origin)', 'legacy', '2025-11-25'],
    ]) {
      test(`${label}, Python SDK origin`, async () => {
        const token = await stack.issuer.mint({ sub: `py-${mode}`, scope: 'invoices:read' });
        const { requests: earlier } = await python.record();
        const summary = await runPythonClient(stack.resource, {
          token,
          mode,
          plan: [{ op: 'list_tools' }, { op: 'call', name: 'echo', arguments: { text: version } }],
        });
        const [list, echo] = results(summary);
        assert.equal(summary.protocol_version, version);
        assert.deepEqual(list.tools.sort(), READ_TOOLS);
        assert.deepEqual(echo.texts, [version]);
        const seen = await assertOriginSawNoToken(python, earlier.length, { subject: `py-${mode}`, secrets: [token] });
        const calls = seen.filter((r) => r.body.includes('"tools/'));
        assert.ok(calls.length >= 2 && calls.every((r) => r.headers['mcp-protocol-version'] === version), JSON.stringify(calls.map((r) => r.headers)));
      });
    }
  });
});

describe('MCP Python SDK client with its own OAuth flow (oidc-provider), step-up included, Python origin', () => {
  let python;
  let env;

  before(async () => {
    assertVenv();
    python = await startPythonOrigin();
    env = await startOAuthStack({ bindings: { MCP_ORIGIN: python.url } }).catch(async (error) => {
      await python.close();
      throw error;
    });
  });

  after(async () => {
    await env?.close();
    await python?.close();
  });

  test('from nothing but the URL: discovery, registration, PKCE with resource; then 403 insufficient_scope → re-authorization for invoices:write → the call passes', async () => {
    const { as, stack } = env;
    const { requests: earlier } = await python.record();
    const asBefore = as.requests.length;
    const summary = await runPythonClient(stack.resource, {
      auth: 'oauth',
      login: 'py-oauth-user',
      plan: [
        { op: 'list_tools' },
        { op: 'call', name: 'whoami' },
        { op: 'call', name: 'void_invoice', arguments: { invoice_id: 'INV-PY-OAUTH' } },
        { op: 'call', name: 'café', arguments: { order: 'noisette' } },
      ],
    });
    const [list, whoami, voided, cafe] = results(summary);
    assert.equal(summary.protocol_version, MODERN);
    assert.deepEqual(list.tools.sort(), READ_TOOLS, 'the first token is read-only');
    const identity = parsed(whoami);
    assert.equal(identity.subject, 'py-oauth-user');
    assert.equal(identity.client_id, summary.client_id, 'the dynamically registered client');
    assert.equal(identity.authorization_received, false);
    assert.deepEqual(voided.texts, ['voided INV-PY-OAUTH']);
    assert.equal(parsed(cafe).served, 'un noisette');

    // The SDK's steps, in order, as the gate and the authorization server saw them.
    const where = (url) => (url.startsWith(stack.base) ? `gate${url.slice(stack.base.length)}` : url.startsWith(as.issuer) ? `as${url.slice(as.issuer.length)}` : url);
    const steps = summary.http.map((e) => `${e.method} ${where(e.url)} ${e.status}`);
    assertInOrder(steps, [
      'POST gate/mcp 401',
      'GET gate/.well-known/oauth-protected-resource/mcp 200',
      'GET as/.well-known/oauth-authorization-server 200',
      'POST as/reg 201',
      'POST as/token 200',
      'POST gate/mcp 200',
      'POST gate/mcp 403',
      'POST as/token 200',
      'POST gate/mcp 200',
    ]);
    assert.equal(steps.filter((s) => s === 'POST as/reg 201').length, 1, 'registered once');
    const challenge = parseChallenge(summary.http.find((e) => e.status === 401).www_authenticate).params;
    assert.equal(challenge.scope, 'invoices:read');
    const stepUp = parseChallenge(summary.http.find((e) => e.status === 403).www_authenticate).params;
    assert.equal(stepUp.error, 'insufficient_scope');
    assert.deepEqual(stepUp.scope.split(' ').sort(), ['invoices:read', 'invoices:write']);

    // Two authorizations: PKCE S256 and the resource indicator each time; the
    // second (step-up) for the union of scopes, the user already signed in.
    const [first, second] = summary.authorizations;
    assert.equal(summary.authorizations.length, 2);
    for (const authorization of [first, second]) {
      assert.equal(authorization.code_challenge_method, 'S256');
      assert.equal(authorization.code_challenge_length, 43);
      assert.equal(authorization.resource, stack.resource);
      assert.ok(authorization.state_present);
    }
    assert.ok(first.scope.split(' ').includes('invoices:read') && !first.scope.split(' ').includes('invoices:write'), first.scope);
    assert.deepEqual(first.pages, ['login', 'consent']);
    assert.ok(['invoices:read', 'invoices:write'].every((s) => second.scope.split(' ').includes(s)), second.scope);
    assert.deepEqual(second.pages, ['consent']);
    const asSteps = as.requests.slice(asBefore).map((r) => `${r.method} ${r.path.replace(/\/interaction\/[^/]+/, '/interaction/*').replace(/^\/auth\/.+/, '/auth/*')}`);
    assert.equal(asSteps.filter((s) => s === 'POST /interaction/*/login').length, 1, 'signed in once');

    // The tokens: RFC 9068 JWTs for the gate's resource, read-only then read and write.
    assert.equal(summary.tokens.length, 2);
    for (const claims of summary.tokens) {
      assert.equal(claims.iss, as.issuer);
      assert.equal(claims.aud, stack.resource);
      assert.equal(claims.sub, 'py-oauth-user');
      assert.equal(claims.client_id, summary.client_id);
    }
    assert.deepEqual(summary.tokens[0].scope.split(' ').filter((s) => s.startsWith('invoices:')), ['invoices:read']);
    assert.deepEqual(summary.tokens[1].scope.split(' ').filter((s) => s.startsWith('invoices:')).sort(), ['invoices:read', 'invoices:write']);

    const record = await python.record();
    assert.deepEqual(record.voided.filter((id) => id === 'INV-PY-OAUTH'), ['INV-PY-OAUTH'], 'voided once: the refused attempt never arrived');
    await assertOriginSawNoToken(python, earlier.length, { subject: 'py-oauth-user' });
  });
});
