#!/usr/bin/env node
// The local demo stack: a real OAuth 2.1 authorization server (oidc-provider:
// authorization code + PKCE, client credentials, refresh tokens, dynamic
// client registration, RFC 8707 resource indicators issuing RFC 9068 JWT
// access tokens for the gate's resource), the demo MCP origin (official SDK),
// and the gate in front of it under `wrangler dev` with a local KV namespace,
// configured with --var flags over wrangler.toml to trust that authorization
// server (keys found by OpenID Connect discovery). Prints the MCP URL for a
// client such as the MCP Inspector and a one-line command that gets a token
// and calls a tool. Ctrl-C stops everything.
//
//   npm start                          (scripts/dev.sh: set-up, build, then this)
//   npm start -- --routes              (two MCP servers behind one gate: MCP_ROUTES with
//                                       /billing/mcp and /tickets/mcp, each its own origin)
//   npm start -- --dpop                (DPoP required, RFC 9449: DPOP=dpop with server nonces;
//                                       `node demo/dpop-client.mjs` gets a DPoP-bound token and
//                                       calls a tool with a proof per request)
//   node scripts/dev.mjs               (when build/ is already built)
//   node scripts/dev.mjs token [--scope "invoices:read"]
//                                      (an access token from the running stack's authorization
//                                       server, client credentials grant, printed alone)
//   node scripts/dev.mjs call [TOOL] [JSON_ARGUMENTS] [--scope S] [--route billing|tickets]
//                                      (the MCP SDK client with its own OAuth client credentials
//                                       support, through the gate: default lookup_invoice INV-1001)
//
// Ports (127.0.0.1 only): GATE_PORT 8787, ORIGIN_PORT 8788, AUTH_PORT 8789, and with --routes
// SECOND_ORIGIN_PORT 8790 for the tickets origin.

import { spawn } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';
const GATE_PORT = Number(process.env.GATE_PORT ?? 8787);
const ORIGIN_PORT = Number(process.env.ORIGIN_PORT ?? 8788);
const AUTH_PORT = Number(process.env.AUTH_PORT ?? process.env.ISSUER_PORT ?? 8789);
const SECOND_ORIGIN_PORT = Number(process.env.SECOND_ORIGIN_PORT ?? 8790);
const GATE = `http://${HOST}:${GATE_PORT}`;
const RESOURCE = `${GATE}/mcp`;
const SCOPES = 'invoices:read invoices:write';
/**
 * The demo's rate limits (RATE_LIMITS), counted by the Rate Limiting
 * bindings wrangler.toml declares: void_invoice 3 times a minute per user,
 * and 100 unverified tokens per 10 s per client address.
 */
const RATE_LIMITS = JSON.stringify([
  { binding: 'RL_TOOL_PER_USER', key: 'subject+tool', tools: ['void_invoice'], name: 'void_invoice per user' },
  { binding: 'RL_UNVERIFIED_PER_ADDRESS', key: 'address', period: 10, name: 'unverified tokens per address' },
]);
// Where the gate publishes the keys of its origin assertions; the demo origins verify every request with them.
const ASSERTION_JWKS = `${GATE}/.well-known/portcullis/jwks.json`;
const VERIFY_ASSERTIONS = { jwksUrl: ASSERTION_JWKS, issuer: GATE };

