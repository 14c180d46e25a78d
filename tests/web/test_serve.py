"""``imagebank serve`` over real HTTP on loopback, and its home page in a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.test_cli import run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("served")
    assert run("demo", "--patients", "2", "--seed", "5", "--metadata-only", "--no-progress", data=data).returncode == 0
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(data), "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)
    yield base
    proc.terminate()
    proc.wait(10)


def test_stats_api_over_http(served: str) -> None:
    stats = httpx.get(f"{served}/api/stats").json()
    assert stats["patients"] == 2 and stats["instances"] > 0


def test_home_page_lists_studies(served: str) -> None:
    page = httpx.get(served)
    assert page.status_code == 200 and "Recent studies" in page.text and "MRN005" in page.text


def test_unknown_route_is_a_clean_404(served: str) -> None:
    response = httpx.get(f"{served}/no/such/page")
    assert response.status_code == 404 and "Traceback" not in response.text


def _require_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI requires Debian chromium for browser tests")
        pytest.skip("Debian chromium not installed")


def test_home_page_in_a_real_browser(served: str, tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        page.goto(served)
        assert page.title() == "Imagebank"
        rows = page.locator("#studies tbody tr")
        assert rows.count() >= 2
        assert page.locator("#n-patients").inner_text() == "2"
        page.screenshot(path=str(tmp_path / "home.png"))
        browser.close()
