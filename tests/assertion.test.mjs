// The gate's signed origin assertion (Portcullis-Assertion), black-box: the
// built worker in Miniflare signs it with WebCrypto, the demo origin (the
// official MCP SDK server) verifies it on every request with
// examples/assertion/verify.mjs (jose), and the Python helper
// (examples/assertion/verify_assertion.py, PyJWT) checks the same requests.
// Claims against the authorized call, tampering after signing, replay, key
// rotation without a failed request, bad key bindings, and the private key
// never showing anywhere.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ASSERTION_JWKS_PATH, assertionKey, startStack } from './helpers/stack.mjs';
import { ROOT, withTimeout } from './helpers/gate.mjs';
import { PYTHON, assertVenv } from './helpers/python.mjs';

const CALL = (name, args = {}, id = 1) => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } });
const INIT = JSON.stringify({
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'assertion-tests', version: '0' } },
});
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' };

/** The `d` member of a private JWK text: what must never show. */
const privatePart = (jwk) => JSON.parse(jwk).d;

/** Sends `request` (as the origin recorded it) straight to the origin, with `changes`. */
async function replayAtOrigin(origin, request, { body = request.body, headers = {} } = {}) {
  const sent = { ...request.headers, ...headers };
  for (const name of ['host', 'content-length', 'connection', 'transfer-encoding']) delete sent[name];
  const response = await fetch(`http://127.0.0.1:${origin.port}${request.path}${request.query}`, {
    method: request.method,
    headers: sent,
    body: request.method === 'GET' ? undefined : body,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, json: await response.json().catch(() => undefined) };
}

/** Runs the Python helper (PyJWT) on one request as the origin received it. */
function verifyInPython({ jwksUrl, issuer, audience, request, url }) {
  assertVenv();
  const job = {
    jwks_url: jwksUrl,
    issuer,
    audience,
    method: request.method,
    url,
    headers: request.headers,
    body_b64: Buffer.from(request.body, 'utf8').toString('base64'),
  };
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [join(ROOT, 'tests', 'python', 'verify_assertion_cli.py')], {
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.stderr.on('data', (chunk) => (err += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`python verifier exited ${code}: ${err.slice(-2000)}`));
      }
    });
    child.stdin.end(JSON.stringify(job));
  });
}

