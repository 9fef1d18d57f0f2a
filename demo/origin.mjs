// The demo origin: a real Streamable HTTP MCP server (official SDK,
// stateful sessions, SSE responses) standing behind the gate. It records
// every request it receives, headers included, so tests can check what the
// gate let through.
//
//   import { startOrigin } from './demo/origin.mjs';
//   const origin = await startOrigin();          // http://127.0.0.1:<port>/mcp
//   ...
//   origin.requests   // [{ method, path, query, headers, body, at, bodyDoneAt }]
//   await origin.close();
//
// With `startOrigin({ assertion: { jwksUrl, issuer, audience } })` (or, run
// standalone, ASSERTION_JWKS_URL, ASSERTION_ISSUER, ASSERTION_AUDIENCE) it
// checks the gate's Portcullis-Assertion on every request to <path> and
// below with examples/assertion/verify.mjs, before anything else: a refusal
// is answered 401 {"error":"invalid_assertion","reason":...}, and each
// request's record gets `assertion: { ok: true, claims } | { ok: false, reason }`.
//
// Routes (127.0.0.1 only):
//   POST|GET|DELETE <path>       MCP Streamable HTTP endpoint
//   GET|POST|DELETE <path>/echo  answers with what it received, as JSON (for header and path tests)
//   anything else               404, still recorded
//
// Tools: lookup_invoice (read), void_invoice (write: needs invoices:write in
// X-Auth-Scopes), countdown (slow: one notification every interval before
// its result, to watch SSE streaming) and whoami (the identity the gate sent;
// with assertions on, also what the verified assertion says).

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { decodeJwt } from 'jose';
import { AssertionError, createAssertionVerifier } from '../examples/assertion/verify.mjs';

const LOOPBACK = '127.0.0.1';
const MAX_BODY_BYTES = 1024 * 1024;

const INVOICES = {
  'INV-1001': { customer: 'ACME Corp', amount: '1250.00', currency: 'EUR', status: 'open' },
  'INV-1002': { customer: 'Globex', amount: '89.90', currency: 'EUR', status: 'paid' },
  'INV-1003': { customer: 'Initech', amount: '4300.00', currency: 'USD', status: 'open' },
};

/** One MCP server per session, sharing the origin's invoice book. */
function createMcpServer({ invoices, countdownIntervalMs, assertions }) {
  const server = new McpServer(
    { name: 'portcullis-demo-origin', version: '0.1.0' },
    { capabilities: { logging: {} } },
  );

  server.registerTool(
    'lookup_invoice',
    {
      title: 'Look up an invoice',
      description: 'Returns one invoice by id (read-only).',
      inputSchema: { invoice_id: z.string().describe('Invoice id, e.g. INV-1001') },
      annotations: { readOnlyHint: true },
    },
    async ({ invoice_id }) => {
      const invoice = invoices.get(invoice_id);
      if (!invoice) return { isError: true, content: [{ type: 'text', text: `No invoice ${invoice_id}` }] };
      return {
        content: [
          {
            type: 'text',
            text: `Invoice ${invoice_id}: ${invoice.customer}, ${invoice.amount} ${invoice.currency}, ${invoice.status}`,
          },
        ],
      };
    },
  );

  server.registerTool(
    'void_invoice',
    {
      title: 'Void an invoice',
      description: 'Marks an invoice as void. Needs the invoices:write scope.',
      inputSchema: {
        invoice_id: z.string(),
        reason: z.string().optional(),
      },
      annotations: { destructiveHint: true, idempotentHint: true },
    },
    async ({ invoice_id, reason }, extra) => {
      // The origin trusts the identity the gate verified, never the client.
      const scopes = headerValue(extra.requestInfo?.headers, 'x-auth-scopes').split(' ').filter(Boolean);
      if (!scopes.includes('invoices:write')) {
        return { isError: true, content: [{ type: 'text', text: 'Refused: the invoices:write scope is required' }] };
      }
      const invoice = invoices.get(invoice_id);
      if (!invoice) return { isError: true, content: [{ type: 'text', text: `No invoice ${invoice_id}` }] };
      invoice.status = 'void';
      const by = headerValue(extra.requestInfo?.headers, 'x-auth-subject') || 'unknown';
      return { content: [{ type: 'text', text: `Invoice ${invoice_id} voided by ${by}${reason ? ` (${reason})` : ''}` }] };
    },
  );

  server.registerTool(
    'countdown',
    {
      title: 'Count down slowly',
      description: 'Sends one progress and one log notification per step, spaced out in time, then returns.',
      inputSchema: {
        from: z.number().int().min(1).max(20).default(5),
        interval_ms: z.number().int().min(10).max(5000).optional(),
      },
    },
    async ({ from, interval_ms }, extra) => {
      const interval = interval_ms ?? countdownIntervalMs;
      const progressToken = extra._meta?.progressToken;
      for (let step = 1; step <= from; step += 1) {
        await sleep(interval, extra.signal);
        const left = from - step;
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress: step, total: from, message: `${left} left` },
          });
        }
        await extra.sendNotification({
          method: 'notifications/message',
          params: { level: 'info', logger: 'countdown', data: `T-${left}` },
        });
      }
      return { content: [{ type: 'text', text: `Liftoff after ${from} steps` }] };
    },
  );

  server.registerTool(
    'whoami',
    {
      title: 'Who am I',
      description: 'Returns the identity headers the origin received from the gate.',
      inputSchema: {},
      annotations: { readOnlyHint: true },
    },
    async (_args, extra) => {
      const headers = extra.requestInfo?.headers;
      const identity = {
        subject: headerValue(headers, 'x-auth-subject') || null,
        client_id: headerValue(headers, 'x-auth-client-id') || null,
        scopes: headerValue(headers, 'x-auth-scopes') || null,
        // Only the scheme: the origin credential is a secret.
        authorization_scheme: headerValue(headers, 'authorization').split(' ')[0] || null,
      };
      if (assertions) {
        // Verified before the request reached the MCP server, so only decoded here.
        const claims = decodeJwt(headerValue(headers, 'portcullis-assertion'));
        identity.assertion = {
          sub: claims.sub ?? null,
          client_id: claims.client_id ?? null,
          scope: claims.scope ?? null,
          mcp_name: claims.mcp_name ?? null,
        };
      }
      return { content: [{ type: 'text', text: JSON.stringify(identity) }], structuredContent: identity };
    },
  );

  return server;
}

