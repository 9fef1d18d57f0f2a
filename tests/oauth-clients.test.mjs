// Real clients through the gate: the official MCP TypeScript SDK client
// (@modelcontextprotocol/sdk 1.32.2) with its own OAuth support, starting
// from nothing but the gate's URL, against a real authorization server
// (oidc-provider 9, JWT access tokens per RFC 9068) and the SDK demo origin.
// MCP authorization 2025-11-25: the 401 challenge (RFC 6750 §3, RFC 9728
// §5.1) → protected resource metadata (RFC 9728 §3) → authorization server
// metadata (RFC 8414 / OpenID Connect Discovery) → dynamic client
// registration (RFC 7591) → authorization code + PKCE S256 (RFC 7636) with
// the resource parameter (RFC 8707) → token → MCP through the gate; client
// credentials; refresh (OAuth 2.1 §4.3); step-up on insufficient_scope.
// Login and consent are the authorization server's own HTML forms, submitted
// over HTTP (tests/helpers/oauth.mjs), never mocked.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError, auth, extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js';
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { SCOPES } from '../demo/authorization-server.mjs';
import { HttpUserProvider, assertInOrder, startOAuthStack } from './helpers/oauth.mjs';
import { assertNoSecrets } from './helpers/http.mjs';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fetch for the SDK that records every request it makes and each answer's status and challenge. */
function recordingFetch() {
  const log = [];
  const fetchFn = async (url, init = {}) => {
    const response = await fetch(url, init);
    log.push({
      method: init.method ?? 'GET',
      url: new URL(String(url)),
      status: response.status,
      challenge: response.headers.get('www-authenticate') ?? undefined,
    });
    return response;
  };
  return { log, fetchFn };
}

/** The access and refresh tokens a provider holds and held, for leak checks. */
function heldSecrets(provider) {
  return provider.savedTokens.flatMap((t) => [t.access_token, t.refresh_token]).filter(Boolean);
}

/** Connects an SDK client, doing the interactive part (redirect → finishAuth) when the SDK asks for it. */
async function connectInteractive(url, provider, fetchFn) {
  const first = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: fetchFn });
  const probe = new Client({ name: 'portcullis-sdk-test', version: '0' });
  // The SDK meets the 401, discovers, registers, and sends the user to the
  // authorization endpoint (redirectToAuthorization: login and consent over
  // HTTP); connect() then fails with UnauthorizedError until the code is in.
  await assert.rejects(probe.connect(first), UnauthorizedError);
  assert.ok(provider.codes.length > 0, 'the SDK sent the user to the authorization endpoint');
  await first.finishAuth(provider.codes.at(-1));
  await probe.close();
  const transport = new StreamableHTTPClientTransport(url, { authProvider: provider, fetch: fetchFn });
  const client = new Client({ name: 'portcullis-sdk-test', version: '0' });
  await client.connect(transport);
  return { client, transport };
}

