// The demo stack: the origin is a working MCP server that records what it
// receives; the demo issuer's tokens verify against its published keys with
// an independent library; the demo authorization server (oidc-provider)
// advertises what MCP clients need and issues RFC 9068 JWTs for the resource
// (these need no build). Then `npm start`'s stack itself (scripts/dev.mjs:
// the authorization server, the origin and the gate under `wrangler dev`,
// needs build/): it comes up, its printed one-line command gets a token and
// calls a tool through the gate, `token` works, Ctrl-C stops everything.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { existsSync, rmSync } from 'node:fs';
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { SCOPES, startAuthorizationServer } from '../demo/authorization-server.mjs';
import { ALL_ALGS, startIssuer } from '../demo/issuer.mjs';
import { startOrigin } from '../demo/origin.mjs';
import { runProcess, startDevStack } from './helpers/dev-stack.mjs';
import { parseChallenge } from './helpers/http.mjs';
import { CLI, ensureCli } from './helpers/cli.mjs';
import { dpopKey, dpopProof } from './helpers/dpop.mjs';

describe('demo origin', () => {
  let origin;

  before(async () => {
    origin = await startOrigin({ countdownIntervalMs: 50 });
  });

  after(async () => {
    await origin?.close();
  });

  test('serves MCP over Streamable HTTP with sessions and records every request', async () => {
    const client = new Client({ name: 'demo-check', version: '0' });
    const transport = new StreamableHTTPClientTransport(new URL(origin.url), {
      requestInit: { headers: { 'X-Auth-Subject': 'direct', 'X-Auth-Scopes': 'invoices:read' } },
    });
    await client.connect(transport);
    try {
      assert.ok(transport.sessionId);
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);
      const progress = [];
      const result = await client.callTool({ name: 'countdown', arguments: { from: 3 } }, undefined, { onprogress: (p) => progress.push(p.progress) });
      assert.match(result.content[0].text, /Liftoff/);
      assert.deepEqual(progress, [1, 2, 3]);
      const refused = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.equal(refused.isError, true, 'void_invoice needs invoices:write in X-Auth-Scopes');
    } finally {
      await transport.terminateSession();
      await client.close();
    }
    const posts = origin.requests.filter((r) => r.method === 'POST');
    assert.ok(posts.length >= 4);
    assert.equal(posts[0].path, '/mcp');
    assert.equal(posts[0].headers['x-auth-subject'], 'direct');
    assert.match(posts[0].body, /"initialize"/);
    assert.equal(origin.sessions.size, 0, 'DELETE ended the session');
  });

  test('records requests it does not serve, with path and query', async () => {
    const response = await fetch(`${origin.url}/elsewhere?q=1`, { method: 'PUT', body: 'x' });
    assert.equal(response.status, 404);
    await response.body?.cancel();
    const last = origin.requests.at(-1);
    assert.deepEqual([last.method, last.path, last.query, last.body], ['PUT', '/mcp/elsewhere', '?q=1', 'x']);
  });
});

