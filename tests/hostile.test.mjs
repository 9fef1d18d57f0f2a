// The hostile-input catalog (SECURITY.md) through the built worker: a
// representative case of every class, each refused with its status and the
// origin receiving nothing. The gate runs with the hardening knobs set:
// JWT_REQUIRE_TYP_AT_JWT, JWT_MAX_LIFETIME_SECONDS, AUTHORIZATION_MAX_BYTES.
// The exhaustive lists are native tests (cargo test hostile).

import assert from 'node:assert/strict';
import { KeyObject, createHmac, generateKeyPairSync, sign } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { generateSigningKey } from '../demo/issuer.mjs';
import { startStack } from './helpers/stack.mjs';
import { expectOriginUntouched, expectRefusal } from './helpers/http.mjs';
import { b64url } from './helpers/tokens.mjs';

const MAX_LIFETIME = 3600;
const AUTHORIZATION_MAX_BYTES = 4096;
const now = () => Math.floor(Date.now() / 1000);

// Keys a JWKS may publish that the gate must drop when loading it.
const weakRsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
const leakyRsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const hmacSecret = 'correct horse battery staple, but shared';
const extraJwks = [
  { ...weakRsa.publicKey.export({ format: 'jwk' }), kid: 'weak-1024', alg: 'RS256', use: 'sig' },
  { ...leakyRsa.privateKey.export({ format: 'jwk' }), kid: 'with-private-members', alg: 'RS256', use: 'sig' },
  { kty: 'oct', kid: 'hmac', alg: 'HS256', k: Buffer.from(hmacSecret).toString('base64url') },
  // Keys that pass the gate's byte checks but that WebCrypto refuses to
  // import: RFC 7515 A.3's P-256 point with y altered (off the curve), and
  // an Ed25519 encoding that is not a point (y = 2).
  { kty: 'EC', crv: 'P-256', kid: 'off-curve', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'y_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0' },
  { kty: 'OKP', crv: 'Ed25519', kid: 'not-a-point', x: Buffer.concat([Buffer.from([2]), Buffer.alloc(31)]).toString('base64url') },
];

/** RS256 over `header` and a payload given as raw text (or bytes). */
function rs256Raw(header, payloadText, privateKey) {
  const input = `${b64url(header)}.${Buffer.from(payloadText).toString('base64url')}`;
  const key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey);
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

/** One HTTP/1.1 request exactly as given: path unnormalized, repeated and Host headers kept. */
function rawRequest(base, { method = 'GET', path, headers = [] }) {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, setHost: false }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    const grouped = new Map();
    for (const [name, value] of headers) grouped.set(name, [...(grouped.get(name) ?? []), value]);
    if (!grouped.has('Host')) req.setHeader('Host', url.host);
    for (const [name, values] of grouped) req.setHeader(name, values.length === 1 ? values[0] : values);
    req.end();
  });
}

