// Several MCP servers behind one gate (MCP_ROUTES), black box: three routes
// in front of three real SDK origins, one issuer. Each route has its own
// RFC 9728 document and challenge, its own audience (a token for one server
// is refused at another, the origin untouched), its own tool scopes and its
// own origin credential; unknown paths are 404; every route configuration
// error is named in the log while the gate fails closed.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { Miniflare } from 'miniflare';
import { startIssuer } from '../demo/issuer.mjs';
import { startOrigin } from '../demo/origin.mjs';
import { OutputCapture, SHARED_OPTIONS, assertBuilt, freePort, startGate, withTimeout, workerModuleOptions } from './helpers/gate.mjs';
import { closeAll } from './helpers/stack.mjs';
import { assertNoSecrets, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

const NAMES = ['billing', 'tickets', 'docs'];
const BILLING_SECRET = `billing-origin-${Math.random().toString(36).slice(2)}`;
const TICKETS_SECRET = `tickets-origin-${Math.random().toString(36).slice(2)}`;

describe('three routes behind one gate', () => {
  const closers = [];
  let base;
  let issuer;
  let gate;
  /** name -> SDK origin */
  const origins = {};
  const resource = (name) => `${base}/${name}/mcp`;
  const metadataUrl = (name) => `${base}/.well-known/oauth-protected-resource/${name}/mcp`;
  const tokenFor = (name, claims = {}) => issuer.mint({ aud: resource(name), ...claims });

  before(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    issuer = await startIssuer({ audience: `${base}/billing/mcp`, algs: ['ES256'] });
    closers.push(() => issuer.close());
    for (const name of NAMES) {
      origins[name] = await startOrigin({ jsonResponse: true });
      closers.push(() => origins[name].close());
    }
    const routes = [
      {
        resource: resource('billing'),
        origin: origins.billing.url,
        resource_name: 'Billing',
        scopes_supported: ['invoices:read', 'invoices:write'],
        tool_scopes: { void_invoice: 'invoices:write', '*': 'invoices:read' },
        origin_authorization_secret: 'BILLING_ORIGIN_AUTHORIZATION',
      },
      {
        resource: resource('tickets'),
        origin: origins.tickets.url,
        required_scopes: 'tickets:read',
        origin_authorization_secret: 'TICKETS_ORIGIN_AUTHORIZATION',
      },
      { resource: resource('docs'), origin: origins.docs.url },
    ];
    gate = await startGate({
      port,
      bindings: {
        MCP_ROUTES: JSON.stringify(routes),
        OAUTH_ISSUER: issuer.issuer,
        OAUTH_JWKS_URI: issuer.jwksUri,
        BILLING_ORIGIN_AUTHORIZATION: `Bearer ${BILLING_SECRET}`,
        TICKETS_ORIGIN_AUTHORIZATION: `Bearer ${TICKETS_SECRET}`,
      },
    });
    closers.push(() => gate.close());
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(gate?.output.text);
    await closeAll(closers);
  });

  async function connect(name, token) {
    const client = new Client({ name: `routes-test-${name}`, version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(resource(name)), {
      requestInit: { headers: { authorization: `Bearer ${token}` } },
    });
    await client.connect(transport);
    return client;
  }

  test('each route serves its own RFC 9728 document; the root document is not served', async () => {
    for (const name of NAMES) {
      const response = await gate.fetch(`/.well-known/oauth-protected-resource/${name}/mcp`);
      assert.equal(response.status, 200, name);
      const document = await response.json();
      assert.equal(document.resource, resource(name));
      assert.deepEqual(document.authorization_servers, [issuer.issuer]);
    }
    const billing = await (await gate.fetch('/.well-known/oauth-protected-resource/billing/mcp')).json();
    assert.equal(billing.resource_name, 'Billing');
    assert.deepEqual(billing.scopes_supported, ['invoices:read', 'invoices:write']);
    const root = await gate.fetch('/.well-known/oauth-protected-resource');
    assert.equal(root.status, 404, 'with several routes, clients use the path-inserted form');
    await root.body?.cancel();
  });

  test("each route's challenge points at its own metadata and names its own scopes", async () => {
    for (const name of NAMES) {
      const response = await gate.fetch(`/${name}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
      await expectRefusal(response, {
        status: 401,
        error: null,
        resourceMetadata: metadataUrl(name),
        scope: name === 'tickets' ? 'tickets:read' : null,
      });
    }
  });

  test('a token minted for one server is refused at another, and that origin sees nothing', async () => {
    const billingToken = await tokenFor('billing');
    // Accepted (and cached) at its own route first.
    const client = await connect('billing', billingToken);
    await client.listTools();
    await client.close();
    for (const other of ['tickets', 'docs']) {
      await expectOriginUntouched(origins[other], async () => {
        const response = await gate.fetch(`/${other}/mcp`, {
          method: 'POST',
          headers: { authorization: `Bearer ${billingToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
        });
        await expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl(other) });
      });
    }
    const refusals = gate.requestLogs().filter((l) => l.reason === 'audience_mismatch');
    assert.deepEqual(refusals.map((l) => l.route).sort(), ['/docs/mcp', '/tickets/mcp']);
  });

  test('tool scopes are per route: the write tool needs invoices:write only where configured', async () => {
    const readOnly = { scope: 'invoices:read tickets:read' };
    const calls = (name) => origins[name].requests.filter((r) => r.body.includes('"tools/call"')).length;
    const billing = await connect('billing', await tokenFor('billing', readOnly));
    const before = calls('billing');
    const refused = await billing.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } }).then(
      () => null,
      (error) => error,
    );
    assert.ok(refused, 'void_invoice must be refused at billing without invoices:write');
    assert.equal(calls('billing'), before, 'the billing origin never saw the call');
    const { tools } = await billing.listTools();
    assert.ok(!tools.some((t) => t.name === 'void_invoice'), 'tools/list at billing hides the write tool');
    await billing.close();
    // The docs route has no tool policy: the gate forwards the same call (the
    // demo origin then applies its own check).
    const docs = await connect('docs', await tokenFor('docs', readOnly));
    await docs.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1002' } });
    assert.equal(calls('docs'), 1, 'the docs origin received the call');
    await docs.close();
  });

  test("each origin gets only its own route's credential, never the client's token", async () => {
    const tokens = {};
    for (const name of NAMES) {
      tokens[name] = await tokenFor(name, { scope: 'invoices:read invoices:write tickets:read' });
      const client = await connect(name, tokens[name]);
      await client.listTools();
      await client.close();
    }
    const seen = (name) => origins[name].requests.map((r) => r.headers.authorization);
    assert.ok(seen('billing').length > 0 && seen('billing').every((a) => a === `Bearer ${BILLING_SECRET}`));
    assert.ok(seen('tickets').length > 0 && seen('tickets').every((a) => a === `Bearer ${TICKETS_SECRET}`));
    assert.ok(seen('docs').length > 0 && seen('docs').every((a) => a === undefined));
    for (const name of NAMES) {
      const text = JSON.stringify(origins[name].requests);
      assertNoSecrets(text, Object.values(tokens), `${name} origin requests`);
    }
    assertNoSecrets(gate.output.text, [BILLING_SECRET, TICKETS_SECRET, ...Object.values(tokens)], 'gate log');
  });

  test('a path that matches no route is 404 and reaches no origin', async () => {
    const token = await tokenFor('billing');
    const before = NAMES.map((n) => origins[n].requests.length);
    for (const path of ['/', '/mcp', '/billing', '/billing/mcpx', '/support/mcp', '/.well-known/oauth-protected-resource/support/mcp']) {
      const response = await gate.fetch(path, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(response.status, 404, path);
      await response.body?.cancel();
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.deepEqual(NAMES.map((n) => origins[n].requests.length), before);
  });

  test('the request log names the route', async () => {
    const lines = gate.requestLogs().filter((l) => l.decision === 'allow');
    const routes = new Set(lines.map((l) => l.route));
    for (const name of NAMES) assert.ok(routes.has(`/${name}/mcp`), `no allowed request logged for /${name}/mcp`);
  });
});

