// Reads the function names a WebAssembly module carries in its `name` custom
// section (WebAssembly core spec, appendix "Name Section", subsection 1).

import { readU32, sections } from '../../scripts/wasm-sections.mjs';

/** Function names by function index; empty when the module has no name section. */
export function functionNamesByIndex(bytes) {
  const names = new Map();
  for (const section of sections(bytes)) {
    if (section.name !== 'name') continue;
    const at = { offset: section.body };
    while (at.offset < section.end) {
      const sub = bytes[at.offset++];
      const subSize = readU32(bytes, at);
      const subEnd = at.offset + subSize;
      if (sub === 1) {
        const count = readU32(bytes, at);
        for (let i = 0; i < count; i++) {
          const index = readU32(bytes, at);
          const length = readU32(bytes, at);
          names.set(index, bytes.toString('utf8', at.offset, at.offset + length));
          at.offset += length;
        }
      }
      at.offset = subEnd;
    }
  }
  return names;
}

/** Every function name in `bytes` (a wasm module); [] when it has no name section. */
export function functionNames(bytes) {
  return [...functionNamesByIndex(bytes).values()];
}

const ESCAPES = { SP: '@', BP: '*', RF: '&', LT: '<', GT: '>', LP: '(', RP: ')', C: ',' };

/**
 * Demangles a Rust legacy symbol (`_ZN…E`, as rustc writes them for wasm32)
 * into a path such as `rsa::key::RsaPrivateKey::new`, without the hash.
 * Other names are returned unchanged.
 */
export function demangle(name) {
  if (!name.startsWith('_ZN')) return name;
  const segments = [];
  let at = 3;
  while (at < name.length && name[at] !== 'E') {
    const digits = /^\d+/.exec(name.slice(at));
    if (!digits) return name;
    at += digits[0].length;
    segments.push(name.slice(at, at + Number(digits[0])));
    at += Number(digits[0]);
  }
  if (/^h[0-9a-f]{16}$/.test(segments.at(-1) ?? '')) segments.pop();
  return segments
    .map((segment) =>
      segment
        .replace(/^_\$/, '$')
        .replace(/\$u([0-9a-f]+)\$/g, (_, hex) => String.fromCodePoint(parseInt(hex, 16)))
        .replace(/\$([A-Z]+)\$/g, (whole, code) => ESCAPES[code] ?? whole)
        .replaceAll('..', '::'),
    )
    .join('::');
}
