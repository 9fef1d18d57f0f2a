// The origin-side verifiers of the gate's Portcullis-Assertion
// (examples/assertion/verify.mjs and verify_assertion.py), without the gate:
// a local JWKS server publishes ES256 and EdDSA keys made here, the test
// mints assertions per the contract with jose's SignJWT, and both verifiers
// are given the very same requests (the Python one through
// tests/python/verify_assertion_cli.py, one process for all cases). Each
// tampering (body, tool, URL, method, audience, issuer, typ, alg, time,
// replay, header count) must be refused with its own reason code, and a
// JWKS with the current and the next key must accept either. Then the demo
// origin with `assertion` set: a request with a valid assertion reaches the
// MCP server, one without is answered 401 before it does.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { startOrigin } from '../demo/origin.mjs';
import { AssertionError, createAssertionVerifier } from '../examples/assertion/verify.mjs';
import { ROOT } from './helpers/gate.mjs';
import { PYTHON, assertVenv } from './helpers/python.mjs';

const ISSUER = 'https://gate.test';
const AUDIENCE = 'https://invoices.test/mcp';
const ORIGIN_URL = 'https://invoices.test/mcp';
const TYP = 'portcullis+jwt';
/** body_sha256 of a request without body: SHA-256 of the empty string, base64url (e3b0c442...b855). */
const EMPTY_SHA256 = '47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU';
const CLI = join(ROOT, 'tests', 'python', 'verify_assertion_cli.py');