describe("a route's issuers", () => {
  const closers = [];
  let gate;
  let main;
  let partner;
  let origin;
  let resource;

  before(async () => {
    const port = await freePort();
    resource = `http://127.0.0.1:${port}/partners/mcp`;
    main = await startIssuer({ audience: resource, algs: ['ES256'] });
    closers.push(() => main.close());
    partner = await startIssuer({ audience: resource, algs: ['ES256'] });
    closers.push(() => partner.close());
    origin = await startOrigin({ jsonResponse: true });
    closers.push(() => origin.close());
    gate = await startGate({
      port,
      bindings: {
        OAUTH_ISSUER: `${main.issuer} ${partner.issuer}`,
        OAUTH_JWKS_URI: `${main.jwksUri} ${partner.jwksUri}`,
        MCP_ROUTES: JSON.stringify([{ resource, origin: origin.url, issuers: [partner.issuer] }]),
      },
    });
    closers.push(() => gate.close());
  });

  after(async () => {
    await closeAll(closers);
  });

  test('a route accepts only the issuers it lists: a valid token from another trusted issuer is refused, the origin untouched', async () => {
    const metadata = await (await gate.fetch('/.well-known/oauth-protected-resource/partners/mcp')).json();
    assert.deepEqual(metadata.authorization_servers, [partner.issuer]);
    await expectOriginUntouched(origin, async () => {
      const response = await gate.fetch('/partners/mcp/echo', { headers: { authorization: `Bearer ${await main.mint()}` } });
      await expectRefusal(response, { status: 401, error: 'invalid_token' });
    });
    assert.equal(main.requests.filter((r) => r.path === '/jwks').length, 0, "the unlisted issuer's keys are not even fetched");
    const allowed = await gate.fetch('/partners/mcp/echo', { headers: { authorization: `Bearer ${await partner.mint()}` } });
    assert.equal(allowed.status, 200);
    await allowed.body?.cancel();
  });
});

