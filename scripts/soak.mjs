#!/usr/bin/env node
// The long soak of issue 22 (`npm run soak`): minutes of mixed traffic at a
// fixed rate through the probe build of the gate while faults come and go,
// then the oracle's figures (tests/helpers/soak.mjs). Too long for npm test,
// which runs a one-minute version (tests/soak.test.mjs).
//
//   node scripts/soak.mjs [--minutes 5] [--rate 30] [--fault-seconds 4] [--calm-seconds 8]
//                         [--seed N] [--faults kv-get-fail,origin-refuse,...] [--mix getStream=0,...]
//
// Builds nothing: it runs build-probe/ as it is. Exit status 0 when every
// check held (no wrong answer, no 5xx outside fault windows, no 500, no
// hang, no broken stream outside faults, client closes seen by the origin,
// caches within bounds), 1 otherwise, 2 for a usage error.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_MIX, FAULTS, PROBE_BUILD, runSoak } from '../tests/helpers/soak.mjs';

const usage =
  'usage: node scripts/soak.mjs [--minutes 5] [--rate 30] [--fault-seconds 4] [--calm-seconds 8] [--seed N] [--faults a,b,... ("" for none)] [--mix getStream=0,...]';

let values;
try {
  ({ values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '5' },
      rate: { type: 'string', default: '30' },
      'fault-seconds': { type: 'string', default: '4' },
      'calm-seconds': { type: 'string', default: '8' },
      seed: { type: 'string' },
      faults: { type: 'string' },
      mix: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (error) {
  console.error(`${error.message}\n${usage}`);
  process.exit(2);
}
if (values.help) {
  console.log(`${usage}\nfault kinds: ${Object.keys(FAULTS).join(', ')}\noperation weights: ${Object.entries(DEFAULT_MIX).map(([name, weight]) => `${name}=${weight}`).join(',')}`);
  process.exit(0);
}

const number = (name, { min = 0 } = {}) => {
  const value = Number(values[name]);
  if (!Number.isFinite(value) || value <= min) {
    console.error(`--${name} must be a number above ${min}\n${usage}`);
    process.exit(2);
  }
  return value;
};
const minutes = number('minutes');
const rate = number('rate');
const faultSeconds = number('fault-seconds');
const calmSeconds = number('calm-seconds');
const faults = values.faults === undefined ? Object.keys(FAULTS) : values.faults.split(',').map((kind) => kind.trim()).filter(Boolean);
for (const kind of faults) {
  if (!FAULTS[kind]) {
    console.error(`unknown fault kind ${kind}; known: ${Object.keys(FAULTS).join(', ')}`);
    process.exit(2);
  }
}
const mix = { ...DEFAULT_MIX };
for (const pair of values.mix ? values.mix.split(',') : []) {
  const [name, weight] = pair.split('=');
  if (!(name in DEFAULT_MIX) || !(Number(weight) >= 0)) {
    console.error(`--mix: ${pair} is not <operation>=<weight>; operations: ${Object.keys(DEFAULT_MIX).join(', ')}`);
    process.exit(2);
  }
  mix[name] = Number(weight);
}
const seed = values.seed === undefined ? undefined : Number(values.seed);

if (!existsSync(join(PROBE_BUILD, 'index.js'))) {
  console.error('build-probe/ is missing: the soak runs the test build with the probes. Build it with\n  bash scripts/build.sh --probes');
  process.exit(1);
}

console.log(`soak: ${minutes} min at ${rate} operations/s, faults ${faultSeconds} s on / ${calmSeconds} s off: ${faults.join(', ')}`);
const figures = await runSoak({
  durationMs: minutes * 60_000,
  rate,
  faultMs: faultSeconds * 1000,
  calmMs: calmSeconds * 1000,
  faults,
  mix,
  seed,
});

const failed = [
  figures.wrongAnswers && 'wrong answers',
  figures.fiveXXOutsideFaults && '5xx outside fault windows',
  figures.internalErrors && '500 answers',
  figures.hangs && 'hangs',
  figures.streamErrorsOutsideFaults && 'broken streams outside fault windows',
  // An idle GET stream the client leaves is seen closed only at the origin's
  // next write (README, "Failure behaviour"): only streams the origin writes to count.
  figures.clientCloses.byKind['countdown, client leaves']?.notSeenByOrigin && 'client closes not seen by the origin',
  !figures.caches.withinBounds && 'caches over their bounds (or the probe unavailable)',
  figures.engineErrors.length && 'soak engine errors',
  figures.gateGoneAfterMs !== null && "the gate's workerd went away mid-run",
].filter(Boolean);
for (const [name, list] of Object.entries(figures.samples)) {
  if (list.length) console.log(`soak: first ${name}: ${JSON.stringify(list.slice(0, 3))}`);
}
console.log(failed.length ? `soak: FAILED: ${failed.join(', ')}` : 'soak: every check held');
process.exit(failed.length ? 1 : 0);
