"""HTTP routes of the OHIF viewer (``/viewer``): static files, generated ``app-config.js``, and the
single-page-app fallback to ``index.html``. The files are public (they hold no data); every DICOMweb
request the viewer makes is authorised and audited like any other (the session cookie travels along)."""

from __future__ import annotations

import logging
import mimetypes

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from imagebank.config import Settings
from imagebank.security.roles import Permission
from imagebank.viewer import MOUNT, app_config, is_installed, viewer_dir
from imagebank.web.auth import Requirement

log = logging.getLogger(__name__)
mimetypes.add_type("application/wasm", ".wasm")

#: The viewer runs WebAssembly codecs in web workers: it needs more than the rest of the site.
VIEWER_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' 'wasm-unsafe-eval' blob:; "
              "worker-src 'self' blob:; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
              "font-src 'self' data:; connect-src 'self' blob: data:; frame-ancestors 'none'")

_NOT_INSTALLED = """<!doctype html><html><head><title>Viewer not installed</title></head><body>
<h1>The OHIF viewer is not installed</h1>
<p>Install it once with <code>imagebank viewer install</code> (it fetches <code>@ohif/app</code> from the npm
registry), then reload this page. The archive, DICOMweb and the rest of Imagebank work without it.</p>
</body></html>"""


def install_viewer_routes(app: FastAPI, settings: Settings) -> None:
    directory = viewer_dir(settings.dicomweb.viewer_dir).resolve()
    public = Depends(Requirement(Permission.PUBLIC))
    config_js = app_config()
    if not is_installed(directory):
        log.warning("the OHIF viewer is not installed in %s; /viewer explains how (imagebank viewer install)",
                    directory)

    @app.get(MOUNT, include_in_schema=False, dependencies=[public])
    def viewer_root() -> Response:
        return RedirectResponse(MOUNT + "/", status_code=307)

    @app.get(MOUNT + "/{path:path}", include_in_schema=False, dependencies=[public])
    def viewer_file(request: Request, path: str) -> Response:
        if not is_installed(directory):
            return HTMLResponse(_NOT_INSTALLED, status_code=503)
        if path == "app-config.js":
            return Response(config_js, media_type="application/javascript", headers={"Cache-Control": "no-cache"})
        target = (directory / path).resolve()
        if path and target.is_relative_to(directory) and target.is_file():
            immutable = ".bundle." in target.name or target.suffix in (".wasm", ".woff2")
            return FileResponse(target, headers={
                "Cache-Control": "public, max-age=31536000, immutable" if immutable else "no-cache"})
        # A client-side route of the viewer (/viewer/viewer?StudyInstanceUIDs=...): the app decides.
        return FileResponse(directory / "index.html", headers={"Cache-Control": "no-cache"})


def is_viewer_path(path: str) -> bool:
    return path == MOUNT or path.startswith(MOUNT + "/")
