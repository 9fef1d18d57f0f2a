// Load generator, run as its own process: autocannon against one URL for a
// bounded time (or a fixed number of requests), cycling through the tokens in
// a file (one per line; an empty file sends no Authorization header). A line
// `DPoP <token> <proof>` sends `Authorization: DPoP <token>` and `DPoP: <proof>`
// (bench/cpu.mjs --dpop: a new proof per request); any other line is a
// Bearer token.
// Prints one JSON line: requests/s, latency percentiles, status counts.
import { readFileSync } from 'node:fs';
import autocannon from 'autocannon';

const { url, seconds, amount, connections, method, headers, body, tokensFile, sampleInt } = JSON.parse(process.argv[2]);
const tokens = readFileSync(tokensFile, 'utf8').split('\n').filter(Boolean);
let next = 0;
const result = await autocannon({
  url,
  connections,
  ...(amount ? { amount } : { duration: seconds }),
  ...(sampleInt ? { sampleInt } : {}),
  ...(method ? { method } : {}),
  ...(headers ? { headers } : {}),
  ...(body ? { body } : {}),
  requests: [
    {
      setupRequest(request) {
        if (!tokens.length) return request;
        const token = tokens[next % tokens.length];
        next += 1;
        if (token.startsWith('DPoP ')) {
          const [, bound, proof] = token.split(' ');
          return { ...request, headers: { ...request.headers, authorization: `DPoP ${bound}`, dpop: proof } };
        }
        return { ...request, headers: { ...request.headers, authorization: `Bearer ${token}` } };
      },
    },
  ],
});
process.stdout.write(
  `${JSON.stringify({
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    total: result.requests.total,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    tokensCycled: tokens.length > 0 && next > tokens.length,
    // This process's own CPU (µs, start-up included), to tell what else used the machine.
    cpu_us: (({ user, system }) => user + system)(process.cpuUsage()),
    statuses: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, count])),
  })}\n`,
);
