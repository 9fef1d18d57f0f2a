// `npm start`'s stack (scripts/dev.mjs) run by the tests: on free ports,
// with its own state file, waited for until it printed its banner; and
// commands run beside it (the printed one-liners).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, assertBuilt, freePort } from './gate.mjs';

/** Runs `command args` in the repository with `env`; resolves with its exit code and output. */
export function runProcess(command, args, env) {
  return new Promise((resolve) => {
    const p = spawn(command, args, { cwd: ROOT, env });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('exit', (code) => resolve({ code, out, err }));
  });
}

/**
 * Starts `node scripts/dev.mjs ...args` on free ports (`portNames` → env
 * variables) with its own state file, and waits until it printed its banner.
 * @returns {Promise<{child, env, ports, stateDir, output: () => string}>}
 */
export async function startDevStack(args, portNames) {
  assertBuilt();
  const ports = {};
  for (const [name, variable] of Object.entries(portNames)) ports[name] = { variable, port: await freePort() };
  const stateDir = mkdtempSync(join(tmpdir(), 'portcullis-dev-'));
  const env = { ...process.env, PORTCULLIS_DEV_STATE: join(stateDir, 'state.json') };
  for (const { variable, port } of Object.values(ports)) env[variable] = String(port);
  const child = spawn(process.execPath, ['scripts/dev.mjs', ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const deadline = Date.now() + 240_000;
  while (!output.includes('Ctrl-C stops')) {
    if (child.exitCode !== null) assert.fail(`scripts/dev.mjs ${args.join(' ')} exited (${child.exitCode}):\n${output.slice(-3000)}`);
    if (Date.now() > deadline) assert.fail(`the stack did not come up in 240 s:\n${output.slice(-3000)}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    child,
    env,
    stateDir,
    ports: Object.fromEntries(Object.entries(ports).map(([name, { port }]) => [name, port])),
    output: () => output,
  };
}
