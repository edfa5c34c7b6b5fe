"""The benchmark's arithmetic (lab/bench.py): medians over rounds, worst cases for maxima and
rows lost, and the ratios it compares with the issue's targets."""

from __future__ import annotations

import pytest

from lab.bench.figures import aggregate, figures_of, target_table

FIRST = [
    {"first_up_s": 8.0, "no_change_up_s": 2.0, "engine_floor_up_s": 1.0},
    {"first_up_s": 10.0, "no_change_up_s": 1.8, "engine_floor_up_s": 1.2},
    {"first_up_s": 9.0, "no_change_up_s": 1.9, "engine_floor_up_s": 1.1},
]
DATA = {
    "add_one_replica_s": 9.0,
    "raw_basebackup_s": 4.0,
    "add_three_replicas_s": 12.6,
    "raw_three_basebackups_s": 7.0,
    "lag_max_s": 0.03,
    "load_rows_lost": 0,
    "cut_rows_lost": 0,
    "load_checksums_match": True,
    "cut_checksums_match": True,
    "catch_up_after_cut_s": 1.5,
}


def test_medians_worst_maxima_and_all_checks():
    rounds = [
        {"x_s": 1.0, "lag_max_s": 0.1, "cut_rows_lost": 0, "ok": True},
        {"x_s": 3.0, "lag_max_s": 0.5, "cut_rows_lost": 2, "ok": False},
        {"x_s": 2.0, "lag_max_s": 0.2, "cut_rows_lost": 0, "ok": True},
    ]
    assert aggregate(rounds) == {"x_s": 2.0, "lag_max_s": 0.5, "cut_rows_lost": 2, "ok": False}


def test_ratios_and_the_engine_floor_context():
    figures = figures_of({"first_up_rounds": FIRST, "rounds": [DATA]})
    assert figures["no_change_vs_first"] == pytest.approx(1.9 / 9.0)
    assert figures["add_one_vs_basebackup"] == pytest.approx(9.0 / 4.0)
    assert figures["three_vs_one"] == pytest.approx(1.4)
    assert figures["raw_three_vs_one"] == pytest.approx(7.0 / 4.0)
    assert figures["no_change_above_floor_s"] == pytest.approx(0.8)
    assert figures["add_one_above_floor_vs_basebackup"] == pytest.approx((9.0 - 1.1) / 4.0)
    assert figures["rows_lost"] == 0


def test_targets_met_or_not():
    figures = figures_of({"first_up_rounds": FIRST, "rounds": [DATA]})
    table, met = target_table(figures)
    assert met == {
        "add_one_vs_basebackup": False,
        "three_vs_one": True,
        "no_change_vs_first": False,
        "catch_up_after_cut_s": True,
        "rows_lost": True,
    }
    assert "| add one replica vs raw pg_basebackup (1 GB) | 2.25x | <= 1.5x | no |" in table