/**
 * Starts the origin MCP server.
 *
 * @param {object} [options]
 * @param {number} [options.port=0] TCP port on 127.0.0.1 (0: any free port).
 * @param {string} [options.path='/mcp'] the MCP endpoint path.
 * @param {number} [options.countdownIntervalMs=300] default spacing of countdown notifications.
 * @param {boolean} [options.log=false] print one line per request to stderr.
 * @param {boolean} [options.jsonResponse=false] answer requests with plain JSON instead of an SSE stream.
 * @param {{ jwksUrl: string, issuer: string, audience?: string }} [options.assertion] verify the gate's
 *   Portcullis-Assertion on every request to `path` and below (off when not given); the audience
 *   defaults to the origin's own URL.
 */
export async function startOrigin({ port = 0, path = '/mcp', countdownIntervalMs = 300, log = false, jsonResponse = false, assertion } = {}) {
  const invoices = new Map(Object.entries(INVOICES).map(([id, invoice]) => [id, { ...invoice }]));
  /** sessionId -> { transport, server } */
  const sessions = new Map();
  /** Every request received: { method, path, query, headers, body, at, bodyDoneAt }. */
  const requests = [];
  const sockets = new Set();
  // Made once the origin listens: its audience is, by default, its own URL.
  let verifier;

  const httpServer = http.createServer((req, res) => {
    handle(req, res).catch((error) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: 'Internal error' }, id: null }));
      } else {
        res.destroy(error);
      }
    });
  });
  httpServer.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req, res) {
    const url = new URL(req.url, 'http://origin.invalid');
    // Recorded on arrival, before the body is read: `at` is when the headers
    // came in, `bodyDoneAt` when the last body byte did.
    const record = { method: req.method, path: url.pathname, query: url.search, headers: { ...req.headers }, body: '', at: Date.now(), bodyDoneAt: undefined };
    requests.push(record);
    const verifying = verifier !== undefined && (url.pathname === path || url.pathname.startsWith(`${path}/`));
    // The assertion covers the bytes received, so with it on a body is read
    // whatever the method.
    const hasBody = verifying || req.method === 'POST' || req.method === 'PUT' || req.method === 'PATCH';
    const raw = hasBody ? await readBody(req) : Buffer.alloc(0);
    record.body = raw.toString('utf8');
    record.bodyDoneAt = Date.now();
    const body = record.body;
    if (verifying) {
      try {
        const claims = await verifier.verify({
          method: req.method,
          url: `http://${LOOPBACK}:${httpServer.address().port}${req.url}`,
          headers: req.headers,
          body: raw,
        });
        record.assertion = { ok: true, claims };
      } catch (error) {
        if (!(error instanceof AssertionError)) throw error;
        record.assertion = { ok: false, reason: error.reason };
      }
    }
    if (log) {
      const checked = verifying ? ` assertion=${record.assertion.ok ? 'ok' : record.assertion.reason}` : '';
      process.stderr.write(`origin: ${req.method} ${url.pathname}${url.search} session=${req.headers['mcp-session-id'] ?? '-'}${checked}\n`);
    }
    if (verifying && !record.assertion.ok) {
      return json(res, 401, { error: 'invalid_assertion', reason: record.assertion.reason });
    }

    if (url.pathname === `${path}/echo`) {
      return json(res, 200, { method: record.method, path: record.path, query: record.query, headers: record.headers, body });
    }
    if (url.pathname !== path) return json(res, 404, { error: 'not_found' });
    if (!['GET', 'POST', 'DELETE'].includes(req.method)) {
      res.setHeader('allow', 'GET, POST, DELETE');
      return jsonRpcError(res, 405, -32000, 'Method not allowed');
    }

    let parsed;
    if (req.method === 'POST') {
      try {
        parsed = JSON.parse(body);
      } catch {
        return jsonRpcError(res, 400, -32700, 'Parse error');
      }
    }

    const sessionId = req.headers['mcp-session-id'];
    if (sessionId) {
      const session = sessions.get(sessionId);
      if (!session) return jsonRpcError(res, 404, -32001, 'Session not found');
      return session.transport.handleRequest(req, res, parsed);
    }
    if (req.method === 'POST' && isInitializeRequest(parsed)) {
      const server = createMcpServer({ invoices, countdownIntervalMs, assertions: verifier !== undefined });
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: jsonResponse,
        onsessioninitialized: (id) => {
          sessions.set(id, { transport, server });
        },
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await server.connect(transport);
      return transport.handleRequest(req, res, parsed);
    }
    return jsonRpcError(res, 400, -32000, 'Bad Request: no valid session id');
  }

  await new Promise((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(port, LOOPBACK, () => {
      httpServer.off('error', reject);
      resolve();
    });
  });
  const actualPort = httpServer.address().port;
  const url = `http://${LOOPBACK}:${actualPort}${path}`;
  if (assertion) {
    verifier = createAssertionVerifier({ jwksUrl: assertion.jwksUrl, issuer: assertion.issuer, audience: assertion.audience ?? url });
  }

  let closing;
  async function close() {
    closing ??= (async () => {
      const closed = new Promise((resolve) => httpServer.close(() => resolve()));
      await Promise.allSettled([...sessions.values()].map(({ transport }) => transport.close()));
      sessions.clear();
      for (const socket of sockets) socket.destroy();
      await closed;
    })();
    return closing;
  }

  return {
    url,
    port: actualPort,
    requests,
    sessions,
    invoices,
    /** Requests whose path is the MCP endpoint or below it. */
    mcpRequests: () => requests.filter((r) => r.path === path || r.path.startsWith(`${path}/`)),
    close,
  };
}

