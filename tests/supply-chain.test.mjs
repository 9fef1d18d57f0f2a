// No cryptographic implementation in the worker at all (issue 8), and so no
// private-key, signing or decryption code (issue 7): the worker verifies
// signatures with the runtime's WebCrypto (src/webcrypto.rs); the
// RustCrypto crates serve only the native build (tests and fuzzing). Two views
// of the same fact:
//  - the wasm32 dependency graph (`cargo tree`) has no crypto implementation
//    crate (rsa, p256/ecdsa, ed25519-dalek, jwt-compact, ...) and none of the
//    crates or worker features that would widen the attack surface;
//  - the linked worker (the wasm rustc wrote for build/, with its name
//    section) contains no function of such crates, and no signing,
//    private-key or decryption code, while it does contain the WebCrypto
//    verification path (so the scan is not vacuous). The one signature the
//    worker makes, the origin assertion (issue 18), is WebCrypto's, called
//    from the entry with a non-extractable key from a secret binding.
// Also: the deployed build carries no trace of the test-only probes.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BUILD_DIR, ROOT } from './helpers/gate.mjs';
import { demangle, functionNames } from './helpers/wasm-names.mjs';

const TARGET_DIR = process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target');
const LINKED_WASM = join(TARGET_DIR, 'wasm32-unknown-unknown', 'release', 'portcullis.wasm');

/** `crate feature "name"` lines of the worker's normal (non-dev) wasm32 graph. */
function wasmFeatures() {
  const out = execFileSync(
    'cargo',
    ['tree', '--target', 'wasm32-unknown-unknown', '-e', 'normal,features', '--prefix', 'none'],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
  );
  const features = new Map();
  for (const line of out.split('\n')) {
    const match = /^(\S+) feature "([^"]+)"/.exec(line);
    if (match) {
      if (!features.has(match[1])) features.set(match[1], new Set());
      features.get(match[1]).add(match[2]);
    }
  }
  const crates = new Set(out.split('\n').map((line) => /^(\S+) v\d/.exec(line)?.[1]).filter(Boolean));
  return { features, crates };
}

// Features that must stay off in the worker, with why: bindings and routers
// the gate does not use.
const FORBIDDEN_FEATURES = {
  worker: ['axum', 'd1', 'queue', 'http', 'timezone', 'experimental_tokio'],
};
// Crates that would implement cryptography in wasm (WebCrypto does it) or
// would only be there to sign, mint, decrypt or parse key files.
const FORBIDDEN_CRATES = [
  'jwt-compact', 'rsa', 'p256', 'ecdsa', 'elliptic-curve', 'ed25519-dalek', 'curve25519-dalek', 'num-bigint-dig',
  'ed25519-compact', 'ring', 'ciborium', 'secp256k1', 'k256', 'hmac-sha256', 'pem-rfc7468', 'chrono-tz', 'openssl',
];

// Function names (demangled) of crypto implementations, and of signing,
// private-key and decryption code by any name.
const FORBIDDEN_SYMBOLS = [
  /^<*(rsa|p256|ecdsa|elliptic_curve|ed25519_dalek|curve25519_dalek|num_bigint_dig|jwt_compact|primeorder|crypto_bigint)::/,
  /RsaPrivateKey|PrivateKey\b|SecretKey|ExpandedSecretKey|SigningKey/,
  /SignPrimitive|sign_prehash|try_sign|RandomizedSigner|DigestSigner|PrehashSigner|Signer<|raw_sign|rfc6979/,
];
// The verification path that must be there, else the scan looks at nothing.
// The machine picks the keys and hands each check to the entry, which calls
// crypto.subtle (checked in build/index.js below).
const EXPECTED_SYMBOLS = [
  /^portcullis_core::verify::jwt::UnverifiedJwt::signature_candidates$/,
  /^portcullis_core::verify::signature::plausible$/,
  /^portcullis::verify_step$/,
  /^portcullis::webcrypto::parameters$/,
];

