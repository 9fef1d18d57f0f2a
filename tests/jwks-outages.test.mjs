// The key set's life cycle, seen from outside: key rotation, a storm of
// forged kids, an authorization server that goes down, slow, or answers
// garbage, Cache-Control freshness, and two issuers that must not affect
// each other. Lifetimes are set to a few seconds so expiry can be observed.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { generateSigningKey, startIssuer } from '../demo/issuer.mjs';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, errorBody, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Short lifetimes, so a test can wait for the cached set to go stale. */
const SHORT_LIFETIME = { JWKS_CACHE_TTL_SECONDS: '1', JWKS_MIN_TTL_SECONDS: '1' };

/** GETs /mcp/echo with `token`; returns the status (the body is discarded). */
async function statusFor(stack, token) {
  const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
  await response.body?.cancel();
  return response.status;
}

/** Asserts `token` is forwarded. */
async function expectAllowed(stack, token, message) {
  assert.equal(await statusFor(stack, token), 200, message);
}

/** Asserts `token` gets 503 + Retry-After, quickly enough, and the origin sees nothing. */
async function expectUnavailable(stack, token, { withinMs = 4000 } = {}) {
  const started = Date.now();
  const response = await expectOriginUntouched(stack.origin, () =>
    stack.gate.fetch('/mcp', { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' }),
  );
  const elapsed = Date.now() - started;
  assert.equal(response.status, 503);
  assert.match(response.headers.get('retry-after') ?? '', /^[1-9]\d*$/);
  await errorBody(response);
  assert.ok(elapsed < withinMs, `answered after ${elapsed} ms`);
  return elapsed;
}

/** Polls until `check()` is true or `timeoutMs` passes. */
async function eventually(check, { timeoutMs = 6000, everyMs = 200, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(everyMs);
  }
  assert.fail(`${message} not reached within ${timeoutMs} ms`);
}

/** Makes the issuer answer its JWKS path with `respond(res)` (other paths unchanged). */
function overrideJwks(issuer, respond) {
  issuer.setHandler((req, res, url) => {
    if (url.pathname !== '/jwks') return false;
    respond(res);
    return true;
  });
}

/** The issuer's real key set, with extra response headers. */
function serveJwksWith(issuer, headers) {
  overrideJwks(issuer, (res) => {
    res.writeHead(200, { 'content-type': 'application/jwk-set+json', ...headers });
    res.end(JSON.stringify(issuer.jwks()));
  });
}

describe('key rotation', () => {
  let stack;
  before(async () => {
    stack = await startStack({ issuer: { algs: ['RS256'] }, bindings: () => SHORT_LIFETIME });
  });
  after(() => stack?.close());

  test('a token signed with a newly published key is accepted at once, without waiting for expiry', async () => {
    const oldKey = stack.issuer.keys.RS256;
    await expectAllowed(stack, await stack.issuer.mint({}, { alg: 'RS256' }));
    const fetchesBefore = stack.issuer.count('/jwks');
    // Keep the cached set fresh for the whole test, so only the unknown kid can cause a fetch.
    serveJwksWith(stack.issuer, { 'cache-control': 'max-age=3600' });
    await sleep(1200);
    await expectAllowed(stack, await stack.issuer.mint({}, { alg: 'RS256', key: oldKey }), 'stale set served');
    await eventually(() => stack.issuer.count('/jwks') > fetchesBefore, { message: 'background refresh' });
    const settled = stack.issuer.count('/jwks');

    const newKey = await stack.issuer.addKey('RS256');
    assert.notEqual(newKey.kid, oldKey.kid);
    await expectAllowed(stack, await stack.issuer.mint({}, { alg: 'RS256' }), 'new kid accepted');
    assert.equal(stack.issuer.count('/jwks'), settled + 1, 'exactly one refetch for the new kid');
    await expectAllowed(stack, await stack.issuer.mint({}, { alg: 'RS256', key: oldKey }), 'old key still published');
  });

  test('a key removed from the set stops verifying once the cached set is refreshed', async () => {
    const rotating = await startStack({ issuer: { algs: ['RS256', 'ES256'] }, bindings: () => SHORT_LIFETIME });
    try {
      const retired = rotating.issuer.keys.ES256;
      const token = await rotating.issuer.mint({}, { alg: 'ES256' });
      await expectAllowed(rotating, token);
      rotating.issuer.removeKey(retired.kid);
      await eventually(
        async () => (await statusFor(rotating, await rotating.issuer.mint({}, { alg: 'ES256', key: retired }))) === 401,
        { timeoutMs: 8000, message: 'retired key refused' },
      );
      await expectRefusal(
        await expectOriginUntouched(rotating.origin, () =>
          rotating.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } }),
        ),
        { status: 401, error: 'invalid_token' },
      );
      await expectAllowed(rotating, await rotating.issuer.mint({}, { alg: 'RS256' }), 'remaining key still verifies');
    } finally {
      await rotating.close();
    }
  });
});

