#!/usr/bin/env node
// Where portcullis spends its CPU time per request: runs one build of the
// worker in Miniflare's workerd with the V8 inspector on, drives load at it
// (autocannon in its own process, as in the benchmark), records a CPU profile
// over the DevTools protocol and prints self time by function, top first.
// For readable wasm frames, profile a build that keeps its name section:
//
//   source scripts/env.sh && worker-build --release --out-dir /tmp/prof \
//     && mv /tmp/prof/index.js /tmp/prof/gate.mjs && cp src/entry.mjs /tmp/prof/index.js \
//     && cp src/replay.mjs /tmp/prof/
//   node bench/profile.mjs --build /tmp/prof [--scenario reused|fresh|notoken] [--alg RS256] [--seconds 5]
//     [--callers <part of a function name>]  (also print the call stacks into it)
//     [--lines <JavaScript function name>]  (also print its self time by source line)
//     [--inclusive <part,part...>]  (also print the total time in and below frames so named)
//     [--assertion ES256|EdDSA]  (sign the origin assertion with a key of that algorithm)

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Miniflare } from 'miniflare';
import WebSocket from 'ws';
import { startIssuer } from '../demo/issuer.mjs';
import { demangle } from '../tests/helpers/wasm-names.mjs';
import { freePort, workerModuleOptions } from '../tests/helpers/gate.mjs';
import { assertionKey } from '../tests/helpers/stack.mjs';
import { load, startOrigin } from './harness.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const { values: options } = parseArgs({
  options: {
    build: { type: 'string', default: join(ROOT, 'build') },
    scenario: { type: 'string', default: 'reused' },
    alg: { type: 'string', default: 'RS256' },
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
    top: { type: 'string', default: '40' },
    lines: { type: 'string' },
    inclusive: { type: 'string' },
    callers: { type: 'string' },
    assertion: { type: 'string' },
  },
});

/** A minimal DevTools protocol client. */
async function inspector(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl) ?? targets[0];
  const socket = new WebSocket(target.webSocketDebuggerUrl ?? `ws://127.0.0.1:${port}/${target.id}`);
  await new Promise((done, fail) => {
    socket.once('open', done);
    socket.once('error', fail);
  });
  let id = 0;
  const pending = new Map();
  socket.on('message', (data) => {
    const message = JSON.parse(data);
    if (message.id && pending.has(message.id)) {
      pending.get(message.id)(message);
      pending.delete(message.id);
    }
  });
  return {
    send(method, params = {}) {
      id += 1;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((done) => pending.set(id, done));
    },
    close: () => socket.close(),
  };
}

const origin = await startOrigin({ mcp: true });
const inspectorPort = await freePort();
const port = await freePort();
const resource = `http://127.0.0.1:${port}/mcp`;
const issuer = await startIssuer({ algs: [options.alg], audience: resource });
const mf = new Miniflare({
  ...workerModuleOptions(resolve(options.build)),
  bindings: {
    MCP_RESOURCE: resource,
    MCP_ORIGIN: origin.url,
    OAUTH_ISSUER: issuer.issuer,
    OAUTH_JWKS_URI: issuer.jwksUri,
    MCP_TOOL_SCOPES: JSON.stringify({ lookup_invoice: 'invoices:read', '*': 'invoices:read' }),
    ...(options.assertion ? { ASSERTION_KEY: assertionKey(options.assertion), ORIGIN_ASSERTION_AUDIENCE: origin.url } : {}),
  },
  kvNamespaces: ['JWKS_CACHE'],
  host: '127.0.0.1',
  port,
  cf: false,
  inspectorPort,
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.resume();
  },
});
const url = `${(await mf.ready).origin}/mcp`;
const connections = Number(options.connections);
// The benchmark's request (bench/cpu.mjs): a POST tools/call.
const CALL = {
  method: 'POST',
  headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-method': 'tools/call', 'mcp-name': 'lookup_invoice' },
  body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } } }),
};
const count = { reused: 1, notoken: 0 }[options.scenario] ?? 4000;
const tokens = [];
for (let i = 0; i < count; i += 200) {
  tokens.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => issuer.mint({ jti: `p-${i + j}` }, { alg: options.alg })))));
}
await load(url, tokens.slice(0, 1), { seconds: 2, connections, ...CALL }); // warm: keys fetched, code compiled

const devtools = await inspector(inspectorPort);
await devtools.send('Profiler.enable');
await devtools.send('Profiler.setSamplingInterval', { interval: 100 });
await devtools.send('Profiler.start');
const figures = await load(url, tokens, { seconds: Number(options.seconds), connections, ...CALL });
const { result } = await devtools.send('Profiler.stop');
devtools.close();
await mf.dispose();
await issuer.close();
await origin.close();

