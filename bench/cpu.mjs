#!/usr/bin/env node
// CPU mode of the benchmark: instead of req/s, the CPU time each gate's own
// workerd process spends per request. Every gate runs in its own Miniflare
// (its own workerd child of this process); the CPU time of that process (the
// sum of its threads' /proc/<pid>/task/*/schedstat, ns; checked against
// utime+stime of /proc/<pid>/stat) is read before and after a fixed number of
// requests sent from a separate process (bench/load.mjs). Warm-up requests
// before each measurement are not counted. Rounds are interleaved (gates in
// rotating order); figures are medians per (gate, scenario) minus the
// passthrough floor's median.
//
// What keeps the figures steady (figures in the commit that made these
// changes): windows of 10000 requests (at 3000 one window's figure moved
// +-30 µs/request, at 9000 +-3 on a quiet machine); the workerd processes
// pinned to the last CPU, and this process (origin, issuer) and the load
// generator to the others (--no-pin to not); and the machine's other CPU use
// (what /proc/stat counts beyond this process, its workerd children and the
// load generator) watched: each window waits (up to 20 s) for a quiet half
// second, and a window during which other processes used more than 10% of a
// CPU is measured again (up to 2 times); one still disturbed is kept but
// flagged (* in the table, `disturbed` in the JSON). Writes
// bench/results/cpu-latest.json.
//
// The gate logs one console.log line per request, as does the full peer;
// the peer and the cached peer none. Measured two ways, a line's cost under
// Miniflare differs: about 3-4 µs each for 10 short lines from a
// passthrough, 25 +- 11 µs for one portcullis-sized line built with
// JSON.stringify in the full peer (--ablation). Either way it is in
// portcullis's figures.
//
// Gates: passthrough (the floor), peer (bench/peer-jose.mjs), cached
// (bench/peer-jose-cached.mjs), full (bench/peer-jose-full.mjs: the cached
// peer plus the per-request work portcullis's features ask of any gate: body
// read and JSON-RPC authorization, header filtering both ways, a log line),
// platform (bench/platform-floor.mjs: only the Workers API calls those
// features need, made the cheapest way, with no decision: a lower bound for
// any gate that keeps them), portcullis. p/full, portcullis's cost over
// full's, is what portcullis adds over that work done in plain JavaScript;
// p-platf. what it adds over the platform's share of it.
//
// --ablation measures, instead, the full peer with its parts added one at a
// time (PEER_FEATURES), to show what each costs outside portcullis: cached,
// + log line, + body read/parse/JSON-RPC authorization (the buffer
// forwarded), + response rebuilt with filtered headers, + request header
// filtering (= full). Default scenario: reused. Writes
// bench/results/cpu-ablation.json.
//
//   npm run bench:cpu -- [--rounds 5] [--requests 10000] [--connections 10]
//     [--scenario reused,session,rs256,es256,eddsa,list,badsig,notoken] [--build DIR] [--no-pin] [--ablation]
//     [--compare NAME=DIR[:ALG],NAME=DIR[:ALG]...] [--assertion] [--rate-limits] [--dpop]
//
// --compare measures, instead of the peers, several builds of portcullis
// against the floor in the same run (e.g. a change and the build before it):
// each build's figure over the floor and its paired difference to the first
// build. Writes bench/results/cpu-compare.json.
//
// --assertion compares, the same way, the build (--build) without the origin
// assertion and with it signed by an ES256 and by an EdDSA key (keys made up
// for the run): what one signed assertion per forwarded request costs.
// Writes bench/results/cpu-assertion.json.
//
// --rate-limits compares, the same way, the build without rate limits and
// with three rules (RATE_LIMITS: subject, subject+tool and address, each on
// its own Rate Limiting binding in Miniflare, with limits never reached):
// what counting costs per request. A new token counts all three (the
// address before its check), a reused one the two identity rules. Writes
// bench/results/cpu-rate-limits.json.
//
// --dpop compares, the same way, the build taking Bearer tokens (DPOP unset,
// the reused token) with the same build requiring DPoP (DPOP=dpop): an
// RS256 token bound to the client's key (`cnf.jkt`), reused, and a new proof
// per request (unique jti, htu the gate's URL as the load generator calls
// it, ath of the token), signed with ES256, then EdDSA, with the replay store
// in isolate memory (DPOP_REPLAY_STORE unset), and ES256 with the Durable
// Object store (DPOP_REPLAY_STORE=DPOP_REPLAY, Miniflare's DpopReplay
// object, SQLite, in the same workerd: its work is in the figure; the row is
// left out if the build has no replay.mjs). Proofs are signed by this
// process right before each window (retries included: a proof used twice is
// a 401), so every proof's iat is seconds old. Scenario: reused only. Writes
// bench/results/cpu-dpop.json.

import { execSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { startIssuer } from '../demo/issuer.mjs';
import { workerModuleOptions } from '../tests/helpers/gate.mjs';
import { assertionKey } from '../tests/helpers/stack.mjs';
import { corruptSignature } from '../tests/helpers/tokens.mjs';
import { bundleWorker, load, median, startOrigin, startScriptWorker } from './harness.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    requests: { type: 'string', default: '10000' },
    connections: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '300' },
    scenario: { type: 'string' },
    build: { type: 'string', default: 'build' },
    'no-pin': { type: 'boolean', default: false },
    ablation: { type: 'boolean', default: false },
    compare: { type: 'string' },
    assertion: { type: 'boolean', default: false },
    'rate-limits': { type: 'boolean', default: false },
    dpop: { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(options.rounds);
const REQUESTS = Number(options.requests);
const CONNECTIONS = Number(options.connections);
const WARMUP = Number(options.warmup);
const BUILD = resolve(ROOT, options.build);
const ABLATION = options.ablation;
/**
 * --compare: builds of portcullis measured side by side, [name, directory];
 * --assertion: one build, [name, directory, the assertion key's algorithm].
 */
/** --rate-limits: the rules measured, each on its own binding (limits never reached). */
const RATE_RULES = [
  { binding: 'RL_SUBJECT', key: 'subject' },
  { binding: 'RL_TOOL', key: 'subject+tool' },
  { binding: 'RL_ADDRESS', key: 'address' },
];
/**
 * --dpop: the rows after `bearer` take DPoP (their fifth member: the proof's
 * algorithm, bindings and Miniflare options added); the Durable Object row
 * only when the build has the replay store's module.
 */
const DPOP_DO = existsSync(join(BUILD, 'replay.mjs'));
const DPOP_ROWS = [
  ['bearer', BUILD],
  ['DPoP, reused token, new ES256 proof per request', BUILD, undefined, undefined, { proof: 'ES256', bindings: { DPOP: 'dpop' } }],
  ['DPoP, reused token, new EdDSA proof per request', BUILD, undefined, undefined, { proof: 'EdDSA', bindings: { DPOP: 'dpop' } }],
  ...(DPOP_DO
    ? [
        [
          'DPoP (ES256) + Durable Object replay store',
          BUILD,
          undefined,
          undefined,
          { proof: 'ES256', bindings: { DPOP: 'dpop', DPOP_REPLAY_STORE: 'DPOP_REPLAY' }, extra: { durableObjects: { DPOP_REPLAY: { className: 'DpopReplay', useSQLite: true } } } },
        ],
      ]
    : []),
];
/** --dpop: proofs signed per window beyond the requests sent, so none is ever used twice (autocannon may set up a request or two per connection it never sends). */
const DPOP_SPARE = 50;
const COMPARE = options.dpop
  ? DPOP_ROWS
  : options['rate-limits']
  ? [
      ['no rate limits', BUILD],
      ['3 rate limit rules', BUILD, undefined, RATE_RULES],
    ]
  : options.assertion
  ? [
      ['no assertion', BUILD],
      ['ES256 assertion', BUILD, 'ES256'],
      ['EdDSA assertion', BUILD, 'EdDSA'],
    ]
  : options.compare?.split(',').map((entry) => {
      // NAME=DIR, or NAME=DIR:ALG to sign the origin assertion with an ALG key.
      const [name, target] = entry.split('=');
      const [dir, alg] = (target ?? name).split(':');
      return [name, resolve(ROOT, dir), alg];
    });
/** --ablation: the full peer's parts, added one at a time (its PEER_FEATURES binding); the first row is the cached peer itself. */
const ABLATION_STEPS = [
  { name: 'cached', label: 'cached peer' },
  { name: 'log', label: '+ log line', features: 'log' },
  { name: 'body', label: '+ read body, JSON.parse, JSON-RPC authz, forward the buffer', features: 'log body' },
  { name: 'response', label: '+ response rebuilt, headers filtered', features: 'log body response' },
  { name: 'full', label: '+ request header filtering (= full)', features: 'log body response headers' },
];
const TICK_US = 1e6 / Number(execSync('getconf CLK_TCK').toString().trim() || 100);
const CPUS = availableParallelism();
// Workerd on the last CPU, everything of the harness's own (this process: the
// origin, the issuer; the load generator it spawns) on the others.
const PIN = !options['no-pin'] && CPUS >= 2 ? { harness: `0-${CPUS - 2}`, workerd: String(CPUS - 1) } : undefined;
const pin = (pid, cpus) => execSync(`taskset -a -p -c ${cpus} ${pid}`, { stdio: 'ignore' });
/** Other processes may use this much CPU during a window (fraction of one CPU) before it is measured again. */
const FOREIGN_LIMIT = 0.1;
const RETRIES = 2;
/** Before a window: wait (up to this long) for a half second in which other processes kept under the limit. */
const QUIET_WAIT_MS = 20000;

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

/** CPU time of every thread of `pid`, ns (schedstat's first field: time on a CPU). */
function cpuNs(pid) {
  let ns = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return ns;
}

/** CPU time the whole machine spent busy (user, nice, system, irq, softirq), µs. */
function machineBusyUs() {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) * TICK_US;
}