describe('tokens without kid', () => {
  test('verified against the fitting keys; refused once their key leaves the set, even after being accepted', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] }, bindings: () => SHORT_LIFETIME });
    try {
      const first = stack.issuer.keys.ES256;
      const token = await stack.issuer.mint({}, { kid: null });
      await expectAllowed(stack, token, 'kid-less token verified');
      await expectAllowed(stack, token, 'and again');
      await stack.issuer.addKey('ES256');
      stack.issuer.removeKey(first.kid);
      await eventually(async () => (await statusFor(stack, token)) === 401, {
        timeoutMs: 8000,
        message: 'kid-less token refused after its key left the set',
      });
      await expectRefusal(
        await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } })),
        { status: 401, error: 'invalid_token' },
      );
      await expectAllowed(stack, await stack.issuer.mint({}, { kid: null }), 'kid-less token of the new key');
    } finally {
      await stack.close();
    }
  });

  test('signed by a key the issuer never published: 401, no JWKS fetch, origin untouched', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      const fetchesBefore = stack.issuer.count('/jwks');
      const stranger = await generateSigningKey('ES256');
      for (let i = 0; i < 20; i += 1) {
        const forged = await stack.issuer.mint({ sub: `forged-${i}` }, { key: stranger, kid: null });
        await expectRefusal(
          await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${forged}` } })),
          { status: 401, error: 'invalid_token' },
        );
      }
      assert.equal(stack.issuer.count('/jwks'), fetchesBefore, 'a kid-less forgery has fitting keys to fail against: nothing to refetch');
    } finally {
      await stack.close();
    }
  });
});

describe('forged-kid storm', () => {
  let stack;
  before(async () => {
    stack = await startStack({ issuer: { algs: ['ES256'] } });
  });
  after(() => stack?.close());

  test('hundreds of tokens with random kids: every one 401, the origin untouched, a handful of JWKS fetches', async (t) => {
    const STORM = 300;
    const BATCH = 25;
    await expectAllowed(stack, await stack.issuer.mint());
    const fetchesBefore = stack.issuer.count('/jwks');
    const originBefore = stack.origin.requests.length;
    const statuses = new Map();
    for (let sent = 0; sent < STORM; sent += BATCH) {
      const batch = Array.from({ length: BATCH }, async () => {
        const token = await stack.issuer.mint({}, { kid: randomBytes(12).toString('base64url') });
        const response = await stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } });
        const challenge = response.headers.get('www-authenticate') ?? '';
        await response.body?.cancel();
        const key = `${response.status} ${/error="([^"]+)"/.exec(challenge)?.[1]}`;
        statuses.set(key, (statuses.get(key) ?? 0) + 1);
      });
      await Promise.all(batch);
    }
    const fetches = stack.issuer.count('/jwks') - fetchesBefore;
    t.diagnostic(`forged-kid storm: ${STORM} requests, ${fetches} JWKS fetch(es)`);
    console.log(`forged-kid storm: ${STORM} requests with random kids caused ${fetches} JWKS fetch(es)`);
    assert.deepEqual(Object.fromEntries(statuses), { '401 invalid_token': STORM });
    assert.equal(stack.origin.requests.length, originBefore, 'origin untouched');
    assert.ok(fetches <= 2, `${fetches} JWKS fetches for ${STORM} forged kids`);
    // The storm does not disturb legitimate traffic.
    await expectAllowed(stack, await stack.issuer.mint());
  });

  test('every forged request is logged as a deny with unknown_key', async () => {
    const lines = stack.gate.requestLogs().filter((l) => l.reason === 'unknown_key');
    assert.ok(lines.length >= 300, `${lines.length} unknown_key lines`);
    assert.ok(lines.every((l) => l.decision === 'deny' && l.status === 401));
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted.slice(-50));
  });
});

