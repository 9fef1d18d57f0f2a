// The `portcullis` command line (crates/cli), run as a user runs it:
// `check` on the repository's own wrangler.toml and on broken ones (every
// problem named, exit status 1), and `explain` against a real authorization
// server (oidc-provider issuing JWT access tokens) for a good token, an
// expired one, a wrong audience and a missing scope, each naming the reason
// the gate itself logs for the same token (the built worker in Miniflare).
// `doctor` has its own file (cli-doctor.test.mjs).

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SCOPES, startAuthorizationServer } from '../demo/authorization-server.mjs';
import { ROOT } from './helpers/gate.mjs';
import { TOOL_SCOPES } from './helpers/oauth.mjs';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets } from './helpers/http.mjs';
import { CLI, ensureCli, runFile as run } from './helpers/cli.mjs';

/** `portcullis ARGS --json`, parsed. */
async function json(args, options) {
  const result = await run(CLI, [...args, '--json'], options);
  let parsed;
  try {
    parsed = JSON.parse(result.stdout);
  } catch {
    assert.fail(`not JSON (exit ${result.code}): ${result.stdout}\n${result.stderr}`);
  }
  return { ...result, json: parsed };
}

/** A TOML basic string (JSON's string escapes are TOML's). */
const tomlString = (value) => JSON.stringify(String(value));

