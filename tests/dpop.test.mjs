// DPoP (RFC 9449, the MCP profile SEP-1932), black-box: the built worker in
// Miniflare, proofs made with jose as a client makes them
// (tests/helpers/dpop.mjs), tokens bound to their keys (`cnf.jkt`) by the
// demo issuer, by a real authorization server (oidc-provider) as JWTs, and
// as opaque tokens whose introspection response carries the binding. Every
// refusal is checked for its status, its challenge(s), its JSON body, the
// reason the gate logs, and an origin that received nothing.
//
// Also: per-route policies (dpop, either, bearer), server nonces (round
// trip, forged, stale, a rotated secret, CORS), the Durable Object replay
// store (a replay refused by a fresh isolate) and its failures (503, fail
// closed), and DPoP configuration errors (a generic 500).
//
// The wire answers and log reasons are those of the DPoP contract (issue
// 19). The replay across two gates sharing one Durable Object is in
// tests/dpop-replay-store.test.mjs.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeJwt, exportJWK } from 'jose';
import { Miniflare } from 'miniflare';
import { startAuthorizationServer } from '../demo/authorization-server.mjs';
import { startStack } from './helpers/stack.mjs';
import { authorizeOverHttp, startOAuthStack } from './helpers/oauth.mjs';
import { boundToken, dpopKey, dpopProof, parseChallenges } from './helpers/dpop.mjs';
import { replayStoreOptions } from './helpers/replay.mjs';
import { COMPATIBILITY_DATE, SHARED_OPTIONS, withTimeout } from './helpers/gate.mjs';
import { corruptSignature } from './helpers/tokens.mjs';
import { assertNoSecrets, errorBody, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';

const DEFAULT_ALGS = 'ES256 EdDSA RS256 PS256';
const REQUIRED_SCOPE = 'invoices:read';
const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const PROTOCOL_VERSION = '2025-06-18';
const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'dpop-test', version: '0' } },
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => Math.floor(Date.now() / 1000);

/** The gate's RFC 9728 metadata URL for the resource at `path` of `base`. */
const metadataUrlOf = (base, path = '/mcp') => `${base}/.well-known/oauth-protected-resource${path}`;

/**
 * A request through the gate with `Authorization: <scheme> <token>` and a
 * DPoP proof made for it (`proof` given, or made with `key` and `proofOptions`
 * over the defaults htm = method, htu = the URL without its query, ath of the
 * token). `proof: null` sends no DPoP header.
 */
async function dpopFetch(stack, path, { method = 'GET', token, key, proof, proofOptions = {}, scheme = 'DPoP', headers = {}, body } = {}) {
  const url = new URL(path, stack.base);
  const htu = `${url.origin}${url.pathname}`;
  const sent = { ...headers };
  if (token !== undefined) sent.authorization = `${scheme} ${token}`;
  const dpop = proof !== undefined ? proof : await dpopProof(key, { htm: method, htu, accessToken: token, ...proofOptions });
  if (dpop !== null) sent.dpop = dpop;
  return stack.gate.fetch(`${url.pathname}${url.search}`, { method, headers: sent, body });
}

/** The request-log lines with `reason` so far. */
function linesWith(stack, reason) {
  return stack.gate.output.json((l) => l.event === 'request' && l.reason === reason);
}

/**
 * A refusal by the gate, per the contract: `status`; the challenges are
 * exactly `schemes` (any order; null: at least a DPoP one); the DPoP challenge carries `algs`,
 * `resource_metadata` and `error` (null: none; with an error_description);
 * the body is JSON with the same error; the log line of this request has
 * `reason` (one of, when an array) and `status`; the origin received nothing.
 *
 * @returns {Promise<{response: Response, challenges: object[], dpop: object, body: object, line: object}>}
 */
async function expectDpopRefusal(stack, send, { status = 401, reason, error, schemes = ['DPoP'], algs = DEFAULT_ALGS, metadataUrl = metadataUrlOf(stack.base), scope }) {
  const reasons = [reason].flat();
  const seen = new Map(reasons.map((r) => [r, linesWith(stack, r).length]));
  const response = await expectOriginUntouched(stack.origin, send);
  const text = await response.clone().text();
  assert.equal(response.status, status, `status, expected for ${reasons.join('|')} (body: ${text.slice(0, 300)}; www-authenticate: ${response.headers.get('www-authenticate')})`);
  const header = response.headers.get('www-authenticate');
  const challenges = parseChallenges(header);
  if (schemes === null) {
    assert.ok(challenges.some((c) => c.scheme.toLowerCase() === 'dpop'), `a DPoP challenge in: ${header}`);
  } else {
    assert.deepEqual(challenges.map((c) => c.scheme.toLowerCase()).sort(), schemes.map((s) => s.toLowerCase()).sort(), `challenge schemes in: ${header}`);
  }
  const dpop = challenges.find((c) => c.scheme.toLowerCase() === 'dpop');
  if (dpop) {
    assert.equal(dpop.params.algs, algs, `algs in: ${header}`);
    assert.equal(dpop.params.resource_metadata, metadataUrl, `resource_metadata in: ${header}`);
    if (error === null) {
      assert.ok(!('error' in dpop.params), `no error= expected: ${header}`);
    } else if (error !== undefined) {
      assert.equal(dpop.params.error, error, `error in: ${header}`);
      assert.ok(dpop.params.error_description, `error_description in: ${header}`);
    }
    if (scope !== undefined) assert.equal(dpop.params.scope, scope, `scope in: ${header}`);
  }
  for (const bearer of challenges.filter((c) => c.scheme.toLowerCase() === 'bearer')) {
    assert.equal(bearer.params.resource_metadata, metadataUrl, `Bearer resource_metadata in: ${header}`);
  }
  const body = await errorBody(response, error ?? undefined);
  let line;
  const deadline = Date.now() + 5000;
  while (!line) {
    const found = reasons.map((r) => linesWith(stack, r).slice(seen.get(r))).flat();
    line = found.at(-1);
    if (line) break;
    if (Date.now() > deadline) assert.fail(`no new log line with reason ${reasons.join('|')}; last lines:\n${stack.gate.output.text.slice(-3000)}`);
    await sleep(25);
  }
  assert.equal(line.status, status, 'the logged status');
  return { response, challenges, dpop, body, line };
}

