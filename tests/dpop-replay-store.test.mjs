// The DPoP replay store (src/replay.mjs, the Durable Object class DpopReplay;
// RFC 9449 §11.1) on its own, in Miniflare's workerd: a key is claimed once
// until it expires, also when claimed concurrently, bad input is refused,
// expired keys are purged by the alarm, and two gates in two Miniflare
// instances (two workerd processes) share one store
// (tests/helpers/replay.mjs `startGatePair`): a proof used at one gate is
// refused as replayed at the other.
//
// The class is driven by a small worker in the test, through a subclass
// that only adds read-outs (its rows, its alarm) and a way to run the alarm:
// claim() and alarm() are the built class's own (build/replay.mjs).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Miniflare } from 'miniflare';
import { BUILD_DIR, COMPATIBILITY_DATE, SHARED_OPTIONS, assertBuilt, withTimeout } from './helpers/gate.mjs';
import { REPLAY_BINDING, fetchVia, startGatePair } from './helpers/replay.mjs';
import { boundToken, dpopKey, dpopProof } from './helpers/dpop.mjs';
import { startIssuer } from '../demo/issuer.mjs';
import { startOrigin } from '../demo/origin.mjs';
import { freePort } from './helpers/gate.mjs';

const DRIVER = `
import { DpopReplay } from './replay.mjs';

export class InspectableReplay extends DpopReplay {
  rows() {
    return this.sql.exec('SELECT key, expires FROM claims ORDER BY key').toArray().map((row) => ({ ...row }));
  }
  alarmAt() {
    return this.ctx.storage.getAlarm();
  }
  purge() {
    return this.alarm();
  }
}

/** POST {shard, op, calls}: runs the claims at once, or reads the object out. */
export default {
  async fetch(request, env) {
    const { shard, op, calls } = await request.json();
    const stub = env.STORE.get(env.STORE.idFromName(shard));
    if (op === 'claim') {
      const results = await Promise.all(
        calls.map(([key, expiresAt]) =>
          stub.claim(key, expiresAt).then(
            (value) => ({ value }),
            (error) => ({ error: error.name, message: error.message }),
          ),
        ),
      );
      return Response.json(results);
    }
    if (op === 'purge') await stub.purge();
    return Response.json({ rows: await stub.rows(), alarm: await stub.alarmAt() });
  },
};
`;

/** A distinct key (64 lowercase hex digits) for `label`. */
function key(label) {
  return createHash('sha256').update(label).digest('hex');
}

function now() {
  return Math.floor(Date.now() / 1000);
}

