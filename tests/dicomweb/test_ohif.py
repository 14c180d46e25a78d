"""The OHIF Viewer (npm @ohif/app, unchanged) at /viewer, against our DICOMweb, in Debian's chromium."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "radiology rocks 42"


def _require(condition: bool, why: str) -> None:
    if not condition:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI requires {why}")
        pytest.skip(f"{why} is not installed")


def test_ohif_opens_the_study_list_and_draws_an_image(make_settings: Callable[..., Any], make_instance: Any,
                                                     tmp_path: Path) -> None:
    from imagebank.context import open_archive, open_security
    from imagebank.viewer import is_installed, viewer_dir
    from imagebank.web.app import create_app

    settings = make_settings()
    _require(Path(CHROMIUM).exists(), "Debian chromium for browser tests")
    _require(is_installed(viewer_dir(settings.dicomweb.viewer_dir)), "the OHIF viewer (imagebank viewer install)")
    from playwright.sync_api import sync_playwright

    archive = open_archive(settings)
    accounts, audit = open_security(settings, archive.index.engine)
    accounts.create_user("alice", ["radiologist"], PASSWORD)
    study_uid = description = ""
    for number in range(1, 4):
        data = make_instance(number=number, pixels=True)
        ds = pydicom.dcmread(io.BytesIO(data))
        study_uid, description = ds.StudyInstanceUID, ds.StudyDescription
        assert archive.ingest(data).accepted
    failures: list[str] = []
    with LiveServer(create_app(settings, archive, accounts, audit)) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.on("response", lambda r: failures.append(f"{r.status} {r.url}") if "/dicom-web/" in r.url
                and r.status >= 400 else None)
        page.goto(server.url + "/login")
        page.fill("#username", "alice")
        page.fill("#password", PASSWORD)
        page.click("#sign-in")
        page.wait_for_url(server.url + "/")

        page.goto(server.url + "/viewer/")
        page.get_by_text(description, exact=False).first.wait_for(timeout=60_000)  # the study list, from QIDO-RS
        page.screenshot(path=str(tmp_path / "study-list.png"))

        page.goto(f"{server.url}/viewer/viewer?StudyInstanceUIDs={study_uid}")
        canvas = page.locator("canvas.cornerstone-canvas").first
        canvas.wait_for(timeout=60_000)
        drawn = None
        for _ in range(60):  # the image arrives over WADO-RS frames and is decoded in a web worker
            pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), dtype=np.float64)
            if pixels.std() > 20:
                drawn = pixels
                break
            page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "viewer.png"))
        browser.close()
    assert drawn is not None, "OHIF drew no image in its viewport"
    assert not failures, f"DICOMweb requests failed: {failures}"