/** Asserts `sent` was forwarded (the origin got one request) and returns { response, record }. */
async function expectForwarded(stack, sent) {
  const before = stack.origin.requests.length;
  const response = await sent;
  const text = await response.clone().text();
  assert.ok(![400, 401, 403, 429, 500, 503].includes(response.status) || stack.origin.requests.length > before, `refused: ${response.status} ${text.slice(0, 300)} (www-authenticate: ${response.headers.get('www-authenticate')})`);
  assert.equal(stack.origin.requests.length, before + 1, 'forwarded once');
  return { response, record: stack.origin.requests.at(-1) };
}

/** The origin's record holds neither the token nor the proof, and no DPoP header. */
function assertNothingLeaked(record, ...secrets) {
  assert.equal(record.headers.dpop, undefined, 'the origin received a DPoP header');
  assertNoSecrets(JSON.stringify(record), secrets.filter(Boolean), 'the forwarded request');
}

/** One request with raw header lines (node:http keeps repeated headers apart), as a Response. */
function rawRequest(url, { method = 'GET', headers = [] }) {
  // Given as an array, the header lines are sent as they are: Host too must be given.
  const lines = headers.some((h, i) => i % 2 === 0 && h.toLowerCase() === 'host') ? headers : ['Host', new URL(url).host, ...headers];
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method, headers: lines, timeout: 15_000 }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const responseHeaders = new Headers();
        for (let i = 0; i < res.rawHeaders.length; i += 2) responseHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
        resolve(new Response(Buffer.concat(chunks), { status: res.statusCode, headers: responseHeaders }));
      });
      res.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
    request.end();
  });
}

/** The JSON-RPC answer in a JSON or SSE body. */
async function rpcAnswer(response) {
  const text = await response.text();
  if ((response.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    const data = text
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => JSON.parse(l.slice(5)))
      .find((m) => m.id !== undefined);
    assert.ok(data, `no JSON-RPC answer in the stream: ${text.slice(0, 300)}`);
    return data;
  }
  return JSON.parse(text);
}

/**
 * initialize, notifications/initialized, tools/list through the gate, a
 * fresh proof each time; returns the tool names. As a client does (RFC 9449
 * §8): the last DPoP-Nonce the gate sent goes into the next proof, and a
 * `use_dpop_nonce` answer is retried once with the new nonce.
 */
async function mcpToolsList(stack, { token, key, path = new URL(stack.resource).pathname, counts = {} }) {
  let nonce;
  const post = async (body, sessionId) => {
    for (let attempt = 0; ; attempt += 1) {
      const response = await dpopFetch(stack, path, {
        method: 'POST',
        token,
        key,
        proofOptions: nonce ? { nonce } : {},
        headers: { ...MCP_HEADERS, ...(sessionId ? { 'mcp-session-id': sessionId, 'mcp-protocol-version': PROTOCOL_VERSION } : {}) },
        body: JSON.stringify(body),
      });
      nonce = response.headers.get('dpop-nonce') ?? nonce;
      const challenge = response.headers.get('www-authenticate') ?? '';
      if (response.status === 401 && /use_dpop_nonce/.test(challenge) && attempt === 0) {
        counts.nonceRetries = (counts.nonceRetries ?? 0) + 1;
        await response.body?.cancel();
        continue;
      }
      return response;
    }
  };
  const initialized = await post(INITIALIZE);
  assert.equal(initialized.status, 200, `initialize: ${initialized.status} ${initialized.headers.get('www-authenticate')}`);
  const sessionId = initialized.headers.get('mcp-session-id');
  assert.ok(sessionId, 'a session id');
  assert.equal((await rpcAnswer(initialized)).result.protocolVersion, PROTOCOL_VERSION);
  const notified = await post({ jsonrpc: '2.0', method: 'notifications/initialized' }, sessionId);
  assert.equal(notified.status, 202);
  await notified.body?.cancel();
  const listed = await post({ jsonrpc: '2.0', id: 2, method: 'tools/list' }, sessionId);
  assert.equal(listed.status, 200);
  return (await rpcAnswer(listed)).result.tools.map((t) => t.name);
}

