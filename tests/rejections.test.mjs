// Every way a request can fail authorization: the status, the challenge and
// the body the gate answers with, and the origin receiving nothing at all.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { generateSigningKey } from '../demo/issuer.mjs';
import { startStack } from './helpers/stack.mjs';
import { assertNoSecrets, expectOriginUntouched, expectRefusal } from './helpers/http.mjs';
import {
  claimsFor,
  corruptSignature,
  hmacToken,
  publicKeySecrets,
  rsaSignedToken,
  tamperHeader,
  tamperPayload,
  unsignedToken,
} from './helpers/tokens.mjs';

const REQUIRED_SCOPE = 'invoices:read';
const now = () => Math.floor(Date.now() / 1000);

describe('rejections', () => {
  let stack;
  let metadataUrl;
  /** Hand-built tokens, for the leak check at the end. */
  const forged = [];

  before(async () => {
    stack = await startStack({ bindings: () => ({ MCP_REQUIRED_SCOPES: REQUIRED_SCOPE }) });
    metadataUrl = `${stack.base}/.well-known/oauth-protected-resource/mcp`;
  });

  after(async () => {
    await stack?.close();
  });

  const mcpBody = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' });

  /** POSTs a JSON-RPC request to /mcp with `authorization` (if any), expecting the origin to see nothing. */
  async function refused({ authorization, path = '/mcp', headers = {}, body = mcpBody }) {
    return expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch(path, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          ...(authorization ? { authorization } : {}),
          ...headers,
        },
        body,
      }),
    );
  }

  async function invalidToken(token) {
    forged.push(token);
    const response = await refused({ authorization: `Bearer ${token}` });
    await expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl, scope: null });
  }

  test('control: a valid token is forwarded (so the refusals below are meaningful)', async () => {
    const token = await stack.issuer.mint();
    const before = stack.origin.requests.length;
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    await response.body?.cancel();
    assert.equal(stack.origin.requests.length, before + 1);
  });

  test('missing token: 401, challenge without error, with scope and resource_metadata', async () => {
    const response = await refused({});
    await expectRefusal(response, { status: 401, error: null, resourceMetadata: metadataUrl, scope: REQUIRED_SCOPE });
  });

  test('malformed JWTs: 401 invalid_token', async () => {
    for (const token of ['not-a-jwt', 'abc.def', 'abc.def.ghi', 'a.b.c.d.e', 'eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln']) {
      await invalidToken(token);
    }
  });

  test('expired beyond the leeway: 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({ iat: now() - 600, exp: now() - 120 }));
  });

  test('not yet valid beyond the leeway: 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({ nbf: now() + 120 }));
  });

  test('missing exp: 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({ exp: undefined }));
  });

  test('wrong issuer (signed with the trusted key): 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({ iss: 'http://127.0.0.1:1/evil' }));
    await invalidToken(await stack.issuer.mint({ iss: `${stack.issuer.issuer}/` }));
    await invalidToken(await stack.issuer.mint({ iss: undefined }));
  });

  test('wrong audience: 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({ aud: 'http://127.0.0.1:1/mcp' }));
    await invalidToken(await stack.issuer.mint({ aud: `${stack.resource}/` }));
    await invalidToken(await stack.issuer.mint({ aud: [] }));
    await invalidToken(await stack.issuer.mint({ aud: undefined }));
  });

  test('bad signature: tampered payload, flipped bit, wrong key under a known kid: 401 invalid_token', async () => {
    const token = await stack.issuer.mint();
    await invalidToken(tamperPayload(token, { sub: 'admin' }));
    await invalidToken(tamperPayload(token, { scope: 'invoices:read invoices:write admin' }));
    await invalidToken(corruptSignature(token));
    for (const alg of ['RS256', 'ES256', 'EdDSA']) {
      const stranger = await generateSigningKey(alg);
      await invalidToken(await stack.issuer.mint({}, { key: stranger, kid: stack.issuer.keys[alg].kid }));
    }
  });

  // A GET or DELETE with a new token has its forward decided before the
  // signature verdict (crates/core/src/flow/pass.rs); a bad verdict must still send nothing.
  test('bad signature on GET and DELETE (no body to wait for): 401 invalid_token, origin untouched', async () => {
    const token = await stack.issuer.mint();
    // Good tokens first, so each key is imported and the fast path, not the
    // full path, meets the forgeries.
    for (const alg of ['RS256', 'ES256', 'EdDSA']) {
      const good = await stack.gate.fetch('/mcp', {
        method: 'GET',
        headers: { accept: 'text/event-stream', authorization: `Bearer ${await stack.issuer.mint({}, { alg })}` },
      });
      assert.notEqual(good.status, 401);
      await good.body?.cancel();
    }
    const bad = [tamperPayload(token, { sub: 'admin' }), corruptSignature(token)];
    for (const alg of ['ES256', 'EdDSA']) {
      const stranger = await generateSigningKey(alg);
      bad.push(await stack.issuer.mint({}, { key: stranger, kid: stack.issuer.keys[alg].kid }));
    }
    for (const method of ['GET', 'DELETE']) {
      for (const forgery of bad) {
        forged.push(forgery);
        const response = await expectOriginUntouched(stack.origin, () =>
          stack.gate.fetch('/mcp', {
            method,
            headers: { accept: 'text/event-stream', authorization: `Bearer ${forgery}` },
          }),
        );
        await expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl, scope: null });
      }
    }
  });

  test('alg none: 401 invalid_token', async () => {
    const claims = claimsFor(stack.issuer, { aud: stack.resource });
    await invalidToken(unsignedToken(claims));
    await invalidToken(unsignedToken(claims, { kid: stack.issuer.keys.RS256.kid }));
    await invalidToken(unsignedToken(claims, { alg: 'None' }));
    // A real signature with the header rewritten to none.
    await invalidToken(tamperHeader(await stack.issuer.mint(), { alg: 'none' }));
  });

  test('HS256 signed with the RSA public key as the HMAC secret: 401 invalid_token', async () => {
    const rsa = stack.issuer.keys.RS256;
    const secrets = await publicKeySecrets(rsa);
    const claims = claimsFor(stack.issuer, { aud: stack.resource });
    for (const secret of [secrets.pem, secrets.pemNoNewline, secrets.jwk]) {
      await invalidToken(hmacToken(claims, secret, { kid: rsa.kid }));
      await invalidToken(hmacToken(claims, secret));
    }
    // Also the other HMAC names and a real signature relabelled.
    await invalidToken(tamperHeader(hmacToken(claims, secrets.pem, { kid: rsa.kid }), { alg: 'HS384' }));
    await invalidToken(tamperHeader(await stack.issuer.mint(), { alg: 'HS256' }));
  });

  test('algorithm outside the allow-list (RS384 under the default list): 401 invalid_token', async () => {
    await invalidToken(await stack.issuer.mint({}, { alg: 'RS384' }));
    await invalidToken(await stack.issuer.mint({}, { alg: 'PS512' }));
  });

  test('header alg that does not match the key: 401 invalid_token', async () => {
    // The RS256 key relabelled PS256 (and the reverse): a key is used only with its own algorithm.
    const claims = claimsFor(stack.issuer, { aud: stack.resource });
    const { RS256, PS256 } = stack.issuer.keys;
    // Controls: the same hand-signing with matching algorithms is accepted.
    for (const [key, alg] of [[RS256, 'RS256'], [PS256, 'PS256']]) {
      const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${rsaSignedToken(claims, key.privateKey, alg, { kid: key.kid })}` } });
      assert.equal(response.status, 200, `hand-signed ${alg} control`);
      await response.body?.cancel();
    }
    await invalidToken(rsaSignedToken(claims, RS256.privateKey, 'PS256', { kid: RS256.kid }));
    await invalidToken(rsaSignedToken(claims, PS256.privateKey, 'RS256', { kid: PS256.kid }));
  });

  test('unknown kid: 401 invalid_token', async () => {
    const stranger = await generateSigningKey('RS256');
    await invalidToken(await stack.issuer.mint({}, { key: stranger }));
    await invalidToken(await stack.issuer.mint({}, { kid: 'no-such-kid' }));
  });

  test('token in the query string: 400 invalid_request', async () => {
    const token = await stack.issuer.mint();
    for (const query of [`?access_token=${token}`, `?x=1&access_token=${token}`, `?access%5Ftoken=${token}`]) {
      const response = await refused({ path: `/mcp${query}` });
      await expectRefusal(response, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
    }
    // Even alongside a valid header: clients must use one method only (RFC 6750 §2).
    const both = await refused({ path: `/mcp?access_token=${token}`, authorization: `Bearer ${token}` });
    await expectRefusal(both, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
  });

  test('token in a form-encoded body: 400 invalid_request', async () => {
    const token = await stack.issuer.mint();
    for (const contentType of ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded; charset=utf-8']) {
      const response = await refused({ headers: { 'content-type': contentType }, body: `access_token=${token}` });
      await expectRefusal(response, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
    }
  });

  test('oversized Authorization header (> 8 KiB): 400 invalid_request', async () => {
    const token = await stack.issuer.mint({ padding: 'x'.repeat(9 * 1024) });
    assert.ok(`Bearer ${token}`.length > 8 * 1024);
    forged.push(token);
    const response = await refused({ authorization: `Bearer ${token}` });
    await expectRefusal(response, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
  });

  test('Bearer with an empty or non-token68 value: 400 invalid_request', async () => {
    const token = await stack.issuer.mint();
    for (const authorization of ['Bearer', 'Bearer    ', `Bearer ${token} ${token}`, `Bearer ${token}, Bearer ${token}`, 'Bearer a"b', 'Bearer ab(c)']) {
      const response = await refused({ authorization });
      await expectRefusal(response, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
    }
  });

  test('valid token lacking the required scope: 403 insufficient_scope naming it', async () => {
    for (const claims of [{ scope: 'invoices:write' }, { scope: undefined }, { scope: '' }, { scope: 'invoices:readx' }, { scope: undefined, scp: ['profile'] }]) {
      const token = await stack.issuer.mint(claims);
      const response = await refused({ authorization: `Bearer ${token}` });
      await expectRefusal(response, { status: 403, error: 'insufficient_scope', resourceMetadata: metadataUrl, scope: REQUIRED_SCOPE });
    }
  });

  test('refusals also hold for GET and DELETE and for sub-paths', async () => {
    const expired = await stack.issuer.mint({ exp: now() - 3600 });
    for (const method of ['GET', 'DELETE']) {
      for (const path of ['/mcp', '/mcp/echo']) {
        const response = await expectOriginUntouched(stack.origin, () =>
          stack.gate.fetch(path, { method, headers: { authorization: `Bearer ${expired}` } }),
        );
        await expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl });
      }
    }
  });

  test('one log line per refusal, each a deny with its status, and no token anywhere in the output', async () => {
    const logs = await stack.gate.output.waitFor((line) => line.event === 'request' || 'decision' in line, { count: 10 });
    const denials = logs.filter((line) => line.decision === 'deny');
    assert.ok(denials.length >= 10);
    for (const line of denials) {
      assert.ok([400, 401, 403].includes(line.status), JSON.stringify(line));
      assert.equal(typeof line.reason, 'string');
    }
    assertNoSecrets(stack.gate.output.text, [...stack.issuer.minted, ...forged]);
  });
});
