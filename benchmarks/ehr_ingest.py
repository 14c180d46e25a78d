"""EHR ingest throughput and memory (issue: EHR integration).

Writes the synthetic hospital's EHR as FHIR Bulk Data NDJSON once under benchmarks/out/ (10,000
patients by default, about 870,000 resources), then loads it with ``imagebank ehr ingest`` (the command
users run: validation with fhir.resources in worker processes, patient linkage, versioned store) into

- SQLite (the embedded default)
- PostgreSQL (127.0.0.1:5432)

and prints resources/s and the peak resident memory of the whole process tree. A smaller run
(1/10 of the patients) beside it shows that memory stays flat with the input size. A second pass over
the same files with ``--restart`` measures re-sending (every resource recognised as unchanged).

Prints figures only; it asserts nothing about time.

    python benchmarks/ehr_ingest.py [--patients 10000] [--workers N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest import OUT, fresh_postgres, run_measured  # noqa: E402 - shared with the DICOM ingest benchmark


def export(patients: int, seed: int = 7) -> tuple[Path, int, int]:
    from imagebank.synth.ehr import write_ndjson

    path = OUT / f"ehr-ndjson-{seed}-{patients}"
    marker = path / ".complete"
    if not marker.exists():
        print(f"writing the EHR of {patients} synthetic patients into {path} ...", flush=True)
        started = time.monotonic()
        counts = write_ndjson(path, seed, patients)
        marker.write_text(json.dumps(counts))
        print(f"  {sum(counts.values())} resources in {time.monotonic() - started:.0f} s", flush=True)
    counts = json.loads(marker.read_text())
    size = sum(f.stat().st_size for f in path.glob("*.ndjson"))
    return path, sum(counts.values()), size


def run(source: Path, data: Path, database_url: str | None, workers: int, *, fresh: bool = True,
        restart: bool = False) -> dict[str, float]:
    if fresh:
        shutil.rmtree(data, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    if database_url:
        env["IMAGEBANK_DATABASE__URL"] = database_url
    subprocess.run([sys.executable, "-m", "imagebank.cli", "--data", str(data), "db", "upgrade"],
                   env=env, check=True, capture_output=True)  # schema creation is not measured
    cmd = [sys.executable, "-m", "imagebank.cli", "--data", str(data), "ehr", "ingest", str(source),
           "--workers", str(workers), "--no-progress", "--json"] + (["--restart"] if restart else [])
    seconds, peak, output = run_measured(cmd, env)
    summary = json.loads(output[output.index("{"):])
    resources = sum(summary["actions"].values())
    return {"resources": resources, "seconds": seconds, "per_s": resources / seconds, "peak_mb": peak / 1e6,
            "unchanged": summary["actions"].get("unchanged", 0)}


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"| {'configuration':<52} | {'resources':>9} | {'seconds':>7} | {'res/s':>6} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 54}|{'-' * 11}|{'-' * 9}|{'-' * 8}|{'-' * 13}|", flush=True)


def row(name: str, r: dict[str, float]) -> None:
    print(f"| {name:<52} | {r['resources']:>9.0f} | {r['seconds']:>7.1f} | {r['per_s']:>6.0f} | "
          f"{r['peak_mb']:>11.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM; "
          f"validation workers: {args.workers}")
    small_patients = max(1, args.patients // 10)
    big, big_n, big_size = export(args.patients)
    small, small_n, _ = export(small_patients)
    print(f"input: {big_n} resources of {args.patients} patients, {big_size / 1e6:.0f} MB of NDJSON")

    header("FHIR R4 NDJSON ingest (imagebank ehr ingest)")
    if not args.no_postgres:
        row(f"PostgreSQL, {small_patients} patients",
            run(small, OUT / "ehr-data", fresh_postgres("imagebank_ehr_bench"), args.workers))
        row(f"PostgreSQL, {args.patients} patients",
            run(big, OUT / "ehr-data", fresh_postgres("imagebank_ehr_bench"), args.workers))
    if not args.postgres_only:
        row(f"SQLite, {small_patients} patients", run(small, OUT / "ehr-data", None, args.workers))
        row(f"SQLite, {args.patients} patients", run(big, OUT / "ehr-data", None, args.workers))
        row(f"SQLite, {args.patients} patients again (all unchanged)",
            run(big, OUT / "ehr-data", None, args.workers, fresh=False, restart=True))
    shutil.rmtree(OUT / "ehr-data", ignore_errors=True)


if __name__ == "__main__":
    main()
