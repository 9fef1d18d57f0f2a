// Where the keys come from: discovery through the issuer's metadata when
// OAUTH_JWKS_URI is not set (RFC 8414 path insertion, OpenID Connect
// fallback), several trusted issuers, caching, tolerance of keys the gate
// cannot use, and failing closed with 503 when no keys can be had.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { exportJWK, generateKeyPair, generateSecret } from 'jose';
import { generateSigningKey, startIssuer } from '../demo/issuer.mjs';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, errorBody, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

/** JWKS entries a real authorization server may publish that the gate cannot or must not use. */
async function unusableKeys() {
  const p384 = await generateKeyPair('ES384', { extractable: true });
  const encryption = await generateKeyPair('RSA-OAEP-256', { extractable: true });
  const hmac = await generateSecret('HS256', { extractable: true });
  return [
    { ...(await exportJWK(p384.publicKey)), kid: 'p384-key', alg: 'ES384', use: 'sig' },
    { ...(await exportJWK(encryption.publicKey)), kid: 'enc-key', alg: 'RSA-OAEP-256', use: 'enc' },
    { ...(await exportJWK(hmac)), kid: 'hmac-key', alg: 'HS256' },
    { kty: 'RSA', kid: 'broken-key', alg: 'RS256', n: 'AQAB', e: 'AQAB' },
    { kty: 'XYZ', kid: 'unknown-type' },
  ];
}

