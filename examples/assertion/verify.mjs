// Verifier of the Portcullis origin assertion, for origin authors to copy
// into their MCP server (JavaScript or TypeScript; only dependency: `jose`).
//
// What it proves. The gate adds a `Portcullis-Assertion` header to every
// request it forwards: a short-lived JWS signed with a key only the gate
// holds, naming who the caller is (sub, client_id, scope), which access
// token the gate accepted (token_iss + token_jti / token_hash), and the very
// request it let through (HTTP method, URL, SHA-256 of the body, and the MCP
// method and tool, prompt or resource it authorized). A request that passes
// `verify` came through the gate, to this origin (aud), unchanged, and for
// the first time; the `X-Auth-*` headers prove none of that, as anything
// that can reach the origin can write them.
//
// Use (Node http; with fetch-style servers pass request.headers and the
// bytes of `await request.arrayBuffer()`):
//   import { createAssertionVerifier, AssertionError } from './verify.mjs';
//   const verifier = createAssertionVerifier({
//     jwksUrl: 'https://gate.example/.well-known/portcullis/jwks.json',
//     issuer: 'https://gate.example', audience: 'https://origin.example/mcp' });
//   const body = await readRawBody(req);   // the exact bytes, before any parsing
//   const claims = await verifier.verify({ method: req.method,
//     url: `https://origin.example${req.url}`, headers: req.headers, body });
//   // AssertionError: answer 401 with error.reason; never trust X-Auth-* then.
// `url` must be the URL as the gate sent it (the origin URL configured in
// the gate, behind any proxy): scheme and host are compared case-
// insensitively and a default port is ignored, path and query exactly.

import { base64url, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify } from 'jose';

export const ASSERTION_HEADER = 'portcullis-assertion';
const ASSERTION_TYP = 'portcullis+jwt';
const ALGORITHMS = ['ES256', 'EdDSA'];
const REQUIRED_CLAIMS = ['exp', 'iat', 'jti', 'htm', 'htu', 'body_sha256'];
/** The params member naming each method's target; a Map, so `constructor` and friends name nothing. */
const TARGET_MEMBER = new Map([
  ['tools/call', 'name'],
  ['prompts/get', 'name'],
  ['resources/read', 'uri'],
  ['resources/subscribe', 'uri'],
  ['resources/unsubscribe', 'uri'],
]);

/**
 * Why an assertion was refused. `reason` is a stable code: missing,
 * multiple, malformed, wrong_alg, wrong_typ, unknown_key, jwks_unavailable,
 * bad_signature, expired, not_yet_valid, wrong_issuer, wrong_audience,
 * method_mismatch, url_mismatch, body_mismatch, mcp_mismatch, replayed,
 * replay_cache_full. The message may say more; neither holds the assertion.
 */
export class AssertionError extends Error {
  /**
   * @param {string} reason
   * @param {string} [message]
   * @param {{ cause?: unknown }} [options]
   */
  constructor(reason, message = reason, options = undefined) {
    super(message, options);
    this.name = 'AssertionError';
    this.reason = reason;
  }
}

/**
 * @typedef {object} AssertionClaims
 * @property {string} iss
 * @property {string | string[]} aud
 * @property {string} [sub]
 * @property {string} [client_id]
 * @property {string} scope
 * @property {string} token_iss
 * @property {string} [token_jti]
 * @property {string} [token_hash]
 * @property {string} [mcp_method]
 * @property {string} [mcp_name]
 * @property {{ method: string, name?: string }[]} [mcp_calls]
 * @property {string} htm
 * @property {string} htu
 * @property {string} body_sha256
 * @property {number} iat
 * @property {number} exp
 * @property {string} jti
 */

/**
 * @typedef {object} AssertionRequest
 * @property {string} method the HTTP method received
 * @property {string} url the full URL the gate sent the request to
 * @property {Headers | Record<string, string | string[] | undefined>} headers
 * @property {string | Uint8Array | ArrayBuffer} [body] the exact body bytes received (none: empty)
 */

/**
 * @param {object} options
 * @param {string} options.jwksUrl the gate's `/.well-known/portcullis/jwks.json`
 * @param {string} options.issuer the gate's configured `iss`
 * @param {string} options.audience this origin's `aud`, as configured on the gate's route
 * @param {number} [options.clockToleranceSeconds=5]
 * @param {number} [options.maxAgeSeconds=300] refuse assertions issued longer ago, whatever their exp
 * @param {number} [options.replayCacheSize=100000] most jtis remembered at once
 * @returns {{ verify: (request: AssertionRequest) => Promise<AssertionClaims> }}
 */
