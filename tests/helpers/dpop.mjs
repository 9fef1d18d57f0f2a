// DPoP (RFC 9449) as a client makes it, with jose: a key pair, its RFC 7638
// thumbprint, proofs for a request, and access tokens bound to the key
// (`cnf.jkt`) minted by the demo issuer. Proofs can also be made broken on
// purpose (another typ, alg none or HS256, a private jwk, claims left out or
// changed, a signature by another key), for the gate's refusals.
//
//   const key = await dpopKey();
//   const token = await boundToken(stack.issuer, key);
//   const proof = await dpopProof(key, { htm: 'POST', htu: stack.resource, accessToken: token });
//   fetch(stack.resource, { method: 'POST', headers: { authorization: `DPoP ${token}`, dpop: proof } });

import { createHash, randomUUID } from 'node:crypto';
import { CompactSign, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';

/** A fresh DPoP key pair for `alg` (ES256, EdDSA, RS256, PS256, ... as jose names them). */
export async function dpopKey(alg = 'ES256') {
  const options = { extractable: true };
  if (alg === 'EdDSA') options.crv = 'Ed25519';
  const { privateKey, publicKey } = await generateKeyPair(alg, options);
  const publicJwk = await exportJWK(publicKey);
  const jkt = await calculateJwkThumbprint(publicJwk, 'sha256');
  return { alg, privateKey, publicKey, publicJwk, jkt };
}

/** The `ath` claim for `accessToken`: base64url(SHA-256(token)) (RFC 9449 §4.2). */
export function ath(accessToken) {
  return createHash('sha256').update(accessToken, 'ascii').digest('base64url');
}

const encoder = new TextEncoder();

/**
 * A DPoP proof JWS (compact) signed with `key`.
 *
 * @param {object} key from dpopKey().
 * @param {object} [options]
 * @param {string} [options.htm] the request's method.
 * @param {string} [options.htu] the request's URL (without query and fragment).
 * @param {string} [options.accessToken] sets `ath` from it (left out without one).
 * @param {string} [options.nonce] the server's DPoP-Nonce.
 * @param {number} [options.iat=now] seconds since the epoch.
 * @param {string} [options.jti=random]
 * @param {string|null} [options.typ='dpop+jwt'] header typ; null leaves it out.
 * @param {string} [options.alg=key.alg] header alg: 'none' makes an unsigned JWS, 'HS256'
 *   (HS384, HS512) one MACed with a random secret; another asymmetric alg than the key's throws.
 * @param {object|null} [options.jwk=key.publicJwk] header jwk (e.g. the private JWK); null leaves it out.
 * @param {object} [options.header] more (or overriding) header members.
 * @param {object} [options.claims] more (or overriding) claims.
 * @param {string[]} [options.omit] claims left out (e.g. ['jti'], ['ath']).
 * @param {object} [options.signWith] another key from dpopKey() to sign with (a bad signature
 *   for the header's jwk).
 */
export async function dpopProof(
  key,
  { htm, htu, accessToken, nonce, iat, jti, typ = 'dpop+jwt', alg, jwk, header = {}, claims = {}, omit = [], signWith } = {},
) {
  const signingKey = signWith ?? key;
  const headerAlg = alg ?? key.alg;
  const protectedHeader = { typ, alg: headerAlg, jwk: jwk === undefined ? key.publicJwk : jwk, ...header };
  for (const [name, value] of Object.entries(protectedHeader)) if (value === null || value === undefined) delete protectedHeader[name];
  const payload = {
    jti: jti ?? randomUUID(),
    htm,
    htu,
    iat: iat ?? Math.floor(Date.now() / 1000),
    ...(accessToken !== undefined ? { ath: ath(accessToken) } : {}),
    ...(nonce !== undefined ? { nonce } : {}),
    ...claims,
  };
  for (const name of omit) delete payload[name];
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  const payloadBytes = encoder.encode(JSON.stringify(payload));

  if (headerAlg === 'none') {
    // jose will not make one: the JWS by hand, empty signature (RFC 7515 §A.5).
    return `${b64url(JSON.stringify(protectedHeader))}.${b64url(payloadBytes)}.`;
  }
  if (/^HS\d+$/.test(headerAlg)) {
    const secret = crypto.getRandomValues(new Uint8Array(64));
    return new CompactSign(payloadBytes).setProtectedHeader(protectedHeader).sign(secret);
  }
  return new CompactSign(payloadBytes).setProtectedHeader(protectedHeader).sign(signingKey.privateKey);
}

/** An access token from the demo issuer (demo/issuer.mjs) bound to `key` (`cnf.jkt`); `options` as for mint. */
export async function boundToken(issuer, key, claims = {}, options) {
  return issuer.mint({ cnf: { jkt: key.jkt }, ...claims }, options);
}

function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

/**
 * Parses a WWW-Authenticate value that may hold several challenges (RFC 9110
 * §11.6.1), e.g. `Bearer scope="a", resource_metadata="m", DPoP algs="ES256"`,
 * into [{ scheme, params }] in order, parameter names lower-cased. Throws on
 * anything it cannot read (a repeated parameter, trailing garbage).
 */
export function parseChallenges(value) {
  if (typeof value !== 'string' || value.trim() === '') throw new Error(`expected a WWW-Authenticate value, got ${JSON.stringify(value)}`);
  const TOKEN = /[A-Za-z0-9!#$%&'*+.^_`|~-]+/y;
  const challenges = [];
  let at = 0;
  const skip = (chars) => {
    while (at < value.length && chars.includes(value[at])) at += 1;
  };
  const readToken = () => {
    TOKEN.lastIndex = at;
    const match = TOKEN.exec(value);
    if (!match) throw new Error(`unparsable challenge at ${at}: ${value}`);
    at = TOKEN.lastIndex;
    return match[0];
  };
  skip(' \t,');
  while (at < value.length) {
    const name = readToken();
    let next = at;
    while (next < value.length && (value[next] === ' ' || value[next] === '\t')) next += 1;
    const current = challenges.at(-1);
    if (value[next] === '=' && current) {
      at = next + 1;
      skip(' \t');
      let param;
      if (value[at] === '"') {
        at += 1;
        param = '';
        while (at < value.length && value[at] !== '"') {
          if (value[at] === '\\') at += 1;
          param += value[at];
          at += 1;
        }
        if (value[at] !== '"') throw new Error(`unterminated quoted string: ${value}`);
        at += 1;
      } else {
        param = readToken();
      }
      const key = name.toLowerCase();
      if (key in current.params) throw new Error(`parameter ${key} repeated in the ${current.scheme} challenge: ${value}`);
      current.params[key] = param;
      skip(' \t');
      if (at < value.length && value[at] !== ',') throw new Error(`trailing garbage at ${at}: ${value}`);
      skip(' \t,');
    } else {
      challenges.push({ scheme: name, params: {} });
      at = next;
      // A scheme with no parameters may be followed by a comma and the next challenge.
      skip(' \t,');
    }
  }
  return challenges;
}
