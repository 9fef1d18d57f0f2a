// Where the worker's size goes: code bytes per crate in the linked wasm
// (target/wasm32-unknown-unknown/release/portcullis.wasm, which keeps the
// name section), and the shipped build/index_bg.wasm raw and gzipped.
//   node bench/wasm-size.mjs [linked.wasm]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { demangle } from '../tests/helpers/wasm-names.mjs';

const ROOT = new URL('..', import.meta.url).pathname;
const linked = process.argv[2] ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target'), 'wasm32-unknown-unknown', 'release', 'portcullis.wasm');

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

/** Function bodies' sizes by function index, and names by index. */
function inspect(bytes) {
  const at = { offset: 8 };
  let imported = 0;
  const bodies = [];
  const names = new Map();
  const sections = {};
  while (at.offset < bytes.length) {
    const id = bytes[at.offset++];
    const size = readU32(bytes, at);
    const end = at.offset + size;
    sections[id] = (sections[id] ?? 0) + size;
    if (id === 2) {
      const count = readU32(bytes, at);
      for (let i = 0; i < count; i++) {
        for (let k = 0; k < 2; k++) at.offset += readU32(bytes, at);
        const kind = bytes[at.offset++];
        if (kind === 0) { readU32(bytes, at); imported++; }
        else if (kind === 1) { at.offset++; const flags = readU32(bytes, at); readU32(bytes, at); if (flags & 1) readU32(bytes, at); }
        else if (kind === 2) { const flags = readU32(bytes, at); readU32(bytes, at); if (flags & 1) readU32(bytes, at); }
        else if (kind === 3) { at.offset += 2; }
        else if (kind === 4) { at.offset++; readU32(bytes, at); }
      }
    } else if (id === 10) {
      const count = readU32(bytes, at);
      for (let i = 0; i < count; i++) {
        const bodySize = readU32(bytes, at);
        bodies.push(bodySize);
        at.offset += bodySize;
      }
    } else if (id === 0) {
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
              const index = readU32(bytes, at);
              const length = readU32(bytes, at);
              names.set(index, bytes.toString('utf8', at.offset, at.offset + length));
              at.offset += length;
            }
          }
          at.offset = subEnd;
        }
      }
    }
    at.offset = end;
  }
  return { imported, bodies, names, sections };
}

/** The crate a demangled name's code belongs to: `<a::B as c::D>::f` → a. */
function crateOf(name) {
  const path = name.replace(/^<+/, '').replace(/^&(mut )?/, '').replace(/^dyn /, '');
  const first = /^([A-Za-z_][A-Za-z0-9_]*)::/.exec(path)?.[1];
  return first ?? (name.startsWith('__wbg') || name.startsWith('__wbindgen') ? 'wasm-bindgen glue' : 'other');
}

const bytes = readFileSync(linked);
const { imported, bodies, names, sections } = inspect(bytes);
const byCrate = new Map();
for (let i = 0; i < bodies.length; i++) {
  const name = demangle(names.get(imported + i) ?? '?');
  const crate = crateOf(name);
  byCrate.set(crate, (byCrate.get(crate) ?? 0) + bodies[i]);
}
const code = bodies.reduce((a, b) => a + b, 0);
console.log(`linked ${linked}: code ${code} bytes in ${bodies.length} functions, data ${sections[11] ?? 0} bytes`);
for (const [crate, size] of [...byCrate].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`  ${crate.padEnd(28)} ${String(size).padStart(8)}  ${((100 * size) / code).toFixed(1).padStart(5)} %`);
}
try {
  const shipped = readFileSync(join(ROOT, 'build', 'index_bg.wasm'));
  console.log(`build/index_bg.wasm: ${shipped.length} bytes raw, ${gzipSync(shipped, { level: 9 }).length} gzip -9`);
} catch {
  console.log('build/index_bg.wasm missing: run `npm run build`');
}