describe('origin assertion: claims, tampering and replay', () => {
  let stack;
  let key;

  before(async () => {
    key = assertionKey('ES256');
    stack = await startStack({ bindings: () => ({ ASSERTION_KEY: key, MCP_REQUIRED_SCOPES: 'invoices:read' }) });
  });

  after(async () => {
    await stack?.close();
  });

  async function post(token, body, headers = {}) {
    return stack.gate.fetch('/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}`, ...headers }, body });
  }

  test('an SDK session through the gate: every request verified by the origin, claims equal the authorized call', async () => {
    const token = await stack.issuer.mint({ sub: 'alice', client_id: 'invoice-agent', scope: 'invoices:read invoices:write', jti: 'token-jti-1' });
    const first = stack.origin.requests.length;
    const client = new Client({ name: 'assertion-tests', version: '0.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(stack.resource), { requestInit: { headers: { Authorization: `Bearer ${token}` } } });
    await withTimeout(client.connect(transport), 10_000, 'initialize');
    try {
      const result = await client.callTool({ name: 'whoami', arguments: {} });
      assert.deepEqual(result.structuredContent.assertion, { sub: 'alice', client_id: 'invoice-agent', scope: 'invoices:read invoices:write', mcp_name: 'whoami' });
      await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
    const seen = stack.origin.requests.slice(first);
    assert.ok(seen.length >= 4, `${seen.length} requests`);
    for (const request of seen) assert.equal(request.assertion?.ok, true, `${request.method} ${request.path}: ${JSON.stringify(request.assertion)}`);
    const call = seen.find((r) => r.assertion.claims.mcp_name === 'lookup_invoice');
    const claims = call.assertion.claims;
    assert.equal(decodeProtectedHeader(call.headers['portcullis-assertion']).typ, 'portcullis+jwt');
    assert.equal(claims.iss, stack.base);
    assert.equal(claims.aud, stack.origin.url);
    assert.equal(claims.sub, 'alice');
    assert.equal(claims.client_id, 'invoice-agent');
    assert.equal(claims.scope, 'invoices:read invoices:write');
    assert.equal(claims.token_iss, stack.issuer.issuer);
    assert.equal(claims.token_jti, 'token-jti-1');
    assert.equal(claims.token_hash, undefined);
    assert.equal(claims.mcp_method, 'tools/call');
    assert.equal(claims.htm, 'POST');
    assert.equal(claims.htu, stack.origin.url);
    assert.equal(claims.exp - claims.iat, 60);
    // The X-Auth-* fields still travel, for origins that do not verify.
    assert.equal(call.headers['x-auth-subject'], 'alice');
    // Each assertion is unique.
    const jtis = new Set(seen.map((r) => r.assertion.claims.jti));
    assert.equal(jtis.size, seen.length);
    const del = seen.find((r) => r.method === 'DELETE');
    assert.equal(del.assertion.claims.htm, 'DELETE');
    assert.equal(del.assertion.claims.mcp_method, undefined);
  });

  test('a token without jti is named by its hash, one without client_id has none', async () => {
    const token = await stack.issuer.mint({ sub: 'bob', scope: 'invoices:read', jti: undefined, client_id: undefined });
    const first = stack.origin.requests.length;
    const response = await post(token, INIT);
    await response.body?.cancel();
    assert.equal(response.status, 200);
    const [request] = stack.origin.requests.slice(first);
    const claims = request.assertion.claims;
    assert.equal(claims.token_jti, undefined);
    assert.equal(claims.token_hash, (await import('node:crypto')).createHash('sha256').update(token).digest('base64url'));
    assert.equal(claims.mcp_method, 'initialize');
    assert.equal(claims.client_id, undefined);
    assert.ok(!request.headers['portcullis-assertion'].includes(token));
  });

  test('a body or a tool changed after signing, another URL or method: the origin refuses', async () => {
    const token = await stack.issuer.mint({ sub: 'carol', scope: 'invoices:read invoices:write' });
    const first = stack.origin.requests.length;
    const response = await post(token, CALL('lookup_invoice', { invoice_id: 'INV-1001' }));
    await response.body?.cancel();
    const [request] = stack.origin.requests.slice(first);
    assert.equal(request.assertion.ok, true);
    const cases = [
      [{ body: CALL('lookup_invoice', { invoice_id: 'INV-1003' }) }, 'body_mismatch'],
      [{ body: CALL('void_invoice', { invoice_id: 'INV-1001' }) }, 'body_mismatch'],
    ];
    for (const [changes, reason] of cases) {
      const before = stack.origin.requests.length;
      const answer = await replayAtOrigin(stack.origin, request, changes);
      assert.equal(answer.status, 401, JSON.stringify(answer.json));
      assert.equal(answer.json.reason, reason);
      assert.equal(stack.origin.requests[before].assertion.ok, false);
    }
    // The same assertion sent again, unchanged: a replay.
    const again = await replayAtOrigin(stack.origin, request);
    assert.equal(again.status, 401);
    assert.equal(again.json.reason, 'replayed');
    assert.equal(stack.origin.invoices.get('INV-1001').status, 'open');
  });

  test('a client cannot bring its own assertion: it is dropped, the gate signs', async () => {
    const token = await stack.issuer.mint({ sub: 'dave', scope: 'invoices:read' });
    const first = stack.origin.requests.length;
    const response = await post(token, INIT, { 'Portcullis-Assertion': 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.' });
    await response.body?.cancel();
    const [request] = stack.origin.requests.slice(first);
    assert.equal(request.assertion.ok, true);
    assert.equal(request.assertion.claims.sub, 'dave');
  });

  test('the Python helper (PyJWT) verifies the same assertion, and refuses it changed', async () => {
    const token = await stack.issuer.mint({ sub: 'erin', scope: 'invoices:read' });
    const first = stack.origin.requests.length;
    const response = await post(token, CALL('lookup_invoice', { invoice_id: 'INV-1002' }));
    await response.body?.cancel();
    const [request] = stack.origin.requests.slice(first);
    const job = { jwksUrl: `${stack.base}${ASSERTION_JWKS_PATH}`, issuer: stack.base, audience: stack.origin.url, request, url: stack.origin.url };
    const good = await verifyInPython(job);
    assert.equal(good.ok, true, JSON.stringify(good));
    assert.equal(good.claims.mcp_name, 'lookup_invoice');
    const changed = await verifyInPython({ ...job, request: { ...request, body: CALL('lookup_invoice', { invoice_id: 'INV-1003' }) } });
    assert.deepEqual(changed, { ok: false, reason: 'body_mismatch' });
  });

  test('the JWKS: public keys only, cacheable, outside the protected resource', async () => {
    const seen = stack.origin.requests.length;
    const response = await stack.gate.fetch(ASSERTION_JWKS_PATH);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/jwk-set+json');
    assert.equal(response.headers.get('cache-control'), 'public, max-age=300');
    const text = await response.text();
    const { keys } = JSON.parse(text);
    assert.equal(keys.length, 1);
    assert.deepEqual(Object.keys(keys[0]).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    assert.ok(!text.includes(privatePart(key)));
    // No token needed, and no other method.
    assert.equal((await stack.gate.fetch(ASSERTION_JWKS_PATH, { method: 'POST', body: '{}' })).status, 405);
    // Answered by the gate: the origin sees none of it.
    assert.equal(stack.origin.requests.length, seen);
  });

  test('the private key shows nowhere: not in answers, the log, or what the origin received', async () => {
    const d = privatePart(key);
    assert.ok(!stack.gate.output.text.includes(d), 'the private key is in the gate output');
    for (const request of stack.origin.requests) assert.ok(!JSON.stringify(request).includes(d), 'the private key reached the origin');
  });
});

describe('origin assertion: lifetime and replay after exp', () => {
  let stack;

  before(async () => {
    stack = await startStack({ bindings: () => ({ ASSERTION_LIFETIME_SECONDS: '1' }) });
  });

  after(async () => {
    await stack?.close();
  });

  test('an assertion replayed after its exp fails the origin check', async () => {
    const token = await stack.issuer.mint({ sub: 'frank', scope: 'invoices:read' });
    const first = stack.origin.requests.length;
    const response = await stack.gate.fetch('/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: INIT });
    await response.body?.cancel();
    const [request] = stack.origin.requests.slice(first);
    const claims = decodeJwt(request.headers['portcullis-assertion']);
    assert.equal(claims.exp - claims.iat, 1);
    // Past exp (and the verifier's 5 s clock tolerance), with a fresh jti
    // cache: only expiry can refuse it.
    await new Promise((resolve) => setTimeout(resolve, (claims.exp + 6) * 1000 - Date.now()));
    const result = await verifyInPython({ jwksUrl: `${stack.base}${ASSERTION_JWKS_PATH}`, issuer: stack.base, audience: stack.origin.url, request, url: stack.origin.url });
    assert.deepEqual(result, { ok: false, reason: 'expired' });
    const answer = await replayAtOrigin(stack.origin, request);
    assert.equal(answer.status, 401);
    assert.ok(['expired', 'replayed'].includes(answer.json.reason), answer.json.reason);
  });
});

describe('origin assertion: key rotation and bad key bindings', () => {
  let stack;
  const current = assertionKey('EdDSA');
  const next = assertionKey('ES256');
  const third = assertionKey('EdDSA');

  before(async () => {
    stack = await startStack({ bindings: () => ({ ASSERTION_KEY: current, ASSERTION_KEY_NEXT: next }) });
  });

  after(async () => {
    await stack?.close();
  });

  async function someCalls(count) {
    const statuses = [];
    for (let i = 0; i < count; i += 1) {
      const token = await stack.issuer.mint({ sub: `rotating-${i}`, scope: 'invoices:read' });
      const response = await stack.gate.fetch('/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: INIT });
      await response.body?.cancel();
      statuses.push(response.status);
    }
    return statuses;
  }

  const jwksFetches = () => stack.gate.requestLogs().filter((line) => line.reason === 'jwks').length;
  const kidOf = (request) => decodeProtectedHeader(request.headers['portcullis-assertion']).kid;

  test('next published before it signs, then promoted: no request fails, the origin fetches the keys once', async () => {
    const first = stack.origin.requests.length;
    assert.deepEqual(await someCalls(3), [200, 200, 200]);
    const fetchedBefore = jwksFetches();
    assert.equal(fetchedBefore, 1);
    const oldKid = kidOf(stack.origin.requests.at(-1));
    // Promote: the next key signs, the old one stays published for assertions in flight.
    await stack.gate.restart({ ASSERTION_KEY: next, ASSERTION_KEY_NEXT: current });
    assert.deepEqual(await someCalls(3), [200, 200, 200]);
    const newKid = kidOf(stack.origin.requests.at(-1));
    assert.notEqual(newKid, oldKid);
    assert.equal(decodeProtectedHeader(stack.origin.requests.at(-1).headers['portcullis-assertion']).alg, 'ES256');
    // The origin knew the new key from the set it had cached: no fetch in between.
    assert.equal(jwksFetches(), fetchedBefore);
    // Retire the old key.
    await stack.gate.restart({ ASSERTION_KEY_NEXT: undefined });
    assert.deepEqual(await someCalls(2), [200, 200]);
    for (const request of stack.origin.requests.slice(first)) assert.equal(request.assertion.ok, true, JSON.stringify(request.assertion));
  });

  test('a key binding that does not parse: every request refused 500, ASSERTION_KEY named in the log, nothing forwarded', async () => {
    await stack.gate.restart({ ASSERTION_KEY: JSON.stringify({ ...JSON.parse(third), x: 'not-a-point' }), ASSERTION_KEY_NEXT: undefined });
    const first = stack.origin.requests.length;
    assert.deepEqual(await someCalls(2), [500, 500]);
    assert.equal(stack.origin.requests.length, first);
    const problems = stack.gate.output.json((line) => line.event === 'config_invalid').map((line) => line.problems);
    assert.ok(problems.some((p) => p.startsWith('ASSERTION_KEY: ')), problems.join('\n'));
    const keys = await stack.gate.fetch(ASSERTION_JWKS_PATH);
    await keys.body?.cancel();
    assert.equal(keys.status, 500);
  });

  test('a key whose private part does not match its public part: refused, named, nothing forwarded', async () => {
    const other = generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' });
    const mismatched = JSON.stringify({ ...JSON.parse(third), d: other.d });
    await stack.gate.restart({ ASSERTION_KEY: mismatched });
    const first = stack.origin.requests.length;
    assert.deepEqual(await someCalls(2), [500, 500]);
    assert.equal(stack.origin.requests.length, first);
    const refusals = stack.gate.requestLogs().slice(-2);
    for (const line of refusals) assert.equal(line.reason, 'assertion_key_unusable');
    const problems = stack.gate.output.json((line) => line.event === 'config_invalid').map((line) => line.problems);
    assert.ok(problems.some((p) => p.startsWith('ASSERTION_KEY: WebCrypto cannot sign')), problems.join('\n'));
  });

  test('no private key in any output', () => {
    for (const jwk of [current, next, third]) {
      const d = privatePart(jwk);
      assert.ok(!stack.gate.output.text.includes(d));
      for (const request of stack.origin.requests) assert.ok(!JSON.stringify(request).includes(d));
    }
  });
});
