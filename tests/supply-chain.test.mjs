// No private-key, signing or decryption code in the worker (issue 7, supply
// chain): portcullis only verifies. Two views of the same fact:
//  - the wasm32 dependency/feature graph (`cargo tree`) has none of the
//    features that widen the attack surface (CBOR claims, PEM/PKCS#8 key
//    parsing, key generation, weak-key compatibility, other curves);
//  - the linked worker (the wasm rustc wrote for build/, with its name
//    section) contains no function of the signing, private-key or decryption
//    code of rsa, p256/ecdsa and ed25519-dalek, while it does contain their
//    verification code (so the scan is not vacuous).
// Also: the deployed build carries no trace of the test-only panic probe.

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

// Features that must stay off in the worker, with why.
const FORBIDDEN_FEATURES = {
  'jwt-compact': ['ciborium', 'clock', 'exonum-crypto', 'es256k', 'k256', 'ed25519-compact', 'default'],
  rsa: ['pem', 'default', 'serde', 'getrandom', 'hazmat'],
  p256: ['pem', 'pkcs8', 'jwk', 'ecdh', 'serde', 'default'],
  'ed25519-dalek': ['rand_core', 'pkcs8', 'pem', 'batch', 'hazmat', 'legacy_compatibility', 'default', 'serde'],
  // Bindings and routers the gate does not use.
  worker: ['axum', 'd1', 'queue', 'http', 'timezone', 'experimental_tokio'],
};
// Crates that would only be there to sign, mint, decrypt or parse key files.
const FORBIDDEN_CRATES = ['ciborium', 'secp256k1', 'k256', 'hmac-sha256', 'pem-rfc7468', 'chrono-tz', 'openssl'];

// Function names (demangled) of signing, private-key and decryption code of
// rsa, p256/ecdsa, ed25519-dalek and jwt-compact. (`Pkcs1v15Sign` is rsa's
// name for the PKCS#1 v1.5 signature *scheme*, used to verify as well.)
const FORBIDDEN_SYMBOLS = [
  /RsaPrivateKey|PrivateKey\b|SecretKey|ExpandedSecretKey|SigningKey/,
  /rsa::.*(decrypt|::sign(_\w*)?$|sign_with_rng|blind|generate_multi_prime|precompute|crt)/i,
  /SignPrimitive|sign_prehash|try_sign|RandomizedSigner|DigestSigner|PrehashSigner|Signer<|raw_sign/,
  /rfc6979|ed25519_dalek::signing::|ed25519_dalek::hazmat/,
  /as jwt_compact::traits::Algorithm>::sign$|AlgorithmExt|jwt_compact::.*::token$|compact_token/,
];
// Verification code that must be there, else the scan looks at nothing.
const EXPECTED_SYMBOLS = [
  /^portcullis::jwt::verify$/,
  /^<jwt_compact::alg::rsa::Rsa as jwt_compact::traits::Algorithm>::verify_signature$/,
  /^<jwt_compact::alg::p256::Es256 as jwt_compact::traits::Algorithm>::verify_signature$/,
  /^<jwt_compact::alg::eddsa_dalek::Ed25519 as jwt_compact::traits::Algorithm>::verify_signature$/,
  /^<rsa::pss::Pss as rsa::traits::padding::SignatureScheme>::verify$/,
  /^ecdsa::hazmat::verify_prehashed$/,
];

describe('supply chain: no signing code in the worker', () => {
  test('the wasm32 feature graph has no surface-widening features or minting crates', () => {
    const { features, crates } = wasmFeatures();
    for (const [crate, forbidden] of Object.entries(FORBIDDEN_FEATURES)) {
      assert.ok(features.has(crate) || crates.has(crate), `${crate} is not in the wasm32 graph: update this test`);
      const enabled = features.get(crate) ?? new Set();
      const bad = forbidden.filter((feature) => enabled.has(feature));
      assert.deepEqual(bad, [], `${crate} has feature(s) ${bad.join(', ')} enabled in the worker`);
    }
    const present = FORBIDDEN_CRATES.filter((crate) => crates.has(crate));
    assert.deepEqual(present, [], `the worker depends on ${present.join(', ')}`);
    // The test-only panic probe is never a default feature.
    assert.ok(!features.get('portcullis')?.has('panic-probe'), 'panic-probe is enabled by default');
  });

  test('the linked worker holds verification code and no signing, private-key or decryption code', () => {
    assert.ok(existsSync(LINKED_WASM), `${LINKED_WASM} is missing: run \`npm run build\` first`);
    const names = functionNames(readFileSync(LINKED_WASM)).map(demangle);
    assert.ok(names.length > 100, `only ${names.length} function names in ${LINKED_WASM}: no name section?`);
    for (const pattern of EXPECTED_SYMBOLS) {
      assert.ok(names.some((name) => pattern.test(name)), `no function matches ${pattern}: the scan would be vacuous`);
    }
    const found = names.filter((name) => FORBIDDEN_SYMBOLS.some((pattern) => pattern.test(name)));
    assert.deepEqual(found, [], `signing / private-key / decryption code linked into the worker:\n${found.join('\n')}`);
  });

  test('the deployed build has no panic probe', () => {
    const wasm = readdirSync(BUILD_DIR).filter((file) => file.endsWith('.wasm'));
    assert.ok(wasm.length > 0, 'no wasm in build/');
    for (const file of [...wasm, 'index.js']) {
      const bytes = readFileSync(join(BUILD_DIR, file));
      assert.ok(!bytes.includes('x-portcullis-panic-probe'), `build/${file} contains the panic probe`);
      assert.ok(!bytes.includes('panic probe'), `build/${file} contains the panic probe`);
    }
  });
});
