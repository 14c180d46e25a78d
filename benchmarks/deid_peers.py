"""The open-source de-identification peers, for benchmarks/deid_vs_peers.py (importable; no work at import).

The peers are the installable ones on PyPI, pinned in benchmarks/deid-peers-requirements.txt and
installed into their own virtualenv (they all take pydicom 3.0.2 like Imagebank, but must not touch
Imagebank's pinned environment):

- ``deid`` 0.4.13 (pydicom/deid), default recipe ``deid.dicom``  -- Python
- ``dicognito`` 0.19.0 (blairconrad/dicognito), its default anonymizer  -- Python
- ``dicom-anonymizer`` 2.1.0 (KitwareMedical/dicom-anonymizer), default rules, private tags removed  -- Python
- ``dcmanon`` 0.3.1 (carecoders/dicom-anonymization), default config  -- Rust, through its Python binding

How a tool is run (see deid-peers/peer_worker.py for the per-file call of each): one process per shard
of the input files, in the peers' virtualenv, each de-identifying its files one at a time with the
tool's default profile and writing each output under the same relative path as its input, so the
leak verifier can pair them. None of the four has a parallel mode in what PyPI installs, so "all
cores" is what a user would do: split the file list into ``workers`` shards (balanced by bytes) and
run one process per shard at the same time. The wall time runs from the first process's start to the
last one's end: interpreter start-up and imports included, as a user pays them.

Cores: with ``taskset`` on the machine, every process of a run is bound to ``workers`` CPUs (the
first ``workers`` CPUs this process may use): ``workers=1`` is really one core even for a tool that
starts threads, and ``workers=N`` at most N cores. ``cpu_pin_prefix`` gives the same prefix for the
Imagebank side.

A file a tool fails on does not end the run: the worker records it and goes on; a worker that dies
(segfault, abort) is started again on the rest of its shard, the file it died on counted as failed.
``missing_outputs`` lists the inputs that have no output.

    from deid_peers import PEERS, ensure_peer_venvs, run_peer, missing_outputs, sample_files
    venvs = ensure_peer_venvs()
    seconds = run_peer("dicognito", corpus, out / "dicognito", workers=1, venvs=venvs)
"""

from __future__ import annotations

import hashlib
import heapq
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "deid-peers-requirements.txt"
WORKER = HERE / "deid-peers" / "peer_worker.py"
DEFAULT_VENV_BASE = HERE / "out" / "peers-venv"

PEERS: list[str] = ["deid", "dicognito", "dicom-anonymizer", "dcmanon"]
#: The language each peer's de-identification runs in (dcmanon: Rust, called through pyo3).
LANGUAGE: dict[str, str] = {"deid": "Python", "dicognito": "Python", "dicom-anonymizer": "Python", "dcmanon": "Rust"}
#: Pinned versions, as in the requirements file.
VERSIONS: dict[str, str] = {"deid": "0.4.13", "dicognito": "0.19.0", "dicom-anonymizer": "2.1.0", "dcmanon": "0.3.1",
                            "deid-data": "0.0.20"}

_STAMP = ".imagebank-peers-installed"


# --- virtualenv -------------------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_peer_venvs(base: Path = DEFAULT_VENV_BASE) -> dict[str, Path]:
    """Create (or reuse) the peers' virtualenv under ``base`` from the pinned requirements.

    All peers and deid-data install together, so there is one virtualenv, ``base/peers``; the result
    maps each peer (and ``"deid-data"``) to it. Quick when already installed: a stamp in the
    virtualenv records the requirements and the Python it was made for, and pip runs only when they
    changed.
    """
    base = Path(base)
    venv = base / "peers"
    python = _venv_python(venv)
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()
    stamp = venv / _STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == wanted:
        print(f"peers: virtualenv ready at {venv}", flush=True)
    else:
        started = time.monotonic()
        if not python.exists():
            print(f"peers: creating virtualenv {venv} ...", flush=True)
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        print(f"peers: installing {REQUIREMENTS.name} (deid, dicognito, dicom-anonymizer, dcmanon, deid-data) ...",
              flush=True)
        stamp.unlink(missing_ok=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        "--progress-bar", "off", "-r", str(REQUIREMENTS)], check=True)
        subprocess.run([str(python), "-m", "pip", "check", "--disable-pip-version-check"], check=True,
                       stdout=subprocess.DEVNULL)
        stamp.write_text(wanted + "\n")
        print(f"peers: installed in {time.monotonic() - started:.0f} s", flush=True)
    return {name: venv for name in [*PEERS, "deid-data"]}