const profile = result.profile;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const self = new Map();
const interval = new Map();
for (let i = 0; i < profile.samples.length; i += 1) {
  interval.set(profile.samples[i], (interval.get(profile.samples[i]) ?? 0) + (profile.timeDeltas[i] ?? 0));
}
let total = 0;
for (const [nodeId, micros] of interval) {
  const frame = byId.get(nodeId).callFrame;
  const name = `${demangle(frame.functionName || '(anonymous)')}${frame.url && !frame.url.startsWith('wasm') ? ` ${frame.url.split('/').pop()}:${frame.lineNumber + 1}` : ''}`;
  self.set(name, (self.get(name) ?? 0) + micros);
  total += micros;
}
const busy = [...self].filter(([name]) => name !== '(idle)').reduce((sum, [, micros]) => sum + micros, 0);
console.log(`${options.scenario} ${options.alg}: ${figures.rps.toFixed(0)} req/s, ${figures.total} requests; profiled ${(total / 1e6).toFixed(1)} s, busy ${(busy / 1e6).toFixed(1)} s = ${(busy / figures.total).toFixed(0)} µs per request`);
// Self time by kind: wasm frames (URL wasm://), the entry and its glue (the
// worker's own JavaScript), the runtime's built-ins (Response, fetch, ...),
// and V8's own rows.
const kinds = new Map();
for (const [nodeId, micros] of interval) {
  const frame = byId.get(nodeId).callFrame;
  const v8 = ['(idle)', '(program)', '(garbage collector)'].includes(frame.functionName);
  const kind = v8 ? frame.functionName : frame.url.startsWith('wasm') ? 'wasm' : frame.url.includes('node-internal') ? 'runtime (JS)' : frame.url ? 'worker JS' : 'runtime (native)';
  kinds.set(kind, (kinds.get(kind) ?? 0) + micros);
}
console.log([...kinds].sort((a, b) => b[1] - a[1]).map(([kind, micros]) => `${kind} ${(micros / figures.total).toFixed(1)} µs/req`).join(', '));
for (const [name, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(options.top))) {
  console.log(`${((100 * micros) / busy).toFixed(1).padStart(5)} %  ${(micros / figures.total).toFixed(1).padStart(6)} µs/req  ${name.slice(0, 150)}`);
}

if (options.inclusive) {
  // Total time (self and below) of frames whose name contains one of the parts.
  const parts = options.inclusive.split(',');
  const children = new Map(profile.nodes.map((node) => [node.id, node.children ?? []]));
  const below = (id) => (interval.get(id) ?? 0) + children.get(id).reduce((sum, child) => sum + below(child), 0);
  const totals = new Map(parts.map((part) => [part, 0]));
  const visit = (id, inside) => {
    const name = demangle(byId.get(id).callFrame.functionName || '');
    const now = new Set(inside);
    for (const part of parts) {
      if (!inside.has(part) && name.includes(part)) {
        totals.set(part, totals.get(part) + below(id));
        now.add(part);
      }
    }
    for (const child of children.get(id)) visit(child, now);
  };
  visit(profile.nodes[0].id, new Set());
  console.log(`\ninclusive time:`);
  for (const [part, micros] of totals) console.log(`${(micros / figures.total).toFixed(1).padStart(6)} µs/req  ${part}`);
}

if (options.lines) {
  const ticks = new Map();
  for (const node of profile.nodes) {
    if (node.callFrame.functionName !== options.lines) continue;
    for (const { line, ticks: count } of node.positionTicks ?? []) ticks.set(line, (ticks.get(line) ?? 0) + count);
  }
  const all = [...ticks.values()].reduce((a, b) => a + b, 0);
  console.log(`\nself time of ${options.lines} by line (share of its samples):`);
  for (const [line, count] of [...ticks].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${((100 * count) / all).toFixed(1).padStart(5)} %  line ${line}`);
}

if (options.callers) {
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const stacks = new Map();
  for (const [nodeId, micros] of interval) {
    const node = byId.get(nodeId);
    if (!demangle(node.callFrame.functionName).includes(options.callers)) continue;
    const chain = [];
    for (let id = parent.get(nodeId); id !== undefined && chain.length < 8; id = parent.get(id)) {
      chain.push(demangle(byId.get(id).callFrame.functionName || '(anonymous)').replace(/::h[0-9a-f]{16}$/, '').slice(0, 90));
    }
    const key = chain.join(' <- ');
    stacks.set(key, (stacks.get(key) ?? 0) + micros);
  }
  console.log(`\ncallers of ${options.callers}:`);
  for (const [chain, micros] of [...stacks].sort((a, b) => b[1] - a[1]).slice(0, 8)) {
    console.log(`${(micros / figures.total).toFixed(1).padStart(6)} µs/req  ${chain}`);
  }
}
