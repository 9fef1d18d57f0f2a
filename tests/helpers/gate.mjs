// Runs the built worker (build/index.js + its wasm) in Miniflare's workerd,
// listening on 127.0.0.1, and captures everything it prints.

import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Miniflare } from 'miniflare';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The build the tests run: build/, or PORTCULLIS_BUILD_DIR (a copy, so a rebuild cannot change it mid-run). */
export const BUILD_DIR = process.env.PORTCULLIS_BUILD_DIR ?? join(ROOT, 'build');
export const WORKER_SCRIPT = join(BUILD_DIR, 'index.js');
/** The compatibility date the worker is deployed with (wrangler.toml), so tests run what production runs. */
export const COMPATIBILITY_DATE = deployedCompatibilityDate() ?? '2025-09-01';
/** The compatibility flags it is deployed with (wrangler.toml). */
export const COMPATIBILITY_FLAGS = deployedCompatibilityFlags();

function wranglerToml() {
  try {
    return readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  } catch {
    return '';
  }
}

function deployedCompatibilityDate() {
  return /^\s*compatibility_date\s*=\s*"(\d{4}-\d{2}-\d{2})"/m.exec(wranglerToml())?.[1];
}

function deployedCompatibilityFlags() {
  const list = /^\s*compatibility_flags\s*=\s*\[([^\]]*)\]/m.exec(wranglerToml())?.[1] ?? '';
  return [...list.matchAll(/"([^"]+)"/g)].map((match) => match[1]);
}

/** Options shared by every Miniflare the tests start: loopback only, nothing fetched from the internet. */
export const SHARED_OPTIONS = {
  host: '127.0.0.1',
  // Never fetch the Request.cf placeholder from the internet.
  cf: false,
};

/** Fails loudly when the worker has not been built. */
export function assertBuilt(buildDir = BUILD_DIR) {
  const script = join(buildDir, 'index.js');
  if (!existsSync(script)) {
    throw new Error(`${script} is missing: run \`npm run build\` (or \`npm test\`) before the tests`);
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** The worker's module options for Miniflare (`buildDir`: another build of it). */
export function workerModuleOptions(buildDir = BUILD_DIR) {
  return {
    modules: true,
    scriptPath: join(buildDir, 'index.js'),
    modulesRoot: buildDir,
    modulesRules: [{ type: 'CompiledWasm', include: ['**/*.wasm'] }],
    compatibilityDate: COMPATIBILITY_DATE,
    compatibilityFlags: COMPATIBILITY_FLAGS,
  };
}

/** Collects a child's output as text and as parsed JSON lines. */
export class OutputCapture {
  constructor() {
    this.text = '';
    this.lines = [];
    this.partial = { stdout: '', stderr: '' };
    this.waiters = new Set();
  }

  attach(stream, name) {
    stream.setEncoding?.('utf8');
    stream.on('data', (chunk) => {
      const text = String(chunk);
      this.text += text;
      const pieces = (this.partial[name] + text).split('\n');
      this.partial[name] = pieces.pop();
      for (const line of pieces) this.addLine(line, name);
    });
  }

  addLine(line, stream) {
    const trimmed = line.trim();
    if (!trimmed) return;
    let json;
    if (trimmed.startsWith('{')) {
      try {
        json = JSON.parse(trimmed);
      } catch {
        json = undefined;
      }
    }
    this.lines.push({ stream, line: trimmed, json });
    for (const waiter of this.waiters) waiter();
  }

  /** Parsed JSON lines, optionally filtered. */
  json(filter = () => true) {
    return this.lines.filter((l) => l.json !== undefined && filter(l.json)).map((l) => l.json);
  }

  /** Waits until `count` JSON lines match `filter`; returns them. */
  async waitFor(filter, { count = 1, timeoutMs = 5000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = this.json(filter);
      if (found.length >= count) return found;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`timed out waiting for ${count} log line(s); captured output:\n${this.text.slice(-4000)}`);
      }
      await new Promise((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 200));
        this.waiters.add(done);
      });
    }
  }
}

/**
 * Starts the gate with `bindings` (string values; undefined ones are left out).
 *
 * @param {object} options
 * @param {Record<string, string|undefined>} options.bindings environment variables and secrets.
 * @param {number} [options.port] port to listen on (pick it first when MCP_RESOURCE must name it).
 * @param {boolean} [options.kv=true] bind the JWKS_CACHE KV namespace.
 * @param {string} [options.buildDir] run another build of the worker than build/.
 * @param {object} [options.miniflare] more Miniflare options for the worker (e.g. `ratelimits`, `serviceBindings`).
 * @param {object[]} [options.workers] more workers run in the same Miniflare beside the gate (which stays the
 *   first, the one listening), each a Miniflare worker options object with a `name`: e.g. the script of a
 *   wrapped binding (tests/helpers/faults.mjs).
 * @returns {Promise<{url: string, port: number, mf: Miniflare, output: OutputCapture,
 *   fetch: (path: string, init?: RequestInit) => Promise<Response>, restart: () => Promise<void>,
 *   requestLogs: () => object[], close: () => Promise<void>}>}
 */
export async function startGate({ bindings, port, kv = true, buildDir = BUILD_DIR, miniflare = {}, workers = [] }) {
  assertBuilt(buildDir);
  port ??= await freePort();
  const output = new OutputCapture();
  const cleanBindings = Object.fromEntries(Object.entries(bindings).filter(([, value]) => value !== undefined));
  const options = {
    ...workerModuleOptions(buildDir),
    ...SHARED_OPTIONS,
    port,
    bindings: cleanBindings,
    kvNamespaces: kv ? ['JWKS_CACHE'] : [],
    ...miniflare,
    handleRuntimeStdio(stdout, stderr) {
      output.attach(stdout, 'stdout');
      output.attach(stderr, 'stderr');
    },
  };
  // With more workers, the gate's options are both the shared options (port,
  // stdio) and the first worker's; Miniflare takes from each what it needs.
  const mfOptions = () => (workers.length === 0 ? options : { ...options, workers: [options, ...workers] });
  const mf = new Miniflare(mfOptions());
  let ready;
  try {
    ready = await withTimeout(mf.ready, 30_000, 'Miniflare did not start');
  } catch (error) {
    await mf.dispose().catch(() => {});
    throw error;
  }
  const url = ready.origin;
  let closed;
  return {
    url,
    port: Number(ready.port),
    mf,
    output,
    /** Fetches `path` (relative to the gate) with a bounded time. */
    fetch(path, init = {}) {
      return fetch(new URL(path, url), { redirect: 'manual', signal: AbortSignal.timeout(15_000), ...init });
    },
    /**
     * Reloads the worker: a fresh isolate (its memory lost, as when Workers
     * starts a new one) over the same KV data; with `changes`, its bindings
     * changed (undefined values removed), as a new deployment would.
     */
    async restart(changes) {
      if (changes) {
        const merged = { ...options.bindings, ...changes };
        options.bindings = Object.fromEntries(Object.entries(merged).filter(([, value]) => value !== undefined));
      }
      await withTimeout(mf.setOptions(mfOptions()), 30_000, 'Miniflare did not restart');
    },
    /** The per-request log lines so far. */
    requestLogs() {
      return output.json((line) => line.event === 'request' || 'decision' in line);
    },
    close() {
      closed ??= mf.dispose();
      return closed;
    },
  };
}

export function withTimeout(promise, ms, message) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
