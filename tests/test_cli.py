"""The ``imagebank`` command as a user runs it: real processes, real data folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import pydicom_file

COMMANDS = [[], ["serve"], ["ingest"], ["demo"], ["db"], ["db", "upgrade"], ["db", "current"], ["stats"], ["check"],
            ["users"], ["users", "add"], ["users", "list"], ["users", "passwd"], ["users", "disable"], ["tokens"],
            ["tokens", "create"], ["tokens", "revoke"], ["audit"], ["audit", "verify"], ["audit", "query"],
            ["remote"], ["remote", "echo"], ["remote", "find"], ["remote", "store"], ["remote", "get"],
            ["ehr"], ["ehr", "ingest"], ["ehr", "unlinked"], ["ehr", "stats"], ["ehr", "synth"]]


def run(*args: str, data: Path | None = None, env: dict[str, str] | None = None,
        timeout: int = 300) -> subprocess.CompletedProcess[str]:
    base = [sys.executable, "-m", "imagebank.cli"] + (["--data", str(data)] if data else [])
    stdin = (env or {}).pop("_STDIN", None)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    full_env.update(env or {})
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout, env=full_env, input=stdin)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


def test_demo_then_stats_then_check(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = run("demo", "--patients", "2", "--seed", "3", "--no-progress", data=data)
    assert demo.returncode == 0, demo.stderr
    assert "imagebank --data" in demo.stdout and "serve" in demo.stdout and "http://127.0.0.1:8042/" in demo.stdout
    stats = json.loads(run("stats", "--json", data=data).stdout)
    assert stats["patients"] == 2 and stats["instances"] > 0
    human = run("stats", data=data).stdout
    assert "patients: 2" in human
    assert "consistent" in run("check", data=data).stdout
    assert (data / "index.sqlite3").is_file() and (data / "blobs").is_dir()
    imports = run("audit", "query", data=data).stdout
    assert "Import" in imports and "synthetic hospital seed 3" in imports


def test_data_folder_from_environment(tmp_path: Path) -> None:
    data = tmp_path / "env-data"
    result = run("db", "upgrade", env={"IMAGEBANK_DATA": str(data)})
    from imagebank.storage.database import head_revision

    head = head_revision()
    assert result.returncode == 0 and f"empty -> {head}" in result.stdout
    assert (data / "index.sqlite3").is_file()
    assert f"current: {head}" in run("db", "current", env={"IMAGEBANK_DATA": str(data)}).stdout


def test_ingest_reports_rejections_and_exits_non_zero(tmp_path: Path) -> None:
    result = run("ingest", str(pydicom_file("no_meta.dcm")), "--no-progress", data=tmp_path / "d")
    assert result.returncode == 1
    assert "rejected x1: not a DICOM file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_invalid_values_are_stored_without_logging_them(tmp_path: Path) -> None:
    """pydicom warns about invalid values by quoting them; patient values must never reach a log."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    ds = pydicom.Dataset()
    ds.PatientName = "Secretname^" + "X" * 70  # longer than PN allows per component
    ds.PatientID = "MRN-SECRET-1"
    ds.PatientBirthDate = "1970-13-45"  # not a DA
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.3", "1.2.3.4", "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "ot"  # lowercase CS
    ds.InstanceNumber = "1.5"  # not an IS
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = tmp_path / "bad-values.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
    result = run("-v", "-v", "ingest", str(path), "--no-progress", data=tmp_path / "d")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stored 1," in result.stdout
    for secret in ("Secretname", "MRN-SECRET", "1970-13-45"):
        assert secret not in result.stdout + result.stderr


