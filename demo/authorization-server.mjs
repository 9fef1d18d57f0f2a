// A real OAuth 2.1 / OpenID authorization server for tests and the demo:
// oidc-provider (a certified implementation, from npm) on 127.0.0.1, with
//   - authorization code + PKCE (S256, required for every client),
//   - client credentials, refresh tokens,
//   - dynamic client registration (RFC 7591, open: anyone may register),
//   - RFC 8707 resource indicators: access tokens for the resource are JWTs
//     (RFC 9068, aud = the resource) or opaque, as asked,
//   - RFC 7662 introspection and RFC 7009 revocation,
//   - RFC 9449 DPoP: a client that sends a `DPoP` proof to the token endpoint
//     gets a DPoP-bound access token (token_type DPoP; `cnf.jkt` in a JWT, and
//     in the introspection response of an opaque one); without a proof,
//     tokens are Bearer as before,
//   - login and consent as plain HTML forms at /interaction/<uid> (any user
//     name signs in: a demo, no passwords), so a browser or a test can go
//     through them with ordinary HTTP requests.
// Counts the requests each endpoint receives and keeps their order.

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { errors } from 'oidc-provider';

const LOOPBACK = '127.0.0.1';
export const SCOPES = 'invoices:read invoices:write';
const MAX_FORM_BYTES = 16 * 1024;

/**
 * @param {object} options
 * @param {string[]} options.resources resource indicators the server issues tokens for (the first is the
 *   default). May be filled in after start-up, before the first token request.
 * @param {'opaque'|'jwt'} [options.accessTokenFormat='opaque'] format of access tokens for the resources.
 * @param {number} [options.accessTokenTTL=3600] lifetime of those access tokens, in seconds.
 * @param {number} [options.port=0] port on 127.0.0.1 (0: any free one).
 * @param {string} [options.agentSecret] the demo-agent client's secret (random when absent).
 * @param {boolean} [options.log=false] print one line per request to stdout.
 * @param {string[]} [options.corsOrigins=[]] browser origins (e.g. the MCP Inspector's) allowed to register
 *   clients cross-origin; oidc-provider answers CORS on its other endpoints itself.
 * @returns {Promise<{issuer: string, introspectionEndpoint: string, tokenEndpoint: string,
 *   gateClient: {id: string, secret: string}, agentClient: {id: string, secret: string},
 *   token: (opts?: {scope?: string, resource?: string, dpop?: string|Function}) => Promise<string>,
 *   tokenResponse: (opts?: object) => Promise<object>, revoke: (token: string) => Promise<void>,
 *   count: (path: string) => number, requests: {method: string, path: string}[],
 *   setDown: (down: boolean) => void, close: () => Promise<void>}>}
 */
