// Fault injection around the real built gate (issue 22): Workers KV that
// fails, stalls or is rate limited on command, and an origin that refuses,
// stalls, resets, garbles or floods on command. Nothing of the gate is
// mocked: the built worker runs in Miniflare's workerd as in startGate, and
// its JWKS_CACHE is a real Miniflare KV namespace reached through a switch.
//
//   import { startFaultyGate, startFaultyOrigin } from './helpers/faults.mjs';
//   const gate = await startFaultyGate({ bindings });   // startGate's options
//   gate.kv.set({ get: 'fail' });                      // every KV read throws
//   gate.kv.set({ put: 'limit', keys: 'session:' });   // session writes get a 429
//   gate.kv.counts();                                  // { gets, puts, failedGets, failedPuts }
//   gate.kv.reset();
//
//   const proxy = await startFaultyOrigin({ target: origin.url });
//   await proxy.set('head-stall');                     // MCP_ORIGIN = proxy.url
//
// With startStack: `startStack({ gate: startFaultyGate, assertion: false,
// proxy: (origin) => startFaultyOrigin({ target: origin.url }) })`.
//
// How the KV switch works: JWKS_CACHE is a Miniflare *wrapped binding* whose
// module (FAULTY_KV_SCRIPT) runs inside the gate's isolate and holds the
// real namespace as an inner binding. Before each operation it asks a
// Node function (a service binding of the wrapping worker) which mode the
// test has set, so switching is synchronous on the test's side and survives
// gate.restart() (a fresh isolate), and the counts are kept in Node.

import http from 'node:http';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { join } from 'node:path';
import { ROOT, startGate } from './gate.mjs';

const LOOPBACK = '127.0.0.1';

/** The test build with the probes (`bash scripts/build.sh --probes`): it answers the cache probe. */
export const PROBE_BUILD = join(ROOT, 'build-probe');
/** Where the probe build reports its isolate cache sizes (src/verify_probe.rs). */
export const CACHES_PATH = '/__portcullis/verify-probe/caches';
/** The documented bound of each isolate cache, in entries (README "Failure behaviour"); key sets: one per configured issuer (one in these tests). */
export const CACHE_BOUNDS = {
  verified_tokens: 4096,
  refused_tokens: 4096,
  introspection_verdicts: 10_000,
  imported_keys: 512,
  replay: 16_384,
  flows: 4096,
  key_sets: 1,
};

/** The name of the worker whose module is JWKS_CACHE's wrapper. */
export const FAULTY_KV_WORKER = 'portcullis-faulty-kv';
/** How long a stalled KV operation waits before it throws (far past the gate's 2 s deadline). */
export const DEFAULT_STALL_MS = 30_000;

/** What Workers KV throws when a key is written more than once a second (or a plan's limit is spent). */
export const KV_LIMIT_MESSAGE = 'KV PUT failed: 429 Too Many Requests';

const READ_MODES = new Set(['ok', 'fail', 'stall']);
const WRITE_MODES = new Set(['ok', 'fail', 'stall', 'limit']);

/**
 * The wrapper, evaluated in the gate's isolate. Reads (get, getWithMetadata)
 * follow the `get` mode; writes (put, delete) the `put` mode; list passes.
 * The error messages are those Workers KV gives.
 */
