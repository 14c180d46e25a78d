"""De-identification: Imagebank against the installable open-source peers, on the same corpus, in one run.

Corpus (generated or copied once under benchmarks/out/deid-corpus/):

- ``ct``: synthetic CT slices (default 5,000; 512x512 16-bit, 250-slice series, one per patient) from the
  project's synthetic hospital, with names, MRNs, birth dates, accession numbers, referring physicians,
  institutions;
- ``samples``: the mixed files pip packages ship (pydicom's test files, deid-data: MR, CT, US cines,
  RT, SR, DICOMDIRs, JPEG/RLE/deflate encodings, odd character sets, broken files).

Each tool de-identifies each corpus on 1 core and on all cores (``taskset``; the peers are sharded one
process per core, see deid_peers.py; Imagebank uses its own ``--workers``), and the leak verifier
(:mod:`imagebank.deid.verify`) then counts, in every output file, the identifiers of its source patient
that are still there: names (whole or parts), IDs, addresses/phones, institution names, original
instance UIDs, original dates. Kept private elements are counted apart (they may or may not identify).
Imagebank's quarantined objects (unsafe pixel data, unreadable input) have no output by design; a peer's
missing outputs are files it failed on.

Each output is counted, then deleted, and before each run the corpus is read and as many bytes as it holds
are written and deleted again (``level_memory``), so that every run starts with the same memory: its input in
the page cache and recycled free pages. (On this VM, writing into memory the guest never touched costs ~45%
more kernel time per file than reusing freed page cache: without this, the first tool measured pays ~10%
extra on one core.) Time runs
until the output is durable: every tool's run is followed by a ``sync`` on the same cores,
counted in its time (a peer that leaves its files in the page cache has not finished writing them).

Prints figures only; it asserts nothing about time.

    python benchmarks/deid_vs_peers.py [--slices 5000] [--peers deid,dicognito,...] [--no-samples]
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from deid_peers import LANGUAGE, PEERS, VERSIONS, cpu_pin_prefix, ensure_peer_venvs, input_files, run_peer_detailed, sample_files  # noqa: E402  # noqa: E402

OUT = HERE / "out"
CORPUS = OUT / "deid-corpus"
KEY = b"imagebank-benchmark-key-32-bytes"  # fixed so outputs can be paired with their sources


@dataclass
class Row:
    tool: str
    corpus: str
    workers: int
    files: int
    megabytes: float
    seconds: float  # the tool's run plus the sync that makes its output durable
    sync_seconds: float  # that sync alone
    no_output: int
    leaking_files: int
    leaks: int
    leak_kinds: Counter[str]
    private_kept: int

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0


def build_corpus(slices: int, samples: bool, venvs: dict[str, Path]) -> dict[str, Path]:
    from imagebank.synth.hospital import write_ct_corpus

    corpora = {}
    ct = CORPUS / f"ct-{slices}"
    if not (ct / ".complete").is_file():
        print(f"generating {slices} CT slices under {ct} ...", flush=True)
        write_ct_corpus(ct, slices)
        (ct / ".complete").touch()
    corpora["ct"] = ct
    if samples:
        folder = CORPUS / "samples"
        sample_files(folder, venv_base=venvs["deid-data"].parent)
        corpora["samples"] = folder
    return corpora


def durable(workers: int | None = None) -> float:
    """sync(1), bound to ``workers`` cores (None: unbound); returns its seconds. The peers write into the page
    cache and stop; the kernel writes their files later. Counting the sync in every tool's time compares the
    same thing: de-identified files safely on disk."""
    started = time.perf_counter()
    subprocess.run([*(cpu_pin_prefix(workers) if workers else []), "sync"], check=True)
    return time.perf_counter() - started


def level_memory(corpus: Path, files: list[Path]) -> None:
    """Bring the page cache to the same state before every run (see the module docstring): the input read
    into it, and as much output as the run will write written, made durable and deleted again."""
    total = 0
    for name in files:
        with open(corpus / name, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    scratch = OUT / "deid-runs" / "level-memory.scratch"
    scratch.parent.mkdir(parents=True, exist_ok=True)
    block = b"\x5a" * (1 << 20)
    with open(scratch, "wb") as fh:
        for _ in range(total // len(block) + 1):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())
    scratch.unlink()


def run_imagebank(corpus: Path, out: Path, workers: int) -> tuple[float, str]:
    """``imagebank deid run`` as a user runs it (a fresh data folder, the project created with a known key)."""
    data = out.parent / f"{out.name}-data"
    shutil.rmtree(data, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    exe = str(ROOT / ".venv" / "bin" / "imagebank")
    key_file = out.parent / "bench.key"
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(base64.b64encode(KEY).decode())
    env = {**os.environ, "IMAGEBANK_DATA": str(data)}
    subprocess.run([exe, "deid", "project", "create", "bench", "--key-file", str(key_file)], env=env, check=True,
                   capture_output=True)
    started = time.perf_counter()
    result = subprocess.run([*cpu_pin_prefix(workers), exe, "deid", "run", "--project", "bench", "--output",
                             str(out), "--workers", str(workers), "--no-progress", str(corpus)],
                            env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode not in (0, 1):
        raise SystemExit(f"imagebank deid run failed:\n{result.stderr}")
    return seconds, result.stdout.strip()


def imagebank_pairs(corpus: Path, out: Path) -> dict[Path, Path | None]:
    """Source -> output: Imagebank writes by pseudonymous UIDs; the known key maps the source's."""
    import pydicom

    from imagebank.deid.pseudonyms import Pseudonymizer

    outputs = {p.stem: p for p in (out / "dicom").rglob("*.dcm")}
    uid = Pseudonymizer(KEY).uid
    pairs: dict[Path, Path | None] = {}
    for rel in input_files(corpus):
        src = corpus / rel
        try:
            sop = str(pydicom.dcmread(src, stop_before_pixels=True, force=True).get("SOPInstanceUID", ""))
        except Exception:  # noqa: BLE001 - an unreadable source simply has no output
            sop = ""
        pairs[src] = outputs.get(uid(sop)) if sop else None
    return pairs