/** Sends every token at once; returns a count of "<status> <error or Retry-After>" answers. */
async function burst(stack, tokens) {
  const answers = await Promise.all(
    tokens.map(async (token) => {
      const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
      const challenge = response.headers.get('www-authenticate') ?? '';
      await response.body?.cancel();
      const detail = response.status === 503 ? `retry-after=${response.headers.get('retry-after')}` : /error="([^"]+)"/.exec(challenge)?.[1];
      return `${response.status} ${detail}`;
    }),
  );
  const counts = {};
  for (const answer of answers) counts[answer] = (counts[answer] ?? 0) + 1;
  return counts;
}

describe('a cold gate under a burst of concurrent first requests', () => {
  test('one JWKS fetch for the whole burst: valid tokens pass, forged kids get 401', async (t) => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      // The key set takes a while to come, as from an authorization server
      // across the internet: the whole burst arrives while the first fetch is
      // in flight. (On a loopback issuer the fetch could finish before the
      // last requests of the burst arrived; a forged kid arriving after a
      // fetch rightly refetches once, which made this test timing-dependent.
      // 500 ms was still too short on a loaded 2-core machine: 2 s, well
      // inside the 5 s fetch timeout.)
      overrideJwks(stack.issuer, (res) => {
        const timer = setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
          res.end(JSON.stringify(stack.issuer.jwks()));
        }, 2000);
        res.on('close', () => clearTimeout(timer));
      });
      const valid = await Promise.all(Array.from({ length: 30 }, (_, i) => stack.issuer.mint({ sub: `user-${i}` })));
      const forged = await Promise.all(
        Array.from({ length: 30 }, () => stack.issuer.mint({}, { kid: randomBytes(12).toString('base64url') })),
      );
      const counts = await burst(stack, [...valid, ...forged].sort(() => Math.random() - 0.5));
      const fetches = stack.issuer.count('/jwks');
      t.diagnostic(`cold burst: 60 concurrent requests, ${fetches} JWKS fetch(es)`);
      const originRequests = stack.origin.requests.length;
      assert.deepEqual(counts, { '200 undefined': 30, '401 invalid_token': 30 });
      assert.equal(fetches, 1, `${fetches} JWKS fetches for one cold burst`);
      assert.equal(originRequests, 30, 'only the valid requests reached the origin');
    } finally {
      await stack.close();
    }
  });

  test('authorization server down from the start: every request 503 + Retry-After, one fetch, origin untouched', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      overrideJwks(stack.issuer, (res) => {
        const timer = setTimeout(() => {
          res.writeHead(502, { 'content-type': 'text/plain' });
          res.end('bad gateway');
        }, 300);
        res.on('close', () => clearTimeout(timer));
      });
      const tokens = await Promise.all(Array.from({ length: 30 }, () => stack.issuer.mint()));
      const counts = await expectOriginUntouched(stack.origin, () => burst(stack, tokens));
      assert.deepEqual(Object.keys(counts).map((answer) => answer.split(' ')[0]), ['503']);
      assert.match(Object.keys(counts)[0], /^503 retry-after=[1-9]\d*$/);
      assert.equal(stack.issuer.count('/jwks'), 1, 'the burst shared one failed fetch, then its backoff');
    } finally {
      await stack.close();
    }
  });
});