function headerValue(headers, name) {
  if (!headers) return '';
  const value = typeof headers.get === 'function' ? headers.get(name) : headers[name];
  return Array.isArray(value) ? value.join(', ') : (value ?? '');
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function json(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function jsonRpcError(res, status, code, message) {
  json(res, status, { jsonrpc: '2.0', error: { code, message }, id: null });
}

async function readBody(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

// Standalone: `node demo/origin.mjs` listens on PORT (default 8788); with
// ASSERTION_JWKS_URL, ASSERTION_ISSUER and ASSERTION_AUDIENCE (all three) it
// verifies the gate's assertions.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { ASSERTION_JWKS_URL: jwksUrl, ASSERTION_ISSUER: issuer, ASSERTION_AUDIENCE: audience } = process.env;
  let assertion;
  if (jwksUrl || issuer || audience) {
    if (!jwksUrl || !issuer || !audience) {
      console.error('origin: set all of ASSERTION_JWKS_URL, ASSERTION_ISSUER and ASSERTION_AUDIENCE, or none');
      process.exit(2);
    }
    assertion = { jwksUrl, issuer, audience };
  }
  const origin = await startOrigin({ port: Number(process.env.PORT ?? 8788), log: true, assertion });
  console.log(`origin MCP server at ${origin.url}${assertion ? ` (verifying assertions of ${issuer} for ${audience})` : ''}`);
  const stop = async () => {
    await origin.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
