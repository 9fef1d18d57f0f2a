// A user at the authorization server, over plain HTTP: follows the
// authorization request's redirects, signs in on the login form, approves
// the consent form, and stops at the client's redirect URI with the code.
// Cookies are kept as a browser would for that one host. Nothing is mocked:
// every step is a request to the real oidc-provider. Also: the gate in
// front of a fresh oidc-provider, for the tests of real OAuth clients.

import assert from 'node:assert/strict';
import { SCOPES, startAuthorizationServer } from '../../demo/authorization-server.mjs';
import { startStack } from './stack.mjs';

const MAX_STEPS = 20;

/** The per-tool policy of the OAuth stack: the write tool needs invoices:write, every other tool invoices:read. */
export const TOOL_SCOPES = JSON.stringify({ lookup_invoice: 'invoices:read', void_invoice: 'invoices:write', '*': 'invoices:read' });

/**
 * The gate (and the SDK demo origin) trusting a fresh oidc-provider that
 * issues JWT access tokens for the gate's resource; keys found by discovery.
 *
 * @param {object} [options]
 * @param {number} [options.accessTokenTTL=3600] access token lifetime, in seconds.
 * @param {object} [options.bindings] merged over the stack's OAuth bindings (e.g. MCP_ORIGIN for another origin).
 */
export async function startOAuthStack({ accessTokenTTL = 3600, bindings = {} } = {}) {
  const resources = [];
  const as = await startAuthorizationServer({ resources, accessTokenFormat: 'jwt', accessTokenTTL });
  let stack;
  try {
    stack = await startStack({
      bindings: ({ resource }) => {
        resources.push(resource);
        return {
          OAUTH_ISSUER: as.issuer,
          OAUTH_JWKS_URI: undefined, // discovered: RFC 8414, then OpenID Connect Discovery
          MCP_SCOPES_SUPPORTED: SCOPES,
          MCP_REQUIRED_SCOPES: 'invoices:read',
          MCP_TOOL_SCOPES: TOOL_SCOPES,
          ...bindings,
        };
      },
    });
  } catch (error) {
    await as.close();
    throw error;
  }
  return {
    as,
    stack,
    async close() {
      await stack.close();
      await as.close();
    },
  };
}

/** `steps` appear in `actual` in this order (other entries may come between). */
export function assertInOrder(actual, steps) {
  let from = 0;
  for (const step of steps) {
    const at = actual.indexOf(step, from);
    assert.ok(at >= 0, `expected "${step}" after position ${from} in:\n  ${actual.join('\n  ')}`);
    from = at + 1;
  }
}

/**
 * Goes from `authorizationUrl` to the redirect back to `redirectUri`.
 *
 * @param {URL|string} authorizationUrl
 * @param {object} options
 * @param {string} options.redirectUri the client's redirect URI (where to stop).
 * @param {string} [options.login='demo-user'] user name typed on the login form.
 * @param {boolean} [options.approve=true] press Allow (else Deny) on the consent form.
 * @param {Map<string,string>} [options.cookies] the user agent's cookie jar (kept across calls: a signed-in session).
 * @returns {Promise<{url: URL, pages: string[]}>} the final redirect and the pages (login, consent) shown.
 */
export async function authorizeOverHttp(authorizationUrl, { redirectUri, login = 'demo-user', approve = true, cookies = new Map() }) {
  let url = new URL(authorizationUrl);
  let method = 'GET';
  let body;
  const pages = [];
  for (let step = 0; step < MAX_STEPS; step += 1) {
    if (url.href.startsWith(redirectUri)) return { url, pages };
    const headers = { cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const response = await fetch(url, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(10_000) });
    for (const setCookie of response.headers.getSetCookie()) {
      const [pair, ...attributes] = setCookie.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attributes.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || value === '';
      if (expired) cookies.delete(name);
      else cookies.set(name, value);
    }
    method = 'GET';
    body = undefined;
    if (response.status >= 300 && response.status < 400) {
      await response.body?.cancel();
      url = new URL(response.headers.get('location'), url);
      continue;
    }
    const html = await response.text();
    assert.equal(response.status, 200, `authorization server page ${url.pathname}: ${response.status} ${html.slice(0, 300)}`);
    const actions = [...html.matchAll(/<form method="post" action="([^"]+)"/g)].map((m) => m[1]);
    const pick = (suffix) => actions.find((a) => a.endsWith(suffix));
    if (pick('/login')) {
      pages.push('login');
      url = new URL(pick('/login'), url);
      body = new URLSearchParams({ login }).toString();
    } else if (pick('/confirm')) {
      pages.push('consent');
      url = new URL(pick(approve ? '/confirm' : '/abort'), url);
      body = '';
    } else {
      assert.fail(`unexpected page at ${url.pathname}: ${html.slice(0, 300)}`);
    }
    method = 'POST';
  }
  assert.fail(`no redirect to ${redirectUri} after ${MAX_STEPS} steps`);
}

/**
 * An OAuthClientProvider (the MCP SDK's interface) for a client that
 * registers dynamically and uses authorization code + PKCE, where "the
 * browser" is authorizeOverHttp: redirectToAuthorization runs the login and
 * consent over HTTP and keeps the code for transport.finishAuth.
 */
export class HttpUserProvider {
  /**
   * @param {object} options
   * @param {string} [options.redirectUri] where the authorization server sends the code back.
   * @param {string} [options.login] the user who signs in.
   */
  constructor({ redirectUri = 'http://127.0.0.1:1/callback', login = 'demo-user', clientName = 'portcullis-sdk-test' } = {}) {
    this.redirectUri = redirectUri;
    this.login = login;
    this.clientName = clientName;
    this.cookies = new Map();
    /** Authorization URLs the SDK asked to open, in order. */
    this.authorizationUrls = [];
    /** Codes received back, in order; the last one is for finishAuth. */
    this.codes = [];
    /** Every token set the SDK saved. */
    this.savedTokens = [];
    this._tokens = undefined;
    this._client = undefined;
    this._verifier = undefined;
    this._discovery = undefined;
  }

  get redirectUrl() {
    return this.redirectUri;
  }

  get clientMetadata() {
    return {
      client_name: this.clientName,
      redirect_uris: [this.redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  clientInformation() {
    return this._client;
  }

  saveClientInformation(info) {
    this._client = info;
  }

  tokens() {
    return this._tokens;
  }

  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }

  async redirectToAuthorization(authorizationUrl) {
    this.authorizationUrls.push(new URL(authorizationUrl));
    const { url } = await authorizeOverHttp(authorizationUrl, { redirectUri: this.redirectUri, login: this.login, cookies: this.cookies });
    const code = url.searchParams.get('code');
    assert.ok(code, `no code in ${url.href}`);
    this.codes.push(code);
  }

  saveCodeVerifier(verifier) {
    this._verifier = verifier;
  }

  codeVerifier() {
    return this._verifier;
  }

  saveDiscoveryState(state) {
    this._discovery = state;
  }

  discoveryState() {
    return this._discovery;
  }

  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this._client = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'discovery') this._discovery = undefined;
  }
}
