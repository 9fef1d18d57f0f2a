#!/usr/bin/env node
// A/B of worker builds on one scenario, interleaved rounds, medians.
//   node bench/ab.mjs [--scenario reused|fresh|rejected] [--alg RS256] [--rounds 5] [--seconds 3] dirA dirB ...
// Each dir holds an index.js (and the wasm, for portcullis builds).
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Miniflare } from 'miniflare';
import { startIssuer } from '../demo/issuer.mjs';
import { freePort, workerModuleOptions } from '../tests/helpers/gate.mjs';
import { corruptSignature } from '../tests/helpers/tokens.mjs';
import { load, startOrigin } from './harness.mjs';

const { values: options, positionals: dirs } = parseArgs({
  allowPositionals: true,
  options: {
    scenario: { type: 'string', default: 'reused' },
    alg: { type: 'string', default: 'RS256' },
    rounds: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '10' },
  },
});
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const origin = await startOrigin();
const resource = 'http://127.0.0.1:8787/mcp';
const issuer = await startIssuer({ algs: [options.alg], audience: resource });
const gates = [];
for (const dir of dirs) {
  const port = await freePort();
  const mf = new Miniflare({
    ...workerModuleOptions(resolve(dir)),
    bindings: { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri },
    kvNamespaces: ['JWKS_CACHE'],
    host: '127.0.0.1',
    port,
    cf: false,
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.resume();
    },
  });
  gates.push({ dir, url: `${(await mf.ready).origin}/mcp`, mf, runs: [] });
}
// New tokens are minted for every run: a token a gate saw in an earlier run
// would be a reused one.
let minted = 0;
async function tokensForRun() {
  if (options.scenario !== 'fresh') return tokens;
  const fresh = [];
  for (let i = 0; i < 6000; i += 200) fresh.push(...(await Promise.all(Array.from({ length: 200 }, () => issuer.mint({ jti: `ab-${(minted += 1)}` }, { alg: options.alg })))));
  issuer.minted.length = 0;
  return fresh;
}
let tokens = [await issuer.mint({}, { alg: options.alg })];
if (options.scenario === 'rejected') tokens = [corruptSignature(tokens[0])];
const opts = { seconds: Number(options.seconds), connections: Number(options.connections) };
for (const gate of gates) await load(gate.url, tokens.slice(0, 1), { ...opts, seconds: 1 });
for (let round = 0; round < Number(options.rounds); round += 1) {
  const order = [...gates];
  for (let i = 0; i < round; i += 1) order.push(order.shift());
  for (const gate of order) {
    const figures = await load(gate.url, await tokensForRun(), opts);
    gate.runs.push(figures);
    process.stderr.write(`round ${round + 1} ${gate.dir}: ${figures.rps.toFixed(0)} req/s p99 ${figures.p99} non2xx ${figures.non2xx}${figures.tokensCycled ? ' (tokens cycled)' : ''}\n`);
  }
}
const base = median(gates[0].runs.map((r) => r.rps));
for (const gate of gates) {
  const rps = median(gate.runs.map((r) => r.rps));
  console.log(`${gate.dir.padEnd(30)} ${rps.toFixed(0).padStart(6)} req/s  p50 ${median(gate.runs.map((r) => r.p50))} p99 ${median(gate.runs.map((r) => r.p99))}  ×${(rps / base).toFixed(2)}`);
}
for (const gate of gates) await gate.mf.dispose();
await issuer.close();
await origin.close();
