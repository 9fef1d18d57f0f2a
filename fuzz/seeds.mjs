// Regenerates the fuzz fixtures and seed corpus: a public JWKS (RSA, P-256,
// Ed25519) and real tokens signed with its keys, real Authorization header
// sets and JSON-RPC bodies. Node's own crypto only; the private keys are
// thrown away, so nothing secret is committed.
//   node fuzz/seeds.mjs
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const b64 = (value) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ed = generateKeyPairSync('ed25519');
const pub = (pair, extra) => ({ ...pair.publicKey.export({ format: 'jwk' }), ...extra });
const jwks = {
  keys: [
    pub(rsa, { kid: 'rsa', use: 'sig' }),
    pub(ec, { kid: 'ec', alg: 'ES256' }),
    pub(ed, { kid: 'ed' }),
  ],
};
writeFileSync(join(root, 'fixtures/jwks.json'), `${JSON.stringify(jwks, null, 2)}\n`);

const NOW = 1_767_225_600; // 2026-01-01, the fuzz targets' clock
const claims = {
  iss: 'https://auth.example.com', aud: 'https://mcp.example.com/mcp', sub: 'user-1',
  client_id: 'client-1', scope: 'mcp:read mcp:write', iat: NOW - 10, exp: NOW + 300, jti: 't-1',
};
function mint(alg, header, body = claims) {
  const input = `${b64({ alg, ...header })}.${b64(body)}`;
  const data = Buffer.from(input);
  let signature;
  if (alg.startsWith('RS')) signature = sign(`sha${alg.slice(2)}`, data, rsa.privateKey);
  else if (alg.startsWith('PS'))
    signature = sign(`sha${alg.slice(2)}`, data, {
      key: rsa.privateKey, padding: 6 /* RSA_PKCS1_PSS_PADDING */, saltLength: Number(alg.slice(2)) / 8,
    });
  else if (alg === 'ES256') signature = sign('sha256', data, { key: ec.privateKey, dsaEncoding: 'ieee-p1363' });
  else signature = sign(null, data, ed.privateKey);
  return `${input}.${signature.toString('base64url')}`;
}

const corpus = {};
const add = (target, name, content) => ((corpus[target] ??= {})[name] = content);
const tokens = {
  rs256: mint('RS256', { kid: 'rsa', typ: 'at+jwt' }),
  rs512: mint('RS512', { kid: 'rsa' }),
  ps256: mint('PS256', { kid: 'rsa', typ: 'JWT' }),
  es256: mint('ES256', { kid: 'ec', typ: 'at+jwt' }),
  eddsa: mint('EdDSA', { kid: 'ed', typ: 'application/at+jwt' }),
  nokid: mint('ES256', {}),
  scp: mint('EdDSA', { kid: 'ed' }, { ...claims, scope: undefined, scp: ['a', 'b'], aud: ['x', claims.aud] }),
  crit: mint('EdDSA', { kid: 'ed', crit: ['b64'], b64: false }),
  none: `${b64({ alg: 'none' })}.${b64(claims)}.`,
  hs256: `${b64({ alg: 'HS256' })}.${b64(claims)}.c2ln`,
};
for (const [name, token] of Object.entries(tokens)) add('jwt', name, token);
// jwt_claims: a header and a claims object, newline-separated; the target signs them.
add('jwt_claims', 'good', `{"alg":"EdDSA","kid":"ed","typ":"at+jwt"}\n${JSON.stringify(claims)}`);
add('jwt_claims', 'strings', `{"alg":"EdDSA"}\n${JSON.stringify({ ...claims, exp: '1', nbf: null, iat: 1.5 })}`);
add('jwt_claims', 'cnf', `{"alg":"EdDSA","kid":"ed"}\n${JSON.stringify({ ...claims, cnf: { jkt: 'x' } })}`);

add('jwks', 'set', JSON.stringify(jwks));
add('jwks', 'private', JSON.stringify({ keys: [rsa.privateKey.export({ format: 'jwk' })].map((k) => ({ kty: k.kty, n: k.n, e: k.e, d: 'AQAB' })) }));
add('jwks', 'mixed', JSON.stringify({ keys: [{ kty: 'oct', k: 'c2VjcmV0' }, { kty: 'EC', crv: 'P-384', x: 'AA', y: 'AA' }, { kty: 'OKP', crv: 'X25519', x: 'AA' }, { kty: 'RSA', n: 'AQAB', e: 'AQ' }, jwks.keys[1]] }));

// bearer: line 1 Content-Type, line 2 query, then one Authorization value per line.
add('bearer', 'good', `application/json\n\nBearer ${tokens.es256}`);
add('bearer', 'two', `\nfoo=bar\nBearer abc\nBearer def`);
add('bearer', 'query', `application/x-www-form-urlencoded\naccess_token=abc&x=1\nbearer  abc=`);
add('bearer', 'basic', `text/plain\n\nBasic dXNlcjpwYXNz`);

const rpc = [
  { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'c', version: '1' } } },
  { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'void_invoice', arguments: { id: 'inv-1' } } },
  [{ jsonrpc: '2.0', id: 'a', method: 'tools/list' }, { jsonrpc: '2.0', method: 'notifications/initialized' }],
  { jsonrpc: '2.0', id: 3, result: {} },
  { jsonrpc: '2.0', id: 4, method: 'resources/read', params: { uri: 'file:///x' } },
];
// jsonrpc: line 1 Mcp-Method header, line 2 Mcp-Name header, then the body.
rpc.forEach((body, i) => add('jsonrpc', `body${i}`, `${body.method ?? ''}\n${body.params?.name ?? ''}\n${JSON.stringify(body)}`));
const list = { jsonrpc: '2.0', id: 1, result: { tools: [{ name: 'list_invoices' }, { name: 'void_invoice' }, { title: 'x' }] } };
add('tool_filter', 'json', JSON.stringify(list));
add('tool_filter', 'batch', JSON.stringify([list, { jsonrpc: '2.0', id: 2, result: { tools: [] } }]));
add('tool_filter', 'sse', `event: message\r\nid: 1\r\ndata: ${JSON.stringify(list)}\r\n\r\n: ping\n\n`);

for (const [target, files] of Object.entries(corpus)) {
  const dir = join(root, 'seeds', target);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
}
