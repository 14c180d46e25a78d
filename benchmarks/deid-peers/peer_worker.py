"""Run one open-source de-identification peer over a list of files (runs inside the peers' virtualenv).

    python peer_worker.py TOOL INPUT_ROOT OUTPUT_ROOT LIST_FILE PROGRESS_FILE [--seed SEED]

TOOL is one of deid, dicognito, dicom-anonymizer, dcmanon. LIST_FILE holds relative paths (UTF-8, one
a line); each INPUT_ROOT/rel is de-identified with the tool's default profile into OUTPUT_ROOT/rel, one
file at a time, in this process (one core). Started by benchmarks/deid_peers.py, once per shard.

Each tool is driven through the same per-file call that its own command line makes, because none of
the command lines can do what a side-by-side benchmark needs (outputs named like their inputs, a
failing file skipped rather than ending the run):

- deid:             ``deid --outfolder OUT identifiers --action all --input IN`` calls get_identifiers()
                    then replace_identifiers() with the default recipe (deid.dicom); it writes every
                    output under its base name into one flat folder (same-named files in different
                    folders are dropped: "already exists, not writing"), and one unreadable file ends the run.
- dicognito:        ``python -m dicognito -o OUT IN`` (the ``dicognito`` console script of 0.19.0 is
                    broken: "main() missing 1 required positional argument") names outputs by the new
                    SOP Instance UID and aborts on the first error; here the same Anonymizer and
                    BurnedInAnnotationGuard (defaults: if-yes, warn) and the same save_as call are used.
                    All shards get one --seed, so that pseudonyms agree across shards.
- dicom-anonymizer: ``dicom-anonymizer IN OUT`` only looks at the top level of IN, only at files with the
                    "DICM" preamble, needs OUT to exist, and aborts on the first error; here
                    anonymize_dicom_file(in, out, {}, delete_private_tags=True) is its per-file call.
- dcmanon:          the PyPI package is only a Python binding (pyo3) of the Rust library, no command
                    line (the Rust CLI is ``cargo install dcmanon``); Anonymizer().anonymize(path) returns
                    the bytes of the de-identified file. It does not release the GIL: one core a process.

PROGRESS_FILE gets "START rel" before each file and "OK rel" or "FAIL rel<TAB>error" after it, flushed,
so that the parent can go on after a hard crash (a segfault or abort that no except clause sees) and
can report which files failed and why. A file that failed has no output (a partial one is removed).
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

Runner = Callable[[Path, Path], None]


def make_deid(seed: str) -> Runner:
    from deid.dicom import get_identifiers, replace_identifiers

    def run(src: Path, dst: Path) -> None:
        ids = get_identifiers([str(src)])
        replace_identifiers([str(src)], ids=ids, save=True, overwrite=True, output_folder=str(dst.parent))
        written = dst.parent / src.name
        if written != dst:  # deid names the output after the input's base name
            written.replace(dst)

    return run


def make_dicognito(seed: str) -> Runner:
    import pydicom
    from dicognito.anonymizer import Anonymizer
    from dicognito.filters import BurnedInAnnotationGuard

    anonymizer = Anonymizer(seed=seed or None)
    guard = BurnedInAnnotationGuard(BurnedInAnnotationGuard.ASSUME_IF_CHOICES[0], BurnedInAnnotationGuard.IF_FOUND_CHOICES[0])

    def run(src: Path, dst: Path) -> None:
        with pydicom.dcmread(src, force=False) as dataset:
            guard.before_each(dataset)
            anonymizer.anonymize(dataset)
            dataset.save_as(dst, enforce_file_format=True)

    return run


def make_dicom_anonymizer(seed: str) -> Runner:
    from dicomanonymizer.simpledicomanonymizer import anonymize_dicom_file

    def run(src: Path, dst: Path) -> None:
        anonymize_dicom_file(str(src), str(dst), {}, True)

    return run


def make_dcmanon(seed: str) -> Runner:
    from dcmanon import Anonymizer

    anonymizer = Anonymizer()

    def run(src: Path, dst: Path) -> None:
        data = anonymizer.anonymize(str(src))
        dst.write_bytes(data)

    return run


TOOLS: dict[str, Callable[[str], Runner]] = {
    "deid": make_deid,
    "dicognito": make_dicognito,
    "dicom-anonymizer": make_dicom_anonymizer,
    "dcmanon": make_dcmanon,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=sorted(TOOLS))
    parser.add_argument("input_root", type=Path)
    parser.add_argument("output_root", type=Path)
    parser.add_argument("list_file", type=Path)
    parser.add_argument("progress_file", type=Path)
    parser.add_argument("--seed", default="")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    run = TOOLS[args.tool](args.seed)
    relpaths = [line for line in args.list_file.read_text("utf-8").splitlines() if line]
    failed = 0
    with args.progress_file.open("a", encoding="utf-8") as progress:
        for rel in relpaths:
            src = args.input_root / rel
            dst = args.output_root / rel
            progress.write(f"START {rel}\n")
            progress.flush()
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                run(src, dst)
            # Any failure of the tool on one file (pyo3's PanicException is a BaseException) must not
            # end the run: it is recorded, and the file has no output.
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
                failed += 1
                dst.unlink(missing_ok=True)
                message = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("\t", " ")[:500]
                print(f"{args.tool}: {rel}: {message}", file=sys.stderr)
                traceback.print_exc(limit=3, file=sys.stderr)
                progress.write(f"FAIL {rel}\t{message}\n")
            else:
                progress.write(f"OK {rel}\n")
            progress.flush()
    print(f"{args.tool}: {len(relpaths) - failed} written, {failed} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
