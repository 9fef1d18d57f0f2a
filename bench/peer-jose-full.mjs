// The cached jose peer (bench/peer-jose-cached.mjs) plus the per-request work
// portcullis's feature set asks of any gate, written plainly in JavaScript:
// what the other peers leave out by design. In bench/cpu.mjs, `full` minus
// `cached` is what that work costs outside portcullis (workerd, V8, the Fetch
// API), and portcullis minus `full` what portcullis adds on top of it.
//
//   body      a POST body is read whole (a declared length over 1 MiB: 413;
//             none declared: read up to the cap), JSON.parse'd, and must be a
//             JSON-RPC 2.0 message or a non-empty batch (400); each
//             tools/call's params.name needs the scopes MCP_TOOL_SCOPES gives
//             it ("*" for unlisted tools) in the token's `scope` (403);
//             Mcp-Method / Mcp-Name, when sent, must agree with a single
//             message (400). The bytes read are forwarded, not the stream.
//   response  the client's response is built from the origin's without
//             hop-by-hop fields, with `cache-control: private, no-store`
//             unless the origin already says no-store.
//   headers   the origin gets no Authorization, hop-by-hop, Cookie, Host or
//             client-sent X-Auth-* fields (portcullis's list), and gets
//             x-auth-subject, x-auth-client-id, x-auth-scopes.
//   log       one JSON line per request with console.log, portcullis's fields.
//
// Not modelled (portcullis does them, the figures do not include them here):
// tools/list filtering, session binding, CORS, method or route scopes.
// The PEER_FEATURES binding (a space-separated subset of "log body response
// headers"; unset: all four) turns parts off, for `cpu.mjs --ablation`; a part
// turned off behaves as the cached peer does. Benchmark only; bundled with
// esbuild.
import { challenge } from './peer-jose.mjs';
import { cachedVerify } from './peer-jose-cached.mjs';

const MAX_BODY = 1 << 20;
const DROPPED_REQUEST = new Set(['authorization', 'proxy-authorization', 'cookie', 'host', 'content-length', 'connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection']);
const DROPPED_RESPONSE = ['connection', 'keep-alive', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'proxy-connection'];

/** The params member Mcp-Name names, per method. */
const TARGETS = new Map([['tools/call', 'name'], ['prompts/get', 'name'], ['resources/read', 'uri'], ['resources/subscribe', 'uri'], ['resources/unsubscribe', 'uri']]);

let features;
let toolScopes;

/** MCP_TOOL_SCOPES: {"tool": "scope scope" | ["scope"], "*": default}. */
function parseToolScopes(raw) {
  const map = new Map();
  for (const [tool, scopes] of Object.entries(JSON.parse(raw ?? '{}'))) map.set(tool, Array.isArray(scopes) ? scopes : scopes.split(' ').filter(Boolean));
  return map;
}

/** The body, at most MAX_BODY bytes (undefined when larger). */
async function readBody(request) {
  const declared = request.headers.get('content-length');
  if (declared !== null) return Number(declared) > MAX_BODY ? undefined : request.arrayBuffer();
  const chunks = [];
  let size = 0;
  const reader = request.body.getReader();
  for (let read = await reader.read(); !read.done; read = await reader.read()) {
    size += read.value.byteLength;
    if (size > MAX_BODY) return reader.cancel().then(() => undefined);
    chunks.push(read.value);
  }
  const bytes = new Uint8Array(size);
  chunks.reduce((at, chunk) => (bytes.set(chunk, at), at + chunk.byteLength), 0);
  return bytes;
}

const rpcError = (status, code, message, reason) => ({ status, reason, response: Response.json({ jsonrpc: '2.0', id: null, error: { code, message } }, { status }) });

