// A local development stand-in for an OAuth 2.1 authorization server: just
// enough for the gate to discover and fetch signing keys, and for tests and
// the demo to mint access tokens. Keys are generated at start-up and live
// only in memory. Not an authorization server: there is no login, no client
// registration and no authorization endpoint (issue #5 brings a real one).
//
//   import { startIssuer } from './demo/issuer.mjs';
//   const issuer = await startIssuer({ audience: 'http://127.0.0.1:8787/mcp' });
//   const token = await issuer.mint({ scope: 'invoices:read' }, { alg: 'ES256' });
//
// Serves, on 127.0.0.1 only:
//   GET /.well-known/oauth-authorization-server[<path>]  RFC 8414 metadata (path-inserted)
//   GET [<path>]/.well-known/openid-configuration        the same document, OIDC style
//   GET [<path>]/jwks                                     public signing keys
//   GET|POST [<path>]/dev/token                           mints a token (only with devMint: true)

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';

/** Every algorithm the gate can verify. */
export const ALL_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'EdDSA'];

const LOOPBACK = '127.0.0.1';

/** Generates a signing key pair for `alg`, with a fresh kid. */
export async function generateSigningKey(alg, { kid = `${alg.toLowerCase()}-${randomUUID().slice(0, 8)}` } = {}) {
  const options = { extractable: true };
  if (alg === 'EdDSA') options.crv = 'Ed25519';
  const { privateKey, publicKey } = await generateKeyPair(alg, options);
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, publicKey, publicJwk };
}

/**
 * Starts the issuer.
 *
 * @param {object} [options]
 * @param {number} [options.port=0] TCP port on 127.0.0.1 (0: any free port).
 * @param {string} [options.path=''] issuer path, e.g. '/tenant-a' (RFC 8414 §3.1 path insertion).
 * @param {string[]} [options.algs=ALL_ALGS] one published key per algorithm.
 * @param {string} [options.audience] default `aud` of minted tokens.
 * @param {'both'|'oauth'|'openid'|'none'} [options.discovery='both'] which metadata documents exist.
 * @param {object} [options.metadata] fields merged into (or, with undefined values, removed from) the metadata.
 * @param {object[]} [options.extraJwks] extra JWK entries published after the signing keys.
 * @param {boolean} [options.devMint=false] serve /dev/token (local demo only).
 */
