// Rate limits (RATE_LIMITS, MCP_ROUTES' rate_limits), black-box: the built
// worker in Miniflare with real Rate Limiting bindings (Miniflare's
// `ratelimits`, the binding `[[ratelimits]]` declares in wrangler.toml), in
// front of the demo MCP server and the demo issuer. Each refusal is checked
// at the origin too: nothing over a limit reaches it.
//
// Miniflare's limiter counts in fixed windows (the period, from the epoch),
// so each test starts its counting early in a window (waitForWindow): a
// window ending mid-test would reset the counts.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startStack } from './helpers/stack.mjs';
import { corruptSignature } from './helpers/tokens.mjs';
import { expectOriginUntouched } from './helpers/http.mjs';

const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-06-18' };
const CALL = (name, id = 1) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: { invoice_id: 'INV-1001' } } });

/** Waits, when less than `margin` seconds of the current `period`-second window are left, for the next one. */
async function waitForWindow(period = 60, margin = 20) {
  const left = period - ((Date.now() / 1000) % period);
  if (left < margin) await new Promise((resolve) => setTimeout(resolve, left * 1000 + 50));
}

/** A POST of `body` (an object or a batch) with `token`, from `address`. */
function post(stack, token, body, { address = '198.51.100.1', headers = {} } = {}) {
  return stack.gate.fetch('/mcp', {
    method: 'POST',
    headers: { ...MCP_HEADERS, authorization: `Bearer ${token}`, 'cf-connecting-ip': address, ...headers },
    body: JSON.stringify(body),
  });
}

/**
 * Asserts `sent` (a pending response) was forwarded: the origin received one
 * more request (the demo origin answers a sessionless call with its own 400,
 * which is what arrives then), and the gate did not refuse it.
 */
async function forwarded(stack, sent) {
  const before = stack.origin.requests.length;
  const response = await sent;
  await response.arrayBuffer();
  assert.ok(![401, 403, 429, 503].includes(response.status), `refused: ${response.status}`);
  assert.equal(stack.origin.requests.length, before + 1, 'not forwarded');
}

/** Asserts a 429 over `rule`: Retry-After, the body's form, and the log line naming the rule. */
async function assertLimited(stack, response, { rule, retryAfter = '60', id }) {
  assert.equal(response.status, 429);
  assert.equal(response.headers.get('retry-after'), retryAfter);
  assert.equal(response.headers.get('www-authenticate'), null, 'a limit is not an authentication challenge');
  const body = await response.json();
  if (id === undefined) {
    assert.equal(body.error, 'rate_limited');
  } else {
    // A POST gets a JSON-RPC error for its request.
    assert.equal(body.jsonrpc, '2.0');
    assert.equal(body.id, id);
    assert.equal(body.error.code, -32029);
  }
  const line = await stack.gate.output.waitFor((l) => l.event === 'request' && l.reason === 'rate_limited' && l.rate_rule === rule);
  assert.equal(line.at(-1).status, 429);
}

