// The floor: forwards every request to the origin without checking anything.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    return fetch(`${env.MCP_ORIGIN}${url.pathname.replace(/^\/mcp/, '')}${url.search}`, {
      method: request.method,
      headers: request.headers,
      body: request.body,
    });
  },
};