describe('demo issuer', () => {
  let issuer;
  const audience = 'http://127.0.0.1:1/mcp';

  before(async () => {
    issuer = await startIssuer({ audience, path: '/realm' });
  });

  after(async () => {
    await issuer?.close();
  });

  test('publishes RFC 8414 metadata (path-inserted) and OpenID metadata naming its JWKS', async () => {
    const oauth = await (await fetch(`${issuer.origin}/.well-known/oauth-authorization-server/realm`)).json();
    const openid = await (await fetch(`${issuer.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(oauth.issuer, issuer.issuer);
    assert.equal(oauth.jwks_uri, issuer.jwksUri);
    assert.deepEqual(openid, oauth);
  });

  test('tokens of every algorithm verify against the published keys', async () => {
    const jwks = createRemoteJWKSet(new URL(issuer.jwksUri));
    for (const alg of ALL_ALGS) {
      const token = await issuer.mint({ sub: alg }, { alg });
      assert.equal(decodeProtectedHeader(token).typ, 'at+jwt');
      const { payload } = await jwtVerify(token, jwks, { issuer: issuer.issuer, audience, algorithms: [alg] });
      assert.equal(payload.sub, alg);
      assert.ok(payload.exp - payload.iat === 300);
    }
  });

  test('can be switched to failing and back, and counts fetches', async () => {
    const before = issuer.count('/realm/jwks');
    await issuer.setDown(true);
    assert.equal((await fetch(issuer.jwksUri)).status, 500);
    await issuer.setDown('refuse');
    await assert.rejects(fetch(issuer.jwksUri));
    await issuer.setDown(false);
    assert.equal((await fetch(issuer.jwksUri)).status, 200);
    assert.equal(issuer.count('/realm/jwks'), before + 2, 'refused connections are never counted');
  });
});

describe('demo authorization server (oidc-provider)', () => {
  let as;
  const resource = 'http://127.0.0.1:1/mcp';

  before(async () => {
    as = await startAuthorizationServer({ resources: [resource], accessTokenFormat: 'jwt' });
  });

  after(async () => {
    await as?.close();
  });

  test('advertises what MCP clients need: code + PKCE S256, client credentials, refresh, registration', async () => {
    const metadata = await (await fetch(`${as.issuer}/.well-known/openid-configuration`)).json();
    assert.equal(metadata.issuer, as.issuer);
    for (const grant of ['authorization_code', 'client_credentials', 'refresh_token']) assert.ok(metadata.grant_types_supported.includes(grant), grant);
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    assert.equal(metadata.registration_endpoint, `${as.issuer}/reg`);
    for (const scope of SCOPES.split(' ')) assert.ok(metadata.scopes_supported.includes(scope), scope);
    assert.ok(metadata.token_endpoint_auth_methods_supported.includes('none'), 'public clients (PKCE)');
  });

  test('client credentials with a resource indicator give an RFC 9068 JWT for that resource', async () => {
    const token = await as.token({ scope: SCOPES });
    assert.equal(decodeProtectedHeader(token).typ, 'at+jwt');
    const jwks = createRemoteJWKSet(new URL(`${as.issuer}/jwks`));
    const { payload } = await jwtVerify(token, jwks, { issuer: as.issuer, audience: resource, typ: 'at+jwt' });
    assert.equal(payload.scope, SCOPES);
    assert.equal(payload.client_id, as.agentClient.id);
    await assert.rejects(as.token({ resource: 'https://elsewhere.example/mcp' }), /invalid_target/);
  });

  test('a DPoP proof at the token endpoint gives a DPoP-bound JWT (RFC 9449: token_type DPoP, cnf.jkt); without one, Bearer', async () => {
    const metadata = await (await fetch(`${as.issuer}/.well-known/openid-configuration`)).json();
    for (const alg of ['ES256', 'EdDSA', 'RS256', 'PS256']) {
      assert.ok(metadata.dpop_signing_alg_values_supported.includes(alg), alg);
      const key = await dpopKey(alg);
      const body = await as.tokenResponse({ scope: SCOPES, dpop: (request) => dpopProof(key, request) });
      assert.equal(body.token_type, 'DPoP', alg);
      const jwks = createRemoteJWKSet(new URL(`${as.issuer}/jwks`));
      const { payload } = await jwtVerify(body.access_token, jwks, { issuer: as.issuer, audience: resource, typ: 'at+jwt' });
      assert.deepEqual(payload.cnf, { jkt: key.jkt }, alg);
    }
    const bearer = await as.tokenResponse({ scope: SCOPES });
    assert.equal(bearer.token_type, 'Bearer');
    assert.equal(decodeJwt(bearer.access_token).cnf, undefined);
    // A proof for another URL is refused by the authorization server itself.
    const key = await dpopKey();
    await assert.rejects(as.token({ dpop: await dpopProof(key, { htm: 'POST', htu: `${as.issuer}/elsewhere` }) }), /invalid_dpop_proof/);
  });
});

describe('npm start: the local stack (scripts/dev.mjs, wrangler dev)', () => {
  let child;
  let readOutput;
  let env;
  let stateDir;
  let ports;

  const run = (args) => runProcess(process.execPath, ['scripts/dev.mjs', ...args], env);

  before(async () => {
    const stack = await startDevStack([], { gate: 'GATE_PORT', origin: 'ORIGIN_PORT', auth: 'AUTH_PORT' });
    ({ child, env, ports, stateDir } = stack);
    readOutput = stack.output;
  });

  after(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGKILL');
    }
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  test('prints the MCP URL and a one-line command that gets a token and calls a tool through the gate', async () => {
    const resource = `http://127.0.0.1:${ports.gate}/mcp`;
    assert.match(readOutput(), new RegExp(`MCP endpoint, behind the gate: +${resource.replace(/[.]/g, '\\.')}`));
    assert.match(readOutput(), new RegExp(`authorization server: +http://127\\.0\\.0\\.1:${ports.auth}`));

    // The gate challenges with the metadata, which names the authorization server.
    const challenge = await fetch(resource, { method: 'POST' });
    assert.equal(challenge.status, 401);
    const { params } = parseChallenge(challenge.headers.get('www-authenticate'));
    const metadata = await (await fetch(params.resource_metadata)).json();
    assert.deepEqual(metadata.authorization_servers, [`http://127.0.0.1:${ports.auth}`]);

    const lines = readOutput().split('\n');
    const oneLine = lines[lines.findIndex((l) => l.startsWith('One line')) + 1];
    assert.match(oneLine, new RegExp(`^GATE_PORT=${ports.gate} node scripts/dev\\.mjs call `));
    const { code, out, err } = await runProcess('bash', ['-c', oneLine], env);
    assert.equal(code, 0, err);
    assert.match(out, /Invoice INV-1001: ACME Corp/);
    // The origin verified the gate's signed assertion on every request it got, and refuses one without.
    const checked = readOutput().split('\n').filter((line) => line.startsWith('origin: '));
    assert.ok(checked.length > 0 && checked.every((line) => line.endsWith(' assertion=ok')), checked.join('\n'));
    const direct = await fetch(`http://127.0.0.1:${ports.origin}/mcp`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(direct.status, 401);
    assert.equal((await direct.json()).error, 'invalid_assertion');
  });

  test('`node scripts/dev.mjs token` gets a JWT for the gate from the running authorization server', async () => {
    const { code, out, err } = await run(['token', '--scope', 'invoices:read']);
    assert.equal(code, 0, err);
    const claims = decodeJwt(out.trim());
    assert.equal(claims.aud, `http://127.0.0.1:${ports.gate}/mcp`);
    assert.equal(claims.iss, `http://127.0.0.1:${ports.auth}`);
    assert.equal(claims.scope, 'invoices:read');
    // The write tool needs invoices:write: a read-only token is refused with step-up.
    const refused = await run(['call', 'void_invoice', '{"invoice_id":"INV-1002"}', '--scope', 'invoices:read']);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /403/);
  });

  test('the printed rate limit loop triggers the example rule (a [[ratelimits]] binding under wrangler dev)', async () => {
    const lines = readOutput().split('\n');
    const loop = lines.find((l) => l.startsWith('for i in 1 2 3 4; do '));
    assert.ok(loop, 'the banner prints the loop');
    // wrangler's local limiter counts in fixed minutes: a minute ending
    // mid-loop would reset the count, so start with enough of one left.
    const left = 60 - ((Date.now() / 1000) % 60);
    if (left < 12) await new Promise((resolve) => setTimeout(resolve, left * 1000 + 100));
    const { out, err } = await runProcess('bash', ['-c', loop], env);
    assert.equal(out.match(/voided by/g)?.length, 3, out + err);
    assert.match(err, /429|Too many requests/);
    assert.match(readOutput(), /"reason":"rate_limited"[^\n]*"rate_rule":"void_invoice per user"/);
  });

  test('`portcullis doctor` walks the stack as MCP clients do: every step passes, the token never printed', async () => {
    await ensureCli();
    const token = (await run(['token', '--scope', 'invoices:read'])).out.trim();
    const resource = `http://127.0.0.1:${ports.gate}/mcp`;
    // The MCP Inspector's origin, which npm start allows (MCP_ALLOWED_ORIGINS).
    const { code, out, err } = await runProcess(CLI, ['doctor', resource, '--json', '--token-env', 'DOCTOR_TOKEN', '--origin', 'http://localhost:6274'], { ...env, DOCTOR_TOKEN: token });
    const report = JSON.parse(out);
    const failed = report.steps.filter((s) => s.status === 'fail');
    assert.deepEqual(failed, [], err);
    assert.equal(code, 0);
    for (const id of ['challenge', 'resource', 'pkce', 'cors', 'initialize', 'tools_list']) {
      assert.equal(report.steps.find((s) => s.id === id)?.status, 'pass', `${id}: ${JSON.stringify(report.steps.find((s) => s.id === id))}`);
    }
    assert.ok(!out.includes(token) && !err.includes(token), 'the token is never printed');
  });

  test('Ctrl-C stops the gate, the origin and the authorization server', async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.ok(!existsSync(env.PORTCULLIS_DEV_STATE), 'the state file is removed');
    for (const port of Object.values(ports)) {
      await assert.rejects(fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) }), `port ${port} closed`);
    }
  });
});

