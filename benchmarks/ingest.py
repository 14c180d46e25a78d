"""Ingest throughput and memory of the archive pipeline (issue: archive core).

Generates a corpus of CT slices (512x512, 16-bit) once under benchmarks/out/, then ingests it with
``imagebank ingest`` (the same bulk pipeline users run) into:

- SQLite + filesystem blobs (the embedded default)
- PostgreSQL (127.0.0.1:5432) + filesystem blobs

and prints instances/s, MB/s and the peak resident memory of the whole process tree (parent and
workers). A second table checks that memory stays flat with corpus size: 5,000 versus 50,000 instances
of the same kind (header-only CT instances, so the 50,000 run does not need 26 GB of disk).

Prints figures only; it asserts nothing about time.

    python benchmarks/ingest.py [--slices 5000] [--flat 50000] [--workers N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def corpus(slices: int, metadata_only: bool) -> Path:
    from imagebank.synth.hospital import write_ct_corpus

    path = OUT / f"ct-{'headers' if metadata_only else 'full'}-{slices}"
    marker = path / ".complete"
    if not marker.exists():
        print(f"generating {slices} CT {'header-only ' if metadata_only else ''}slices into {path} ...", flush=True)
        started = time.monotonic()
        write_ct_corpus(path, slices, metadata_only=metadata_only)
        marker.write_text("ok")
        print(f"  generated in {time.monotonic() - started:.0f} s", flush=True)
    return path


def _first_instances(args: tuple[int, int]) -> list[tuple[str, bytes]]:
    """One header-only instance (the first of the first series) of every study of synthetic patient ``p``."""
    from imagebank.synth.dicom_writer import render_instance
    from imagebank.synth.plan import plan_patient

    seed, index = args
    patient = plan_patient(seed, index, 1)
    return [(f"{index:07d}-{s:02d}.dcm", render_instance(patient, study, study.series[0], 1, metadata_only=True))
            for s, study in enumerate(patient.studies)]


def study_corpus(studies: int, seed: int = 2) -> Path:
    """``studies`` studies of the synthetic hospital, one header-only instance each (an index-scale corpus),
    generated once under benchmarks/out/. Seed 2: other patients than the CT corpus (seed 1)."""
    from multiprocessing import get_context

    path = OUT / f"studies-{studies}"
    marker = path / ".complete"
    if marker.exists():
        return path
    print(f"generating {studies} studies (one header-only instance each) into {path} ...", flush=True)
    started = time.monotonic()
    path.mkdir(parents=True, exist_ok=True)
    written = 0
    with get_context("spawn").Pool(os.cpu_count()) as pool:
        jobs = ((seed, index) for index in range(10 * studies))
        for instances in pool.imap(_first_instances, jobs, chunksize=64):
            for name, data in instances:
                if written < studies:
                    (path / name).write_bytes(data)
                    written += 1
            if written >= studies:
                pool.terminate()
                break
    marker.write_text("ok")
    print(f"  generated in {time.monotonic() - started:.0f} s", flush=True)
    return path


def fresh_postgres(name: str) -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run ``cmd``; its wall time, the peak resident memory of its whole process tree (parent and
    workers, sampled every 50 ms) and its output. Exits with the output if the command failed."""
    started = time.monotonic()
    proc = psutil.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc] + proc.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.monotonic() - started
    output = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[3:6])} failed ({proc.returncode}):\n{output[-3000:]}")
    return seconds, peak, output


def run_ingest(source: Path, data: Path, database_url: str | None, workers: int) -> dict[str, float]:
    shutil.rmtree(data, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    if database_url:
        env["IMAGEBANK_DATABASE__URL"] = database_url
    # Schema creation is not part of the measurement.
    subprocess.run([sys.executable, "-m", "imagebank.cli", "--data", str(data), "db", "upgrade"],
                   env=env, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "imagebank.cli", "--data", str(data), "ingest", str(source),
           "--workers", str(workers), "--no-progress"]
    seconds, peak_tree, output = run_measured(cmd, env)
    stored = int(output.split("stored ", 1)[1].split(",", 1)[0])
    size = sum(f.stat().st_size for f in source.rglob("*.dcm"))
    return {"instances": stored, "seconds": seconds, "per_s": stored / seconds, "mb_s": size / 1e6 / seconds,
            "peak_mb": peak_tree / 1e6}


def table(title: str, rows: list[tuple[str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"| {'configuration':<44} | {'instances':>9} | {'seconds':>7} | {'inst/s':>7} | {'MB/s':>6} | {'peak RSS MB':>11} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 9}|{'-' * 9}|{'-' * 8}|{'-' * 13}|")
    for name, r in rows:
        print(f"| {name:<44} | {r['instances']:>9.0f} | {r['seconds']:>7.1f} | {r['per_s']:>7.0f} | "
              f"{r['mb_s']:>6.1f} | {r['peak_mb']:>11.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=5000)
    parser.add_argument("--flat", type=int, default=50000, help="instances for the memory-flatness run (0: skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="only the memory-flatness table")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM; "
          f"workers: {args.workers}")

    full = corpus(args.slices, metadata_only=False) if not args.skip_full else None
    rows: list[tuple[str, dict[str, float]]] = []
    if full is not None:
        rows.append((f"SQLite + filesystem, {args.workers} workers",
                     run_ingest(full, OUT / "data-sqlite", None, args.workers)))
        rows.append(("SQLite + filesystem, 1 process", run_ingest(full, OUT / "data-sqlite", None, 1)))
    if full is not None and not args.no_postgres:
        rows.append((f"PostgreSQL + filesystem, {args.workers} workers",
                     run_ingest(full, OUT / "data-pg", fresh_postgres("imagebank_bench"), args.workers)))
    if rows:
        table(f"Ingest of {args.slices} CT slices (512x512, 16-bit, ~0.5 MB each)", rows)

    if args.flat:
        small = corpus(args.slices, metadata_only=True)
        large = corpus(args.flat, metadata_only=True)
        flat = [(f"SQLite, {args.slices} header-only instances", run_ingest(small, OUT / "data-flat", None, args.workers)),
                (f"SQLite, {args.flat} header-only instances", run_ingest(large, OUT / "data-flat", None, args.workers))]
        if not args.no_postgres:
            flat.append((f"PostgreSQL, {args.flat} header-only instances",
                         run_ingest(large, OUT / "data-flat", fresh_postgres("imagebank_bench"), args.workers)))
        table("Memory flatness (same instance kind, 10x the count)", flat)
    shutil.rmtree(OUT / "data-sqlite", ignore_errors=True)
    shutil.rmtree(OUT / "data-pg", ignore_errors=True)
    shutil.rmtree(OUT / "data-flat", ignore_errors=True)


if __name__ == "__main__":
    main()