describe('hostile input', () => {
  let stack;
  let metadataUrl;
  let rs;

  before(async () => {
    stack = await startStack({
      issuer: { extraJwks },
      bindings: () => ({
        JWT_REQUIRE_TYP_AT_JWT: 'true',
        JWT_MAX_LIFETIME_SECONDS: String(MAX_LIFETIME),
        AUTHORIZATION_MAX_BYTES: String(AUTHORIZATION_MAX_BYTES),
      }),
    });
    metadataUrl = `${stack.base}/.well-known/oauth-protected-resource/mcp`;
    rs = stack.issuer.keys.RS256;
  });

  after(async () => {
    await stack?.close();
  });

  const claims = (overrides = {}) => ({
    iss: stack.issuer.issuer,
    aud: stack.resource,
    sub: 'user-1234',
    client_id: 'demo-client',
    scope: 'invoices:read',
    iat: now(),
    exp: now() + 300,
    ...overrides,
  });
  const header = (overrides = {}) => ({ alg: 'RS256', typ: 'at+jwt', kid: rs.kid, ...overrides });

  async function send(authorization, { path = '/mcp/echo', headers = {} } = {}) {
    return expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch(path, { headers: { ...(authorization === undefined ? {} : { authorization }), ...headers } }),
    );
  }

  async function invalidToken(name, token) {
    const response = await send(`Bearer ${token}`);
    await assert.doesNotReject(
      expectRefusal(response, { status: 401, error: 'invalid_token', resourceMetadata: metadataUrl }),
      name,
    );
  }

  async function invalidRequest(name, authorization, options) {
    const response = await send(authorization, options);
    await assert.doesNotReject(
      expectRefusal(response, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl }),
      name,
    );
  }

  test('control: a conforming token is forwarded, with Cache-Control: private, no-store', async () => {
    const token = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    const before = stack.origin.requests.length;
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('cache-control'), 'private, no-store');
    await response.body?.cancel();
    assert.equal(stack.origin.requests.length, before + 1);
  });

  test('header parameters: crit (b64:false), jku, x5u, x5c, embedded jwk, cty, nested JWT', async () => {
    const attacker = await generateSigningKey('RS256');
    const cases = {
      'crit with b64:false': header({ b64: false, crit: ['b64'] }),
      'crit naming exp': header({ crit: ['exp'], exp: now() + 60 }),
      jku: header({ jku: `${stack.issuer.issuer}/jwks` }),
      x5u: header({ x5u: 'https://evil.example/cert.pem' }),
      x5c: header({ x5c: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] }),
      'cty JWT': header({ cty: 'JWT' }),
      'cty json': header({ cty: 'application/json' }),
    };
    for (const [name, h] of Object.entries(cases)) {
      await invalidToken(name, rs256Raw(h, JSON.stringify(claims()), rs.privateKey));
    }
    // Signed by the attacker, carrying the attacker's key in the header.
    await invalidToken('embedded jwk', rs256Raw(header({ kid: undefined, jwk: attacker.publicJwk }), JSON.stringify(claims()), attacker.privateKey));
    // Nested: the payload is a whole signed JWT (a JSON string, not claims).
    const inner = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    await invalidToken('nested JWT', rs256Raw(header(), JSON.stringify(inner), rs.privateKey));
  });

  test('kid with a path, control characters or a very long value: 401, no key fetched from it', async () => {
    const fetchesBefore = stack.issuer.requests.length;
    for (const kid of ['../../../etc/passwd', `${stack.issuer.issuer}/jwks`, 'a\u0000b', 'x\r\nX-Injected: 1', 'k'.repeat(2500)]) {
      await invalidToken(`kid ${JSON.stringify(kid).slice(0, 40)}`, rs256Raw(header({ kid }), JSON.stringify(claims()), rs.privateKey));
    }
    // At most the one rate-limited unknown-kid refresh, never a fetch per kid.
    assert.ok(stack.issuer.requests.length - fetchesBefore <= 1, `issuer fetched ${stack.issuer.requests.length - fetchesBefore} times`);
  });

  test('typ: anything but at+jwt is refused in strict mode (JWT_REQUIRE_TYP_AT_JWT), absent too', async () => {
    for (const typ of ['JWT', 'application/jwt', 'dpop+jwt', 'id_token', undefined]) {
      await invalidToken(`typ ${typ}`, rs256Raw(header({ typ }), JSON.stringify(claims()), rs.privateKey));
    }
  });

  test('typ: at+jwt in any case, with or without application/, passes strict mode (RFC 7515 §4.1.9)', async () => {
    for (const typ of ['AT+JWT', 'Application/At+Jwt', 'APPLICATION/AT+JWT']) {
      const token = rs256Raw(header({ typ }), JSON.stringify(claims()), rs.privateKey);
      const before = stack.origin.requests.length;
      const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${token}` } });
      assert.equal(response.status, 200, typ);
      await response.body?.cancel();
      assert.equal(stack.origin.requests.length, before + 1, typ);
    }
  });

  test('sub: a token without one is refused in strict mode (RFC 9068 §2.2), logged as missing_sub', async () => {
    const { sub, ...rest } = claims();
    await invalidToken('no sub', rs256Raw(header(), JSON.stringify(rest), rs.privateKey));
    const [line] = await stack.gate.output.waitFor((l) => l.reason === 'missing_sub');
    assert.equal(line.status, 401);
  });

  test('encoding: JWE, padding, +/, segments, invalid UTF-8, BOM, duplicate members, non-object payload', async () => {
    const good = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    const [h, p, s] = good.split('.');
    const body = JSON.stringify(claims());
    const cases = {
      'five-part JWE': `${h}.${p}.${s}.AAAA.BBBB`,
      'four parts': `${h}.${p}.${s}.AAAA`,
      'two parts': `${h}.${p}`,
      'padded signature': `${h}.${p}.${s}==`,
      'standard base64 alphabet': rs256Raw(header({ pad: '>>>???' }), body, rs.privateKey).replaceAll('-', '+').replaceAll('_', '/'),
      'header not UTF-8': `${Buffer.from('{"alg":"RS256","kid":"\xff"}', 'latin1').toString('base64url')}.${p}.${s}`,
      'payload not UTF-8': rs256Raw(header(), Buffer.concat([Buffer.from(body.slice(0, -1)), Buffer.from(',"x":"\xc3\x28"}', 'latin1')]), rs.privateKey),
      'BOM before the claims': rs256Raw(header(), Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(body)]), rs.privateKey),
      'duplicate alg': `${Buffer.from(`{"alg":"RS256","alg":"none","typ":"at+jwt","kid":"${rs.kid}"}`).toString('base64url')}.${p}.${s}`,
      'duplicate exp': rs256Raw(header(), body.replace('{', `{"exp":${now() + 999999},`), rs.privateKey),
      'claims as a signed array': rs256Raw(header(), JSON.stringify([stack.issuer.issuer, 'user-1234', stack.resource, now() + 300]), rs.privateKey),
      'claims null': rs256Raw(header(), 'null', rs.privateKey),
    };
    for (const [name, token] of Object.entries(cases)) await invalidToken(name, token);
  });

  test('encoding at the header: whitespace, JWS JSON serialization, oversized Authorization (400)', async () => {
    const good = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    const [h, p, s] = good.split('.');
    await invalidRequest('whitespace inside', `Bearer ${h}. ${p}.${s}`);
    await invalidRequest('padding inside', `Bearer ${h}=.${p}.${s}`);
    await invalidRequest('JWS JSON serialization', `Bearer ${JSON.stringify({ protected: h, payload: p, signature: s })}`);
    // Over the cap, whatever it holds: nothing in it is parsed.
    await invalidRequest('oversized, valid token inside', `Bearer ${good}${'='.repeat(AUTHORIZATION_MAX_BYTES)}`);
    await invalidRequest('oversized garbage', `Basic ${'%'.repeat(AUTHORIZATION_MAX_BYTES)}`);
  });

  test('claims: time claims as strings, null, floats or absurd values; lifetime over the cap; aud tricks; cnf', async () => {
    const t = now();
    const cases = {
      'exp string': { exp: String(t + 300) },
      'exp null': { exp: null },
      'exp float': { exp: t + 300.5 },
      'exp absurd': { exp: 1e300 },
      'nbf string': { nbf: String(t) },
      'iat null': { iat: null },
      'iat float': { iat: t + 0.25 },
      'lifetime over JWT_MAX_LIFETIME_SECONDS': { exp: t + MAX_LIFETIME + 120 },
      'no iat under a lifetime cap': { iat: undefined },
      'aud empty': { aud: '' },
      'aud empty array': { aud: [] },
      'aud numeric': { aud: 7 },
      'aud look-alike host': { aud: stack.resource.replace('127.0.0.1', '127.0.0.1.evil.example') },
      'aud trailing slash': { aud: `${stack.resource}/` },
      'cnf presented as bearer': { cnf: { jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' } },
    };
    for (const [name, overrides] of Object.entries(cases)) {
      const payload = claims(overrides);
      for (const [k, v] of Object.entries(payload)) if (v === undefined) delete payload[k];
      await invalidToken(name, rs256Raw(header(), JSON.stringify(payload), rs.privateKey));
    }
  });

  test('keys the JWKS publishes but the gate drops: RSA 1024, private members, oct', async () => {
    await invalidToken('RSA 1024', rs256Raw(header({ kid: 'weak-1024' }), JSON.stringify(claims()), weakRsa.privateKey));
    await invalidToken('key with private members', rs256Raw(header({ kid: 'with-private-members' }), JSON.stringify(claims()), leakyRsa.privateKey));
    const input = `${b64url({ alg: 'HS256', typ: 'at+jwt', kid: 'hmac' })}.${b64url(claims())}`;
    await invalidToken('HS256 with the published oct key', `${input}.${createHmac('sha256', hmacSecret).update(input).digest('base64url')}`);
  });

  test('keys WebCrypto cannot import (off-curve P-256, non-point Ed25519): 401, never forwarded', async () => {
    for (const [kid, alg, nodeAlg] of [['off-curve', 'ES256', 'sha256'], ['not-a-point', 'EdDSA', null]]) {
      // Signed with a real key of the type: no signature can verify with these.
      const pair = generateKeyPairSync(alg === 'ES256' ? 'ec' : 'ed25519', alg === 'ES256' ? { namedCurve: 'P-256' } : {});
      const input = `${b64url(header({ alg, kid }))}.${b64url(claims())}`;
      const signature = sign(nodeAlg, Buffer.from(input), alg === 'ES256' ? { key: pair.privateKey, dsaEncoding: 'ieee-p1363' } : pair.privateKey);
      await invalidToken(`${kid} ${alg}`, `${input}.${signature.toString('base64url')}`);
    }
    // The gate stays healthy for conforming tokens after refusing the imports.
    const response = await stack.gate.fetch('/mcp/echo', { headers: { authorization: `Bearer ${rs256Raw(header(), JSON.stringify(claims()), rs.privateKey)}` } });
    assert.equal(response.status, 200);
    await response.body?.cancel();
  });

  test('HTTP: two Authorization fields, token in a cookie, token in a form body', async () => {
    const token = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    const before = stack.origin.requests.length;
    const twice = await rawRequest(stack.base, { path: '/mcp/echo', headers: [['Authorization', `Bearer ${token}`], ['Authorization', `Bearer ${token}`]] });
    assert.equal(twice.status, 400, 'two Authorization fields');
    assert.match(twice.headers['www-authenticate'], /error="invalid_request"/);
    const cookie = await send(undefined, { headers: { cookie: `access_token=${token}; token=${token}` } });
    await expectRefusal(cookie, { status: 401, error: null, resourceMetadata: metadataUrl });
    const form = await expectOriginUntouched(stack.origin, () =>
      stack.gate.fetch('/mcp', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: `access_token=${token}` }),
    );
    await expectRefusal(form, { status: 400, error: 'invalid_request', resourceMetadata: metadataUrl });
    assert.equal(stack.origin.requests.length, before);
  });

  // workerd resolves literal dot segments before the worker sees the URL
  // (`/mcp/./echo` arrives as `/mcp/echo`, still inside the resource); the
  // gate refuses what is left: escapes out of the resource and encoded dots
  // and separators, which the origin might resolve differently.
  test('HTTP: path tricks never reach the origin, even with a valid token', async () => {
    const token = rs256Raw(header(), JSON.stringify(claims()), rs.privateKey);
    const before = stack.origin.requests.length;
    for (const path of [
      '/.well-known/oauth-protected-resource/../mcp/echo',
      '/.well-known/oauth-protected-resource/%2e%2e/mcp/echo',
      '/mcp/%2e%2e/admin',
      '/mcp/%2E%2E%2Fadmin',
      '/mcp/..%2fadmin',
      '/mcp/%5c..%5cadmin',
      '/mcp/../admin',
      '/mcp/echo/../../admin',
      '/mcp/.%2e/admin',
    ]) {
      const response = await rawRequest(stack.base, { path, headers: [['Authorization', `Bearer ${token}`]] });
      assert.equal(response.status, 404, path);
    }
    assert.equal(stack.origin.requests.length, before);
  });

  test('HTTP: metadata and challenges come from configuration, never Host or X-Forwarded-Host', async () => {
    const spoof = [
      ['Host', 'evil.example'],
      ['X-Forwarded-Host', 'evil.example'],
      ['X-Forwarded-Proto', 'https'],
      ['Forwarded', 'host=evil.example;proto=https'],
    ];
    for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
      const response = await rawRequest(stack.base, { path, headers: spoof });
      assert.equal(response.status, 200, path);
      assert.equal(JSON.parse(response.body).resource, stack.resource);
      assert.ok(!response.body.includes('evil'), response.body);
    }
    const before = stack.origin.requests.length;
    for (const extra of [[], [['Authorization', 'Bearer not-a-jwt']]]) {
      const response = await rawRequest(stack.base, { path: '/mcp', headers: [...spoof, ...extra] });
      assert.equal(response.status, 401);
      assert.ok(response.headers['www-authenticate'].includes(`resource_metadata="${metadataUrl}"`), response.headers['www-authenticate']);
      assert.ok(!response.headers['www-authenticate'].includes('evil'));
    }
    assert.equal(stack.origin.requests.length, before);
  });
});
