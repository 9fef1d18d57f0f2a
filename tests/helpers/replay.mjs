// The gate with its DPoP replay store (src/replay.mjs, the Durable Object
// class DpopReplay the worker exports) bound, alone or as two gates sharing
// one store.
//
// Two gates, one store: each gate runs in its own Miniflare, so in its own
// workerd process (separate isolates, separate memory, as two Cloudflare
// locations). The first gate hosts the store; the second binds the same
// namespace by naming the first's worker (`scriptName`), and Miniflare's dev
// registry (a folder both are told about, `unsafeDevRegistryPath`: what
// `wrangler dev` sessions use to share Durable Objects) connects them: the
// second's binding is a proxy class that forwards each call over workerd's
// debug port to the first's object with the same id (Miniflare gives both
// namespaces the unique key `<scriptName>-<className>`, so `idFromName` names
// the same object in both). A claim made through either gate is seen by both.

import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startGate } from './gate.mjs';

/** The binding wrangler.toml gives the store, and the class the worker exports. */
export const REPLAY_BINDING = 'DPOP_REPLAY';
export const REPLAY_CLASS = 'DpopReplay';

/**
 * Miniflare options binding the worker's own DpopReplay class (SQLite-backed,
 * as the wrangler.toml migration declares it) as `binding`.
 *
 * @param {object} [options]
 * @param {string} [options.binding='DPOP_REPLAY']
 * @param {string} [options.scriptName] the worker hosting the class, when not this one.
 */
export function replayStoreOptions({ binding = REPLAY_BINDING, scriptName } = {}) {
  return { durableObjects: { [binding]: { className: REPLAY_CLASS, useSQLite: true, ...(scriptName && { scriptName }) } } };
}

/** `bindings` with DPOP_REPLAY_STORE naming `binding`, unless they set it (undefined: left out, so `memory`). */
function withStore(bindings, binding) {
  return 'DPOP_REPLAY_STORE' in bindings ? bindings : { DPOP_REPLAY_STORE: binding, ...bindings };
}

/**
 * Starts the gate (tests/helpers/gate.mjs `startGate`) with its replay store
 * bound as `binding`, and DPOP_REPLAY_STORE set to it unless `bindings`
 * has it. Returns what `startGate` returns.
 *
 * @param {object} options `startGate`'s options (`bindings`, `port`, `kv`,
 *   `buildDir`, `miniflare`: laid over the store's options), and:
 * @param {string} [options.binding='DPOP_REPLAY']
 */
export function startGateWithReplayStore({ bindings = {}, binding = REPLAY_BINDING, miniflare = {}, ...rest }) {
  return startGate({
    ...rest,
    bindings: withStore(bindings, binding),
    miniflare: { ...replayStoreOptions({ binding }), ...miniflare },
  });
}

/**
 * Starts two gates, each in its own Miniflare (its own workerd process),
 * sharing one replay store: `a` hosts it, `b` reaches it through Miniflare's
 * dev registry (a temporary folder, removed by `close`). Both bind it as
 * `binding`, and DPOP_REPLAY_STORE names it unless the bindings set it.
 *
 * @param {object} options
 * @param {Record<string, string|undefined> | ((gate: {index: 0|1, port: number}) => Record<string, string|undefined>)} options.bindings
 *   each gate's bindings, or a function of its index (0: `a`, 1: `b`) and port
 *   (picked first, for bindings that name it, e.g. MCP_RESOURCE).
 * @param {string} [options.binding='DPOP_REPLAY']
 * @param {boolean} [options.kv=true] bind a JWKS_CACHE KV namespace in each (not shared).
 * @param {string} [options.buildDir] run another build than build/ (both gates).
 * @param {object} [options.miniflare] more Miniflare options for both gates.
 * @returns {Promise<{a: Awaited<ReturnType<typeof startGate>>, b: Awaited<ReturnType<typeof startGate>>,
 *   registryPath: string, close: () => Promise<void>}>}
 */
export async function startGatePair({ bindings, binding = REPLAY_BINDING, kv = true, buildDir, miniflare = {} }) {
  const registryPath = mkdtempSync(join(tmpdir(), 'portcullis-dev-registry-'));
  const names = ['portcullis-replay-a', 'portcullis-replay-b'];
  const gates = [];
  let closed;
  const close = () =>
    (closed ??= (async () => {
      // The gate reaching the store first, then the one hosting it.
      for (const gate of [...gates].reverse()) await gate.close().catch(() => {});
      rmSync(registryPath, { recursive: true, force: true });
    })());
  try {
    for (const index of [0, 1]) {
      const port = await freePort();
      const own = typeof bindings === 'function' ? bindings({ index, port }) : bindings;
      gates.push(
        await startGate({
          bindings: withStore(own, binding),
          port,
          kv,
          buildDir,
          miniflare: {
            ...miniflare,
            name: names[index],
            unsafeDevRegistryPath: registryPath,
            ...replayStoreOptions({ binding, scriptName: index === 1 ? names[0] : undefined }),
          },
        }),
      );
    }
  } catch (error) {
    await close();
    throw error;
  }
  const [a, b] = gates;
  return { a, b, registryPath, close };
}

/**
 * Sends a request for `url` (the public URL both gates serve, as two
 * Cloudflare locations serve one hostname) to `gate`: to its port, with
 * `url`'s host as the Host header, so the gate sees `url` as the request's
 * URL (a DPoP proof's `htu` made for `url` matches in either gate). fetch()
 * cannot set Host; node:http can.
 *
 * @param {{url: string}} gate a gate from `startGatePair` (or `startGate`).
 * @param {string} url
 * @param {{method?: string, headers?: Record<string, string>, body?: string}} [init]
 * @returns {Promise<Response>} the whole answer, read.
 */
export function fetchVia(gate, url, { method = 'GET', headers = {}, body } = {}) {
  const target = new URL(url);
  const direct = new URL(`${target.pathname}${target.search}`, gate.url);
  return new Promise((resolve, reject) => {
    const request = http.request(direct, { method, headers: { ...headers, host: target.host }, timeout: 15_000 }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const answer = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) answer.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
        const status = res.statusCode;
        const nullBody = status === 204 || status === 304 || method === 'HEAD';
        resolve(new Response(nullBody ? null : Buffer.concat(chunks), { status, headers: answer }));
      });
      res.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer from ${direct} within 15 s`)));
    request.on('error', reject);
    request.end(body);
  });
}