/** The gate's assertion signing key: an Ed25519 private JWK made up for this run only. */
function assertionKey() {
  return JSON.stringify({ ...generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' }), kid: `demo-${randomBytes(4).toString('hex')}` });
}
// The MCP Inspector's default origins: allowed by the gate and at the authorization server's /reg.
const INSPECTOR_ORIGINS = ['http://localhost:6274', 'http://127.0.0.1:6274'];
const READY_TIMEOUT_MS = 5 * 60 * 1000; // wrangler runs the [build] command first
// Where the running stack leaves the demo client's credentials for `token`
// and `call` (another process): gitignored, owner-only, removed on stop.
const STATE_FILE = process.env.PORTCULLIS_DEV_STATE ?? join(ROOT, '.wrangler', `portcullis-dev-${GATE_PORT}.json`);

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'token') {
  await printToken(rest);
} else if (mode === 'call') {
  await callTool(rest);
} else if (mode === undefined) {
  await runStack();
} else if (mode === '--routes') {
  await runStack({ routes: true });
} else if (mode === '--dpop') {
  await runStack({ dpop: true });
} else {
  console.error(`usage: node scripts/dev.mjs [--routes | --dpop | token [--scope S] [--route R] | call [TOOL] [JSON_ARGUMENTS] [--scope S] [--route R]]`);
  process.exit(2);
}

/** The running stack's state, or exit with a hint. */
function readState() {
  try {
    return JSON.parse(readFileSync(STATE_FILE, 'utf8'));
  } catch {
    console.error(`No demo stack running on ${GATE} (no ${STATE_FILE}): start it first with \`npm start\`.`);
    process.exit(1);
  }
}

/** `node scripts/dev.mjs token`: client credentials at the running authorization server; prints the token alone. */
async function printToken(args) {
  const { values } = parseArgs({ args, options: { scope: { type: 'string', default: SCOPES }, route: { type: 'string' } } });
  const state = readState();
  const resource = resourceOf(state, values.route);
  if (state.dpop) console.error('(This stack requires DPoP: a token from here is a Bearer token, which the gate refuses; `node demo/dpop-client.mjs` gets a DPoP-bound one.)');
  let response;
  try {
    response = await fetch(state.tokenEndpoint, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(state.clientId)}:${encodeURIComponent(state.clientSecret)}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: values.scope, resource }),
      signal: AbortSignal.timeout(5000),
    });
  } catch {
    console.error(`No authorization server at ${state.issuer}: start the stack first with \`npm start\`.`);
    process.exit(1);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    console.error(`The authorization server refused: ${response.status} ${JSON.stringify(body)}`);
    process.exit(1);
  }
  console.log(body.access_token);
}

/**
 * `node scripts/dev.mjs call`: the official MCP SDK client, starting from the
 * gate's URL: 401 → metadata → token (client credentials) → initialize → tools/call.
 */
async function callTool(args) {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { scope: { type: 'string', default: SCOPES }, route: { type: 'string' } },
  });
  const [name = 'lookup_invoice', json = '{"invoice_id":"INV-1001"}'] = positionals;
  let toolArguments;
  try {
    toolArguments = JSON.parse(json);
  } catch {
    console.error(`The tool arguments must be a JSON object, e.g. '{"invoice_id":"INV-1001"}'.`);
    process.exit(2);
  }
  if (readState().dpop) {
    // The SDK client sends Bearer tokens, which a DPoP stack refuses: the DPoP client instead.
    const client = spawn(process.execPath, [join(ROOT, 'demo', 'dpop-client.mjs'), name, json], { cwd: ROOT, stdio: 'inherit' });
    process.exitCode = await new Promise((resolve) => client.on('exit', (code) => resolve(code ?? 1)));
    return;
  }
  const state = readState();
  const { Client } = await import('@modelcontextprotocol/sdk/client/index.js');
  const { StreamableHTTPClientTransport } = await import('@modelcontextprotocol/sdk/client/streamableHttp.js');
  const { ClientCredentialsProvider } = await import('@modelcontextprotocol/sdk/client/auth-extensions.js');
  const provider = new ClientCredentialsProvider({
    clientId: state.clientId,
    clientSecret: state.clientSecret,
    expectedIssuer: state.issuer,
    scope: values.scope,
  });
  const transport = new StreamableHTTPClientTransport(new URL(resourceOf(state, values.route)), { authProvider: provider });
  const client = new Client({ name: 'portcullis-dev-call', version: '0' });
  try {
    await client.connect(transport);
    const result = await client.callTool({ name, arguments: toolArguments });
    for (const part of result.content ?? []) console.log(part.type === 'text' ? part.text : JSON.stringify(part));
    process.exitCode = result.isError ? 1 : 0;
  } catch (error) {
    console.error(`The call failed: ${error?.message ?? error}`);
    process.exitCode = 1;
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close().catch(() => {});
  }
}

