"""``imagebank remote``: the CLI as a DICOM client of another archive (here, a second Imagebank)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imagebank.config import DicomPeerSettings
from tests.dimse.test_listener import listen  # noqa: F401 - the listener fixture
from tests.test_cli import run


def test_remote_echo_find_get_and_store(listen: Any, secured: Any, tmp_path: Path,  # noqa: F811
                                       make_instance: Callable[..., bytes]) -> None:
    remote_archive = secured[0]
    originals = [make_instance(n) for n in (1, 2, 3)]
    results = [remote_archive.ingest(data) for data in originals]
    study_uid = str(results[0].study_instance_uid)
    remote = listen(ae_title="REMOTE", peers=[
        DicomPeerSettings(ae_title="IMAGEBANK", host="127.0.0.1", permissions=["archive:read", "archive:write"])])
    env = {"IMAGEBANK_DICOM__PEERS": json.dumps([{"ae_title": "REMOTE", "host": "127.0.0.1", "port": remote.port}])}
    data = tmp_path / "local"

    echo = run("remote", "echo", "REMOTE", data=data, env=dict(env))
    assert echo.returncode == 0 and "status 0x0000" in echo.stdout

    found = run("remote", "find", "REMOTE", "-k", "PatientID=", "-k", "StudyInstanceUID=", data=data, env=dict(env))
    assert found.returncode == 0, found.stderr
    studies = [json.loads(line) for line in found.stdout.splitlines()]
    assert [s["0020000D"]["Value"][0] for s in studies] == [study_uid]

    fetched = run("remote", "get", "REMOTE", "-k", f"StudyInstanceUID={study_uid}", data=data, env=dict(env))
    assert fetched.returncode == 0 and "stored 3, duplicates 0, failed 0" in fetched.stdout, fetched.stdout + fetched.stderr
    again = run("remote", "get", "REMOTE", "-k", f"StudyInstanceUID={study_uid}", data=data, env=dict(env))
    assert "stored 0, duplicates 3" in again.stdout  # an interrupted import simply runs again
    assert json.loads(run("stats", "--json", data=data).stdout)["instances"] == 3

    extra = tmp_path / "extra.dcm"
    extra.write_bytes(make_instance(4))
    sent = run("remote", "store", "REMOTE", str(extra), data=data, env=dict(env))
    assert sent.returncode == 0 and "sent 1, failed 0" in sent.stdout
    assert remote_archive.index.stats()["instances"] == 4

    unknown = run("remote", "echo", "NOWHERE", data=data, env=dict(env))
    assert unknown.returncode == 2 and "unknown remote AE 'NOWHERE'" in unknown.stderr
    bad_key = run("remote", "find", "REMOTE", "-k", "NoSuchKeyword=1", data=data, env=dict(env))
    assert bad_key.returncode == 2 and "not a DICOM keyword" in bad_key.stderr
