// Panic recovery (issue 7): a Rust panic aborts the wasm instance. The worker
// must answer that request with a generic 500, log it, never forward it, and
// keep serving later requests. The panic is triggered by a probe compiled only
// into a test build (cargo feature `panic-probe`, built into build-probe/ by
// scripts/test.sh); the deployed build has none (tests/supply-chain.test.mjs).

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT } from './helpers/gate.mjs';
import { assertNoSecrets, expectOriginUntouched } from './helpers/http.mjs';
import { startStack } from './helpers/stack.mjs';

const PANIC_BUILD = join(ROOT, 'build-probe');

describe('panic recovery', { skip: !existsSync(join(PANIC_BUILD, 'index.js')) && 'build-probe/ missing: run `bash scripts/build.sh --probes`' }, () => {
  let stack;
  let token;

  before(async () => {
    stack = await startStack({ buildDir: PANIC_BUILD });
    token = await stack.issuer.mint();
  });

  after(async () => {
    await stack?.close();
  });

  function post(headers = {}) {
    return stack.gate.fetch('/mcp/echo', {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        ...headers,
      },
      body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
    });
  }

  test('a request without the probe is forwarded (the probe build works)', async () => {
    const response = await post();
    assert.equal(response.status, 200);
    assert.equal((await response.json()).path, '/mcp/echo');
  });

  test('a panic is answered 500 with a generic body, logged, and never forwarded', async () => {
    const response = await expectOriginUntouched(stack.origin, () => post({ 'x-portcullis-panic-probe': '1' }));
    assert.equal(response.status, 500);
    assert.equal(response.headers.get('content-type'), 'application/json');
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const body = await response.text();
    assert.deepEqual(JSON.parse(body), { error: 'server_error', error_description: 'Internal error' });
    assert.ok(!/panic|probe|wasm|rust|\.rs\b/i.test(body), `the body says what failed: ${body}`);

    const [panicLine] = await stack.gate.output.waitFor((line) => line.event === 'panic');
    assert.match(panicLine.location, /^src\/lib\.rs:\d+$/);
    const [requestLine] = await stack.gate.output.waitFor((line) => line.event === 'request' && line.reason === 'panic');
    assert.equal(requestLine.status, 500);
    assert.equal(requestLine.decision, 'deny');
    assert.equal(requestLine.path, '/mcp/echo');
    assertNoSecrets(stack.gate.output.text, [token]);
  });

  test('the isolate keeps serving after a panic, and recovers from repeated ones', async () => {
    for (let round = 0; round < 3; round++) {
      const after = await post();
      assert.equal(after.status, 200, `round ${round}: request after a panic`);
      assert.equal((await after.json()).path, '/mcp/echo');
      const again = await expectOriginUntouched(stack.origin, () => post({ 'x-portcullis-panic-probe': '1' }));
      assert.equal(again.status, 500);
      await again.text();
    }
    const last = await post();
    assert.equal(last.status, 200);
    await last.text();
    // Unauthenticated requests still get the discovery challenge.
    const anonymous = await stack.gate.fetch('/mcp', { method: 'POST', body: '{}' });
    assert.equal(anonymous.status, 401);
  });
});
