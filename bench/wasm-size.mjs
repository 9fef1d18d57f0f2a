// Where the worker's size goes: code bytes per crate in the linked wasm
// (target/wasm32-unknown-unknown/release/portcullis.wasm, which keeps the
// name section), and the shipped build/index_bg.wasm raw and gzipped.
//   node bench/wasm-size.mjs [linked.wasm]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { readU32, sections } from '../scripts/wasm-sections.mjs';
import { demangle, functionNamesByIndex } from '../tests/helpers/wasm-names.mjs';

const ROOT = new URL('..', import.meta.url).pathname;
const linked = process.argv[2] ?? join(process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target'), 'wasm32-unknown-unknown', 'release', 'portcullis.wasm');

/** Imported function count, function bodies' sizes, and bytes per section id. */
function inspect(bytes) {
  let imported = 0;
  const bodies = [];
  const sizes = {};
  for (const section of sections(bytes)) {
    sizes[section.id] = (sizes[section.id] ?? 0) + section.end - section.body;
    const at = { offset: section.body };
    if (section.id === 2) {
      const count = readU32(bytes, at);
      for (let i = 0; i < count; i++) {
        // Module and field names: a length, then that many bytes. (Not
      // `at.offset += readU32(…)`: that adds the length to the offset from
      // before the length was read.)
      for (let k = 0; k < 2; k++) {
        const length = readU32(bytes, at);
        at.offset += length;
      }
        const kind = bytes[at.offset++];
        if (kind === 0) { readU32(bytes, at); imported++; }
        else if (kind === 1) { at.offset++; const flags = readU32(bytes, at); readU32(bytes, at); if (flags & 1) readU32(bytes, at); }
        else if (kind === 2) { const flags = readU32(bytes, at); readU32(bytes, at); if (flags & 1) readU32(bytes, at); }
        else if (kind === 3) { at.offset += 2; }
        else if (kind === 4) { at.offset++; readU32(bytes, at); }
      }
    } else if (section.id === 10) {
      const count = readU32(bytes, at);
      for (let i = 0; i < count; i++) {
        const bodySize = readU32(bytes, at);
        bodies.push(bodySize);
        at.offset += bodySize;
      }
    }
  }
  return { imported, bodies, names: functionNamesByIndex(bytes), sizes };
}

/** The crate a demangled name's code belongs to: `<a::B as c::D>::f` → a. */
function crateOf(name) {
  const path = name.replace(/^<+/, '').replace(/^&(mut )?/, '').replace(/^dyn /, '');
  const first = /^([A-Za-z_][A-Za-z0-9_]*)::/.exec(path)?.[1];
  return first ?? (name.startsWith('__wbg') || name.startsWith('__wbindgen') ? 'wasm-bindgen glue' : 'other');
}

const bytes = readFileSync(linked);
const { imported, bodies, names, sizes } = inspect(bytes);
const byCrate = new Map();
for (let i = 0; i < bodies.length; i++) {
  const name = demangle(names.get(imported + i) ?? '?');
  const crate = crateOf(name);
  byCrate.set(crate, (byCrate.get(crate) ?? 0) + bodies[i]);
}
const code = bodies.reduce((a, b) => a + b, 0);
console.log(`linked ${linked}: code ${code} bytes in ${bodies.length} functions, data ${sizes[11] ?? 0} bytes`);
for (const [crate, size] of [...byCrate].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
  console.log(`  ${crate.padEnd(28)} ${String(size).padStart(8)}  ${((100 * size) / code).toFixed(1).padStart(5)} %`);
}
try {
  const shipped = readFileSync(join(ROOT, 'build', 'index_bg.wasm'));
  console.log(`build/index_bg.wasm: ${shipped.length} bytes raw, ${gzipSync(shipped, { level: 9 }).length} gzip -9`);
} catch {
  console.log('build/index_bg.wasm missing: run `npm run build`');
}
