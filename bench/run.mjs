#!/usr/bin/env node
// Side-by-side benchmark, one run, same machine, same workerd (Miniflare),
// same local origin: (a) portcullis (build/index.js), (b) a passthrough
// worker that checks nothing (the floor), (c) a peer gate in JavaScript
// verifying with jose. Load comes from a separate process (autocannon).
// Gates are interleaved within each round; the figures are medians over the
// rounds. Prints a table and writes bench/results/latest.json.
//
//   npm run bench -- [--seconds 3] [--rounds 3] [--connections 10]

import { existsSync, mkdirSync, readFileSync, writeFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { gzipSync } from 'node:zlib';
import { startIssuer } from '../demo/issuer.mjs';
import { workerModuleOptions } from '../tests/helpers/gate.mjs';
import { corruptSignature } from '../tests/helpers/tokens.mjs';
import { bundleWorker, load as loadFor, median, startOrigin, startScriptWorker } from './harness.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({
  options: {
    seconds: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '3' },
    connections: { type: 'string', default: '10' },
  },
});
const SECONDS = Number(options.seconds);
const ROUNDS = Number(options.rounds);
const CONNECTIONS = Number(options.connections);
const FRESH_TOKENS = 6000;

/** Runs the load generator in its own process; returns its figures. */
const load = (url, tokens) => loadFor(url, tokens, { seconds: SECONDS, connections: CONNECTIONS });

async function main() {
  const wasm = join(ROOT, 'build', 'index_bg.wasm');
  if (!existsSync(wasm)) throw new Error('build/index_bg.wasm is missing: run `npm run build` first');
  const peerScript = await bundleWorker('peer-jose.mjs', 'peer.js');

  const resource = 'http://127.0.0.1:8787/mcp';
  const origin = await startOrigin();
  const issuer = await startIssuer({ algs: ['RS256', 'ES256', 'EdDSA'], audience: resource });
  const bindings = { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri };

  const started = performance.now();
  const portcullis = await startScriptWorker(undefined, bindings, { ...workerModuleOptions(), kvNamespaces: ['JWKS_CACHE'] });
  const firstAnswer = await fetch(portcullis.url);
  await firstAnswer.body?.cancel();
  const startupMs = performance.now() - started;
  const gates = {
    portcullis,
    passthrough: await startScriptWorker(join(ROOT, 'bench', 'passthrough.js'), bindings),
    peer: await startScriptWorker(peerScript, bindings),
  };

  const reused = [await issuer.mint({}, { alg: 'RS256' })];
  const rejected = [corruptSignature(await issuer.mint({}, { alg: 'RS256' }))];
  const fresh = async (alg) => {
    const tokens = [];
    for (let i = 0; i < FRESH_TOKENS; i += 200) {
      tokens.push(...(await Promise.all(Array.from({ length: 200 }, (_, j) => issuer.mint({ jti: `b-${i + j}-${Math.random()}` }, { alg })))));
    }
    issuer.minted.length = 0;
    return tokens;
  };
  const scenarios = [
    { name: 'reused token (RS256)', tokens: async () => reused },
    { name: 'new token per request (RS256)', tokens: () => fresh('RS256') },
    { name: 'new token per request (ES256)', tokens: () => fresh('ES256') },
    { name: 'new token per request (EdDSA)', tokens: () => fresh('EdDSA') },
    { name: 'rejected token (bad signature)', tokens: async () => rejected },
  ];

  // Warm every gate (JWKS fetched, code paths compiled).
  for (const gate of Object.values(gates)) await load(gate.url, reused);

  const results = {};
  for (const scenario of scenarios) {
    const runs = { portcullis: [], passthrough: [], peer: [] };
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = Object.keys(gates);
      for (let i = 0; i < round; i += 1) order.push(order.shift());
      for (const name of order) {
        const figures = await load(gates[name].url, await scenario.tokens());
        runs[name].push(figures);
        process.stderr.write(`${scenario.name} round ${round + 1} ${name}: ${figures.rps.toFixed(0)} req/s p99 ${figures.p99} ms${figures.tokensCycled ? ' (tokens cycled)' : ''}\n`);
      }
    }
    const summary = Object.fromEntries(
      Object.entries(runs).map(([name, list]) => [name, { rps: median(list.map((r) => r.rps)), p50: median(list.map((r) => r.p50)), p99: median(list.map((r) => r.p99)), non2xx: list.reduce((n, r) => n + r.non2xx, 0), runs: list }]),
    );
    summary.ratios = {
      portcullis_over_peer: summary.portcullis.rps / summary.peer.rps,
      portcullis_over_passthrough: summary.portcullis.rps / summary.passthrough.rps,
    };
    results[scenario.name] = summary;
  }

  for (const gate of Object.values(gates)) await gate.close();
  await issuer.close();
  await origin.close();

  const wasmBytes = readFileSync(wasm);
  const size = { wasm_raw: wasmBytes.length, wasm_gzip: gzipSync(wasmBytes, { level: 9 }).length, js_raw: statSync(join(ROOT, 'build', 'index.js')).size };
  const report = { date: new Date().toISOString(), seconds: SECONDS, rounds: ROUNDS, connections: CONNECTIONS, startup_ms: startupMs, size, results };
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'latest.json'), `${JSON.stringify(report, null, 2)}\n`);

  const pad = (text, width) => String(text).padEnd(width);
  console.log(`\nportcullis benchmark: ${ROUNDS} rounds x ${SECONDS} s, ${CONNECTIONS} connections, medians (req/s, p50/p99 ms)\n`);
  console.log(`${pad('scenario', 34)}${pad('portcullis', 20)}${pad('passthrough', 20)}${pad('peer (jose)', 20)}${pad('/peer', 8)}${pad('/floor', 8)}`);
  for (const [name, r] of Object.entries(results)) {
    const cell = (g) => `${g.rps.toFixed(0)} ${g.p50}/${g.p99}`;
    console.log(`${pad(name, 34)}${pad(cell(r.portcullis), 20)}${pad(cell(r.passthrough), 20)}${pad(cell(r.peer), 20)}${pad(r.ratios.portcullis_over_peer.toFixed(2), 8)}${pad(r.ratios.portcullis_over_passthrough.toFixed(2), 8)}`);
  }
  console.log(`\nworker: wasm ${size.wasm_raw} bytes raw, ${size.wasm_gzip} gzipped; index.js ${size.js_raw} bytes; start-up to first answer ${startupMs.toFixed(0)} ms`);
  console.log(`written to bench/results/latest.json`);
}

await main();