const sha256 = (body) => createHash('sha256').update(body ?? '').digest('base64url');
const now = () => Math.floor(Date.now() / 1000);
const rpc = (method, params, id = 1) => JSON.stringify({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
const LOOKUP = rpc('tools/call', { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
const VOID = rpc('tools/call', { name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } });

/** Keys made for this run, by name: { kid, alg, privateKey, jwk } (the private key never leaves the process). */
const keys = {};

async function makeKey(name, alg) {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  const jwk = { ...(await exportJWK(publicKey)), kid: `${name}-${randomUUID().slice(0, 8)}`, alg, use: 'sig' };
  keys[name] = { kid: jwk.kid, alg, privateKey, jwk };
}

/** Serves the key sets: /jwks.json (ES256 + EdDSA), /rotation/jwks.json (current + next), /down (503). */
async function startJwksServer() {
  const sets = {
    '/jwks.json': { keys: [keys.es.jwk, keys.ed.jwk] },
    '/rotation/jwks.json': { keys: [keys.current.jwk, keys.next.jwk] },
  };
  const server = http.createServer((req, res) => {
    const set = sets[req.url];
    if (!set) {
      res.writeHead(req.url === '/down' ? 503 : 404).end();
      return;
    }
    const text = JSON.stringify(set);
    res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'content-length': Buffer.byteLength(text) }).end(text);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: (path) => `http://127.0.0.1:${server.address().port}${path}`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** The claims the gate would sign for a request, per the contract; `extra` adds or overrides. */
function claimsFor({ method = 'POST', url = ORIGIN_URL, body = '', mcp = {}, ...extra } = {}) {
  const at = now();
  return {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: 'alice',
    client_id: 'demo-client',
    scope: 'invoices:read',
    token_iss: 'https://as.test',
    token_jti: `at-${randomUUID()}`,
    ...mcp,
    htm: method,
    htu: url,
    body_sha256: sha256(body),
    iat: at,
    exp: at + 60,
    jti: randomUUID(),
    ...extra,
  };
}

function sign(claims, { key = keys.es, header = {} } = {}) {
  return new SignJWT(claims).setProtectedHeader({ alg: key.alg, typ: TYP, kid: key.kid, ...header }).sign(key.privateKey);
}

/** A POST of `body` to ORIGIN_URL carrying `token`. */
const post = (token, body = LOOKUP) => ({ method: 'POST', url: ORIGIN_URL, headers: { 'content-type': 'application/json', 'portcullis-assertion': token }, body });
const lookupMcp = { mcp_method: 'tools/call', mcp_name: 'lookup_invoice' };

/**
 * Every case: `steps` are verified in order by one verifier (made with
 * `options`, against the key set at `jwks`), each expecting 'ok' or a reason.
 */
const CASES = [
  {
    name: 'a valid ES256 assertion passes, its claims returned',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), expect: 'ok' }],
    check: (claims) => {
      assert.equal(claims.sub, 'alice');
      assert.equal(claims.mcp_name, 'lookup_invoice');
    },
  },
  {
    name: 'a valid EdDSA assertion passes',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: keys.ed })), expect: 'ok' }],
  },
  {
    name: 'a batch names each call in mcp_calls, responses left out',
    steps: async () => {
      const body = JSON.stringify([
        { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup_invoice', arguments: {} } },
        { jsonrpc: '2.0', method: 'notifications/initialized' },
        { jsonrpc: '2.0', id: 'srv-1', result: {} },
        { jsonrpc: '2.0', id: 2, method: 'resources/read', params: { uri: 'invoice://INV-1001' } },
      ]);
      const mcp = {
        mcp_calls: [
          { method: 'tools/call', name: 'lookup_invoice' },
          { method: 'notifications/initialized' },
          { method: 'resources/read', name: 'invoice://INV-1001' },
        ],
      };
      return [{ request: post(await sign(claimsFor({ body, mcp })), body), expect: 'ok' }];
    },
  },
  {
    name: 'a GET without body: the empty-string hash, no MCP claims, scheme/host case and default port ignored',
    steps: async () => {
      const claims = claimsFor({ method: 'GET', url: 'https://INVOICES.test:443/mcp?stream=1' });
      assert.equal(claims.body_sha256, EMPTY_SHA256);
      const request = { method: 'GET', url: 'HTTPS://invoices.test/mcp?stream=1', headers: { 'Portcullis-Assertion': await sign(claims) } };
      return [{ request, expect: 'ok' }];
    },
  },
  {
    name: 'a changed body is refused: body_mismatch',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp })), LOOKUP.replace('INV-1001', 'INV-1003')), expect: 'body_mismatch' }],
  },
  {
    name: 'a tool other than the one asserted is refused: mcp_mismatch',
    // body_sha256 of the body sent, mcp_name of another tool: the MCP claims are checked on their own.
    steps: async () => [{ request: post(await sign(claimsFor({ body: VOID, mcp: lookupMcp })), VOID), expect: 'mcp_mismatch' }],
  },
  {
    name: 'MCP claims on a request without a JSON-RPC body are refused: mcp_mismatch',
    steps: async () => {
      const token = await sign(claimsFor({ method: 'GET', mcp: { mcp_method: 'tools/list' } }));
      return [{ request: { method: 'GET', url: ORIGIN_URL, headers: { 'portcullis-assertion': token } }, expect: 'mcp_mismatch' }];
    },
  },
  {
    name: 'another URL is refused: url_mismatch',
    steps: async () => [{ request: { ...post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), url: `${ORIGIN_URL}/admin` }, expect: 'url_mismatch' }],
  },
  {
    name: 'another HTTP method is refused: method_mismatch',
    steps: async () => [{ request: { ...post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), method: 'PUT' }, expect: 'method_mismatch' }],
  },
  {
    name: 'an assertion for another origin is refused: wrong_audience',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp, aud: 'https://other.test/mcp' }))), expect: 'wrong_audience' }],
  },
  {
    name: 'an assertion of another issuer is refused: wrong_issuer',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp, iss: 'https://evil.test' }))), expect: 'wrong_issuer' }],
  },
  {
    name: 'typ JWT is refused: wrong_typ',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { header: { typ: 'JWT' } })), expect: 'wrong_typ' }],
  },
  {
    name: 'HS256 with a shared secret is refused: wrong_alg',
    steps: async () => {
      const secret = new TextEncoder().encode(randomUUID() + randomUUID());
      const token = await new SignJWT(claimsFor({ body: LOOKUP, mcp: lookupMcp })).setProtectedHeader({ alg: 'HS256', typ: TYP, kid: keys.es.kid }).sign(secret);
      return [{ request: post(token), expect: 'wrong_alg' }];
    },
  },
  {
    name: 'a signature by another key under a published kid is refused: bad_signature',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: { ...keys.stranger, kid: keys.es.kid } })), expect: 'bad_signature' }],
  },
  {
    name: 'an unpublished kid is refused: unknown_key',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: keys.stranger })), expect: 'unknown_key' }],
  },
  {
    name: 'an expired assertion (past the clock tolerance) is refused: expired',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp, iat: now() - 120, exp: now() - 60 }))), expect: 'expired' }],
  },
  {
    name: 'an assertion issued longer ago than the maximum age is refused, whatever its exp: expired',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp, iat: now() - 400, exp: now() + 60 }))), expect: 'expired' }],
  },
  {
    name: 'the same assertion twice: the second is refused, replayed',
    steps: async () => {
      const request = post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp })));
      return [
        { request, expect: 'ok' },
        { request, expect: 'replayed' },
      ];
    },
  },
  {
    name: 'a refused request does not use up the jti of the genuine one',
    steps: async () => {
      const request = post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp })));
      return [
        { request: { ...request, body: VOID }, expect: 'body_mismatch' },
        { request, expect: 'ok' },
      ];
    },
  },
  {
    name: 'a full replay cache refuses new assertions rather than forget a live jti: replay_cache_full',
    options: { replayCacheSize: 1 },
    steps: async () => [
      { request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), expect: 'ok' },
      { request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), expect: 'replay_cache_full' },
    ],
  },
  {
    name: 'no assertion is refused: missing',
    steps: async () => [{ request: { method: 'POST', url: ORIGIN_URL, headers: { 'content-type': 'application/json' }, body: LOOKUP }, expect: 'missing' }],
  },
  {
    name: 'two assertion headers are refused: multiple',
    steps: async () => {
      const one = await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }));
      const two = await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }));
      return [
        { request: { ...post(one), headers: { 'portcullis-assertion': [one, two] } }, expect: 'multiple' },
        // As Node's http and fetch's Headers give them: joined with ", ".
        { request: { ...post(one), headers: { 'portcullis-assertion': `${one}, ${two}` } }, expect: 'multiple' },
        // Two spellings of the name in a plain object.
        { request: { ...post(one), headers: { 'Portcullis-Assertion': one, 'portcullis-assertion': two } }, expect: 'multiple' },
      ];
    },
  },
  {
    name: 'not a JWS is refused: malformed',
    steps: async () => [{ request: post('not-a-jws'), expect: 'malformed' }],
  },
  {
    name: 'a key set that cannot be fetched: jwks_unavailable',
    jwks: '/down',
    steps: async () => [{ request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }))), expect: 'jwks_unavailable' }],
  },
  {
    name: 'key rotation: with the current and the next key published, assertions signed by either pass',
    jwks: '/rotation/jwks.json',
    steps: async () => [
      { request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: keys.current })), expect: 'ok' },
      { request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: keys.next })), expect: 'ok' },
      { request: post(await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }), { key: keys.current })), expect: 'ok' },
    ],
  },
];

