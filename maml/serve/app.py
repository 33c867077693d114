"""create_app(): the FastAPI application of `maml serve`.

    /              the dashboard (static files from maml/serve/static, shipped in the wheel)
    /api/v1/...    the API (maml.serve.routes); OpenAPI at /api/v1/openapi.json, read in the
                   dashboard at /#/api
    /mcp           the MCP tools over streamable HTTP (maml.serve.mcp_tools)

Every request passes `Guard` (bearer token) and `BodyLimit` first. CORS is off: no
Access-Control headers are ever sent, so other origins' pages cannot read any answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from maml import __version__
from maml.errors import DocumentError, GraphError, InvalidInput, MamlError, RefusedError, UsageError
from maml.serve.routes import router
from maml.serve.auth import Credentials
from maml.serve.guard import BodyLimit, Guard
from maml.serve.service import NotFound, Service
from maml.serve.views import error_body

#: MamlError class -> HTTP status; the first match in this order wins
STATUS: list[tuple[type[MamlError], int]] = [
    (NotFound, 404), (UsageError, 400), (DocumentError, 422), (InvalidInput, 422),
    (RefusedError, 403), (GraphError, 500),
]
DEFAULT_MAX_REQUEST_BYTES = 2 * 2**20


def static_dir() -> Path:
    return Path(str(resources.files("maml.serve") / "static"))


def error_response(exc: MamlError) -> JSONResponse:
    status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
    return JSONResponse({"error": error_body(exc)}, status_code=status)


def create_app(service: Service, credentials: Credentials, *,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES, mcp: bool = True) -> Any:
    """The ASGI app: FastAPI wrapped in the token guard and the body limit. The service is
    started and closed with the app's lifespan."""
    service.principal = credentials.principal
    mcp_server = _mcp_server(service) if mcp else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            if mcp_server is None:
                yield
            else:
                async with mcp_server.session_manager.run():
                    yield
        finally:
            service.close()

    # FastAPI's own docs pages load Swagger UI from a CDN: the dashboard's #/api view
    # renders the OpenAPI document from files served here instead
    app = FastAPI(title="maml", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/api/v1/openapi.json")
    _handlers(app)
    app.include_router(router(service))
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(static_dir() / "index.html", headers={"cache-control": "no-store"})

    if mcp_server is not None:   # last: only what no route above matched reaches it
        app.mount("/", mcp_server.streamable_http_app(streamable_http_path="/mcp"))
    return Guard(BodyLimit(app, max_request_bytes), credentials)


def _mcp_server(service: Service) -> Any:
    from maml.serve.mcp_tools import build_server

    return build_server(service)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(MamlError)
    async def maml_error(_: Request, exc: MamlError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": {"code": UsageError.code, "message": problems,
                                       "details": jsonable(exc.errors())}}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"code": MamlError.code, "message": f"internal error: "
                                       f"{type(exc).__name__}: {exc}"}}, status_code=500)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = "MAML-E002" if exc.status_code < 500 else "MAML-E000"
        return JSONResponse({"error": {"code": code, "message": str(exc.detail)}},
                            status_code=exc.status_code)


def jsonable(value: Any) -> Any:
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value, custom_encoder={Exception: str})
