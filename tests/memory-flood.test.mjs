// Memory under floods (issue 22): every isolate cache is bounded. Thousands
// more distinct tokens than the verified-token cache holds are sent to one
// isolate, then distinct forged and expired ones for the refusal cache, and
// the test build's cache probe (`GET /__portcullis/verify-probe/caches`,
// build-probe/ only) must show every cache within its bound, and the
// verified-token cache filled near it (the flood landed, and was not simply
// refused). workerd's resident memory is reported, not asserted: it includes
// the runtime's own heap, which a test cannot tell apart.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { CACHE_BOUNDS, CACHES_PATH, PROBE_BUILD } from './helpers/faults.mjs';
import { startStack } from './helpers/stack.mjs';
import { tamperPayload } from './helpers/tokens.mjs';

/** Distinct tokens per flood: well past the 4,096 bound. */
const FLOOD = 6000;
/** Requests in flight at once (two cores: more only queues). */
const CONCURRENCY = 16;

/** The isolate's cache sizes, from the probe. */
async function cacheSizes(stack) {
  const response = await stack.gate.fetch(CACHES_PATH);
  const text = await response.text();
  assert.equal(response.status, 200, `${CACHES_PATH}: ${text.slice(0, 200)} (is build-probe/ built with this gate?)`);
  return JSON.parse(text);
}

/** Checks every documented cache is reported and within its bound. */
function assertBounded(sizes) {
  for (const [name, bound] of Object.entries(CACHE_BOUNDS)) {
    assert.equal(typeof sizes[name], 'number', `the probe reports ${name} (got ${JSON.stringify(sizes)})`);
    assert.ok(sizes[name] <= bound, `${name}: ${sizes[name]} entries, bound ${bound}`);
  }
}

/** Sends GET /mcp/echo with each token, CONCURRENCY at a time; returns the count of each status. */
async function flood(stack, tokens) {
  const statuses = {};
  let next = 0;
  const url = new URL('/mcp/echo', stack.gate.url);
  async function lane() {
    while (next < tokens.length) {
      const token = tokens[next++];
      const response = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(15_000) });
      await response.arrayBuffer();
      statuses[response.status] = (statuses[response.status] ?? 0) + 1;
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
  return statuses;
}

/** Mints `count` tokens, a batch at a time (each distinct: the issuer gives each a new jti). */
async function mintMany(issuer, count, claims = {}) {
  const tokens = [];
  while (tokens.length < count) {
    const batch = Math.min(500, count - tokens.length);
    tokens.push(...(await Promise.all(Array.from({ length: batch }, () => issuer.mint(claims, { alg: 'ES256' })))));
  }
  return tokens;
}

/** The resident memory of this process's workerd children, in MiB (Linux; undefined elsewhere). */
function workerdRssMiB() {
  try {
    let total = 0;
    for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      let status;
      try {
        status = readFileSync(`/proc/${pid}/status`, 'utf8');
      } catch {
        continue;
      }
      if (!/^Name:\s*workerd$/m.test(status) || Number(/^PPid:\s*(\d+)$/m.exec(status)?.[1]) !== process.pid) continue;
      total += Number(/^VmRSS:\s*(\d+) kB$/m.exec(status)?.[1] ?? 0);
    }
    return total === 0 ? undefined : Math.round(total / 1024);
  } catch {
    return undefined;
  }
}

describe('isolate caches under a flood of distinct tokens', () => {
  let stack;

  before(async () => {
    // No assertion: each request costs the gate a signature, and the demo origin a verification, for nothing measured here.
    stack = await startStack({ buildDir: PROBE_BUILD, assertion: false, issuer: { algs: ['ES256'] } });
  });
  after(() => stack?.close());

  test(`${FLOOD} distinct valid tokens: the verified-token cache fills to its bound and stays within it`, async (t) => {
    const rssBefore = workerdRssMiB();
    const tokens = await mintMany(stack.issuer, FLOOD);
    assert.equal(new Set(tokens).size, FLOOD, 'the tokens are distinct');
    const started = Date.now();
    const statuses = await flood(stack, tokens);
    t.diagnostic(`${FLOOD} requests in ${Date.now() - started} ms: ${JSON.stringify(statuses)}`);
    assert.deepEqual(statuses, { 200: FLOOD }, 'every token was accepted');

    const sizes = await cacheSizes(stack);
    t.diagnostic(`caches after the valid flood: ${JSON.stringify(sizes)}`);
    assertBounded(sizes);
    // Full, the cache drops its least recently used eighth at once: it holds between 7/8 of the bound and the bound.
    assert.ok(sizes.verified_tokens >= (CACHE_BOUNDS.verified_tokens * 7) / 8, `verified_tokens ${sizes.verified_tokens}: the flood did not fill the cache`);
    const rssAfter = workerdRssMiB();
    if (rssBefore !== undefined) t.diagnostic(`workerd RSS: ${rssBefore} MiB before, ${rssAfter} MiB after`);
  });

  test(`${FLOOD} distinct forged and expired tokens: the refusal cache fills to its bound and stays within it`, async (t) => {
    const [template] = await mintMany(stack.issuer, 1);
    const now = Math.floor(Date.now() / 1000);
    // Half forged (a claim changed after signing: bad signature), half expired
    // (signed, exp in the past): both refusals the gate remembers.
    const forged = Array.from({ length: FLOOD / 2 }, (_, i) => tamperPayload(template, { jti: `forged-${i}-${now}` }));
    const expired = await mintMany(stack.issuer, FLOOD / 2, { iat: now - 900, exp: now - 600 });
    const tokens = forged.flatMap((token, i) => [token, expired[i]]);
    assert.equal(new Set(tokens).size, FLOOD, 'the tokens are distinct');

    // A first part, below the bound: each refusal is remembered.
    const firstPart = 4000;
    const started = Date.now();
    const early = await flood(stack, tokens.slice(0, firstPart));
    assert.deepEqual(early, { 401: firstPart }, 'every token was refused');
    const filling = await cacheSizes(stack);
    t.diagnostic(`caches after ${firstPart} refusals: ${JSON.stringify(filling)}`);
    assertBounded(filling);
    assert.ok(filling.refused_tokens >= firstPart - 100, `refused_tokens ${filling.refused_tokens}: the refusals were not remembered`);

    // The rest, past the bound.
    const late = await flood(stack, tokens.slice(firstPart));
    t.diagnostic(`${FLOOD} refusals in ${Date.now() - started} ms`);
    assert.deepEqual(late, { 401: FLOOD - firstPart }, 'every token was refused');
    const sizes = await cacheSizes(stack);
    t.diagnostic(`caches after the refused flood: ${JSON.stringify(sizes)}; workerd RSS ${workerdRssMiB() ?? '?'} MiB`);
    assertBounded(sizes);
    assert.ok(sizes.refused_tokens >= 1, 'the latest refusals are remembered');
  });
});
