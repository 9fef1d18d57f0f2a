// The whole stack for one test file: demo issuer(s) + demo origin + the gate
// in Miniflare, wired together on 127.0.0.1, and torn down together.

import { randomBytes } from 'node:crypto';
import { startIssuer } from '../../demo/issuer.mjs';
import { startOrigin } from '../../demo/origin.mjs';
import { freePort, startGate } from './gate.mjs';

/**
 * @param {object} [options]
 * @param {object} [options.issuer] options for startIssuer (audience defaults to the resource).
 * @param {object} [options.origin] options for startOrigin.
 * @param {(ctx: {resource: string, issuer: object, origin: object}) => object} [options.bindings]
 *   overrides merged over the default bindings; a value of undefined removes that binding.
 * @param {string} [options.resourcePath='/mcp']
 * @param {string} [options.buildDir] run another build of the worker than build/.
 */
export async function startStack({ issuer: issuerOptions = {}, origin: originOptions = {}, bindings: overrides, resourcePath = '/mcp', buildDir } = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const resource = `${base}${resourcePath}`;
  const closers = [];
  try {
    const issuer = await startIssuer({ audience: resource, ...issuerOptions });
    closers.push(() => issuer.close());
    const origin = await startOrigin({ countdownIntervalMs: 300, ...originOptions });
    closers.push(() => origin.close());
    const defaults = {
      MCP_RESOURCE: resource,
      MCP_ORIGIN: origin.url,
      OAUTH_ISSUER: issuer.issuer,
      OAUTH_JWKS_URI: issuer.jwksUri,
      // requestState sealed to its user (made up for this stack only).
      MCP_STATE_SECRET: randomBytes(32).toString('base64url'),
    };
    const bindings = { ...defaults, ...(overrides ? overrides({ resource, issuer, origin, base }) : {}) };
    const gate = await startGate({ bindings, port, buildDir });
    closers.push(() => gate.close());
    return {
      base,
      resource,
      issuer,
      origin,
      gate,
      bindings,
      /** Stops the gate, the origin and the issuer (in that order). */
      async close() {
        await closeAll(closers);
      },
    };
  } catch (error) {
    await closeAll(closers);
    throw error;
  }
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
