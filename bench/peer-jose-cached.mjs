// The peer gate (bench/peer-jose.mjs) with a verified-token cache, as a team
// would add one: a Map from token to payload, used until the token's `exp`,
// bounded (the oldest entry goes first). Only good tokens are cached.
// Benchmark only; bundled with esbuild.
import { gate, verify } from './peer-jose.mjs';

const MAX_ENTRIES = 10_000;
const cache = new Map();

export async function cachedVerify(token, env) {
  const hit = cache.get(token);
  if (hit && (hit.exp === undefined || hit.exp * 1000 > Date.now())) return hit;
  if (hit) cache.delete(token);
  const payload = await verify(token, env);
  if (cache.size >= MAX_ENTRIES) cache.delete(cache.keys().next().value);
  cache.set(token, payload);
  return payload;
}

export default gate(cachedVerify);
