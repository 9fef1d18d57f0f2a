// What the gate accepts: every supported signature algorithm, the
// JWT_ALGORITHMS allow-list, audiences (arrays, OAUTH_AUDIENCE), scopes from
// `scope` or `scp`, and clock leeway.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

const now = () => Math.floor(Date.now() / 1000);

/** GETs /mcp/echo with `token`; returns { status, echo }. */
async function call(stack, token) {
  const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
  if (response.status !== 200) {
    await response.body?.cancel();
    return { status: response.status, echo: null, response };
  }
  return { status: 200, echo: await response.json() };
}

async function accepted(stack, token, label) {
  const { status, echo } = await call(stack, token);
  assert.equal(status, 200, `${label} should be accepted`);
  return echo;
}

async function rejected(stack, token, label) {
  const response = await expectOriginUntouched(stack.origin, () =>
    stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } }),
  );
  assert.equal(response.status, 401, `${label} should be refused`);
  await expectRefusal(response, { status: 401, error: 'invalid_token' });
}

describe('default settings', () => {
  let stack;

  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_REQUIRED_SCOPES: 'invoices:read' }) });
  });

  after(async () => {
    await stack?.close();
  });

  for (const alg of ['RS256', 'PS256', 'ES256', 'EdDSA']) {
    test(`${alg} is accepted by default`, async () => {
      const echo = await accepted(stack, await stack.issuer.mint({ sub: `user-${alg}` }, { alg }), alg);
      assert.equal(echo.headers['x-auth-subject'], `user-${alg}`);
    });
  }

  test('RS384, RS512, PS384 and PS512 are outside the default allow-list', async () => {
    for (const alg of ['RS384', 'RS512', 'PS384', 'PS512']) {
      await rejected(stack, await stack.issuer.mint({}, { alg }), alg);
    }
  });

  test('scopes from an `scp` array', async () => {
    const echo = await accepted(stack, await stack.issuer.mint({ scope: undefined, scp: ['invoices:read', 'reports'] }), 'scp');
    assert.equal(echo.headers['x-auth-scopes'], 'invoices:read reports');
  });

  test('scopes from a space-separated `scope` string', async () => {
    const echo = await accepted(stack, await stack.issuer.mint({ scope: 'reports invoices:read' }), 'scope');
    assert.deepEqual(echo.headers['x-auth-scopes'].split(' ').sort(), ['invoices:read', 'reports']);
  });

  test('audience as an array containing the resource', async () => {
    await accepted(stack, await stack.issuer.mint({ aud: ['https://other.example.com', stack.resource] }), 'aud array');
    await rejected(stack, await stack.issuer.mint({ aud: ['https://other.example.com', 'https://third.example.com'] }), 'aud array without the resource');
  });

  test('time claims within the default 60 s leeway are accepted', async () => {
    await accepted(stack, await stack.issuer.mint({ exp: now() - 20 }), 'exp 20 s ago');
    await accepted(stack, await stack.issuer.mint({ nbf: now() + 20 }), 'nbf in 20 s');
  });

  test('without ORIGIN_AUTHORIZATION the origin gets no Authorization header at all', async () => {
    const token = await stack.issuer.mint();
    const echo = await accepted(stack, token, 'plain');
    assert.equal(echo.headers.authorization, undefined);
    assertNoSecrets(JSON.stringify(stack.origin.requests), [token], 'origin requests');
  });

  test('metadata leaves out what is not configured', async () => {
    const metadata = await (await stack.gate.fetch('/.well-known/oauth-protected-resource/mcp')).json();
    assert.deepEqual(metadata, {
      resource: stack.resource,
      authorization_servers: [stack.issuer.issuer],
      bearer_methods_supported: ['header'],
    });
  });

  test('no token in the output', () => {
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
  });
});

describe('JWT_ALGORITHMS, OAUTH_AUDIENCE and JWT_LEEWAY_SECONDS configured', () => {
  let stack;
  const audiences = ['api://invoices', 'https://invoices.example.com'];

  before(async () => {
    stack = await startStack({
      issuer: { audience: audiences[0] },
      bindings: () => ({
        JWT_ALGORITHMS: 'RS384 RS512 PS384 PS512 EdDSA',
        OAUTH_AUDIENCE: audiences.join(' '),
        JWT_LEEWAY_SECONDS: '0',
      }),
    });
  });

  after(async () => {
    await stack?.close();
  });

  test('every listed algorithm is accepted', async () => {
    for (const alg of ['RS384', 'RS512', 'PS384', 'PS512', 'EdDSA']) {
      await accepted(stack, await stack.issuer.mint({}, { alg }), alg);
    }
  });

  test('an algorithm outside JWT_ALGORITHMS is refused, even a default one', async () => {
    for (const alg of ['RS256', 'PS256', 'ES256']) {
      await rejected(stack, await stack.issuer.mint({}, { alg }), alg);
    }
  });

  test('each configured audience is accepted, others are not', async () => {
    for (const aud of audiences) await accepted(stack, await stack.issuer.mint({ aud }, { alg: 'EdDSA' }), aud);
    await accepted(stack, await stack.issuer.mint({ aud: ['x', audiences[1]] }, { alg: 'EdDSA' }), 'array');
    await rejected(stack, await stack.issuer.mint({ aud: 'api://other' }, { alg: 'EdDSA' }), 'other audience');
  });

  test('zero leeway: just expired or just not yet valid is refused', async () => {
    await rejected(stack, await stack.issuer.mint({ exp: now() - 5 }, { alg: 'EdDSA' }), 'exp 5 s ago');
    await rejected(stack, await stack.issuer.mint({ nbf: now() + 30 }, { alg: 'EdDSA' }), 'nbf in 30 s');
    await accepted(stack, await stack.issuer.mint({ exp: now() + 30 }, { alg: 'EdDSA' }), 'exp in 30 s');
  });

  test('no token in the output', () => {
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
  });
});
