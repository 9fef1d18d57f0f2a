// The short soak of issue 22, part of npm test: about a minute of mixed
// traffic (valid, expired, forged, new and reused tokens, step-ups,
// tools/list and tools/call on sessions, SSE streams the client reads to
// the end or leaves) through the probe build while every fault of the
// schedule comes and goes once (KV reads failing and stalling, KV writes
// failing and rate limited, the origin stalling, resetting mid-stream and
// refusing connections). The long version is `npm run soak`
// (scripts/soak.mjs). The engine and its oracle are tests/helpers/soak.mjs.
//
// One soak runs in `before`; each property is its own test, so a failure
// names what broke and the summary (printed once) has the figures.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';
import { FAULTS, PROBE_BUILD, runSoak } from './helpers/soak.mjs';

const DURATION_MS = 56_000;
const RATE = 12;

const missing = !existsSync(join(PROBE_BUILD, 'index.js')) && 'build-probe/ missing: run `bash scripts/build.sh --probes`';

describe('soak: mixed traffic while faults come and go', { skip: missing }, () => {
  let figures;
  /** The figures' samples of one kind, for a failure message. */
  const show = (name) => JSON.stringify(figures.samples[name], null, 1);

  before(
    async () => {
      // 3 s calm, then each of the 7 faults for 2 s followed by 5.5 s of calm.
      figures = await runSoak({ durationMs: DURATION_MS, rate: RATE, warmupMs: 3000, faultMs: 2000, calmMs: 5500 });
    },
    { timeout: 200_000 },
  );

  test('the soak ran: traffic at the rate, every fault switched, no mistake of its own', () => {
    assert.equal(figures.gateGoneAfterMs, null, `the gate's workerd went away ${figures.gateGoneAfterMs} ms in: ${figures.gateOtherOutput.join(' | ')}`);
    assert.deepEqual(figures.engineErrors, []);
    // Operations start at the rate; a step-up or an initialize is two requests.
    assert.ok(figures.requests.sent >= (RATE * DURATION_MS) / 1000, `only ${figures.requests.sent} requests`);
    assert.deepEqual([...new Set(figures.faults.map((f) => f.kind))].sort(), Object.keys(FAULTS).sort());
    assert.ok(figures.requests.outsideFaultWindows >= 100, `only ${figures.requests.outsideFaultWindows} requests outside fault windows`);
    assert.ok(figures.kv.failedGets > 0 && figures.kv.failedPuts > 0, `the KV switch never failed an operation: ${JSON.stringify(figures.kv)}`);
  });

  test('no wrong answer: nothing refusable reached the origin or got a 2xx; nothing valid refused outside a fault', () => {
    assert.equal(figures.wrongAnswers, 0, show('wrong'));
  });

  test('no 5xx outside fault windows, and no 500 at all', () => {
    assert.equal(figures.fiveXXOutsideFaults, 0, show('fiveXXOutsideFaults'));
    assert.equal(figures.internalErrors, 0, show('internalErrors'));
  });

  test('no hangs: every request answered, every stream ended, within the bound', () => {
    assert.equal(figures.hangs, 0, show('hangs'));
    assert.equal(figures.streamErrorsOutsideFaults, 0, show('streamErrorsOutsideFaults'));
  });

  test('a stream the client leaves while the origin writes to it is closed at the origin within 3 s', () => {
    const countdown = figures.clientCloses.byKind['countdown, client leaves'] ?? { checked: 0, notSeenByOrigin: 0 };
    assert.ok(countdown.checked >= 5, `only ${countdown.checked} client-closed countdown streams to check`);
    const missed = figures.samples.clientClosesNotSeenByOrigin.filter((s) => s.kind === 'countdown, client leaves');
    assert.equal(countdown.notSeenByOrigin, 0, JSON.stringify(missed, null, 1));
  });

  // An idle GET stream the client leaves stays open at the origin until the
  // origin next writes (the SDK's keep-alive, every 15 s): workerd learns that
  // a connection closed only when it writes to it (README, "Failure
  // behaviour"). The summary counts them; nothing to assert.

  test('isolate caches within their bounds at the end', () => {
    const { caches } = figures;
    assert.ok(caches.sizes, `cache probe unavailable: ${caches.error}`);
    assert.ok(caches.withinBounds, `over their bounds or missing: ${caches.over.join(', ')} in ${JSON.stringify(caches.sizes)}`);
  });
});
