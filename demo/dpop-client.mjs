#!/usr/bin/env node
// A DPoP client (RFC 9449) for the demo stack, in plain fetch and jose, as a
// real client does it: makes a key pair, asks the authorization server for a
// token with a DPoP proof at the token endpoint (client credentials), so the
// token is bound to the key (token_type DPoP, cnf.jkt), then talks MCP to the
// gate with `Authorization: DPoP <token>` and a new proof for every request
// (htm, htu, ath; the server's DPoP-Nonce when it asks for one: one retry on
// `use_dpop_nonce`, then the last nonce it sent in each proof). It also
// shows that the same token sent as Bearer is refused.
//
//   npm start -- --dpop                 (the stack with DPoP required, in another terminal)
//   node demo/dpop-client.mjs [TOOL] [JSON_ARGUMENTS]
//                                       (default: lookup_invoice {"invoice_id":"INV-1001"})
//
// The running stack is found by its gate port (GATE_PORT, default 8787),
// like `node scripts/dev.mjs call`; or give RESOURCE, TOKEN_ENDPOINT,
// CLIENT_ID and CLIENT_SECRET in the environment. DPOP_ALG picks the key's
// algorithm (ES256 by default; EdDSA, RS256 or PS256).

import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT, calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair } from 'jose';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const GATE_PORT = Number(process.env.GATE_PORT ?? 8787);
const STATE_FILE = process.env.PORTCULLIS_DEV_STATE ?? join(ROOT, '.wrangler', `portcullis-dev-${GATE_PORT}.json`);
const PROTOCOL_VERSION = '2025-06-18';

function settings() {
  const fromEnv = { resource: process.env.RESOURCE, tokenEndpoint: process.env.TOKEN_ENDPOINT, clientId: process.env.CLIENT_ID, clientSecret: process.env.CLIENT_SECRET };
  if (Object.values(fromEnv).every(Boolean)) return fromEnv;
  try {
    return JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  } catch {
    console.error(`No demo stack running on port ${GATE_PORT} (no ${STATE_FILE}): start it with \`npm start -- --dpop\`, or set RESOURCE, TOKEN_ENDPOINT, CLIENT_ID and CLIENT_SECRET.`);
    process.exit(1);
  }
}

/** A DPoP key: the private key signs proofs, the public JWK goes in each proof's header. */
async function makeKey(alg) {
  const { privateKey, publicKey } = await generateKeyPair(alg, alg === 'EdDSA' ? { crv: 'Ed25519' } : {});
  const jwk = await exportJWK(publicKey);
  return { alg, privateKey, jwk, jkt: await calculateJwkThumbprint(jwk) };
}

/** A proof for one request (RFC 9449 §4.2): htu without query or fragment; ath when a token goes with it. */
function proof(key, { method, url, accessToken, nonce }) {
  const target = new URL(url);
  const claims = { jti: randomUUID(), htm: method, htu: `${target.origin}${target.pathname}` };
  if (accessToken) claims.ath = createHash('sha256').update(accessToken).digest('base64url');
  if (nonce) claims.nonce = nonce;
  return new SignJWT(claims).setProtectedHeader({ typ: 'dpop+jwt', alg: key.alg, jwk: key.jwk }).setIssuedAt().sign(key.privateKey);
}

const { resource, tokenEndpoint, clientId, clientSecret } = settings();
const [tool = 'lookup_invoice', argumentsJson = '{"invoice_id":"INV-1001"}'] = process.argv.slice(2);
const key = await makeKey(process.env.DPOP_ALG ?? 'ES256');
console.log(`DPoP key: ${key.alg}, thumbprint (jkt) ${key.jkt}`);

// 1. The token, bound to the key: a proof for the token request itself.
const tokenResponse = await fetch(tokenEndpoint, {
  method: 'POST',
  headers: {
    authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`,
    'content-type': 'application/x-www-form-urlencoded',
    dpop: await proof(key, { method: 'POST', url: tokenEndpoint }),
  },
  body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'invoices:read invoices:write', resource }),
  signal: AbortSignal.timeout(10_000),
});
const tokens = await tokenResponse.json();
if (!tokenResponse.ok) {
  console.error(`The authorization server refused: ${tokenResponse.status} ${JSON.stringify(tokens)}`);
  process.exit(1);
}
const accessToken = tokens.access_token;
const cnf = (() => {
  try {
    return decodeJwt(accessToken).cnf;
  } catch {
    return undefined; // an opaque token
  }
})();
console.log(`token: token_type ${tokens.token_type}, cnf ${JSON.stringify(cnf)}${cnf?.jkt === key.jkt ? ' (this key)' : ''}`);

// 2. The same token as a plain Bearer token: refused, the origin never sees it.
const asBearer = await fetch(resource, { method: 'POST', headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' }, body: '{}' });
await asBearer.body?.cancel();
console.log(`as Bearer: ${asBearer.status}  WWW-Authenticate: ${asBearer.headers.get('www-authenticate')}`);

// 3. MCP over DPoP: a new proof for every request.
let nonce;
let sessionId;
async function post(message) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = {
      authorization: `DPoP ${accessToken}`,
      dpop: await proof(key, { method: 'POST', url: resource, accessToken, nonce }),
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    };
    if (sessionId) Object.assign(headers, { 'mcp-session-id': sessionId, 'mcp-protocol-version': PROTOCOL_VERSION });
    const response = await fetch(resource, { method: 'POST', headers, body: JSON.stringify(message), signal: AbortSignal.timeout(30_000) });
    nonce = response.headers.get('dpop-nonce') ?? nonce;
    if (response.status === 401 && /use_dpop_nonce/.test(response.headers.get('www-authenticate') ?? '') && attempt === 0) {
      await response.body?.cancel();
      console.log('the gate asked for a DPoP nonce: retrying with it');
      continue;
    }
    if (!response.ok) {
      console.error(`${message.method}: ${response.status} ${response.headers.get('www-authenticate') ?? ''} ${await response.text()}`);
      process.exit(1);
    }
    sessionId = response.headers.get('mcp-session-id') ?? sessionId;
    if (message.id === undefined) {
      await response.body?.cancel();
      return undefined;
    }
    const text = await response.text();
    if (!(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) return JSON.parse(text);
    return text
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => JSON.parse(line.slice(5)))
      .find((m) => m.id === message.id);
  }
}

const initialized = await post({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'portcullis-dpop-client', version: '0' } } });
console.log(`initialize: ${initialized.result.serverInfo.name}, protocol ${initialized.result.protocolVersion}, session ${sessionId}`);
await post({ jsonrpc: '2.0', method: 'notifications/initialized' });
const listed = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
console.log(`tools/list: ${listed.result.tools.map((t) => t.name).join(', ')}`);
const called = await post({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: tool, arguments: JSON.parse(argumentsJson) } });
if (called.error) {
  console.error(`tools/call ${tool}: ${JSON.stringify(called.error)}`);
  process.exitCode = 1;
} else {
  console.log(`tools/call ${tool}:`);
  for (const part of called.result.content ?? []) console.log(part.type === 'text' ? part.text : JSON.stringify(part));
  if (called.result.isError) process.exitCode = 1;
}
// The session ends with a DELETE, with its own proof.
await fetch(resource, {
  method: 'DELETE',
  headers: { authorization: `DPoP ${accessToken}`, dpop: await proof(key, { method: 'DELETE', url: resource, accessToken, nonce }), 'mcp-session-id': sessionId, 'mcp-protocol-version': PROTOCOL_VERSION },
}).then((r) => r.body?.cancel()).catch(() => {});
