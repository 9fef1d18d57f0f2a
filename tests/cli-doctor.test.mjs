// `portcullis doctor URL`, run as a user runs it: against a small MCP server
// that is correct except for one thing at a time (tests/helpers/broken-mcp.mjs),
// each break must fail exactly its own step, with a fix, and exit 1; against
// the real stack (the built gate in Miniflare in front of the demo origin,
// oidc-provider as the authorization server) every step must pass, the token
// steps included, with the token given through the environment and never
// printed.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { CLI, ensureCli, runFile } from './helpers/cli.mjs';
import { startBrokenMcp } from './helpers/broken-mcp.mjs';
import { startOAuthStack } from './helpers/oauth.mjs';
import { assertNoSecrets } from './helpers/http.mjs';

const TOKEN_ENV = 'PORTCULLIS_DOCTOR_TOKEN';
const run = (file, args, options) => runFile(file, args, { timeout: 120_000, ...options });

/** `portcullis doctor URL --json [args]`, parsed; `token` goes through the environment only. */
async function doctor(url, { token, args = [] } = {}) {
  const tokenArgs = token ? ['--token-env', TOKEN_ENV] : [];
  const result = await run(CLI, ['doctor', url, ...tokenArgs, ...args, '--json'], { env: token ? { [TOKEN_ENV]: token } : {} });
  let report;
  try {
    report = JSON.parse(result.stdout);
  } catch {
    assert.fail(`not JSON (exit ${result.code}): ${result.stdout}\n${result.stderr}`);
  }
  const steps = new Map(report.steps.map((step) => [step.id, step]));
  const failed = report.steps.filter((step) => step.status === 'fail');
  return { ...result, report, steps, failed };
}

/** Every step, one line each, for assertion messages. */
const listing = (report) => report.steps.map((s) => `${s.status} ${s.id}: ${s.detail}${s.fix ? ` [fix: ${s.fix}]` : ''}`).join('\n  ');

before(ensureCli);

describe('doctor against a healthy MCP server', () => {
  let server;
  before(async () => {
    server = await startBrokenMcp();
  });
  after(() => server?.close());

  test('every step passes, token steps included, and the token is never printed', async () => {
    const { code, report, steps, stdout, stderr } = await doctor(server.url, { token: server.token });
    assert.equal(code, 0, listing(report));
    assert.equal(report.command, 'doctor');
    assert.equal(report.url, server.url);
    assert.equal(report.ok, true);
    for (const step of report.steps) assert.equal(step.status, 'pass', `${step.id}: ${step.detail}\n  ${listing(report)}`);
    for (const id of ['challenge', 'resource_metadata_param', 'challenge_scope', 'challenge_error', 'metadata_header', 'metadata_path', 'metadata_root', 'resource',
      'authorization_server', 'issuer', 'pkce', 'registration', 'jwks', 'cors', 'offline_access', 'initialize', 'tools_list']) {
      assert.ok(steps.has(id), `step ${id} reported`);
    }
    assert.match(steps.get('tools_list').detail, /2 tool/);
    assert.match(steps.get('initialize').detail, /2025-06-18/);
    assertNoSecrets(stdout + stderr, [server.token]);
  });

  test('without a token the token steps are one info step saying how to give one', async () => {
    const { code, report, steps } = await doctor(server.url);
    assert.equal(code, 0, listing(report));
    assert.equal(steps.get('token')?.status, 'info');
    assert.match(steps.get('token').detail, /--token-env/);
    assert.ok(!steps.has('initialize') && !steps.has('tools_list'));
  });

  test('the human report names the failing step and its fix', async () => {
    const broken = await startBrokenMcp({ noS256: true });
    try {
      const { code, stdout } = await run(CLI, ['doctor', broken.url]);
      assert.equal(code, 1);
      assert.match(stdout, /FAIL\s+PKCE S256/);
      assert.match(stdout, /fix: .*S256/);
      assert.match(stdout, /1 failed/);
    } finally {
      await broken.close();
    }
  });
});

