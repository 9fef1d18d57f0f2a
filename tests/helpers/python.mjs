// The official MCP Python SDK (tests/python/, installed into .venv by
// `npm run setup`) on either side of the gate: its origin server as a child
// process, and its client run once per plan, reporting one JSON summary.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { OutputCapture, ROOT, withTimeout } from './gate.mjs';

export const PYTHON = join(ROOT, '.venv', 'bin', 'python');
const SCRIPTS = join(ROOT, 'tests', 'python');
/** The variable the client reads its static token from (never argv: other processes can read that). */
const TOKEN_ENV = 'MCP_TEST_TOKEN';

/** Fails loudly, never skips, when the venv is not there. */
export function assertVenv() {
  if (!existsSync(PYTHON)) {
    throw new Error(`${PYTHON} is missing: run \`npm run setup\` to install the MCP Python SDK (tests/python/requirements.txt) into .venv`);
  }
}

function python(script, args, env) {
  const child = spawn(PYTHON, [join(SCRIPTS, script), ...args], {
    cwd: SCRIPTS,
    env: { ...env, PYTHONUNBUFFERED: '1', PYTHONDONTWRITEBYTECODE: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = new OutputCapture();
  output.attach(child.stdout, 'stdout');
  output.attach(child.stderr, 'stderr');
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return { child, output, exited };
}

function environment() {
  const env = { ...process.env };
  delete env[TOKEN_ENV];
  return env;
}

/**
 * Starts tests/python/origin_server.py on a free port of 127.0.0.1.
 *
 * @returns {Promise<{url: string, output: OutputCapture,
 *   record: () => Promise<{requests: {method: string, path: string, headers: object, body: string}[], voided: string[]}>,
 *   close: () => Promise<void>}>}
 */
export async function startPythonOrigin() {
  assertVenv();
  const { child, output, exited } = python('origin_server.py', ['--port', '0'], environment());
  let ready;
  try {
    [ready] = await Promise.race([
      output.waitFor((line) => line.event === 'ready', { timeoutMs: 20_000 }),
      exited.then(({ code }) => Promise.reject(new Error(`the Python origin exited (${code}) before it was ready:\n${output.text.slice(-2000)}`))),
    ]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const recordUrl = new URL('/_test/requests', ready.url);
  return {
    url: ready.url,
    output,
    /** What the origin received so far, asked of the origin itself (not through the gate). */
    async record() {
      const response = await fetch(recordUrl, { signal: AbortSignal.timeout(5000) });
      return response.json();
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await withTimeout(exited, 5000, 'the Python origin did not stop').catch(() => child.kill('SIGKILL'));
    },
  };
}

/**
 * Runs tests/python/mcp_client.py against `url` and returns its summary.
 *
 * @param {string} url the MCP endpoint.
 * @param {object} [options]
 * @param {'static'|'oauth'} [options.auth='static']
 * @param {string} [options.token] the static bearer token (passed in the environment).
 * @param {string} [options.mode] the SDK Client mode: auto (default), legacy, or a protocol version.
 * @param {object[]} [options.plan] operations, see mcp_client.py.
 * @param {string} [options.login] user name at the authorization server (oauth).
 */
export async function runPythonClient(url, { auth = 'static', token, mode, plan = [], login } = {}) {
  assertVenv();
  const args = ['--url', url, '--auth', auth, '--plan', JSON.stringify(plan)];
  if (mode) args.push('--mode', mode);
  if (login) args.push('--login', login);
  const env = environment();
  if (token) env[TOKEN_ENV] = token;
  const { child, output, exited } = python('mcp_client.py', args, env);
  const { code, signal } = await withTimeout(exited, 60_000, 'the Python client did not finish').catch((error) => {
    child.kill('SIGKILL');
    throw error;
  });
  const [summary] = output.json((line) => Array.isArray(line.operations));
  if (code !== 0 || !summary) {
    throw new Error(`the Python client failed (${code ?? signal}):\n${output.text.slice(-3000)}`);
  }
  return summary;
}
