// The worker's entry point (build/index.js): wraps the module worker-build
// generates (build/gate.mjs) so that an unexpected Rust panic never leaves a
// request without an answer and never takes later requests down with it.
//
// A panic aborts the wasm instance (wasm32 has no unwinding on stable Rust),
// so the future serving the request never completes. The Rust panic hook
// (src/edge/mod.rs) logs {"event":"panic"} and calls the listener below;
// every request in flight in this instance is then answered here with a
// generic 500 (the body of `Denial::Misconfigured`, nothing of the panic)
// and a JSON log line. Nothing is forwarded: the panicking request dies
// before it reaches the origin. worker-build's shim re-creates the wasm
// instance before the next request, so the isolate keeps serving.

import Gate from './gate.mjs';

const FAILURE_BODY = JSON.stringify({ error: 'server_error', error_description: 'Internal error' });

/** Requests in flight in this isolate: the callbacks that fail each one. */
const inFlight = new Set();

globalThis.__portcullisPanicked = () => {
  for (const fail of inFlight) fail(new Error('panic'));
};

function failure() {
  return new Response(FAILURE_BODY, {
    status: 500,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store' },
  });
}

// A plain module-worker handler, not a WorkerEntrypoint class: workerd would
// construct an instance of the class for every request, which showed in the
// profile (bench/profile.mjs). `new Gate(...)` is kept: worker-build's
// constructor hook is what re-creates the wasm instance after a panic.
export default {
  async fetch(request, env, ctx) {
    let fail;
    const crashed = new Promise((_, reject) => {
      fail = reject;
    });
    inFlight.add(fail);
    const started = Date.now();
    try {
      const gate = new Gate(ctx, env);
      return await Promise.race([gate.fetch(request), crashed]);
    } catch (error) {
      // The message is not logged: it may quote a value the gate was handling.
      const reason = error instanceof WebAssembly.RuntimeError || error?.message === 'panic' ? 'panic' : 'runtime_error';
      console.log(
        JSON.stringify({
          event: 'request',
          decision: 'deny',
          reason,
          status: 500,
          method: request.method,
          path: new URL(request.url).pathname,
          duration_ms: Date.now() - started,
        }),
      );
      return failure();
    } finally {
      inFlight.delete(fail);
    }
  },
};
