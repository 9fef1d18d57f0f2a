// A real OAuth 2.1 / OpenID authorization server for tests and the demo:
// oidc-provider (a certified implementation, from npm) on 127.0.0.1, with
// client credentials, RFC 8707 resource indicators, RFC 7662 introspection
// and RFC 7009 revocation. Access tokens for the resource are opaque or JWT
// (RFC 9068) as asked. Counts the requests each endpoint receives.

import http from 'node:http';
import { randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const LOOPBACK = '127.0.0.1';
export const SCOPES = 'invoices:read invoices:write';

/**
 * @param {object} options
 * @param {string[]} options.resources resource indicators the server issues tokens for (the first is the default).
 * @param {'opaque'|'jwt'} [options.accessTokenFormat='opaque']
 * @returns {Promise<{issuer: string, introspectionEndpoint: string, gateClient: {id: string, secret: string},
 *   token: (opts?: {scope?: string, resource?: string}) => Promise<string>, revoke: (token: string) => Promise<void>,
 *   count: (path: string) => number, setDown: (down: boolean) => void, close: () => Promise<void>}>}
 */
export async function startAuthorizationServer({ resources, accessTokenFormat = 'opaque' }) {
  const gateClient = { id: 'portcullis-gate', secret: `gate-${randomBytes(24).toString('base64url')}` };
  const agentClient = { id: 'demo-agent', secret: `agent-${randomBytes(24).toString('base64url')}` };
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, LOOPBACK, resolve));
  const issuer = `http://${LOOPBACK}:${server.address().port}`;

  const provider = new Provider(issuer, {
    clients: [
      { client_id: gateClient.id, client_secret: gateClient.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [] },
      { client_id: agentClient.id, client_secret: agentClient.secret, grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: SCOPES },
    ],
    scopes: ['openid', ...SCOPES.split(' ')],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resources[0],
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resourceIndicator) => {
          if (!resources.includes(resourceIndicator)) throw new Provider.errors.InvalidTarget();
          return { scope: SCOPES, audience: resourceIndicator, accessTokenTTL: 3600, accessTokenFormat };
        },
      },
    },
  });
  provider.on('server_error', (ctx, error) => process.stderr.write(`authorization server error: ${error?.message}\n`));

  const hits = new Map();
  let down = false;
  const callback = provider.callback();
  server.on('request', (req, res) => {
    const path = new URL(req.url, issuer).pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    if (down) {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":"temporarily_unavailable"}');
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

  return {
    issuer,
    introspectionEndpoint: `${issuer}/token/introspection`,
    gateClient,
    agentClient,
    /** An access token from the client credentials grant. */
    async token({ scope = 'invoices:read', resource = resources[0] } = {}) {
      const response = await fetch(`${issuer}/token`, {
        method: 'POST',
        headers: { authorization: basic(agentClient), 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource }),
      });
      const body = await response.json();
      if (!response.ok) throw new Error(`token request failed: ${JSON.stringify(body)}`);
      return body.access_token;
    },
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
