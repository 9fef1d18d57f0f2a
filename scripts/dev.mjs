#!/usr/bin/env node
// The local demo stack: the demo MCP origin and the demo issuer on loopback
// ports, and the gate in front of them under `wrangler dev`, configured with
// --var flags over wrangler.toml. Prints the MCP URL, a token valid for one
// hour and curl commands to try. Ctrl-C stops everything.
//
//   npm start                          (scripts/dev.sh: set-up, build, then this)
//   node scripts/dev.mjs               (when build/ is already built)
//   node scripts/dev.mjs token [--scope "invoices:read"] [--sub alice] [--ttl 3600] [--alg ES256]
//                                      (another token from the running stack's issuer)
//
// Ports (127.0.0.1 only): GATE_PORT 8787, ORIGIN_PORT 8788, ISSUER_PORT 8789.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';
const GATE_PORT = Number(process.env.GATE_PORT ?? 8787);
const ORIGIN_PORT = Number(process.env.ORIGIN_PORT ?? 8788);
const ISSUER_PORT = Number(process.env.ISSUER_PORT ?? 8789);
const GATE = `http://${HOST}:${GATE_PORT}`;
const RESOURCE = `${GATE}/mcp`;
const ISSUER = `http://${HOST}:${ISSUER_PORT}`;
const SCOPES = 'invoices:read invoices:write';
const READY_TIMEOUT_MS = 5 * 60 * 1000; // wrangler runs the [build] command first

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'token') {
  await printToken(rest);
} else if (mode === undefined) {
  await runStack();
} else {
  console.error(`usage: node scripts/dev.mjs [token [--scope S] [--sub S] [--ttl SECONDS] [--alg ALG]]`);
  process.exit(2);
}

/** `node scripts/dev.mjs token`: asks the running demo issuer for a token and prints it alone. */
async function printToken(args) {
  const { values } = parseArgs({
    args,
    options: {
      scope: { type: 'string', default: SCOPES },
      sub: { type: 'string' },
      ttl: { type: 'string', default: '3600' },
      alg: { type: 'string' },
      'client-id': { type: 'string' },
    },
  });
  const params = new URLSearchParams({ scope: values.scope, ttl: values.ttl });
  if (values.sub) params.set('sub', values.sub);
  if (values.alg) params.set('alg', values.alg);
  if (values['client-id']) params.set('client_id', values['client-id']);
  let response;
  try {
    response = await fetch(`${ISSUER}/dev/token`, { method: 'POST', body: params, signal: AbortSignal.timeout(5000) });
  } catch {
    console.error(`No demo issuer at ${ISSUER}: start the stack first with \`npm start\`.`);
    process.exit(1);
  }
  if (!response.ok) {
    console.error(`The issuer refused: ${response.status} ${await response.text()}`);
    process.exit(1);
  }
  console.log((await response.json()).access_token);
}

async function runStack() {
  if (!existsSync(join(ROOT, 'build', 'index.js'))) {
    console.error('build/index.js is missing: run `npm run build` first (or use `npm start`).');
    process.exit(1);
  }
  const { startOrigin } = await import('../demo/origin.mjs');
  const { startIssuer } = await import('../demo/issuer.mjs');

  const origin = await startOrigin({ port: ORIGIN_PORT, log: true });
  const issuer = await startIssuer({ port: ISSUER_PORT, audience: RESOURCE, devMint: true });
  // A throwaway credential for the origin, made up for this run only.
  const originAuthorization = `Bearer demo-origin-${randomBytes(16).toString('hex')}`;

  const vars = {
    MCP_RESOURCE: RESOURCE,
    MCP_ORIGIN: origin.url,
    OAUTH_ISSUER: issuer.issuer,
    OAUTH_JWKS_URI: issuer.jwksUri,
    MCP_SCOPES_SUPPORTED: SCOPES,
    MCP_REQUIRED_SCOPES: 'invoices:read',
    MCP_RESOURCE_NAME: 'portcullis demo invoices',
    // Per-tool scopes: a token with only invoices:read does not see void_invoice.
    MCP_TOOL_SCOPES: JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' }),
    // The MCP Inspector's default origins.
    MCP_ALLOWED_ORIGINS: 'http://localhost:6274 http://127.0.0.1:6274',
    ORIGIN_AUTHORIZATION: originAuthorization,
  };
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
    if (wrangler.exitCode === null && wrangler.signalCode === null) {
      wrangler.kill('SIGTERM');
      const exited = new Promise((resolve) => wrangler.once('exit', resolve));
      const timer = setTimeout(() => wrangler.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await Promise.allSettled([origin.close(), issuer.close()]);
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

  await waitForGate();
  if (stopping) return;
  const token = await issuer.mint({ exp: Math.floor(Date.now() / 1000) + 3600, scope: SCOPES, sub: 'demo-user' });
  printBanner({ token, origin, issuer });
}

async function waitForGate() {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    try {
      // wrangler holds requests until the worker is ready, so wait for the answer.
      const response = await fetch(`${GATE}/.well-known/oauth-protected-resource/mcp`, { signal: AbortSignal.timeout(60_000) });
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

function printBanner({ token, origin, issuer }) {
  const json = "-H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream'";
  const initialize = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '0' } },
  });
  const session = `-H "Mcp-Session-Id: $SESSION" -H 'MCP-Protocol-Version: 2025-06-18'`;
  const bold = (text) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
  console.log(`
${bold('portcullis demo stack is up')}
  MCP endpoint, behind the gate:  ${RESOURCE}
  resource metadata:              ${GATE}/.well-known/oauth-protected-resource/mcp
  origin MCP server (direct):     ${origin.url}
  demo issuer:                    ${issuer.issuer}  (keys: ${issuer.jwksUri})

${bold('Access token')} (sub demo-user, scopes "${SCOPES}", valid 1 hour):
${token}

${bold('Try it')} (paste into a shell):
export TOKEN='${token}'

# No token: 401 with a challenge pointing at the metadata
curl -si ${RESOURCE}

# initialize: keeps the Mcp-Session-Id the origin hands out
SESSION=$(curl -s -D - -o /dev/null -H "Authorization: Bearer $TOKEN" ${json} -d '${initialize}' ${RESOURCE} | awk -F': ' 'tolower($1)=="mcp-session-id" {print $2}' | tr -d '\\r'); echo "session: $SESSION"
curl -s -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","method":"notifications/initialized"}' ${RESOURCE}

# tools/list, then a tool call, then a slow tool streaming progress over SSE
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":2,"method":"tools/list"}' ${RESOURCE}
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"lookup_invoice","arguments":{"invoice_id":"INV-1001"}}}' ${RESOURCE}
curl -s -N -H "Authorization: Bearer $TOKEN" ${session} ${json} -d '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"countdown","arguments":{"from":5},"_meta":{"progressToken":"p1"}}}' ${RESOURCE}

${bold('Another token')}: TOKEN=$(node scripts/dev.mjs token --scope 'invoices:read')
  or: curl -s -d 'scope=invoices:read' ${issuer.issuer}/dev/token

Ctrl-C stops the gate, the origin and the issuer.
`);
}