describe('the KV tier seen from a new isolate', () => {
  test('a new isolate takes the key set from KV, not from the network', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      assert.equal(stack.issuer.count('/jwks'), 1);
      await stack.gate.restart();
      await expectAllowed(stack, await stack.issuer.mint(), 'new isolate, set from KV');
      assert.equal(stack.issuer.count('/jwks'), 1, 'the new isolate fetched although KV held the set');
      // Proof the restart lost the isolate's memory: with KV emptied, the next isolate must fetch.
      const kv = await stack.gate.mf.getKVNamespace('JWKS_CACHE');
      for (const { name } of (await kv.list()).keys) await kv.delete(name);
      await stack.gate.restart();
      await expectAllowed(stack, await stack.issuer.mint(), 'new isolate, empty KV');
      assert.equal(stack.issuer.count('/jwks'), 2);
    } finally {
      await stack.close();
    }
  });

  test("one isolate's unknown-kid refetch holds back the next isolate's storm (cooldown shared in KV)", async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    const forge = () => stack.issuer.mint({}, { kid: randomBytes(12).toString('base64url') });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      assert.equal(await statusFor(stack, await forge()), 401);
      assert.equal(stack.issuer.count('/jwks'), 2, 'the first unknown kid after a fetch refetches at once');
      await stack.gate.restart();
      const counts = await burst(stack, await Promise.all(Array.from({ length: 50 }, forge)));
      assert.deepEqual(counts, { '401 invalid_token': 50 });
      assert.equal(stack.issuer.count('/jwks'), 2, 'the new isolate refetched within the shared cooldown');
      await expectAllowed(stack, await stack.issuer.mint());
    } finally {
      await stack.close();
    }
  });
});

describe('authorization server down after warm-up (stale-if-error)', () => {
  test('valid tokens keep passing on the last good set; the failed refresh is logged', async () => {
    const stack = await startStack({ bindings: () => ({ ...SHORT_LIFETIME, JWKS_MAX_STALE_SECONDS: '3600' }) });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      for (const mode of ['error', 'refuse']) {
        await stack.issuer.setDown(mode);
        await sleep(1200);
        for (let i = 0; i < 3; i += 1) {
          await expectAllowed(stack, await stack.issuer.mint({ sub: `during-${mode}-${i}` }), `issuer ${mode}: stale set served`);
        }
        await stack.issuer.setDown(false);
      }
      const failures = await stack.gate.output.waitFor((l) => l.event === 'jwks_refresh' && l.outcome === 'failed');
      assert.equal(failures[0].iss, stack.issuer.issuer);
      assert.match(failures[0].reason, /^jwks_/);
      assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
    } finally {
      await stack.close();
    }
  });

  test('beyond JWKS_MAX_STALE_SECONDS the stale set is dropped: 503, never forwarded', async () => {
    const stack = await startStack({ bindings: () => ({ ...SHORT_LIFETIME, JWKS_MAX_STALE_SECONDS: '1' }) });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      await stack.issuer.setDown('error');
      await sleep(2500);
      await expectUnavailable(stack, await stack.issuer.mint());
    } finally {
      await stack.close();
    }
  });
});

