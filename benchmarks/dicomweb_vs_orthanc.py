"""DICOMweb: Imagebank versus Orthanc + its DICOMweb plugin, same client, same corpus, one run.

Both archives start fresh on loopback with their embedded defaults (Imagebank: SQLite + files via
``imagebank serve``; Orthanc: Debian packages ``orthanc`` and ``orthanc-dicomweb``, default SQLite index)
and run side by side; every measure is taken in alternating turns (an eighth of the STOW corpus, a round
of queries), each archive going first in every other round (A B, B A, ...), so the phases of a shared
virtual machine and whatever the previous turn left behind fall on both alike; after each STOW-RS turn the
page cache is written back (``os.sync``, untimed) so that no archive's deferred writes land in the other's
timings.
The same Python client measures (http.client for STOW-RS, httpx for the rest):

- STOW-RS: the corpus in requests of 20 instances from 2 client threads, each keeping its connection open
  (instances/s), after one untimed request to warm each archive up;
- QIDO-RS p50/p95: PatientID, AccessionNumber, a date range, ModalitiesInStudy, a name wildcard, the
  series of one study and the instances of its largest series;
- with ``--studies N``: N more studies (one header-only instance each, from the synthetic hospital) are
  loaded into both, and the QIDO-RS queries are timed again over the larger index;
- WADO-RS: the largest study as multipart, 12 times each (median MB/s and time to first byte), its
  series metadata, and a rendered frame. Prints a table with the ratios, and which queries the two
  archives answered with a different number of matches (their latencies do not compare); asserts nothing.

    python benchmarks/dicomweb_vs_orthanc.py [--slices 5000] [--queries 50] [--studies 100000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pydicom

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from dimse_vs_orthanc import free_port, wait_for  # noqa: E402
from ingest import corpus, study_corpus  # noqa: E402 - the shared corpus generators

ORTHANC_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
#: Retrievals of the whole study per archive, in alternating turns (the median is reported).
WADO_ROUNDS = 12
BOUNDARY = "benchmarkboundary"
#: CT slices each archive stores, untimed, before its first timed STOW-RS turn (one request).
STOW_WARMUP = 20
#: Both archives are plain HTTP on loopback: one TLS context for every client (httpx would otherwise load the
#: system CA bundle for each new client, about 20 ms of the client's CPU that both servers then lack).
_TLS = httpx.create_ssl_context()


class Target:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], root: str, headers: dict[str, str]) -> None:
        self.name, self.proc, self.root, self.headers = name, proc, root, headers

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.root, headers=self.headers, timeout=300, verify=_TLS)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def start_imagebank(work: Path) -> Target:
    data, http = work / "imagebank", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEBANK_")}
    env["IMAGEBANK_DICOM__ENABLED"] = "false"
    # BENCH_IMAGEBANK_<SECTION>__<KEY> sets IMAGEBANK_<SECTION>__<KEY> for the benchmarked server only.
    env.update({k[len("BENCH_"):]: v for k, v in os.environ.items() if k.startswith("BENCH_IMAGEBANK_")})
    cli = [sys.executable, "-m", "imagebank.cli", "--data", str(data)]
    subprocess.run([*cli, "users", "add", "bench", "--role", "service", "--password-stdin"], input=b"bench password 1\n",
                   env=env, check=True, capture_output=True)
    token = subprocess.run([*cli, "tokens", "create", "bench", "bench"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([*cli, "serve", "--port", str(http)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{http}/healthz", proc)
    return Target("Imagebank", proc, f"http://127.0.0.1:{http}/dicom-web", {"Authorization": f"Bearer {token}"})


def start_orthanc(work: Path) -> Target:
    http = free_port()
    root = work / "orthanc"
    root.mkdir(parents=True, exist_ok=True)
    config = {"Name": "bench", "DicomServerEnabled": False, "HttpPort": http,
              "StorageDirectory": str(root / "storage"), "IndexDirectory": str(root / "index"),
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [ORTHANC_PLUGIN],
              "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (root / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(f"http://127.0.0.1:{http}/system", proc)
    return Target("Orthanc 1.10", proc, f"http://127.0.0.1:{http}/dicom-web", {})


def stow_bodies(files: list[Path], batch: int) -> list[bytes]:
    """The multipart/related request bodies of ``files``, ``batch`` instances each."""
    return [b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f.read_bytes() + b"\r\n"
                     for f in files[i:i + batch]) + f"--{BOUNDARY}--\r\n".encode()
            for i in range(0, len(files), batch)]


def stow(target: Target, files: list[Path], batch: int = 20, threads: int = 2) -> float:
    """Seconds to store ``files`` in requests of ``batch`` instances from ``threads`` client threads.

    The bodies are built before the clock starts, and each client thread keeps one HTTP/1.1 connection open
    for all its requests (as a PACS router or dicomweb-client's session does), through the standard library's
    http.client, which sends a body without copying it. The client shares the 2 CPUs with the server under
    test: measured, httpx building each body, opening a connection per request and copying each body twice
    on its way to the socket took 0.9-1.2 ms of CPU per CT slice, which neither server then had.
    """
    bodies = stow_bodies(files, batch)
    url = urlsplit(target.root)
    if url.scheme != "http":
        raise SystemExit(f"the STOW-RS client speaks plain HTTP on loopback, not {url.scheme}")
    headers = {**target.headers, "Accept": "application/dicom+json",
               "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    per_thread, opened = threading.local(), []

    def send(body: bytes) -> None:
        connection = getattr(per_thread, "connection", None)
        if connection is None:
            connection = per_thread.connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port,
                                                                            timeout=300)
            opened.append(connection)
        connection.request("POST", f"{url.path}/studies", body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"{target.name} STOW failed: {response.status} {answer[:300]!r}")

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(send, bodies))
        return time.perf_counter() - start
    finally:
        for connection in opened:
            connection.close()


def timed(call: Callable[[], httpx.Response], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = call()
        times.append(time.perf_counter() - start)
        if response.status_code not in (200, 204):
            raise SystemExit(f"query failed: {response.status_code} {response.request.url} {response.text[:200]}")
    return times


def ttfb_and_rate(target: Target, path: str, accept: str) -> tuple[float, float, float]:
    with target.client() as client:
        start = time.perf_counter()
        with client.stream("GET", path, headers={"Accept": accept}) as response:
            first = None
            size = 0
            for chunk in response.iter_raw():
                if first is None:
                    first = time.perf_counter() - start
                size += len(chunk)
        total = time.perf_counter() - start
    return first or total, total, size / 1e6


def in_turn(targets: list[Target], round_: int) -> list[Target]:
    """The targets in the order of round ``round_``: A B, then B A, so each goes first equally often."""
    return targets if round_ % 2 == 0 else targets[::-1]


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 2 else values[0] * 1000


def interleaved(targets: list[Target], results: dict[str, dict[str, float]], label: str,
                request: Callable[[httpx.Client], httpx.Response], repeat: int, rounds: int = 6,
                p95: bool = True) -> None:
    """p50/p95 of ``request`` on each target, asked in alternating rounds: the two archives run side by side
    and take turns, so a slower or faster phase of a shared machine falls on both alike."""
    clients = {t.name: t.client() for t in targets}
    times: dict[str, list[float]] = {t.name: [] for t in targets}
    try:
        for t in targets:
            warm = request(clients[t.name])
            results[t.name][f"{label} matches"] = len(warm.json()) if warm.status_code == 200 and \
                warm.headers.get("content-type", "").startswith("application/dicom+json") else 0
        per_round = max(1, repeat // rounds)
        for i in range(rounds):
            for t in in_turn(targets, i):
                times[t.name] += timed(lambda t=t: request(clients[t.name]), per_round)
    finally:
        for client in clients.values():
            client.close()
    for t in targets:
        results[t.name][f"{label} p50 ms"] = p(times[t.name], 50)
        if p95:
            results[t.name][f"{label} p95 ms"] = p(times[t.name], 95)


def query_latencies(targets: list[Target], results: dict[str, dict[str, float]], queries: int, suffix: str,
                    study: str, sample: pydicom.Dataset, series: str, instances: int) -> None:
    """The usual QIDO-RS queries, and how many matches each archive answered (to compare the answers)."""
    name_prefix = quote(str(sample.PatientName).split("^")[0][:3], safe="") + "*"
    year = sample.StudyDate[:4]
    qido: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "PatientID": lambda c: c.get("/studies", params={"PatientID": sample.PatientID}),
        "AccessionNumber": lambda c: c.get("/studies", params={"AccessionNumber": sample.AccessionNumber}),
        "date range": lambda c: c.get("/studies", params={"StudyDate": f"{year}0101-{year}1231", "limit": "100"}),
        "ModalitiesInStudy": lambda c: c.get("/studies", params={"ModalitiesInStudy": "CT", "limit": "100"}),
        # The `*` goes into the URL as it is (RFC 3986 lets a query hold it): Orthanc's DICOMweb plugin does not
        # percent-decode query values, so to it `PatientName=Oka%2A` (what httpx's params= sends) asks for the
        # literal name "Oka%2A" and matches nothing, a query that does not compare with Imagebank's.
        "name wildcard": lambda c: c.get(f"/studies?PatientName={name_prefix}&limit=100"),
        "series of a study": lambda c: c.get(f"/studies/{study}/series"),
        f"instances of a series ({instances})": lambda c: c.get(f"/studies/{study}/series/{series}/instances"),
    }
    for label, request in qido.items():
        interleaved(targets, results, f"QIDO {label}{suffix}", request, queries)


def stow_alternately(targets: list[Target], files: list[Path], results: dict[str, dict[str, float]], label: str,
                     batch: int = 20, threads: int = 2, parts: int = 8, warmup: list[Path] | None = None) -> None:
    """Each archive receives the files in ``parts`` turns, alternating with the other, after ``warmup`` (untimed:
    measured, the first turn of a fresh server and client ran at two thirds of the rate of the later ones, and
    that penalty fell on whichever archive went first)."""
    for t in targets:
        if warmup:
            stow(t, warmup, batch=batch, threads=threads)
    seconds = {t.name: 0.0 for t in targets}
    for i in range(parts):
        chunk = files[i * len(files) // parts:(i + 1) * len(files) // parts]
        # Read once, untimed, so that the first archive of the round does not read the files from disk while
        # the second gets them from the page cache (measured: 20-40% slower in whichever turn came first).
        for f in chunk:
            f.read_bytes()
        for t in in_turn(targets, i):
            seconds[t.name] += stow(t, chunk, batch=batch, threads=threads)
            # What it left in the page cache (Orthanc writes through it; Imagebank's blobs are on disk when it
            # answers) is written back now, not during the other's turn or the latencies timed next.
            os.sync()
    for t in targets:
        results[t.name][label] = len(files) / seconds[t.name]


def measure(targets: list[Target], files: list[Path], queries: int,
            extra: list[Path] | None = None) -> dict[str, dict[str, float]]:
    """``files[:STOW_WARMUP]`` warm each archive up; the rate is that of the others."""
    results: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    stow_alternately(targets, files[STOW_WARMUP:], results, "STOW-RS inst/s", warmup=files[:STOW_WARMUP])
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for ds in headers:
        by_study.setdefault(ds.StudyInstanceUID, []).append(ds)
    study = max(by_study, key=lambda uid: len(by_study[uid]))
    sample = by_study[study][0]
    by_series: dict[str, int] = {}
    for ds in by_study[study]:
        by_series[ds.SeriesInstanceUID] = by_series.get(ds.SeriesInstanceUID, 0) + 1
    series = max(by_series, key=lambda uid: by_series[uid])
    query_latencies(targets, results, queries, "", study, sample, series, by_series[series])
    if extra:
        # The same queries over an index of many more studies (one header-only instance each).
        stow_alternately(targets, extra, results, f"STOW-RS of {len(extra)} small instances inst/s",
                         batch=50, threads=4)
        query_latencies(targets, results, queries, f" @{len(extra) + len(by_study)} studies", study, sample,
                        series, by_series[series])
    interleaved(targets, results, "series metadata", lambda c: c.get(f"/studies/{study}/series/{series}/metadata"),
                10, p95=False)
    instance = by_study[study][len(by_study[study]) // 2]
    frame_url = f"/studies/{study}/series/{instance.SeriesInstanceUID}/instances/{instance.SOPInstanceUID}/frames/1/rendered"
    interleaved(targets, results, "rendered frame", lambda c: c.get(frame_url, headers={"Accept": "image/jpeg"}), 10,
                p95=False)
    samples: dict[str, list[tuple[float, float, float]]] = {t.name: [] for t in targets}
    # 12 rounds, not 4: on one warm machine, single retrievals of the 131 MB study ranged from 460 to
    # 1,890 MB/s for either archive, and Imagebank's median was 942 MB/s over 4 rounds in one run and
    # 1,466 over 12 within the same quarter of an hour.
    for i in range(WADO_ROUNDS):
        for t in in_turn(targets, i):
            samples[t.name].append(ttfb_and_rate(
                t, f"/studies/{study}", 'multipart/related; type="application/dicom"; transfer-syntax=*'))
    for t in targets:
        results[t.name]["study MB"] = samples[t.name][-1][2]
        results[t.name]["WADO-RS study MB/s"] = statistics.median(mb / total for _, total, mb in samples[t.name])
        results[t.name]["WADO-RS TTFB ms"] = statistics.median(first for first, _, _ in samples[t.name]) * 1000
    return results


LOWER_IS_BETTER = ("ms",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--studies", type=int, default=0,
                        help="then load this many more studies (one header-only instance each) and query again")
    args = parser.parse_args()
    if shutil.which("Orthanc") is None or not Path(ORTHANC_PLUGIN).exists():
        raise SystemExit("Orthanc with DICOMweb not found: apt-get install orthanc orthanc-dicomweb")
    files = sorted(corpus(args.slices + STOW_WARMUP, metadata_only=False).rglob("*.dcm"))
    megabytes = sum(f.stat().st_size for f in files) / 1e6
    print(f"corpus: {len(files)} CT slices ({STOW_WARMUP} of them to warm up), {megabytes:.0f} MB; "
          f"{os.cpu_count()} CPUs")
    extra = sorted(study_corpus(args.studies).glob("*.dcm")) if args.studies else None
    (HERE / "out").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=HERE / "out") as work:
        targets: list[Target] = []
        try:
            for start in (start_imagebank, start_orthanc):  # each in its own folder under work
                targets.append(start(Path(work)))
            columns = measure(targets, files, args.queries, extra)
        finally:
            for target in targets:
                target.stop()
    ours, theirs = columns["Imagebank"], columns["Orthanc 1.10"]
    print("\n| measure | Imagebank | Orthanc 1.10 | ratio (better > 1) |")
    print("|---|---|---|---|")
    disagree = [f"{key.removeprefix('QIDO ')[:-8]} (Imagebank {ours[key]:.0f}, {theirs.get(key, float('nan')):.0f})"
                for key in ours if key.endswith(" matches") and ours[key] != theirs.get(key)]
    for key in ours:
        if key in ("study MB",) or key.endswith(" matches"):
            continue
        a, b = ours[key], theirs.get(key, float("nan"))
        ratio = (b / a) if key.endswith(LOWER_IS_BETTER) else (a / b)
        print(f"| {key} | {a:.1f} | {b:.1f} | {ratio:.2f} |")
    print(f"(study retrieved: {ours['study MB']:.0f} MB; the two archives ran side by side, every measure taken "
          "in alternating turns)")
    if disagree:
        print("Different answers (number of matches), so those latencies do not compare: " + "; ".join(disagree))


if __name__ == "__main__":
    main()
