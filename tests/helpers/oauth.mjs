// A user at the authorization server, over plain HTTP: follows the
// authorization request's redirects, signs in on the login form, approves
// the consent form, and stops at the client's redirect URI with the code.
// Cookies are kept as a browser would for that one host. Nothing is mocked:
// every step is a request to the real oidc-provider.

import assert from 'node:assert/strict';

const MAX_STEPS = 20;

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
