// A gate with a missing or invalid binding fails closed: every request gets
// a generic 500, nothing is forwarded, and the log names the bad binding.
// All the misconfigured gates run as separate workers (separate isolates,
// separate environments) in one Miniflare instance.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Miniflare } from 'miniflare';
import { startIssuer } from '../demo/issuer.mjs';
import { startOrigin } from '../demo/origin.mjs';
import { OutputCapture, SHARED_OPTIONS, assertBuilt, withTimeout, workerModuleOptions } from './helpers/gate.mjs';
import { assertNoSecrets } from './helpers/http.mjs';

const RESOURCE = 'http://127.0.0.1:8787/mcp';

/** name -> { bindings overrides, binding the log must name, kv } */
function cases({ origin, issuer }) {
  const good = { MCP_RESOURCE: RESOURCE, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri };
  return {
    'missing-origin': { bindings: { ...good, MCP_ORIGIN: undefined }, names: 'MCP_ORIGIN' },
    'bad-leeway': { bindings: { ...good, JWT_LEEWAY_SECONDS: 'soon' }, names: 'JWT_LEEWAY_SECONDS' },
    'negative-leeway': { bindings: { ...good, JWT_LEEWAY_SECONDS: '-5' }, names: 'JWT_LEEWAY_SECONDS' },
    'missing-resource': { bindings: { ...good, MCP_RESOURCE: undefined }, names: 'MCP_RESOURCE' },
    'http-resource-not-loopback': { bindings: { ...good, MCP_RESOURCE: 'http://mcp.example.com/mcp' }, names: 'MCP_RESOURCE' },
    'missing-issuer': { bindings: { ...good, OAUTH_ISSUER: undefined }, names: 'OAUTH_ISSUER' },
    'hmac-algorithm': { bindings: { ...good, JWT_ALGORITHMS: 'RS256 HS256' }, names: 'JWT_ALGORITHMS' },
    'none-algorithm': { bindings: { ...good, JWT_ALGORITHMS: 'none' }, names: 'JWT_ALGORITHMS' },
    'bad-jwks-uri': { bindings: { ...good, OAUTH_JWKS_URI: 'ftp://127.0.0.1/jwks' }, names: 'OAUTH_JWKS_URI' },
    'bad-cache-ttl': { bindings: { ...good, JWKS_CACHE_TTL_SECONDS: 'forever' }, names: 'JWKS_CACHE_TTL_SECONDS' },
    'tool-scopes-not-json': { bindings: { ...good, MCP_TOOL_SCOPES: '{"void_invoice": "invoices:write"' }, names: 'MCP_TOOL_SCOPES' },
    'method-scopes-wrong-shape': { bindings: { ...good, MCP_METHOD_SCOPES: '["tools/call"]' }, names: 'MCP_METHOD_SCOPES' },
    'tool-scopes-bad-scope': { bindings: { ...good, MCP_TOOL_SCOPES: '{"x": 5}' }, names: 'MCP_TOOL_SCOPES' },
    'scope-hierarchy-cycle': {
      bindings: { ...good, MCP_TOOL_SCOPES: '{"void_invoice": "invoices:write", "*": "invoices:read"}', MCP_SCOPE_IMPLIES: '{"invoices:write": "invoices:read", "invoices:read": "invoices:write"}' },
      names: 'MCP_SCOPE_IMPLIES',
    },
    'scope-hierarchy-unknown-scope': { bindings: { ...good, MCP_SCOPE_IMPLIES: '{"admin": "*"}' }, names: 'MCP_SCOPE_IMPLIES' },
    'min-protocol-version-not-a-revision': { bindings: { ...good, MCP_MIN_PROTOCOL_VERSION: '2026-07-29' }, names: 'MCP_MIN_PROTOCOL_VERSION' },
    'state-secret-too-short': { bindings: { ...good, MCP_STATE_SECRET: SHORT_STATE_SECRET }, names: 'MCP_STATE_SECRET' },
    'missing-kv': { bindings: good, names: 'JWKS_CACHE', kv: false },
  };
}

/** A secret too short to seal requestState with: refused, and never echoed. */
const SHORT_STATE_SECRET = 'st4te-secret-far-too-short';

describe('misconfiguration', () => {
  let issuer;
  let origin;
  let mf;
  let table;
  const output = new OutputCapture();

  before(async () => {
    assertBuilt();
    issuer = await startIssuer({ audience: RESOURCE, algs: ['RS256'] });
    origin = await startOrigin();
    table = cases({ origin, issuer });
    mf = new Miniflare({
      ...SHARED_OPTIONS,
      port: 0,
      handleRuntimeStdio(stdout, stderr) {
        output.attach(stdout, 'stdout');
        output.attach(stderr, 'stderr');
      },
      workers: Object.entries(table).map(([name, { bindings, kv = true }]) => ({
        name,
        ...workerModuleOptions(),
        bindings: Object.fromEntries(Object.entries(bindings).filter(([, v]) => v !== undefined)),
        kvNamespaces: kv ? ['JWKS_CACHE'] : [],
      })),
    });
    await withTimeout(mf.ready, 30_000, 'Miniflare did not start');
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(output.text);
    await mf?.dispose();
    await origin?.close();
    await issuer?.close();
  });

  async function send(name, path, init) {
    const worker = await mf.getWorker(name);
    return worker.fetch(`http://127.0.0.1:8787${path}`, init);
  }

  test('every misconfigured gate answers every request with a generic 500 and forwards nothing', async () => {
    const token = await issuer.mint();
    for (const name of Object.keys(table)) {
      const requests = [
        ['/mcp', { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' }],
        ['/mcp', { method: 'GET' }],
        ['/.well-known/oauth-protected-resource/mcp', { method: 'GET' }],
      ];
      for (const [path, init] of requests) {
        const response = await send(name, path, init);
        const text = await response.text();
        assert.equal(response.status, 500, `${name} ${init.method} ${path}: ${text}`);
        assert.match(response.headers.get('content-type') ?? '', /^application\/json\b/, name);
        const body = JSON.parse(text);
        assert.equal(typeof body.error, 'string', name);
        assert.equal(typeof body.error_description, 'string', name);
        // Generic: the body names no binding and echoes no configured value.
        assert.doesNotMatch(text, /MCP_|OAUTH_|JWT_|JWKS_|ORIGIN_/, `${name} body is generic`);
        assert.ok(!text.includes(origin.url) && !text.includes(issuer.issuer), `${name} body leaks configuration`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(origin.requests.length, 0, 'the origin received nothing');
    assert.equal(issuer.requests.length, 0, 'no keys were fetched either');
  });

  test('the log names each bad binding', async () => {
    // Each isolate reports its own configuration, so a binding that is bad
    // in k gates must be named by at least k distinct lines.
    const expected = new Map();
    for (const { names } of Object.values(table)) expected.set(names, (expected.get(names) ?? 0) + 1);
    for (const [binding, count] of expected) {
      const lines = output.lines.filter((l) => l.json?.event !== 'request' && l.line.includes(binding));
      assert.ok(lines.length >= count, `${binding}: expected ${count} log line(s) naming it, got ${lines.length}; output:\n${output.text.slice(-3000)}`);
    }
    assert.ok(!output.text.includes(SHORT_STATE_SECRET), 'a refused secret is never echoed');
  });

  test('each refused request is logged with status 500, and no token is printed', async () => {
    const lines = await output.waitFor((l) => (l.event === 'request' || 'decision' in l) && l.status === 500, { count: Object.keys(table).length * 3 });
    for (const line of lines) assert.equal(line.decision, 'deny');
    assertNoSecrets(output.text, issuer.minted);
  });
});
