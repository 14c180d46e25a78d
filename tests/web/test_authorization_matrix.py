"""Every route x every role, generated from the route table, over real HTTP on loopback.

A new route is picked up automatically: it must declare a Requirement (or the app refuses to build),
and its expected allow/deny per role comes from the one policy table.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from imagebank.security.policy import ANONYMOUS, decide
from imagebank.security.roles import Role
from imagebank.web.auth import enforce_route_policies, route_requirement

PASSWORD = "matrix password 123"
# Bodies that satisfy request validation, so a 4xx can only come from authorization.
BODIES = {"/api/login": {"username": "user-clinician", "password": PASSWORD}}


def _routes(app: FastAPI) -> list[APIRoute]:
    return [r for r in app.routes if isinstance(r, APIRoute)]


def _fill_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1.2.3", path)


def test_matrix_of_every_route_and_role(live_app: Any) -> None:
    server, accounts = live_app
    app: FastAPI = server.server.config.app
    tokens: dict[str, str | None] = {"anonymous": None}
    for role in Role:
        accounts.create_user(f"user-{role.value}", [role], PASSWORD)
        tokens[role.value] = accounts.create_token(f"user-{role.value}", "matrix")
    checked = 0
    for route in _routes(app):
        requirement = route_requirement(route)
        assert requirement is not None
        for method in sorted(route.methods or ()):
            for who, token in tokens.items():
                principal = ANONYMOUS if token is None else accounts.principal_for_token(token)
                expected = decide(principal, requirement.permission).allowed
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = httpx.request(method, server.url + _fill_path(route.path), headers=headers,
                                         json=BODIES.get(route.path), follow_redirects=False)
                denied = response.status_code in (401, 403)
                assert denied != expected, f"{method} {route.path} as {who}: {response.status_code} {response.text[:200]}"
                assert response.status_code < 500
                checked += 1
    assert checked >= len(Role) * 5


def test_a_route_without_policy_fails_the_build() -> None:
    app = FastAPI()

    @app.get("/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="/forgotten"):
        enforce_route_policies(app.routes)


def test_password_brute_force_over_http_hits_the_lockout(live_app: Any) -> None:
    server, accounts = live_app
    accounts.create_user("alice", [Role.CLINICIAN], PASSWORD)
    codes = [httpx.post(f"{server.url}/api/login", json={"username": "alice", "password": f"guess {i}"}).status_code
             for i in range(accounts.lockout.max_failures)]
    assert codes == [401] * accounts.lockout.max_failures
    locked = httpx.post(f"{server.url}/api/login", json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429 and "locked" in locked.json()["error"]


def test_sign_in_sets_a_strict_http_only_cookie_and_audits(live_app: Any) -> None:
    server, accounts = live_app
    accounts.create_user("alice", [Role.RADIOLOGIST], PASSWORD)
    with httpx.Client(base_url=server.url) as client:
        response = client.post("/api/login", json={"username": "alice", "password": PASSWORD})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/api/stats").status_code == 200
        assert client.post("/api/logout").status_code == 200
        assert client.get("/api/stats").status_code == 401
    trail = server.server.config.app.state.audit
    kinds = [(e.event_id, e.outcome, e.user_name) for e in trail.query(user_name="alice")]
    assert ("110114", 0, "alice") in kinds and ("110110", 0, "alice") in kinds


def test_security_headers_are_set(live_app: Any) -> None:
    server, _ = live_app
    response = httpx.get(f"{server.url}/healthz")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    api = httpx.get(f"{server.url}/api/stats")  # refused, but still with every header
    assert api.headers["cache-control"] == "no-store" and api.headers["x-frame-options"] == "DENY"
    assert len(api.headers.get_list("content-security-policy")) == 1
    viewer = httpx.get(f"{server.url}/viewer/app-config.js")
    assert viewer.headers["content-security-policy"] != response.headers["content-security-policy"]
    assert len(viewer.headers.get_list("content-security-policy")) == 1


def test_bad_json_is_a_named_422_not_a_traceback(live_app: Any) -> None:
    server, _ = live_app
    response = httpx.post(f"{server.url}/api/login", json={"username": "x"})
    assert response.status_code == 422 and "password" in str(response.json()["detail"])
