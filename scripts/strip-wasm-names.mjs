// Drops the `name` custom section (WebAssembly core spec, appendix "Name
// Section") from a built worker. worker-build keeps it (`wasm-opt
// --debuginfo`) for readable stack traces; it is a third of the gzipped
// worker, and the gate reports panics by source location instead.
//   node scripts/strip-wasm-names.mjs build/index_bg.wasm
import { readFileSync, writeFileSync } from 'node:fs';

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

const file = process.argv[2];
const bytes = readFileSync(file);
if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error(`${file} is not a wasm module`);
const kept = [bytes.subarray(0, 8)];
const at = { offset: 8 };
let dropped = 0;
while (at.offset < bytes.length) {
  const start = at.offset;
  const id = bytes[at.offset++];
  const size = readU32(bytes, at);
  const end = at.offset + size;
  let isName = false;
  if (id === 0) {
    const nameLength = readU32(bytes, at);
    isName = bytes.toString('utf8', at.offset, at.offset + nameLength) === 'name';
  }
  if (isName) dropped += end - start;
  else kept.push(bytes.subarray(start, end));
  at.offset = end;
}
writeFileSync(file, Buffer.concat(kept));
console.log(`${file}: dropped the name section (${dropped} bytes), ${bytes.length - dropped} bytes left`);
