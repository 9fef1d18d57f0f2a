// The edge verifies signatures with WebCrypto (src/webcrypto.rs); the
// native build with RustCrypto (crates/core/src/verify/signature.rs). Both must agree (issue 8).
// The native side exports its cases with their verdicts
// (crates/core/src/verify/signature_cases.rs: every Wycheproof vector of the gate's algorithms,
// random keys/signatures/mutations, keys no backend may build); this test
// sends each one through the worker's own key loader and WebCrypto backend in
// workerd (the `verify-probe` test build, build-probe/) and requires:
//  - the verdict the vector owes, where it says (Wycheproof valid → valid,
//    invalid/acceptable/off-profile → invalid, oversized/small-order keys →
//    refused at load), and
//  - the native backend's verdict, for every case.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT } from './helpers/gate.mjs';
import { startStack } from './helpers/stack.mjs';

const PROBE_BUILD = join(ROOT, 'build-probe');
const PROBE_PATH = '/__portcullis/verify-probe';
const BATCH = 400;

/** Runs the native export; returns { seed, cases }. */
function exportCases() {
  const file = join(tmpdir(), `portcullis-signature-cases-${process.pid}.json`);
  try {
    execFileSync('cargo', ['test', '-p', 'portcullis-core', '--lib', '--quiet', '--', '--ignored', '--exact', 'verify::signature_cases::export_signature_cases'], {
      cwd: ROOT,
      env: { ...process.env, PORTCULLIS_SIGNATURE_CASES: file },
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 16 * 1024 * 1024,
    });
    return JSON.parse(readFileSync(file, 'utf8'));
  } finally {
    rmSync(file, { force: true });
  }
}

describe('WebCrypto and native signature backends agree', { skip: !existsSync(join(PROBE_BUILD, 'index.js')) && 'build-probe/ missing: run `bash scripts/build.sh --probes`' }, () => {
  let stack;
  let seed;
  /** Cases with the edge's verdict as `edge`. */
  let judged = [];

  before(async () => {
    const exported = exportCases();
    seed = exported.seed;
    stack = await startStack({ buildDir: PROBE_BUILD });
    for (let start = 0; start < exported.cases.length; start += BATCH) {
      const batch = exported.cases.slice(start, start + BATCH);
      const response = await stack.gate.fetch(PROBE_PATH, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch.map(({ jwk, alg, message, signature }) => ({ jwk, alg, message, signature }))),
      });
      assert.equal(response.status, 200, await response.clone().text());
      const { verdicts } = await response.json();
      assert.equal(verdicts.length, batch.length);
      batch.forEach((item, i) => judged.push({ ...item, edge: verdicts[i] }));
    }
    report();
  });

  after(async () => {
    await stack?.close();
  });

  function report() {
    const families = new Map();
    for (const item of judged) {
      const row = families.get(item.family) ?? { cases: 0, valid: 0, invalid: 0, key_refused: 0, disagree: 0 };
      row.cases++;
      row[item.edge]++;
      if (item.edge !== item.native || (item.expect && item.edge !== item.expect)) row.disagree++;
      families.set(item.family, row);
    }
    const lines = [`signature cases through WebCrypto in workerd (random seed ${seed}):`];
    for (const [family, row] of families) {
      lines.push(
        `  ${family.padEnd(48)} ${String(row.cases).padStart(5)} cases: valid ${String(row.valid).padStart(4)}, invalid ${String(row.invalid).padStart(4)}, key refused ${String(row.key_refused).padStart(2)}, disagreements ${row.disagree}`,
      );
    }
    console.log(lines.join('\n'));
  }

  function disagreements(filter) {
    return judged
      .filter(filter)
      .filter((item) => item.edge !== item.native || (item.expect && item.edge !== item.expect))
      .map(({ family, alg, jwk, message, signature, native, expect, edge }) => ({ family, alg, kty: jwk.kty, message: message.slice(0, 40), signature: signature.slice(0, 40), native, expect, edge }));
  }

  test('every Wycheproof vector gets the verdict it owes, as natively', () => {
    const vectors = judged.filter((item) => !item.family.startsWith('differential') && item.family !== 'unbuildable keys');
    assert.ok(vectors.length > 4000, `only ${vectors.length} Wycheproof cases`);
    assert.ok(vectors.some((item) => item.edge === 'valid') && vectors.some((item) => item.edge === 'invalid') && vectors.some((item) => item.edge === 'key_refused'), 'the verdicts are not all one kind');
    assert.deepEqual(disagreements((item) => vectors.includes(item)), []);
  });

  test('random keys, signatures and mutations: the same verdict as natively (seed printed above)', () => {
    const differential = judged.filter((item) => item.family.startsWith('differential'));
    for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'EdDSA']) {
      const mine = differential.filter((item) => item.alg === alg);
      assert.ok(mine.some((item) => item.edge === 'valid'), `no valid ${alg} case`);
      assert.ok(mine.some((item) => item.edge === 'invalid'), `no invalid ${alg} case`);
    }
    assert.deepEqual(disagreements((item) => item.family.startsWith('differential')), [], `seed ${seed}: rerun with PORTCULLIS_SEED=${seed}`);
  });

  test('keys WebCrypto cannot import (off-curve P-256, non-point Ed25519) never verify', () => {
    const unbuildable = judged.filter((item) => item.family === 'unbuildable keys');
    assert.equal(unbuildable.length, 2);
    for (const item of unbuildable) {
      assert.equal(item.native, 'invalid');
      assert.equal(item.edge, 'invalid');
    }
  });
});
