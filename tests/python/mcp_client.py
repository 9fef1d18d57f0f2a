"""An MCP client built with the official Python SDK (mcp 2.3.0), for
tests/python-sdk.test.mjs: what a new user's Python client does through the
gate, reported as one JSON line for the test to assert on.

    MCP_TEST_TOKEN=... python mcp_client.py --url http://127.0.0.1:8787/mcp --auth static --plan '[...]'
    python mcp_client.py --url ... --auth oauth --login alice --plan '[...]'

--auth static: the token is read from the MCP_TEST_TOKEN environment variable
(never from argv, which other processes can read) and sent as a bearer token;
without it the client sends no Authorization at all.
--auth oauth: the SDK's own OAuthClientProvider, from nothing but the URL: the
401 challenge, protected resource metadata, authorization server metadata,
dynamic client registration, authorization code + PKCE with the resource
parameter, and step-up on 403 insufficient_scope. "The browser" is
authorize_over_http below: it signs in and consents on the demo authorization
server's HTML forms (demo/authorization-server.mjs) with plain HTTP requests,
as tests/helpers/oauth.mjs does for the TypeScript SDK.

--plan is a JSON array of operations run in order after connecting:
{"op": "list_tools"}, {"op": "call", "name": ..., "arguments": {...}},
{"op": "read", "uri": ...}, {"op": "list_prompts"},
{"op": "prompt", "name": ..., "arguments": {...}}. Each gets an outcome
(result or error); a failed operation does not stop the plan.

The summary names every HTTP exchange the client made (status, challenge, the
MCP request headers it sent) and, for OAuth, the claims of each access token
it obtained and the parameters of each authorization request. Tokens, codes,
secrets and Authorization values are never printed.
"""

import argparse
import asyncio
import base64
import json
import os
import re
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2

from mcp import Client, Implementation, MCPError
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import ElicitResult

TOKEN_ENV = "MCP_TEST_TOKEN"
MAX_AUTHORIZATION_STEPS = 20
FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


def jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT access token (not verified: the gate does that), or {} for an opaque one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return {key: claims.get(key) for key in ("iss", "aud", "sub", "client_id", "scope")}


class HttpLog:
    """httpx2 event hooks: one entry per HTTP exchange, attributed to the current operation."""

    MCP_HEADERS = ("mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id")

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.operation = "connect"

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        sent = {k: v for k, v in request.headers.items() if k in self.MCP_HEADERS or k.startswith("mcp-param-")}
        self.entries.append(
            {
                "operation": self.operation,
                "method": request.method,
                "url": str(request.url.copy_with(query=None)),
                "status": response.status_code,
                "www_authenticate": response.headers.get("www-authenticate"),
                "authorization_sent": "authorization" in request.headers,
                "headers": sent,
            }
        )