describe('slow authorization server', () => {
  test('cold: a JWKS slower than JWKS_FETCH_TIMEOUT_MS gets 503 within about the timeout', async () => {
    const stack = await startStack({ bindings: () => ({ JWKS_FETCH_TIMEOUT_MS: '500' }) });
    try {
      overrideJwks(stack.issuer, (res) => {
        const timer = setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(stack.issuer.jwks()));
        }, 4000);
        res.on('close', () => clearTimeout(timer));
      });
      const elapsed = await expectUnavailable(stack, await stack.issuer.mint(), { withinMs: 2500 });
      assert.ok(elapsed >= 400, `gave up after ${elapsed} ms, before the timeout`);
      const [line] = await stack.gate.output.waitFor((l) => l.event === 'request' && l.status === 503);
      assert.equal(line.reason, 'jwks_fetch_timeout');
    } finally {
      await stack.close();
    }
  });

  test('warm: requests do not wait on a slow refresh; stale keys serve', async () => {
    const stack = await startStack({ bindings: () => ({ ...SHORT_LIFETIME, JWKS_FETCH_TIMEOUT_MS: '500' }) });
    try {
      await expectAllowed(stack, await stack.issuer.mint());
      overrideJwks(stack.issuer, (res) => {
        const timer = setTimeout(() => res.end('{}'), 4000);
        res.on('close', () => clearTimeout(timer));
      });
      await sleep(1200);
      for (let i = 0; i < 3; i += 1) {
        const started = Date.now();
        await expectAllowed(stack, await stack.issuer.mint());
        assert.ok(Date.now() - started < 400, `request took ${Date.now() - started} ms`);
      }
      const [failure] = await stack.gate.output.waitFor((l) => l.event === 'jwks_refresh' && l.outcome === 'failed');
      assert.equal(failure.reason, 'jwks_fetch_timeout');
    } finally {
      await stack.close();
    }
  });
});

/** Responses a broken or hostile JWKS endpoint may give. */
const BAD_RESPONSES = {
  'not JSON': (res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"keys": [');
  },
  'JSON without keys': (res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"issuer": "x"}');
  },
  'an HTML page': (res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>Sign in</title>');
  },
  'oversized (above JWKS_MAX_BYTES)': (res, issuer) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...issuer.jwks(), padding: 'x'.repeat(8192) }));
  },
  'oversized without Content-Length (chunked)': (res, issuer) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    const body = JSON.stringify({ ...issuer.jwks(), padding: 'x'.repeat(8192) });
    for (let i = 0; i < body.length; i += 1024) res.write(body.slice(i, i + 1024));
    res.end();
  },
};

describe('garbage and oversized JWKS responses', () => {
  for (const [name, respond] of Object.entries(BAD_RESPONSES)) {
    test(`cold, ${name}: 503, never a 500, never forwarded`, async () => {
      const stack = await startStack({ issuer: { algs: ['ES256'] }, bindings: () => ({ JWKS_MAX_BYTES: '4096' }) });
      try {
        overrideJwks(stack.issuer, (res) => respond(res, stack.issuer));
        await expectUnavailable(stack, await stack.issuer.mint());
        assert.ok(stack.issuer.count('/jwks') >= 1, 'the gate did fetch');
      } finally {
        await stack.close();
      }
    });
  }

  test('warm: every kind of bad response leaves the last good set in use, and is logged', async () => {
    const expectedReason = (name) => (name.startsWith('oversized') ? 'jwks_too_large' : 'jwks_invalid');
    // One gate per kind (a failed refresh backs off), run side by side to keep the file quick.
    await Promise.all(
      Object.entries(BAD_RESPONSES).map(async ([name, respond]) => {
        const stack = await startStack({ issuer: { algs: ['ES256'] }, bindings: () => ({ ...SHORT_LIFETIME, JWKS_MAX_BYTES: '4096' }) });
        try {
          await expectAllowed(stack, await stack.issuer.mint(), `${name}: warm-up`);
          overrideJwks(stack.issuer, (res) => respond(res, stack.issuer));
          await sleep(1200);
          await expectAllowed(stack, await stack.issuer.mint(), `${name}: stale set served`);
          const [failure] = await stack.gate.output.waitFor((l) => l.event === 'jwks_refresh' && l.outcome === 'failed');
          assert.equal(failure.reason, expectedReason(name), name);
          await expectAllowed(stack, await stack.issuer.mint(), `${name}: still served after the failed refresh`);
          assert.ok(!/"status":500/.test(stack.gate.output.text), `${name}: no 500`);
        } finally {
          await stack.close();
        }
      }),
    );
  });
});

