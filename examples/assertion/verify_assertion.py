# Verifier of the Portcullis origin assertion, for origin authors to copy
# into a Python MCP server (PyJWT + cryptography; same checks and reason
# codes as verify.mjs beside it).
"""Verify the ``Portcullis-Assertion`` header the gate adds to each request.

What it proves: the gate signs, with a key only it holds, who the caller is
(sub, client_id, scope), which access token it accepted (token_iss +
token_jti / token_hash) and the very request it let through (HTTP method,
URL, SHA-256 of the body, the MCP method and tool, prompt or resource). A
request that passes ``verify`` came through the gate, to this origin (aud),
unchanged, and for the first time; ``X-Auth-*`` headers alone prove none of
that, as anything that can reach the origin can write them.

Use (e.g. in a Starlette middleware, before the MCP app reads the body)::

    verifier = AssertionVerifier(
        "https://gate.example/.well-known/portcullis/jwks.json",
        issuer="https://gate.example", audience="https://origin.example/mcp")
    body = await request.body()                  # the exact bytes received
    raw_path, query = request.scope["raw_path"].decode(), request.scope["query_string"].decode()
    url = "https://origin.example" + raw_path + ("?" + query if query else "")
    try:
        claims = verifier.verify(request.method, url, request.headers, body)
    except InvalidAssertion as refused:          # answer 401 with refused.reason
        ...

``verify`` blocks on a JWKS fetch the first time and whenever an unknown
``kid`` shows up: call it from a thread (``anyio.to_thread.run_sync``) in an
async server. ``url`` must be the URL as the gate sent it: scheme and host
are compared case-insensitively and a default port is ignored, path and
query exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from typing import Any, Mapping

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWKClientConnectionError,
    PyJWKClientError,
    PyJWTError,
)

ASSERTION_HEADER = "portcullis-assertion"
ASSERTION_TYP = "portcullis+jwt"
ALGORITHMS = ["ES256", "EdDSA"]
REQUIRED_CLAIMS = ["exp", "iat", "jti", "htm", "htu", "body_sha256"]
# The params member naming each method's target.
TARGET_MEMBER = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}
_ABSENT = object()


class InvalidAssertion(Exception):
    """Why an assertion was refused; ``reason`` is a stable code.

    missing, multiple, malformed, wrong_alg, wrong_typ, unknown_key,
    jwks_unavailable, bad_signature, expired, not_yet_valid, wrong_issuer,
    wrong_audience, method_mismatch, url_mismatch, body_mismatch,
    mcp_mismatch, replayed, replay_cache_full. Neither it nor its message
    holds the assertion.
    """

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(message or reason)
        self.reason = reason


class AssertionVerifier:
    """Checks assertions from one gate (issuer) for one origin (audience)."""

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        leeway: float = 5,
        max_age: float = 300,
        replay_cache_size: int = 100_000,
    ):
        if not jwks_url or not issuer or not audience:
            raise ValueError("jwks_url, issuer and audience are required")
        # Caches the set (5 minutes) and refetches it, at most every 30 s,
        # for an unknown kid: how a rotated-in key is picked up.
        self._jwks = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=5)
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_age = max_age
        self._replays = _ReplayCache(replay_cache_size)

    def verify(
        self,
        method: str,
        url: str,
        headers: Mapping[str, Any],
        body: bytes | bytearray | memoryview | str | None = b"",
    ) -> dict[str, Any]:
        """The verified claims, or raises InvalidAssertion."""
        token = _single_header(headers)
        # The protected header is checked before any key is fetched, so the
        # reason does not depend on the key set, and a token of another kind
        # (an access token, `at+jwt`) never costs a JWKS request.
        if token.count(".") != 2:
            raise InvalidAssertion("malformed", "not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except PyJWTError as error:
            raise InvalidAssertion("malformed", "not a compact JWS") from error
        if not isinstance(header.get("alg"), str) or header["alg"] not in ALGORITHMS:
            raise InvalidAssertion("wrong_alg", "alg must be ES256 or EdDSA")
        if not _typ_ok(header):
            raise InvalidAssertion("wrong_typ", f"typ must be {ASSERTION_TYP}")

        key = self._key_for(header.get("kid"))
        try:
            decoded = jwt.api_jwt.decode_complete(
                token,
                key=key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except PyJWTError as error:
            raise _from_pyjwt(error) from error
        # Again on the verified header: the check above was on unsigned data.
        if not _typ_ok(decoded["header"]):
            raise InvalidAssertion("wrong_typ", f"typ must be {ASSERTION_TYP}")
        claims = decoded["payload"]
        now = time.time()
        # PyJWT has no maximum age: refuse what was issued too long ago, as
        # jose's maxTokenAge does in verify.mjs.
        if now - float(claims["iat"]) > self.max_age + self.leeway:
            raise InvalidAssertion("expired", "issued too long ago")
        for claim in ("jti", "htm", "htu", "body_sha256"):
            if not isinstance(claims.get(claim), str) or claims[claim] == "":
                raise InvalidAssertion("malformed", f"the {claim} claim must be a non-empty string")

        data = _to_bytes(body)
        if claims["htm"] != method:
            raise InvalidAssertion("method_mismatch", "htm is not the request method")
        expected_url = _normalize_url(url)
        if expected_url is None or _normalize_url(claims["htu"]) != expected_url:
            raise InvalidAssertion("url_mismatch", "htu is not the request URL")
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
        if claims["body_sha256"] != digest:
            raise InvalidAssertion("body_mismatch", "body_sha256 is not the hash of the body")
        if not _same_mcp(claims, _mcp_of(method, data)):
            raise InvalidAssertion("mcp_mismatch", "the MCP claims do not match the body")

        # Last, so a request refused above does not use up its jti: a
        # tampered copy sent first must not lock out the genuine request.
        accepted_until = min(float(claims["exp"]), float(claims["iat"]) + self.max_age) + self.leeway
        self._replays.remember(claims["jti"], accepted_until, now)
        return claims

    def _key_for(self, kid: Any) -> jwt.PyJWK:
        # The set is fetched (or read from the cache) on its own first, so a
        # network or JWKS failure -- the origin's problem, not the caller's --
        # gets its own reason and is not mistaken for an unknown key.
        try:
            self._jwks.get_jwk_set()
        except PyJWTError as error:
            raise InvalidAssertion("jwks_unavailable", "the gate key set could not be fetched") from error
        try:
            return self._jwks.get_signing_key(kid)
        except PyJWKClientConnectionError as error:
            raise InvalidAssertion("jwks_unavailable", "the gate key set could not be fetched") from error
        except PyJWKClientError as error:
            raise InvalidAssertion("unknown_key", "no key of the gate has this kid") from error


def _typ_ok(header: Mapping[str, Any]) -> bool:
    # RFC 7515 §4.1.9: compared case-insensitively, "application/" optional.
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    if typ.startswith("application/"):
        typ = typ[len("application/"):]
    return typ == ASSERTION_TYP


def _from_pyjwt(error: PyJWTError) -> InvalidAssertion:
    if isinstance(error, ExpiredSignatureError):
        return InvalidAssertion("expired", str(error))
    if isinstance(error, ImmatureSignatureError):
        return InvalidAssertion("not_yet_valid", str(error))
    if isinstance(error, InvalidAudienceError):
        return InvalidAssertion("wrong_audience", str(error))
    if isinstance(error, InvalidIssuerError):
        return InvalidAssertion("wrong_issuer", str(error))
    if isinstance(error, MissingRequiredClaimError):
        reason = {"aud": "wrong_audience", "iss": "wrong_issuer"}.get(error.claim, "malformed")
        return InvalidAssertion(reason, str(error))
    if isinstance(error, InvalidSignatureError):
        return InvalidAssertion("bad_signature", str(error))
    if isinstance(error, InvalidAlgorithmError):
        return InvalidAssertion("wrong_alg", str(error))
    # Anything else PyJWT refuses this token for means it is not one.
    return InvalidAssertion("malformed", str(error))


def _single_header(headers: Mapping[str, Any] | None) -> str:
    # items() also yields repeated fields of multi-dicts (Starlette,
    # Werkzeug, aiohttp, http.client); servers that join them use ", ".
    values: list[str] = []
    for name, value in (headers.items() if headers is not None else ()):
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        if str(name).lower() != ASSERTION_HEADER or value is None:
            continue
        for item in value if isinstance(value, (list, tuple)) else (value,):
            values.append(item.decode("latin-1") if isinstance(item, bytes) else str(item))
    if len(values) > 1:
        raise InvalidAssertion("multiple", "more than one Portcullis-Assertion header")
    value = values[0].strip() if values else ""
    if value == "":
        raise InvalidAssertion("missing", "no Portcullis-Assertion header")
    # A compact JWS has no comma: one here means two fields joined.
    if "," in value:
        raise InvalidAssertion("multiple", "more than one Portcullis-Assertion header")
    return value


def _to_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError("body must be bytes or str")


_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")


def _normalize_url(value: Any) -> str | None:
    """Scheme and host case-insensitive, default port ignored, no fragment;
    path and query byte for byte. None for what is not an absolute http(s) URL."""
    match = _URL.match(str(value))
    if not match:
        return None
    scheme = match.group(1).lower()
    if scheme not in ("http", "https"):
        return None
    authority = match.group(2).lower()
    default_port = ":80" if scheme == "http" else ":443"
    if authority.endswith(default_port):
        authority = authority[: -len(default_port)]
    rest = match.group(3)
    if not rest.startswith("/"):
        rest = "/" + rest
    return f"{scheme}://{authority}{rest}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _mcp_of(method: str, data: bytes) -> dict[str, Any]:
    """What the gate names for a body: one call's method and target, or
    several calls; {} for none."""
    if method != "POST" or not data:
        return {}
    try:
        # Strict UTF-8, no BOM, no NaN: what the gate could not parse as
        # JSON, it named nothing in.
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except Exception:
        return {}

    def call(message: Any) -> dict[str, str] | None:
        if not isinstance(message, dict) or not isinstance(message.get("method"), str):
            return None
        found = {"method": message["method"]}
        member = TARGET_MEMBER.get(message["method"])
        params = message.get("params")
        if member and isinstance(params, dict) and isinstance(params.get(member), str):
            found["name"] = params[member]
        return found

    # One call (a single message, or a batch with one message that has a
    # method) is named flat; several are listed.
    calls = [c for c in map(call, body if isinstance(body, list) else [body]) if c is not None]
    if not calls:
        return {}
    if len(calls) == 1:
        return calls[0]
    return {"calls": calls}


def _same_mcp(claims: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    if "calls" in expected:
        if "mcp_method" in claims or "mcp_name" in claims:
            return False
        calls = claims.get("mcp_calls")
        want = expected["calls"]
        return (
            isinstance(calls, list)
            and len(calls) == len(want)
            and all(
                isinstance(c, dict)
                and c.get("method", _ABSENT) == w["method"]
                and c.get("name", _ABSENT) == w.get("name", _ABSENT)
                for c, w in zip(calls, want)
            )
        )
    return (
        "mcp_calls" not in claims
        and claims.get("mcp_method", _ABSENT) == expected.get("method", _ABSENT)
        and claims.get("mcp_name", _ABSENT) == expected.get("name", _ABSENT)
    )


class _ReplayCache:
    """jti -> the time (unix s) until which its assertion could still be
    accepted; after that the jti needs no remembering, as the assertion would
    be refused as expired anyway. Bounded: when full, expired entries are
    pruned first, and if none can go, new assertions are refused
    (replay_cache_full) rather than an unexpired jti forgotten, since
    forgetting would let that assertion be replayed."""

    def __init__(self, max_entries: int):
        self._max = max_entries
        self._seen: dict[str, float] = {}
        # Earliest expiry among the entries: no prune pass before it (a full
        # cache of live entries would otherwise cost a scan per request).
        self._earliest = math.inf
        self._lock = threading.Lock()

    def remember(self, jti: str, until: float, now: float) -> None:
        with self._lock:
            if jti in self._seen:
                raise InvalidAssertion("replayed", "this assertion was already used")
            if len(self._seen) >= self._max and now > self._earliest:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
                self._earliest = min(self._seen.values(), default=math.inf)
            if len(self._seen) >= self._max:
                raise InvalidAssertion("replay_cache_full", "too many live assertions to remember")
            self._seen[jti] = until
            self._earliest = min(self._earliest, until)