describe('route configuration errors', () => {
  const RESOURCE_BASE = 'http://127.0.0.1:8787';
  let mf;
  let issuer;
  const output = new OutputCapture();

  /** name -> { bindings, expected: strings the log must contain } */
  function cases() {
    const route = (path, extra = {}) => ({ resource: `${RESOURCE_BASE}${path}`, origin: 'http://127.0.0.1:9/mcp', ...extra });
    const good = { OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri };
    const routes = (...list) => ({ ...good, MCP_ROUTES: JSON.stringify(list) });
    return {
      'routes-and-single-route': {
        bindings: { ...routes(route('/a')), MCP_RESOURCE: `${RESOURCE_BASE}/mcp`, MCP_ORIGIN: 'http://127.0.0.1:9/mcp' },
        expected: ['MCP_RESOURCE: must not be set together with MCP_ROUTES', 'MCP_ORIGIN: must not be set together with MCP_ROUTES'],
      },
      'duplicate-paths': { bindings: routes(route('/a'), route('/a/')), expected: ['have the same path'] },
      'overlapping-paths': { bindings: routes(route('/a'), route('/a/b')), expected: ['overlap'] },
      'other-host': {
        bindings: routes(route('/a'), { resource: 'http://localhost:8787/b', origin: 'http://127.0.0.1:9/' }),
        expected: ["all routes must be on the gate's one host"],
      },
      'unknown-secret': { bindings: routes(route('/a', { origin_authorization_secret: 'NOT_BOUND' })), expected: ['"NOT_BOUND", which is not a bound secret'] },
      'unknown-issuer': { bindings: routes(route('/a', { issuers: ['https://stranger.example'] })), expected: ['"https://stranger.example" is not one of OAUTH_ISSUER'] },
      'unknown-member': { bindings: routes(route('/a', { tool_scope: {} })), expected: ['unknown field `tool_scope`'] },
      'missing-origin': { bindings: routes({ resource: `${RESOURCE_BASE}/a` }), expected: ['"origin" is required'] },
      'not-an-array': { bindings: { ...good, MCP_ROUTES: '{"resource": "x"}' }, expected: ['MCP_ROUTES: must be a JSON array of route objects'] },
      'empty-list': { bindings: routes(), expected: ['MCP_ROUTES: must list at least one route'] },
      'several-at-once': {
        bindings: routes(route('/a', { scopes_supported: 'ok "bad' }), route('/b', { method_scopes: ['tools/call'] })),
        expected: ['route 1 (http://127.0.0.1:8787/a): scopes_supported: "\\"bad" is not a valid scope token', 'route 2 (http://127.0.0.1:8787/b): method_scopes: must be a JSON object'],
      },
    };
  }
  let table;

  before(async () => {
    assertBuilt();
    issuer = await startIssuer({ audience: `${RESOURCE_BASE}/a`, algs: ['ES256'] });
    table = cases();
    mf = new Miniflare({
      ...SHARED_OPTIONS,
      port: 0,
      handleRuntimeStdio(stdout, stderr) {
        output.attach(stdout, 'stdout');
        output.attach(stderr, 'stderr');
      },
      workers: Object.entries(table).map(([name, { bindings }]) => ({
        name,
        ...workerModuleOptions(),
        bindings,
        kvNamespaces: ['JWKS_CACHE'],
      })),
    });
    await withTimeout(mf.ready, 30_000, 'Miniflare did not start');
  });

  after(async () => {
    await mf?.dispose();
    await issuer?.close();
  });

  test('every bad route configuration fails closed and the log names every problem', async () => {
    const token = await issuer.mint();
    for (const [name, { expected }] of Object.entries(table)) {
      const worker = await mf.getWorker(name);
      for (const path of ['/a', '/.well-known/oauth-protected-resource/a']) {
        const response = await worker.fetch(`${RESOURCE_BASE}${path}`, { headers: { authorization: `Bearer ${token}` } });
        const text = await response.text();
        assert.equal(response.status, 500, `${name} ${path}: ${text}`);
        assert.doesNotMatch(text, /MCP_|OAUTH_|route/, `${name}: the wire answer stays generic`);
      }
      const problems = await output.waitFor((l) => l.event === 'config_invalid' && expected.every((e) => l.problems.includes(e)), { timeoutMs: 5000 }).catch(() => null);
      assert.ok(problems, `${name}: no config_invalid line containing ${JSON.stringify(expected)}; output:\n${output.text.slice(-4000)}`);
    }
    assertNoSecrets(output.text, issuer.minted);
    assert.equal(issuer.requests.filter((r) => r.path.endsWith('/jwks')).length, 0, 'a misconfigured gate fetches no keys');
  });
});
