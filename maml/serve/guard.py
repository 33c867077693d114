"""ASGI middleware in front of everything the server answers: the token, then the size limit.

`Guard` refuses (401) any request without the service's bearer token, before routing, for
the API, the dashboard's files and /mcp alike. A browser that opens `/?token=T` gets T as an
HttpOnly, SameSite=Strict cookie and is sent to `/` without it in the address bar; a browser
with no token gets a page saying how to find it.

`BodyLimit` refuses (413) a request whose declared Content-Length is over the limit before
reading a byte, and answers 413 to a chunked body the moment it passes the limit (the app then sees
the client gone): a document over
the limit is never parsed.
"""

from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from maml.serve.auth import Credentials

COOKIE = "maml_token"

Scope = dict[str, Any]


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


async def _respond(send: Any, status: int, body: bytes, content_type: bytes,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


LOGIN_PAGE = b"""<!doctype html><meta charset="utf-8"><title>maml: token needed</title>
<body style="font:15px system-ui;margin:3em;max-width:40em">
<h1>maml serve</h1><p>This server needs its token. Open the address <code>maml serve</code>
printed when it started, or paste the token printed by <code>maml serve --show-token</code>:</p>
<form method="get" action="/"><input name="token" type="password" size="48" autofocus>
<button>Open the dashboard</button></form></body>"""


class Guard:
    def __init__(self, app: Any, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["path"] == "/" and "token" in query:
            return await self._login(query["token"][0], send)
        if self.credentials.accepts(_presented(headers)):
            scope.setdefault("state", {})["principal"] = self.credentials.principal
            return await self.app(scope, receive, send)
        if scope["path"] == "/" and "text/html" in headers.get("accept", ""):
            return await _respond(send, 401, LOGIN_PAGE, b"text/html; charset=utf-8")
        await _respond(send, 401, error_body("MAML-E300", "a bearer token is required: "
                       "`Authorization: Bearer <token>` (see `maml serve --show-token`)"),
                       b"application/json", [(b"www-authenticate", b'Bearer realm="maml"')])

    async def _login(self, token: str, send: Any) -> None:
        if not self.credentials.accepts(token):
            return await _respond(send, 401, LOGIN_PAGE, b"text/html; charset=utf-8")
        cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1")
        await _respond(send, 303, b"", b"text/plain",
                       [(b"location", b"/"), (b"set-cookie", cookie)])


def _presented(headers: dict[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if "cookie" in headers:
        morsel = SimpleCookie(headers["cookie"]).get(COOKIE)
        return morsel.value if morsel else None
    return None


class BodyLimit:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope["headers"]:
            if key.lower() == b"content-length" and value.isdigit() \
                    and int(value) > self.max_bytes:
                return await self._too_large(send)
        seen = 0
        refused = False

        async def limited_receive() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._too_large(send)
            # the app sees a client that went away, and stops reading
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Any) -> None:
            if not refused:     # the app's own answer to a cut-off request is dropped
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _too_large(self, send: Any) -> None:
        await _respond(send, 413, error_body("MAML-E002", f"request body over the "
                       f"{self.max_bytes}-byte limit (see `maml serve --max-request-bytes`)"),
                       b"application/json")