/** 'ok' and the claims, or the reason; anything but an AssertionError fails the test. */
async function outcome(verifier, request) {
  try {
    return { ok: true, claims: await verifier.verify(request) };
  } catch (error) {
    if (!(error instanceof AssertionError)) throw error;
    assert.doesNotMatch(error.message, /eyJ/, 'the message must not quote the assertion');
    return { ok: false, reason: error.reason };
  }
}

function expectOutcome(result, step, label) {
  if (step.expect === 'ok') {
    assert.equal(result.ok, true, `${label}: refused (${result.reason})`);
  } else {
    assert.deepEqual({ ok: result.ok, reason: result.reason }, { ok: false, reason: step.expect }, label);
  }
}

/** Runs tests/python/verify_assertion_cli.py once on `jobs`; its outcomes in order. */
function runPython(jobs) {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [CLI], {
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`verify_assertion_cli.py exited ${code}:\n${stderr.slice(-2000)}`));
      try {
        resolve(JSON.parse(stdout));
      } catch (error) {
        reject(new Error(`verify_assertion_cli.py printed no JSON: ${stdout.slice(0, 500)}\n${stderr.slice(-2000)}`));
      }
    });
    child.stdin.end(JSON.stringify(jobs));
  });
}

describe('origin assertion verifiers', () => {
  let jwksServer;
  /** Per case: its steps, minted once, so both verifiers get the very same assertions. */
  const minted = new Map();
  /** Per case: the Python outcomes of its steps. */
  const python = new Map();

  before(async () => {
    await Promise.all([
      makeKey('es', 'ES256'),
      makeKey('ed', 'EdDSA'),
      makeKey('current', 'ES256'),
      makeKey('next', 'ES256'),
      makeKey('stranger', 'ES256'),
    ]);
    jwksServer = await startJwksServer();
    for (const c of CASES) minted.set(c.name, await c.steps());

    assertVenv();
    const jobs = [];
    for (const c of CASES) {
      for (const step of minted.get(c.name)) {
        const { method, url, headers, body } = step.request;
        jobs.push({
          // One verifier per case, as in JavaScript.
          verifier: c.name,
          jwks_url: jwksServer.url(c.jwks ?? '/jwks.json'),
          issuer: ISSUER,
          audience: AUDIENCE,
          ...(c.options?.replayCacheSize ? { replay_cache_size: c.options.replayCacheSize } : {}),
          method,
          url,
          headers,
          body_b64: Buffer.from(body ?? '').toString('base64'),
        });
      }
    }
    const results = await runPython(jobs);
    for (const c of CASES) python.set(c.name, results.splice(0, minted.get(c.name).length));
  });

  after(async () => {
    await jwksServer?.close();
  });

  describe('JavaScript (verify.mjs)', () => {
    for (const c of CASES) {
      test(c.name, async () => {
        const verifier = createAssertionVerifier({
          jwksUrl: jwksServer.url(c.jwks ?? '/jwks.json'),
          issuer: ISSUER,
          audience: AUDIENCE,
          ...c.options,
        });
        for (const [index, step] of minted.get(c.name).entries()) {
          const result = await outcome(verifier, step.request);
          expectOutcome(result, step, `step ${index + 1}`);
          if (result.ok) c.check?.(result.claims);
        }
      });
    }

    test('Headers and Buffer bodies are taken as well, and Headers joining two fields is refused', async () => {
      const verifier = createAssertionVerifier({ jwksUrl: jwksServer.url('/jwks.json'), issuer: ISSUER, audience: AUDIENCE });
      const token = await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp }));
      const headers = new Headers({ 'Portcullis-Assertion': token });
      const claims = await verifier.verify({ method: 'POST', url: ORIGIN_URL, headers, body: Buffer.from(LOOKUP) });
      assert.equal(claims.mcp_name, 'lookup_invoice');
      headers.append('portcullis-assertion', await sign(claimsFor({ body: LOOKUP, mcp: lookupMcp })));
      assert.deepEqual(await outcome(verifier, { method: 'POST', url: ORIGIN_URL, headers, body: LOOKUP }), { ok: false, reason: 'multiple' });
    });
  });

  describe('Python (verify_assertion.py)', () => {
    for (const c of CASES) {
      test(c.name, () => {
        for (const [index, step] of minted.get(c.name).entries()) {
          const result = python.get(c.name)[index];
          expectOutcome(result, step, `step ${index + 1}`);
          if (result.ok) c.check?.(result.claims);
        }
      });
    }
  });
});