function faultyKvScript(stallMs) {
  return `
const STALL_MS = ${Number(stallMs)};
function stalled(op) {
  // Not a promise that never settles: workerd would cancel the request as hung.
  return new Promise((_, reject) => setTimeout(() => reject(new Error('KV ' + op + ' stalled')), STALL_MS));
}
class FaultyKv {
  #inner;
  #control;
  constructor(env) {
    this.#inner = env.INNER;
    this.#control = env.CONTROL;
  }
  async #mode(op, key) {
    const answer = await this.#control.fetch('http://kv-switch/' + op, { method: 'POST', body: String(key) });
    return answer.text();
  }
  async #read(method, key, rest) {
    const mode = await this.#mode('get', key);
    if (mode === 'fail') throw new Error('KV GET failed: 500 Internal Server Error');
    if (mode === 'stall') return stalled('GET');
    return this.#inner[method](key, ...rest);
  }
  async #write(method, key, rest) {
    const mode = await this.#mode('put', key);
    if (mode === 'fail') throw new Error('KV PUT failed: 500 Internal Server Error');
    if (mode === 'limit') throw new Error(${JSON.stringify(KV_LIMIT_MESSAGE)});
    if (mode === 'stall') return stalled('PUT');
    return this.#inner[method](key, ...rest);
  }
  get(key, ...rest) { return this.#read('get', key, rest); }
  getWithMetadata(key, ...rest) { return this.#read('getWithMetadata', key, rest); }
  put(key, ...rest) { return this.#write('put', key, rest); }
  delete(key, ...rest) { return this.#write('delete', key, rest); }
  list(...args) { return this.#inner.list(...args); }
}
export default function (env) {
  return new FaultyKv(env);
}
`;
}

/** The fault switch of one gate's KV, kept in Node. */
class KvSwitch {
  constructor() {
    this.reset();
  }

  reset() {
    this.modes = { get: 'ok', put: 'ok', keys: undefined };
    this.tally = { gets: 0, puts: 0, failedGets: 0, failedPuts: 0 };
  }

  set({ get = 'ok', put = 'ok', keys } = {}) {
    if (!READ_MODES.has(get)) throw new Error(`kv.set: get must be one of ${[...READ_MODES].join(', ')}`);
    if (!WRITE_MODES.has(put)) throw new Error(`kv.set: put must be one of ${[...WRITE_MODES].join(', ')}`);
    if (keys !== undefined && typeof keys !== 'string' && !(keys instanceof RegExp)) throw new Error('kv.set: keys must be a prefix or a RegExp');
    this.modes = { get, put, keys };
  }

  /** The mode of one operation (`get` or `put`) on `key`, counted. */
  decide(op, key) {
    const { keys } = this.modes;
    const matches = keys === undefined || (typeof keys === 'string' ? key.startsWith(keys) : keys.test(key));
    const mode = matches ? this.modes[op] : 'ok';
    if (op === 'get') {
      this.tally.gets += 1;
      if (mode !== 'ok') this.tally.failedGets += 1;
    } else {
      this.tally.puts += 1;
      if (mode !== 'ok') this.tally.failedPuts += 1;
    }
    return mode;
  }
}

/**
 * What startGate needs to bind JWKS_CACHE through a switch: `miniflare` for
 * the gate worker, `workers` to run beside it, and the `control` (the `kv`
 * object startFaultyGate returns, without `store`/`clear`).
 *
 * @param {object} [options]
 * @param {number} [options.stallMs=DEFAULT_STALL_MS] how long a stalled operation waits, then throws.
 * @param {string} [options.namespace='JWKS_CACHE'] the id of the real KV namespace behind the switch.
 */
export function faultyKvOptions({ stallMs = DEFAULT_STALL_MS, namespace = 'JWKS_CACHE' } = {}) {
  const control = new KvSwitch();
  return {
    kv: false,
    miniflare: { wrappedBindings: { JWKS_CACHE: { scriptName: FAULTY_KV_WORKER } } },
    workers: [
      {
        name: FAULTY_KV_WORKER,
        modules: true,
        script: faultyKvScript(stallMs),
        kvNamespaces: { INNER: namespace },
        serviceBindings: {
          async CONTROL(request) {
            const op = new URL(request.url).pathname.slice(1) === 'put' ? 'put' : 'get';
            return new Response(control.decide(op, await request.text()));
          },
        },
      },
    ],
    control,
  };
}

