"""C-STORE throughput and C-FIND latency: Imagebank versus Orthanc, same client, same corpus.

dcmtk's ``storescu`` sends the generated corpus of CT slices (512x512, 16-bit; see ingest.py) into a
fresh Imagebank (``imagebank serve``, SQLite + files) and a fresh Orthanc (Debian package, default
SQLite index), with 1 and 4 parallel associations. Then 50 study-level C-FINDs by PatientID are timed
against each (pynetdicom as the client for both). Prints a table; asserts nothing.

    python benchmarks/dimse_vs_orthanc.py [--slices 5000] [--queries 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ingest import corpus  # noqa: E402 - the shared corpus generator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {url}") from None
            time.sleep(0.3)


def start_imagebank(work: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    dicom, http = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env.update(IMAGEBANK_DICOM__PORT=str(dicom), IMAGEBANK_DICOM__PEERS=json.dumps(
        [{"ae_title": "STORESCU", "host": "127.0.0.1", "permissions": ["archive:write"]},
         {"ae_title": "BENCH", "host": "127.0.0.1", "permissions": ["archive:read"]}]))
    proc = subprocess.Popen([sys.executable, "-m", "imagebank.cli", "--data", str(work / "imagebank"), "serve",
                             "--port", str(http)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{http}/healthz", proc)
    return proc, dicom, "IMAGEBANK"


def start_orthanc(work: Path) -> tuple[subprocess.Popen[bytes], int, str]:
    dicom, http = free_port(), free_port()
    root = work / "orthanc"
    root.mkdir(parents=True, exist_ok=True)
    config = {"Name": "bench", "DicomAet": "ORTHANC", "DicomPort": dicom, "HttpPort": http,
              "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
              "Plugins": [], "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True}
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{http}/system", proc)
    return proc, dicom, "ORTHANC"


def store(files: list[Path], port: int, aec: str, parallel: int) -> float:
    chunks = [files[i::parallel] for i in range(parallel)]
    started = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", aec, "127.0.0.1", str(port), *map(str, chunk)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for chunk in chunks]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"storescu failed against {aec}: {err.decode()[-500:]}")
    return time.monotonic() - started


def find_latencies(port: int, aec: str, patient_ids: list[str]) -> list[float]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=aec)
    times = []
    for pid in patient_ids:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = pid
        ds.StudyInstanceUID = ""
        ds.StudyDate = ""
        ds.ModalitiesInStudy = ""
        started = time.perf_counter()
        matches = [r for s, r in assoc.send_c_find(ds, StudyRootQueryRetrieveInformationModelFind) if r is not None]
        times.append(time.perf_counter() - started)
        assert matches, f"no match for {pid} at {aec}"
    assoc.release()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--only", choices=["imagebank", "orthanc"], help="measure one archive only")
    args = parser.parse_args()
    for tool in ("storescu", "Orthanc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install dcmtk orthanc")
    files = sorted(corpus(args.slices, metadata_only=False).rglob("*.dcm"))
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    patient_ids = sorted({f.parent.name for f in files})
    print(f"corpus: {len(files)} CT slices, {megabytes:.0f} MB, {len(patient_ids)} patients; {os.cpu_count()} CPUs")
    rows = []
    targets = [("Imagebank", start_imagebank), ("Orthanc 1.10", start_orthanc)]
    for name, start in [t for t in targets if args.only is None or t[0].lower().startswith(args.only)]:
        for parallel in (1, 4):
            with tempfile.TemporaryDirectory(dir=HERE / "out") as work:
                proc, port, aec = start(Path(work))
                try:
                    seconds = store(files, port, aec, parallel)
                    latencies = find_latencies(port, aec, (patient_ids * args.queries)[: args.queries]) \
                        if parallel == 1 else []
                finally:
                    proc.terminate()
                    proc.wait(60)
            rows.append((name, parallel, seconds, latencies))
            print(f"  {name}, {parallel} association(s): {len(files) / seconds:.0f} inst/s", flush=True)
    print("\n| archive | associations | seconds | inst/s | MB/s | C-FIND p50 ms | C-FIND p95 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, parallel, seconds, lat in rows:
        p50 = f"{statistics.median(lat) * 1000:.1f}" if lat else ""
        p95 = f"{statistics.quantiles(lat, n=20)[18] * 1000:.1f}" if len(lat) >= 20 else ""
        print(f"| {name} | {parallel} | {seconds:.1f} | {len(files) / seconds:.0f} | {megabytes / seconds:.1f} | {p50} | {p95} |")


if __name__ == "__main__":
    main()
