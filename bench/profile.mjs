#!/usr/bin/env node
// Where portcullis spends its CPU time per request: runs one build of the
// worker in Miniflare's workerd with the V8 inspector on, drives load at it
// (autocannon in its own process, as in the benchmark), records a CPU profile
// over the DevTools protocol and prints self time by function, top first.
// For readable wasm frames, profile a build that keeps its name section:
//
//   source scripts/env.sh && worker-build --release --out-dir /tmp/prof \
//     && mv /tmp/prof/index.js /tmp/prof/gate.mjs && cp src/entry.mjs /tmp/prof/index.js
//   node bench/profile.mjs --build /tmp/prof [--scenario reused|fresh] [--alg RS256] [--seconds 5]
//     [--callers <part of a function name>]  (also print the call stacks into it)

import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Miniflare } from 'miniflare';
import WebSocket from 'ws';
import { startIssuer } from '../demo/issuer.mjs';
import { demangle } from '../tests/helpers/wasm-names.mjs';
import { freePort, workerModuleOptions } from '../tests/helpers/gate.mjs';
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
    callers: { type: 'string' },
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

const origin = await startOrigin();
const inspectorPort = await freePort();
const port = await freePort();
const resource = `http://127.0.0.1:${port}/mcp`;
const issuer = await startIssuer({ algs: [options.alg], audience: resource });
const mf = new Miniflare({
  ...workerModuleOptions(resolve(options.build)),
  bindings: { MCP_RESOURCE: resource, MCP_ORIGIN: origin.url, OAUTH_ISSUER: issuer.issuer, OAUTH_JWKS_URI: issuer.jwksUri },
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
const count = options.scenario === 'reused' ? 1 : 4000;
const tokens = [];
for (let i = 0; i < count; i += 200) {
  tokens.push(...(await Promise.all(Array.from({ length: Math.min(200, count - i) }, (_, j) => issuer.mint({ jti: `p-${i + j}` }, { alg: options.alg })))));
}
await load(url, tokens.slice(0, 1), { seconds: 2, connections }); // warm: keys fetched, code compiled

const devtools = await inspector(inspectorPort);
await devtools.send('Profiler.enable');
await devtools.send('Profiler.setSamplingInterval', { interval: 100 });
await devtools.send('Profiler.start');
const figures = await load(url, tokens, { seconds: Number(options.seconds), connections });
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
for (const [name, micros] of [...self].sort((a, b) => b[1] - a[1]).slice(0, Number(options.top))) {
  console.log(`${((100 * micros) / busy).toFixed(1).padStart(5)} %  ${(micros / figures.total).toFixed(1).padStart(6)} µs/req  ${name.slice(0, 150)}`);
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