/**
 * Starts the gate as startGate does (same options, same return value), with
 * JWKS_CACHE behind a fault switch. The returned object adds `kv`:
 *   set({ get, put, keys })  get: 'ok'|'fail'|'stall'; put: 'ok'|'fail'|'stall'|'limit'; an
 *                            omitted mode is 'ok' (each call sets the whole switch); `keys`, a
 *                            prefix or RegExp, limits the faults to matching keys (e.g. 'session:').
 *   counts()                 { gets, puts, failedGets, failedPuts } since start or reset
 *                            (a stalled operation counts as failed; delete counts as a put).
 *   reset()                  every mode 'ok', counts zero.
 *   store()                  the real namespace (Miniflare's KVNamespace in Node), past the switch.
 *   clear(prefix = '')       deletes its keys starting with `prefix` (past the switch); returns how many.
 * The `kv: false` option is ignored: the switch is the point.
 *
 * @param {Parameters<typeof startGate>[0] & {stallMs?: number}} options
 */
export async function startFaultyGate({ miniflare = {}, workers = [], stallMs, kv: _kv, ...rest }) {
  const faulty = faultyKvOptions({ stallMs });
  const gate = await startGate({
    ...rest,
    kv: false,
    miniflare: { ...miniflare, wrappedBindings: { ...(miniflare.wrappedBindings ?? {}), ...faulty.miniflare.wrappedBindings } },
    workers: [...workers, ...faulty.workers],
  });
  const { control } = faulty;
  const store = () => gate.mf.getKVNamespace('INNER', FAULTY_KV_WORKER);
  gate.kv = {
    set: (modes) => control.set(modes),
    counts: () => ({ ...control.tally }),
    reset: () => control.reset(),
    store,
    async clear(prefix = '') {
      const namespace = await store();
      let removed = 0;
      let cursor;
      do {
        const page = await namespace.list({ prefix, cursor });
        for (const { name } of page.keys) {
          await namespace.delete(name);
          removed += 1;
        }
        cursor = page.list_complete ? undefined : page.cursor;
      } while (cursor);
      return removed;
    },
  };
  return gate;
}

const ORIGIN_MODES = new Set(['ok', 'refuse', 'connect-stall', 'head-stall', 'reset-before-head', 'reset-mid-stream', 'garble', 'flood']);
/** Not HTTP: a NUL, bytes past ASCII, and no status line. */
const GARBAGE = Buffer.from('\x00\xff\xfeSSH-2.0-not-http\r\n\x16\x03\x01garbage\r\n\r\n', 'latin1');
/** Hop-by-hop fields, left for Node to write for the proxy's own connection. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer']);

/**
 * A TCP listener on `port` that never accepts: a worker thread listens with
 * a backlog of 1 and then blocks, so its event loop never runs accept();
 * once the kernel's accept queue holds two connections (two fillers made
 * here), further SYNs are dropped and a client's connect stalls (retrying
 * SYN), as with a host that is down or overloaded.
 */