describe('demo origin with assertion verification on', () => {
  let jwksServer;
  let origin;
  const mcpHeaders = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

  before(async () => {
    if (!keys.es) await makeKey('es', 'ES256');
    if (!keys.ed) await makeKey('ed', 'EdDSA');
    for (const name of ['current', 'next']) if (!keys[name]) await makeKey(name, 'ES256');
    jwksServer = await startJwksServer();
    origin = await startOrigin({
      jsonResponse: true,
      assertion: { jwksUrl: jwksServer.url('/jwks.json'), issuer: ISSUER, audience: AUDIENCE },
    });
  });

  after(async () => {
    await origin?.close();
    await jwksServer?.close();
  });

  /** Sends `body` to `path` of the origin with an assertion the gate would have made (none when `assert` is false). */
  async function send(path, { method = 'POST', body, headers = {}, mcp = {}, assertion = true } = {}) {
    const url = `http://127.0.0.1:${origin.port}${path}`;
    const all = { ...(method === 'POST' ? mcpHeaders : {}), ...headers };
    if (assertion) all['portcullis-assertion'] = await sign(claimsFor({ method, url, body: body ?? '', mcp }), { key: keys.ed });
    const response = await fetch(url, { method, headers: all, body });
    return { response, record: origin.requests.at(-1), token: all['portcullis-assertion'] };
  }

  test('a request with a valid assertion reaches the MCP server; whoami reports the verified claims', async () => {
    const init = rpc('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'assertion-test', version: '0' } });
    const { response, record } = await send('/mcp', { body: init, mcp: { mcp_method: 'initialize' } });
    assert.equal(response.status, 200, await response.clone().text());
    const session = response.headers.get('mcp-session-id');
    assert.ok(session, 'the MCP server opened a session');
    assert.equal((await response.json()).result.serverInfo.name, 'portcullis-demo-origin');
    assert.equal(record.assertion.ok, true);
    assert.equal(record.assertion.claims.mcp_method, 'initialize');

    const inSession = { 'mcp-session-id': session, 'mcp-protocol-version': '2025-06-18' };
    const initialized = JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' });
    const notified = await send('/mcp', { body: initialized, headers: inSession, mcp: { mcp_method: 'notifications/initialized' } });
    assert.equal(notified.response.status, 202);

    const call = rpc('tools/call', { name: 'whoami', arguments: {} }, 2);
    const whoami = await send('/mcp', { body: call, headers: { ...inSession, 'x-auth-subject': 'alice' }, mcp: { mcp_method: 'tools/call', mcp_name: 'whoami' } });
    assert.equal(whoami.response.status, 200);
    const { result } = await whoami.response.json();
    assert.deepEqual(result.structuredContent.assertion, { sub: 'alice', client_id: 'demo-client', scope: 'invoices:read', mcp_name: 'whoami' });
    assert.equal(result.structuredContent.subject, 'alice');

    // The same request again, assertion and all: refused before the MCP server.
    const before = origin.sessions.size;
    const replay = await fetch(`http://127.0.0.1:${origin.port}/mcp`, {
      method: 'POST',
      headers: { ...mcpHeaders, ...inSession, 'portcullis-assertion': whoami.token },
      body: call,
    });
    assert.equal(replay.status, 401);
    assert.deepEqual(await replay.json(), { error: 'invalid_assertion', reason: 'replayed' });
    assert.deepEqual(origin.requests.at(-1).assertion, { ok: false, reason: 'replayed' });
    assert.equal(origin.sessions.size, before);
  });

  test('a request without an assertion is answered 401 and goes no further', async () => {
    const init = rpc('initialize', { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'no-assertion', version: '0' } });
    const sessions = origin.sessions.size;
    const { response, record } = await send('/mcp', { body: init, assertion: false });
    assert.equal(response.status, 401);
    assert.match(response.headers.get('content-type'), /application\/json/);
    assert.deepEqual(await response.json(), { error: 'invalid_assertion', reason: 'missing' });
    assert.deepEqual(record.assertion, { ok: false, reason: 'missing' });
    assert.equal(record.body, init, 'the body is still recorded');
    assert.equal(origin.sessions.size, sessions, 'no session was opened');
  });

  test('below the MCP path too (echo); other paths are not checked', async () => {
    const echoed = await send('/mcp/echo?x=1', { method: 'GET' });
    assert.equal(echoed.response.status, 200);
    assert.equal((await echoed.response.json()).query, '?x=1');
    assert.equal(echoed.record.assertion.ok, true);

    const refused = await send('/mcp/echo', { method: 'GET', assertion: false });
    assert.equal(refused.response.status, 401);
    assert.equal(refused.record.assertion.reason, 'missing');

    // An assertion made for one URL does not pass for another.
    const token = await sign(claimsFor({ method: 'GET', url: `http://127.0.0.1:${origin.port}/mcp/echo` }), { key: keys.ed });
    const moved = await fetch(`http://127.0.0.1:${origin.port}/mcp/echo?other`, { headers: { 'portcullis-assertion': token } });
    assert.deepEqual(await moved.json(), { error: 'invalid_assertion', reason: 'url_mismatch' });

    const elsewhere = await send('/elsewhere', { method: 'GET', assertion: false });
    assert.equal(elsewhere.response.status, 404);
    assert.equal(elsewhere.record.assertion, undefined);
  });
});
