// Hand-built JWTs that a well-behaved library refuses to produce: unsigned,
// HMAC-signed with public key material, tampered after signing.

import { KeyObject, constants, createHmac, sign } from 'node:crypto';
import { exportSPKI } from 'jose';

export function b64url(input) {
  return Buffer.from(typeof input === 'string' ? input : JSON.stringify(input)).toString('base64url');
}

export function decodePart(part) {
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
}

/** Default claims for hand-built tokens (mirrors the issuer's mint). */
export function claimsFor(issuer, overrides = {}) {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: issuer.issuer,
    aud: undefined,
    sub: 'user-1234',
    client_id: 'demo-client',
    scope: 'invoices:read invoices:write',
    iat: now,
    exp: now + 300,
    ...overrides,
  };
}

/** `alg: none`, empty signature (RFC 7519 §6). */
export function unsignedToken(claims, header = {}) {
  return `${b64url({ alg: 'none', typ: 'at+jwt', ...header })}.${b64url(claims)}.`;
}

/** HS256 over header.payload with `secret` (bytes or string) as the HMAC key. */
export function hmacToken(claims, secret, header = {}) {
  const signingInput = `${b64url({ alg: 'HS256', typ: 'at+jwt', ...header })}.${b64url(claims)}`;
  const signature = createHmac('sha256', secret).update(signingInput).digest('base64url');
  return `${signingInput}.${signature}`;
}

/** The classic algorithm-confusion secrets for an RSA key: its PEM and its JWK. */
export async function publicKeySecrets(key) {
  const pem = await exportSPKI(key.publicKey);
  return {
    pem,
    pemNoNewline: pem.trimEnd(),
    jwk: JSON.stringify(key.publicJwk),
  };
}

/** Replaces claims in a signed token, keeping the original header and signature. */
export function tamperPayload(token, changes) {
  const [header, payload, signature] = token.split('.');
  const claims = { ...decodePart(payload), ...changes };
  return `${header}.${b64url(claims)}.${signature}`;
}

/** Replaces header fields in a signed token, keeping payload and signature. */
export function tamperHeader(token, changes) {
  const [header, payload, signature] = token.split('.');
  return `${b64url({ ...decodePart(header), ...changes })}.${payload}.${signature}`;
}

/** Flips one bit in the signature. */
export function corruptSignature(token) {
  const [header, payload, signature] = token.split('.');
  const bytes = Buffer.from(signature, 'base64url');
  bytes[bytes.length >> 1] ^= 0x01;
  return `${header}.${payload}.${bytes.toString('base64url')}`;
}

/**
 * Signs with an RSA private key (a CryptoKey from the issuer) using the
 * padding of `alg` regardless of what the key was made for: RS* uses
 * PKCS#1 v1.5, PS* uses PSS. WebCrypto refuses to cross these over.
 */
export function rsaSignedToken(claims, privateKey, alg, header = {}) {
  const signingInput = `${b64url({ alg, typ: 'at+jwt', ...header })}.${b64url(claims)}`;
  const hash = `sha${alg.slice(2)}`;
  const key = privateKey instanceof KeyObject ? privateKey : KeyObject.from(privateKey);
  const options = alg.startsWith('PS')
    ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: Number(alg.slice(2)) / 8 }
    : { key, padding: constants.RSA_PKCS1_PADDING };
  const signature = sign(hash, Buffer.from(signingInput), options).toString('base64url');
  return `${signingInput}.${signature}`;
}
