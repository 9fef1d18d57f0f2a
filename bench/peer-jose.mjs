// The peer gate: what a team would write in JavaScript following the MCP
// TypeScript SDK guides: jose's remote JWKS set, jwtVerify with issuer,
// audience and an algorithm allow-list, a 401 challenge, then forward
// without the client's token. Benchmark only; bundled with esbuild.
// bench/peer-jose-cached.mjs is the same gate with a verified-token cache.
import { createRemoteJWKSet, jwtVerify } from 'jose';

let jwks;

export function challenge(env, error) {
  const metadata = `${new URL(env.MCP_RESOURCE).origin}/.well-known/oauth-protected-resource/mcp`;
  const params = [error ? `error="${error}"` : null, `resource_metadata="${metadata}"`].filter(Boolean).join(', ');
  return new Response(JSON.stringify({ error: error ?? 'unauthorized' }), {
    status: 401,
    headers: { 'content-type': 'application/json', 'www-authenticate': `Bearer ${params}` },
  });
}

/** jose's verdict on `token`: its payload, or a throw. */
export async function verify(token, env) {
  jwks ??= createRemoteJWKSet(new URL(env.OAUTH_JWKS_URI));
  const { payload } = await jwtVerify(token, jwks, {
    issuer: env.OAUTH_ISSUER,
    audience: env.MCP_RESOURCE,
    algorithms: ['RS256', 'PS256', 'ES256', 'EdDSA'],
  });
  return payload;
}

/** The gate, with `check(token, env)` deciding (verify, or a cached verify). */
export function gate(check) {
  return {
    async fetch(request, env) {
      const match = /^Bearer\s+(\S+)$/i.exec(request.headers.get('authorization') ?? '');
      if (!match) return challenge(env);
      let payload;
      try {
        payload = await check(match[1], env);
      } catch {
        return challenge(env, 'invalid_token');
      }
      const headers = new Headers(request.headers);
      headers.delete('authorization');
      headers.set('x-auth-subject', String(payload.sub ?? ''));
      const url = new URL(request.url);
      return fetch(`${env.MCP_ORIGIN}${url.pathname.replace(/^\/mcp/, '')}${url.search}`, {
        method: request.method,
        headers,
        body: request.body,
      });
    },
  };
}

export default gate(verify);
