// Assertions on the gate's HTTP answers.

import assert from 'node:assert/strict';

/**
 * Parses one `Bearer` challenge (RFC 6750 §3, RFC 9110 §11.6.1) into
 * { scheme, params } with lower-case parameter names.
 */
export function parseChallenge(value) {
  assert.ok(value, 'expected a WWW-Authenticate header');
  const match = /^\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*(.*)$/s.exec(value);
  assert.ok(match, `unparsable challenge: ${value}`);
  const [, scheme, rest] = match;
  const params = {};
  const re = /\s*([A-Za-z0-9!#$%&'*+.^_`|~-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy;
  let consumed = 0;
  let m;
  while (consumed < rest.length && (m = re.exec(rest))) {
    const name = m[1].toLowerCase();
    assert.ok(!(name in params), `parameter ${name} repeated in: ${value}`);
    params[name] = m[2] !== undefined ? m[2].replace(/\\(.)/g, '$1') : m[3];
    consumed = re.lastIndex;
  }
  assert.equal(rest.slice(consumed).trim(), '', `trailing garbage in challenge: ${value}`);
  return { scheme, params };
}

/** Reads a JSON error body and checks its shape. */
export async function errorBody(response, expectedError) {
  assert.match(response.headers.get('content-type') ?? '', /^application\/json\b/i, 'error bodies are JSON');
  const body = await response.json();
  assert.equal(typeof body.error, 'string');
  assert.equal(typeof body.error_description, 'string');
  if (expectedError) assert.equal(body.error, expectedError);
  return body;
}

/**
 * Checks a refusal: status, challenge (error code or none), body.
 *
 * @param {Response} response
 * @param {object} expected
 * @param {number} expected.status
 * @param {string|null} [expected.error] challenge `error=`; null: must be absent; undefined: no challenge check.
 * @param {string} [expected.resourceMetadata] exact resource_metadata URL.
 * @param {string|null} [expected.scope] challenge `scope=`; null: must be absent.
 * @param {string} [expected.bodyError] body `error` value.
 */
export async function expectRefusal(response, { status, error, resourceMetadata, scope, bodyError }) {
  const text = await response.clone().text();
  assert.equal(response.status, status, `status (body: ${text.slice(0, 300)})`);
  if (error !== undefined) {
    const { scheme, params } = parseChallenge(response.headers.get('www-authenticate'));
    assert.equal(scheme.toLowerCase(), 'bearer');
    if (error === null) {
      assert.ok(!('error' in params), `no error= expected, got: ${response.headers.get('www-authenticate')}`);
    } else {
      assert.equal(params.error, error);
      assert.ok(params.error_description, 'error_description present');
    }
    if (resourceMetadata) assert.equal(params.resource_metadata, resourceMetadata);
    if (scope === null) assert.ok(!('scope' in params), 'no scope= expected');
    else if (scope !== undefined) assert.equal(params.scope, scope);
  }
  await errorBody(response, bodyError);
}

/** The origin's request count before and after `fn`, asserting it did not move. */
export async function expectOriginUntouched(origin, fn) {
  const before = origin.requests.length;
  const result = await fn();
  // Give a forwarded request, if any, a moment to land.
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(origin.requests.length, before, `origin received ${origin.requests.length - before} request(s)`);
  return result;
}

/** Asserts none of `secrets` appears anywhere in `text`. */
export function assertNoSecrets(text, secrets, where = 'captured output') {
  for (const secret of secrets) {
    if (!secret) continue;
    assert.ok(!text.includes(secret), `${where} contains a secret (${secret.slice(0, 12)}…)`);
    // A JWT's signature alone is enough to identify it.
    const parts = secret.split('.');
    if (parts.length === 3 && parts[2].length > 16) {
      assert.ok(!text.includes(parts[2]), `${where} contains a token signature`);
    }
  }
}

/**
 * The data of each complete event (text/event-stream, blank-line separated,
 * `data:` lines joined) at the start of `buffer`, and what is left of it.
 * Events without data (comments, keep-alives) are skipped.
 */
export function takeSseData(buffer) {
  const data = [];
  let end;
  while ((end = buffer.indexOf('\n\n')) !== -1) {
    const joined = buffer
      .slice(0, end)
      .split('\n')
      .filter((line) => line.startsWith('data:'))
      .map((line) => line.slice(5).trimStart())
      .join('\n');
    buffer = buffer.slice(end + 2);
    if (joined) data.push(joined);
  }
  return [data, buffer];
}