describe('redirects of the JWKS URL', () => {
  test('followed within the same origin', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      stack.issuer.setHandler((req, res, url) => {
        if (url.pathname === '/jwks') {
          res.writeHead(302, { location: '/keys/current' });
          res.end();
          return true;
        }
        if (url.pathname === '/keys/current') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify(stack.issuer.jwks()));
          return true;
        }
        return false;
      });
      await expectAllowed(stack, await stack.issuer.mint());
      assert.equal(stack.issuer.count('/keys/current'), 1);
    } finally {
      await stack.close();
    }
  });

  test('not followed to another host: 503, never forwarded, the other host never asked', async () => {
    const elsewhere = await startIssuer({ algs: ['ES256'] });
    const stack = await startStack({ issuer: { algs: ['ES256'] } });
    try {
      // The other server publishes the very key the token is signed with: following would let it vouch.
      elsewhere.published.splice(0, elsewhere.published.length, stack.issuer.keys.ES256);
      overrideJwks(stack.issuer, (res) => {
        res.writeHead(307, { location: elsewhere.jwksUri });
        res.end();
      });
      await expectUnavailable(stack, await stack.issuer.mint());
      assert.equal(elsewhere.count('/jwks'), 0, 'the redirect was followed');
      const [line] = await stack.gate.output.waitFor((l) => l.event === 'request' && l.status === 503);
      assert.equal(line.reason, 'jwks_redirect_refused');
    } finally {
      await stack.close();
      await elsewhere.close();
    }
  });
});

describe('HTTP freshness of the key set', () => {
  test('Cache-Control max-age is honoured: no refetch before it runs out, a background one after', async () => {
    const stack = await startStack({ issuer: { algs: ['ES256'] }, bindings: () => SHORT_LIFETIME });
    try {
      serveJwksWith(stack.issuer, { 'cache-control': 'public, max-age=4' });
      await expectAllowed(stack, await stack.issuer.mint());
      const fetchedAt = Date.now();
      assert.equal(stack.issuer.count('/jwks'), 1);
      // Without max-age the 1 s JWKS_CACHE_TTL_SECONDS would have made this set stale twice over.
      while (Date.now() - fetchedAt < 2800) {
        await expectAllowed(stack, await stack.issuer.mint());
        await sleep(300);
      }
      assert.equal(stack.issuer.count('/jwks'), 1, 'refetched before max-age ran out');
      await sleep(Math.max(0, 4600 - (Date.now() - fetchedAt)));
      await expectAllowed(stack, await stack.issuer.mint());
      await eventually(() => stack.issuer.count('/jwks') === 2, { message: 'refetch after max-age' });
    } finally {
      await stack.close();
    }
  });

  test('a max-age below JWKS_MIN_TTL_SECONDS is raised to it', async () => {
    const stack = await startStack({
      issuer: { algs: ['ES256'] },
      bindings: () => ({ JWKS_CACHE_TTL_SECONDS: '1', JWKS_MIN_TTL_SECONDS: '3' }),
    });
    try {
      serveJwksWith(stack.issuer, { 'cache-control': 'max-age=0' });
      await expectAllowed(stack, await stack.issuer.mint());
      const fetchedAt = Date.now();
      while (Date.now() - fetchedAt < 2000) {
        await expectAllowed(stack, await stack.issuer.mint());
        await sleep(250);
      }
      assert.equal(stack.issuer.count('/jwks'), 1, 'max-age=0 made the gate refetch');
      await sleep(Math.max(0, 3600 - (Date.now() - fetchedAt)));
      await expectAllowed(stack, await stack.issuer.mint());
      await eventually(() => stack.issuer.count('/jwks') === 2, { message: 'refetch after the minimum lifetime' });
    } finally {
      await stack.close();
    }
  });
});

