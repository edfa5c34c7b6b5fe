"""The benchmark's figures: medians over rounds, the ratios, and the issue's targets."""

from __future__ import annotations

import statistics
from math import ceil

TARGETS = {  # figure: (what, bound, how the issue words it)
    "add_one_vs_basebackup": ("add one replica vs raw pg_basebackup (1 GB)", 1.5, "<= 1.5x"),
    "three_vs_one": ("add 3 replicas at once vs 1", 1.5, "<= 1.5x"),
    "no_change_vs_first": ("no-change `up` vs the first `up`", 0.15, "<= 0.15x"),
    "catch_up_after_cut_s": ("catch-up after a 30 s link cut (s)", 5.0, "<= 5 s"),
    "rows_lost": ("rows lost (lag load and link cut, all rounds)", 0, "0"),
}


def spread(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 (nearest rank) and max."""
    ordered = sorted(values) or [0.0]

    def rank(q: float) -> float:
        return ordered[max(0, ceil(q * len(ordered)) - 1)]

    return rank(0.5), rank(0.99), ordered[-1]


def aggregate(rounds: list[dict]) -> dict:
    """Medians over rounds; the worst for maxima and rows lost; all() for checks."""
    out = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        if isinstance(values[0], bool):
            out[key] = all(values)
        elif key.endswith("rows_lost") or "_max_" in key:
            out[key] = max(values)
        else:
            out[key] = statistics.median(values)
    return out


def figures_of(result: dict) -> dict:
    figures = {**aggregate(result["first_up_rounds"]), **aggregate(result["rounds"])}
    figures["no_change_vs_first"] = figures["no_change_up_s"] / figures["first_up_s"]
    # Context for the two ratios the engine's own cost bounds: the same ratios without it.
    floor = figures["engine_floor_up_s"]
    figures["no_change_above_floor_s"] = figures["no_change_up_s"] - floor
    figures["add_one_above_floor_vs_basebackup"] = (figures["add_one_replica_s"] - floor) / figures[
        "raw_basebackup_s"
    ]
    figures["add_one_vs_basebackup"] = figures["add_one_replica_s"] / figures["raw_basebackup_s"]
    figures["three_vs_one"] = figures["add_three_replicas_s"] / figures["add_one_replica_s"]
    # What the machine allows: three raw copies at once vs one.
    figures["raw_three_vs_one"] = figures["raw_three_basebackups_s"] / figures["raw_basebackup_s"]
    figures["rows_lost"] = max(figures["load_rows_lost"], figures["cut_rows_lost"])
    figures["checksums_match"] = figures["load_checksums_match"] and figures["cut_checksums_match"]
    return figures


def target_table(figures: dict) -> tuple[str, dict[str, bool]]:
    """The figures against the issue's targets, as a markdown table."""
    lines = ["| what | figure | target | met? |", "|---|---|---|---|"]
    met = {}
    for key, (what, bound, shown) in TARGETS.items():
        value = figures[key]
        met[key] = value <= bound and (key != "rows_lost" or figures["checksums_match"])
        unit = "x" if "<= 1" in shown or "<= 0" in shown else (" s" if "s" in shown else "")
        number = f"{value:.0f}" if key == "rows_lost" else f"{value:.2f}"
        lines.append(f"| {what} | {number}{unit} | {shown} | {'yes' if met[key] else 'no'} |")
    return "\n".join(lines), met


def show(result: dict, table: str) -> None:
    for key, value in result["median"].items():
        print(f"{key:32} {value:14.3f}" if isinstance(value, float) else f"{key:32} {value!s:>14}")
    observed = result["breakdown"]
    print(f"\nan `up` adding one replica ({observed['up_s']:.2f} s), s from its start:")
    for span in observed["spans"]:
        print(f"  {span['host']:9} {span['what']:16} {span['from_s']:6.2f} - {span['to_s']:6.2f}")
    print(f"\n{table}\n\nbenchmark took {result['seconds']:.0f} s")