describe('npm start -- --routes: two MCP servers behind one gate', () => {
  let child;
  let readOutput;
  let env;
  let stateDir;
  let ports;

  const sh = (line) => runProcess('bash', ['-c', line], env);

  before(async () => {
    const stack = await startDevStack(['--routes'], { gate: 'GATE_PORT', origin: 'ORIGIN_PORT', second: 'SECOND_ORIGIN_PORT', auth: 'AUTH_PORT' });
    ({ child, env, ports, stateDir } = stack);
    readOutput = stack.output;
  });

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  test('each route has its own metadata; the printed one-liners call a tool through each route; a billing token is refused at tickets', async () => {
    const gate = `http://127.0.0.1:${ports.gate}`;
    for (const name of ['billing', 'tickets']) {
      const metadata = await (await fetch(`${gate}/.well-known/oauth-protected-resource/${name}/mcp`)).json();
      assert.equal(metadata.resource, `${gate}/${name}/mcp`);
      assert.deepEqual(metadata.authorization_servers, [`http://127.0.0.1:${ports.auth}`]);
    }
    const lines = readOutput().split('\n');
    const first = lines.findIndex((l) => l.startsWith('One line each'));
    for (const [offset, expected] of [
      [1, /Invoice INV-1001: ACME Corp/],
      [2, /Invoice INV-1002: Globex/],
    ]) {
      const line = lines[first + offset];
      assert.match(line, /node scripts\/dev\.mjs call .* --route (billing|tickets)$/);
      const { code, out, err } = await sh(line);
      assert.equal(code, 0, err);
      assert.match(out, expected);
    }
    const { out: billingToken } = await sh('node scripts/dev.mjs token --route billing');
    assert.equal(decodeJwt(billingToken.trim()).aud, `${gate}/billing/mcp`);
    const replay = await fetch(`${gate}/tickets/mcp`, { method: 'POST', headers: { authorization: `Bearer ${billingToken.trim()}` } });
    assert.equal(replay.status, 401);
    assert.equal(parseChallenge(replay.headers.get('www-authenticate')).params.error, 'invalid_token');
    assert.ok(!readOutput().includes(billingToken.trim()), 'the token is not printed by the stack');
  });

  test('Ctrl-C stops the gate, both origins and the authorization server', async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGINT');
    assert.equal(await exited, 0);
    for (const port of Object.values(ports)) {
      await assert.rejects(fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2000) }), `port ${port} closed`);
    }
  });
});