let dir;
before(async () => {
  await ensureCli();
  dir = mkdtempSync(join(tmpdir(), 'portcullis-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

function writeToml(name, text) {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

describe('portcullis check', () => {
  test("the repository's own wrangler.toml passes, with the deploy warnings it deserves", async () => {
    const { code, json: out } = await json(['check', '--config', join(ROOT, 'wrangler.toml')]);
    assert.equal(code, 0, JSON.stringify(out));
    assert.equal(out.ok, true);
    assert.ok(out.steps.some((s) => s.status === 'pass' && s.id === 'config'));
    // The template has no routes yet and a placeholder KV id: a deploy would trip on both.
    assert.ok(out.steps.some((s) => s.id === 'routing' && s.status === 'warn'));
    assert.ok(out.steps.some((s) => s.id === 'kv_placeholder' && s.status === 'warn'));
  });

  test('a broken configuration: every problem named at once, exit status 1', async () => {
    const path = writeToml(
      'broken.toml',
      `name = "gate"
[vars]
MCP_RESOURCE = "http://mcp.acme.dev/mcp"
OAUTH_ISSUER = "https://auth.acme.dev"
JWT_LEEWAY_SECONDS = 60
JWT_ALGORITHMS = "HS256 RS256"
RATE_LIMITS = '[{"binding":"RL_NOPE","key":"subject"}]'
`,
    );
    const { code, json: out } = await json(['check', '--config', path]);
    assert.equal(code, 1);
    assert.equal(out.ok, false);
    const failed = out.steps.filter((s) => s.status === 'fail').map((s) => s.title);
    for (const binding of ['JWT_LEEWAY_SECONDS', 'MCP_RESOURCE', 'MCP_ORIGIN', 'JWT_ALGORITHMS', 'RATE_LIMITS', 'JWKS_CACHE']) {
      assert.ok(failed.includes(binding), `${binding} not named among ${failed.join(', ')}`);
    }
    const leeway = out.steps.find((s) => s.title === 'JWT_LEEWAY_SECONDS');
    assert.match(leeway.detail, /TOML integer/);
  });

  test('deploy warnings: unrouted metadata, offline_access, an audience other than the resource, a secret in [vars]', async () => {
    const path = writeToml(
      'warnings.toml',
      `name = "gate"
routes = ["mcp.acme.dev/mcp*"]
[[kv_namespaces]]
binding = "JWKS_CACHE"
id = "9f3c"
[vars]
MCP_RESOURCE = "https://mcp.acme.dev/mcp"
MCP_ORIGIN = "https://origin.acme.dev/mcp"
OAUTH_ISSUER = "https://auth.acme.dev"
OAUTH_AUDIENCE = "api://mcp"
MCP_SCOPES_SUPPORTED = "mcp:read offline_access"
ORIGIN_AUTHORIZATION = "Bearer not-really-secret"
`,
    );
    const { code, stdout, json: out } = await json(['check', '--config', path]);
    assert.equal(code, 0, 'warnings do not fail the check');
    const warned = new Map(out.steps.filter((s) => s.status === 'warn').map((s) => [s.id, s]));
    // The gate's own parser leaves offline_access out of the metadata and says so.
    assert.ok(out.steps.some((s) => s.status === 'warn' && s.title === 'MCP_SCOPES_SUPPORTED' && /offline_access/.test(s.detail)));
    assert.ok(warned.has('audience'));
    assert.ok(warned.has('secret_in_vars'));
    const routing = out.steps.filter((s) => s.id === 'routing');
    assert.equal(routing.length, 1, 'the resource is routed, its metadata URL is not');
    assert.match(routing[0].detail, /oauth-protected-resource\/mcp/);
    assertNoSecrets(stdout, ['not-really-secret']);
  });

  test('--env reads [env.NAME] with its own vars, secrets from .dev.vars.NAME; a missing env is a usage error', async () => {
    const sub = mkdtempSync(join(dir, 'env-'));
    writeFileSync(
      join(sub, 'wrangler.toml'),
      `name = "gate"
[vars]
MCP_RESOURCE = "not a url"
[env.staging]
routes = [{ pattern = "mcp.acme.dev", custom_domain = true }]
kv_namespaces = [{ binding = "JWKS_CACHE", id = "abc" }]
[env.staging.vars]
MCP_RESOURCE = "https://mcp.acme.dev/mcp"
MCP_ORIGIN = "https://origin.acme.dev/mcp"
OAUTH_ISSUER = "https://auth.acme.dev"
MCP_STATE_SECRET = "short"
`,
    );
    // .dev.vars.staging wins over the [vars] value of a secret.
    writeFileSync(join(sub, '.dev.vars.staging'), `MCP_STATE_SECRET="${'s'.repeat(40)}"\n`);
    const ok = await json(['check', '--config', join(sub, 'wrangler.toml'), '--env', 'staging']);
    assert.equal(ok.code, 0, JSON.stringify(ok.json));
    assert.ok(!ok.json.steps.some((s) => s.id === 'routing'), 'a custom domain routes everything');
    const top = await json(['check', '--config', join(sub, 'wrangler.toml')]);
    assert.equal(top.code, 1, 'the top level has its own, broken vars');
    const missing = await run(CLI, ['check', '--config', join(sub, 'wrangler.toml'), '--env', 'nope']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no \[env\.nope\]/);
  });
});

describe('portcullis explain, against oidc-provider and the gate itself', () => {
  const OTHER_RESOURCE = 'https://billing.example.com/mcp';
  let as;
  let stack;
  let config;
  const secrets = {};

  before(async () => {
    const resources = [];
    as = await startAuthorizationServer({ resources, accessTokenFormat: 'jwt' });
    stack = await startStack({
      bindings: ({ resource }) => {
        resources.push(resource, OTHER_RESOURCE);
        return {
          OAUTH_ISSUER: as.issuer,
          OAUTH_JWKS_URI: undefined, // discovered (RFC 8414), as the gate does
          MCP_SCOPES_SUPPORTED: SCOPES,
          MCP_REQUIRED_SCOPES: 'invoices:read',
          MCP_TOOL_SCOPES: TOOL_SCOPES,
        };
      },
    });
    // The stack's bindings as an operator's wrangler.toml, secrets beside it.
    const vars = [];
    for (const [name, value] of Object.entries(stack.bindings)) {
      if (['MCP_STATE_SECRET', 'ASSERTION_KEY'].includes(name)) secrets[name] = value;
      else vars.push(`${name} = ${tomlString(value)}`);
    }
    config = writeToml('stack.toml', `name = "gate"\n[[kv_namespaces]]\nbinding = "JWKS_CACHE"\nid = "local"\n[vars]\n${vars.join('\n')}\n`);
  });

  after(async () => {
    await stack?.close();
    await as?.close();
  });

  /** The gate's log reason for a POST of `body` with `token`. */
  async function gateReason(token, body) {
    const before = stack.gate.requestLogs().length;
    const response = await stack.gate.fetch('/mcp', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-protocol-version': '2025-11-25' },
      body: JSON.stringify(body),
    });
    await response.arrayBuffer();
    const deadline = Date.now() + 5000;
    while (stack.gate.requestLogs().length <= before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    return stack.gate.requestLogs().at(-1).reason;
  }

  /** `portcullis explain` with the token in the child's environment only. */
  async function explain(token, args = []) {
    const result = await json(['explain', '--config', config, '--token-env', 'PORTCULLIS_TOKEN', ...args], { env: { ...secrets, PORTCULLIS_TOKEN: token } });
    assertNoSecrets(result.stdout + result.stderr, [token, ...Object.values(secrets)]);
    return result;
  }

  const check = (out, id) => out.checks.find((c) => c.id === id);

  test('a good token: every check passes, the gate would forward (reason authorized), exit 0', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    const { code, json: out } = await explain(token);
    assert.equal(code, 0, JSON.stringify(out, null, 1));
    assert.equal(out.decision, 'allow');
    assert.equal(out.reason, await gateReason(token, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }));
    assert.equal(out.reason, 'authorized');
    for (const c of out.checks) assert.equal(c.status, 'pass', `${c.id}: ${c.detail}`);
    assert.match(check(out, 'forward').detail, /would forward to http:\/\/127\.0\.0\.1/);
    // The machine discovered the keys at the real authorization server and checked the signature.
    assert.ok(out.fetches.some((f) => f.includes('/.well-known/') && f.endsWith('-> 200')), out.fetches.join('\n'));
    assert.ok(out.fetches.includes('signature RS256 -> valid'), out.fetches.join('\n'));
  });

  test('a missing scope: insufficient_scope at the scopes check, as the gate logs, with its challenge', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    const { code, json: out } = await explain(token, ['--tool', 'void_invoice']);
    assert.equal(code, 1);
    assert.equal(out.decision, 'deny');
    assert.equal(out.reason, 'insufficient_scope');
    assert.equal(out.reason, await gateReason(token, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'void_invoice', arguments: {} } }));
    assert.equal(out.status, 403);
    assert.match(out.www_authenticate, /error="insufficient_scope"/);
    assert.equal(check(out, 'scopes').status, 'fail');
    assert.match(check(out, 'scopes').detail, /required: .*invoices:write/);
    assert.equal(check(out, 'signature').status, 'pass');
    assert.equal(check(out, 'rate_limits').status, 'info');
  });

  test('a wrong audience: audience_mismatch at the audience check, as the gate logs', async () => {
    const token = await as.token({ scope: 'invoices:read', resource: OTHER_RESOURCE });
    const { code, json: out } = await explain(token);
    assert.equal(code, 1);
    assert.equal(out.reason, 'audience_mismatch');
    assert.equal(out.reason, await gateReason(token, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }));
    assert.equal(out.status, 401);
    assert.equal(check(out, 'audience').status, 'fail');
    assert.match(check(out, 'audience').detail, new RegExp(OTHER_RESOURCE.replace(/[./]/g, '\\$&')));
    assert.equal(check(out, 'claims').status, 'pass');
    assert.equal(check(out, 'scopes').detail, 'not reached');
  });

  test('an expired token (explained at a time past its exp and the leeway): token_expired', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    const exp = JSON.parse(Buffer.from(token.split('.')[1], 'base64url')).exp;
    const { code, json: out } = await explain(token, ['--at', String(exp + 61)]);
    assert.equal(code, 1);
    assert.equal(out.reason, 'token_expired');
    assert.equal(check(out, 'claims').status, 'fail');
    assert.match(check(out, 'claims').detail, /exp \d+ \(61 s ago\)/);
    assert.equal(check(out, 'signature').status, 'pass');
    // Within the leeway it still passes, as at the gate.
    const within = await explain(token, ['--at', String(exp + 59)]);
    assert.equal(within.json.reason, 'authorized');
  });

  test('a forged token and a token from stdin: the reason the gate logs, the token never printed', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    const [h, p, s] = token.split('.');
    const forged = `${h}.${p}.${s.startsWith('A') ? 'B' : 'A'}${s.slice(1)}`;
    const { json: out } = await explain(forged);
    assert.equal(out.reason, await gateReason(forged, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }));
    assert.equal(out.reason, 'bad_signature');
    const piped = await run(CLI, ['explain', '-', '--config', config], { env: secrets, input: `${token}\n` });
    assert.equal(piped.code, 0, piped.stderr);
    assert.match(piped.stdout, /decision: allow \(log reason: authorized\)/);
    assertNoSecrets(piped.stdout + piped.stderr, [token]);
  });
});