/** The resource of the named route (`--routes` stacks), or the stack's only one. */
function resourceOf(state, route) {
  if (route === undefined) return state.resource;
  const resource = state.routes?.[route];
  if (!resource) {
    console.error(`No route ${JSON.stringify(route)} in the running stack (routes: ${Object.keys(state.routes ?? {}).join(', ') || 'none; start it with npm start -- --routes'}).`);
    process.exit(2);
  }
  return resource;
}

async function runStack({ routes = false, dpop = false } = {}) {
  if (routes) return runRoutesStack();
  if (!existsSync(join(ROOT, 'build', 'index.js'))) {
    console.error('build/index.js is missing: run `npm run build` first (or use `npm start`).');
    process.exit(1);
  }
  const { startOrigin } = await import('../demo/origin.mjs');
  const { startAuthorizationServer } = await import('../demo/authorization-server.mjs');

  const origin = await startOrigin({ port: ORIGIN_PORT, log: true, assertion: VERIFY_ASSERTIONS });
  const as = await startAuthorizationServer({ resources: [RESOURCE], accessTokenFormat: 'jwt', port: AUTH_PORT, corsOrigins: INSPECTOR_ORIGINS, log: true });
  // A throwaway credential for the origin, made up for this run only.
  const originAuthorization = `Bearer demo-origin-${randomBytes(16).toString('hex')}`;
  mkdirSync(dirname(STATE_FILE), { recursive: true });
  writeFileSync(
    STATE_FILE,
    JSON.stringify({ resource: RESOURCE, issuer: as.issuer, tokenEndpoint: as.tokenEndpoint, clientId: as.agentClient.id, clientSecret: as.agentClient.secret, ...(dpop ? { dpop: true } : {}) }),
    { mode: 0o600 },
  );

  const vars = {
    MCP_RESOURCE: RESOURCE,
    MCP_ORIGIN: origin.url,
    // Keys: the issuer's OpenID Connect discovery document names its jwks_uri.
    OAUTH_ISSUER: as.issuer,
    MCP_SCOPES_SUPPORTED: SCOPES,
    MCP_REQUIRED_SCOPES: 'invoices:read',
    MCP_RESOURCE_NAME: 'portcullis demo invoices',
    // Per-tool scopes: a token with only invoices:read does not see void_invoice.
    MCP_TOOL_SCOPES: JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' }),
    // The MCP Inspector's default origins.
    MCP_ALLOWED_ORIGINS: INSPECTOR_ORIGINS.join(' '),
    ORIGIN_AUTHORIZATION: originAuthorization,
    // Seals the origin's requestState to its user; made up for this run only.
    MCP_STATE_SECRET: randomBytes(32).toString('base64url'),
    // A signed assertion on every forward, which the demo origin verifies.
    ASSERTION_KEY: assertionKey(),
    ORIGIN_ASSERTION_AUDIENCE: origin.url,
    RATE_LIMITS,
    ...(dpop ? dpopVars() : {}),
  };
  const gate = runGate(vars, () => Promise.allSettled([origin.close(), as.close()]));
  await waitForGate('/.well-known/oauth-protected-resource/mcp');
  if (gate.stopping()) return;
  if (dpop) return printDpopBanner({ origin, as, replayStore: vars.DPOP_REPLAY_STORE });
  const token = await as.token({ scope: SCOPES });
  printBanner({ token, origin, as });
}

/**
 * `--dpop`: DPoP required on the route, with server nonces (a secret made up
 * for this run), and the replay store in the Durable Object when
 * wrangler.toml binds one (else isolate memory).
 */
function dpopVars() {
  let toml = '';
  try {
    toml = readFileSync(join(ROOT, 'wrangler.toml'), 'utf8');
  } catch {
    // no wrangler.toml: wrangler dev fails on its own
  }
  const durableObject = /^\s*name\s*=\s*"DPOP_REPLAY"/m.test(toml) && /class_name\s*=\s*"DpopReplay"/.test(toml);
  return {
    DPOP: 'dpop',
    DPOP_NONCE_SECRET: randomBytes(32).toString('base64url'),
    ...(durableObject ? { DPOP_REPLAY_STORE: 'DPOP_REPLAY' } : {}),
  };
}

