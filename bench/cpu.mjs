#!/usr/bin/env node
// CPU mode of the benchmark: instead of req/s, the CPU time each gate's own
// workerd process spends per request. Every gate runs in its own Miniflare
// (its own workerd child of this process); utime+stime of that process
// (/proc/<pid>/stat, all threads) is read before and after a fixed number of
// requests sent from a separate process (bench/load.mjs). Warm-up requests
// before each measurement are not counted. Rounds are interleaved (gates in
// rotating order); figures are medians per (gate, scenario) minus the
// passthrough floor's median. Writes bench/results/cpu-latest.json.
//
//   npm run bench:cpu -- [--rounds 5] [--requests 3000] [--connections 10]
//     [--scenario reused,session,rs256,es256,eddsa,list,badsig,notoken] [--build DIR]

import { execSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startIssuer } from '../demo/issuer.mjs';
import { workerModuleOptions } from '../tests/helpers/gate.mjs';
import { corruptSignature } from '../tests/helpers/tokens.mjs';
import { bundleWorker, load, median, startOrigin, startScriptWorker } from './harness.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    requests: { type: 'string', default: '3000' },
    connections: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '300' },
    scenario: { type: 'string' },
    build: { type: 'string', default: 'build' },
  },
});
const ROUNDS = Number(options.rounds);
const REQUESTS = Number(options.requests);
const CONNECTIONS = Number(options.connections);
const WARMUP = Number(options.warmup);
const BUILD = resolve(ROOT, options.build);
const TICK_US = 1e6 / Number(execSync('getconf CLK_TCK').toString().trim() || 100);

// --- workerd processes -------------------------------------------------------

/** PIDs of the workerd processes whose parent is this node process. */
function workerdChildren() {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(entry);
    if (stat && stat.comm === 'workerd' && stat.ppid === process.pid) pids.push(Number(entry));
  }
  return pids;
}

function readStat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  const close = text.lastIndexOf(')');
  const comm = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' '); // fields[0] is field 3 (state)
  return { comm, ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) }; // utime (14) + stime (15)
}

const cpuTicks = (pid) => {
  const stat = readStat(pid);
  if (!stat) throw new Error(`workerd ${pid} is gone`);
  return stat.ticks;
};

/** Starts a worker in its own Miniflare and finds its workerd PID. */
async function startGate(name, scriptPath, bindings, extra) {
  const before = new Set(workerdChildren());
  const gate = await startScriptWorker(scriptPath, bindings, extra);
  const pids = workerdChildren().filter((pid) => !before.has(pid));
  if (pids.length !== 1) throw new Error(`${name}: expected one new workerd child, found ${pids.length}`);
  return { name, ...gate, pid: pids[0] };
}

// --- requests ----------------------------------------------------------------

