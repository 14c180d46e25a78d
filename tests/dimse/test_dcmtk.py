"""Conformance against a real, independent DICOM implementation: dcmtk's echoscu, storescu and
findscu (Debian package dcmtk) talking to Imagebank's listener."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from imagebank.config import DicomPeerSettings
from imagebank.storage.schema import instances
from tests.conftest import pydicom_file
from tests.dimse.test_listener import listen  # noqa: F401 - the listener fixture

PEERS = [DicomPeerSettings(ae_title="CT01", host="127.0.0.1", permissions=["archive:write"]),
         DicomPeerSettings(ae_title="PACS", host="127.0.0.1", permissions=["archive:read", "archive:write"])]


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    if shutil.which("storescu") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI requires dcmtk (Debian package) for the DICOM conformance tests")
        pytest.skip("dcmtk is not installed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_echoscu_known_and_unknown_callers(listen: Any) -> None:  # noqa: F811
    listener = listen(peers=PEERS)
    ok = _run("echoscu", "-aet", "CT01", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port))
    assert ok.returncode == 0, ok.stderr
    refused = _run("echoscu", "-aet", "INTRUDER", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port))
    assert refused.returncode != 0 and "Rejected" in refused.stdout + refused.stderr


def test_storescu_sends_uncompressed_and_compressed_instances(listen: Any, secured: Any, tmp_path: Path,  # noqa: F811
                                                             make_instance: Callable[..., bytes]) -> None:
    listener = listen(peers=PEERS)
    files = []
    for n in (1, 2, 3):
        path = tmp_path / f"ct{n}.dcm"
        path.write_bytes(make_instance(n, pixels=True))
        files.append(path)
    result = _run("storescu", "-aet", "CT01", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port), *map(str, files))
    assert result.returncode == 0, result.stdout + result.stderr
    # Untouched pydicom samples; storescu proposes their compressed syntax (plus uncompressed ones)
    # with -xv (JPEG 2000 lossless) and -xr (RLE): the listener must pick the compressed one.
    compressed = {"MR_small_jp2klossless.dcm": ("-xv", "1.2.840.10008.1.2.4.90"),
                  "SC_rgb_rle.dcm": ("-xr", "1.2.840.10008.1.2.5")}
    for name, (option, _) in compressed.items():
        sent = _run("storescu", option, "-aet", "CT01", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port),
                    str(pydicom_file(name)))
        assert sent.returncode == 0, sent.stdout + sent.stderr
    arch = secured[0]
    assert arch.index.stats()["instances"] == len(files) + len(compressed)
    with arch.index.engine.connect() as conn:
        syntaxes = set(conn.execute(select(instances.c.transfer_syntax_uid)).scalars())
    assert {ts for _, ts in compressed.values()} <= syntaxes  # received compressed, stored as sent


def test_findscu_study_root_query(listen: Any, secured: Any, make_instance: Callable[..., bytes]) -> None:  # noqa: F811
    listener = listen(peers=PEERS)
    arch = secured[0]
    for n in (1, 2):
        arch.ingest(make_instance(n))
    result = _run("findscu", "-S", "-aet", "PACS", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port),
                  "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID", "-k", "StudyInstanceUID",
                  "-k", "NumberOfStudyRelatedInstances", "-k", "ModalitiesInStudy")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "(0020,1208) IS [2 ]" in output or "(0020,1208) IS [2]" in output
    denied = _run("findscu", "-v", "-S", "-aet", "CT01", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port),
                  "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID")
    assert "Final Find Response (Unknown Status: 0x124)" in denied.stdout + denied.stderr  # Refused: Not Authorized


def _study_of(data: bytes) -> str:
    import io

    import pydicom

    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)


def test_movescu_moves_a_study_to_its_own_storage_port(listen: Any, secured: Any, tmp_path: Path,  # noqa: F811
                                                        make_instance: Callable[..., bytes]) -> None:
    from tests.conftest import free_port

    arch = secured[0]
    originals = [make_instance(n, pixels=True) for n in (1, 2, 3)]
    for data in originals:
        arch.ingest(data)
    port = free_port()
    listener = listen(peers=[*PEERS, DicomPeerSettings(ae_title="MOVESCU", host="127.0.0.1", port=port,
                                                       permissions=["archive:read"])])
    out = tmp_path / "moved"
    out.mkdir()
    result = _run("movescu", "-v", "-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "-aec", "IMAGEBANK", "--port", str(port),
                  "-od", str(out), "127.0.0.1", str(listener.port),
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={_study_of(originals[0])}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(out.iterdir())) == 3
    # An AE title the archive has no address for is refused with "Move destination unknown".
    unknown = _run("movescu", "-v", "-S", "-aet", "MOVESCU", "-aem", "ELSEWHERE", "-aec", "IMAGEBANK",
                   "127.0.0.1", str(listener.port), "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={_study_of(originals[0])}")
    assert "Refused: MoveDestinationUnknown" in unknown.stdout + unknown.stderr  # 0xA801


def test_getscu_receives_compressed_instances_decompressed(listen: Any, secured: Any, tmp_path: Path) -> None:  # noqa: F811
    """getscu accepts only uncompressed syntaxes by default: the archive keeps the JPEG 2000 and RLE
    originals and decompresses them for this receiver, pixel for pixel."""
    import pydicom

    arch = secured[0]
    names = ("MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm")
    for name in names:
        arch.ingest(pydicom_file(name).read_bytes())
    listener = listen(peers=[*PEERS, DicomPeerSettings(ae_title="GETSCU", permissions=["archive:read"])])
    for name in names:
        original = pydicom.dcmread(pydicom_file(name))
        out = tmp_path / name
        out.mkdir()
        result = _run("getscu", "-S", "-aet", "GETSCU", "-aec", "IMAGEBANK", "-od", str(out),
                      "127.0.0.1", str(listener.port),
                      "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={original.StudyInstanceUID}")
        assert result.returncode == 0, result.stdout + result.stderr
        (received,) = [pydicom.dcmread(p) for p in out.iterdir()]
        assert received.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
        assert (received.pixel_array == original.pixel_array).all()


def test_findscu_relational_series_query_without_study_uid(listen: Any, secured: Any,  # noqa: F811
                                                           make_instance: Callable[..., bytes]) -> None:
    arch = secured[0]
    arch.ingest(make_instance(1))
    arch.ingest(make_instance(2, StudyInstanceUID="1.2.826.0.1.3680043.2.1125.77",
                              SeriesInstanceUID="1.2.826.0.1.3680043.2.1125.77.1"))
    listener = listen(peers=PEERS)
    result = _run("findscu", "-S", "-aet", "PACS", "-aec", "IMAGEBANK", "127.0.0.1", str(listener.port),
                  "-k", "QueryRetrieveLevel=SERIES", "-k", "Modality", "-k", "SeriesInstanceUID",
                  "-k", "StudyInstanceUID")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("(0020,000e) UI") == 2 and "1.2.826.0.1.3680043.2.1125.77.1" in output
