// Browser clients: the gate answers CORS preflight for the MCP endpoint,
// lets allowed origins read the challenge and the MCP session headers, and
// refuses any other Origin with 403 without forwarding (MCP transport:
// validate Origin against DNS rebinding).

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startStack } from './helpers/stack.mjs';
import { expectOriginUntouched } from './helpers/http.mjs';

const INSPECTOR = 'http://localhost:6274';

describe('browser origins', () => {
  let stack;
  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_ALLOWED_ORIGINS: INSPECTOR }) });
  });
  after(() => stack?.close());

  test('preflight from an allowed origin is answered by the gate', async () => {
    const response = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', {
        method: 'OPTIONS',
        headers: { origin: INSPECTOR, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, mcp-session-id' },
      }),
    );
    assert.equal(response.status, 204);
    assert.equal(response.headers.get('access-control-allow-origin'), INSPECTOR);
    assert.match(response.headers.get('access-control-allow-methods'), /POST/);
    assert.match(response.headers.get('access-control-allow-headers'), /Authorization/i);
    assert.match(response.headers.get('access-control-allow-headers'), /Mcp-Session-Id/i);
  });

  test('the 401 challenge and the session headers are readable by the allowed origin', async () => {
    const challenge = await stack.gate.fetch('/mcp', { headers: { origin: INSPECTOR } });
    assert.equal(challenge.status, 401);
    assert.equal(challenge.headers.get('access-control-allow-origin'), INSPECTOR);
    assert.match(challenge.headers.get('access-control-expose-headers'), /WWW-Authenticate/);
    await challenge.body?.cancel();

    const token = await stack.issuer.mint();
    const init = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { origin: INSPECTOR, authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '0' } } }),
    });
    assert.equal(init.status, 200);
    assert.equal(init.headers.get('access-control-allow-origin'), INSPECTOR);
    assert.match(init.headers.get('access-control-expose-headers'), /Mcp-Session-Id/);
    assert.ok(init.headers.get('mcp-session-id'));
    await init.body?.cancel();
  });

  test('any other origin gets 403 and nothing is forwarded, even with a valid token', async () => {
    const token = await stack.issuer.mint();
    for (const method of ['GET', 'POST', 'DELETE', 'OPTIONS']) {
      const response = await expectOriginUntouched(stack.origin, () =>
        stack.gate.fetch('/mcp', {
          method,
          headers: { origin: 'http://attacker.example', authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: method === 'POST' ? JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }) : undefined,
        }),
      );
      assert.equal(response.status, 403, method);
      assert.equal(response.headers.get('access-control-allow-origin'), null);
      await response.body?.cancel();
    }
  });

  test('the metadata stays readable from any origin', async () => {
    const response = await stack.gate.fetch('/.well-known/oauth-protected-resource/mcp', { headers: { origin: 'http://attacker.example' } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('access-control-allow-origin'), '*');
    await response.body?.cancel();
  });
});