describe('MCP TypeScript SDK client (own OAuth) through the gate, oidc-provider as the authorization server', () => {
  let env;

  before(async () => {
    env = await startOAuthStack();
  });

  after(async () => {
    await env?.close();
  });

  test('authorization code + PKCE + dynamic registration + resource, from nothing but the gate URL', async () => {
    const { as, stack } = env;
    const url = new URL(stack.resource);
    const provider = new HttpUserProvider();
    const { log, fetchFn } = recordingFetch();
    const asBefore = as.requests.length;

    const { client, transport } = await connectInteractive(url, provider, fetchFn);
    try {
      const { tools } = await client.listTools();
      // invoices:read only: the gate filters out the write tool.
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'whoami']);
      const result = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1001' } });
      assert.match(result.content[0].text, /Invoice INV-1001: ACME Corp/);
      const who = await client.callTool({ name: 'whoami', arguments: {} });
      const identity = JSON.parse(who.content[0].text);
      assert.equal(identity.subject, 'demo-user');
      assert.equal(identity.client_id, provider.clientInformation().client_id);
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }

    // What the client did, in order (requests to the gate and the AS by the SDK).
    const gate = stack.base;
    const steps = log.map((e) => `${e.method} ${e.url.origin === gate ? 'gate' : e.url.origin === as.issuer ? 'as' : e.url.origin}${e.url.pathname} ${e.status}`);
    assertInOrder(steps, [
      'POST gate/mcp 401',
      'GET gate/.well-known/oauth-protected-resource/mcp 200',
      'GET as/.well-known/oauth-authorization-server 200',
      'POST as/reg 201',
      'POST as/token 200',
      'POST gate/mcp 200',
    ]);
    const challenge = extractWWWAuthenticateParams(new Response(null, { status: 401, headers: { 'www-authenticate': log[0].challenge } }));
    assert.equal(challenge.resourceMetadataUrl.href, `${gate}/.well-known/oauth-protected-resource/mcp`);
    assert.equal(challenge.scope, 'invoices:read');

    // At the authorization server: metadata, registration, authorization with
    // login and consent pages, one code exchange.
    const asSteps = as.requests.slice(asBefore).map((r) => `${r.method} ${r.path.replace(/\/interaction\/[^/]+/, '/interaction/*').replace(/^\/auth\/.+/, '/auth/*')}`);
    assertInOrder(asSteps, [
      'GET /.well-known/oauth-authorization-server',
      'POST /reg',
      'GET /auth',
      'GET /interaction/*',
      'POST /interaction/*/login',
      'GET /auth/*',
      'GET /interaction/*',
      'POST /interaction/*/confirm',
      'GET /auth/*',
      'POST /token',
    ]);
    assert.equal(asSteps.filter((s) => s === 'POST /reg').length, 1, 'registered once');
    assert.equal(asSteps.filter((s) => s === 'POST /token').length, 1, 'one code exchange');

    // The authorization request: PKCE S256, the resource indicator, the scope the challenge named.
    const [authorization] = provider.authorizationUrls;
    assert.equal(authorization.searchParams.get('code_challenge_method'), 'S256');
    assert.match(authorization.searchParams.get('code_challenge'), /^[A-Za-z0-9_-]{43}$/);
    assert.equal(authorization.searchParams.get('resource'), stack.resource);
    assert.equal(authorization.searchParams.get('scope'), 'invoices:read');

    // An RFC 9068 JWT access token for the gate's resource.
    const accessToken = provider.tokens().access_token;
    assert.equal(decodeProtectedHeader(accessToken).typ, 'at+jwt');
    const claims = decodeJwt(accessToken);
    assert.equal(claims.iss, as.issuer);
    assert.equal(claims.aud, stack.resource);
    assert.equal(claims.scope, 'invoices:read');
    assert.equal(claims.client_id, provider.clientInformation().client_id);

    // The origin served the calls and never saw a token.
    const posts = stack.origin.requests.filter((r) => r.method === 'POST');
    assert.ok(posts.some((r) => r.body.includes('"lookup_invoice"')));
    assertNoSecrets(JSON.stringify(stack.origin.requests), heldSecrets(provider), 'what the origin received');
    for (const request of stack.origin.requests) assert.equal(request.headers.authorization, undefined);
  });

  test('the authorization server refuses an authorization request without PKCE', async () => {
    const { as, stack } = env;
    const metadata = await (await fetch(`${as.issuer}/.well-known/openid-configuration`)).json();
    assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
    const registration = await fetch(metadata.registration_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:1/cb'], token_endpoint_auth_method: 'none', grant_types: ['authorization_code'] }),
    });
    assert.equal(registration.status, 201);
    const { client_id } = await registration.json();
    const url = new URL(metadata.authorization_endpoint);
    url.search = new URLSearchParams({ response_type: 'code', client_id, redirect_uri: 'http://127.0.0.1:1/cb', scope: 'invoices:read', resource: stack.resource });
    const response = await fetch(url, { redirect: 'manual' });
    const location = new URL(response.headers.get('location'));
    assert.equal(location.searchParams.get('error'), 'invalid_request');
    assert.match(location.searchParams.get('error_description'), /PKCE/);
  });

  test('client credentials (machine to machine) with the SDK ClientCredentialsProvider', async () => {
    const { as, stack } = env;
    const provider = new ClientCredentialsProvider({
      clientId: as.agentClient.id,
      clientSecret: as.agentClient.secret,
      expectedIssuer: as.issuer,
      scope: SCOPES,
    });
    const { log, fetchFn } = recordingFetch();
    const asBefore = as.requests.length;
    const transport = new StreamableHTTPClientTransport(new URL(stack.resource), { authProvider: provider, fetch: fetchFn });
    const client = new Client({ name: 'portcullis-m2m-test', version: '0' });
    await client.connect(transport);
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(tools.map((t) => t.name).sort(), ['countdown', 'lookup_invoice', 'void_invoice', 'whoami']);
      const voided = await client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1003', reason: 'm2m test' } });
      assert.equal(voided.isError, undefined, JSON.stringify(voided));
      assert.match(voided.content[0].text, /INV-1003/);
      const identity = JSON.parse((await client.callTool({ name: 'whoami', arguments: {} })).content[0].text);
      assert.equal(identity.client_id, as.agentClient.id);
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
    const steps = log.map((e) => `${e.method} ${new URL(e.url).pathname} ${e.status}`);
    assertInOrder(steps, [
      'POST /mcp 401',
      'GET /.well-known/oauth-protected-resource/mcp 200',
      'GET /.well-known/oauth-authorization-server 200',
      'POST /token 200',
      'POST /mcp 200',
    ]);
    const asPaths = as.requests.slice(asBefore).map((r) => r.path);
    assert.ok(!asPaths.includes('/reg') && !asPaths.includes('/auth'), `no registration, no user: ${asPaths}`);
    assert.equal(asPaths.filter((p) => p === '/token').length, 1);
    const claims = decodeJwt(provider.tokens().access_token);
    assert.equal(claims.aud, stack.resource);
    assert.equal(claims.scope, SCOPES);
    assertNoSecrets(JSON.stringify(stack.origin.requests), [provider.tokens().access_token, as.agentClient.secret], 'what the origin received');
  });

  test('step-up: a read-only client calling the write tool gets 403 insufficient_scope, re-authorizes for the named scope, succeeds', async () => {
    const { as, stack } = env;
    const url = new URL(stack.resource);
    const provider = new HttpUserProvider({ login: 'step-up-user' });
    const { log, fetchFn } = recordingFetch();
    const { client, transport } = await connectInteractive(url, provider, fetchFn);
    try {
      assert.equal(decodeJwt(provider.tokens().access_token).scope, 'invoices:read');
      const voidsBefore = stack.origin.requests.filter((r) => r.body.includes('"void_invoice"')).length;
      const call = () => client.callTool({ name: 'void_invoice', arguments: { invoice_id: 'INV-1001', reason: 'step-up test' } });

      // The SDK (1.32.2) answers 403 insufficient_scope by calling auth() with
      // the challenge's scope; holding a refresh token, auth() refreshes it,
      // which cannot widen the scope, so the retry meets the same 403 and the
      // transport gives up. Minimal glue through the SDK's public auth API:
      // drop the tokens, auth() again with the named scope (login session
      // kept; consent for the new scope), finishAuth, retry.
      const error = await call().then(
        () => assert.fail('the write tool passed with a read-only token'),
        (e) => e,
      );
      assert.ok(error instanceof StreamableHTTPError, String(error));
      assert.equal(error.code, 403);
      // What the SDK did: 403, a refresh_token grant, the same 403, give up.
      // (The SDK's standalone GET SSE stream may open in between: left out.)
      const tail = log
        .slice(log.findIndex((e) => e.status === 403))
        .filter((e) => e.method !== 'GET')
        .map((e) => `${e.method} ${e.url.pathname} ${e.status}`);
      assert.deepEqual(tail, ['POST /mcp 403', 'POST /token 200', 'POST /mcp 403']);
      const refusals = log.filter((e) => e.status === 403);
      const challenge = extractWWWAuthenticateParams(new Response(null, { status: 403, headers: { 'www-authenticate': refusals.at(-1).challenge } }));
      assert.equal(challenge.error, 'insufficient_scope');
      assert.deepEqual(challenge.scope.split(' ').sort(), ['invoices:read', 'invoices:write']);
      assert.equal(
        stack.origin.requests.filter((r) => r.body.includes('"void_invoice"')).length,
        voidsBefore,
        'the refused call never reached the origin',
      );

      await provider.invalidateCredentials('tokens');
      const codesBefore = provider.codes.length;
      const result = await auth(provider, { serverUrl: url, scope: challenge.scope, resourceMetadataUrl: challenge.resourceMetadataUrl, fetchFn });
      assert.equal(result, 'REDIRECT');
      assert.equal(provider.codes.length, codesBefore + 1);
      const stepUp = provider.authorizationUrls.at(-1);
      assert.deepEqual(stepUp.searchParams.get('scope').split(' ').sort(), ['invoices:read', 'invoices:write']);
      assert.equal(stepUp.searchParams.get('resource'), stack.resource);
      await transport.finishAuth(provider.codes.at(-1));
      assert.deepEqual(decodeJwt(provider.tokens().access_token).scope.split(' ').sort(), ['invoices:read', 'invoices:write']);

      const voided = await call();
      assert.equal(voided.isError, undefined, JSON.stringify(voided));
      assert.match(voided.content[0].text, /INV-1001/);
      assert.equal(stack.origin.requests.filter((r) => r.body.includes('"void_invoice"')).length, voidsBefore + 1);
      // Same MCP session throughout: the same user and client, now with more scope.
      assert.ok(transport.sessionId);
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
    assertNoSecrets(JSON.stringify(stack.origin.requests), heldSecrets(provider), 'what the origin received');
  });
});