function printDpopBanner({ origin, as, replayStore }) {
  const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
  const portPrefix = GATE_PORT === 8787 ? '' : `GATE_PORT=${GATE_PORT} `;
  console.log(`
${bold('portcullis demo stack is up, with DPoP required (RFC 9449)')}
  MCP endpoint, behind the gate:  ${RESOURCE}   (DPOP=dpop, server nonces on, replay store: ${replayStore ?? 'isolate memory'})
  resource metadata:              ${GATE}/.well-known/oauth-protected-resource/mcp
                                  (dpop_signing_alg_values_supported, dpop_bound_access_tokens_required: true)
  authorization server:           ${as.issuer}  (oidc-provider; a DPoP proof at its token endpoint gets a
                                  DPoP-bound token: token_type DPoP, cnf.jkt = the key's thumbprint)
  origin MCP server (direct):     ${origin.url}

${bold('One line')}: a key, a DPoP-bound token (client credentials with a proof), the same token refused as
Bearer, then initialize, tools/list and a tool call through the gate with a new proof for each request:
${portPrefix}node demo/dpop-client.mjs lookup_invoice '{"invoice_id":"INV-1001"}'
(demo/dpop-client.mjs is the whole client, in jose and fetch: read it to see what a proof holds.
\`node scripts/dev.mjs call\` runs it too.)

${bold('By hand')}: no credentials gets a DPoP challenge and a nonce:
curl -si ${RESOURCE} | grep -i -e '^www-authenticate' -e '^dpop-nonce'

A Bearer token is refused here (401 invalid_token, the log says "reason":"dpop_required"):
curl -si -H "Authorization: Bearer $(${portPrefix}node scripts/dev.mjs token 2>/dev/null)" ${RESOURCE} | head -n 1

Ctrl-C stops the gate, the origin and the authorization server.
`);
}

/**
 * Runs the gate under `wrangler dev` with `vars` over wrangler.toml, and
 * stops everything (`closeOthers`, the state file) on Ctrl-C or when
 * wrangler exits.
 */
