// What the benchmark (bench/run.mjs) and the profiler (bench/profile.mjs)
// share: the local origin every gate forwards to, and the load generator,
// run in its own process so it never competes with the harness's event loop.

import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { Miniflare } from 'miniflare';
import { COMPATIBILITY_DATE, freePort } from '../tests/helpers/gate.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The tools the `mcp` origin lists: one of them needs a scope the bench's list token lacks. */
export const ORIGIN_TOOLS = ['lookup_invoice', 'list_invoices', 'void_invoice', 'whoami'].map((name) => ({
  name,
  description: `${name} (bench)`,
  inputSchema: { type: 'object', properties: {} },
}));

/**
 * The origin: a small JSON answer to anything. With `mcp`, it reads the body
 * and answers `initialize` with an `Mcp-Session-Id` and `tools/list` with
 * ORIGIN_TOOLS (bench/cpu.mjs); without it the body is drained unread.
 */
export async function startOrigin({ mcp = false } = {}) {
  const toolsAnswer = JSON.stringify({ jsonrpc: '2.0', id: 1, result: { tools: ORIGIN_TOOLS } });
  const server = http.createServer((req, res) => {
    let body = '';
    if (mcp) req.on('data', (chunk) => (body += chunk));
    else req.resume();
    req.on('end', () => {
      const headers = { 'content-type': 'application/json' };
      if (mcp && body.includes('"initialize"')) headers['mcp-session-id'] = randomUUID();
      res.writeHead(200, headers);
      res.end(mcp && body.includes('"tools/list"') ? toolsAnswer : '{"jsonrpc":"2.0","id":1,"result":{}}');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/mcp`, close: () => new Promise((r) => server.close(r)) };
}

export const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Starts a worker in its own Miniflare (its own workerd); its output is drained unread. */
/** Bundles the worker bench/`entry` for workerd into bench/.build/`out`; returns its path. */
export async function bundleWorker(entry, out) {
  const outfile = join(HERE, '.build', out);
  mkdirSync(dirname(outfile), { recursive: true });
  await build({ entryPoints: [join(HERE, entry)], bundle: true, format: 'esm', platform: 'neutral', mainFields: ['module', 'main'], conditions: ['worker', 'browser'], outfile, logLevel: 'warning' });
  return outfile;
}

export async function startScriptWorker(scriptPath, bindings, extra = {}) {
  const port = await freePort();
  const mf = new Miniflare({
    modules: true,
    scriptPath,
    compatibilityDate: COMPATIBILITY_DATE,
    bindings,
    host: '127.0.0.1',
    port,
    cf: false,
    // Every gate's output is drained unread, so reading logs costs the harness nothing.
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.resume();
    },
    ...extra,
  });
  const ready = await mf.ready;
  return { url: `${ready.origin}/mcp`, mf, close: () => mf.dispose() };
}

/**
 * Runs autocannon (bench/load.mjs) against `url` for `seconds` (or exactly
 * `amount` requests) with `connections`, cycling through `tokens` (none: no
 * Authorization header); `method`, `headers`, `body` shape every request;
 * `sampleInt` (ms, autocannon's default 1000) is how soon after the last
 * answer it ends. Returns its figures.
 */
export function load(url, tokens, { seconds, connections, amount, method, headers, body, sampleInt }) {
  const tokensFile = join(tmpdir(), `portcullis-bench-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(tokensFile, tokens.join('\n'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(HERE, 'load.mjs'), JSON.stringify({ url, seconds, connections, amount, method, headers, body, tokensFile, sampleInt })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.on('exit', (code) => {
      rmSync(tokensFile, { force: true });
      if (code === 0) resolve(JSON.parse(out.trim().split('\n').at(-1)));
      else reject(new Error(`load exited ${code}`));
    });
  });
}
