// Trims a built worker of what nothing uses at run time.
//
//   node scripts/strip-wasm-names.mjs build/index_bg.wasm
// drops the custom sections engines ignore: `name` (WebAssembly core spec,
// appendix "Name Section"), which worker-build keeps (`wasm-opt
// --debuginfo`) for readable stack traces and which is a third of the
// gzipped worker (the gate reports panics by source location instead), and
// the tool conventions' `producers` (which tools built it) and
// `target_features` (the features it was built with, for linkers).
//
//   node scripts/strip-wasm-names.mjs --exports build/index_bg.wasm
// drops the exports of the JavaScript classes the `worker` crate and its
// `wasm-streams` dependency declare with #[wasm_bindgen] (UNUSED_CLASSES),
// which wasm-bindgen exports whether or not anything uses them. The gate
// uses none: the entry (src/entry.mjs) imports only the default export of
// the generated module, whose methods are the gate's own calls, and no Rust
// code of the gate makes a stream. Their methods in the generated module
// stay, unreachable, and throw if ever called. scripts/build.sh then has
// wasm-opt remove the code only those exports reached (about 2.5 KB of the
// gzipped worker); it runs before the sections are dropped, as wasm-opt
// reads the module's features from `target_features`.
import { readFileSync, writeFileSync } from 'node:fs';
import { readU32, sections } from './wasm-sections.mjs';

const DROPPED_SECTIONS = new Set(['name', 'producers', 'target_features']);
/** worker 0.8.7 (ContainerStartupOptions, MinifyConfig, R2Range) and wasm-streams 0.7 (IntoUnderlying*). */
const UNUSED_CLASSES = ['containerstartupoptions', 'minifyconfig', 'r2range', 'intounderlyingbytesource', 'intounderlyingsink', 'intounderlyingsource'];
/** wasm-bindgen's export names for a class's members: `<class>_<member>`, `__wbg_<class>_free`, `__wbg_get_<class>_<field>`, `__wbg_set_<class>_<field>`. */
const UNUSED_EXPORT = new RegExp(`^(__wbg_(get_|set_)?)?(${UNUSED_CLASSES.join('|')})_`);

const exportsMode = process.argv[2] === '--exports';
const file = process.argv[exportsMode ? 3 : 2];
const bytes = readFileSync(file);

/** Unsigned LEB128 encoding of `value`. */
function leb128(value) {
  const out = [];
  do {
    let byte = value & 0x7f;
    value >>>= 7;
    if (value) byte |= 0x80;
    out.push(byte);
  } while (value);
  return Buffer.from(out);
}

const kept = [bytes.subarray(0, 8)];
let dropped = 0;
const droppedExports = [];
for (const section of sections(bytes)) {
  if (exportsMode && section.id === 7) {
    // Export section (core spec §5.5.10): a vector of (name, kind, index).
    const at = { offset: section.body };
    const count = readU32(bytes, at);
    const entries = [];
    for (let i = 0; i < count; i++) {
      const start = at.offset;
      const length = readU32(bytes, at);
      const name = bytes.toString('utf8', at.offset, at.offset + length);
      at.offset += length + 1; // name, then the export kind
      readU32(bytes, at); // index
      if (UNUSED_EXPORT.test(name)) droppedExports.push(name);
      else entries.push(bytes.subarray(start, at.offset));
    }
    const body = Buffer.concat([leb128(entries.length), ...entries]);
    kept.push(Buffer.from([7]), leb128(body.length), body);
  } else if (!exportsMode && section.id === 0 && DROPPED_SECTIONS.has(section.name)) {
    dropped += section.end - section.start;
  } else {
    kept.push(bytes.subarray(section.start, section.end));
  }
}
writeFileSync(file, Buffer.concat(kept));
if (exportsMode) {
  // Each class has at least its `free` export: one missing means the names
  // changed (a new worker or wasm-streams), and the list needs updating.
  for (const name of UNUSED_CLASSES) {
    if (!droppedExports.includes(`__wbg_${name}_free`)) console.warn(`${file}: no export __wbg_${name}_free: update UNUSED_CLASSES`);
  }
  console.log(`${file}: dropped ${droppedExports.length} exports of unused classes (${UNUSED_CLASSES.join(', ')})`);
} else {
  console.log(`${file}: dropped the name, producers and target_features sections (${dropped} bytes), ${bytes.length - dropped} bytes left`);
}
