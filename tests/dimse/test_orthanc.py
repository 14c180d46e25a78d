"""Orthanc (Debian package) as the remote archive for Imagebank's DICOM client: store into it,
query it, and import from it with C-GET. A real, independent peer started on loopback per test module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, wait_until_serving
from tests.test_cli import run

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not Path(ORTHANC).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI requires Orthanc (Debian package orthanc) as a DICOM peer")
        pytest.skip("Orthanc is not installed")
    root = tmp_path_factory.mktemp("orthanc")
    dicom_port, http_port = free_port(), free_port()
    config = {
        "Name": "imagebank-test-peer", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "Plugins": [], "HttpsVerifyPeers": False,
        "DicomModalities": {"imagebank": ["IMAGEBANK", "127.0.0.1", 11112]},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until_serving(f"http://127.0.0.1:{http_port}/system", proc).status_code == 200
        yield {"dicom_port": dicom_port, "rest": f"http://127.0.0.1:{http_port}"}
    finally:
        proc.terminate()
        proc.wait(20)


def _env(orthanc: dict[str, Any]) -> dict[str, str]:
    peers = [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc["dicom_port"]}]
    return {"IMAGEBANK_DICOM__PEERS": json.dumps(peers)}


def test_store_query_and_import_with_orthanc(orthanc: dict[str, Any], tmp_path: Path,
                                             make_instance: Callable[..., bytes]) -> None:
    outgoing = tmp_path / "outgoing"
    outgoing.mkdir()
    for n in (1, 2, 3):
        (outgoing / f"{n}.dcm").write_bytes(make_instance(n, pixels=True))
    sender = tmp_path / "sender"
    echo = run("remote", "echo", "ORTHANC", data=sender, env=_env(orthanc))
    assert echo.returncode == 0, echo.stdout + echo.stderr
    sent = run("remote", "store", "ORTHANC", str(outgoing), data=sender, env=_env(orthanc))
    assert sent.returncode == 0 and "sent 3, failed 0" in sent.stdout, sent.stdout + sent.stderr
    assert len(httpx.get(f"{orthanc['rest']}/instances").json()) >= 3

    found = run("remote", "find", "ORTHANC", "-k", "PatientID=", "-k", "StudyInstanceUID=",
                "-k", "NumberOfStudyRelatedInstances=", data=sender, env=_env(orthanc))
    assert found.returncode == 0, found.stderr
    studies = [json.loads(line) for line in found.stdout.splitlines()]
    assert studies, found.stdout
    study_uid = studies[0]["0020000D"]["Value"][0]

    receiver = tmp_path / "receiver"
    fetched = run("remote", "get", "ORTHANC", "-k", f"StudyInstanceUID={study_uid}", data=receiver, env=_env(orthanc))
    assert fetched.returncode == 0 and "stored 3, duplicates 0, failed 0" in fetched.stdout, \
        fetched.stdout + fetched.stderr
    assert json.loads(run("stats", "--json", data=receiver).stdout)["instances"] == 3