class MemoryStorage:
    """The SDK's TokenStorage, in memory; records the claims of every token set it is given."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None
        self.token_claims: list[dict[str, Any]] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.token_claims.append({**jwt_claims(tokens.access_token), "refresh_token": tokens.refresh_token is not None})

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HttpUser:
    """A user at the authorization server over plain HTTP, cookies kept across authorizations (one sign-in)."""

    def __init__(self, redirect_uri: str, login: str) -> None:
        self.redirect_uri = redirect_uri
        self.login = login
        self.browser = httpx2.AsyncClient(follow_redirects=False, timeout=10, trust_env=False)
        self.authorizations: list[dict[str, Any]] = []
        self.result: AuthorizationCodeResult | None = None

    async def redirect_handler(self, authorization_url: str) -> None:
        params = {k: v[0] for k, v in parse_qs(urlparse(authorization_url).query).items()}
        pages = await self.authorize_over_http(authorization_url)
        self.authorizations.append(
            {
                "scope": params.get("scope"),
                "resource": params.get("resource"),
                "code_challenge_method": params.get("code_challenge_method"),
                "code_challenge_length": len(params.get("code_challenge", "")),
                "state_present": "state" in params,
                "pages": pages,
            }
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.result is not None, "the authorization server never redirected back"
        result, self.result = self.result, None
        return result

    async def authorize_over_http(self, url: str) -> list[str]:
        """Follows redirects, fills in the login and consent forms, stops at the redirect URI."""
        method, data, pages = "GET", None, []
        for _ in range(MAX_AUTHORIZATION_STEPS):
            if url.startswith(self.redirect_uri):
                query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
                if "code" not in query:
                    raise RuntimeError(f"authorization failed: {query.get('error')} {query.get('error_description')}")
                self.result = AuthorizationCodeResult(code=query["code"], state=query.get("state"), iss=query.get("iss"))
                return pages
            response = await self.browser.request(method, url, data=data)
            method, data = "GET", None
            if response.is_redirect:
                url = urljoin(url, response.headers["location"])
                continue
            if response.status_code != 200:
                raise RuntimeError(f"authorization server page {urlparse(url).path}: {response.status_code}")
            actions = FORM_ACTION.findall(response.text)
            login = next((a for a in actions if a.endswith("/login")), None)
            confirm = next((a for a in actions if a.endswith("/confirm")), None)
            if login:
                pages.append("login")
                url, data = urljoin(url, login), {"login": self.login}
            elif confirm:
                pages.append("consent")
                url, data = urljoin(url, confirm), {}
            else:
                raise RuntimeError(f"unexpected page at {urlparse(url).path}")
            method = "POST"
        raise RuntimeError(f"no redirect to {self.redirect_uri} after {MAX_AUTHORIZATION_STEPS} steps")


def describe_error(error: BaseException) -> dict[str, Any]:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, MCPError):
        return {"type": "MCPError", "code": error.code, "message": error.message}
    return {"type": type(error).__name__, "message": str(error)[:500]}


def texts(content: list[Any]) -> list[str]:
    return [getattr(block, "text", None) or getattr(getattr(block, "resource", None), "text", None) for block in content]


async def run_operation(client: Client, step: dict[str, Any]) -> dict[str, Any]:
    op = step["op"]
    if op == "list_tools":
        result = await client.list_tools()
        return {"tools": [tool.name for tool in result.tools], "cache_scope": result.cache_scope, "ttl_ms": result.ttl_ms}
    if op == "call":
        result = await client.call_tool(step["name"], step.get("arguments", {}))
        return {"is_error": result.is_error, "texts": texts(result.content)}
    if op == "read":
        result = await client.read_resource(step["uri"])
        return {"texts": [getattr(c, "text", None) for c in result.contents]}
    if op == "list_prompts":
        result = await client.list_prompts()
        return {"prompts": [prompt.name for prompt in result.prompts]}
    if op == "prompt":
        result = await client.get_prompt(step["name"], step.get("arguments", {}))
        return {"texts": [getattr(m.content, "text", None) for m in result.messages]}
    raise ValueError(f"unknown operation {op!r}")


async def confirm_everything(context: Any, params: Any) -> ElicitResult:
    """The user says yes to every question (the confirm_echo tool's multi-round trip)."""
    return ElicitResult(action="accept", content={"confirm": True})


async def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the MCP endpoint (the gate's resource)")
    parser.add_argument("--auth", choices=["static", "oauth"], default="static")
    parser.add_argument("--mode", default="auto", help="Client mode: auto (server/discover first), legacy, or a version")
    parser.add_argument("--plan", default="[]", help="JSON array of operations")
    parser.add_argument("--login", default="python-user", help="user name at the authorization server (oauth)")
    parser.add_argument("--redirect-uri", default="http://127.0.0.1:1/callback")
    args = parser.parse_args()

    log = HttpLog()
    summary: dict[str, Any] = {"operations": [], "http": log.entries}
    auth: httpx2.Auth | None = None
    headers: dict[str, str] = {}
    user = storage = None
    if args.auth == "static":
        if token := os.environ.get(TOKEN_ENV):
            headers["authorization"] = f"Bearer {token}"
    else:
        user = HttpUser(args.redirect_uri, args.login)
        storage = MemoryStorage()
        auth = OAuthClientProvider(
            server_url=args.url,
            client_metadata=OAuthClientMetadata(
                client_name="portcullis-python-sdk-test",
                redirect_uris=[args.redirect_uri],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=storage,
            redirect_handler=user.redirect_handler,
            callback_handler=user.callback_handler,
        )

    http_client = httpx2.AsyncClient(
        headers=headers,
        auth=auth,
        timeout=httpx2.Timeout(15),
        trust_env=False,  # loopback only: never through a proxy from the environment
        event_hooks={"response": [log.on_response]},
    )
    try:
        async with http_client:
            client = Client(
                streamable_http_client(args.url, http_client=http_client),
                mode=args.mode,
                client_info=Implementation(name="portcullis-python-sdk-test", version="0"),
                elicitation_callback=confirm_everything,
                read_timeout_seconds=15,
            )
            async with client:
                summary["protocol_version"] = client.protocol_version
                for index, step in enumerate(json.loads(args.plan)):
                    log.operation = index
                    outcome: dict[str, Any] = {"op": step["op"], "name": step.get("name") or step.get("uri")}
                    try:
                        outcome["result"] = await run_operation(client, step)
                    except Exception as error:  # noqa: BLE001 - reported, the plan goes on
                        outcome["error"] = describe_error(error)
                    summary["operations"].append(outcome)
    except BaseException as error:  # noqa: BLE001 - the connect (or teardown) failing is a result too
        if isinstance(error, KeyboardInterrupt):
            raise
        summary["error"] = describe_error(error)
    finally:
        if user is not None:
            await user.browser.aclose()
            summary["authorizations"] = user.authorizations
        if storage is not None:
            summary["tokens"] = storage.token_claims
            summary["client_id"] = storage.client_info.client_id if storage.client_info else None
    return summary


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())), flush=True)