export function createAssertionVerifier({
  jwksUrl,
  issuer,
  audience,
  clockToleranceSeconds = 5,
  maxAgeSeconds = 300,
  replayCacheSize = 100_000,
}) {
  if (!jwksUrl || !issuer || !audience) throw new TypeError('jwksUrl, issuer and audience are required');
  // jose caches the set and refetches it (at most every 30 s) for an
  // unknown kid, which is how a rotated-in key is picked up.
  const jwks = createRemoteJWKSet(new URL(jwksUrl));
  const keyFor = async (protectedHeader, token) => {
    try {
      return await jwks(protectedHeader, token);
    } catch (error) {
      if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
      // A network or JWKS failure is the origin's problem, not the caller's:
      // a distinct reason lets the origin alert on it.
      throw new AssertionError('jwks_unavailable', 'the gate key set could not be fetched', { cause: error });
    }
  };
  const replays = createReplayCache(replayCacheSize);

  return {
    async verify({ method, url, headers, body }) {
      const token = singleHeader(headers);
      // The protected header is checked before any key is fetched, so the
      // reason does not depend on the key set, and a token of another kind
      // (an access token, `at+jwt`) never costs a JWKS request.
      if (token.split('.').length !== 3) throw new AssertionError('malformed', 'not a compact JWS');
      let header;
      try {
        header = decodeProtectedHeader(token);
      } catch (error) {
        throw new AssertionError('malformed', 'not a compact JWS', { cause: error });
      }
      if (header.kid !== undefined && typeof header.kid !== 'string') throw new AssertionError('malformed', 'kid must be a string');
      if (!ALGORITHMS.includes(header.alg)) throw new AssertionError('wrong_alg', 'alg must be ES256 or EdDSA');
      if (typeof header.typ !== 'string' || normalizeTyp(header.typ) !== ASSERTION_TYP) {
        throw new AssertionError('wrong_typ', `typ must be ${ASSERTION_TYP}`);
      }

      let claims;
      try {
        ({ payload: claims } = await jwtVerify(token, keyFor, {
          issuer,
          audience,
          typ: ASSERTION_TYP,
          algorithms: ALGORITHMS,
          requiredClaims: REQUIRED_CLAIMS,
          clockTolerance: clockToleranceSeconds,
          maxTokenAge: maxAgeSeconds,
        }));
      } catch (error) {
        throw fromJose(error);
      }
      for (const claim of ['jti', 'htm', 'htu', 'body_sha256']) {
        if (typeof claims[claim] !== 'string' || claims[claim] === '') {
          throw new AssertionError('malformed', `the ${claim} claim must be a non-empty string`);
        }
      }

      const bytes = toBytes(body);
      if (claims.htm !== method) throw new AssertionError('method_mismatch', 'htm is not the request method');
      const expectedUrl = normalizeUrl(url);
      if (expectedUrl === undefined || normalizeUrl(claims.htu) !== expectedUrl) {
        throw new AssertionError('url_mismatch', 'htu is not the request URL');
      }
      const digest = base64url.encode(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
      if (claims.body_sha256 !== digest) throw new AssertionError('body_mismatch', 'body_sha256 is not the hash of the body');
      if (!sameMcp(claims, mcpOf(method, bytes))) {
        throw new AssertionError('mcp_mismatch', 'the MCP claims do not match the body');
      }

      // Last, so a request refused above does not use up its jti: a tampered
      // copy sent first must not lock out the genuine request. Synchronous
      // from here on, so two concurrent verifies cannot both pass.
      const acceptedUntil = Math.min(claims.exp, claims.iat + maxAgeSeconds) + clockToleranceSeconds;
      replays.remember(claims.jti, acceptedUntil, Date.now() / 1000);
      return claims;
    },
  };
}

/** The one assertion of a request; Headers and Node join repeated fields with ", ". */
function singleHeader(headers) {
  const values = [];
  if (headers && typeof headers.get === 'function' && typeof headers.entries === 'function' && !(headers instanceof Map)) {
    const value = headers.get(ASSERTION_HEADER);
    if (value !== null) values.push(value);
  } else if (headers) {
    const entries = headers instanceof Map ? headers.entries() : Object.entries(headers);
    for (const [name, value] of entries) {
      if (String(name).toLowerCase() !== ASSERTION_HEADER || value === undefined || value === null) continue;
      for (const item of Array.isArray(value) ? value : [value]) values.push(String(item));
    }
  }
  if (values.length > 1) throw new AssertionError('multiple', 'more than one Portcullis-Assertion header');
  const value = (values[0] ?? '').trim();
  if (value === '') throw new AssertionError('missing', 'no Portcullis-Assertion header');
  // A compact JWS has no comma: one here means two fields joined.
  if (value.includes(',')) throw new AssertionError('multiple', 'more than one Portcullis-Assertion header');
  return value;
}

/** RFC 7515 §4.1.9: compared case-insensitively, "application/" optional. */
function normalizeTyp(typ) {
  return typ.toLowerCase().replace(/^application\//, '');
}

function fromJose(error) {
  if (error instanceof AssertionError) return error;
  const wrap = (reason) => new AssertionError(reason, error?.message, { cause: error });
  if (error instanceof errors.JWKSNoMatchingKey) return wrap('unknown_key');
  if (error instanceof errors.JOSEAlgNotAllowed) return wrap('wrong_alg');
  if (error instanceof errors.JWSSignatureVerificationFailed) return wrap('bad_signature');
  if (error instanceof errors.JWTExpired) return wrap('expired');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === 'missing' && error.claim !== 'aud' && error.claim !== 'iss') return wrap('malformed');
    if (error.claim === 'iss') return wrap('wrong_issuer');
    if (error.claim === 'aud') return wrap('wrong_audience');
    if (error.claim === 'typ') return wrap('wrong_typ');
    if ((error.claim === 'iat' || error.claim === 'nbf') && error.reason === 'check_failed') return wrap('not_yet_valid');
    return wrap('malformed');
  }
  // Anything else jose throws on this input (JWSInvalid, JWTInvalid, a
  // TypeError for a non-finite date, ...) means the token is not one.
  return wrap('malformed');
}

function toBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === 'string') return new TextEncoder().encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('body must be a string, a Uint8Array (Buffer) or an ArrayBuffer');
}

/**
 * Scheme and host compared case-insensitively, a default port ignored, no
 * fragment; path and query byte for byte (the gate sends them as it signs
 * them). `undefined` for what is not an absolute http(s) URL.
 */
function normalizeUrl(value) {
  const match = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)([^#]*)/.exec(String(value));
  if (!match) return undefined;
  const scheme = match[1].toLowerCase();
  if (scheme !== 'http' && scheme !== 'https') return undefined;
  let authority = match[2].toLowerCase();
  const defaultPort = scheme === 'http' ? ':80' : ':443';
  if (authority.endsWith(defaultPort)) authority = authority.slice(0, -defaultPort.length);
  const rest = match[3].startsWith('/') ? match[3] : `/${match[3]}`;
  return `${scheme}://${authority}${rest}`;
}

const isObject = (value) => typeof value === 'object' && value !== null && !Array.isArray(value);

/** What the gate names for a body: one call's method and target, or several calls; {} for none. */
function mcpOf(method, bytes) {
  if (method !== 'POST' || bytes.length === 0) return {};
  let body;
  try {
    // Fatal and BOM-preserving, as the gate reads JSON: what it could not
    // parse, it named nothing in.
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes));
  } catch {
    return {};
  }
  const call = (message) => {
    if (!isObject(message) || typeof message.method !== 'string') return undefined;
    const member = TARGET_MEMBER.get(message.method);
    const name = member && isObject(message.params) ? message.params[member] : undefined;
    return typeof name === 'string' ? { method: message.method, name } : { method: message.method };
  };
  // One call (a single message, or a batch with one message that has a
  // method) is named flat; several are listed.
  const calls = (Array.isArray(body) ? body : [body]).map(call).filter(Boolean);
  if (calls.length === 0) return {};
  if (calls.length === 1) return { method: calls[0].method, name: calls[0].name };
  return { calls };
}

function sameMcp(claims, expected) {
  if (claims.mcp_method !== expected.method || claims.mcp_name !== expected.name) return false;
  if (claims.mcp_calls === undefined || expected.calls === undefined) return claims.mcp_calls === expected.calls;
  return (
    Array.isArray(claims.mcp_calls) &&
    claims.mcp_calls.length === expected.calls.length &&
    claims.mcp_calls.every((c, i) => isObject(c) && c.method === expected.calls[i].method && c.name === expected.calls[i].name)
  );
}

/**
 * jti -> the time (unix s) until which its assertion could still be
 * accepted; after that the jti needs no remembering, as the assertion would
 * be refused as expired anyway. Bounded: when full, expired entries are
 * pruned first, and if none can go, new assertions are refused
 * (`replay_cache_full`) rather than an unexpired jti forgotten, since
 * forgetting would let that assertion be replayed. A flood fills it only
 * with assertions the gate signed, i.e. at the gate's own request rate.
 */
function createReplayCache(maxEntries) {
  const seen = new Map();
  // Earliest expiry among the entries: no prune pass before it (a full
  // cache of live entries would otherwise cost a full scan per request).
  let earliest = Infinity;
  return {
    remember(jti, until, now) {
      if (seen.has(jti)) throw new AssertionError('replayed', 'this assertion was already used');
      if (seen.size >= maxEntries && now > earliest) {
        earliest = Infinity;
        for (const [key, expiry] of seen) {
          if (expiry < now) seen.delete(key);
          else earliest = Math.min(earliest, expiry);
        }
      }
      if (seen.size >= maxEntries) throw new AssertionError('replay_cache_full', 'too many live assertions to remember');
      seen.set(jti, until);
      earliest = Math.min(earliest, until);
    },
  };
}
