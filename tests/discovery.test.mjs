// Discovery as an MCP client does it: a request without a token gets a 401
// whose challenge points at the protected resource metadata (RFC 9728),
// which names the authorization server, whose metadata (RFC 8414) names the
// keys. Also the gate's answers for paths and methods it does not serve.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { discoverOAuthProtectedResourceMetadata, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, expectOriginUntouched, expectRefusal, parseChallenge } from './helpers/http.mjs';

describe('discovery', () => {
  let stack;
  let metadataUrl;

  before(async () => {
    stack = await startStack({
      bindings: () => ({
        MCP_SCOPES_SUPPORTED: 'invoices:read invoices:write',
        MCP_REQUIRED_SCOPES: 'invoices:read',
        MCP_RESOURCE_NAME: 'Demo invoices',
        MCP_RESOURCE_DOCUMENTATION: 'https://docs.example.com/invoices-mcp',
      }),
    });
    metadataUrl = `${stack.base}/.well-known/oauth-protected-resource/mcp`;
  });

  after(async () => {
    await stack?.close();
  });

  test('a request without a token gets a 401 challenge naming the metadata and the required scope', async () => {
    const response = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
      }),
    );
    await expectRefusal(response, { status: 401, error: null, resourceMetadata: metadataUrl, scope: 'invoices:read' });
    // The official client reads the same challenge the same way.
    const params = extractWWWAuthenticateParams(response);
    assert.equal(params.resourceMetadataUrl?.href, metadataUrl);
    assert.equal(params.scope, 'invoices:read');
    assert.equal(params.error, undefined);
  });

  test('a non-Bearer scheme counts as no credentials', async () => {
    for (const authorization of ['Basic dXNlcjpwYXNz', 'Digest username="x"', 'DPoP abc.def.ghi']) {
      const response = await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/mcp', { headers: { authorization } }));
      await expectRefusal(response, { status: 401, error: null, resourceMetadata: metadataUrl, scope: 'invoices:read' });
    }
  });

  test('following resource_metadata from the challenge yields the protected resource metadata', async () => {
    const challenge = await stack.gate.fetch('/mcp');
    const { params } = parseChallenge(challenge.headers.get('www-authenticate'));
    await challenge.body?.cancel();
    const response = await fetch(params.resource_metadata, { signal: AbortSignal.timeout(10_000) });
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type'), /^application\/json\b/);
    assert.equal(response.headers.get('access-control-allow-origin'), '*');
    assert.match(response.headers.get('cache-control') ?? '', /max-age=\d+/);
    const metadata = await response.json();
    assert.deepEqual(metadata, {
      resource: stack.resource,
      authorization_servers: [stack.issuer.issuer],
      scopes_supported: ['invoices:read', 'invoices:write'],
      bearer_methods_supported: ['header'],
      resource_name: 'Demo invoices',
      resource_documentation: 'https://docs.example.com/invoices-mcp',
    });
  });

  test('the root well-known form serves the same document', async () => {
    const [inserted, root] = await Promise.all([
      stack.gate.fetch('/.well-known/oauth-protected-resource/mcp').then((r) => r.json()),
      stack.gate.fetch('/.well-known/oauth-protected-resource'),
    ]);
    assert.equal(root.status, 200);
    assert.equal(root.headers.get('access-control-allow-origin'), '*');
    assert.match(root.headers.get('cache-control') ?? '', /max-age=\d+/);
    assert.deepEqual(await root.json(), inserted);
  });

  test('metadata requests never reach the origin', async () => {
    await expectOriginUntouched(stack.origin, async () => {
      for (const path of ['/.well-known/oauth-protected-resource', '/.well-known/oauth-protected-resource/mcp']) {
        const response = await stack.gate.fetch(path);
        assert.equal(response.status, 200);
        await response.body?.cancel();
      }
    });
  });

  test('the official SDK discovers the metadata and the issuer publishes its keys', async () => {
    const metadata = await discoverOAuthProtectedResourceMetadata(stack.resource);
    assert.equal(metadata.resource, stack.resource);
    assert.deepEqual(metadata.authorization_servers, [stack.issuer.issuer]);
    // Next hop, RFC 8414 path insertion: the authorization server metadata and its JWKS.
    const issuer = new URL(metadata.authorization_servers[0]);
    const asMetadata = await (await fetch(new URL(`/.well-known/oauth-authorization-server${issuer.pathname.replace(/\/$/, '')}`, issuer))).json();
    assert.equal(asMetadata.issuer, stack.issuer.issuer);
    const jwks = await (await fetch(asMetadata.jwks_uri)).json();
    assert.ok(jwks.keys.length >= 4);
    for (const key of jwks.keys) {
      assert.ok(key.kid && key.alg && key.use === 'sig');
      assert.equal(key.d, undefined, 'no private key material');
    }
  });

  test('other paths are 404 and other methods 405, with JSON bodies, origin untouched', async () => {
    await expectOriginUntouched(stack.origin, async () => {
      for (const path of ['/', '/mcpx', '/other', '/api/mcp', '/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
        const response = await stack.gate.fetch(path);
        assert.equal(response.status, 404, path);
        assert.match(response.headers.get('content-type') ?? '', /^application\/json\b/, path);
        const body = await response.json();
        assert.equal(typeof body.error, 'string');
      }
      const token = await stack.issuer.mint();
      for (const method of ['PUT', 'PATCH']) {
        const response = await stack.gate.fetch('/mcp', { method, headers: { authorization: `Bearer ${token}` }, body: '{}' });
        assert.equal(response.status, 405, method);
        const body = await response.json();
        assert.equal(typeof body.error, 'string');
      }
    });
  });

  test('no token appears in the gate output', async () => {
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
  });
});
