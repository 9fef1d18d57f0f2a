// Opaque access tokens checked by RFC 7662 introspection at a real
// authorization server (oidc-provider): active tokens pass, revoked ones are
// refused once the cache TTL runs out, wrong audiences are refused, an
// unreachable endpoint means 503, one introspection call serves many
// requests, and the gate's client secret never appears in its output.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAuthorizationServer } from '../demo/authorization-server.mjs';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, errorBody, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const OTHER_RESOURCE = 'https://billing.example.com/mcp';
const INTROSPECTION_PATH = '/token/introspection';

async function call(stack, token) {
  return stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
}

describe('opaque tokens through RFC 7662 introspection (oidc-provider)', () => {
  let as;
  let stack;
  const tokens = [];

  before(async () => {
    // The resource is only known once the stack has its port: start the
    // authorization server with a placeholder and swap it in below.
    const resources = [];
    as = await startAuthorizationServer({ resources });
    stack = await startStack({
      bindings: ({ resource }) => {
        resources.push(resource, OTHER_RESOURCE);
        return {
          OAUTH_ISSUER: as.issuer,
          OAUTH_JWKS_URI: undefined,
          OAUTH_TOKEN_FORMAT: 'opaque',
          // No OAUTH_INTROSPECTION_URI: discovered from the issuer's metadata.
          OAUTH_INTROSPECTION_CLIENT_ID: as.gateClient.id,
          OAUTH_INTROSPECTION_CLIENT_SECRET: as.gateClient.secret,
          INTROSPECTION_CACHE_TTL_SECONDS: '2',
          MCP_REQUIRED_SCOPES: 'invoices:read',
        };
      },
    });
  });

  after(async () => {
    await stack?.close();
    await as?.close();
  });

  test('an active token passes, with identity and scopes from the introspection response', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    tokens.push(token);
    assert.ok(!token.includes('.'), 'oidc-provider issued an opaque token');
    const response = await call(stack, token);
    assert.equal(response.status, 200);
    const echo = await response.json();
    assert.equal(echo.headers['x-auth-client-id'], as.agentClient.id);
    assert.equal(echo.headers['x-auth-scopes'], 'invoices:read');
    assert.equal(echo.headers.authorization, undefined, 'the token never reaches the origin');
  });

  test('one introspection call serves many requests with the same token', async (t) => {
    const token = await as.token();
    tokens.push(token);
    const before = as.count(INTROSPECTION_PATH);
    const REQUESTS = 25;
    for (let i = 0; i < REQUESTS; i += 1) {
      const response = await call(stack, token);
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
    const calls = as.count(INTROSPECTION_PATH) - before;
    t.diagnostic(`introspection calls for ${REQUESTS} requests: ${calls}`);
    console.log(`introspection: ${REQUESTS} requests with one token caused ${calls} introspection call(s)`);
    assert.ok(calls <= 2, `${calls} introspection calls`);
  });

  test('a token revoked at the authorization server is refused once the cache TTL has passed', async () => {
    const token = await as.token();
    tokens.push(token);
    assert.equal((await call(stack, token)).status, 200);
    await as.revoke(token);
    await sleep(2200);
    const response = await expectOriginUntouched(stack.origin, () => call(stack, token));
    await expectRefusal(response, { status: 401, error: 'invalid_token' });
  });

  test('a token for another resource (audience) is refused, origin untouched', async () => {
    const token = await as.token({ resource: OTHER_RESOURCE });
    tokens.push(token);
    const response = await expectOriginUntouched(stack.origin, () => call(stack, token));
    await expectRefusal(response, { status: 401, error: 'invalid_token' });
    const [line] = await stack.gate.output.waitFor((l) => l.event === 'request' && l.reason === 'audience_mismatch');
    assert.equal(line.status, 401);
  });

  test('an unknown token is refused', async () => {
    const response = await expectOriginUntouched(stack.origin, () => call(stack, 'not-a-token-the-server-issued'));
    await expectRefusal(response, { status: 401, error: 'invalid_token' });
  });

  test('the introspection endpoint down: 503 with Retry-After, never 401, never forwarded', async () => {
    const token = await as.token();
    tokens.push(token);
    as.setDown(true);
    try {
      const response = await expectOriginUntouched(stack.origin, () => call(stack, token));
      assert.equal(response.status, 503);
      assert.match(response.headers.get('retry-after') ?? '', /^\d+$/);
      await errorBody(response);
    } finally {
      as.setDown(false);
    }
  });

  test("the gate's client secret and the tokens never appear in its output", () => {
    assertNoSecrets(stack.gate.output.text, [as.gateClient.secret, as.agentClient.secret, ...tokens]);
  });
});
