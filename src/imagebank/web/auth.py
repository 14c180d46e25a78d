"""HTTP side of security: who is calling, may they, and the audit record of what they touched.

Every route declares exactly one :class:`Requirement` among its dependencies; :func:`enforce_route_policies`
refuses to build an app containing a route without one (default deny also at build time), and the
authorization-matrix test reads the same declarations.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict, deque
from typing import Any

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.routing import Mount

from imagebank.security.accounts import Accounts
from imagebank.security.audit import AuditEvent, AuditTrail
from imagebank.security.policy import ANONYMOUS, Principal, decide
from imagebank.security.roles import IDENTIFIED_DATA, Permission
from imagebank.web.blocking import RUNS_DEFERRED_CHECK, defer_to_route_hop, run_blocking

SESSION_COOKIE = "imagebank_session"


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def resolve_principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer <api token>`` or the session cookie."""
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    accounts: Accounts = request.app.state.accounts
    address = client_address(request)
    principal: Principal | None = None
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = accounts.principal_for_token(header[7:].strip(), address)
        if principal is None:
            raise HTTPException(401, "the API token is unknown, expired or revoked",
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = accounts.principal_for_session(cookie, address)
    request.state.principal = principal or ANONYMOUS
    return request.state.principal  # type: ignore[no-any-return]


class Requirement:
    """FastAPI dependency: ``Depends(Requirement(Permission.ARCHIVE_READ, audit=("110112", "E")))``.

    Access to identified data is audited (success and refusal) with the given DCM event code.
    """

    def __init__(self, permission: Permission, *, audit: tuple[str, str] | None = None) -> None:
        self.permission = permission
        self.audit = audit or (("110110", "R") if permission in IDENTIFIED_DATA else None)

    async def __call__(self, request: Request) -> Principal | None:
        """The caller, checked; ``None`` when the check is left to the route's own pool hop (a route under
        ``on_blocking_pool``, which :func:`enforce_route_policies` lets declare its Requirement only in
        ``dependencies=[...]``, where the value goes unused)."""
        if defer_to_route_hop(request, functools.partial(self.check, request)):
            return None
        # The token lookup and the audit record touch the database: off the event loop, on the plain pool.
        return await run_blocking(self.check, request)

    def check(self, request: Request) -> Principal:
        """Who calls, may they, and the audit record of it; raises 401/403."""
        principal = resolve_principal(request)
        decision = decide(principal, self.permission)
        if self.audit is not None and (decision.allowed or principal.authenticated):
            trail: AuditTrail = request.app.state.audit
            trail.record(AuditEvent(
                event_id=self.audit[0], event_action=self.audit[1], outcome=0 if decision.allowed else 4,
                user_name=principal.name, user_roles=",".join(sorted(principal.roles)),
                network_address=client_address(request), object_type="http",
                object_id=f"{request.method} {request.url.path}"))
        if not decision.allowed:
            if not principal.authenticated:
                raise HTTPException(401, decision.reason, headers={"WWW-Authenticate": "Bearer"})
            raise HTTPException(403, decision.reason)
        return principal


def route_requirement(route: APIRoute) -> Requirement | None:
    found = [d.call for d in route.dependant.dependencies if isinstance(d.call, Requirement)]
    return found[0] if len(found) == 1 else None


def enforce_route_policies(routes: list[Any]) -> None:
    """Raise if any route lacks exactly one :class:`Requirement` (a new route must choose a policy), or holds
    it where it cannot work: a route on the blocking pool gets no principal back from its Requirement (its own
    hop runs the check), so the Requirement must sit in ``dependencies=[...]``, not among its parameters."""
    missing, misplaced = [], []
    for route in routes:
        if isinstance(route, APIRoute) and route_requirement(route) is None:
            missing.append(f"{sorted(route.methods or ())} {route.path}")
        elif isinstance(route, APIRoute) and getattr(route.endpoint, RUNS_DEFERRED_CHECK, False) and not any(
                isinstance(d.dependency, Requirement) for d in route.dependencies):
            misplaced.append(f"{sorted(route.methods or ())} {route.path}")
        elif isinstance(route, Mount):
            missing.append(f"mount {route.path} (mounts cannot carry a policy: use routes)")
    if missing:
        raise RuntimeError("routes without an authorization policy: " + "; ".join(missing))
    if misplaced:
        raise RuntimeError("routes on the blocking pool must declare their Requirement in dependencies=[...], "
                           "not as a parameter: " + "; ".join(misplaced))


class RateLimiter:
    """Sliding-window limit per key (network address) for sign-in endpoints. In-process: one server
    process here; behind a load balancer the account lockout (in the database) still holds."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def check(self, key: str) -> None:
        now = time.monotonic()
        hits = self._hits[key]
        while hits and now - hits[0] > 60:
            hits.popleft()
        if len(hits) >= self.per_minute:
            raise HTTPException(429, "too many sign-in attempts from this address; wait a minute",
                                headers={"Retry-After": "60"})
        hits.append(now)


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "Cross-Origin-Opener-Policy": "same-origin",
}
