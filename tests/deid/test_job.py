"""The de-identification job end to end through the CLI: files and archive in, verified files out, vault,
quarantine, resume, re-identification by the honest broker only, EHR rows with the same pseudonyms."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from imagebank.cli import main
from imagebank.deid.identifiers import KnownIdentifiers
from imagebank.deid.verify import LeakScanner


@pytest.fixture
def cli(tmp_path: Path, database_url: str):
    data = tmp_path / "data"
    runner = CliRunner()
    env = {"IMAGEBANK_DATA": str(data), "IMAGEBANK_DATABASE__URL": database_url}

    def invoke(*args: str, code: int | None = 0) -> str:
        result = runner.invoke(main, list(args), env=env, catch_exceptions=False)
        if code is not None:
            assert result.exit_code == code, result.output
        return result.output
    invoke.data = data  # type: ignore[attr-defined]
    return invoke


def _write_study(folder: Path, make_instance, count: int = 3, **overrides) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(1, count + 1):
        path = folder / f"{number}.dcm"
        path.write_bytes(make_instance(number=number, pixels=True, **overrides))
        paths.append(path)
    return paths


def _outputs(out: Path) -> list[Path]:
    return sorted((out / "dicom").rglob("*.dcm"))


def test_files_are_deidentified_verified_recorded_and_resumable(cli, tmp_path, make_instance):
    sources = _write_study(tmp_path / "in", make_instance)
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    (tmp_path / "in" / "truncated.dcm").write_bytes(sources[0].read_bytes()[:700])
    cli("deid", "project", "create", "lung")
    out = tmp_path / "out"
    output = cli("deid", "run", "--project", "lung", "--output", str(out), "--workers", "1", "--no-progress",
                 str(tmp_path / "in"), code=1)
    assert "released 3 objects" in output and "quarantined 2" in output
    files = _outputs(out)
    assert len(files) == 3
    source = pydicom.dcmread(sources[0])
    known = KnownIdentifiers.from_dataset(source)
    for path in files:
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert not LeakScanner(known, check_dates=False).scan_dataset(ds)
        assert path.parts[-4] == ds.PatientID  # OUTPUT/dicom/<pseudonym>/<study>/<series>/<sop>.dcm
    report = json.loads((out / "deid-report.json").read_text())
    assert report["released"] == 3 and report["reasons"] == {"unreadable": 1, "truncated": 1}
    assert str(source.PatientName) not in (out / "deid-report.json").read_text()
    quarantine = list((cli.data / "deid-quarantine").glob("*.json"))
    assert len(quarantine) == 2 and {json.loads(q.read_text())["reason"] for q in quarantine} == {"unreadable", "truncated"}

    # Rerun: nothing is redone.
    output = cli("deid", "run", "--project", "lung", "--output", str(out), "--workers", "1", "--no-progress",
                 str(tmp_path / "in"))
    assert "released 0 objects" in output and "skipped 5" in output
    assert _outputs(out) == files


def test_two_sites_sharing_a_project_key_produce_identical_pseudonyms(cli, tmp_path, make_instance):
    _write_study(tmp_path / "in", make_instance, count=1)
    cli("deid", "project", "create", "shared")
    cli("users", "add", "broker", "--role", "honest_broker", "--no-password")
    key = cli("deid", "project", "export-key", "shared", "--as", "broker").strip()
    assert len(base64.b64decode(key)) == 32
    key_file = tmp_path / "key.txt"
    key_file.write_text(key)
    cli("deid", "project", "create", "copy", "--key-file", str(key_file))
    for project in ("shared", "copy"):
        cli("deid", "run", "--project", project, "--output", str(tmp_path / project), "--workers", "1",
            "--no-progress", str(tmp_path / "in"))
    a, b = _outputs(tmp_path / "shared"), _outputs(tmp_path / "copy")
    assert [p.relative_to(tmp_path / "shared") for p in a] == [p.relative_to(tmp_path / "copy") for p in b]
    assert pydicom.dcmread(a[0]).StudyDate == pydicom.dcmread(b[0]).StudyDate


def test_only_the_honest_broker_can_reidentify_and_every_attempt_is_audited(cli, tmp_path, make_instance):
    sources = _write_study(tmp_path / "in", make_instance, count=1)
    cli("deid", "project", "create", "p1")
    cli("deid", "run", "--project", "p1", "--output", str(tmp_path / "out"), "--workers", "1", "--no-progress",
        str(tmp_path / "in"))
    ds = pydicom.dcmread(_outputs(tmp_path / "out")[0])
    source = pydicom.dcmread(sources[0])
    cli("users", "add", "rita", "--role", "researcher", "--no-password")
    cli("users", "add", "hb", "--role", "honest_broker", "--no-password")
    denied = cli("deid", "reidentify", "--project", "p1", "--as", "rita", "--reason", "curious", ds.PatientID,
                 code=2)
    assert "honest-broker" in denied and str(source.PatientID) not in denied
    found = json.loads(cli("deid", "reidentify", "--project", "p1", "--as", "hb", "--reason", "incidental finding",
                           ds.StudyInstanceUID))
    assert found["patient_id"] == source.PatientID and found["source_study_uid"] == source.StudyInstanceUID
    found = json.loads(cli("deid", "reidentify", "--project", "p1", "--as", "hb", "--reason", "recontact",
                           ds.PatientID))
    assert found["patient_id"] == source.PatientID
    log = cli("audit", "query").splitlines()
    vault_reads = [line for line in log if "linkage-vault" in line]
    assert len(vault_reads) == 3  # the refusal and both reads
    assert any("user=rita" in line and "outcome=8" in line for line in vault_reads)
    assert sum("user=hb" in line and "outcome=0" in line for line in vault_reads) == 2


def test_archive_studies_and_ehr_rows_share_pseudonyms_and_date_shifts(cli, tmp_path):
    cli("demo", "--patients", "2", "--no-progress")
    cli("deid", "project", "create", "cohort")
    out = tmp_path / "out"
    output = cli("deid", "run", "--project", "cohort", "--output", str(out), "--all-studies", "--ehr",
                 "--workers", "2", "--no-progress", code=None)
    assert "EHR:" in output
    report = json.loads((out / "deid-report.json").read_text())
    assert report["released"] > 0 and report["ehr_resources"] > 0
    assert report["ehr_quarantined"] == 0
    dicom_pseudonyms = {p.name for p in (out / "dicom").iterdir()}
    patients = [json.loads(line) for line in (out / "ehr" / "Patient.ndjson").read_text().splitlines()]
    assert dicom_pseudonyms <= {p["id"] for p in patients}
    reports = [json.loads(line) for line in (out / "ehr" / "DiagnosticReport.ndjson").read_text().splitlines()]
    study_refs = {ref["reference"].split("/", 1)[1] for r in reports for ref in r.get("imagingStudy", [])}
    output_studies = {p.name for d in (out / "dicom").iterdir() for p in d.iterdir()}
    assert study_refs & output_studies, "reports must point at the de-identified studies"
    # The report's date and its study's date moved by the same shift.
    for r in reports:
        subject = r["subject"]["reference"]
        assert subject.startswith("Patient/IB")
    observations = (out / "ehr" / "Observation.ndjson").read_text()
    assert '"valueQuantity"' in observations and "http://loinc.org" in observations  # research values kept
    import re
    assert not re.search(r"MRN\d{6}", observations)  # the synthetic MRNs (MRN0420000000...)


def test_a_run_killed_part_way_resumes_without_partial_or_missing_outputs(tmp_path, make_instance, database_url):
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    for number in range(1, 201):
        (folder / f"{number}.dcm").write_bytes(make_instance(number=number, pixels=True))
    env = {**os.environ, "IMAGEBANK_DATA": str(tmp_path / "data"), "IMAGEBANK_DATABASE__URL": database_url}
    exe = [sys.executable, "-m", "imagebank.cli"]
    subprocess.run([*exe, "deid", "project", "create", "crash"], env=env, check=True, capture_output=True)
    out = tmp_path / "out"
    command = [*exe, "deid", "run", "--project", "crash", "--output", str(out), "--workers", "1", "--no-progress",
               str(folder)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / ".deid-journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (journal.is_file() and journal.read_text().count("\n") >= 64):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_text().count("\n")
    assert 64 <= done_before < 200, "the kill should land part-way"
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"skipped {done_before} done earlier" in result.stdout
    assert len(_outputs(out)) == 200
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for path in _outputs(out)[:5]:
        ds = pydicom.dcmread(path)
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)  # complete files