export async function startIssuer({
  port = 0,
  path = '',
  algs = ALL_ALGS,
  audience,
  discovery = 'both',
  metadata: metadataOverrides = {},
  extraJwks = [],
  devMint = false,
} = {}) {
  path = path.replace(/\/+$/, '');
  if (path && !path.startsWith('/')) throw new Error('path must start with "/"');

  const keyList = await Promise.all(algs.map((alg) => generateSigningKey(alg)));
  /** alg -> key: the key `mint` uses by default for that algorithm. */
  const keys = Object.fromEntries(keyList.map((key) => [key.alg, key]));
  /** Every published key, in JWKS order. */
  const published = [...keyList];

  /** Every request received: { method, path, query, headers, at }. */
  const requests = [];
  /** The most recent tokens minted (for leak checks). */
  const minted = [];
  /** false, 'error' (HTTP 500 on everything) or 'refuse' (not listening). */
  let down = false;
  /** Optional hook: (req, res) => true when it answered the request itself. */
  let handler = null;
  const sockets = new Set();

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://issuer.invalid');
    requests.push({ method: req.method, path: url.pathname, query: url.search, headers: { ...req.headers }, at: Date.now() });
    if (handler && handler(req, res, url)) return;
    if (down) return json(res, 500, { error: 'server_error', error_description: 'issuer is down (test switch)' });
    route(req, res, url).catch((error) => json(res, 500, { error: 'server_error', error_description: String(error?.message ?? error) }));
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await listen(server, port);
  const actualPort = server.address().port;
  const origin = `http://${LOOPBACK}:${actualPort}`;
  const issuer = `${origin}${path}`;
  const jwksUri = `${issuer}/jwks`;

  function metadataDocument() {
    const document = {
      issuer,
      jwks_uri: jwksUri,
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code', 'client_credentials'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['none'],
      scopes_supported: ['invoices:read', 'invoices:write'],
      ...metadataOverrides,
    };
    for (const [name, value] of Object.entries(document)) if (value === undefined) delete document[name];
    return document;
  }

  function jwks() {
    return { keys: [...published.map((key) => key.publicJwk), ...extraJwks] };
  }

  async function route(req, res, url) {
    const p = url.pathname;
    const isGet = req.method === 'GET' || req.method === 'HEAD';
    if (isGet && p === `/.well-known/oauth-authorization-server${path}` && (discovery === 'both' || discovery === 'oauth')) {
      return json(res, 200, metadataDocument());
    }
    if (isGet && p === `${path}/.well-known/openid-configuration` && (discovery === 'both' || discovery === 'openid')) {
      return json(res, 200, metadataDocument());
    }
    if (isGet && p === `${path}/jwks`) {
      return json(res, 200, jwks(), { 'content-type': 'application/jwk-set+json' });
    }
    if (devMint && p === `${path}/dev/token` && (req.method === 'GET' || req.method === 'POST')) {
      const params = new URLSearchParams(url.search);
      if (req.method === 'POST') {
        for (const [name, value] of new URLSearchParams(await readBody(req))) params.set(name, value);
      }
      const ttl = Math.min(Math.max(Number(params.get('ttl') ?? 3600) || 3600, 1), 24 * 3600);
      const claims = { exp: now() + ttl };
      for (const name of ['sub', 'client_id', 'scope', 'aud']) if (params.has(name)) claims[name] = params.get(name);
      const alg = params.get('alg') ?? algs[0];
      const accessToken = await mint(claims, { alg });
      return json(res, 200, { access_token: accessToken, token_type: 'Bearer', expires_in: ttl, scope: claims.scope ?? 'invoices:read invoices:write' });
    }
    return json(res, 404, { error: 'not_found' });
  }

  /**
   * Signs an access token (RFC 9068 shape).
   *
   * @param {object} [claims] merged over the defaults; a claim set to `undefined` is left out.
   * @param {object} [options]
   * @param {string} [options.alg='RS256' or the first configured] header alg and key choice.
   * @param {string} [options.kid] header kid (default: the key's kid; null leaves it out).
   * @param {object} [options.header] extra or overriding protected-header fields.
   * @param {object} [options.key] a key from generateSigningKey() to sign with instead.
   */
  async function mint(claims = {}, { alg, kid, header = {}, key } = {}) {
    const chosenAlg = alg ?? key?.alg ?? (keys.RS256 ? 'RS256' : algs[0]);
    const signingKey = key ?? keys[chosenAlg];
    if (!signingKey) throw new Error(`issuer has no ${chosenAlg} key`);
    const issuedAt = now();
    const payload = {
      iss: issuer,
      aud: audience,
      sub: 'user-1234',
      client_id: 'demo-client',
      scope: 'invoices:read invoices:write',
      iat: issuedAt,
      exp: issuedAt + 300,
      jti: randomUUID(),
      ...claims,
    };
    for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
    const protectedHeader = { alg: chosenAlg, typ: 'at+jwt', kid: kid === undefined ? signingKey.kid : kid, ...header };
    if (protectedHeader.kid === null) delete protectedHeader.kid;
    // SignJWT validates registered claim types; set the payload as given so
    // tests can also mint deliberately odd tokens.
    const token = await new SignJWT(payload).setProtectedHeader(protectedHeader).sign(signingKey.privateKey);
    minted.push(token);
    if (minted.length > 1000) minted.shift();
    return token;
  }

  /** Publishes a new key for `alg` (key rotation); returns it. */
  async function addKey(alg) {
    const key = await generateSigningKey(alg);
    published.push(key);
    keys[alg] = key;
    return key;
  }

  /**
   * Withdraws the published key `kid` (the second half of a rotation); `mint`
   * can still sign with it through `{ key }`. Returns the removed key.
   */
  function removeKey(kid) {
    const index = published.findIndex((key) => key.kid === kid);
    if (index < 0) throw new Error(`no published key ${kid}`);
    const [removed] = published.splice(index, 1);
    if (keys[removed.alg] === removed) {
      const successor = published.findLast((key) => key.alg === removed.alg);
      if (successor) keys[removed.alg] = successor;
      else delete keys[removed.alg];
    }
    return removed;
  }

  /**
   * Switches the issuer into an outage: false (healthy), true or 'error'
   * (every request answered 500), 'refuse' (the port stops listening, so
   * connections are refused; it listens again on the same port when set back).
   */
  async function setDown(mode) {
    const next = mode === true ? 'error' : mode;
    if (next === down) return;
    if (next === 'refuse') {
      await closeServer();
    } else if (down === 'refuse') {
      await listen(server, actualPort);
    }
    down = next;
  }

  async function closeServer() {
    if (!server.listening) return;
    const closed = new Promise((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  }

  return {
    issuer,
    origin,
    port: actualPort,
    jwksUri,
    metadataUrl: `${origin}/.well-known/oauth-authorization-server${path}`,
    keys,
    published,
    requests,
    minted,
    mint,
    addKey,
    removeKey,
    setDown,
    /** Installs (or with null removes) a hook that may answer requests itself. */
    setHandler(fn) {
      handler = fn;
    },
    /** How many requests reached `pathname` (exact match). */
    count(pathname) {
      return requests.filter((r) => r.path === pathname).length;
    },
    metadata: metadataDocument,
    jwks,
    close: closeServer,
  };
}

function now() {
  return Math.floor(Date.now() / 1000);
}

function json(res, status, body, headers = {}) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, LOOPBACK, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

async function readBody(req, limit = 64 * 1024) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Standalone: `node demo/issuer.mjs` (PORT, default 8789; AUDIENCE).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const port = Number(process.env.PORT ?? 8789);
  const audience = process.env.AUDIENCE ?? 'http://127.0.0.1:8787/mcp';
  const issuer = await startIssuer({ port, audience, devMint: true });
  console.log(`issuer ${issuer.issuer}  jwks ${issuer.jwksUri}  mint: curl -s '${issuer.issuer}/dev/token?scope=invoices:read'`);
  const stop = async () => {
    await issuer.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