# --- files ------------------------------------------------------------------------------------------


def input_files(input_dir: Path) -> list[Path]:
    """The files under ``input_dir`` (recursively) that a run processes, as sorted relative paths.

    Hidden names (a part starting with ".", such as a corpus's ``.complete`` marker) are left out.
    """
    input_dir = Path(input_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(input_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                found.append((Path(dirpath) / name).relative_to(input_dir))
    return sorted(found)


def missing_outputs(input_dir: Path, output_dir: Path) -> list[Path]:
    """The inputs (relative paths, as ``input_files`` lists them) that have no file in ``output_dir``."""
    output_dir = Path(output_dir)
    return [rel for rel in input_files(input_dir) if not (output_dir / rel).is_file()]


# --- running a peer ---------------------------------------------------------------------------------


def cpu_pin_prefix(workers: int) -> list[str]:
    """``["taskset", "-c", "CPUS"]`` binding a command to ``workers`` CPUs, or ``[]`` where ``taskset``
    is missing or ``workers`` is not below the CPUs this process may use (nothing to restrict)."""
    taskset = shutil.which("taskset")
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if not taskset or workers >= len(cpus):
        return []
    return [taskset, "-c", ",".join(str(c) for c in cpus[:workers])]


def _shards(input_dir: Path, files: list[Path], workers: int) -> list[list[Path]]:
    """Split ``files`` into ``workers`` lists of about the same number of bytes (largest first into the
    lightest shard), each kept in path order."""
    n = max(1, min(workers, len(files)))
    heap = [(0, i) for i in range(n)]
    shards: list[list[Path]] = [[] for _ in range(n)]
    sizes = {rel: (input_dir / rel).stat().st_size for rel in files}
    for rel in sorted(files, key=lambda r: (-sizes[r], r)):
        load, i = heapq.heappop(heap)
        shards[i].append(rel)
        heapq.heappush(heap, (load + sizes[rel], i))
    return [sorted(s) for s in shards if s]


@dataclass
class PeerRun:
    """What one ``run_peer_detailed`` call did."""

    peer: str
    workers: int
    files: int  # inputs
    bytes: int  # bytes of the inputs
    seconds: float  # wall time, first process start to last process end
    failed: dict[str, str] = field(default_factory=dict)  # relative path -> error the tool raised (or the crash)
    missing: list[Path] = field(default_factory=list)  # inputs with no output file
    crashes: int = 0  # worker processes that died and were started again on the rest of their shard

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


def _run_shard(cmd_prefix: list[str], args: list[str], shard: list[Path], workdir: Path, index: int,
               env: Mapping[str, str], failed: dict[str, str], crashes: list[int], log_dir: Path | None) -> None:
    """Run the worker on ``shard``; where it dies, start it again on the files after the one it died on."""
    todo = [rel.as_posix() for rel in shard]
    attempt = 0
    while todo:
        list_file = workdir / f"shard-{index}-{attempt}.txt"
        progress_file = workdir / f"shard-{index}-{attempt}.progress"
        list_file.write_text("".join(f"{rel}\n" for rel in todo), "utf-8")
        log_path = (log_dir or workdir) / f"shard-{index}-{attempt}.log"
        with log_path.open("wb") as log:
            proc = subprocess.run([*cmd_prefix, *args, str(list_file), str(progress_file)], stdout=log,
                                  stderr=subprocess.STDOUT, env=dict(env), check=False)
        started: str | None = None
        done: set[str] = set()
        if progress_file.exists():
            for line in progress_file.read_text("utf-8").splitlines():
                kind, _, rest = line.partition(" ")
                if kind == "START":
                    started = rest
                elif kind == "OK":
                    done.add(rest)
                elif kind == "FAIL":
                    rel, _, message = rest.partition("\t")
                    failed[rel] = message
                    done.add(rel)
        if proc.returncode == 0 and done.issuperset(todo):
            return
        crashes.append(1)
        tail = log_path.read_text("utf-8", "replace")[-300:].strip().replace("\n", " | ")
        if started is None or started in done:  # died before its first file or between files
            if started is None and attempt > 0:
                for rel in todo:
                    failed[rel] = f"worker exited with {proc.returncode} before starting: {tail}"
                return
            died_on = None
        else:
            died_on = started
            failed[died_on] = f"worker died (exit {proc.returncode}) on this file: {tail}"
        todo = [rel for rel in todo if rel not in done and rel != died_on]
        attempt += 1


def run_peer_detailed(name: str, input_dir: Path, output_dir: Path, *, workers: int, venvs: Mapping[str, Path],
                      log_dir: Path | None = None) -> PeerRun:
    """De-identify every file under ``input_dir`` with peer ``name`` into ``output_dir`` (same relative
    paths), with ``workers`` processes at once (1: one process bound to one core).

    ``output_dir`` is emptied first. ``log_dir``, where given, keeps each worker's output (the tools'
    messages and the tracebacks of failed files); otherwise they go to a temporary folder.
    """
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; one of {', '.join(PEERS)}")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    input_dir = Path(input_dir).resolve()
    output_dir = Path(output_dir).resolve()
    if output_dir == input_dir or input_dir in output_dir.parents or output_dir in input_dir.parents:
        raise ValueError("output_dir and input_dir must not contain each other (output_dir is emptied first)")
    python = _venv_python(Path(venvs[name]))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True)
    if log_dir is not None:
        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
    files = input_files(input_dir)
    total_bytes = sum((input_dir / rel).stat().st_size for rel in files)
    shards = _shards(input_dir, files, workers)
    # One seed for all shards: dicognito's pseudonyms (and shifted dates) then agree across shards, as
    # they would in one process. A fresh one per run, as dicognito makes when none is given.
    seed = secrets.token_hex(16)
    args = [str(python), str(WORKER), name, str(input_dir), str(output_dir)]
    tail_args = ["--seed", seed]
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    failed: dict[str, str] = {}
    crashes: list[int] = []
    prefix = cpu_pin_prefix(workers)
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as tmp:
        workdir = Path(tmp)
        threads = []
        # The worker takes LIST_FILE PROGRESS_FILE last; --seed goes before them.
        started = time.perf_counter()
        for index, shard in enumerate(shards):
            thread = threading.Thread(target=_run_shard, args=(prefix, [*args, *tail_args], shard, workdir, index, env,
                                                               failed, crashes, log_dir))
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - started
    if files and len(failed) == len(files) and all(m.startswith("worker exited") for m in failed.values()):
        # Not a result for the benchmark: the tool never ran (a broken virtualenv, say).
        raise RuntimeError(f"{name}: no worker could start: {next(iter(failed.values()))}")
    return PeerRun(peer=name, workers=workers, files=len(files), bytes=total_bytes, seconds=seconds, failed=failed,
                   missing=missing_outputs(input_dir, output_dir), crashes=len(crashes))


def run_peer(name: str, input_dir: Path, output_dir: Path, *, workers: int, venvs: Mapping[str, Path]) -> float:
    """``run_peer_detailed`` returning only the wall seconds; ``missing_outputs(input_dir, output_dir)``
    then counts the files the tool did not write."""
    return run_peer_detailed(name, input_dir, output_dir, workers=workers, venvs=venvs).seconds


# --- sample files -----------------------------------------------------------------------------------


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def _readable_dicom(path: Path, *, dicomdir: bool = True) -> bool:
    """Whether pydicom (Imagebank's) reads ``path`` as a DICOM file (with its "DICM" preamble) down to
    the last element, nested ones included (and, without ``dicomdir``, whether it is not a DICOMDIR)."""
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(path)
            for element in dataset.iterall():
                _ = element.value
    # pydicom raises many kinds of error on the deliberately broken files: any of them means "skip".
    except Exception:  # noqa: BLE001
        return False
    return dicomdir or dataset.file_meta.get("MediaStorageSOPClassUID") != MEDIA_STORAGE_DIRECTORY


def _flat_name(prefix: str, rel: Path) -> str:
    name = "-".join([prefix, *rel.parts])
    return name if name.lower().endswith(".dcm") else name + ".dcm"


def _deid_data_root(venvs: Mapping[str, Path]) -> Path:
    out = subprocess.run([str(_venv_python(Path(venvs["deid-data"]))), "-c",
                          "import deid_data, os; print(os.path.dirname(deid_data.__file__))"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip()) / "data"


def sample_files(dest: Path, *, venv_base: Path = DEFAULT_VENV_BASE, include_zipped: bool = True,
                 include_dicomdir: bool = True) -> list[Path]:
    """Copy the mixed sample files that pip packages ship into ``dest`` (flat, unique names), and
    return their paths.

    - pydicom's test files from Imagebank's own pydicom (``pydicom.data.get_testdata_files()``, only
      those inside the installed package: nothing that pydicom would fetch from the internet),
      named ``pydicom-<path>.dcm``;
    - deid-data's files from the peers' virtualenv (made with ``ensure_peer_venvs(venv_base)``),
      named ``deid-data-<path>.dcm``; with ``include_zipped``, also the DICOM files inside its zip
      files (two ultrasound cines, 13 MB and 104 MB).

    Files that are not DICOM, or that pydicom cannot read to the end (pydicom ships deliberately broken
    ones), are skipped; how many is printed. pydicom's 9 DICOMDIR files (Media Storage Directory, with
    patient names in their directory records) are kept unless ``include_dicomdir`` is false.
    """
    import pydicom.data

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: dict[str, int] = {"pydicom": 0, "deid-data": 0}

    def take(prefix: str, src: Path, rel: Path) -> None:
        target = dest / _flat_name(prefix, rel)
        if not _readable_dicom(src, dicomdir=include_dicomdir):
            skipped[prefix] += 1
            return
        if target in written:
            raise RuntimeError(f"two sample files map to {target.name}")
        if not (target.exists() and target.stat().st_size == src.stat().st_size):
            shutil.copyfile(src, target)
        written.append(target)

    pydicom_root = (Path(pydicom.data.__file__).parent / "test_files").resolve()
    for name in sorted(pydicom.data.get_testdata_files()):
        path = Path(name).resolve()
        if path.is_file() and path.is_relative_to(pydicom_root):
            take("pydicom", path, path.relative_to(pydicom_root))

    deid_root = _deid_data_root(ensure_peer_venvs(venv_base))
    for path in sorted(p for p in deid_root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = path.relative_to(deid_root)
        if path.suffix == ".zip" and include_zipped:
            with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
                for member in archive.namelist():
                    if member.endswith("/"):
                        continue
                    extracted = Path(archive.extract(member, tmp))
                    take("deid-data", extracted, rel.with_suffix("") / member)
        elif path.suffix in (".py", ".md", ".pyc", ".zip"):
            continue
        else:
            take("deid-data", path, rel)

    counts = {prefix: sum(1 for p in written if p.name.startswith(prefix + "-")) for prefix in skipped}
    why = "not DICOM or unreadable" + ("" if include_dicomdir else ", or DICOMDIR")
    print(f"sample files: {counts['pydicom']} from pydicom {pydicom.__version__} ({skipped['pydicom']} skipped: "
          f"{why}), {counts['deid-data']} from deid-data {VERSIONS['deid-data']} "
          f"({skipped['deid-data']} skipped) into {dest}", flush=True)
    return written


# --- smoke run --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run every peer (or those named) on one folder, with 1 worker and with ``--workers``; print files/s."""
    import argparse

    parser = argparse.ArgumentParser(description="Run the de-identification peers alone on one folder.")
    parser.add_argument("input_dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "peers-smoke")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer", action="append", choices=PEERS, help="only this peer (repeatable)")
    args = parser.parse_args(argv)
    venvs = ensure_peer_venvs()
    for name in args.peer or PEERS:
        for workers in sorted({1, args.workers}):
            run = run_peer_detailed(name, args.input_dir, args.out / f"{name}-w{workers}", workers=workers, venvs=venvs,
                                    log_dir=args.out / "logs" / f"{name}-w{workers}")
            print(f"{name:17s} {LANGUAGE[name]:6s} workers={workers:<2d} {run.files} files in {run.seconds:6.2f} s: "
                  f"{run.files_per_s:7.1f} files/s {run.mb_per_s:6.1f} MB/s; failed {len(run.failed)}, "
                  f"no output {len(run.missing)}, worker crashes {run.crashes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
