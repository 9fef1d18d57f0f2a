// The platform's share of portcullis's per-request work, and nothing else:
// the Workers API calls any gate with portcullis's features must make, made
// the cheapest way, with no decision at all (no token check, no parsing, no
// authorization). In bench/cpu.mjs, `platform` is a lower bound for any gate
// that keeps these features, whatever language decides:
//
//   - a request without Authorization: one log line and a 401 with a
//     challenge (what a no-token refusal costs before any check);
//   - otherwise: a POST body read whole (JSON-RPC authorization needs it;
//     the bytes read are forwarded), the client's headers copied without
//     Authorization and with the three identity headers added, the origin's
//     answer passed back with `cache-control` set, and one log line of the
//     length portcullis writes for an allowed tools/call.
//
// It forwards any token, good or bad: it has no figure for the bad-signature
// scenario. Benchmark only.

/** Lengths of portcullis's log lines for an allowed tools/call and a no-token refusal (measured). */
const ALLOWED_LINE = 330;
const REFUSED_LINE = 137;
const PAD = 'x'.repeat(ALLOWED_LINE);

/** A log line of `length` characters, built per request as portcullis's is. */
function line(started, status, length) {
  const head = `{"event":"request","status":${status},"duration_ms":${Date.now() - started},"pad":"`;
  return `${head}${PAD.slice(0, length - head.length - 2)}"}`;
}

export default {
  async fetch(request, env) {
    const started = Date.now();
    const url = new URL(request.url);
    if (request.headers.get('authorization') === null) {
      const response = new Response('{"error":"unauthorized"}', {
        status: 401,
        headers: [
          ['content-type', 'application/json'],
          ['cache-control', 'no-store'],
          ['www-authenticate', `Bearer resource_metadata="${url.origin}/.well-known/oauth-protected-resource/mcp"`],
        ],
      });
      console.log(line(started, 401, REFUSED_LINE));
      return response;
    }
    const body = request.method === 'POST' ? await request.arrayBuffer() : undefined;
    const headers = new Headers(request.headers);
    headers.delete('authorization');
    headers.set('x-auth-subject', 'subject');
    headers.set('x-auth-client-id', 'client');
    headers.set('x-auth-scopes', 'scopes');
    const upstream = await fetch(`${env.MCP_ORIGIN}${url.pathname.replace(/^\/mcp/, '')}${url.search}`, { method: request.method, headers, body });
    const kept = new Headers(upstream.headers);
    kept.set('cache-control', 'private, no-store');
    const response = new Response(upstream.body, { status: upstream.status, headers: kept });
    console.log(line(started, upstream.status, ALLOWED_LINE));
    return response;
  },
};