/** CPU used so far by this process and its workerd children, µs. */
function ownUs(pids) {
  const { user, system } = process.cpuUsage();
  return user + system + pids.reduce((sum, pid) => sum + cpuTicks(pid) * TICK_US, 0);
}

/** Starts a worker in its own Miniflare and finds its workerd PID. */
async function startGate(name, scriptPath, bindings, extra) {
  const before = new Set(workerdChildren());
  const gate = await startScriptWorker(scriptPath, bindings, extra);
  const pids = workerdChildren().filter((pid) => !before.has(pid));
  if (pids.length !== 1) throw new Error(`${name}: expected one new workerd child, found ${pids.length}`);
  if (PIN) pin(pids[0], PIN.workerd);
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

/** Per ablation step (and full - cached): median and half-range of its per-round difference to the step before. */
function pairedSteps(runs) {
  const pairs = ABLATION_STEPS.slice(1).map((step, i) => [step.name, ABLATION_STEPS[i].name]);
  pairs.push(['full', 'cached']);
  return Object.fromEntries(
    pairs.map(([name, prev]) => {
      const diffs = runs[name].map((r, round) => r.us - runs[prev][round].us);
      return [`${name}-${prev}`, { median: median(diffs), half_range: (Math.max(...diffs) - Math.min(...diffs)) / 2, rounds: diffs }];
    }),
  );
}

/** --compare: each build's per-round difference to the first build's, median and half-range. */
function pairedToFirst(runs) {
  const [first] = COMPARE[0];
  return Object.fromEntries(
    COMPARE.slice(1).map(([name]) => {
      const diffs = runs[name].map((r, round) => r.us - runs[first][round].us);
      return [name, { median: median(diffs), half_range: (Math.max(...diffs) - Math.min(...diffs)) / 2, rounds: diffs }];
    }),
  );
}

async function main() {
  for (const [, dir] of COMPARE ?? []) if (!existsSync(join(dir, 'index_bg.wasm'))) throw new Error(`${dir}/index_bg.wasm is missing`);
  if (!ABLATION && !COMPARE && !existsSync(join(BUILD, 'index_bg.wasm'))) throw new Error(`${BUILD}/index_bg.wasm is missing: run \`npm run build\` first`);
  const peerScript = await bundleWorker('peer-jose.mjs', 'peer.js');
  const cachedScript = await bundleWorker('peer-jose-cached.mjs', 'peer-cached.js');
  const fullScript = await bundleWorker('peer-jose-full.mjs', 'peer-full.js');
  const platformScript = await bundleWorker('platform-floor.mjs', 'platform-floor.js');

  if (PIN) pin(process.pid, PIN.harness);
  const resource = 'http://127.0.0.1:8787/mcp';
  const origin = await startOrigin({ mcp: true });
  const issuer = await startIssuer({ algs: ['RS256', 'ES256', 'EdDSA'], audience: resource });
  const bindings = { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri };
  const started = performance.now();
  const scoped = { ...bindings, MCP_TOOL_SCOPES: JSON.stringify(TOOL_SCOPES) };
  const gates = [await startGate('passthrough', join(ROOT, 'bench', 'passthrough.js'), bindings)];
  if (COMPARE) {
    gates.push(await startGate('platform', platformScript, bindings));
    for (const [name, dir, alg, rules, variant] of COMPARE) {
      const signed = alg ? { ...scoped, ASSERTION_KEY: assertionKey(alg), ORIGIN_ASSERTION_AUDIENCE: origin.url } : scoped;
      const limited = rules ? { ...signed, RATE_LIMITS: JSON.stringify(rules) } : signed;
      // Limits no run reaches: what is measured is the counting.
      const ratelimits = Object.fromEntries((rules ?? []).map((rule) => [rule.binding, { simple: { limit: 1e9, period: 60 } }]));
      const gate = await startGate(name, undefined, { ...limited, ...variant?.bindings }, { ...workerModuleOptions(dir), kvNamespaces: ['JWKS_CACHE'], ratelimits, ...variant?.extra });
      if (variant?.proof) gate.proofAlg = variant.proof;
      gates.push(gate);
    }
  } else if (ABLATION) {
    for (const step of ABLATION_STEPS) gates.push(await startGate(step.name, step.features ? fullScript : cachedScript, step.features ? { ...scoped, PEER_FEATURES: step.features } : bindings));
  } else {
    gates.push(
      await startGate('peer', peerScript, bindings),
      await startGate('cached', cachedScript, bindings),
      await startGate('full', fullScript, scoped),
      await startGate('platform', platformScript, bindings),
      await startGate('portcullis', undefined, scoped, { ...workerModuleOptions(BUILD), kvNamespaces: ['JWKS_CACHE'] }),
    );
  }
  const byName = Object.fromEntries(gates.map((g) => [g.name, g]));
  if (options.dpop && !DPOP_DO) process.stderr.write(`NOTE: ${BUILD}/replay.mjs is missing: the Durable Object replay store row is left out\n`);

  // The issuer's tokens live 5 minutes; a full run takes longer, and a token that expired
  // half-way turns every later round of its scenario into 401s. An hour covers the run.
  const exp = () => Math.floor(Date.now() / 1000) + 3600;
  const reused = [await issuer.mint({ exp: exp() }, { alg: 'RS256' })];
  const listToken = [await issuer.mint({ scope: 'invoices:read', exp: exp() }, { alg: 'RS256' })];
  // --dpop: per DPoP gate a client key of its proof algorithm and an RS256 token bound to it
  // (as the reused token, plus cnf.jkt); `lines(n)` signs n new proofs for a request to the gate's
  // URL as the load generator sends it, as load.mjs lines `DPoP <token> <proof>`.
  for (const gate of gates.filter((g) => g.proofAlg)) {
    const { privateKey, publicKey } = await generateKeyPair(gate.proofAlg, { extractable: true, ...(gate.proofAlg === 'EdDSA' ? { crv: 'Ed25519' } : {}) });
    const publicJwk = await exportJWK(publicKey);
    const token = await issuer.mint({ exp: exp(), cnf: { jkt: await calculateJwkThumbprint(publicJwk, 'sha256') } }, { alg: 'RS256' });
    const ath = createHash('sha256').update(token, 'ascii').digest('base64url');
    const proof = (iat) =>
      new SignJWT({ jti: randomUUID(), htm: 'POST', htu: gate.url, iat, ath }).setProtectedHeader({ typ: 'dpop+jwt', alg: gate.proofAlg, jwk: publicJwk }).sign(privateKey);
    gate.dpop = {
      token,
      proof: () => proof(Math.floor(Date.now() / 1000)),
      lines: async (count) => {
        const iat = Math.floor(Date.now() / 1000);
        const lines = [];
        for (let i = 0; i < count; i += 500) lines.push(...(await Promise.all(Array.from({ length: Math.min(500, count - i) }, () => proof(iat)))));
        return lines.map((p) => `DPoP ${token} ${p}`);
      },
    };
  }
  const authHeaders = async (gate) => (gate.dpop ? { authorization: `DPoP ${gate.dpop.token}`, dpop: await gate.dpop.proof() } : { authorization: `Bearer ${reused[0]}` });
  // A session bound through each gate (for portcullis the origin's Mcp-Session-Id is recorded to the token's owner).
  const sessions = {};
  for (const gate of gates) {
    const answer = await fetch(gate.url, {
      method: 'POST',
      headers: { ...mcpHeaders('initialize'), ...(await authHeaders(gate)) },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'bench', version: '0' } } }),
    });
    await answer.body?.cancel();
    sessions[gate.name] = answer.headers.get('mcp-session-id');
    if (answer.status !== 200 || !sessions[gate.name]) process.stderr.write(`WARNING: initialize through ${gate.name}: ${answer.status}, session ${sessions[gate.name] ? 'bound' : 'missing'}\n`);
  }
  const freshSet = async (alg, count) => {
    const tokens = [];
    for (let i = 0; i < count; i += 200) {
      tokens.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => issuer.mint({ jti: `cpu-${alg}-${i + j}-${Math.random()}`, exp: exp() }, { alg })))));
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
    // The platform floor does not check tokens: it forwards this one, and has no figure for it.
    badsig: { label: 'bad signature', tokens: [corruptSignature(reused[0])], request: () => CALL, expect: { passthrough: 200, platform: 200, others: 401 }, noPlatform: true },
    notoken: { label: 'no token', tokens: [], request: () => CALL, expect: { passthrough: 200, others: 401 } },
  };
  const keys = options.scenario ? options.scenario.split(',').map((s) => s.trim()) : ABLATION || options.dpop ? ['reused'] : Object.keys(ALL);
  for (const key of keys) if (!ALL[key]) throw new Error(`unknown scenario ${key} (one of ${Object.keys(ALL).join(', ')})`);
  if (options.dpop && keys.some((key) => key !== 'reused')) throw new Error('--dpop measures the reused scenario only');

  // --dpop: one call with a proof through each DPoP gate before measuring, and a replayed proof refused.
  for (const gate of gates.filter((g) => g.dpop)) {
    const headers = { ...CALL.headers, ...(await authHeaders(gate)) };
    const first = await fetch(gate.url, { ...CALL, headers });
    const again = await fetch(gate.url, { ...CALL, headers });
    await first.body?.cancel();
    await again.body?.cancel();
    if (first.status !== 200 || again.status !== 401) {
      throw new Error(`${gate.name}: a DPoP call answered ${first.status} (${first.headers.get('www-authenticate')}), its replay ${again.status}: proofs or htu (${gate.url}) wrong`);
    }
  }

  // Check the filtered tools/list once: portcullis must drop void_invoice.
  if (keys.includes('list') && byName.portcullis) {
    const answer = await fetch(byName.portcullis.url, { ...LIST, headers: { ...LIST.headers, authorization: `Bearer ${listToken[0]}` } });
    const names = (await answer.json().catch(() => ({})))?.result?.tools?.map((t) => t.name) ?? [];
    if (answer.status !== 200 || names.includes('void_invoice') || !names.includes('lookup_invoice')) process.stderr.write(`WARNING: portcullis tools/list answer not filtered as expected: ${answer.status} [${names}]\n`);
  }

  const warnings = [];
  const pids = gates.map((g) => g.pid);
  const waitQuiet = async () => {
    const until = performance.now() + QUIET_WAIT_MS;
    for (;;) {
      const [busy0, own0] = [machineBusyUs(), ownUs(pids)];
      await new Promise((resolve) => setTimeout(resolve, 500));
      const foreignMs = (machineBusyUs() - busy0 - (ownUs(pids) - own0)) / 1000;
      if (foreignMs <= FOREIGN_LIMIT * 500 || performance.now() > until) return;
    }
  };
  // sampleInt: autocannon ends at its next sample after the last answer; 100 ms instead of 1 s of idle tail.
  const window = async (gate, request, tokens, warmTokens) => {
    await waitQuiet();
    await load(gate.url, warmTokens, { connections: CONNECTIONS, amount: WARMUP, sampleInt: 100, ...request });
    const [ns0, ticks0, busy0, own0, t0] = [cpuNs(gate.pid), cpuTicks(gate.pid), machineBusyUs(), ownUs(pids), performance.now()];
    const figures = await load(gate.url, tokens, { connections: CONNECTIONS, amount: REQUESTS, sampleInt: 100, ...request });
    const [ns1, ticks1, busy1, own1, t1] = [cpuNs(gate.pid), cpuTicks(gate.pid), machineBusyUs(), ownUs(pids), performance.now()];
    const foreignMs = (busy1 - busy0 - (own1 - own0) - (figures.cpu_us ?? 0)) / 1000;
    return { figures, ns: ns1 - ns0, ticks: ticks1 - ticks0, foreignMs, wallMs: t1 - t0 };
  };
  const measure = async (gate, scenario, tokens, warmTokens) => {
    const request = scenario.request(gate.name);
    let run;
    let retries = 0;
    for (;;) {
      // A DPoP gate gets proofs signed now, new for every window (a retry's too).
      run = gate.dpop
        ? await window(gate, request, await gate.dpop.lines(REQUESTS + DPOP_SPARE), await gate.dpop.lines(WARMUP + DPOP_SPARE))
        : await window(gate, request, tokens, warmTokens);
      if (run.foreignMs <= FOREIGN_LIMIT * run.wallMs || retries === RETRIES) break;
      retries += 1;
      process.stderr.write(`${scenario.label} ${gate.name}: other processes used ${run.foreignMs.toFixed(0)} ms of CPU in ${run.wallMs.toFixed(0)} ms, measuring again\n`);
    }
    const { figures, ns, ticks } = run;
    const disturbed = run.foreignMs > FOREIGN_LIMIT * run.wallMs;
    // schedstat misses the time of threads that ended during the window; stat keeps it.
    if (Math.abs(ns / 1000 - ticks * TICK_US) > 2 * TICK_US + 0.02 * ticks * TICK_US) {
      process.stderr.write(`WARNING: ${gate.name}: schedstat ${(ns / 1e6).toFixed(0)} ms vs stat ${ticks * TICK_US / 1000} ms of CPU\n`);
    }
    const expected = scenario.expect[gate.name] ?? (gate.name === 'passthrough' ? scenario.expect.passthrough : scenario.expect.others);
    const good = figures.statuses?.[expected] ?? 0;
    // Answers actually received: a gate that refuses without reading the body may close the
    // connection, which autocannon counts as an error; CPU is divided by what was answered.
    const answered = Object.values(figures.statuses ?? {}).reduce((n, c) => n + c, 0) || REQUESTS;
    if (good !== answered || answered < REQUESTS * 0.5) {
      const warning = `${scenario.label} ${gate.name}: expected ${REQUESTS} x ${expected}, got ${JSON.stringify(figures.statuses)}${figures.errors ? `, ${figures.errors} errors` : ''}`;
      warnings.push(warning);
      process.stderr.write(`WARNING: ${warning}\n`);
    }
    if (disturbed) warnings.push(`${scenario.label} ${gate.name}: other processes used ${run.foreignMs.toFixed(0)} ms of CPU in the ${run.wallMs.toFixed(0)} ms window (kept after ${RETRIES} retries)`);
    return { ticks, ns, answered, errors: figures.errors, us: ns / 1000 / answered, statuses: figures.statuses, foreign_ms: Math.round(run.foreignMs), wall_ms: Math.round(run.wallMs), retries, disturbed };
  };

  const results = {};
  for (const key of keys) {
    const scenario = ALL[key];
    const runs = Object.fromEntries(gates.map((g) => [g.name, []]));
    // Mint every token of the scenario before measuring: one unseen set per (gate, round), and warm-up sets.
    const sets = {};
    if (scenario.fresh) {
      process.stderr.write(`minting ${scenario.fresh} tokens...\n`);
      for (const gate of gates.filter((g) => g.name !== 'passthrough' && g.name !== 'platform')) sets[gate.name] = await Promise.all(Array.from({ length: ROUNDS }, () => freshSet(scenario.fresh, REQUESTS + WARMUP)));
    }
    for (let round = 0; round < ROUNDS; round += 1) {
      const order = [...gates];
      for (let i = 0; i < round; i += 1) order.push(order.shift());
      for (const gate of order) {
        // The floor and the platform check nothing: they may see another gate's set (measured in another process).
        const set = (sets[gate.name] ?? Object.values(sets)[0])?.[round];
        const figures = set ? await measure(gate, scenario, set.slice(WARMUP), set.slice(0, WARMUP)) : await measure(gate, scenario, scenario.tokens, scenario.tokens);
        runs[gate.name].push(figures);
        process.stderr.write(`${scenario.label} round ${round + 1} ${gate.name}: ${(figures.ns / 1e6).toFixed(0)} ms, ${figures.us.toFixed(1)} µs/request over ${figures.answered} answers${figures.errors ? ` (${figures.errors} connection errors)` : ''}, others used ${figures.foreign_ms} ms${figures.retries ? ` (${figures.retries} retries)` : ''}\n`);
      }
      
    }
    const medians = Object.fromEntries(Object.entries(runs).map(([name, list]) => [name, median(list.map((r) => r.us))]));
    const over = Object.fromEntries(gates.filter((g) => g.name !== 'passthrough').map((g) => [g.name, medians[g.name] - medians.passthrough]));
    results[key] = {
      label: scenario.label,
      floor_us: medians.passthrough,
      over_floor_us: over,
      ...(ABLATION || COMPARE
        ? {}
        : {
            portcullis_over_peer: over.portcullis / over.peer,
            portcullis_over_cached: over.portcullis / over.cached,
            portcullis_minus_cached_us: over.portcullis - over.cached,
            portcullis_over_full: over.portcullis / over.full,
            portcullis_minus_full_us: over.portcullis - over.full,
            portcullis_minus_platform_us: scenario.noPlatform ? null : over.portcullis - over.platform,
          }),
      // Half the range of each gate's rounds: how far one round's figure strayed.
      half_range_us: Object.fromEntries(Object.entries(runs).map(([name, list]) => [name, (Math.max(...list.map((r) => r.us)) - Math.min(...list.map((r) => r.us))) / 2])),
      disturbed_rounds: Object.values(runs).flat().filter((r) => r.disturbed).length,
      // --ablation: each part's cost as the difference of two variants measured in the same
      // round (rounds interleave the gates, so a slow drift of the machine cancels): the
      // median over rounds, and half the range.
      ...(ABLATION ? { paired_steps_us: pairedSteps(runs) } : {}),
      ...(COMPARE ? { paired_to_first_us: pairedToFirst(runs) } : {}),
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
  const mode = options.dpop ? 'dpop' : options['rate-limits'] ? 'rate-limits' : options.assertion ? 'assertion' : COMPARE ? 'compare' : ABLATION ? 'ablation' : 'gates';
  const report = { date: new Date().toISOString(), mode, ...(ABLATION ? { steps: ABLATION_STEPS } : COMPARE ? { builds: Object.fromEntries(COMPARE) } : { build: BUILD }), rounds: ROUNDS, requests: REQUESTS, connections: CONNECTIONS, warmup: WARMUP, cpu_clock: 'schedstat (ns)', pinned: PIN ?? false, foreign_limit: FOREIGN_LIMIT, minutes, warnings, results };
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const outFile = `cpu-${mode === 'gates' ? 'latest' : mode}.json`;
  writeFileSync(join(outDir, outFile), `${JSON.stringify(report, null, 2)}\n`);

  const pad = (text, width) => String(text).padEnd(width);
  const num = (v, digits = 0) => (Number.isFinite(v) ? v.toFixed(digits) : '–');
  console.log(`\nportcullis CPU benchmark: ${ROUNDS} rounds x ${REQUESTS} requests, ${CONNECTIONS} connections; workerd CPU (schedstat, ns)${PIN ? `, workerd pinned to CPU ${PIN.workerd}, load and origin to ${PIN.harness}` : ', not pinned'}`);
  if (COMPARE) {
    console.log(`${options.dpop ? `DPoP off (bearer) and on (DPOP=dpop, a new proof per request; replay store in memory${DPOP_DO ? ', then the Durable Object' : ''})` : options['rate-limits'] ? `rate limits off and on (RATE_LIMITS: ${RATE_RULES.map((r) => r.key).join(', ')})` : options.assertion ? 'the origin assertion (ASSERTION_KEY, ORIGIN_ASSERTION_AUDIENCE) off and on' : 'builds of portcullis side by side'}; µs of CPU per request over the floor (median ± half-range of rounds) and paired with the first build (median over rounds of the same-round difference ± its half-range); * rounds disturbed\n`);
    for (const r of Object.values(results)) {
      console.log(`${r.label}: floor ${num(r.floor_us)} µs (± ${num(r.half_range_us.passthrough)})${r.disturbed_rounds ? `, *${r.disturbed_rounds} disturbed` : ''}`);
      const width = Math.max(24, ...COMPARE.map(([name]) => name.length + 2));
      console.log(`  ${pad('platform', width)}${pad(`${num(r.over_floor_us.platform, 1)} ± ${num(r.half_range_us.platform, 1)}`, 18)}`);
      for (const [name] of COMPARE) {
        const paired = r.paired_to_first_us[name];
        console.log(`  ${pad(name, width)}${pad(`${num(r.over_floor_us[name], 1)} ± ${num(r.half_range_us[name], 1)}`, 18)}${paired ? `${num(paired.median, 1)} ± ${num(paired.half_range, 1)}` : ''}`);
      }
    }
    if (warnings.length) console.log(`${warnings.length} WARNING(S): answers not as expected or rounds disturbed, see above and the JSON`);
    console.log(`${minutes.toFixed(1)} min; written to bench/results/${outFile}`);
    return;
  }
  if (ABLATION) {
    console.log(`ablation of the full peer (bench/peer-jose-full.mjs); µs of CPU per request. over floor: median of the variant's rounds minus the floor's, ± the half-range of the variant's rounds. step: this row minus the one above, from the medians (± the two half-ranges added) and paired (median over rounds of the difference measured in the same round, ± its half-range); * rounds disturbed by other processes\n`);
    for (const r of Object.values(results)) {
      console.log(`${r.label}: floor ${num(r.floor_us)} µs (± ${num(r.half_range_us.passthrough)})${r.disturbed_rounds ? `, *${r.disturbed_rounds} disturbed` : ''}`);
      console.log(`${pad('variant', 62)}${pad('over floor', 16)}${pad('step', 16)}${pad('step, paired', 16)}`);
      const row = (label, over, step, paired) => console.log(`${pad(label, 62)}${pad(over, 16)}${pad(step, 16)}${pad(paired, 16)}`);
      const paired = (key) => `${num(r.paired_steps_us[key].median, 1)} ± ${num(r.paired_steps_us[key].half_range, 1)}`;
      ABLATION_STEPS.forEach((step, i) => {
        const prev = ABLATION_STEPS[i - 1];
        const over = `${num(r.over_floor_us[step.name], 1)} ± ${num(r.half_range_us[step.name], 1)}`;
        if (!prev) return row(step.label, over, '', '');
        row(step.label, over, `${num(r.over_floor_us[step.name] - r.over_floor_us[prev.name], 1)} ± ${num(r.half_range_us[step.name] + r.half_range_us[prev.name], 1)}`, paired(`${step.name}-${prev.name}`));
      });
      row('full - cached', '', `${num(r.over_floor_us.full - r.over_floor_us.cached, 1)} ± ${num(r.half_range_us.full + r.half_range_us.cached, 1)}`, paired('full-cached'));
      console.log('');
    }
    if (warnings.length) console.log(`${warnings.length} WARNING(S): answers not as expected or rounds disturbed, see above and the JSON`);
    console.log(`${minutes.toFixed(1)} min; written to bench/results/${outFile}`);
    return;
  }
  console.log(`medians, µs of CPU per request over the passthrough floor (floor itself in its column); ± the largest half-range of one gate's rounds; * rounds disturbed by other processes\n`);
  console.log(`${pad('scenario', 38)}${pad('floor', 8)}${pad('peer', 8)}${pad('cached', 8)}${pad('full', 8)}${pad('platf.', 8)}${pad('portc.', 8)}${pad('p/peer', 8)}${pad('p/cached', 10)}${pad('p/full', 8)}${pad('p-cached µs', 12)}${pad('p-full µs', 10)}${pad('p-platf. µs', 12)}${pad('±', 6)}`);
  for (const r of Object.values(results)) {
    const o = r.over_floor_us;
    const spread = `${num(Math.max(...Object.values(r.half_range_us)))}${r.disturbed_rounds ? ` *${r.disturbed_rounds}` : ''}`;
    console.log(`${pad(r.label, 38)}${pad(num(r.floor_us), 8)}${pad(num(o.peer), 8)}${pad(num(o.cached), 8)}${pad(num(o.full), 8)}${pad(r.portcullis_minus_platform_us === null ? '–' : num(o.platform), 8)}${pad(num(o.portcullis), 8)}${pad(num(r.portcullis_over_peer, 2), 8)}${pad(num(r.portcullis_over_cached, 2), 10)}${pad(num(r.portcullis_over_full, 2), 8)}${pad(num(r.portcullis_minus_cached_us), 12)}${pad(num(r.portcullis_minus_full_us), 10)}${pad(num(r.portcullis_minus_platform_us ?? NaN), 12)}${pad(spread, 6)}`);
  }
  if (results.list?.list_over_reused) {
    const l = results.list.list_over_reused;
    console.log(`\ntools/list over reused tools/call (over-floor ratio): peer ${num(l.peer, 2)}, cached ${num(l.cached, 2)}, full ${num(l.full, 2)}, portcullis ${num(l.portcullis, 2)} (the peers do no filtering: their tools/list is a reused-token POST)`);
  }
  if (warnings.length) console.log(`\n${warnings.length} WARNING(S): answers not as expected, see above and the JSON`);
  console.log(`\n${minutes.toFixed(1)} min; written to bench/results/cpu-latest.json`);
}

await main();
