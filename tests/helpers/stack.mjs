// The whole stack for one test file: demo issuer(s) + demo origin + the gate
// in Miniflare, wired together on 127.0.0.1, and torn down together. By
// default the gate signs an origin assertion (an Ed25519 key made up for the
// stack) and the demo origin verifies it on every request, refusing any
// request without a valid one: every test through the stack checks it.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import net from 'node:net';
import { startIssuer } from '../../demo/issuer.mjs';
import { startOrigin } from '../../demo/origin.mjs';
import { startGate } from './gate.mjs';

/** Where the gate publishes its assertion keys (crates/core/src/forward/assertion.rs). */
export const ASSERTION_JWKS_PATH = '/.well-known/portcullis/jwks.json';

/** A private JWK made up for one run, as the ASSERTION_KEY secret holds it (text). */
export function assertionKey(alg = 'EdDSA') {
  const { privateKey } = alg === 'ES256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  return JSON.stringify(privateKey.export({ format: 'jwk' }));
}

/**
 * @param {object} [options]
 * @param {object} [options.issuer] options for startIssuer (audience defaults to the resource).
 * @param {object} [options.origin] options for startOrigin.
 * @param {(ctx: {resource: string, issuer: object, origin: object, base: string, proxy?: object}) => object} [options.bindings]
 *   overrides merged over the default bindings; a value of undefined removes that binding.
 * @param {string} [options.resourcePath='/mcp']
 * @param {string} [options.buildDir] run another build of the worker than build/.
 * @param {boolean} [options.assertion=true] the gate signs an origin assertion and the demo origin verifies it.
 * @param {object} [options.miniflare] more Miniflare options for the gate (e.g. `ratelimits`).
 * @param {typeof startGate} [options.gate=startGate] starts the gate: a function taking startGate's options and
 *   returning what it returns, or more (e.g. `startFaultyGate` of tests/helpers/faults.mjs).
 * @param {(origin: object) => Promise<{url: string, close: () => Promise<void>}>} [options.proxy] puts a server in
 *   front of the demo origin (e.g. `(origin) => startFaultyOrigin({ target: origin.url })`): MCP_ORIGIN is its `url`,
 *   it is returned as `proxy` and closed with the stack. Needs `assertion: false`: the demo origin checks the
 *   assertion's `htu` against its own URL, which a proxy in front changes.
 */
export async function startStack({ issuer: issuerOptions = {}, origin: originOptions = {}, bindings: overrides, resourcePath = '/mcp', buildDir, assertion = true, miniflare, gate: startGateFn = startGate, proxy: startProxy } = {}) {
  if (startProxy && assertion) throw new Error('startStack: a proxy in front of the demo origin needs assertion: false (the htu would not match)');
  // Held until the gate starts, so that the issuer and the origin, which
  // listen on any free port, cannot be given the one the gate's URLs name.
  const reserved = await reservePort();
  const { port } = reserved;
  const base = `http://127.0.0.1:${port}`;
  const resource = `${base}${resourcePath}`;
  const closers = [];
  try {
    const issuer = await startIssuer({ audience: resource, ...issuerOptions });
    closers.push(() => issuer.close());
    const verifying = assertion ? { assertion: { jwksUrl: `${base}${ASSERTION_JWKS_PATH}`, issuer: base } } : {};
    const origin = await startOrigin({ countdownIntervalMs: 300, ...verifying, ...originOptions });
    closers.push(() => origin.close());
    const proxy = startProxy ? await startProxy(origin) : undefined;
    if (proxy) closers.push(() => proxy.close());
    const defaults = {
      MCP_RESOURCE: resource,
      MCP_ORIGIN: proxy?.url ?? origin.url,
      OAUTH_ISSUER: issuer.issuer,
      OAUTH_JWKS_URI: issuer.jwksUri,
      // requestState sealed to its user (made up for this stack only).
      MCP_STATE_SECRET: randomBytes(32).toString('base64url'),
      // The demo origin's audience is its own URL.
      ...(assertion ? { ASSERTION_KEY: assertionKey(), ORIGIN_ASSERTION_AUDIENCE: origin.url } : {}),
    };
    const bindings = { ...defaults, ...(overrides ? overrides({ resource, issuer, origin, base, proxy }) : {}) };
    if (assertion && bindings.MCP_ROUTES !== undefined) {
      // With routes, the assertion is asked for per route: of each route to the demo origin.
      delete bindings.ORIGIN_ASSERTION_AUDIENCE;
      try {
        const routes = JSON.parse(bindings.MCP_ROUTES);
        for (const route of routes) if (route?.origin === origin.url && !('assertion_audience' in route)) route.assertion_audience = origin.url;
        bindings.MCP_ROUTES = JSON.stringify(routes);
      } catch {
        // A test of a malformed MCP_ROUTES: left as written.
      }
    }
    for (const [name, value] of Object.entries(bindings)) if (value === undefined) delete bindings[name];
    await reserved.release();
    const gate = await startGateFn({ bindings, port, buildDir, miniflare });
    closers.push(() => gate.close());
    return {
      base,
      resource,
      issuer,
      origin,
      /** The server in front of the origin (`proxy` option), or undefined. */
      proxy,
      gate,
      bindings,
      /** Stops the gate, the proxy, the origin and the issuer (in that order). */
      async close() {
        await closeAll(closers);
      },
    };
  } catch (error) {
    await reserved.release();
    await closeAll(closers);
    throw error;
  }
}

/** A free port of 127.0.0.1, kept listening (so taken) until `release`. */
function reservePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      let released;
      resolve({
        port: server.address().port,
        release: () => (released ??= new Promise((done) => (server.listening ? server.close(() => done()) : done()))),
      });
    });
  });
}

/** Runs closers in reverse order; every one runs even if another fails. */
export async function closeAll(closers) {
  const errors = [];
  for (const close of closers.splice(0).reverse()) {
    try {
      await close();
    } catch (error) {
      errors.push(error);
    }
  }
  if (errors.length) throw errors[0];
}