describe('rate limits per subject and per tool', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      bindings: () => ({
        RATE_LIMITS: JSON.stringify([
          { binding: 'RL_USER', key: 'subject', name: 'calls per user' },
          { binding: 'RL_VOID', key: 'subject+tool', tools: ['void_invoice'], name: 'void_invoice per user' },
        ]),
      }),
      miniflare: {
        ratelimits: {
          RL_USER: { simple: { limit: 6, period: 60 } },
          RL_VOID: { simple: { limit: 2, period: 60 } },
        },
      },
    });
  });
  after(() => stack?.close());

  test("one user's loop is limited and another user's is not; one tool's limit leaves the other tools alone", async () => {
    await waitForWindow();
    const alice = await stack.issuer.mint({ sub: 'alice', scope: 'invoices:read invoices:write' });
    const bob = await stack.issuer.mint({ sub: 'bob', scope: 'invoices:read invoices:write' });
    // void_invoice: 2 per user per window.
    for (const id of [1, 2]) await forwarded(stack, post(stack, alice, CALL('void_invoice', id)));
    const voided = stack.origin.requests.length;
    await expectOriginUntouched(stack.origin, async () => {
      await assertLimited(stack, await post(stack, alice, CALL('void_invoice', 3)), { rule: 'void_invoice per user', id: 3 });
    });
    assert.equal(stack.origin.requests.length, voided);
    // Alice's other tools still pass, until her overall limit (6, the
    // refused void counted too: every rule counts each message).
    for (const id of [4, 5, 6]) await forwarded(stack, post(stack, alice, CALL('lookup_invoice', id)));
    await expectOriginUntouched(stack.origin, async () => {
      await assertLimited(stack, await post(stack, alice, CALL('lookup_invoice', 7)), { rule: 'calls per user', id: 7 });
    });
    // Bob is another subject: his void_invoice and lookups pass.
    await forwarded(stack, post(stack, bob, CALL('void_invoice')));
    await forwarded(stack, post(stack, bob, CALL('lookup_invoice')));
  });

  test('each message of a batch counts', async () => {
    await waitForWindow();
    const carol = await stack.issuer.mint({ sub: 'carol', scope: 'invoices:read invoices:write' });
    const before = stack.origin.requests.length;
    // One request of three void_invoice calls: three counts, over the limit of two.
    const batch = [CALL('void_invoice', 1), CALL('void_invoice', 2), CALL('void_invoice', 3)];
    await assertLimited(stack, await post(stack, carol, batch), { rule: 'void_invoice per user', id: null });
    assert.equal(stack.origin.requests.length, before, 'a batch over its limit reached the origin');
    const dave = await stack.issuer.mint({ sub: 'dave', scope: 'invoices:read invoices:write' });
    // Five lookups in one batch count five of dave's six.
    const lookups = [1, 2, 3, 4, 5].map((id) => CALL('lookup_invoice', id));
    const passed = await post(stack, dave, lookups);
    assert.notEqual(passed.status, 429);
    await passed.arrayBuffer();
    assert.equal(stack.origin.requests.length, before + 1);
    await forwarded(stack, post(stack, dave, CALL('lookup_invoice', 6)));
    await assertLimited(stack, await post(stack, dave, CALL('lookup_invoice', 7)), { rule: 'calls per user', id: 7 });
  });

  test('a GET over the limit gets 429 in plain JSON; a refused token is never counted', async () => {
    await waitForWindow();
    const erin = await stack.issuer.mint({ sub: 'erin', scope: 'invoices:read' });
    const expired = await stack.issuer.mint({ sub: 'erin', exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 });
    // Refused tokens of erin's spend none of erin's quota.
    for (let i = 0; i < 8; i++) assert.equal((await post(stack, expired, CALL('lookup_invoice'))).status, 401);
    for (let i = 0; i < 6; i++) await forwarded(stack, post(stack, erin, CALL('lookup_invoice', i)));
    const before = stack.origin.requests.length;
    const get = await stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${erin}`, accept: 'text/event-stream', 'mcp-protocol-version': '2025-06-18' } });
    await assertLimited(stack, get, { rule: 'calls per user' });
    assert.equal(stack.origin.requests.length, before);
  });
});

describe('the address rule', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      bindings: () => ({ RATE_LIMITS: JSON.stringify([{ binding: 'RL_ADDRESS', key: 'address', period: 10 }]) }),
      miniflare: { ratelimits: { RL_ADDRESS: { simple: { limit: 3, period: 10 } } } },
    });
  });
  after(() => stack?.close());

  test('throttles a flood of forged tokens before their checks, and never a verified token', async () => {
    const flooder = '203.0.113.7';
    await waitForWindow(10, 6);
    const valid = await stack.issuer.mint({ sub: 'frank', scope: 'invoices:read' });
    // Verified once (counted once), then in the isolate's cache: never counted again.
    await forwarded(stack, post(stack, valid, CALL('lookup_invoice'), { address: flooder }));
    const statuses = [];
    await expectOriginUntouched(stack.origin, async () => {
      for (let i = 0; i < 6; i++) {
        const forged = corruptSignature(await stack.issuer.mint({ sub: `mallory-${i}` }));
        const response = await post(stack, forged, CALL('lookup_invoice'), { address: flooder });
        statuses.push(response.status);
        await response.arrayBuffer();
      }
    });
    // Two checks left in the window after the valid token's count, then 429s.
    assert.deepEqual(statuses, [401, 401, 429, 429, 429, 429]);
    const limited = await stack.gate.output.waitFor((l) => l.event === 'request' && l.reason === 'rate_limited', { count: 4 });
    assert.equal(limited.length, 4);
    assert.ok(limited.every((l) => l.rate_rule === 'RL_ADDRESS:address' && l.status === 429));
    // The verified token from the flooding address still passes.
    for (let i = 0; i < 3; i++) await forwarded(stack, post(stack, valid, CALL('lookup_invoice'), { address: flooder }));
    // Another address is not throttled.
    const forged = corruptSignature(await stack.issuer.mint({ sub: 'mallory-x' }));
    assert.equal((await post(stack, forged, CALL('lookup_invoice'), { address: '203.0.113.8' })).status, 401);
    const retry = await post(stack, corruptSignature(valid), CALL('lookup_invoice', 9), { address: flooder });
    assert.equal(retry.status, 429);
    assert.equal(retry.headers.get('retry-after'), '10');
    assert.equal((await retry.json()).id, null, 'the body is not read before an address count');
  });
});

describe('when the binding fails', () => {
  let stack;
  before(async () => {
    stack = await startStack({
      bindings: () => ({
        RATE_LIMITS: JSON.stringify([
          { binding: 'RL_BROKEN', key: 'subject', name: 'lenient' },
          { binding: 'RL_STRICT_BROKEN', key: 'client', on_error: 'refuse', methods: ['tools/call'], name: 'strict' },
        ]),
      }),
      miniflare: {
        // Bindings that have `limit` but throw when it is called: a service
        // with no RPC entry point, standing in for a limiter outage.
        serviceBindings: { RL_BROKEN: () => new Response('down', { status: 503 }), RL_STRICT_BROKEN: () => new Response('down', { status: 503 }) },
      },
    });
  });
  after(() => stack?.close());

  test('a rule lets the request through and logs it (the default), or refuses with 503 when it says so', async () => {
    const token = await stack.issuer.mint({ sub: 'gina', client_id: 'agent-1', scope: 'invoices:read' });
    const list = { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} };
    await forwarded(stack, post(stack, token, list));
    const [line] = await stack.gate.output.waitFor((l) => l.event === 'request' && l.decision === 'allow');
    assert.deepEqual(line.rate_limit_errors, ['lenient']);
    await expectOriginUntouched(stack.origin, async () => {
      const refused = await post(stack, token, CALL('lookup_invoice'));
      assert.equal(refused.status, 503);
      assert.ok(Number(refused.headers.get('retry-after')) > 0);
      assert.deepEqual(await refused.json(), { error: 'temporarily_unavailable', error_description: 'The service is temporarily unavailable' });
    });
    const [refusal] = await stack.gate.output.waitFor((l) => l.reason === 'rate_limit_unavailable');
    assert.equal(refusal.rate_rule, 'strict');
    assert.equal(refusal.status, 503);
  });
});

describe('bad rule configuration', () => {
  const cases = [
    {
      name: 'a binding that is not bound',
      bindings: { RATE_LIMITS: JSON.stringify([{ binding: 'RL_NOWHERE', key: 'subject' }]) },
      expected: 'RATE_LIMITS: rule 1: binding "RL_NOWHERE" is not a Rate Limiting binding of this worker',
    },
    {
      name: 'an unknown key kind',
      bindings: { RATE_LIMITS: JSON.stringify([{ binding: 'RL_USER', key: 'user' }]) },
      expected: 'RATE_LIMITS: rule 1: key "user" is not one of subject, client, subject+tool, client+tool, method, address',
    },
    {
      name: "a route's rule naming a KV namespace",
      bindings: {
        MCP_ROUTES: (ctx) => JSON.stringify([{ resource: ctx.resource, origin: ctx.origin.url, rate_limits: [{ binding: 'JWKS_CACHE', key: 'client' }] }]),
      },
      expected: 'rate_limits: rule 1: binding "JWKS_CACHE" is not a Rate Limiting binding of this worker',
    },
  ];
  for (const { name, bindings, expected } of cases) {
    test(`${name} refuses every request with the problem named`, async () => {
      const stack = await startStack({
        bindings: (ctx) => ({
          ...Object.fromEntries(Object.entries(bindings).map(([k, v]) => [k, typeof v === 'function' ? v(ctx) : v])),
          ...(bindings.MCP_ROUTES ? { MCP_RESOURCE: undefined, MCP_ORIGIN: undefined } : {}),
        }),
        miniflare: { ratelimits: { RL_USER: { simple: { limit: 100, period: 60 } } } },
      });
      try {
        const token = await stack.issuer.mint({ sub: 'henry', scope: 'invoices:read' });
        await expectOriginUntouched(stack.origin, async () => {
          const response = await post(stack, token, CALL('lookup_invoice'));
          assert.equal(response.status, 500);
          assert.deepEqual(await response.json(), { error: 'server_error', error_description: 'Internal error' });
        });
        const [line] = await stack.gate.output.waitFor((l) => l.event === 'config_invalid');
        assert.ok(line.problems.includes(expected), line.problems);
      } finally {
        await stack.close();
      }
    });
  }
});
