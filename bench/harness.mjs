// What the benchmark (bench/run.mjs) and the profiler (bench/profile.mjs)
// share: the local origin every gate forwards to, and the load generator,
// run in its own process so it never competes with the harness's event loop.

import { spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The origin: a small JSON answer to anything. */
export async function startOrigin() {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"jsonrpc":"2.0","id":1,"result":{}}');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/mcp`, close: () => new Promise((r) => server.close(r)) };
}

/**
 * Runs autocannon (bench/load.mjs) against `url` for `seconds` with
 * `connections`, cycling through `tokens`; returns its figures.
 */
export function load(url, tokens, { seconds, connections }) {
  const tokensFile = join(tmpdir(), `portcullis-bench-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  writeFileSync(tokensFile, tokens.join('\n'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(HERE, 'load.mjs'), JSON.stringify({ url, seconds, connections, tokensFile })], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk) => (out += chunk));
    child.on('exit', (code) => {
      rmSync(tokensFile, { force: true });
      if (code === 0) resolve(JSON.parse(out.trim().split('\n').at(-1)));
      else reject(new Error(`load exited ${code}`));
    });
  });
}