describe('doctor finds one broken thing at a time', () => {
  /** break option → the step that must fail, and words its detail or fix must hold. */
  const cases = [
    ['relativeResourceMetadata', 'resource_metadata_param', /absolute/],
    // PRM only at /mcp/.well-known/oauth-protected-resource, no header: the fix names where clients look.
    ['metadataAtWrongPath', 'metadata_path', /\/\.well-known\/oauth-protected-resource\/mcp\b.*\/mcp\/\.well-known\/oauth-protected-resource/],
    ['resourceMismatch', 'resource', /RFC 9728/],
    ['noCorsExpose', 'cors', /Access-Control-Expose-Headers: WWW-Authenticate/],
    ['noS256', 'pkce', /S256/],
  ];
  for (const [option, id, expected] of cases) {
    test(`${option}: fails "${id}" only, with a fix`, async () => {
      const server = await startBrokenMcp({ [option]: true });
      try {
        const { code, report, failed } = await doctor(server.url, { token: server.token });
        assert.equal(code, 1, listing(report));
        assert.equal(report.ok, false);
        assert.deepEqual(failed.map((s) => s.id), [id], listing(report));
        const [step] = failed;
        assert.ok(step.fix, `${id} has a fix`);
        assert.match(`${step.detail} ${step.fix}`, expected);
      } finally {
        await server.close();
      }
    });
  }

  test('metadata nowhere to be found: the later steps are reported as not reached', async () => {
    const server = await startBrokenMcp({ metadataAtWrongPath: true });
    try {
      const { steps } = await doctor(server.url);
      for (const id of ['resource', 'authorization_server', 'issuer', 'pkce', 'registration', 'jwks']) {
        assert.equal(steps.get(id)?.status, 'info', id);
        assert.match(steps.get(id).detail, /not reached/);
      }
    } finally {
      await server.close();
    }
  });

  test('no server at all: fails at the challenge, within the timeout, no panic', async () => {
    const server = await startBrokenMcp();
    const { url } = server;
    await server.close();
    const { code, steps, stderr } = await doctor(url, { args: ['--timeout-ms', '2000'] });
    assert.equal(code, 1);
    assert.equal(steps.get('challenge').status, 'fail');
    for (const id of ['resource_metadata_param', 'challenge_scope', 'challenge_error']) assert.match(steps.get(id)?.detail ?? '', /not reached/, id);
    assert.doesNotMatch(stderr, /panicked/);
  });
});

describe('doctor against a hostile server', () => {
  test('garbage challenges, non-UTF-8 bytes, huge and hanging answers: a report, no panic, bounded time', async () => {
    const server = http.createServer((req, res) => {
      const path = new URL(req.url, 'http://x').pathname;
      if (path === '/.well-known/oauth-protected-resource/mcp') {
        // Larger than any cap, and never valid JSON.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(Buffer.alloc(3 << 20, 0x7b));
      } else if (path === '/.well-known/oauth-protected-resource') {
        // Never answers: the per-exchange deadline ends it.
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{');
      } else {
        res.writeHead(401, [
          // Bytes 0xff 0xfe (written as latin1): not UTF-8.
          ['www-authenticate', 'Bearer \xff\xfe="\\'],
          ['www-authenticate', 'Bearer resource_metadata="http://127.0.0.1:1/\\"", scope="a", scope="b", ,,=,"'],
        ]);
        res.end(Buffer.from([0xff, 0x00, 0xfe]));
      }
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${server.address().port}/mcp`;
    try {
      const started = Date.now();
      const { code, report, stderr } = await doctor(url, { token: 'hostile-token-value', args: ['--timeout-ms', '1000'] });
      assert.equal(code, 1, listing(report));
      assert.doesNotMatch(stderr, /panicked/);
      assert.ok(Date.now() - started < 60_000, 'bounded by the per-exchange deadlines');
      assert.equal(report.steps.find((s) => s.id === 'metadata_path')?.status, 'fail', listing(report));
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('doctor against the gate (oidc-provider, demo origin)', () => {
  let env;
  before(async () => {
    // The gate refuses browser origins it is not told about (MCP transport:
    // validate Origin); claude.ai is doctor's default browser origin.
    env = await startOAuthStack({ bindings: { MCP_ALLOWED_ORIGINS: 'https://claude.ai' } });
  });
  after(() => env?.close());

  test('every step passes, the token steps with a real access token, and the token is never printed', async () => {
    const token = await env.as.token({ scope: 'invoices:read' });
    const { code, report, steps, stdout, stderr } = await doctor(env.stack.resource, { token });
    assert.equal(code, 0, listing(report));
    // No warnings either: the gate's challenge carries an absolute
    // resource_metadata and the required scope and no error code; it serves
    // both well-known forms; oidc-provider serves RFC 8414 metadata (and OIDC
    // discovery), advertises S256 and RFC 7591 registration, and publishes
    // its RS256 key.
    for (const step of report.steps) assert.equal(step.status, 'pass', `${step.id}: ${step.detail}\n  ${listing(report)}`);
    assert.match(steps.get('authorization_server').detail, /\/\.well-known\//);
    assert.match(steps.get('tools_list').detail, /lookup_invoice/);
    assertNoSecrets(stdout + stderr, [token]);
  });

  test('a browser origin the gate was not told about is a warning, not a failure', async () => {
    const { code, report, steps } = await doctor(env.stack.resource, { args: ['--origin', 'https://elsewhere.example'] });
    assert.equal(code, 0, listing(report));
    assert.equal(steps.get('cors').status, 'warn');
    assert.match(steps.get('cors').fix, /MCP_ALLOWED_ORIGINS/);
  });

  test('a refused token fails initialize without printing the token', async () => {
    const token = `${(await env.as.token({ scope: 'invoices:read' })).slice(0, -4)}AAAA`;
    const { code, steps, stdout, stderr } = await doctor(env.stack.resource, { token });
    assert.equal(code, 1);
    assert.equal(steps.get('initialize').status, 'fail');
    assert.match(steps.get('initialize').detail, /401/);
    assert.equal(steps.get('tools_list').status, 'info');
    assertNoSecrets(stdout + stderr, [token]);
  });
});