/** JSON-RPC authorization of a parsed body: { audit } or { audit, refusal }. */
function authorizeRpc(body, request, granted, env) {
  const messages = Array.isArray(body) ? body : [body];
  const audit = { methods: [], tools: [], required_scopes: [] };
  const required = new Set();
  const invalid = { audit: undefined, refusal: rpcError(400, -32600, 'Invalid Request', 'body_not_jsonrpc') };
  if (messages.length === 0) return invalid;
  for (const m of messages) {
    if (typeof m !== 'object' || m === null || Array.isArray(m) || m.jsonrpc !== '2.0') return invalid;
    if ('id' in m && typeof m.id !== 'string' && typeof m.id !== 'number' && !(m.id === null && 'error' in m)) return invalid;
    if (!('method' in m)) {
      if (!('id' in m) || ('result' in m) === ('error' in m)) return invalid;
      continue;
    }
    if (typeof m.method !== 'string') return invalid;
    audit.methods.push(m.method);
    const member = TARGETS.get(m.method);
    if (member && typeof m.params?.[member] !== 'string') return { audit: undefined, refusal: rpcError(400, -32602, 'Invalid params', 'rpc_invalid_params') };
    if (m.method === 'tools/call') {
      audit.tools.push(m.params.name);
      for (const scope of toolScopes.get(m.params.name) ?? toolScopes.get('*') ?? []) required.add(scope);
    }
  }
  audit.required_scopes = [...required].sort();
  const [mcpMethod, mcpName] = [request.headers.get('mcp-method'), request.headers.get('mcp-name')];
  if (mcpMethod !== null || mcpName !== null) {
    const [m] = messages;
    const target = TARGETS.has(m.method) ? m.params[TARGETS.get(m.method)] : undefined;
    if (messages.length !== 1 || (mcpMethod !== null && m.method !== mcpMethod.trim()) || (mcpName !== null && target !== mcpName.trim())) {
      return { audit, refusal: rpcError(400, -32020, 'Header mismatch', 'mcp_header_mismatch') };
    }
  }
  const missing = audit.required_scopes.filter((scope) => !granted.includes(scope));
  if (missing.length) {
    const metadata = `${new URL(env.MCP_RESOURCE).origin}/.well-known/oauth-protected-resource/mcp`;
    const response = Response.json({ error: 'insufficient_scope' }, {
      status: 403,
      headers: { 'www-authenticate': `Bearer error="insufficient_scope", scope="${audit.required_scopes.join(' ')}", resource_metadata="${metadata}"` },
    });
    return { audit, refusal: { status: 403, reason: 'insufficient_scope', response } };
  }
  return { audit };
}

/** Claim text made header-safe: outside visible ASCII, and `%`, percent-encoded. */
const headerSafe = (value) => String(value).replace(/[^\x20-\x7e]|%/gu, encodeURIComponent);

export default {
  async fetch(request, env) {
    const started = Date.now();
    features ??= new Set((env.PEER_FEATURES ?? 'log body response headers').split(' ').filter(Boolean));
    toolScopes ??= parseToolScopes(env.MCP_TOOL_SCOPES);
    const url = new URL(request.url);
    let payload;
    let rpc;
    const done = (response, reason) => {
      if (features.has('log')) {
        console.log(JSON.stringify({
          event: 'request',
          decision: reason === 'authorized' ? 'allow' : 'deny',
          reason,
          method: request.method,
          path: url.pathname,
          route: '/mcp',
          iss: payload?.iss,
          sub: payload?.sub,
          client_id: payload?.client_id ?? payload?.azp,
          scopes: payload ? String(payload.scope ?? '') : undefined,
          rpc,
          status: response.status,
          duration_ms: Date.now() - started,
        }));
      }
      return response;
    };

    const match = /^Bearer\s+(\S+)$/i.exec(request.headers.get('authorization') ?? '');
    if (!match) return done(challenge(env), 'no_credentials');
    try {
      payload = await cachedVerify(match[1], env);
    } catch (error) {
      return done(challenge(env, 'invalid_token'), error?.code ?? 'invalid_token');
    }
    const granted = String(payload.scope ?? '').split(' ').filter(Boolean);

    let body = request.body;
    if (features.has('body') && request.method === 'POST') {
      body = await readBody(request);
      if (body === undefined) return done(Response.json({ error: 'body_too_large' }, { status: 413 }), 'body_too_large');
      let parsed;
      try {
        parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
      } catch {
        const { response, reason } = rpcError(400, -32700, 'Parse error', 'body_not_json');
        return done(response, reason);
      }
      const verdict = authorizeRpc(parsed, request, granted, env);
      rpc = verdict.audit;
      if (verdict.refusal) return done(verdict.refusal.response, verdict.refusal.reason);
    }

    let headers;
    if (features.has('headers')) {
      headers = new Headers();
      for (const [name, value] of request.headers) if (!DROPPED_REQUEST.has(name) && !name.startsWith('x-auth-')) headers.append(name, value);
      if (payload.sub !== undefined) headers.set('x-auth-subject', headerSafe(payload.sub));
      const clientId = payload.client_id ?? payload.azp;
      if (clientId !== undefined) headers.set('x-auth-client-id', headerSafe(clientId));
      headers.set('x-auth-scopes', headerSafe(granted.join(' ')));
    } else {
      headers = new Headers(request.headers);
      headers.delete('authorization');
      headers.set('x-auth-subject', String(payload.sub ?? ''));
    }

    const upstream = await fetch(`${env.MCP_ORIGIN}${url.pathname.replace(/^\/mcp/, '')}${url.search}`, { method: request.method, headers, body });
    if (!features.has('response')) return done(upstream, 'authorized');
    const kept = new Headers(upstream.headers);
    for (const name of DROPPED_RESPONSE) kept.delete(name);
    if (!/no-store/i.test(kept.get('cache-control') ?? '')) kept.set('cache-control', 'private, no-store');
    return done(new Response(upstream.body, { status: upstream.status, statusText: upstream.statusText, headers: kept }), 'authorized');
  },
};
