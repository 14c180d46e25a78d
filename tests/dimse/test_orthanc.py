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
    dicom_port, http_port, imagebank_port = free_port(), free_port(), free_port()
    config = {
        "Name": "imagebank-test-peer", "DicomAet": "ORTHANC", "DicomPort": dicom_port, "HttpPort": http_port,
        "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True, "DicomAlwaysAllowMove": True, "Plugins": [], "HttpsVerifyPeers": False,
        # Orthanc moves to Imagebank's listener (a C-MOVE destination must be known by address).
        "DicomModalities": {"imagebank": ["IMAGEBANK", "127.0.0.1", imagebank_port]},
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen([ORTHANC, str(root / "orthanc.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_until_serving(f"http://127.0.0.1:{http_port}/system", proc).status_code == 200
        yield {"dicom_port": dicom_port, "rest": f"http://127.0.0.1:{http_port}", "imagebank_port": imagebank_port}
    finally:
        proc.terminate()
        proc.wait(20)


def _env(orthanc: dict[str, Any]) -> dict[str, str]:
    # ORTHANC may store into Imagebank: it is the sender of the C-MOVE sub-operations.
    peers = [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc["dicom_port"],
              "permissions": ["archive:write"]}]
    return {"IMAGEBANK_DICOM__PEERS": json.dumps(peers), "IMAGEBANK_DICOM__PORT": str(orthanc["imagebank_port"])}


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


def test_import_priors_from_orthanc_by_move_and_get_resumes(orthanc: dict[str, Any], tmp_path: Path,
                                                             make_instance: Callable[..., bytes]) -> None:
    """A patient's two studies on Orthanc: one series is fetched first (an interrupted import), then
    `remote import` by C-MOVE brings only what is missing; a second import retrieves nothing."""
    patient = "PRIORS-1"
    study_a, study_b = "1.2.826.0.1.3680043.2.1125.901", "1.2.826.0.1.3680043.2.1125.902"
    layout = {(study_a, f"{study_a}.1"): 3, (study_a, f"{study_a}.2"): 2, (study_b, f"{study_b}.1"): 4}
    outgoing = tmp_path / "priors"
    outgoing.mkdir()
    number = 0
    for (study, series), count in layout.items():
        for _ in range(count):
            number += 1
            (outgoing / f"{number}.dcm").write_bytes(make_instance(
                number, PatientID=patient, StudyInstanceUID=study, SeriesInstanceUID=series,
                SOPInstanceUID=f"{series}.{number}"))
    sender = tmp_path / "sender"
    assert run("remote", "store", "ORTHANC", str(outgoing), data=sender, env=_env(orthanc)).returncode == 0

    receiver = tmp_path / "receiver"
    partial = run("remote", "get", "ORTHANC", "--level", "SERIES", "-k", f"StudyInstanceUID={study_a}",
                  "-k", f"SeriesInstanceUID={study_a}.1", data=receiver, env=_env(orthanc))
    assert "stored 3," in partial.stdout, partial.stdout + partial.stderr

    moved = run("remote", "import", "ORTHANC", "--patient-id", patient, "--method", "move",
                data=receiver, env=_env(orthanc))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "2 studies on ORTHANC: 3 instances already here, retrieved 6, failed 0" in moved.stdout
    assert json.loads(run("stats", "--json", data=receiver).stdout)["instances"] == 9

    again = run("remote", "import", "ORTHANC", "--patient-id", patient, data=receiver, env=_env(orthanc))
    assert "9 instances already here, retrieved 0, failed 0" in again.stdout, again.stdout + again.stderr

    refused = run("remote", "import", "ORTHANC", data=receiver, env=_env(orthanc))
    assert refused.returncode == 2 and "select the studies to import" in refused.stderr
