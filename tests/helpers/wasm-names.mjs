// Reads the function names a WebAssembly module carries in its `name` custom
// section (WebAssembly core spec, appendix "Name Section", subsection 1).

function readU32(bytes, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at.offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return value;
    shift += 7;
  }
}

/** Every function name in `bytes` (a wasm module); [] when it has no name section. */
export function functionNames(bytes) {
  if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error('not a wasm module');
  const at = { offset: 8 };
  const names = [];
  while (at.offset < bytes.length) {
    const id = bytes[at.offset++];
    const size = readU32(bytes, at);
    const end = at.offset + size;
    if (id === 0) {
      const nameLength = readU32(bytes, at);
      const sectionName = bytes.toString('utf8', at.offset, at.offset + nameLength);
      at.offset += nameLength;
      if (sectionName === 'name') {
        while (at.offset < end) {
          const sub = bytes[at.offset++];
          const subSize = readU32(bytes, at);
          const subEnd = at.offset + subSize;
          if (sub === 1) {
            const count = readU32(bytes, at);
            for (let i = 0; i < count; i++) {
              readU32(bytes, at); // function index
              const length = readU32(bytes, at);
              names.push(bytes.toString('utf8', at.offset, at.offset + length));
              at.offset += length;
            }
          }
          at.offset = subEnd;
        }
      }
    }
    at.offset = end;
  }
  return names;
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