describe('DPoP required (DPOP=dpop, replay store in isolate memory)', () => {
  let stack;
  let key;
  let token;
  let metadataUrl;
  const echo = (init) => dpopFetch(stack, '/mcp/echo', init);

  before(async () => {
    stack = await startStack({ bindings: () => ({ DPOP: 'dpop', MCP_REQUIRED_SCOPES: REQUIRED_SCOPE }) });
    metadataUrl = metadataUrlOf(stack.base);
    key = await dpopKey('ES256');
    token = await boundToken(stack.issuer, key);
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
  });

  test('a valid proof passes: forwarded, and the origin sees neither the token nor the proof', async () => {
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token });
    const { response, record } = await expectForwarded(stack, echo({ token, proof }));
    assert.equal(response.status, 200);
    const seen = await response.json();
    assert.equal(seen.headers.dpop, undefined);
    assertNothingLeaked(record, token, proof);
    const line = stack.gate.requestLogs().at(-1);
    assert.equal(line.status, 200);
  });

  test('an MCP session over DPoP: initialize, tools/list, a new proof for each request', async () => {
    const tools = await mcpToolsList(stack, { token, key });
    assert.ok(tools.includes('lookup_invoice'), tools.join(', '));
  });

  test('each of the default algorithms passes (ES256, EdDSA, RS256, PS256), and the scheme name is case-insensitive', async () => {
    for (const alg of DEFAULT_ALGS.split(' ')) {
      const algKey = await dpopKey(alg);
      const algToken = await boundToken(stack.issuer, algKey);
      const { response } = await expectForwarded(stack, echo({ token: algToken, key: algKey }));
      assert.equal(response.status, 200, alg);
      await response.body?.cancel();
    }
    const { response } = await expectForwarded(stack, echo({ token, key, scheme: 'dpop' }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });

  test('htu: queries and fragments are not compared, the scheme and host compare case-insensitively', async () => {
    // The request has a query; the proof's htu has none (RFC 9449 §4.2, §4.3 step 9).
    const withQuery = await expectForwarded(stack, dpopFetch(stack, '/mcp/echo?page=2', { token, key }));
    assert.equal(withQuery.response.status, 200);
    assert.equal((await withQuery.response.json()).query, '?page=2');
    // And a query or fragment in the htu is ignored in the comparison (§4.3 step 9).
    for (const htu of [`${stack.base}/mcp/echo?page=2`, `${stack.base}/mcp/echo#top`]) {
      const { response } = await expectForwarded(stack, echo({ token, key, proofOptions: { htu } }));
      assert.equal(response.status, 200, htu);
      await response.body?.cancel();
    }
    const upper = `${stack.base.replace('http://', 'HTTP://')}/mcp/echo`;
    const { response } = await expectForwarded(stack, echo({ token, key, proofOptions: { htu: upper } }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });

  test('no credentials: 401 with a DPoP challenge (algs, scope, resource_metadata) and no error', async () => {
    await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp'), { reason: 'no_credentials', error: null, scope: REQUIRED_SCOPE, metadataUrl });
  });

  test('the metadata names the proof algorithms and that bound tokens are required', async () => {
    const response = await stack.gate.fetch('/.well-known/oauth-protected-resource/mcp');
    assert.equal(response.status, 200);
    const metadata = await response.json();
    assert.deepEqual(metadata.dpop_signing_alg_values_supported, DEFAULT_ALGS.split(' '));
    assert.equal(metadata.dpop_bound_access_tokens_required, true);
  });

  const proofProblems = [
    ['wrong typ (JWT)', { typ: 'JWT' }, 'dpop_wrong_typ'],
    ['no typ', { typ: null }, 'dpop_wrong_typ'],
    ['alg none (unsigned)', { alg: 'none' }, 'dpop_alg_not_allowed'],
    ['alg HS256', { alg: 'HS256' }, 'dpop_alg_not_allowed'],
    ['no jwk', { jwk: null }, 'dpop_jwk_invalid'],
    ['a signature by another key', 'other-key', 'dpop_bad_signature'],
    ['a corrupted signature', 'corrupt', 'dpop_bad_signature'],
    ['missing jti', { omit: ['jti'] }, 'dpop_claim_missing'],
    ['missing htm', { omit: ['htm'] }, 'dpop_claim_missing'],
    ['missing htu', { omit: ['htu'] }, 'dpop_claim_missing'],
    ['missing iat', { omit: ['iat'] }, 'dpop_claim_missing'],
    ['missing ath', { omit: ['ath'] }, 'dpop_claim_missing'],
    ['wrong htm (POST for a GET)', { htm: 'POST' }, 'dpop_htm_mismatch'],
    ['htm in lower case', { htm: 'get' }, 'dpop_htm_mismatch'],
    ['wrong htu: another path', { htu: 'other-path' }, 'dpop_htu_mismatch'],
    ['wrong htu: another host', { htu: 'other-host' }, 'dpop_htu_mismatch'],
    ['wrong htu: another port', { htu: 'other-port' }, 'dpop_htu_mismatch'],
    ['wrong htu: https', { htu: 'https' }, 'dpop_htu_mismatch'],
    ['iat too old (10 minutes)', { iat: -600 }, 'dpop_iat_out_of_window'],
    ['iat in the future (10 minutes)', { iat: 600 }, 'dpop_iat_out_of_window'],
    ['ath of another token', { accessToken: 'another-token' }, 'dpop_ath_mismatch'],
  ];

  for (const [name, change, reason] of proofProblems) {
    test(`a proof with ${name}: 401 invalid_dpop_proof (${reason}), origin untouched`, async () => {
      const htu = `${stack.base}/mcp/echo`;
      let proof;
      if (change === 'other-key') {
        proof = await dpopProof(key, { htm: 'GET', htu, accessToken: token, signWith: await dpopKey('ES256') });
      } else if (change === 'corrupt') {
        proof = corruptSignature(await dpopProof(key, { htm: 'GET', htu, accessToken: token }));
      } else {
        const options = { htm: 'GET', htu, accessToken: token, ...change };
        if (change.htu === 'other-path') options.htu = `${stack.base}/mcp/other`;
        if (change.htu === 'other-host') options.htu = htu.replace('127.0.0.1', 'localhost');
        if (change.htu === 'other-port') options.htu = htu.replace(`:${new URL(stack.base).port}`, ':1');
        if (change.htu === 'https') options.htu = htu.replace('http:', 'https:');
        if (typeof change.iat === 'number') options.iat = now() + change.iat;
        proof = await dpopProof(key, options);
      }
      await expectDpopRefusal(stack, () => echo({ token, proof }), { reason, error: 'invalid_dpop_proof', metadataUrl });
    });
  }

  test('a proof whose jwk holds the private key: dpop_jwk_private', async () => {
    const privateJwk = await exportJWK(key.privateKey);
    assert.ok(privateJwk.d);
    await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { jwk: privateJwk } }), { reason: 'dpop_jwk_private', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('an algorithm the gate can verify but DPOP_ALGORITHMS does not list (RS384): dpop_alg_not_allowed', async () => {
    const rs384 = await dpopKey('RS384');
    const rs384Token = await boundToken(stack.issuer, rs384);
    await expectDpopRefusal(stack, () => echo({ token: rs384Token, key: rs384 }), { reason: 'dpop_alg_not_allowed', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('an iat within the window (4 minutes old, 1 minute ahead) passes', async () => {
    for (const offset of [-240, 60]) {
      const { response } = await expectForwarded(stack, echo({ token, key, proofOptions: { iat: now() + offset } }));
      assert.equal(response.status, 200, `iat ${offset}`);
      await response.body?.cancel();
    }
  });

  test('a token bound to another key (cnf.jkt): dpop_jkt_mismatch', async () => {
    const other = await dpopKey('ES256');
    const otherToken = await boundToken(stack.issuer, other);
    await expectDpopRefusal(stack, () => echo({ token: otherToken, key }), { reason: 'dpop_jkt_mismatch', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('a replayed proof (same jti) is refused in the same isolate: dpop_replayed', async () => {
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token });
    const { response } = await expectForwarded(stack, echo({ token, proof }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
    await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_replayed', error: 'invalid_dpop_proof', metadataUrl });
    // Another proof, newly signed, with the same jti: the jti is what is once-only.
    const again = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token, jti: decodeJwt(proof).jti });
    assert.notEqual(again, proof);
    await expectDpopRefusal(stack, () => echo({ token, proof: again }), { reason: 'dpop_replayed', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('a refused proof does not use up its jti (a proof for another URL, then the right one with the same jti)', async () => {
    const jti = `jti-${randomBytes(8).toString('hex')}`;
    await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { jti, htu: `${stack.base}/mcp/elsewhere` } }), { reason: 'dpop_htu_mismatch', error: 'invalid_dpop_proof', metadataUrl });
    const { response } = await expectForwarded(stack, echo({ token, key, proofOptions: { jti } }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });

  test('the DPoP scheme without a proof: dpop_proof_missing', async () => {
    await expectDpopRefusal(stack, () => echo({ token, proof: null }), { reason: 'dpop_proof_missing', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('two DPoP headers, or two proofs joined with a comma: dpop_proof_repeated', async () => {
    const htu = `${stack.base}/mcp/echo`;
    const first = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
    const second = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
    await expectDpopRefusal(
      stack,
      () => rawRequest(htu, { headers: ['Authorization', `DPoP ${token}`, 'DPoP', first, 'DPoP', second] }),
      { reason: 'dpop_proof_repeated', error: 'invalid_dpop_proof', metadataUrl },
    );
    const third = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
    const fourth = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
    await expectDpopRefusal(stack, () => echo({ token, proof: `${third}, ${fourth}` }), { reason: 'dpop_proof_repeated', error: 'invalid_dpop_proof', metadataUrl });
    // The same proof twice is two headers all the same.
    const fifth = await dpopProof(key, { htm: 'GET', htu, accessToken: token });
    await expectDpopRefusal(
      stack,
      () => rawRequest(htu, { headers: ['Authorization', `DPoP ${token}`, 'DPoP', fifth, 'DPoP', fifth] }),
      { reason: 'dpop_proof_repeated', error: 'invalid_dpop_proof', metadataUrl },
    );
  });

  test('a proof over 8192 bytes is refused unread: dpop_proof_too_large', async () => {
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token, claims: { pad: 'x'.repeat(9000) } });
    assert.ok(proof.length > 8192);
    await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_proof_too_large', error: 'invalid_dpop_proof', metadataUrl });
  });

  test('a proof that is not a JWS: dpop_proof_malformed', async () => {
    for (const proof of ['not-a-jws', 'a.b.c', `${Buffer.from('{').toString('base64url')}.e30.AA`]) {
      await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_proof_malformed', error: 'invalid_dpop_proof', metadataUrl });
    }
  });

  test('an unbound token with the DPoP scheme: invalid_token (dpop_token_not_bound)', async () => {
    const unbound = await stack.issuer.mint();
    await expectDpopRefusal(stack, () => echo({ token: unbound, key }), { reason: 'dpop_token_not_bound', error: 'invalid_token', metadataUrl });
  });

  test('an unbound Bearer token on a dpop route: invalid_token (dpop_required)', async () => {
    const unbound = await stack.issuer.mint();
    await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${unbound}` } }), {
      reason: 'dpop_required',
      error: 'invalid_token',
      metadataUrl,
    });
  });

  test('a bound token sent as Bearer (with or without a proof): refused with invalid_token', async () => {
    // The contract names dpop_bound_token_as_bearer for a bound token as
    // Bearer on a dpop/either route, and dpop_required for any Bearer token
    // on a dpop route: either reason is accepted here (see the either route).
    const reason = ['dpop_bound_token_as_bearer', 'dpop_required'];
    await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } }), { reason, error: 'invalid_token', metadataUrl });
    await expectDpopRefusal(stack, () => echo({ token, key, scheme: 'Bearer' }), { reason, error: 'invalid_token', metadataUrl });
  });

  test('a bound token lacking the required scope: 403 insufficient_scope with a DPoP challenge', async () => {
    const narrow = await boundToken(stack.issuer, key, { scope: 'invoices:write' });
    await expectDpopRefusal(stack, () => echo({ token: narrow, key }), { status: 403, reason: 'insufficient_scope', error: 'insufficient_scope', scope: REQUIRED_SCOPE, metadataUrl });
  });

  test('the gate never prints a token or a proof', () => {
    assertNoSecrets(stack.gate.output.text, stack.issuer.minted);
  });

  test('isolate memory alone forgets across isolates (the documented limit of DPOP_REPLAY_STORE=memory)', async () => {
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token });
    const { response } = await expectForwarded(stack, echo({ token, proof }));
    await response.body?.cancel();
    await stack.gate.restart();
    const replay = await expectForwarded(stack, echo({ token, proof }));
    assert.equal(replay.response.status, 200, 'a new isolate with the memory store cannot know the jti');
    await replay.response.body?.cancel();
    assert.match(
      stack.gate.output.lines.filter((l) => l.json?.event !== 'request').map((l) => l.line).join('\n'),
      /DPOP_REPLAY_STORE|replay/i,
      'a configuration warning about the memory store',
    );
  });
});

describe('per-route policy (MCP_ROUTES: dpop, either, bearer)', () => {
  let stack;
  let key;
  const resource = (name) => `${stack.base}/${name}/mcp`;
  const metadataUrl = (name) => metadataUrlOf(stack.base, `/${name}/mcp`);
  const tokenFor = (name, claims = {}) => stack.issuer.mint({ aud: resource(name), ...claims });
  const boundFor = (name, claims = {}) => boundToken(stack.issuer, key, { aud: resource(name), ...claims });
  const initialize = (name, init) =>
    dpopFetch(stack, `/${name}/mcp`, { method: 'POST', ...init, headers: { ...MCP_HEADERS, ...(init.headers ?? {}) }, body: JSON.stringify(INITIALIZE) });

  before(async () => {
    stack = await startStack({
      bindings: ({ base, origin }) => ({
        MCP_RESOURCE: undefined,
        MCP_ORIGIN: undefined,
        MCP_ROUTES: JSON.stringify([
          { resource: `${base}/strict/mcp`, origin: origin.url, required_scopes: REQUIRED_SCOPE, dpop: 'dpop' },
          { resource: `${base}/either/mcp`, origin: origin.url, required_scopes: REQUIRED_SCOPE, dpop: 'either' },
          { resource: `${base}/plain/mcp`, origin: origin.url, required_scopes: REQUIRED_SCOPE },
        ]),
      }),
    });
    key = await dpopKey('EdDSA');
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
  });

  test('metadata: dpop and either name the algorithms, only dpop requires bound tokens, bearer says nothing of DPoP', async () => {
    const read = async (name) => (await stack.gate.fetch(`/.well-known/oauth-protected-resource/${name}/mcp`)).json();
    const strict = await read('strict');
    assert.deepEqual(strict.dpop_signing_alg_values_supported, DEFAULT_ALGS.split(' '));
    assert.equal(strict.dpop_bound_access_tokens_required, true);
    const either = await read('either');
    assert.deepEqual(either.dpop_signing_alg_values_supported, DEFAULT_ALGS.split(' '));
    assert.notEqual(either.dpop_bound_access_tokens_required, true);
    const plain = await read('plain');
    assert.equal(plain.dpop_signing_alg_values_supported, undefined);
    assert.equal(plain.dpop_bound_access_tokens_required, undefined);
  });

  test('no credentials: a DPoP challenge on dpop, Bearer and DPoP challenges on either, Bearer alone on bearer', async () => {
    await expectDpopRefusal(stack, () => stack.gate.fetch('/strict/mcp'), { reason: 'no_credentials', error: null, scope: REQUIRED_SCOPE, metadataUrl: metadataUrl('strict') });
    const { challenges } = await expectDpopRefusal(stack, () => stack.gate.fetch('/either/mcp'), {
      reason: 'no_credentials',
      error: null,
      schemes: ['Bearer', 'DPoP'],
      scope: REQUIRED_SCOPE,
      metadataUrl: metadataUrl('either'),
    });
    assert.equal(challenges.find((c) => c.scheme === 'Bearer').params.scope, REQUIRED_SCOPE);
    const plain = await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/plain/mcp'));
    await expectRefusal(plain, { status: 401, error: null, resourceMetadata: metadataUrl('plain'), scope: REQUIRED_SCOPE });
  });

  test('either: an unbound Bearer token passes, and so does a bound token with a proof', async () => {
    const bearer = await expectForwarded(stack, stack.gate.fetch('/either/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${await tokenFor('either')}` }, body: JSON.stringify(INITIALIZE) }));
    assert.equal(bearer.response.status, 200);
    await bearer.response.body?.cancel();
    const token = await boundFor('either');
    const bound = await expectForwarded(stack, initialize('either', { token, key }));
    assert.equal(bound.response.status, 200);
    await bound.response.body?.cancel();
    assertNothingLeaked(bound.record, token);
  });

  test('either: a bound token as Bearer is refused (dpop_bound_token_as_bearer) with both challenges', async () => {
    const token = await boundFor('either');
    await expectDpopRefusal(stack, () => stack.gate.fetch('/either/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: JSON.stringify(INITIALIZE) }), {
      reason: 'dpop_bound_token_as_bearer',
      error: 'invalid_token',
      schemes: ['Bearer', 'DPoP'],
      metadataUrl: metadataUrl('either'),
    });
  });

  test('either: a bad proof is still refused (invalid_dpop_proof)', async () => {
    const token = await boundFor('either');
    // The contract leaves open whether a Bearer challenge rides along here.
    await expectDpopRefusal(stack, () => initialize('either', { token, key, proofOptions: { htm: 'GET' } }), {
      reason: 'dpop_htm_mismatch',
      error: 'invalid_dpop_proof',
      schemes: null,
      metadataUrl: metadataUrl('either'),
    });
  });

  test('either: an unbound token with the DPoP scheme is refused (dpop_token_not_bound)', async () => {
    const token = await tokenFor('either');
    const { challenges } = await expectDpopRefusal(stack, () => initialize('either', { token, key }), {
      reason: 'dpop_token_not_bound',
      error: 'invalid_token',
      schemes: ['Bearer', 'DPoP'],
      metadataUrl: metadataUrl('either'),
    });
    assert.ok(challenges.length === 2);
  });

  test('dpop route: an unbound Bearer token is refused (dpop_required)', async () => {
    const token = await tokenFor('strict');
    await expectDpopRefusal(stack, () => stack.gate.fetch('/strict/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: JSON.stringify(INITIALIZE) }), {
      reason: 'dpop_required',
      error: 'invalid_token',
      metadataUrl: metadataUrl('strict'),
    });
  });

  test('dpop route: a bound token with a proof passes; a token for another route is still refused by audience', async () => {
    const token = await boundFor('strict');
    const { response } = await expectForwarded(stack, initialize('strict', { token, key }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
    const eitherToken = await boundFor('either');
    const refused = await expectOriginUntouched(stack.origin, () => initialize('strict', { token: eitherToken, key }));
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
  });

  test('bearer route: an unbound Bearer token passes as before; a bound token is refused (sender_constrained_token)', async () => {
    const plain = await expectForwarded(stack, stack.gate.fetch('/plain/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${await tokenFor('plain')}` }, body: JSON.stringify(INITIALIZE) }));
    assert.equal(plain.response.status, 200);
    await plain.response.body?.cancel();
    const bound = await boundFor('plain');
    const before = linesWith(stack, 'sender_constrained_token').length;
    const response = await expectOriginUntouched(stack.origin, () => stack.gate.fetch('/plain/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${bound}` }, body: JSON.stringify(INITIALIZE) }));
    await expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl('plain') });
    await stack.gate.output.waitFor((l) => l.event === 'request' && l.reason === 'sender_constrained_token', { count: before + 1 });
  });
});

describe('server nonces (DPOP_NONCE_SECRET)', () => {
  const INSPECTOR = 'http://localhost:6274';
  const LIFETIME = 10;
  let stack;
  let key;
  let token;
  let metadataUrl;
  const echo = (init) => dpopFetch(stack, '/mcp/echo', init);

  /** A nonce the gate hands out now (from the challenge to a request without credentials). */
  async function freshNonce() {
    const response = await stack.gate.fetch('/mcp');
    await response.body?.cancel();
    const nonce = response.headers.get('dpop-nonce');
    assert.ok(nonce, 'a DPoP-Nonce on every answer of a dpop route');
    return nonce;
  }

  before(async () => {
    stack = await startStack({
      bindings: () => ({
        DPOP: 'dpop',
        DPOP_NONCE_SECRET: randomBytes(32).toString('base64url'),
        DPOP_NONCE_LIFETIME_SECONDS: String(LIFETIME),
        MCP_ALLOWED_ORIGINS: INSPECTOR,
      }),
    });
    metadataUrl = metadataUrlOf(stack.base);
    key = await dpopKey('ES256');
    token = await boundToken(stack.issuer, key);
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
  });

  test('round trip: a proof without a nonce gets 401 use_dpop_nonce and a DPoP-Nonce; the retry with it passes', async () => {
    const { response } = await expectDpopRefusal(stack, () => echo({ token, key }), { reason: 'dpop_nonce_missing', error: 'use_dpop_nonce', metadataUrl });
    const nonce = response.headers.get('dpop-nonce');
    assert.match(nonce ?? '', /^[A-Za-z0-9_-]+$/, 'a DPoP-Nonce (base64url)');
    const retry = await expectForwarded(stack, echo({ token, key, proofOptions: { nonce } }));
    assert.equal(retry.response.status, 200);
    assert.ok(retry.response.headers.get('dpop-nonce'), 'a forwarded answer carries a fresh nonce too');
    assertNothingLeaked(retry.record, token, nonce);
    // A nonce is not once-only: the next request may reuse it while it is fresh.
    const again = await expectForwarded(stack, echo({ token, key, proofOptions: { nonce } }));
    assert.equal(again.response.status, 200);
    await again.response.body?.cancel();
  });

  test('an MCP session with nonces: one use_dpop_nonce retry, then every request carries the last nonce', async () => {
    const counts = {};
    const tools = await mcpToolsList(stack, { token, key, counts });
    assert.ok(tools.includes('lookup_invoice'));
    assert.equal(counts.nonceRetries, 1, 'only the first request needed a retry');
  });

  test('every answer on the route carries a DPoP-Nonce: the no-credentials challenge and proof problems', async () => {
    const { response } = await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp'), { reason: 'no_credentials', error: null, metadataUrl });
    assert.ok(response.headers.get('dpop-nonce'));
    const nonce = await freshNonce();
    const bad = await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { nonce, typ: 'JWT' } }), { reason: 'dpop_wrong_typ', error: 'invalid_dpop_proof', metadataUrl });
    assert.ok(bad.response.headers.get('dpop-nonce'));
  });

  test('a forged nonce (its tag changed, or made up): use_dpop_nonce (dpop_nonce_invalid) with a new nonce', async () => {
    const real = Buffer.from(await freshNonce(), 'base64url');
    real[real.length - 1] ^= 0x01;
    for (const nonce of [real.toString('base64url'), 'made-up-nonce', randomBytes(40).toString('base64url')]) {
      const { response } = await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { nonce } }), { reason: 'dpop_nonce_invalid', error: 'use_dpop_nonce', metadataUrl });
      assert.ok(response.headers.get('dpop-nonce'));
    }
  });

  test('CORS: a preflight allows the DPoP header, and answers expose DPoP-Nonce', async () => {
    const preflight = await stack.gate.fetch('/mcp', {
      method: 'OPTIONS',
      headers: { origin: INSPECTOR, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type, dpop' },
    });
    assert.ok(preflight.status === 204 || preflight.status === 200, `preflight ${preflight.status}`);
    assert.match(preflight.headers.get('access-control-allow-headers') ?? '', /(^|[\s,])DPoP($|[\s,])/i);
    await preflight.body?.cancel();
    const challenge = await stack.gate.fetch('/mcp', { headers: { origin: INSPECTOR } });
    await challenge.body?.cancel();
    assert.equal(challenge.headers.get('access-control-allow-origin'), INSPECTOR);
    assert.match(challenge.headers.get('access-control-expose-headers') ?? '', /DPoP-Nonce/i);
  });

  test(`a stale nonce (older than DPOP_NONCE_LIFETIME_SECONDS=${LIFETIME}): use_dpop_nonce (dpop_nonce_stale)`, async () => {
    const nonce = await freshNonce();
    await sleep((LIFETIME + 1.5) * 1000);
    const { response } = await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { nonce } }), { reason: 'dpop_nonce_stale', error: 'use_dpop_nonce', metadataUrl });
    const renewed = response.headers.get('dpop-nonce');
    assert.ok(renewed && renewed !== nonce);
    const { response: passed } = await expectForwarded(stack, echo({ token, key, proofOptions: { nonce: renewed } }));
    assert.equal(passed.status, 200);
    await passed.body?.cancel();
  });

  test('a nonce issued under another secret (the secret rotated): dpop_nonce_invalid', async () => {
    const nonce = await freshNonce();
    await stack.gate.restart({ DPOP_NONCE_SECRET: randomBytes(32).toString('base64url') });
    await expectDpopRefusal(stack, () => echo({ token, key, proofOptions: { nonce } }), { reason: 'dpop_nonce_invalid', error: 'use_dpop_nonce', metadataUrl });
  });
});

describe('replay store in a Durable Object (DPOP_REPLAY_STORE=DPOP_REPLAY)', () => {
  let stack;
  let key;
  let token;
  let persist;
  const echo = (init) => dpopFetch(stack, '/mcp/echo', init);

  before(async () => {
    // Kept on disk so that a restarted gate (a fresh isolate) finds the same objects.
    persist = mkdtempSync(join(tmpdir(), 'portcullis-dpop-do-'));
    stack = await startStack({
      bindings: () => ({ DPOP: 'dpop', DPOP_REPLAY_STORE: 'DPOP_REPLAY' }),
      miniflare: { ...replayStoreOptions(), durableObjectsPersist: persist },
    });
    key = await dpopKey('ES256');
    token = await boundToken(stack.issuer, key);
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
    if (persist) rmSync(persist, { recursive: true, force: true });
  });

  test('a proof passes once; its replay is refused (dpop_replayed), also by a fresh isolate', async () => {
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token });
    const { response } = await expectForwarded(stack, echo({ token, proof }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
    await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_replayed', error: 'invalid_dpop_proof' });
    // A new isolate has forgotten the jti; the Durable Object has not.
    await stack.gate.restart();
    await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_replayed', error: 'invalid_dpop_proof' });
    const fresh = await expectForwarded(stack, echo({ token, key }));
    assert.equal(fresh.response.status, 200);
    await fresh.response.body?.cancel();
  });

  test('many distinct proofs in a row all pass (each a new claim in the store)', async () => {
    for (let i = 0; i < 20; i += 1) {
      const { response } = await expectForwarded(stack, echo({ token, key }));
      assert.equal(response.status, 200);
      await response.body?.cancel();
    }
  });
});

describe('the replay store failing: fail closed (503, Retry-After, dpop_replay_unavailable)', () => {
  // A store that never answers, one that throws, and one whose worker is not
  // running: another Miniflare hosts the broken classes, reached through
  // Miniflare's dev registry (as tests/helpers/replay.mjs reaches a store).
  let registry;
  let store;
  let stack;
  let key;
  let token;

  before(async () => {
    registry = mkdtempSync(join(tmpdir(), 'portcullis-broken-store-'));
    store = new Miniflare({
      ...SHARED_OPTIONS,
      port: 0,
      name: 'broken-replay-store',
      modules: true,
      compatibilityDate: COMPATIBILITY_DATE,
      unsafeDevRegistryPath: registry,
      script: `import { DurableObject } from 'cloudflare:workers';
export class HangingReplay extends DurableObject { async claim() { await new Promise(() => {}); } }
export class ThrowingReplay extends DurableObject { async claim() { throw new Error('the store is broken'); } }
export default { fetch() { return new Response('a broken replay store'); } };`,
      durableObjects: { HANG: { className: 'HangingReplay', useSQLite: true }, THROW: { className: 'ThrowingReplay', useSQLite: true } },
    });
    await withTimeout(store.ready, 30_000, 'the broken store did not start');
    const elsewhere = (className, scriptName = 'broken-replay-store') => ({ className, scriptName, useSQLite: true });
    stack = await startStack({
      bindings: () => ({ DPOP: 'dpop', DPOP_REPLAY_STORE: 'REPLAY_HANGS' }),
      miniflare: {
        durableObjects: { REPLAY_HANGS: elsewhere('HangingReplay'), REPLAY_THROWS: elsewhere('ThrowingReplay'), REPLAY_GONE: elsewhere('DpopReplay', 'a-worker-not-running') },
        unsafeDevRegistryPath: registry,
      },
    });
    key = await dpopKey('ES256');
    token = await boundToken(stack.issuer, key);
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
    await store?.dispose();
    if (registry) rmSync(registry, { recursive: true, force: true });
  });

  for (const [name, binding] of [
    ['a store that never answers (the 1 s timeout)', 'REPLAY_HANGS'],
    ['a store that throws', 'REPLAY_THROWS'],
    ['a store that cannot be reached', 'REPLAY_GONE'],
  ]) {
    test(`${name}: 503 with Retry-After, never forwarded`, async () => {
      if (binding !== 'REPLAY_HANGS') await stack.gate.restart({ DPOP_REPLAY_STORE: binding });
      const before = linesWith(stack, 'dpop_replay_unavailable').length;
      const started = Date.now();
      const response = await expectOriginUntouched(stack.origin, () => dpopFetch(stack, '/mcp/echo', { token, key }));
      const took = Date.now() - started;
      assert.equal(response.status, 503, await response.clone().text());
      assert.match(response.headers.get('retry-after') ?? '', /^\d+$/);
      assert.equal(response.headers.get('www-authenticate'), null, 'not an authentication problem');
      await errorBody(response);
      const [line] = (await stack.gate.output.waitFor((l) => l.event === 'request' && l.reason === 'dpop_replay_unavailable', { count: before + 1 })).slice(-1);
      assert.equal(line.status, 503);
      if (binding === 'REPLAY_HANGS') assert.ok(took >= 900 && took < 5000, `answered after ${took} ms`);
    });
  }
});

describe('DPoP configuration errors fail closed', () => {
  let stack;
  before(async () => {
    stack = await startStack({ bindings: () => ({ DPOP: 'dpop' }) });
  });
  after(() => stack?.close());

  /** name -> [binding changes, what the log must name] */
  const bad = {
    'DPOP=required': [{ DPOP: 'required' }, 'DPOP'],
    'DPOP_ALGORITHMS with HS256': [{ DPOP_ALGORITHMS: 'ES256 HS256' }, 'DPOP_ALGORITHMS'],
    'DPOP_ALGORITHMS none': [{ DPOP_ALGORITHMS: 'none' }, 'DPOP_ALGORITHMS'],
    'DPOP_ALGORITHMS with an unknown algorithm': [{ DPOP_ALGORITHMS: 'ES256 ES999' }, 'DPOP_ALGORITHMS'],
    'DPOP_IAT_WINDOW_SECONDS not a number': [{ DPOP_IAT_WINDOW_SECONDS: 'soon' }, 'DPOP_IAT_WINDOW_SECONDS'],
    'DPOP_REPLAY_STORE naming no binding': [{ DPOP_REPLAY_STORE: 'NO_SUCH_BINDING' }, 'DPOP_REPLAY_STORE'],
    'DPOP_REPLAY_STORE naming a KV namespace': [{ DPOP_REPLAY_STORE: 'JWKS_CACHE' }, 'DPOP_REPLAY_STORE'],
    'DPOP_NONCE_SECRET too short': [{ DPOP_NONCE_SECRET: 'short-secret' }, 'DPOP_NONCE_SECRET'],
    'DPOP_NONCE_LIFETIME_SECONDS under the minimum': [{ DPOP_NONCE_SECRET: randomBytes(32).toString('base64url'), DPOP_NONCE_LIFETIME_SECONDS: '1' }, 'DPOP_NONCE_LIFETIME_SECONDS'],
    'a route with dpop: "maybe"': ['route', 'MCP_ROUTES'],
  };

  for (const [name, [changes, names]] of Object.entries(bad)) {
    test(`${name}: every request gets a generic 500, nothing is forwarded, the log names ${names}`, async () => {
      const key = await dpopKey();
      const token = await boundToken(stack.issuer, key);
      const applied =
        changes === 'route'
          ? {
              MCP_RESOURCE: undefined,
              MCP_ORIGIN: undefined,
              ORIGIN_ASSERTION_AUDIENCE: undefined,
              MCP_ROUTES: JSON.stringify([{ resource: stack.resource, origin: stack.origin.url, assertion_audience: stack.origin.url, dpop: 'maybe' }]),
            }
          : changes;
      // Put back afterwards: each changed binding as the stack had it (undefined: removed).
      const restore = Object.fromEntries(Object.keys(applied).map((n) => [n, stack.bindings[n]]));
      const before = stack.gate.output.lines.length;
      await stack.gate.restart(applied);
      try {
        for (const send of [() => dpopFetch(stack, '/mcp/echo', { token, key }), () => stack.gate.fetch('/.well-known/oauth-protected-resource/mcp')]) {
          const response = await expectOriginUntouched(stack.origin, send);
          const text = await response.clone().text();
          assert.equal(response.status, 500, text);
          await errorBody(response);
          assert.doesNotMatch(text, /DPOP_|MCP_/, 'a generic body');
        }
        const said = stack.gate.output.lines.slice(before).filter((l) => l.json?.event !== 'request').map((l) => l.line).join('\n');
        assert.ok(said.includes(names), `the log names ${names}:\n${said.slice(-2000)}`);
        assert.ok(!said.includes('short-secret'), 'a refused secret is never echoed');
      } finally {
        await stack.gate.restart(restore);
      }
    });
  }

  test('after all that, the gate works again', async () => {
    const key = await dpopKey();
    const token = await boundToken(stack.issuer, key);
    const { response } = await expectForwarded(stack, dpopFetch(stack, '/mcp/echo', { token, key }));
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });
});

describe('introspected DPoP tokens (opaque, oidc-provider, cnf.jkt in the introspection response)', () => {
  let as;
  let stack;
  let key;
  const echo = (init) => dpopFetch(stack, '/mcp/echo', init);

  before(async () => {
    const resources = [];
    as = await startAuthorizationServer({ resources });
    stack = await startStack({
      bindings: ({ resource }) => {
        resources.push(resource);
        return {
          OAUTH_ISSUER: as.issuer,
          OAUTH_JWKS_URI: undefined,
          OAUTH_TOKEN_FORMAT: 'opaque',
          OAUTH_INTROSPECTION_CLIENT_ID: as.gateClient.id,
          OAUTH_INTROSPECTION_CLIENT_SECRET: as.gateClient.secret,
          MCP_REQUIRED_SCOPES: REQUIRED_SCOPE,
          DPOP: 'dpop',
        };
      },
    });
    key = await dpopKey('ES256');
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(stack?.gate.output.text);
    await stack?.close();
    await as?.close();
  });

  const boundOpaque = async (bindTo = key) => {
    const body = await as.tokenResponse({ scope: REQUIRED_SCOPE, dpop: (request) => dpopProof(bindTo, request) });
    assert.equal(body.token_type, 'DPoP');
    assert.ok(!body.access_token.includes('.'), 'an opaque token');
    return body.access_token;
  };

  test('a bound opaque token with a proof passes, and again with a new proof (cached introspection, per-request proof)', async () => {
    const token = await boundOpaque();
    for (let i = 0; i < 3; i += 1) {
      const { response, record } = await expectForwarded(stack, echo({ token, key }));
      assert.equal(response.status, 200);
      await response.body?.cancel();
      assertNothingLeaked(record, token);
    }
    // The cached token still needs a proof each time: its reuse with a stale proof is refused.
    const proof = await dpopProof(key, { htm: 'GET', htu: `${stack.base}/mcp/echo`, accessToken: token, iat: now() - 3600 });
    await expectDpopRefusal(stack, () => echo({ token, proof }), { reason: 'dpop_iat_out_of_window', error: 'invalid_dpop_proof' });
    await expectDpopRefusal(stack, () => echo({ token, proof: null }), { reason: 'dpop_proof_missing', error: 'invalid_dpop_proof' });
  });

  test('a proof by another key than the introspected cnf.jkt: dpop_jkt_mismatch', async () => {
    const token = await boundOpaque();
    const other = await dpopKey('ES256');
    await expectDpopRefusal(stack, () => echo({ token, key: other }), { reason: 'dpop_jkt_mismatch', error: 'invalid_dpop_proof' });
  });

  test('an unbound opaque token with the DPoP scheme: dpop_token_not_bound', async () => {
    const token = await as.token({ scope: REQUIRED_SCOPE });
    await expectDpopRefusal(stack, () => echo({ token, key }), { reason: 'dpop_token_not_bound', error: 'invalid_token' });
  });

  test('a bound opaque token sent as Bearer is refused', async () => {
    const token = await boundOpaque();
    await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } }), {
      reason: ['dpop_bound_token_as_bearer', 'dpop_required'],
      error: 'invalid_token',
    });
  });

  test('secrets never appear in the output', () => {
    assertNoSecrets(stack.gate.output.text, [as.gateClient.secret, as.agentClient.secret]);
  });
});

describe('end to end with oidc-provider: DPoP-bound JWT access tokens', () => {
  let env;
  let key;

  before(async () => {
    env = await startOAuthStack({ bindings: { DPOP: 'dpop' } });
    key = await dpopKey('ES256');
  });

  after(async () => {
    if (process.env.SHOW_OUTPUT) console.log(env?.stack.gate.output.text);
    await env?.close();
  });

  test('client credentials with a proof at the token endpoint: a DPoP token, then an MCP session through the gate', async () => {
    const body = await env.as.tokenResponse({ scope: 'invoices:read invoices:write', dpop: (request) => dpopProof(key, request) });
    assert.equal(body.token_type, 'DPoP');
    const claims = decodeJwt(body.access_token);
    assert.deepEqual(claims.cnf, { jkt: key.jkt });
    assert.equal(claims.aud, env.stack.resource);
    const tools = await mcpToolsList(env.stack, { token: body.access_token, key });
    assert.ok(tools.includes('void_invoice'), tools.join(', '));
    // The same token with a proof of another key is refused.
    const other = await dpopKey('ES256');
    await expectDpopRefusal(env.stack, () => dpopFetch(env.stack, '/mcp', { method: 'POST', token: body.access_token, key: other, headers: MCP_HEADERS, body: JSON.stringify(INITIALIZE) }), {
      reason: 'dpop_jkt_mismatch',
      error: 'invalid_dpop_proof',
      scope: undefined,
    });
  });

  test('authorization code + PKCE, the code exchanged with a proof: the user-delegated token works through the gate', async () => {
    const { as, stack } = env;
    const redirectUri = 'http://127.0.0.1:1/callback';
    const registered = await fetch(`${as.issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [redirectUri], grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none', client_name: 'dpop-test' }),
    });
    assert.equal(registered.status, 201);
    const client = await registered.json();
    const verifier = randomBytes(32).toString('base64url');
    const authorization = new URL(`${as.issuer}/auth`);
    const params = {
      client_id: client.client_id,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: REQUIRED_SCOPE,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      resource: stack.resource,
      state: randomBytes(8).toString('hex'),
    };
    for (const [name, value] of Object.entries(params)) authorization.searchParams.set(name, value);
    const { url } = await authorizeOverHttp(authorization, { redirectUri });
    const userKey = await dpopKey('EdDSA');
    const exchanged = await fetch(as.tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', dpop: await dpopProof(userKey, { htm: 'POST', htu: as.tokenEndpoint }) },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: url.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: verifier, client_id: client.client_id, resource: stack.resource }),
    });
    const tokens = await exchanged.json();
    assert.equal(exchanged.status, 200, JSON.stringify(tokens));
    assert.equal(tokens.token_type, 'DPoP');
    assert.deepEqual(decodeJwt(tokens.access_token).cnf, { jkt: userKey.jkt });
    const tools = await mcpToolsList(stack, { token: tokens.access_token, key: userKey });
    assert.ok(tools.includes('lookup_invoice'));
    // The same token as Bearer is refused, origin untouched.
    await expectDpopRefusal(stack, () => stack.gate.fetch('/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${tokens.access_token}` }, body: JSON.stringify(INITIALIZE) }), {
      reason: ['dpop_bound_token_as_bearer', 'dpop_required'],
      error: 'invalid_token',
    });
  });

  test('a Bearer token from the same server is refused on the dpop route (dpop_required)', async () => {
    const token = await env.as.token({ scope: REQUIRED_SCOPE });
    assert.equal(decodeJwt(token).cnf, undefined);
    await expectDpopRefusal(env.stack, () => env.stack.gate.fetch('/mcp', { method: 'POST', headers: { ...MCP_HEADERS, authorization: `Bearer ${token}` }, body: JSON.stringify(INITIALIZE) }), {
      reason: 'dpop_required',
      error: 'invalid_token',
    });
  });
});
