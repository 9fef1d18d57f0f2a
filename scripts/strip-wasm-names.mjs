// Drops the `name` custom section (WebAssembly core spec, appendix "Name
// Section") from a built worker. worker-build keeps it (`wasm-opt
// --debuginfo`) for readable stack traces; it is a third of the gzipped
// worker, and the gate reports panics by source location instead.
//   node scripts/strip-wasm-names.mjs build/index_bg.wasm
import { readFileSync, writeFileSync } from 'node:fs';
import { sections } from './wasm-sections.mjs';

const file = process.argv[2];
const bytes = readFileSync(file);
const kept = [bytes.subarray(0, 8)];
let dropped = 0;
for (const section of sections(bytes)) {
  if (section.name === 'name') dropped += section.end - section.start;
  else kept.push(bytes.subarray(section.start, section.end));
}
writeFileSync(file, Buffer.concat(kept));
console.log(`${file}: dropped the name section (${dropped} bytes), ${bytes.length - dropped} bytes left`);
