"""The HTTP application factory served by ``imagebank serve``.

Every route carries an authorization :class:`~imagebank.web.auth.Requirement`; building the app fails
if one does not. Errors are JSON (``{"error": ..., "detail": ...}``) for API clients, never tracebacks.
"""


import ipaddress
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from imagebank import __version__
from imagebank.archive import Archive
from imagebank.config import Settings
from imagebank.context import open_ehr
from imagebank.ehr.routes import install_ehr, outcome_for_http_error
from imagebank.security.accounts import AccountError, Accounts, LockedOut
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.policy import Principal
from imagebank.security.roles import Permission
from imagebank.viewer.routes import VIEWER_CSP, install_viewer_routes, is_viewer_path
from imagebank.web.auth import (
    SECURITY_HEADERS,
    SESSION_COOKIE,
    RateLimiter,
    Requirement,
    client_address,
    enforce_route_policies,
)

log = logging.getLogger(__name__)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Credentials(BaseModel):
    username: str
    password: str


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` (the viewer's own CSP under /viewer, HSTS behind TLS, no-store for the
    JSON API) to every response. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` cost a quarter of a
    millisecond per request, a tenth of a QIDO-RS query."""

    def __init__(self, app: Any, *, tls: bool) -> None:
        self.app, self.tls = app, tls
        self._common = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]
        self._viewer = [(k, v) for k, v in self._common if k != b"content-security-policy"] + [
            (b"content-security-policy", VIEWER_CSP.encode("latin-1"))]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        extra = list(self._viewer if is_viewer_path(path) else self._common)
        if self.tls:
            extra.append((b"strict-transport-security", b"max-age=31536000"))
        if path.startswith("/api/"):
            extra.append((b"cache-control", b"no-store"))
        names = {k for k, _ in extra}

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, archive: Archive, accounts: Accounts, audit: AuditTrail) -> FastAPI:
    # FastAPI's built-in OpenTelemetry hooks are off: nothing here exports traces, and its exception logs would
    # carry messages that may quote request values to whatever exporter a deployment configures globally.
    app = FastAPI(title="Imagebank", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json",
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False})
    app.state.settings, app.state.archive = settings, archive
    app.state.accounts, app.state.audit = accounts, audit
    limiter = RateLimiter(settings.security.login_rate_per_minute)
    tls = bool(settings.security.tls_certfile) or settings.security.behind_tls_proxy

    public = Depends(Requirement(Permission.PUBLIC))
    signed_in = Depends(Requirement(Permission.AUTHENTICATED))
    archive_read = Depends(Requirement(Permission.ARCHIVE_READ))

    # ----------------------------------------------------------------- public

    @app.get("/healthz", include_in_schema=False, dependencies=[public])
    def healthz() -> dict[str, str]:
        archive.index.stats()  # touches the database: a dead index is not healthy
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False, dependencies=[public])
    def login_page(request: Request, error: str | None = None) -> Any:
        return TEMPLATES.TemplateResponse(request, "login.html", {
            "error": error, "version": __version__, "sso": bool(settings.security.oidc_issuer)})

    def _sign_in(request: Request, username: str, password: str) -> tuple[str, Principal]:
        address = client_address(request) or "unknown"
        limiter.check(address)
        try:
            user = accounts.authenticate_password(username, password)
        except LockedOut as exc:
            audit.record(AuditEvent("110114", "E", 8, user_name=username, network_address=address,
                                    detail={"reason": "locked out"}))
            raise HTTPException(429, str(exc)) from None
        except AccountError:
            audit.record(AuditEvent("110114", "E", 4, user_name=username, network_address=address,
                                    detail={"reason": "wrong credentials"}))
            raise HTTPException(401, "unknown user or wrong password") from None
        audit.record(AuditEvent("110114", "E", 0, user_name=user.username, user_roles=",".join(sorted(user.roles)),
                                network_address=address, detail={"action": "login"}))
        return accounts.create_session(user, address), user.principal()

    def _with_cookie(response: Response, token: str) -> Response:
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=tls,
                            max_age=int(settings.security.session_hours * 3600))
        return response

    @app.post("/login", include_in_schema=False, dependencies=[public])
    def login_form(request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()]) -> Response:
        try:
            token, _ = _sign_in(request, username, password)
        except HTTPException as exc:
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": exc.detail, "version": __version__},
                                              status_code=exc.status_code)
        return _with_cookie(RedirectResponse("/", status_code=303), token)

    @app.post("/api/login", dependencies=[public])
    def api_login(request: Request, credentials: Credentials) -> Response:
        """Sign in with a password; sets the session cookie and returns the user's roles."""
        token, principal = _sign_in(request, credentials.username, credentials.password)
        return _with_cookie(JSONResponse({"user": principal.name, "roles": sorted(principal.roles)}), token)

    # ---------------------------------------------------------- signed in

    @app.post("/api/logout")
    def api_logout(request: Request, principal: Annotated[Principal, signed_in]) -> Response:
        if cookie := request.cookies.get(SESSION_COOKIE):
            accounts.revoke_session(cookie)
        audit.record(AuditEvent("110114", "E", 0, user_name=principal.name, network_address=client_address(request),
                                detail={"action": "logout"}))
        response = JSONResponse({"signed_out": True})
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout_form(request: Request, principal: Annotated[Principal, signed_in]) -> Response:
        api_logout(request, principal)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/api/me")
    def me(principal: Annotated[Principal, signed_in]) -> dict[str, Any]:
        """Who the caller is and what they may do."""
        return {"user": principal.name, "kind": principal.kind, "roles": sorted(principal.roles),
                "permissions": sorted(principal.permissions())}

    # ------------------------------------------------------------ archive

    @app.get("/api/stats", dependencies=[archive_read])
    def stats() -> dict[str, Any]:
        """Counts of patients, studies, series, instances and bytes, by modality."""
        return archive.index.stats()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request, principal: Annotated[Principal, archive_read]) -> Any:
        return TEMPLATES.TemplateResponse(request, "home.html", {
            "stats": archive.index.stats(), "studies": archive.index.recent_studies(50),
            "version": __version__, "user": principal.name})

    # ------------------------------------------------------------- errors

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 401 and request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            return RedirectResponse("/login", status_code=303)  # a person in a browser: go sign in
        if request.url.path.startswith("/fhir"):
            response = outcome_for_http_error(exc.status_code, exc.detail)
            response.headers.update(exc.headers or {})
            return response
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "detail": problems}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")  # the log has the traceback; the client never does
        return JSONResponse({"error": "internal error", "type": type(exc).__name__}, status_code=500)

    app.add_middleware(SecurityHeaders, tls=tls)

    if settings.security.oidc_issuer:
        from imagebank.web.oidc import install_oidc

        install_oidc(app, settings, accounts, audit, _with_cookie)

    if settings.security.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.security.cors_origins, allow_credentials=True,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Accept"],
                           expose_headers=["X-Total-Count", "Warning", "Content-Type", "Content-Location"])

    from imagebank.dicomweb.routes import install_dicomweb

    install_dicomweb(app, settings, archive)
    install_ehr(app, settings, open_ehr(settings, archive.index.engine), audit)
    install_viewer_routes(app, settings)
    enforce_route_policies(app.routes)
    return app
