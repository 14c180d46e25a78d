"""OpenID Connect single sign-on (authorization code flow with PKCE) through Authlib.

Authlib validates the ID token (signature against the provider's JWKS, issuer, audience, expiry,
nonce); this module maps the verified identity to an Imagebank account and opens an ordinary session,
so everything after sign-in is the same as for a password user.
"""

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from imagebank.config import Settings
from imagebank.security.accounts import AccountError, Accounts
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.roles import Permission
from imagebank.web.auth import Requirement, client_address
from imagebank.web.blocking import run_blocking


def _state_secret(path: Path) -> str:
    """Signs the short-lived cookie that carries OAuth state and nonce between redirect and callback."""
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    path.write_text(value)
    path.chmod(0o600)
    return value


def install_oidc(app: FastAPI, settings: Settings, accounts: Accounts, audit: AuditTrail,
                 open_session: Any) -> None:
    """Add ``/login/oidc`` and its callback when ``security.oidc_issuer`` is set."""
    from authlib.integrations.starlette_client import OAuth, OAuthError
    from starlette.middleware.sessions import SessionMiddleware

    sec = settings.security
    issuer = sec.oidc_issuer.rstrip("/")
    oauth = OAuth()
    oauth.register(
        "idp", client_id=sec.oidc_client_id, client_secret=sec.oidc_client_secret,
        server_metadata_url=f"{issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": sec.oidc_scopes, "code_challenge_method": "S256"})
    app.add_middleware(SessionMiddleware, secret_key=_state_secret(settings.data_dir / "secrets" / "oidc-state.key"),
                       session_cookie="imagebank_oidc", max_age=600, same_site="lax",
                       https_only=bool(sec.tls_certfile) or sec.behind_tls_proxy)
    router = APIRouter()
    public = Depends(Requirement(Permission.PUBLIC))

    @router.get("/login/oidc", include_in_schema=False, dependencies=[public])
    async def oidc_start(request: Request) -> Response:
        response: Response = await oauth.idp.authorize_redirect(request, str(request.url_for("oidc_callback")))
        return response

    @router.get("/login/oidc/callback", name="oidc_callback", include_in_schema=False, dependencies=[public])
    async def oidc_callback(request: Request) -> Response:
        # The account lookup, its audit record and the new session are database work: on the blocking pool,
        # not on the event loop (where they would hold up every other request of this process).
        address = client_address(request)
        try:
            token = await oauth.idp.authorize_access_token(request)
            claims: dict[str, Any] = dict(token.get("userinfo") or {})
            if not claims.get("sub"):
                raise OAuthError("the ID token has no subject")
            user = await run_blocking(
                accounts.user_for_oidc, issuer, str(claims["sub"]),
                preferred_username=claims.get("preferred_username") or claims.get("email"),
                display_name=claims.get("name"), default_roles=sec.oidc_default_roles)
        except (OAuthError, AccountError) as exc:
            await run_blocking(audit.record, AuditEvent("110114", "E", 4, network_address=address,
                                                        detail={"method": "oidc", "reason": str(exc)[:200]}))
            message = urlencode({"error": f"single sign-on failed: {str(exc)[:160]}"})
            return RedirectResponse(f"/login?{message}", status_code=303)
        await run_blocking(audit.record, AuditEvent(
            "110114", "E", 0, user_name=user.username, user_roles=",".join(sorted(user.roles)),
            network_address=address, detail={"method": "oidc", "issuer": issuer}))
        session = await run_blocking(accounts.create_session, user, address)
        return open_session(RedirectResponse("/", status_code=303), session)

    app.include_router(router)