const mcpHeaders = (method, name) => ({
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
  'mcp-method': method,
  ...(name ? { 'mcp-name': name } : {}),
});
const CALL = {
  method: 'POST',
  headers: mcpHeaders('tools/call', 'lookup_invoice'),
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } } }),
};
const LIST = { method: 'POST', headers: mcpHeaders('tools/list'), body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }) };
const TOOL_SCOPES = { lookup_invoice: 'invoices:read', list_invoices: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' };

async function main() {
  if (!existsSync(join(BUILD, 'index_bg.wasm'))) throw new Error(`${BUILD}/index_bg.wasm is missing: run \`npm run build\` first`);
  const peerScript = await bundleWorker('peer-jose.mjs', 'peer.js');
  const cachedScript = await bundleWorker('peer-jose-cached.mjs', 'peer-cached.js');

  const resource = 'http://127.0.0.1:8787/mcp';
  const origin = await startOrigin({ mcp: true });
  const issuer = await startIssuer({ algs: ['RS256', 'ES256', 'EdDSA'], audience: resource });
  const bindings = { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri };
  const started = performance.now();
  const gates = [
    await startGate('passthrough', join(ROOT, 'bench', 'passthrough.js'), bindings),
    await startGate('peer', peerScript, bindings),
    await startGate('cached', cachedScript, bindings),
    await startGate('portcullis', undefined, { ...bindings, MCP_TOOL_SCOPES: JSON.stringify(TOOL_SCOPES) }, { ...workerModuleOptions(BUILD), kvNamespaces: ['JWKS_CACHE'] }),
  ];
  const byName = Object.fromEntries(gates.map((g) => [g.name, g]));

  const reused = [await issuer.mint({}, { alg: 'RS256' })];
  const listToken = [await issuer.mint({ scope: 'invoices:read' }, { alg: 'RS256' })];
  // A session bound through each gate (for portcullis the origin's Mcp-Session-Id is recorded to the token's owner).
  const sessions = {};
  for (const gate of gates) {
    const answer = await fetch(gate.url, {
      method: 'POST',
      headers: { ...mcpHeaders('initialize'), authorization: `Bearer ${reused[0]}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '0' } } }),
    });
    await answer.body?.cancel();
    sessions[gate.name] = answer.headers.get('mcp-session-id');
    if (answer.status !== 200 || !sessions[gate.name]) process.stderr.write(`WARNING: initialize through ${gate.name}: ${answer.status}, session ${sessions[gate.name] ? 'bound' : 'missing'}\n`);
  }
  const freshSet = async (alg, count) => {
    const tokens = [];
    for (let i = 0; i < count; i += 200) {
      tokens.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => issuer.mint({ jti: `cpu-${alg}-${i + j}-${Math.random()}` }, { alg })))));
    }
    issuer.minted.length = 0;
    return tokens;
  };
  const fresh = (alg) => ({ fresh: alg, request: () => CALL, expect: { passthrough: 200, others: 200 } });
  const ALL = {
    reused: { label: 'reused token', tokens: reused, request: () => CALL, expect: { passthrough: 200, others: 200 } },
    session: { label: 'reused token + Mcp-Session-Id', tokens: reused, request: (g) => ({ ...CALL, headers: { ...CALL.headers, 'mcp-session-id': sessions[g] ?? 'none' } }), expect: { passthrough: 200, others: 200 } },
    rs256: { label: 'new token per request (RS256)', ...fresh('RS256') },
    es256: { label: 'new token per request (ES256)', ...fresh('ES256') },
    eddsa: { label: 'new token per request (EdDSA)', ...fresh('EdDSA') },
    list: { label: 'tools/list (filtered by portcullis)', tokens: listToken, request: () => LIST, expect: { passthrough: 200, others: 200 } },
    badsig: { label: 'bad signature', tokens: [corruptSignature(reused[0])], request: () => CALL, expect: { passthrough: 200, others: 401 } },
    notoken: { label: 'no token', tokens: [], request: () => CALL, expect: { passthrough: 200, others: 401 } },
  };
  const keys = options.scenario ? options.scenario.split(',').map((s) => s.trim()) : Object.keys(ALL);
  for (const key of keys) if (!ALL[key]) throw new Error(`unknown scenario ${key} (one of ${Object.keys(ALL).join(', ')})`);

  // Check the filtered tools/list once: portcullis must drop void_invoice.
  if (keys.includes('list')) {
    const answer = await fetch(byName.portcullis.url, { ...LIST, headers: { ...LIST.headers, authorization: `Bearer ${listToken[0]}` } });
    const names = (await answer.json().catch(() => ({})))?.result?.tools?.map((t) => t.name) ?? [];
    if (answer.status !== 200 || names.includes('void_invoice') || !names.includes('lookup_invoice')) process.stderr.write(`WARNING: portcullis tools/list answer not filtered as expected: ${answer.status} [${names}]\n`);
  }

  const warnings = [];
  const measure = async (gate, scenario, tokens, warmTokens) => {
    const request = scenario.request(gate.name);
    await load(gate.url, warmTokens, { connections: CONNECTIONS, amount: WARMUP, ...request });
    const before = cpuTicks(gate.pid);
    const figures = await load(gate.url, tokens, { connections: CONNECTIONS, amount: REQUESTS, ...request });
    const ticks = cpuTicks(gate.pid) - before;
    const expected = gate.name === 'passthrough' ? scenario.expect.passthrough : scenario.expect.others;
    const good = figures.statuses?.[expected] ?? 0;
    // Answers actually received: a gate that refuses without reading the body may close the
    // connection, which autocannon counts as an error; CPU is divided by what was answered.
    const answered = Object.values(figures.statuses ?? {}).reduce((n, c) => n + c, 0) || REQUESTS;
    if (good !== answered || answered < REQUESTS * 0.5) {
      const warning = `${scenario.label} ${gate.name}: expected ${REQUESTS} x ${expected}, got ${JSON.stringify(figures.statuses)}${figures.errors ? `, ${figures.errors} errors` : ''}`;
      warnings.push(warning);
      process.stderr.write(`WARNING: ${warning}\n`);
    }
    return { ticks, answered, errors: figures.errors, us: (ticks * TICK_US) / answered, statuses: figures.statuses };
  };

  const results = {};
  for (const key of keys) {
    const scenario = ALL[key];
    const runs = Object.fromEntries(gates.map((g) => [g.name, []]));
    // Mint every token of the scenario before measuring: one unseen set per (gate, round), and warm-up sets.
    const sets = {};
    if (scenario.fresh) {
      process.stderr.write(`minting ${scenario.fresh} tokens...\n`);
      for (const gate of gates.filter((g) => g.name !== 'passthrough')) sets[gate.name] = await Promise.all(Array.from({ length: ROUNDS }, () => freshSet(scenario.fresh, REQUESTS + WARMUP)));
    }
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = [...gates];
      for (let i = 0; i < round; i += 1) order.push(order.shift());
      for (const gate of order) {
        // The floor checks nothing: it may see the peer's set (measured in another process).
        const set = (sets[gate.name] ?? sets.peer)?.[round];
        const figures = set ? await measure(gate, scenario, set.slice(WARMUP), set.slice(0, WARMUP)) : await measure(gate, scenario, scenario.tokens, scenario.tokens);
        runs[gate.name].push(figures);
        process.stderr.write(`${scenario.label} round ${round + 1} ${gate.name}: ${figures.ticks} ticks, ${figures.us.toFixed(0)} µs/request over ${figures.answered} answers${figures.errors ? ` (${figures.errors} connection errors)` : ''}\n`);
      }
      
    }
    const medians = Object.fromEntries(Object.entries(runs).map(([name, list]) => [name, median(list.map((r) => r.us))]));
    const over = Object.fromEntries(gates.filter((g) => g.name !== 'passthrough').map((g) => [g.name, medians[g.name] - medians.passthrough]));
    results[key] = {
      label: scenario.label,
      floor_us: medians.passthrough,
      over_floor_us: over,
      portcullis_over_peer: over.portcullis / over.peer,
      portcullis_over_cached: over.portcullis / over.cached,
      portcullis_minus_cached_us: over.portcullis - over.cached,
      runs,
    };
  }
  for (const gate of gates) await gate.close();
  await issuer.close();
  await origin.close();
  const minutes = (performance.now() - started) / 60000;

  if (results.list && results.reused) {
    results.list.list_over_reused = Object.fromEntries(Object.keys(results.list.over_floor_us).map((g) => [g, results.list.over_floor_us[g] / results.reused.over_floor_us[g]]));
  }
  const report = { date: new Date().toISOString(), build: BUILD, rounds: ROUNDS, requests: REQUESTS, connections: CONNECTIONS, warmup: WARMUP, tick_us: TICK_US, minutes, warnings, results };
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'cpu-latest.json'), `${JSON.stringify(report, null, 2)}\n`);

  const pad = (text, width) => String(text).padEnd(width);
  const num = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '–');
  console.log(`\nportcullis CPU benchmark: ${ROUNDS} rounds x ${REQUESTS} requests, ${CONNECTIONS} connections; workerd CPU (utime+stime, ${TICK_US / 1000} ms ticks = ${num(TICK_US / REQUESTS, 1)} µs/request resolution)`);
  console.log(`medians, µs of CPU per request over the passthrough floor (floor itself in its column)\n`);
  console.log(`${pad('scenario', 38)}${pad('floor', 8)}${pad('peer', 8)}${pad('cached', 8)}${pad('portc.', 8)}${pad('p/peer', 8)}${pad('p/cached', 10)}${pad('p-cached µs', 12)}`);
  for (const r of Object.values(results)) {
    const o = r.over_floor_us;
    console.log(`${pad(r.label, 38)}${pad(num(r.floor_us), 8)}${pad(num(o.peer), 8)}${pad(num(o.cached), 8)}${pad(num(o.portcullis), 8)}${pad(num(r.portcullis_over_peer, 2), 8)}${pad(num(r.portcullis_over_cached, 2), 10)}${pad(num(r.portcullis_minus_cached_us), 12)}`);
  }
  if (results.list?.list_over_reused) {
    const l = results.list.list_over_reused;
    console.log(`\ntools/list over reused tools/call (over-floor ratio): peer ${num(l.peer, 2)}, cached ${num(l.cached, 2)}, portcullis ${num(l.portcullis, 2)} (the peers do no filtering: their tools/list is a reused-token POST)`);
  }
  if (warnings.length) console.log(`\n${warnings.length} WARNING(S): answers not as expected, see above and the JSON`);
  console.log(`\n${minutes.toFixed(1)} min; written to bench/results/cpu-latest.json`);
}

await main();