def test_bad_configuration_is_a_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "imagebank.toml").write_text('[ingest]\nduplicate_policy = "sometimes"\n')
    result = run("stats", data=data)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid configuration") and "ingest.duplicate_policy" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    result = run("stats", data=tmp_path / "d",
                 env={"IMAGEBANK_DATABASE__URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.returncode == 2 and "not reachable" in result.stderr and "Traceback" not in result.stderr


def test_demo_out_writes_a_folder_that_ingest_reads(tmp_path: Path) -> None:
    out = tmp_path / "files"
    assert run("demo", "--patients", "1", "--metadata-only", "--out", str(out)).returncode == 0
    files = list(out.rglob("*.dcm"))
    assert files
    result = run("ingest", str(out), "--no-progress", data=tmp_path / "d")
    assert result.returncode == 0 and f"stored {len(files)}," in result.stdout


def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    result = run("serve", "--host", "0.0.0.0", data=tmp_path / "d", timeout=30)
    assert result.returncode == 2 and "TLS" in result.stderr


def test_users_tokens_and_audit_commands(tmp_path: Path) -> None:
    data = tmp_path / "d"
    added = run("users", "add", "carol", "--role", "clinician", "--role", "radiologist", "--password-stdin",
                data=data, env={"_STDIN": "a long enough password\n"})
    assert added.returncode == 0 and "clinician, radiologist" in added.stdout
    assert "already exists" in run("users", "add", "carol", "--role", "clinician", "--no-password", data=data).stderr
    assert "12 characters" in run("users", "passwd", "carol", "--password-stdin", data=data,
                                  env={"_STDIN": "short\n"}).stderr
    assert "carol" in run("users", "list", data=data).stdout
    token = run("tokens", "create", "carol", "laptop", "--scope", "archive:read", data=data).stdout.strip()
    assert token.startswith("ibt_")
    assert "unknown scope" in run("tokens", "create", "carol", "x", "--scope", "everything", data=data).stderr
    assert "revoked 1" in run("tokens", "revoke", "carol", "laptop", data=data).stdout
    assert run("audit", "verify", data=data).stdout.strip() == "audit trail intact"
    listing = run("audit", "query", "--format", "fhir", data=data).stdout.splitlines()
    assert len(listing) >= 3 and all(json.loads(line)["resourceType"] == "AuditEvent" for line in listing)
    assert "<AuditMessage>" in run("audit", "query", "--format", "dicom", data=data).stdout


def test_demo_loads_the_ehr_and_ehr_commands_report_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = run("demo", "--patients", "3", "--seed", "5", "--metadata-only", "--no-progress", data=data)
    assert demo.returncode == 0, demo.stderr
    assert "loading the synthetic EHR" in demo.stdout and "0 rejected" in demo.stdout
    stats = run("ehr", "stats", data=data)
    assert stats.returncode == 0 and "Patient" in stats.stdout and "Observation" in stats.stdout
    unlinked = run("ehr", "unlinked", "--json", data=data)
    assert unlinked.returncode == 0, unlinked.stderr
    assert all(f["count"] == 0 for f in json.loads(unlinked.stdout).values())


def test_ehr_ingest_names_bad_lines_resumes_and_exits_non_zero(tmp_path: Path) -> None:
    data, export = tmp_path / "data", tmp_path / "export"
    written = run("ehr", "synth", "--patients", "2", "--seed", "9", "--out", str(export))
    assert written.returncode == 0, written.stderr
    with (export / "Observation.ndjson").open("a") as fh:
        fh.write('{"resourceType": "Observation", "id": "bad", "status": "final", "code": {"text": "x"}, '
                 '"valueQuantity": {"value": "high"}}\n')
    first = run("ehr", "ingest", str(export), "--no-progress", data=data)
    assert first.returncode == 1
    assert "1 rejected" in first.stdout and "Observation.valueQuantity.value" in first.stdout
    assert "Traceback" not in first.stderr
    again = run("ehr", "ingest", str(export), "--no-progress", data=data)
    assert again.returncode == 0 and "already done" in again.stdout and "0 rejected" in again.stdout
    missing = run("ehr", "ingest", str(tmp_path / "nowhere"), data=data)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