export async function startAuthorizationServer({
  resources,
  accessTokenFormat = 'opaque',
  accessTokenTTL = 3600,
  port = 0,
  agentSecret,
  log = false,
  corsOrigins = [],
}) {
  const gateClient = { id: 'portcullis-gate', secret: `gate-${randomBytes(24).toString('base64url')}` };
  const agentClient = { id: 'demo-agent', secret: agentSecret ?? `agent-${randomBytes(24).toString('base64url')}` };
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, LOOPBACK, resolve);
  });
  const issuer = `http://${LOOPBACK}:${server.address().port}`;

  // One RS256 signing key, made for this run (ID tokens and JWT access tokens).
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const signingKey = { ...(await exportJWK(privateKey)), kid: `demo-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };

  const provider = new Provider(issuer, {
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    clients: [
      { client_id: gateClient.id, client_secret: gateClient.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
      { client_id: agentClient.id, client_secret: agentClient.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: SCOPES },
    ],
    scopes: ['openid', 'offline_access', ...SCOPES.split(' ')],
    // MCP clients register (RFC 7591) with the scope of their first request;
    // oidc-provider would make that a ceiling and refuse a later step-up to
    // invoices:write. A registered `scope` is kept as a hint only: the user
    // decides at consent. (The validator runs before the metadata is checked;
    // software_id is an RFC 7591 field oidc-provider does not know otherwise.)
    extraClientMetadata: {
      properties: ['software_id'],
      validator(ctx, key, value, metadata) {
        if (key === 'software_id' && ctx?.oidc?.route === 'registration') delete metadata.scope;
      },
    },
    findAccount: (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
    pkce: { required: () => true }, // S256 is the only method oidc-provider 9 offers
    // Refresh tokens for every client registered with the refresh_token grant
    // (MCP clients do not ask for offline_access).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    // Browser-based clients (the MCP Inspector) call the token endpoint cross-origin.
    clientBasedCORS: () => true,
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: accessTokenTTL,
      ClientCredentials: accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<p>${escapeHtml(out.error)}: ${escapeHtml(out.error_description ?? '')}</p>`);
    },
    // The DPoP proof algorithms accepted at the token endpoint: the gate's
    // default DPOP_ALGORITHMS, and Ed25519 (RFC 9864's name for EdDSA with
    // Ed25519), which oidc-provider offers by default.
    enabledJWA: { dPoPSigningAlgValues: ['ES256', 'EdDSA', 'Ed25519', 'RS256', 'PS256'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // RFC 9449 (on by default in oidc-provider 9; said here so it stays on).
      // No server nonces (no nonceSecret): a proof's iat must be recent instead.
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resources[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (!resources.includes(resourceIndicator)) throw new errors.InvalidTarget();
          return { scope: SCOPES, audience: resourceIndicator, accessTokenTTL, accessTokenFormat, jwt: { sign: { alg: 'RS256' } } };
        },
      },
    },
  });
  provider.on('server_error', (ctx, error) => process.stderr.write(`authorization server error: ${error?.message}\n`));

  const hits = new Map();
  const requests = [];
  let down = false;
  const callback = provider.callback();
  server.on('request', async (req, res) => {
    const path = new URL(req.url, issuer).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    requests.push({ method: req.method, path });
    if (log) console.log(`[authorization server] ${req.method} ${path}`);
    if (down) {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":"temporarily_unavailable"}');
      return;
    }
    // Dynamic registration from a browser-based client (oidc-provider has no CORS on /reg).
    const requestOrigin = req.headers.origin;
    if (path === '/reg' && requestOrigin && corsOrigins.includes(requestOrigin)) {
      res.setHeader('access-control-allow-origin', requestOrigin);
      res.setHeader('vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.writeHead(204, {
          'access-control-allow-methods': 'POST',
          'access-control-allow-headers': 'Content-Type, Authorization, MCP-Protocol-Version',
          'access-control-max-age': '600',
        });
        res.end();
        return;
      }
    }
    if (path.startsWith('/interaction/')) {
      try {
        await interaction(provider, req, res, path);
      } catch (error) {
        // An expired or unknown interaction, a missing cookie: say so plainly.
        if (!res.headersSent) {
          res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
          res.end(page('Sign-in failed', `<p>${escapeHtml(error?.error_description ?? error?.message ?? 'error')}</p>`));
        }
      }
      return;
    }
    callback(req, res);
  });
  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  const basic = (client) => `Basic ${Buffer.from(`${encodeURIComponent(client.id)}:${encodeURIComponent(client.secret)}`).toString('base64')}`;

  async function tokenResponse({ scope = 'invoices:read', resource = resources[0], dpop } = {}) {
    const headers = { authorization: basic(agentClient), 'content-type': 'application/x-www-form-urlencoded' };
    if (dpop !== undefined) headers.dpop = typeof dpop === 'function' ? await dpop({ htm: 'POST', htu: `${issuer}/token` }) : dpop;
    const response = await fetch(`${issuer}/token`, {
      method: 'POST',
      headers,
      body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`token request failed: ${JSON.stringify(body)}`);
    return body;
  }

  return {
    issuer,
    introspectionEndpoint: `${issuer}/token/introspection`,
    tokenEndpoint: `${issuer}/token`,
    gateClient,
    agentClient,
    /**
     * An access token from the client credentials grant. With `dpop`, a DPoP
     * proof for this token request (or a function of `{ htm, htu }` that makes
     * one), the token is DPoP-bound to the proof's key.
     */
    async token(options = {}) {
      return (await tokenResponse(options)).access_token;
    },
    /** The whole token response of `token` (token_type, expires_in, scope, ...). */
    tokenResponse,
    /** Revokes `token` (RFC 7009). */
    async revoke(token) {
      const response = await fetch(`${issuer}/token/revocation`, {
        method: 'POST',
        headers: { authorization: basic(agentClient), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
      });
      if (!response.ok) throw new Error(`revocation failed: ${response.status}`);
    },
    /** How many requests reached `path`. */
    count(path) {
      return hits.get(path) ?? 0;
    },
    /** Every request so far, in order: { method, path }. */
    requests,
    /** Answers every request with 503 while `true`. */
    setDown(value) {
      down = value;
    },
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/**
 * The login and consent steps (oidc-provider "interactions"):
 *   GET  /interaction/<uid>          the login form, or the consent form once signed in
 *   POST /interaction/<uid>/login    login=<name>: signs in as that name
 *   POST /interaction/<uid>/confirm  grants what the client asked for (scopes, resource scopes)
 *   POST /interaction/<uid>/abort    denies (the client gets access_denied)
 */
async function interaction(provider, req, res, path) {
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params } = details;

  if (req.method === 'GET' && action === undefined) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    if (prompt.name === 'login') {
      res.end(
        page(
          'Sign in',
          `<p>Client <b>${escapeHtml(params.client_id)}</b> asks to act for you. Demo server: any name signs in.</p>
<form method="post" action="/interaction/${uid}/login">
  <label>User name <input name="login" value="demo-user" autofocus></label>
  <button type="submit">Sign in</button>
</form>`,
        ),
      );
    } else {
      const resourceScopes = Object.entries(prompt.details.missingResourceScopes ?? {})
        .map(([resource, scopes]) => `<li>${escapeHtml(scopes.join(' '))} on ${escapeHtml(resource)}</li>`)
        .join('');
      const scopes = (prompt.details.missingOIDCScope ?? []).map((s) => `<li>${escapeHtml(s)}</li>`).join('');
      res.end(
        page(
          'Consent',
          `<p>Allow <b>${escapeHtml(params.client_id)}</b>:</p><ul>${resourceScopes}${scopes}</ul>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit">Allow</button></form>
<form method="post" action="/interaction/${uid}/abort"><button type="submit">Deny</button></form>`,
        ),
      );
    }
    return;
  }

  if (req.method !== 'POST') {
    res.writeHead(405, { allow: 'GET, POST' });
    res.end();
    return;
  }
  const form = await readForm(req);
  if (action === 'login' && prompt.name === 'login') {
    const accountId = (form.get('login') ?? '').trim();
    if (!/^[\w.@-]{1,64}$/.test(accountId)) throw new Error('a user name of letters, digits, . @ _ - is needed');
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  } else if (action === 'confirm' && prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missingResourceScopes ?? {})) grant.addResourceScope(resource, scopes.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
  } else if (action === 'abort') {
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'the user denied the request' },
      { mergeWithLastSubmission: false },
    );
  } else {
    throw new Error('unexpected step');
  }
}

async function readForm(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function page(title, body) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