describe('portcullis explain, opaque tokens introspected at oidc-provider (RFC 7662)', () => {
  // No gate needed: explain runs the gate's machine itself.
  const RESOURCE = 'http://127.0.0.1:9/mcp';
  let as;
  let config;
  let secrets;

  before(async () => {
    as = await startAuthorizationServer({ resources: [RESOURCE] });
    secrets = { OAUTH_INTROSPECTION_CLIENT_SECRET: as.gateClient.secret };
    config = writeToml(
      'opaque.toml',
      `name = "gate"
[[kv_namespaces]]
binding = "JWKS_CACHE"
id = "local"
[vars]
MCP_RESOURCE = ${tomlString(RESOURCE)}
MCP_ORIGIN = "http://127.0.0.1:9/origin"
OAUTH_ISSUER = ${tomlString(as.issuer)}
OAUTH_TOKEN_FORMAT = "opaque"
OAUTH_INTROSPECTION_CLIENT_ID = ${tomlString(as.gateClient.id)}
MCP_REQUIRED_SCOPES = "invoices:read"
`,
    );
  });

  after(async () => {
    await as?.close();
  });

  async function explain(token) {
    const result = await json(['explain', '--config', config, '--token-env', 'PORTCULLIS_TOKEN'], { env: { ...secrets, PORTCULLIS_TOKEN: token } });
    assertNoSecrets(result.stdout + result.stderr, [token, as.gateClient.secret]);
    return result;
  }

  test('an active token is let through after one introspection call; a revoked one is token_inactive', async () => {
    const token = await as.token({ scope: 'invoices:read' });
    const good = await explain(token);
    assert.equal(good.code, 0, JSON.stringify(good.json, null, 1));
    assert.equal(good.json.reason, 'authorized');
    assert.ok(good.json.checks.some((c) => c.id === 'introspection' && c.status === 'pass'));
    assert.ok(!good.json.checks.some((c) => c.id === 'signature'), 'no JWS checks for an opaque token');
    assert.ok(good.json.fetches.some((f) => f.startsWith('POST ') && f.includes('/token/introspection') && f.endsWith('-> 200')), good.json.fetches.join('\n'));

    await as.revoke(token);
    const revoked = await explain(token);
    assert.equal(revoked.code, 1);
    assert.equal(revoked.json.reason, 'token_inactive');
    assert.equal(revoked.json.checks.find((c) => c.id === 'introspection').status, 'fail');
    assert.equal(revoked.json.status, 401);
  });
});
