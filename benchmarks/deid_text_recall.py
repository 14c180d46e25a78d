"""Free-text scrubber: recall per category, precision and speed on labelled synthetic reports.

Generates N labelled reports (:mod:`imagebank.synth.reports`: every identifier written into a text is
labelled with its span and category, and the patient's record is known), scrubs each with
:func:`imagebank.deid.text.scrub_text` given the patient's known identifiers and a date shift, and prints

- per category: spans, spans caught (every character of the span covered by findings) and recall;
- overall recall, and precision over characters (flagged characters that are inside a labelled span);
- reports/s and characters/s of the scrubber alone (generation is not timed), on one core.

Prints figures only; it asserts nothing.

    python benchmarks/deid_text_recall.py [--reports 5000] [--seed 0] [--misses 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections import Counter

from imagebank.deid.text import CATEGORIES, scrub_text
from imagebank.synth.reports import LabelledReport, labelled_reports


def covered(findings_spans: list[tuple[int, int]], length: int) -> bytearray:
    mask = bytearray(length)
    for start, end in findings_spans:
        mask[start:end] = b"\x01" * (end - start)
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--misses", type=int, default=10, help="print up to this many missed spans")
    args = parser.parse_args()

    reports: list[LabelledReport] = list(labelled_reports(args.reports, args.seed))
    chars = sum(len(r.text) for r in reports)
    print(f"machine: {os.cpu_count()} CPUs; {len(reports)} labelled reports, {chars / len(reports):.0f} characters "
          f"each on average (seed {args.seed})")

    def shift(day: dt.date) -> dt.date:
        return day - dt.timedelta(days=400)

    started = time.perf_counter()
    results = [scrub_text(r.text, r.known, shift=shift) for r in reports]
    seconds = time.perf_counter() - started

    spans, caught = Counter[str](), Counter[str]()
    flagged = flagged_in_spans = 0
    misses: list[str] = []
    for report, result in zip(reports, results, strict=True):
        mask = covered([(f.start, f.end) for f in result.findings], len(report.text))
        labelled = covered([(s, e) for s, e, _ in report.spans], len(report.text))
        flagged += sum(mask)
        flagged_in_spans += sum(a & b for a, b in zip(mask, labelled, strict=True))
        for start, end, category in report.spans:
            spans[category] += 1
            if all(mask[start:end]):
                caught[category] += 1
            elif len(misses) < args.misses:
                line_start = report.text.rfind("\n", 0, start) + 1
                line_end = report.text.find("\n", end)
                misses.append(f"  {category:<12} {report.text[start:end]!r} in {report.text[line_start:line_end]!r}")

    print(f"\n| {'category':<12} | {'spans':>7} | {'caught':>7} | {'recall':>7} |")
    print(f"|{'-' * 14}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for category in CATEGORIES:
        if spans[category]:
            print(f"| {category:<12} | {spans[category]:>7} | {caught[category]:>7} | "
                  f"{caught[category] / spans[category]:>7.4f} |")
    total, total_caught = sum(spans.values()), sum(caught.values())
    print(f"| {'all':<12} | {total:>7} | {total_caught:>7} | {total_caught / total:>7.4f} |")
    print(f"\nprecision (flagged characters inside a labelled span): {flagged_in_spans / max(flagged, 1):.4f} "
          f"({flagged - flagged_in_spans} of {flagged} flagged characters outside any span)")
    print(f"speed: {len(reports) / seconds:,.0f} reports/s, {chars / seconds / 1e6:.2f} M characters/s "
          f"({seconds:.2f} s for {len(reports)} reports, one core)")
    if misses:
        print(f"\nfirst {len(misses)} missed spans:")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