describe('JWKS discovery and caching (no OAUTH_JWKS_URI)', () => {
  let stack;
  let tenant;

  before(async () => {
    // A second issuer with a path, serving only the OpenID Connect document.
    tenant = await startIssuer({ path: '/tenant-b', discovery: 'openid', algs: ['ES256', 'RS256'] });
    stack = await startStack({
      issuer: { discovery: 'oauth', extraJwks: await unusableKeys() },
      bindings: ({ issuer }) => ({
        OAUTH_ISSUER: `${issuer.issuer} ${tenant.issuer}`,
        OAUTH_JWKS_URI: undefined,
      }),
    });
  });

  after(async () => {
    await stack?.close();
    await tenant?.close();
  });

  test('keys found through RFC 8414 metadata, unusable keys in the set ignored', async () => {
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${await stack.issuer.mint({ sub: 'via-discovery' })}` } });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).headers['x-auth-subject'], 'via-discovery');
    const paths = stack.issuer.requests.map((r) => r.path);
    assert.deepEqual(paths, ['/.well-known/oauth-authorization-server', '/jwks']);
  });

  test('an issuer with a path: path-inserted RFC 8414 first, then OpenID Connect discovery', async () => {
    const token = await tenant.mint({ aud: stack.resource, sub: 'tenant-user' }, { alg: 'ES256' });
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    assert.equal((await response.json()).headers['x-auth-subject'], 'tenant-user');
    const paths = tenant.requests.map((r) => r.path);
    assert.deepEqual(paths, ['/.well-known/oauth-authorization-server/tenant-b', '/tenant-b/.well-known/openid-configuration', '/tenant-b/jwks']);
  });

  test('both issuers are advertised in the resource metadata', async () => {
    const metadata = await (await stack.gate.fetch('/.well-known/oauth-protected-resource')).json();
    assert.deepEqual(metadata.authorization_servers, [stack.issuer.issuer, tenant.issuer]);
  });

  test("one issuer's key cannot vouch for another issuer's token", async () => {
    const claims = { aud: stack.resource };
    // iss = first issuer, signed with the tenant's key (kid published by the tenant only).
    const forgedA = await stack.issuer.mint(claims, { key: tenant.keys.RS256 });
    // iss = tenant, signed with the first issuer's key.
    const forgedB = await tenant.mint(claims, { key: stack.issuer.keys.ES256 });
    for (const token of [forgedA, forgedB]) {
      const response = await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } }));
      await expectRefusal(response, { status: 401, error: 'invalid_token' });
    }
  });

  test('tokens signed with the unusable keys are refused', async () => {
    const p384 = await generateKeyPair('ES384', { extractable: true });
    const token = await stack.issuer.mint({}, { key: { alg: 'ES384', kid: 'p384-key', privateKey: p384.privateKey } });
    const response = await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } }));
    await expectRefusal(response, { status: 401, error: 'invalid_token' });
  });

  test('the key set is cached: more requests cause no more fetches', async () => {
    const jwksBefore = stack.issuer.count('/jwks');
    const metadataBefore = stack.issuer.count('/.well-known/oauth-authorization-server');
    for (let i = 0; i < 5; i += 1) {
      const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${await stack.issuer.mint({}, { alg: i % 2 ? 'EdDSA' : 'PS256' })}` } });
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
    assert.equal(stack.issuer.count('/jwks'), jwksBefore);
    assert.equal(stack.issuer.count('/.well-known/oauth-authorization-server'), metadataBefore);
  });

  test('unknown kids do not make the gate hammer the issuer', async () => {
    const before = stack.issuer.count('/jwks');
    for (let i = 0; i < 6; i += 1) {
      const stranger = await generateSigningKey('ES256');
      const response = await stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${await stack.issuer.mint({}, { key: stranger })}` } });
      assert.equal(response.status, 401);
      await response.body?.cancel();
    }
    assert.ok(stack.issuer.count('/jwks') - before <= 1, `refetched ${stack.issuer.count('/jwks') - before} times`);
  });

  test('no token in the output', () => {
    assertNoSecrets(stack.gate.output.text, [...stack.issuer.minted, ...tenant.minted]);
  });
});

/** Asserts a valid-looking token is answered 503 + Retry-After without touching the origin. */
async function expectUnavailable(stack, token) {
  const response = await expectOriginUntouched(stack.origin, () =>
    stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    }),
  );
  assert.equal(response.status, 503);
  const retryAfter = response.headers.get('retry-after');
  assert.match(retryAfter ?? '', /^\d+$/, 'Retry-After in seconds');
  assert.ok(Number(retryAfter) > 0);
  await errorBody(response);
}

describe('JWKS unreachable from the start: 503, never forwarded', () => {
  test('connection refused at the configured OAUTH_JWKS_URI', async () => {
    const stack = await startStack();
    try {
      await stack.issuer.setDown('refuse');
      for (let i = 0; i < 3; i += 1) await expectUnavailable(stack, await stack.issuer.mint());
      const [line] = await stack.gate.output.waitFor((l) => l.status === 503);
      assert.equal(line.decision, 'deny');
      // Requests that need no keys are still answered as usual.
      const missing = await stack.gate.fetch('/mcp');
      assert.equal(missing.status, 401);
      await missing.body?.cancel();
      assert.equal(stack.origin.requests.length, 0);
      assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
    } finally {
      await stack.close();
    }
  });

  test('JWKS answering 500 after successful discovery', async () => {
    const stack = await startStack({ bindings: () => ({ OAUTH_JWKS_URI: undefined }) });
    try {
      stack.issuer.setHandler((req, res, url) => {
        if (url.pathname !== '/jwks') return false;
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('boom');
        return true;
      });
      await expectUnavailable(stack, await stack.issuer.mint());
      assert.ok(stack.issuer.count('/jwks') >= 1, 'the gate did try the JWKS');
      await expectUnavailable(stack, await stack.issuer.mint({}, { alg: 'ES256' }));
      assert.equal(stack.origin.requests.length, 0);
    } finally {
      await stack.close();
    }
  });

  test('discovery metadata naming a different issuer is not trusted', async () => {
    const stack = await startStack({
      issuer: { metadata: { issuer: 'http://127.0.0.1:9/impostor' } },
      bindings: () => ({ OAUTH_JWKS_URI: undefined }),
    });
    try {
      await expectUnavailable(stack, await stack.issuer.mint());
      assert.equal(stack.issuer.count('/jwks'), 0, 'keys from an untrusted metadata document are never fetched');
      assert.equal(stack.origin.requests.length, 0);
    } finally {
      await stack.close();
    }
  });
});