describe('MCP TypeScript SDK client: refresh when the access token expires mid-session', () => {
  const TTL = 3;
  let env;

  before(async () => {
    env = await startOAuthStack({ accessTokenTTL: TTL, bindings: { JWT_LEEWAY_SECONDS: '0' } });
  });

  after(async () => {
    await env?.close();
  });

  test('the client refreshes on the 401 invalid_token and the session goes on', async () => {
    const { as, stack } = env;
    const url = new URL(stack.resource);
    const provider = new HttpUserProvider({ login: 'refresh-user' });
    const { log, fetchFn } = recordingFetch();
    const { client, transport } = await connectInteractive(url, provider, fetchFn);
    try {
      const first = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1002' } });
      assert.match(first.content[0].text, /Globex/);
      const session = transport.sessionId;
      const firstToken = provider.tokens().access_token;
      assert.ok(provider.tokens().refresh_token, 'a refresh token was issued');
      const { exp } = decodeJwt(firstToken);
      assert.ok(exp - Math.floor(Date.now() / 1000) <= TTL);
      const tokenCalls = as.count('/token');
      const authCalls = as.count('/auth');
      // Let it expire.
      await sleep(Math.max(0, (exp + 1) * 1000 - Date.now()));
      // The gate ends the SDK's standing GET stream when its token expires;
      // the SDK reconnects, is refused, and refreshes there. Let that
      // refresh finish first: the SDK refreshes on each channel that sees a
      // 401, and with a rotated refresh token only one of two concurrent
      // refreshes can win (the loser throws the client back to a new login).
      const settled = Date.now() + 5000;
      while (as.count('/token') === tokenCalls && Date.now() < settled) await sleep(50);

      const second = await client.callTool({ name: 'lookup_invoice', arguments: { invoice_id: 'INV-1003' } });
      assert.match(second.content[0].text, /Initech/);
      assert.equal(transport.sessionId, session, 'same MCP session');
      assert.notEqual(provider.tokens().access_token, firstToken, 'a new access token');
      assert.equal(as.count('/token'), tokenCalls + 1, 'one refresh_token grant');
      assert.equal(as.count('/auth'), authCalls, 'no new authorization');
      const expired = log.filter((e) => e.status === 401).at(-1);
      assert.match(expired.challenge, /error="invalid_token"/);
      const denial = await stack.gate.output.waitFor((l) => l.decision === 'deny' && l.reason === 'token_expired');
      assert.equal(denial[0].status, 401);
      assert.equal(decodeJwt(provider.tokens().access_token).aud, stack.resource);
    } finally {
      await transport.terminateSession().catch(() => {});
      await client.close();
    }
    assertNoSecrets(JSON.stringify(stack.origin.requests), heldSecrets(provider), 'what the origin received');
  });
});
