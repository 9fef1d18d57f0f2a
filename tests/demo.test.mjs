// The demo stack on its own, without the gate (needs no build): the origin
// is a working MCP server that records what it receives, and the issuer's
// tokens verify against its published keys with an independent library.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { ALL_ALGS, startIssuer } from '../demo/issuer.mjs';
import { startOrigin } from '../demo/origin.mjs';

describe('demo origin', () => {
  let origin;

  before(async () => {
    origin = await startOrigin({ countdownIntervalMs: 50 });
  });

  after(async () => {
    await origin?.close();
  });

  test('serves MCP over Streamable HTTP with sessions and records every request', async () => {
    const client = new Client({ name: 'demo-check', version: '0' });
    const transport = new StreamableHTTPClientTransport(new URL(origin.url), {
      requestInit: { headers: { 'X-Auth-Subject': 'direct', 'X-Auth-Scopes': 'invoices:read' } },
    });
    await client.connect(transport);
    try {
      assert.ok(transport.sessionId);
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);
      const progress = [];
      const result = await client.callTool({ name: 'countdown', arguments: { from: 3 } }, undefined, { onprogress: (p) => progress.push(p.progress) });
      assert.match(result.content[0].text, /Liftoff/);
      assert.deepEqual(progress, [1, 2, 3]);
      const refused = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.equal(refused.isError, true, 'void_invoice needs invoices:write in X-Auth-Scopes');
    } finally {
      await transport.terminateSession();
      await client.close();
    }
    const posts = origin.requests.filter((r) => r.method === 'POST');
    assert.ok(posts.length >= 4);
    assert.equal(posts[0].path, '/mcp');
    assert.equal(posts[0].headers['x-auth-subject'], 'direct');
    assert.match(posts[0].body, /"initialize"/);
    assert.equal(origin.sessions.size, 0, 'DELETE ended the session');
  });

  test('records requests it does not serve, with path and query', async () => {
    const response = await fetch(`${origin.url}/elsewhere?q=1`, { method: 'PUT', body: 'x' });
    assert.equal(response.status, 404);
    await response.body?.cancel();
    const last = origin.requests.at(-1);
    assert.deepEqual([last.method, last.path, last.query, last.body], ['PUT', '/mcp/elsewhere', '?q=1', 'x']);
  });
});

describe('demo issuer', () => {
  let issuer;
  const audience = 'http://127.0.0.1:1/mcp';

  before(async () => {
    issuer = await startIssuer({ audience, path: '/realm' });
  });

  after(async () => {
    await issuer?.close();
  });

  test('publishes RFC 8414 metadata (path-inserted) and OpenID metadata naming its JWKS', async () => {
    const oauth = await (await fetch(`${issuer.origin}/.well-known/oauth-authorization-server/realm`)).json();
    const openid = await (await fetch(`${issuer.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(oauth.issuer, issuer.issuer);
    assert.equal(oauth.jwks_uri, issuer.jwksUri);
    assert.deepEqual(openid, oauth);
  });

  test('tokens of every algorithm verify against the published keys', async () => {
    const jwks = createRemoteJWKSet(new URL(issuer.jwksUri));
    for (const alg of ALL_ALGS) {
      const token = await issuer.mint({ sub: alg }, { alg });
      assert.equal(decodeProtectedHeader(token).typ, 'at+jwt');
      const { payload } = await jwtVerify(token, jwks, { issuer: issuer.issuer, audience, algorithms: [alg] });
      assert.equal(payload.sub, alg);
      assert.ok(payload.exp - payload.iat === 300);
    }
  });

  test('can be switched to failing and back, and counts fetches', async () => {
    const before = issuer.count('/realm/jwks');
    await issuer.setDown(true);
    assert.equal((await fetch(issuer.jwksUri)).status, 500);
    await issuer.setDown('refuse');
    await assert.rejects(fetch(issuer.jwksUri));
    await issuer.setDown(false);
    assert.equal((await fetch(issuer.jwksUri)).status, 200);
    assert.equal(issuer.count('/realm/jwks'), before + 2, 'refused connections are never counted');
  });
});