describe('HTTP freshness: Expires and the upper bound', () => {
  // Both run side by side: each waits for a lifetime to run out.
  test('Expires (minus Date) is honoured; a max-age above JWKS_MAX_TTL_SECONDS is lowered to it', async () => {
    const expectFreshFor = async ({ bindings, headers, freshMs, label }) => {
      const stack = await startStack({ issuer: { algs: ['ES256'] }, bindings: () => bindings });
      try {
        serveJwksWith(stack.issuer, headers());
        await expectAllowed(stack, await stack.issuer.mint());
        const fetchedAt = Date.now();
        while (Date.now() - fetchedAt < freshMs - 1000) {
          await expectAllowed(stack, await stack.issuer.mint());
          await sleep(250);
        }
        assert.equal(stack.issuer.count('/jwks'), 1, `${label}: refetched while fresh`);
        await sleep(Math.max(0, freshMs + 600 - (Date.now() - fetchedAt)));
        // Each request past the lifetime may start the background refresh.
        await eventually(
          async () => {
            await expectAllowed(stack, await stack.issuer.mint());
            return stack.issuer.count('/jwks') === 2;
          },
          { message: `${label}: refetch once stale` },
        );
      } finally {
        await stack.close();
      }
    };
    await Promise.all([
      expectFreshFor({
        label: 'Expires',
        bindings: SHORT_LIFETIME,
        // A 4 s lifetime (HTTP dates carry whole seconds); JWKS_CACHE_TTL_SECONDS is 1 s.
        headers: () => {
          const now = Math.floor(Date.now() / 1000) * 1000;
          return { date: new Date(now).toUTCString(), expires: new Date(now + 4000).toUTCString() };
        },
        freshMs: 4000,
      }),
      expectFreshFor({
        label: 'max-age above the bound',
        bindings: { JWKS_CACHE_TTL_SECONDS: '1', JWKS_MIN_TTL_SECONDS: '1', JWKS_MAX_TTL_SECONDS: '3' },
        headers: () => ({ 'cache-control': 'max-age=86400' }),
        freshMs: 3000,
      }),
    ]);
  });
});

describe('two issuers are isolated', () => {
  let stack;
  let other;
  before(async () => {
    other = await startIssuer({ algs: ['ES256', 'RS256'] });
    stack = await startStack({
      issuer: { algs: ['ES256', 'RS256'] },
      bindings: ({ issuer }) => ({
        OAUTH_ISSUER: `${issuer.issuer} ${other.issuer}`,
        OAUTH_JWKS_URI: `${issuer.jwksUri} ${other.jwksUri}`,
        JWKS_REFRESH_COOLDOWN_SECONDS: '1',
      }),
    });
  });
  after(async () => {
    await stack?.close();
    await other?.close();
  });

  test('one issuer down from the start: its tokens get 503, the other issuer is unaffected', async () => {
    await other.setDown('refuse');
    try {
      await expectUnavailable(stack, await other.mint({ aud: stack.resource }));
      await expectAllowed(stack, await stack.issuer.mint());
    } finally {
      await other.setDown(false);
    }
    await eventually(async () => (await statusFor(stack, await other.mint({ aud: stack.resource }))) === 200, {
      timeoutMs: 12000,
      everyMs: 1000,
      message: 'recovery after backoff',
    });
  });

  test("one issuer's rotation fetches only its own keys", async () => {
    const firstBefore = stack.issuer.count('/jwks');
    await other.addKey('ES256');
    await expectAllowed(stack, await other.mint({ aud: stack.resource }, { alg: 'ES256' }));
    assert.equal(stack.issuer.count('/jwks'), firstBefore, 'the unaffected issuer was refetched');
  });

  test("a token claiming one issuer but signed with the other's key (same kid) is refused", async () => {
    const theirs = other.keys.ES256;
    const token = await stack.issuer.mint({}, { key: theirs, kid: stack.issuer.keys.ES256.kid });
    const response = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${token}` } }),
    );
    await expectRefusal(response, { status: 401, error: 'invalid_token' });
    const sneaky = await stack.issuer.mint({}, { key: theirs });
    const second = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', { headers: { authorization: `Bearer ${sneaky}` } }),
    );
    await expectRefusal(second, { status: 401, error: 'invalid_token' });
  });
});
