// Walks the sections of a WebAssembly module (WebAssembly core spec §5.5.2
// "Sections"; LEB128 integers per §5.2.2): shared by the tools that inspect
// or trim the built worker.

/** Reads an unsigned LEB128 integer at `at.offset`, advancing it. */
export function readU32(bytes, at) {
  let value = 0;
  let shift = 0;
  for (;;) {
    const byte = bytes[at.offset++];
    value += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return value;
    shift += 7;
  }
}

/**
 * Each section of `bytes` (a wasm module, as a Buffer) in order: `id`, its
 * byte range `start`..`end` (header included), `body` where its content
 * starts, and for custom sections (id 0) their `name`, with `body` just past it.
 */
export function* sections(bytes) {
  if (bytes.readUInt32LE(0) !== 0x6d736100) throw new Error('not a wasm module');
  const at = { offset: 8 };
  while (at.offset < bytes.length) {
    const start = at.offset;
    const id = bytes[at.offset++];
    const size = readU32(bytes, at);
    const end = at.offset + size;
    let name;
    if (id === 0) {
      const length = readU32(bytes, at);
      name = bytes.toString('utf8', at.offset, at.offset + length);
      at.offset += length;
    }
    yield { id, start, end, body: at.offset, name };
    at.offset = end;
  }
}