async function startStallingListener(port) {
  const release = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
const server = require('node:net').createServer();
server.once('error', (error) => parentPort.postMessage({ error: error.message }));
server.listen({ port: workerData.port, host: '${LOOPBACK}', backlog: 1 }, () => {
  parentPort.postMessage({ listening: true });
  Atomics.wait(workerData.release, 0, 0);
  server.close();
  process.exit(0);
});`,
    { eval: true, workerData: { port, release } },
  );
  const ready = await new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  if (ready.error) throw new Error(`connect-stall: could not listen on ${port}: ${ready.error}`);
  const fillers = [];
  for (let i = 0; i < 2; i += 1) {
    const socket = net.connect(port, LOOPBACK);
    socket.on('error', () => {});
    fillers.push(socket);
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 500);
      socket.once('connect', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  return {
    async close() {
      for (const socket of fillers) socket.destroy();
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      Atomics.store(release, 0, 1);
      Atomics.notify(release, 0);
      await exited;
    },
  };
}

/**
 * Starts an HTTP server in front of `target` (normally the demo origin's
 * URL) whose behaviour is switched by `set(mode)`:
 *   'ok'                 proxies to the target, streaming both ways with backpressure; when the
 *                        client (the gate) leaves early, the target's request is destroyed too.
 *   'refuse'             not listening: connections are refused (open ones are destroyed).
 *   'connect-stall'      something listens on the port but never accepts: connects stall.
 *   'head-stall'         reads the request, never answers.
 *   'reset-before-head'  reads the request, then resets the connection (RST).
 *   'reset-mid-stream'   proxies; sends the head and the first body chunk, then after
 *                        `resetAfterMs` resets the connection (and drops the target's request).
 *   'garble'             reads the request, writes bytes that are not HTTP, closes.
 *   'flood'              answers 200 text/event-stream and writes events as fast as
 *                        backpressure allows, up to `floodLimitBytes`, counting `bytesWritten`.
 * Returns { url, origin, port, requests, closes, mode, bytesWritten, set(mode), closed(record), close() }:
 *   url       the target's path on the proxy (use it as MCP_ORIGIN); `origin` the bare http://host:port.
 *   requests  every request received: { method, path, query, headers, body, at, bodyDoneAt, mode,
 *             status, bytesWritten, resetAt, closedAt, finished }.
 *   closes    per request, when its connection to the client (the gate) closed:
 *             { request, at, finished } (finished: the proxy's answer had been written whole).
 *   set       async: await it ('refuse' and 'connect-stall' stop and start listeners).
 *   closed    resolves with the close entry of a request record (rejects after `timeoutMs`).
 *
 * @param {object} options
 * @param {string} options.target the URL to proxy to (its path becomes `url`'s path).
 * @param {number} [options.port=0]
 * @param {number} [options.resetAfterMs=100] in 'reset-mid-stream', how long after the first chunk.
 * @param {number} [options.floodLimitBytes=1 GiB] in 'flood', how much is offered.
 */
export async function startFaultyOrigin({ target, port = 0, resetAfterMs = 100, floodLimitBytes = 1024 ** 3 }) {
  const targetUrl = new URL(target);
  const requests = [];
  const closes = [];
  const closeWaiters = new Set();
  const sockets = new Set();
  let mode = 'ok';
  let stalling;
  let bytesWritten = 0;

  const server = http.createServer((req, res) => handle(req, res));
  // A head-stall lasts as long as the test wants: no server-side request deadline.
  server.requestTimeout = 0;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  function handle(req, res) {
    const url = new URL(req.url, 'http://proxy.invalid');
    const record = {
      method: req.method,
      path: url.pathname,
      query: url.search,
      headers: { ...req.headers },
      body: '',
      at: Date.now(),
      bodyDoneAt: undefined,
      mode,
      status: undefined,
      bytesWritten: 0,
      resetAt: undefined,
      closedAt: undefined,
      finished: undefined,
    };
    requests.push(record);
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    const bodyDone = new Promise((resolve) => {
      const done = () => {
        record.body = Buffer.concat(chunks).toString('utf8');
        record.bodyDoneAt ??= Date.now();
        resolve();
      };
      req.once('end', done);
      req.once('close', done);
    });
    res.on('close', () => {
      const entry = { request: record, at: Date.now(), finished: res.writableFinished };
      record.closedAt = entry.at;
      record.finished = entry.finished;
      closes.push(entry);
      for (const waiter of closeWaiters) waiter();
    });
    req.on('error', () => {});
    res.on('error', () => {});

    switch (record.mode) {
      case 'head-stall':
        req.resume();
        return;
      case 'reset-before-head':
        bodyDone.then(() => {
          record.resetAt = Date.now();
          req.socket.resetAndDestroy();
        });
        req.resume();
        return;
      case 'garble':
        bodyDone.then(() => req.socket.end(GARBAGE));
        req.resume();
        return;
      case 'flood':
        req.resume();
        return flood(record, res);
      default:
        return forward(record, req, res);
    }
  }

  function forward(record, req, res) {
    const headers = { ...req.headers, host: targetUrl.host };
    const upstream = http.request({ host: targetUrl.hostname, port: targetUrl.port, method: req.method, path: req.url, headers }, (answer) => {
      record.status = answer.statusCode;
      const fields = [];
      for (let i = 0; i < answer.rawHeaders.length; i += 2) {
        if (!HOP_BY_HOP.has(answer.rawHeaders[i].toLowerCase())) fields.push([answer.rawHeaders[i], answer.rawHeaders[i + 1]]);
      }
      res.writeHead(answer.statusCode, fields.flat());
      // An event stream's head goes out at once, as the target sent it.
      res.flushHeaders();
      if (record.mode !== 'reset-mid-stream') {
        answer.on('data', (chunk) => (record.bytesWritten += chunk.length));
        answer.pipe(res);
        return;
      }
      const reset = () => {
        if (record.resetAt !== undefined) return;
        record.resetAt = Date.now();
        answer.destroy();
        upstream.destroy();
        res.socket?.resetAndDestroy();
      };
      answer.once('data', (chunk) => {
        answer.pause();
        record.bytesWritten += chunk.length;
        res.write(chunk);
        setTimeout(reset, resetAfterMs);
      });
      answer.once('end', () => setTimeout(reset, resetAfterMs));
    });
    upstream.on('error', () => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end('faulty origin: the target is unreachable');
      } else {
        res.destroy();
      }
    });
    // The client left before the answer ended: the target sees its request go too.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  function flood(record, res) {
    record.status = 200;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.flushHeaders();
    const event = Buffer.from(`data: ${'x'.repeat(64 * 1024 - 9)}\n\n`);
    let open = true;
    res.on('close', () => (open = false));
    const pump = () => {
      while (open && record.bytesWritten < floodLimitBytes) {
        record.bytesWritten += event.length;
        bytesWritten += event.length;
        if (!res.write(event)) {
          res.once('drain', pump);
          return;
        }
      }
      if (open) res.end();
    };
    pump();
  }

  function listen() {
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, LOOPBACK, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  async function stopListening() {
    if (!server.listening) return;
    const closed = new Promise((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    for (const socket of sockets) socket.destroy();
    await closed;
  }

  await listen();
  port = server.address().port;

  let switching = Promise.resolve();
  async function apply(next) {
    if (!ORIGIN_MODES.has(next)) throw new Error(`faulty origin: unknown mode ${next}`);
    const listening = next !== 'refuse' && next !== 'connect-stall';
    if (next !== 'connect-stall' && stalling) {
      await stalling.close();
      stalling = undefined;
    }
    if (!listening) {
      await stopListening();
      if (next === 'connect-stall' && !stalling) stalling = await startStallingListener(port);
    } else if (!server.listening) {
      await listen();
    }
    mode = next;
  }

  return {
    url: `http://${LOOPBACK}:${port}${targetUrl.pathname === '/' ? '' : targetUrl.pathname}`,
    origin: `http://${LOOPBACK}:${port}`,
    port,
    requests,
    closes,
    get mode() {
      return mode;
    },
    /** Bytes offered by every 'flood' answer so far. */
    get bytesWritten() {
      return bytesWritten;
    },
    /** Switches the mode (serialized: each switch waits for the one before). */
    set(next) {
      switching = switching.catch(() => {}).then(() => apply(next));
      return switching;
    },
    /** The close entry of `record` (a request of `requests`), when its connection closes. */
    closed(record, { timeoutMs = 5000 } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const entry = closes.find((c) => c.request === record);
          if (!entry) return false;
          clearTimeout(timer);
          closeWaiters.delete(check);
          resolve(entry);
          return true;
        };
        const timer = setTimeout(() => {
          closeWaiters.delete(check);
          reject(new Error(`the proxy's ${record.method} ${record.path} did not close within ${timeoutMs} ms`));
        }, timeoutMs);
        if (!check()) closeWaiters.add(check);
      });
    },
    async close() {
      await switching.catch(() => {});
      if (stalling) await stalling.close();
      stalling = undefined;
      await stopListening();
    },
  };
}
