"""What the benchmarks share: the figures written to results/ (ignored) and printed; for the
stand-in benchmarks, a run from nothing on their own lab, removed at the end, also on failure."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path

from lab.standin.service import StandInLab


def run_benchmark(
    lab: StandInLab, results: Path, measure: Callable[[dict], None], unprinted: Collection[str]
) -> int:
    """`measure(figures)` on `lab` from nothing; 0, or 1 when it failed or left something."""
    started, figures, status = time.monotonic(), {}, 0
    try:
        lab.down()  # from nothing: what an earlier run left goes first
        measure(figures)
    except Exception as exc:  # noqa: BLE001 - reported with what was measured before it
        figures["failed"] = f"{type(exc).__name__}: {exc}"
        print(f"error: {figures['failed']}", file=sys.stderr)
        status = 1
    finally:
        rest = lab.down()
        if rest:
            figures["left_behind"] = rest
            print("removal left: " + "; ".join(rest), file=sys.stderr)
            status = 1
    figures["benchmark_s"] = round(time.monotonic() - started)
    write_figures(results, figures, unprinted)
    return status


def write_figures(results: Path, figures: dict, unprinted: Collection[str] = ()) -> None:
    """The figures into `results` (JSON) and on stdout, one a line."""
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    for key, value in figures.items():
        if key not in unprinted:
            print(f"{key:42} {value}")
    print(f"written to {results}")
