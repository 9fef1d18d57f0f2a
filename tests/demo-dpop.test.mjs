// `npm start -- --dpop`: the demo stack with DPoP required (scripts/dev.mjs
// under wrangler dev, DPOP=dpop with server nonces and the Durable Object
// replay store). Its printed one-liner runs demo/dpop-client.mjs, which gets a
// DPoP-bound token from the real authorization server with a proof at the
// token endpoint, is refused when it sends that token as Bearer, and calls a
// tool through the gate with a new proof per request; `call` does the same;
// Ctrl-C stops everything. (A file of its own: wrangler dev builds the worker
// before it serves, and demo.test.mjs starts two such stacks already.)

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { existsSync, rmSync } from 'node:fs';
import { runProcess, startDevStack } from './helpers/dev-stack.mjs';
import { parseChallenges } from './helpers/dpop.mjs';

describe('npm start -- --dpop: DPoP required', () => {
  let child;
  let readOutput;
  let env;
  let stateDir;
  let ports;

  before(async () => {
    const stack = await startDevStack(['--dpop'], { gate: 'GATE_PORT', origin: 'ORIGIN_PORT', auth: 'AUTH_PORT' });
    ({ child, env, ports, stateDir } = stack);
    readOutput = stack.output;
  });

  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    if (stateDir) rmSync(stateDir, { recursive: true, force: true });
  });

  test('the printed one-liner (demo/dpop-client.mjs) gets a DPoP-bound token, is refused as Bearer, and calls a tool with proofs', async () => {
    const resource = `http://127.0.0.1:${ports.gate}/mcp`;
    const metadata = await (await fetch(`http://127.0.0.1:${ports.gate}/.well-known/oauth-protected-resource/mcp`)).json();
    assert.equal(metadata.dpop_bound_access_tokens_required, true);
    const challenge = await fetch(resource, { method: 'POST' });
    assert.equal(challenge.status, 401);
    assert.ok(parseChallenges(challenge.headers.get('www-authenticate')).some((c) => c.scheme === 'DPoP'));
    assert.ok(challenge.headers.get('dpop-nonce'), 'nonces are on');

    const lines = readOutput().split('\n');
    const oneLine = lines[lines.findIndex((l) => l.startsWith('One line')) + 2];
    assert.match(oneLine, new RegExp(`^GATE_PORT=${ports.gate} node demo/dpop-client\\.mjs `));
    const { code, out, err } = await runProcess('bash', ['-c', oneLine], env);
    assert.equal(code, 0, out + err);
    assert.match(out, /token: token_type DPoP, cnf \{"jkt":"[A-Za-z0-9_-]{43}"\} \(this key\)/);
    assert.match(out, /as Bearer: 401/);
    assert.match(out, /the gate asked for a DPoP nonce: retrying with it/);
    assert.match(readOutput(), /replay store: DPOP_REPLAY/);
    assert.match(out, /Invoice INV-1001: ACME Corp/);
    assert.match(readOutput(), /"reason":"dpop_bound_token_as_bearer"|"reason":"dpop_required"/);
    // `call` runs the DPoP client in a DPoP stack.
    const called = await runProcess(process.execPath, ['scripts/dev.mjs', 'call', 'lookup_invoice', '{"invoice_id":"INV-1002"}'], env);
    assert.equal(called.code, 0, called.out + called.err);
    assert.match(called.out, /Invoice INV-1002: Globex/);
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
