"""Single sign-on against a real OpenID Connect provider (panva/oidc-provider on Node) on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from imagebank.config import Settings
from tests.conftest import LiveServer, free_port, wait_until_serving

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc"


def _require_provider() -> str:
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        message = "Node.js and tests/oidc/node_modules (npm ci in tests/oidc) are needed for the OIDC tests"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return node


@pytest.fixture
def sso(settings: Settings, secured: Any, request: pytest.FixtureRequest) -> Iterator[tuple[str, str, Any]]:
    """(app URL, issuer, accounts): the app configured for SSO with the provider running."""
    from imagebank.web.app import create_app

    node = _require_provider()
    roles = getattr(request, "param", ["clinician"])
    issuer = f"http://127.0.0.1:{free_port()}"
    tuned = settings.model_copy(update={"security": settings.security.model_copy(update={
        "oidc_issuer": issuer, "oidc_client_id": "imagebank", "oidc_client_secret": "imagebank-test-secret",
        "oidc_default_roles": roles})})
    arch, accounts, audit = secured
    with LiveServer(create_app(tuned, arch, accounts, audit)) as server:
        env = {**os.environ, "PORT": issuer.rsplit(":", 1)[1], "REDIRECT_URI": f"{server.url}/login/oidc/callback"}
        provider = subprocess.Popen([node, "provider.mjs"], cwd=PROVIDER_DIR, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)
        try:
            assert wait_until_serving(f"{issuer}/.well-known/openid-configuration", provider).status_code == 200
            yield server.url, issuer, accounts
        finally:
            provider.terminate()
            provider.wait(10)


def _through_provider(app_url: str, issuer: str, login: str) -> tuple[httpx.Client, httpx.Response]:
    """Follow the real redirects: app -> provider login form -> consent -> app callback."""
    app = httpx.Client(base_url=app_url)
    op = httpx.Client()
    location = app.get("/login/oidc").headers["location"]
    assert location.startswith(issuer)
    for _ in range(12):
        if location.startswith(app_url):
            break
        if "/interaction/" in location:
            uid = location.rstrip("/").rsplit("/", 1)[1]
            page = op.get(location).text
            form = {"prompt": "login", "login": login, "password": "irrelevant"} if 'name="login"' in page \
                else {"prompt": "consent"}
            response = op.post(f"{issuer}/interaction/{uid}", data=form)
        else:
            response = op.get(location)
        location = urljoin(issuer, response.headers["location"])
    return app, app.get(location.removeprefix(app_url))


def _sign_in_through_provider(app_url: str, issuer: str, login: str) -> httpx.Client:
    client, final = _through_provider(app_url, issuer, login)
    assert final.status_code == 303 and final.headers["location"] == "/", final.headers
    return client


def test_single_sign_on_creates_account_with_default_roles_and_opens_a_session(sso: Any) -> None:
    app_url, issuer, accounts = sso
    client = _sign_in_through_provider(app_url, issuer, "alice")
    me = client.get("/api/me").json()
    assert me["user"] == "alice" and me["roles"] == ["clinician"] and me["kind"] == "user"
    assert client.get("/api/stats").status_code == 200
    again = _sign_in_through_provider(app_url, issuer, "alice")  # same identity, same account
    assert again.get("/api/me").json()["user"] == "alice" and len(accounts.list_users()) == 1


def test_sso_identity_never_takes_over_a_local_account_of_the_same_name(sso: Any) -> None:
    app_url, issuer, accounts = sso
    accounts.create_user("alice", ["admin"], "local admin password")
    client = _sign_in_through_provider(app_url, issuer, "alice")
    me = client.get("/api/me").json()
    assert me["user"] == "alice-2" and me["roles"] == ["clinician"]


@pytest.mark.parametrize("sso", [[]], indirect=True)
def test_without_default_roles_an_unknown_identity_gets_no_account(sso: Any) -> None:
    app_url, issuer, accounts = sso
    app, final = _through_provider(app_url, issuer, "alice")
    assert final.status_code == 303 and "ask+an+administrator" in final.headers["location"]
    assert accounts.list_users() == []
    assert app.get("/api/me").status_code == 401


def test_forged_callback_without_state_is_refused(sso: Any) -> None:
    app_url, _, accounts = sso
    response = httpx.get(f"{app_url}/login/oidc/callback?code=forged&state=forged")
    assert response.status_code == 303 and "single+sign-on+failed" in response.headers["location"]
    assert accounts.list_users() == []


def test_the_callback_does_its_database_work_off_the_event_loop(sso: Any, secured: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The account lookup, the audit record and the new session are blocking database calls: on the event
    loop they would stall every other request of the process while they run."""
    import asyncio

    app_url, issuer, accounts = sso
    _, _, audit = secured
    on_loop: list[str] = []

    def watched(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                asyncio.get_running_loop()
                on_loop.append(name)
            except RuntimeError:  # no loop in this thread: a worker thread
                pass
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    for owner, name in ((accounts, "user_for_oidc"), (accounts, "create_session"), (audit, "record")):
        watched(owner, name)
    _sign_in_through_provider(app_url, issuer, "alice")
    assert httpx.get(f"{app_url}/login/oidc/callback?code=forged&state=forged").status_code == 303
    assert on_loop == []