function runGate(vars, closeOthers) {
  const wranglerArgs = [
    'dev',
    '--local',
    '--ip', HOST,
    '--port', String(GATE_PORT),
    '--show-interactive-dev-session=false',
    ...Object.entries(vars).flatMap(([name, value]) => ['--var', `${name}:${value}`]),
  ];
  const wrangler = spawn(join(ROOT, 'node_modules', '.bin', 'wrangler'), wranglerArgs, {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
    // Offline and loopback only: no telemetry, no Request.cf download.
    env: { ...process.env, WRANGLER_SEND_METRICS: 'false', WRANGLER_SEND_ERROR_REPORTS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false' },
  });

  let stopping = false;
  async function stop(code = 0) {
    if (stopping) return;
    stopping = true;
    rmSync(STATE_FILE, { force: true });
    if (wrangler.exitCode === null && wrangler.signalCode === null) {
      wrangler.kill('SIGTERM');
      const exited = new Promise((resolve) => wrangler.once('exit', resolve));
      const timer = setTimeout(() => wrangler.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await closeOthers();
    process.exit(code);
  }
  process.on('SIGINT', () => stop(0));
  process.on('SIGTERM', () => stop(0));
  wrangler.on('exit', (code, signal) => {
    // Ctrl-C in a terminal signals wrangler too; that is a normal stop.
    if (!stopping && (signal === 'SIGINT' || signal === 'SIGTERM' || code === 0 || code === 130)) {
      stop(0);
    } else if (!stopping) {
      console.error(`wrangler dev exited (${signal ?? code}); stopping the demo stack.`);
      stop(code || 1);
    }
  });
  return { stopping: () => stopping };
}

/**
 * `npm start -- --routes`: two MCP servers behind one gate (MCP_ROUTES),
 * billing with per-tool scopes and tickets, each with its own origin, its own
 * origin credential and its own audience, one authorization server for both.
 */
async function runRoutesStack() {
  if (!existsSync(join(ROOT, 'build', 'index.js'))) {
    console.error('build/index.js is missing: run `npm run build` first (or use `npm start`).');
    process.exit(1);
  }
  const { startOrigin } = await import('../demo/origin.mjs');
  const { startAuthorizationServer } = await import('../demo/authorization-server.mjs');
  const resources = { billing: `${GATE}/billing/mcp`, tickets: `${GATE}/tickets/mcp` };
  const origins = {
    billing: await startOrigin({ port: ORIGIN_PORT, log: true, assertion: VERIFY_ASSERTIONS }),
    tickets: await startOrigin({ port: SECOND_ORIGIN_PORT, log: true, assertion: VERIFY_ASSERTIONS }),
  };
  const as = await startAuthorizationServer({
    resources: Object.values(resources),
    accessTokenFormat: 'jwt',
    port: AUTH_PORT,
    corsOrigins: INSPECTOR_ORIGINS,
    log: true,
  });
  mkdirSync(dirname(STATE_FILE), { recursive: true });
  writeFileSync(
    STATE_FILE,
    JSON.stringify({ resource: resources.billing, routes: resources, issuer: as.issuer, tokenEndpoint: as.tokenEndpoint, clientId: as.agentClient.id, clientSecret: as.agentClient.secret }),
    { mode: 0o600 },
  );
  const routes = [
    {
      resource: resources.billing,
      origin: origins.billing.url,
      resource_name: 'portcullis demo: billing',
      scopes_supported: SCOPES,
      required_scopes: 'invoices:read',
      tool_scopes: { void_invoice: 'invoices:write', '*': 'invoices:read' },
      origin_authorization_secret: 'BILLING_ORIGIN_AUTHORIZATION',
      assertion_audience: origins.billing.url,
    },
    {
      resource: resources.tickets,
      origin: origins.tickets.url,
      resource_name: 'portcullis demo: tickets',
      scopes_supported: SCOPES,
      required_scopes: 'invoices:read',
      origin_authorization_secret: 'TICKETS_ORIGIN_AUTHORIZATION',
      assertion_audience: origins.tickets.url,
    },
  ];
  const vars = {
    // wrangler.toml's single-route vars must be absent with MCP_ROUTES: an empty value is unset.
    MCP_RESOURCE: '',
    MCP_ORIGIN: '',
    MCP_ROUTES: JSON.stringify(routes),
    OAUTH_ISSUER: as.issuer,
    MCP_ALLOWED_ORIGINS: INSPECTOR_ORIGINS.join(' '),
    // Throwaway credentials for the origins, made up for this run only.
    BILLING_ORIGIN_AUTHORIZATION: `Bearer demo-billing-${randomBytes(16).toString('hex')}`,
    TICKETS_ORIGIN_AUTHORIZATION: `Bearer demo-tickets-${randomBytes(16).toString('hex')}`,
    MCP_STATE_SECRET: randomBytes(32).toString('base64url'),
    ASSERTION_KEY: assertionKey(),
    RATE_LIMITS,
  };
  const gate = runGate(vars, () => Promise.allSettled([origins.billing.close(), origins.tickets.close(), as.close()]));
  await waitForGate('/.well-known/oauth-protected-resource/billing/mcp');
  if (gate.stopping()) return;
  const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
  const portPrefix = GATE_PORT === 8787 ? '' : `GATE_PORT=${GATE_PORT} `;
  console.log(`
${bold('portcullis demo stack is up: two MCP servers behind one gate (MCP_ROUTES)')}
  billing MCP endpoint:  ${resources.billing}
    metadata:            ${GATE}/.well-known/oauth-protected-resource/billing/mcp
    origin (direct):     ${origins.billing.url}   (void_invoice needs invoices:write here)
  tickets MCP endpoint:  ${resources.tickets}
    metadata:            ${GATE}/.well-known/oauth-protected-resource/tickets/mcp
    origin (direct):     ${origins.tickets.url}
  authorization server:  ${as.issuer}  (oidc-provider; tokens carry the route they were asked for in aud)
  both origins verify the gate's signed Portcullis-Assertion on every request (keys: ${ASSERTION_JWKS})

${bold('MCP client')} (e.g. the MCP Inspector): either endpoint above, Streamable HTTP.

${bold('One line each')}: a token for that route (client credentials) and a tool call through the gate:
${portPrefix}node scripts/dev.mjs call lookup_invoice '{"invoice_id":"INV-1001"}' --route billing
${portPrefix}node scripts/dev.mjs call lookup_invoice '{"invoice_id":"INV-1002"}' --route tickets

${bold('Audience binding')}: a billing token is refused at tickets (401 invalid_token):
curl -si -H "Authorization: Bearer $(${portPrefix}node scripts/dev.mjs token --route billing)" ${resources.tickets}

Ctrl-C stops the gate, both origins and the authorization server.
`);
}

async function waitForGate(metadataPath) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      // wrangler holds requests until the worker is ready, so wait for the answer.
      const response = await fetch(`${GATE}${metadataPath}`, { signal: AbortSignal.timeout(60_000) });
      await response.body?.cancel();
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  console.error(`The gate did not answer on ${GATE} within ${READY_TIMEOUT_MS / 1000} s.`);
  process.kill(process.pid, 'SIGTERM');
}

function printBanner({ token, origin, as }) {
  const json = "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'";
  const initialize = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '0' } },
  });
  const session = `-H "Mcp-Session-Id: $SESSION" -H 'MCP-Protocol-Version: 2025-06-18'`;
  const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
  const client = `-u '${as.agentClient.id}:${as.agentClient.secret}'`;
  // `token` and `call` find the running stack by its gate port.
  const portPrefix = GATE_PORT === 8787 ? '' : `GATE_PORT=${GATE_PORT} `;
  console.log(`
${bold('portcullis demo stack is up')}
  MCP endpoint, behind the gate:  ${RESOURCE}
  resource metadata:              ${GATE}/.well-known/oauth-protected-resource/mcp
  authorization server:           ${as.issuer}  (oidc-provider; ${as.issuer}/.well-known/openid-configuration)
  origin MCP server (direct):     ${origin.url}
    it verifies the gate's signed Portcullis-Assertion on every request (its log says assertion=ok);
    a request sent to it directly, without one, gets 401 invalid_assertion
  the gate's assertion keys:      ${ASSERTION_JWKS}

${bold('MCP client')} (e.g. the MCP Inspector: npx @modelcontextprotocol/inspector), Streamable HTTP:
  ${RESOURCE}
  Its OAuth flow registers the client, you sign in (any user name) and allow the scopes at
  ${as.issuer}, and it calls tools through the gate.

${bold('One line')}: a token (client credentials) and a tool call through the gate, with the MCP SDK client:
${portPrefix}node scripts/dev.mjs call lookup_invoice '{"invoice_id":"INV-1001"}'

${bold('Access token')} (client ${as.agentClient.id}, scopes "${SCOPES}", valid 1 hour, RFC 9068 JWT):
${token}

${bold('Try it with curl')} (paste into a shell):
export TOKEN=$(curl -s ${client} -d grant_type=client_credentials -d 'scope=${SCOPES}' -d 'resource=${RESOURCE}' ${as.tokenEndpoint} | node -pe 'JSON.parse(require("fs").readFileSync(0)).access_token')

# No token: 401 with a challenge pointing at the metadata
curl -si ${RESOURCE}

# initialize: keeps the Mcp-Session-Id the origin hands out
SESSION=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" ${json} -d '${initialize}' ${RESOURCE} | awk -F': ' 'tolower($1)=="mcp-session-id" {print $2}' | tr -d '\\r'); echo "session: $SESSION"
curl -s -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' ${RESOURCE}

# tools/list, then a tool call, then a slow tool streaming progress over SSE
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' ${RESOURCE}
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup_invoice","arguments":{"invoice_id":"INV-1001"}}}' ${RESOURCE}
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"countdown","arguments":{"from":5},"_meta":{"progressToken":"p1"}}}' ${RESOURCE}

${bold('Rate limits')} (RATE_LIMITS; bindings in wrangler.toml): void_invoice 3 times a minute per user.
The fourth call within a minute is refused with 429 and Retry-After, and the gate's log says
"reason":"rate_limited","rate_rule":"void_invoice per user" (lookup_invoice is not limited):
for i in 1 2 3 4; do ${portPrefix}node scripts/dev.mjs call void_invoice '{"invoice_id":"INV-100'$i'"}'; done

${bold('Another token')}: TOKEN=$(${portPrefix}node scripts/dev.mjs token --scope 'invoices:read')

Ctrl-C stops the gate, the origin and the authorization server.
`);
}
