// An MCP endpoint for `portcullis doctor` to diagnose, on 127.0.0.1: the
// endpoint at /mcp (401 + Bearer challenge without a token; initialize,
// notifications/initialized and tools/list with one), its protected resource
// metadata (RFC 9728), and a tiny authorization server at /tenant (RFC 8414
// metadata and a JWK Set). All correct by default; each option breaks
// exactly one thing the way real deployments do.

import http from 'node:http';
import { generateKeyPairSync, randomBytes } from 'node:crypto';

/**
 * @param {object} [breaks] what to get wrong (at most one, for a test that shows one failing step).
 * @param {boolean} [breaks.relativeResourceMetadata] the challenge's resource_metadata is a relative URL.
 * @param {boolean} [breaks.metadataAtWrongPath] no resource_metadata in the challenge, and the metadata
 *   served only at /mcp/.well-known/oauth-protected-resource (appended to the path instead of inserted
 *   before it), where no client looks.
 * @param {boolean} [breaks.resourceMismatch] the metadata's `resource` is the origin, not the /mcp URL.
 * @param {boolean} [breaks.noCorsExpose] the 401 to a browser origin lacks Access-Control-Expose-Headers.
 * @param {boolean} [breaks.noS256] the authorization server advertises only the `plain` PKCE method.
 * @returns {Promise<{url: string, base: string, token: string, origin: string, requests: string[], close: () => Promise<void>}>}
 */
export async function startBrokenMcp(breaks = {}) {
  const token = `broken-mcp-${randomBytes(24).toString('base64url')}`;
  const browserOrigin = 'https://claude.ai';
  const { publicKey } = generateKeyPairSync('ed25519');
  const jwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', use: 'sig', alg: 'EdDSA' }] };
  const requests = [];
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const base = `http://127.0.0.1:${server.address().port}`;
  const url = `${base}/mcp`;
  const issuer = `${base}/tenant`;
  const prmInserted = `${base}/.well-known/oauth-protected-resource/mcp`;
  const prm = {
    resource: breaks.resourceMismatch ? base : url,
    authorization_servers: [issuer],
    scopes_supported: ['mcp:tools'],
    bearer_methods_supported: ['header'],
  };
  const asMetadata = {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    registration_endpoint: `${issuer}/register`,
    jwks_uri: `${issuer}/jwks`,
    response_types_supported: ['code'],
    grant_types_supported: ['authorization_code', 'refresh_token'],
    code_challenge_methods_supported: breaks.noS256 ? ['plain'] : ['S256'],
    client_id_metadata_document_supported: true,
    scopes_supported: ['mcp:tools', 'offline_access'],
  };
  const prmPaths = breaks.metadataAtWrongPath
    ? ['/mcp/.well-known/oauth-protected-resource']
    : ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'];
  const challengeParams = [];
  if (breaks.relativeResourceMetadata) challengeParams.push('resource_metadata="/.well-known/oauth-protected-resource/mcp"');
  else if (!breaks.metadataAtWrongPath) challengeParams.push(`resource_metadata="${prmInserted}"`);
  challengeParams.push('scope="mcp:tools"');

  const json = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };

  server.on('request', async (req, res) => {
    const path = new URL(req.url, base).pathname;
    requests.push(`${req.method} ${path}`);
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const body = Buffer.concat(chunks).toString('utf8');

    if (req.method === 'GET' && prmPaths.includes(path)) return json(res, 200, prm, { 'access-control-allow-origin': '*' });
    if (req.method === 'GET' && path === '/.well-known/oauth-authorization-server/tenant') return json(res, 200, asMetadata);
    if (req.method === 'GET' && path === '/tenant/jwks') return json(res, 200, jwks);
    if (path !== '/mcp') return json(res, 404, { error: 'not_found' });

    // CORS for the one browser origin this endpoint serves.
    const origin = req.headers.origin;
    const cors = origin === browserOrigin ? { 'access-control-allow-origin': origin, vary: 'Origin' } : {};
    if (origin && !cors['access-control-allow-origin']) return json(res, 403, { error: 'origin not allowed' });
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        ...cors,
        'access-control-allow-methods': 'GET, POST, DELETE',
        'access-control-allow-headers': 'Authorization, Content-Type, Accept, Mcp-Session-Id, Mcp-Protocol-Version',
        'access-control-max-age': '600',
      });
      return res.end();
    }
    if (origin && !breaks.noCorsExpose) cors['access-control-expose-headers'] = 'WWW-Authenticate, Mcp-Session-Id';

    if (req.headers.authorization !== `Bearer ${token}`) {
      return json(res, 401, { error: 'unauthorized' }, { ...cors, 'www-authenticate': `Bearer ${challengeParams.join(', ')}` });
    }
    let message;
    try {
      message = JSON.parse(body);
    } catch {
      return json(res, 400, { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'parse error' } }, cors);
    }
    if (message.method === 'initialize') {
      return json(
        res,
        200,
        { jsonrpc: '2.0', id: message.id, result: { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'broken-mcp', version: '0' } } },
        { ...cors, 'mcp-session-id': 'session-1' },
      );
    }
    if (req.headers['mcp-session-id'] !== 'session-1') return json(res, 400, { jsonrpc: '2.0', id: message.id ?? null, error: { code: -32600, message: 'no session' } }, cors);
    if (message.method === 'notifications/initialized') {
      res.writeHead(202, cors);
      return res.end();
    }
    if (message.method === 'tools/list') {
      // An SSE answer with a notification first, as streaming servers send.
      res.writeHead(200, { ...cors, 'content-type': 'text/event-stream' });
      res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: 'listing' } })}\n\n`);
      res.write(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: message.id, result: { tools: [{ name: 'echo', inputSchema: { type: 'object' } }, { name: 'add', inputSchema: { type: 'object' } }] } })}\n\n`);
      return res.end();
    }
    return json(res, 200, { jsonrpc: '2.0', id: message.id, error: { code: -32601, message: 'method not found' } }, cors);
  });

  const sockets = new Set();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  return {
    url,
    base,
    token,
    origin: browserOrigin,
    requests,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
