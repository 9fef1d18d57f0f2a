// A real browser calling the gate cross-origin: headless Chromium (the
// Debian package, /usr/bin/chromium, installed by scripts/setup.sh) driven by
// playwright-core. A page served from http://localhost:<port> (another
// origin than the gate's http://127.0.0.1:<port>) uses fetch, as the MCP
// Inspector does: it reads the 401 challenge's WWW-Authenticate (exposed by
// the gate's CORS headers), follows resource_metadata to the RFC 9728
// metadata, then, with a token from the real authorization server, completes
// initialize + tools/call (preflights answered by the gate). From an origin
// not in MCP_ALLOWED_ORIGINS the browser's fetch fails and the origin server
// is never reached (MCP transport: Origin validation, DNS rebinding).
// No Chromium is a failure, never a skip: CI installs it.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { SCOPES, startAuthorizationServer } from '../demo/authorization-server.mjs';
import { closeAll, startStack } from './helpers/stack.mjs';
import { assertNoSecrets } from './helpers/http.mjs';

const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// The page's own MCP-over-fetch client, as a browser-based MCP client would have it.
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>browser MCP client</title></head><body>
<script>
const JSON_RPC = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
async function rpcResult(response) {
  const text = await response.text();
  if ((response.headers.get('content-type') || '').startsWith('text/event-stream')) {
    const data = text.split('\\n').filter((l) => l.startsWith('data:')).map((l) => JSON.parse(l.slice(5)));
    return data.find((m) => 'result' in m || 'error' in m);
  }
  return JSON.parse(text);
}
window.mcp = {
  // No token: read the challenge from script, then the metadata it points at.
  async discover(url) {
    const response = await fetch(url, { method: 'POST', headers: JSON_RPC, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '0' } } }) });
    const challenge = response.headers.get('www-authenticate');
    const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge || '')?.[1];
    const metadata = metadataUrl ? await (await fetch(metadataUrl)).json() : null;
    return { status: response.status, challenge, metadataUrl, metadata };
  },
  // With a token: initialize, initialized, tools/call.
  async callTool(url, token, name, args) {
    const headers = { ...JSON_RPC, authorization: 'Bearer ' + token };
    const init = await fetch(url, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'browser', version: '0' } } }) });
    const session = init.headers.get('mcp-session-id');
    const initialized = await rpcResult(init);
    const sessionHeaders = { ...headers, 'mcp-session-id': session, 'mcp-protocol-version': initialized.result.protocolVersion };
    const note = await fetch(url, { method: 'POST', headers: sessionHeaders, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) });
    await note.text();
    const call = await fetch(url, { method: 'POST', headers: sessionHeaders, body: JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name, arguments: args } }) });
    return { initStatus: init.status, session, noteStatus: note.status, callStatus: call.status, call: await rpcResult(call) };
  },
  // Any fetch; a CORS failure comes back as the error's name and message.
  async tryFetch(url, init) {
    try {
      const response = await fetch(url, init);
      return { ok: true, status: response.status };
    } catch (error) {
      return { ok: false, error: error.name + ': ' + error.message };
    }
  },
};
</script></body></html>`;

async function startPageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(PAGE);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: server.address().port, close: () => new Promise((resolve) => server.close(resolve)) };
}

describe('a real browser (headless Chromium) calling the gate cross-origin', () => {
  const closers = [];
  let as;
  let stack;
  let browser;
  let pagePort;
  let allowedOrigin;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup.sh (installs the Debian chromium package)`);
    const pages = await startPageServer();
    closers.push(() => pages.close());
    pagePort = pages.port;
    allowedOrigin = `http://localhost:${pagePort}`;
    const resources = [];
    as = await startAuthorizationServer({ resources, accessTokenFormat: 'jwt' });
    closers.push(() => as.close());
    stack = await startStack({
      bindings: ({ resource }) => {
        resources.push(resource);
        return {
          OAUTH_ISSUER: as.issuer,
          OAUTH_JWKS_URI: undefined,
          MCP_SCOPES_SUPPORTED: SCOPES,
          MCP_REQUIRED_SCOPES: 'invoices:read',
          MCP_ALLOWED_ORIGINS: allowedOrigin,
        };
      },
    });
    closers.push(() => stack.close());
    const profile = mkdtempSync(join(tmpdir(), 'portcullis-chromium-'));
    closers.push(() => rmSync(profile, { recursive: true, force: true }));
    browser = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    closers.push(() => browser.close());
  });

  after(async () => {
    await closeAll(closers);
  });

  async function openPage(origin) {
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    assert.equal(await page.evaluate(() => location.origin), origin);
    return page;
  }

  test('from an allowed origin: reads the 401 challenge, then completes a tool call with a token', async () => {
    const page = await openPage(allowedOrigin);
    try {
      assert.notEqual(allowedOrigin, new URL(stack.resource).origin, 'the page is cross-origin to the gate');
      const discovered = await page.evaluate((url) => window.mcp.discover(url), stack.resource);
      assert.equal(discovered.status, 401);
      assert.match(discovered.challenge, /^Bearer /, 'the script can read WWW-Authenticate');
      assert.equal(discovered.metadataUrl, `${stack.base}/.well-known/oauth-protected-resource/mcp`);
      assert.equal(discovered.metadata.resource, stack.resource);
      assert.deepEqual(discovered.metadata.authorization_servers, [as.issuer]);

      // A token from the real authorization server, handed to the page.
      const token = await as.token({ scope: 'invoices:read' });
      const before = stack.origin.requests.length;
      const outcome = await page.evaluate(
        ([url, t]) => window.mcp.callTool(url, t, 'lookup_invoice', { invoice_id: 'INV-1001' }),
        [stack.resource, token],
      );
      assert.equal(outcome.initStatus, 200);
      assert.ok(outcome.session, 'the script can read Mcp-Session-Id');
      assert.equal(outcome.noteStatus, 202);
      assert.equal(outcome.callStatus, 200);
      assert.match(outcome.call.result.content[0].text, /Invoice INV-1001: ACME Corp/);
      const reached = stack.origin.requests.slice(before);
      assert.ok(reached.some((r) => r.body.includes('"lookup_invoice"')));
      assert.ok(reached.every((r) => r.method !== 'OPTIONS'), 'preflights are answered by the gate');
      assertNoSecrets(JSON.stringify(stack.origin.requests), [token], 'what the origin received');
      const preflights = stack.gate.requestLogs().filter((l) => l.method === 'OPTIONS');
      assert.ok(preflights.length >= 1, 'Chromium sent CORS preflights');
    } finally {
      await page.close();
    }
  });

  test('from an origin not allowed: the fetch fails and the origin server is never reached', async () => {
    const disallowed = `http://127.0.0.1:${pagePort}`;
    const page = await openPage(disallowed);
    try {
      const token = await as.token({ scope: 'invoices:read' });
      const before = stack.origin.requests.length;
      const logsBefore = stack.gate.requestLogs().length;
      const withToken = await page.evaluate(
        ([url, t]) => window.mcp.callTool(url, t, 'lookup_invoice', { invoice_id: 'INV-1001' }).then((r) => ({ ok: true, r }), (e) => ({ ok: false, error: `${e.name}: ${e.message}` })),
        [stack.resource, token],
      );
      assert.equal(withToken.ok, false, `the cross-origin call must fail: ${JSON.stringify(withToken)}`);
      assert.match(withToken.error, /TypeError/);
      // A simple request (no preflight) reaches the gate, is refused with 403, and is unreadable.
      const simple = await page.evaluate((url) => window.mcp.tryFetch(url, { method: 'GET' }), stack.resource);
      assert.equal(simple.ok, false, JSON.stringify(simple));
      const discovered = await page.evaluate((url) => window.mcp.tryFetch(url, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' }), stack.resource);
      assert.equal(discovered.ok, false, JSON.stringify(discovered));
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(stack.origin.requests.length, before, 'the origin server was never reached');
      const refusals = stack.gate.requestLogs().slice(logsBefore);
      assert.ok(refusals.length >= 1, 'the browser did reach the gate');
      assert.ok(refusals.every((l) => l.status === 403), JSON.stringify(refusals));
    } finally {
      await page.close();
    }
  });
});