describe('DPoP replay store (Durable Object)', () => {
  let mf;

  before(async () => {
    assertBuilt();
    mf = new Miniflare({
      ...SHARED_OPTIONS,
      compatibilityDate: COMPATIBILITY_DATE,
      modulesRoot: BUILD_DIR,
      modules: [
        { type: 'ESModule', path: join(BUILD_DIR, 'replay-driver.mjs'), contents: DRIVER },
        { type: 'ESModule', path: join(BUILD_DIR, 'replay.mjs') },
      ],
      durableObjects: { STORE: { className: 'InspectableReplay', useSQLite: true } },
    });
    await withTimeout(mf.ready, 30_000, 'Miniflare did not start');
  });

  after(() => mf?.dispose());

  async function call(shard, op, calls) {
    const response = await mf.dispatchFetch('http://store.test/', { method: 'POST', body: JSON.stringify({ shard, op, calls }) });
    assert.equal(response.status, 200);
    return response.json();
  }
  const claim = async (shard, ...calls) => (await call(shard, 'claim', calls)).map((r) => r.value ?? r);

  test('a key is claimed once: true, then false', async () => {
    const k = key('once');
    assert.deepEqual(await claim('a0', [k, now() + 300]), [true]);
    assert.deepEqual(await claim('a0', [k, now() + 300]), [false]);
    assert.deepEqual(await claim('a0', [k, now() + 600]), [false], 'a later expiry does not free it');
    // Another object (shard) is another store: the gate always sends a key to the same one.
    assert.deepEqual(await claim('a1', [k, now() + 300]), [true]);
  });

  test('concurrent claims of one key: exactly one is first', async () => {
    const k = key('concurrent');
    const exp = now() + 300;
    const results = await claim('b0', ...Array.from({ length: 25 }, () => [k, exp]));
    assert.equal(results.filter((r) => r === true).length, 1, JSON.stringify(results));
    assert.equal(results.filter((r) => r === false).length, 24, JSON.stringify(results));
    // Different keys at once are all first.
    const many = await claim('b0', ...Array.from({ length: 25 }, (_, i) => [key(`many ${i}`), exp]));
    assert.ok(many.every((r) => r === true), JSON.stringify(many));
  });

  test('an expired key can be claimed again', async () => {
    const k = key('expiring');
    const exp = now();
    assert.deepEqual(await claim('c0', [k, exp]), [true]);
    assert.deepEqual(await claim('c0', [k, exp]), [false]);
    // Held through its expiry second (the gate may still accept the proof then), free after it.
    while (now() <= exp) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(await claim('c0', [k, now() + 300]), [true], 'claimable once its expiry has passed');
    assert.deepEqual(await claim('c0', [k, now() + 300]), [false], 'and held again with the new expiry');
    // Already expired when claimed: nothing holds it.
    const old = key('already expired');
    assert.deepEqual(await claim('c1', [old, now() - 10], [old, now() - 10]), [true, true]);
  });

  test('bad input throws', async () => {
    const k = key('bad input');
    const t = now();
    const results = await call(
      'd0',
      'claim',
      [
        [k.toUpperCase(), t + 300],
        [k.slice(1), t + 300],
        [`${k}0`, t + 300],
        [`${k.slice(1)}g`, t + 300],
        [12, t + 300],
        [null, t + 300],
        [k, t + 300.5],
        [k, String(t + 300)],
        [k, null],
        [k, t + 2 * 86_400],
        [k, t - 2 * 86_400],
      ],
    );
    for (const [i, result] of results.entries()) {
      assert.ok(result.error === 'TypeError' || result.error === 'RangeError', `call ${i}: ${JSON.stringify(result)}`);
    }
    assert.deepEqual((await call('d0', 'inspect')).rows, [], 'nothing stored');
    assert.deepEqual(await claim('d0', [k, t + 300]), [true], 'the key itself is still free');
  });

  test('the alarm is set to the earliest expiry and purges expired rows', async () => {
    const t = now();
    assert.deepEqual(await claim('e0', [key('e late'), t + 600]), [true]);
    assert.equal((await call('e0', 'inspect')).alarm, (t + 601) * 1000, 'set when none is: once it has expired');
    assert.deepEqual(await claim('e0', [key('e early'), t + 300]), [true]);
    assert.equal((await call('e0', 'inspect')).alarm, (t + 301) * 1000, 'moved earlier: the one set was much later');
    assert.deepEqual(await claim('e0', [key('e close'), t + 330]), [true]);
    assert.equal((await call('e0', 'inspect')).alarm, (t + 301) * 1000, 'kept: within a purge interval');
    // Nothing expired yet: the alarm deletes nothing and comes back at the earliest expiry.
    const purged = await call('e0', 'purge');
    assert.equal(purged.rows.length, 3);
    assert.equal(purged.alarm, (t + 301) * 1000);

    // Expired rows: the alarm (set in the past, so due at once) deletes them and is not set again.
    await claim('e1', [key('e gone 1'), t - 5], [key('e gone 2'), t - 1]);
    const deadline = Date.now() + 5000;
    let state;
    do {
      await new Promise((resolve) => setTimeout(resolve, 100));
      state = await call('e1', 'inspect');
    } while ((state.rows.length > 0 || state.alarm !== null) && Date.now() < deadline);
    assert.deepEqual(state, { rows: [], alarm: null });

    // Expired and live rows together: only the expired go; the alarm waits for the live one.
    await claim('e2', [key('e live'), t + 400], [key('e dead'), t - 5]);
    const mixed = await call('e2', 'purge');
    assert.deepEqual(
      mixed.rows.map((row) => row.key),
      [key('e live')],
    );
    assert.equal(mixed.alarm, (t + 401) * 1000);
  });

  test('nothing but keys and expiries is stored', async () => {
    const { rows } = await call('a0', 'inspect');
    assert.ok(rows.length > 0);
    for (const row of rows) {
      assert.deepEqual(Object.keys(row).sort(), ['expires', 'key']);
      assert.match(row.key, /^[0-9a-f]{64}$/);
      assert.ok(Number.isInteger(row.expires));
    }
  });
});

