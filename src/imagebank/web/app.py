"""The HTTP application factory served by ``imagebank serve``.

Until users and roles exist (security issue), the server runs in *local-only mode*: it binds only to
loopback addresses, and the CLI refuses anything else.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from imagebank import __version__
from imagebank.archive import Archive
from imagebank.config import Settings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings, archive: Archive) -> FastAPI:
    app = FastAPI(title="Imagebank", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.archive = archive

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        archive.index.stats()  # touches the database: a dead index is not healthy
        return {"status": "ok"}

    @app.get("/api/stats")
    def stats() -> dict[str, Any]:
        """Counts of patients, studies, series, instances and bytes, by modality."""
        return archive.index.stats()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request) -> Any:
        return TEMPLATES.TemplateResponse(request, "home.html", {
            "stats": archive.index.stats(),
            "studies": archive.index.recent_studies(50),
            "version": __version__,
        })

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Never a traceback to the client; the log has it (without request bodies, so without PHI).
        import logging

        logging.getLogger(__name__).exception("unhandled error")
        return JSONResponse({"error": "internal error", "type": type(exc).__name__}, status_code=500)

    return app
