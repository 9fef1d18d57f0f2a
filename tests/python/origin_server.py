"""An MCP origin server built with the official Python SDK (mcp 2.3.0), for
tests/python-sdk.test.mjs: the server a new user would put behind the gate.

MCPServer over Streamable HTTP, stateless, so 2026-07-28 clients get the
revision's session-less per-request path (server/discover, `_meta` envelope,
Mcp-Method / Mcp-Name / Mcp-Param-* validated by the SDK itself). No auth of
its own: the gate verifies tokens and sends the identity as X-Auth-* headers,
which `whoami` reports back so a test can see who the gate said was calling.

Every request to /mcp is recorded (method, path, headers, body) and served
as JSON at GET /_test/requests, straight from the origin (not through the
gate), so a test can tell what the gate let through. Authorization and
Cookie values are recorded as "[redacted]": their presence is the finding,
and a token must never end up in test output.

    python origin_server.py --port 0     # prints {"event": "ready", "url": ".../mcp"}
"""

import argparse
import asyncio
import json
import sys
from typing import Annotated, Any

import uvicorn
from pydantic import BaseModel, Field

from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve

REDACTED_HEADERS = {"authorization", "cookie", "proxy-authorization"}

# The tool list says it may be shared across users, as a server unaware of
# any per-user filtering in front of it would; the gate, which filters it per
# token, must make it private.
mcp = MCPServer(
    "portcullis-python-origin",
    version="0.1.0",
    log_level="WARNING",
    cache_hints={"tools/list": CacheHint(ttl_ms=60_000, scope="public")},
)
voided: list[str] = []


def header(ctx: Context, name: str) -> str | None:
    return (ctx.headers or {}).get(name)


@mcp.tool(description="Returns the text it was given (read).")
def echo(text: str) -> str:
    return text


# A name outside ASCII: 2026-07-28 clients send it as Mcp-Name in the
# revision's Base64 form (=?base64?...?=), which the gate must decode.
@mcp.tool(name="café", description="Orders a coffee (read); its name is not ASCII.")
def cafe(order: str, ctx: Context) -> str:
    return json.dumps({"served": f"un {order}", "mcp_name": header(ctx, "mcp-name")})


# `region` is mirrored by 2026-07-28 clients into the Mcp-Param-Region header,
# which the SDK checks against the body; the tool reports what arrived.
@mcp.tool(description="Weather for a city; the region travels as the Mcp-Param-Region header too (read).")
def forecast(
    city: str,
    region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})],
    ctx: Context,
) -> str:
    return json.dumps({"city": city, "region": region, "mcp_param_region": header(ctx, "mcp-param-region")})


@mcp.tool(description="The identity the gate forwarded, and whether a token reached the origin.")
def whoami(ctx: Context) -> str:
    return json.dumps(
        {
            "subject": header(ctx, "x-auth-subject"),
            "client_id": header(ctx, "x-auth-client-id"),
            "scopes": header(ctx, "x-auth-scopes"),
            "authorization_received": header(ctx, "authorization") is not None,
            "protocol_version": ctx.protocol_version,
        }
    )


@mcp.tool(description="Voids an invoice (write: the gate's policy asks for invoices:write).")
def void_invoice(invoice_id: str) -> str:
    voided.append(invoice_id)
    return f"voided {invoice_id}"


class Confirmation(BaseModel):
    confirm: bool


def ask_confirmation(text: str) -> Elicit[Confirmation]:
    return Elicit(f"Send {text!r}?", Confirmation)


# A multi-round-trip call: on 2026-07-28 the first answer is an
# InputRequiredResult carrying requestState, and the client retries with the
# user's answer and that state, through the gate both times.
@mcp.tool(description="Echoes after the user confirms (a multi-round-trip call).")
def confirm_echo(text: str, confirmation: Annotated[Confirmation, Resolve(ask_confirmation)]) -> str:
    return f"{'confirmed' if confirmation.confirm else 'declined'}: {text}"


@mcp.resource("notes://welcome", name="welcome", mime_type="text/plain")
def welcome() -> str:
    return "Welcome behind the gate."


# A prompt name outside ASCII too (Mcp-Name on prompts/get).
@mcp.prompt(name="résumé", description="Asks for a summary of a topic.")
def resume(topic: str) -> str:
    return f"Summarize {topic}."


class Recorder:
    """ASGI wrapper recording every request, and serving the record at /_test/requests."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/_test/requests":
            body = json.dumps({"requests": self.requests, "voided": voided}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = "[redacted]" if name in REDACTED_HEADERS else raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        entry: dict[str, Any] = {"method": scope["method"], "path": scope["path"], "headers": headers, "body": ""}
        self.requests.append(entry)

        async def recording_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                entry["body"] += message.get("body", b"").decode("utf-8", "replace")
            return message

        await self.app(scope, recording_receive, send)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args()
    app = Recorder(mcp.streamable_http_app(stateless_http=True))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped it
            sys.exit("the server stopped before it was ready")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    print(json.dumps({"event": "ready", "url": f"http://127.0.0.1:{port}/mcp"}), flush=True)
    await serving


if __name__ == "__main__":
    asyncio.run(main())