describe('supply chain: no crypto implementation, no signing code in the worker', () => {
  test('the wasm32 feature graph has no surface-widening features or minting crates', () => {
    const { features, crates } = wasmFeatures();
    assert.ok(crates.has('worker') && crates.has('serde_json'), 'cargo tree listed no crates: the check would be vacuous');
    for (const [crate, forbidden] of Object.entries(FORBIDDEN_FEATURES)) {
      assert.ok(features.has(crate) || crates.has(crate), `${crate} is not in the wasm32 graph: update this test`);
      const enabled = features.get(crate) ?? new Set();
      const bad = forbidden.filter((feature) => enabled.has(feature));
      assert.deepEqual(bad, [], `${crate} has feature(s) ${bad.join(', ')} enabled in the worker`);
    }
    const present = FORBIDDEN_CRATES.filter((crate) => crates.has(crate));
    assert.deepEqual(present, [], `the worker depends on ${present.join(', ')}`);
    // The test-only probes are never default features.
    for (const probe of ['panic-probe', 'verify-probe']) {
      assert.ok(!features.get('portcullis')?.has(probe), `${probe} is enabled by default`);
    }
  });

  test('the linked worker holds the WebCrypto verification path and no crypto implementation or signing code', () => {
    assert.ok(existsSync(LINKED_WASM), `${LINKED_WASM} is missing: run \`npm run build\` first`);
    const names = functionNames(readFileSync(LINKED_WASM)).map(demangle);
    assert.ok(names.length > 100, `only ${names.length} function names in ${LINKED_WASM}: no name section?`);
    for (const pattern of EXPECTED_SYMBOLS) {
      assert.ok(names.some((name) => pattern.test(name)), `no function matches ${pattern}: the scan would be vacuous`);
    }
    const found = names.filter((name) => FORBIDDEN_SYMBOLS.some((pattern) => pattern.test(name)));
    assert.deepEqual(found, [], `crypto implementation or signing code linked into the worker:\n${found.join('\n')}`);
    const entry = readFileSync(join(BUILD_DIR, 'index.js'), 'utf8');
    for (const call of ['crypto.subtle.verify(', 'crypto.subtle.importKey(']) {
      assert.ok(entry.includes(call), `build/index.js does not call ${call}`);
    }
    assert.ok(!/crypto\.subtle\.(generateKey|decrypt|deriveBits|deriveKey|exportKey|unwrapKey|wrapKey)\b/.test(entry), 'the entry generates, decrypts, derives, wraps or exports keys');
    // The entry signs one thing: the origin assertion (issue 18), with the
    // private JWK of the ASSERTION_KEY binding imported non-extractable, and a
    // probe of that key once per isolate. WebCrypto does the signing.
    assert.equal((entry.match(/crypto\.subtle\.sign\(/g) ?? []).length, 2, 'the entry signs in more places than the assertion and its key probe');
    const signingImports = entry.match(/crypto\.subtle\.importKey\([^)]*\['sign'\]\)/g) ?? [];
    assert.equal(signingImports.length, 1, 'signing keys are imported elsewhere than for the assertion');
    assert.match(signingImports[0], /, false, \['sign'\]\)$/, 'the assertion key is imported extractable');
  });

  test('the deployed build has no test probes', () => {
    const wasm = readdirSync(BUILD_DIR).filter((file) => file.endsWith('.wasm'));
    assert.ok(wasm.length > 0, 'no wasm in build/');
    for (const file of [...wasm, 'index.js']) {
      const bytes = readFileSync(join(BUILD_DIR, file));
      assert.ok(!bytes.includes('x-portcullis-panic-probe'), `build/${file} contains the panic probe`);
      assert.ok(!bytes.includes('panic probe'), `build/${file} contains the panic probe`);
      assert.ok(!bytes.includes('verify-probe'), `build/${file} contains the verify probe`);
    }
  });
});
