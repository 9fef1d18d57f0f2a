// Drops the custom sections nothing reads at run time from a built worker:
// `name` (WebAssembly core spec, appendix "Name Section"), which
// worker-build keeps (`wasm-opt --debuginfo`) for readable stack traces and
// which is a third of the gzipped worker (the gate reports panics by source
// location instead), and the tool conventions' `producers` (which tools
// built it) and `target_features` (the features it was built with, for
// linkers). Engines ignore custom sections; the code is untouched.
//   node scripts/strip-wasm-names.mjs build/index_bg.wasm
import { readFileSync, writeFileSync } from 'node:fs';
import { sections } from './wasm-sections.mjs';

const DROPPED = new Set(['name', 'producers', 'target_features']);

const file = process.argv[2];
const bytes = readFileSync(file);
const kept = [bytes.subarray(0, 8)];
let dropped = 0;
for (const section of sections(bytes)) {
  if (section.id === 0 && DROPPED.has(section.name)) dropped += section.end - section.start;
  else kept.push(bytes.subarray(section.start, section.end));
}
writeFileSync(file, Buffer.concat(kept));
console.log(`${file}: dropped the name, producers and target_features sections (${dropped} bytes), ${bytes.length - dropped} bytes left`);