def peer_pairs(corpus: Path, out: Path) -> dict[Path, Path | None]:
    return {corpus / rel: (out / rel if (out / rel).is_file() else None) for rel in input_files(corpus)}


def count_leaks(pairs: dict[Path, Path | None], *, ours: bool) -> tuple[int, int, int, Counter[str], int]:
    """(no output, files with residual identifiers, residual identifiers, by kind, private elements kept)."""
    import pydicom

    from imagebank.config import EhrSettings
    from imagebank.deid.identifiers import KnownIdentifiers
    from imagebank.deid.pseudonyms import Pseudonymizer
    from imagebank.deid.subjects import direct_key
    from imagebank.deid.verify import LeakScanner

    pseudonyms = Pseudonymizer(KEY)
    no_output = leaking = total = private = 0
    kinds: Counter[str] = Counter()
    for src, dst in pairs.items():
        if dst is None:
            no_output += 1
            continue
        try:
            source = pydicom.dcmread(src, force=True)
            output = pydicom.dcmread(dst, force=True)
            known = KnownIdentifiers.from_dataset(source)
        except Exception:  # noqa: BLE001 - unreadable output of a peer: count it as no output
            no_output += 1
            continue
        shifted: set = set()
        if ours:  # a date equal to the shifted image of another original date is explained by the shift
            subject = direct_key(str(source.get("PatientID", "")), str(source.get("IssuerOfPatientID", "")),
                                 EhrSettings().issuer_systems)
            shifted = {pseudonyms.shift_date(d, subject) for d in known.dates}
        try:
            leaks = LeakScanner(known, shifted_dates=shifted).scan_dataset(output)
        except Exception:  # noqa: BLE001 - a value the scanner cannot decode
            leaks = []
        identifying = [leak for leak in leaks if leak.kind != "private"]
        private += len(leaks) - len(identifying)
        if identifying:
            leaking += 1
            total += len(identifying)
            kinds.update(leak.kind for leak in identifying)
    return no_output, leaking, total, kinds, private


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=5000)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--no-samples", action="store_true")
    parser.add_argument("--cores", default="", help="comma-separated core counts (default: 1 and all)")
    args = parser.parse_args()
    all_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores = [int(c) for c in args.cores.split(",")] if args.cores else sorted({1, all_cores})
    peers = [p for p in args.peers.split(",") if p]
    venvs = ensure_peer_venvs()
    corpora = build_corpus(args.slices, not args.no_samples, venvs)
    work = OUT / "deid-runs"
    rows: list[Row] = []
    for corpus_name, corpus in corpora.items():
        files = input_files(corpus)
        megabytes = sum((corpus / f).stat().st_size for f in files) / 1e6
        for workers in cores:
            for tool in ["imagebank", *peers]:
                out = work / f"{tool}-{corpus_name}-{workers}"
                print(f"{tool:<17} {corpus_name:<8} {workers} core(s) ...", end=" ", flush=True)
                durable()  # nothing of the previous tool left to write
                level_memory(corpus, files)
                if tool == "imagebank":
                    seconds, summary = run_imagebank(corpus, out, workers)
                    pairs = imagebank_pairs(corpus, out)
                    print(f"{seconds:.1f} s  ({summary})", flush=True)
                else:
                    run = run_peer_detailed(tool, corpus, out, workers=workers, venvs=venvs)
                    seconds = run.seconds
                    pairs = peer_pairs(corpus, out)
                    print(f"{seconds:.1f} s  ({len(run.failed)} failed)", flush=True)
                sync_seconds = durable(workers)
                seconds += sync_seconds
                print(f"{'':<17} + {sync_seconds:.1f} s until the output is on disk", flush=True)
                no_output, leaking, total, kinds, private = count_leaks(pairs, ours=tool == "imagebank")
                # The next tool starts with the same free memory: a full page cache (2.6 GB per CT run) makes
                # the kernel reclaim while writing, which would slow whoever runs later.
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(out.parent / f"{out.name}-data", ignore_errors=True)
                rows.append(Row(tool, corpus_name, workers, len(files), megabytes, seconds, sync_seconds, no_output,
                                leaking, total, kinds, private))
    print()
    print(f"machine: {all_cores} CPUs; peers: " + ", ".join(f"{p} {VERSIONS[p]} ({LANGUAGE[p]})" for p in peers))
    print("files/s and MB/s count until the output is durable: each run ends with a sync(1) on the same cores")
    print("(Imagebank syncs as it goes, for its resumable journal; the peers leave it to the kernel).")
    print("| tool | corpus | cores | files | files/s | MB/s | of which sync s | no output | files with residual "
          "identifiers | residual identifiers (kinds) | private elements kept |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.leak_kinds.items())) or "-"
        print(f"| {r.tool} | {r.corpus} | {r.workers} | {r.files} | {r.files_per_s:.1f} | "
              f"{r.megabytes / r.seconds:.1f} | {r.sync_seconds:.1f} | {r.no_output} | {r.leaking_files} | "
              f"{r.leaks} ({kinds}) | {r.private_kept} |")


if __name__ == "__main__":
    main()