describe('two gates, two Miniflare instances, one replay store', () => {
  let pair;

  before(async () => {
    assertBuilt();
    pair = await startGatePair({
      bindings: ({ port }) => ({
        MCP_RESOURCE: `http://127.0.0.1:${port}/mcp`,
        MCP_ORIGIN: 'http://127.0.0.1:9/mcp',
        OAUTH_ISSUER: 'http://127.0.0.1:9',
      }),
    });
  });

  after(() => pair?.close());

  /** The store as gate `gate` binds it (through Miniflare's proxy from Node). */
  async function store(gate, shard) {
    const ns = await gate.mf.getDurableObjectNamespace(REPLAY_BINDING);
    return ns.get(ns.idFromName(shard));
  }

  test('both gates run with the store bound', async () => {
    for (const gate of [pair.a, pair.b]) {
      const response = await gate.fetch('/mcp');
      assert.equal(response.status, 401, `${gate.url}: ${await response.text()}`);
    }
    assert.notEqual(pair.a.url, pair.b.url);
  });

  test('both name the same object for a shard', async () => {
    const [a, b] = await Promise.all([pair.a, pair.b].map((gate) => gate.mf.getDurableObjectNamespace(REPLAY_BINDING)));
    assert.equal(a.idFromName('7f').toString(), b.idFromName('7f').toString());
  });

  test('a key claimed through one gate is held for the other', async () => {
    const exp = now() + 300;
    const first = key('pair first');
    const k = first.slice(0, 2);
    assert.equal(await (await store(pair.b, k)).claim(first, exp), true);
    assert.equal(await (await store(pair.a, k)).claim(first, exp), false);
    const second = key('pair second');
    const k2 = second.slice(0, 2);
    assert.equal(await (await store(pair.a, k2)).claim(second, exp), true);
    assert.equal(await (await store(pair.b, k2)).claim(second, exp), false);
  });

  test('the store outlives a restart of either gate (a fresh isolate)', async () => {
    const exp = now() + 300;
    const k = key('pair restart');
    assert.equal(await (await store(pair.a, k.slice(0, 2))).claim(k, exp), true);
    await pair.a.restart();
    await pair.b.restart();
    assert.equal(await (await store(pair.a, k.slice(0, 2))).claim(k, exp), false);
    assert.equal(await (await store(pair.b, k.slice(0, 2))).claim(k, exp), false);
  });

  test('concurrent claims through both gates: exactly one is first', async () => {
    const exp = now() + 300;
    const k = key('pair concurrent');
    const [a, b] = await Promise.all([store(pair.a, k.slice(0, 2)), store(pair.b, k.slice(0, 2))]);
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 ? a : b).claim(k, exp)));
    assert.equal(results.filter((r) => r === true).length, 1, JSON.stringify(results));
  });
});

describe('two gates sharing the store refuse a proof replayed at the other (DPOP=dpop)', () => {
  let issuer;
  let origin;
  let pair;
  /** The one public URL both gates serve (two locations of one hostname). */
  let resource;

  before(async () => {
    assertBuilt();
    resource = `http://127.0.0.1:${await freePort()}/mcp`;
    issuer = await startIssuer({ audience: resource });
    origin = await startOrigin({});
    pair = await startGatePair({
      bindings: {
        MCP_RESOURCE: resource,
        MCP_ORIGIN: origin.url,
        OAUTH_ISSUER: issuer.issuer,
        OAUTH_JWKS_URI: issuer.jwksUri,
        DPOP: 'dpop',
      },
    });
  });

  after(async () => {
    await pair?.close();
    await origin?.close();
    await issuer?.close();
  });

  test('first use passes at either gate; the same proof at the other is dpop_replayed', async () => {
    const key = await dpopKey('ES256');
    const token = await boundToken(issuer, key);
    const htu = `${resource}/echo`;
    const send = async (gate, proof) => {
      const response = await fetchVia(gate, htu, { headers: { authorization: `DPoP ${token}`, dpop: proof } });
      return response.status;
    };
    for (const [first, second] of [
      [pair.a, pair.b],
      [pair.b, pair.a],
    ]) {
      const proof = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
      const forwarded = origin.requests.length;
      assert.equal(await send(first, proof), 200);
      assert.equal(await send(second, proof), 401);
      assert.equal(origin.requests.length, forwarded + 1, 'the replay was not forwarded');
      const [line] = await second.output.waitFor((l) => l.event === 'request' && l.reason === 'dpop_replayed');
      assert.equal(line.status, 401);
    }
  });
});
