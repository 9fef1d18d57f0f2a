// The structured log: exactly one JSON line per request, saying what was
// decided and why, with the caller's identity when there is one, and never
// a token or the origin credential.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets } from './helpers/http.mjs';
import { hmacToken, claimsFor, tamperPayload } from './helpers/tokens.mjs';

// The demo origin's own fetches of the gate's assertion keys are requests
// too, but not this test's.
const isRequestLine = (line) => (line.event === 'request' || 'decision' in line) && line.path !== '/.well-known/portcullis/jwks.json';

describe('request log', () => {
  let stack;
  const originCredential = `Basic ${randomBytes(24).toString('base64')}`;

  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_REQUIRED_SCOPES: 'invoices:read', ORIGIN_AUTHORIZATION: originCredential }) });
  });

  after(async () => {
    await stack?.close();
  });

  test('one line per request with decision, reason, status, identity and duration; no secrets', async () => {
    const valid = await stack.issuer.mint({ sub: 'log-subject', client_id: 'log-client' });
    const noScope = await stack.issuer.mint({ sub: 'log-noscope', scope: 'other' });
    const expired = await stack.issuer.mint({ exp: Math.floor(Date.now() / 1000) - 3600 });
    const tampered = tamperPayload(valid, { sub: 'admin' });
    const hmac = hmacToken(claimsFor(stack.issuer, { aud: stack.resource }), 'secret-ish');
    const auth = (token) => ({ headers: { authorization: `Bearer ${token}` } });

    const plan = [
      { path: '/mcp/echo', init: auth(valid), status: 200, decision: 'allow', sub: 'log-subject', client_id: 'log-client' },
      { path: '/mcp', init: {}, status: 401, decision: 'deny' },
      { path: '/mcp', init: auth(expired), status: 401, decision: 'deny' },
      { path: '/mcp', init: auth(tampered), status: 401, decision: 'deny' },
      { path: '/mcp', init: auth(hmac), status: 401, decision: 'deny' },
      { path: `/mcp?access_token=${valid}`, init: {}, status: 400, decision: 'deny' },
      { path: '/mcp', init: auth(noScope), status: 403, decision: 'deny' },
      { path: '/nowhere', init: auth(valid), status: 404, decision: 'deny' },
      { path: '/mcp', init: { method: 'PUT', ...auth(valid) }, status: 405, decision: 'deny' },
      { path: '/.well-known/oauth-protected-resource/mcp', init: {}, status: 200 },
    ];

    const already = stack.gate.output.json(isRequestLine).length;
    for (const step of plan) {
      const response = await stack.gate.fetch(step.path, step.init);
      assert.equal(response.status, step.status, step.path);
      await response.body?.cancel();
    }
    const lines = (await stack.gate.output.waitFor(isRequestLine, { count: already + plan.length })).slice(already);
    // Exactly one line per request: wait a little for any stragglers.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(stack.gate.output.json(isRequestLine).length, already + plan.length, 'one log line per request');

    plan.forEach((step, i) => {
      const line = lines[i];
      assert.equal(line.status, step.status, `line ${i}: ${JSON.stringify(line)}`);
      if (step.decision) assert.equal(line.decision, step.decision, `line ${i}`);
      assert.equal(typeof line.decision, 'string');
      assert.equal(typeof line.reason, 'string');
      assert.ok(line.reason.length > 0);
      const durationKey = Object.keys(line).find((key) => key.startsWith('duration'));
      assert.ok(durationKey, `line ${i} has a duration`);
      assert.equal(typeof line[durationKey], 'number');
      if (step.sub) assert.equal(line.sub, step.sub);
      if (step.client_id) assert.equal(line.client_id, step.client_id);
    });
    // Refusals of different kinds carry different reasons.
    const reasons = new Set(lines.slice(1, 9).map((l) => l.reason));
    assert.ok(reasons.size >= 5, `reasons too coarse: ${[...reasons].join(', ')}`);

    assertNoSecrets(stack.gate.output.text, [valid, noScope, expired, tampered, hmac, originCredential, originCredential.split(' ')[1]]);
  });

  test('everything the worker prints on stdout is JSON lines', () => {
    const notJson = stack.gate.output.lines.filter((l) => l.stream === 'stdout' && l.json === undefined);
    assert.deepEqual(notJson.map((l) => l.line), []);
  });
});
