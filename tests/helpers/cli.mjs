// The `portcullis` command line (crates/cli) as the tests run it: the debug
// build `npm test` makes (scripts/test.sh), built here when a test file runs
// on its own before it exists.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from './gate.mjs';

/** The built command line. */
export const CLI = join(ROOT, 'target', 'debug', 'portcullis');

/** Builds the command line when it is missing. */
export async function ensureCli() {
  if (existsSync(CLI)) return;
  const built = await runFile('cargo', ['build', '-q', '-p', 'portcullis-cli'], { timeout: 600_000 });
  if (built.code !== 0) throw new Error(`cargo build -p portcullis-cli failed:\n${built.stderr}`);
}

/**
 * Runs `file` with `args` (no shell); resolves with the exit code and the
 * output, whatever the code. `env` is merged over this process's, with
 * NO_COLOR set; `input` is written to standard input.
 */
export function runFile(file, args, { env = {}, cwd = ROOT, timeout = 60_000, input } = {}) {
  return new Promise((resolve) => {
    const child = execFile(file, args, { cwd, timeout, env: { ...process.env, NO_COLOR: '1', ...env }, maxBuffer: 4 << 20 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr });
    });
    if (input !== undefined) child.stdin.end(input);
  });
}
