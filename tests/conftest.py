"""The suite's order, and a record of when each test ran.

Workers take whole files (`--dist loadfile`, `--no-loadscope-reorder`) in the order collected
here: the lab files that take minutes first, longest first, the many short unit files last, so
no long file starts when the others are nearly done. Each test's start and end go to
build/test-times/<worker>.tsv (ignored), which shows that schedule after a run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

TIMES = Path(__file__).resolve().parent.parent / "build" / "test-times"
# Longest first, as build/test-times measured them in a clean run (each 4 to 11 minutes of a
# worker); the other lab, engine and local files follow, then the unit files.
LONGEST = tuple(
    f"tests/{name}.py"
    for name in (
        "lab/test_droplets_standin",
        "lab/test_replication",
        "lab/test_lifecycle_standin",
        "lab/test_cert_renewal",
        "lab/test_managed_stack",
        "lab/test_alert_faults",
        "lab/test_read_endpoint_standin",
        "lab/test_backups",
        "lab/test_volumes_standin",
        "lab/test_faults",
        "lab/test_switchover",
        "lab/test_debian13",  # 5 min beside other files
        "lab/test_upgrade_engine",  # 5 passed in about 6 min alone
        "lab/test_upgrade_bluegreen",  # 2.2 min, 3.9 beside other labs (load average 11)
        "engine/test_wheel",
        "engine/test_lifecycle_engine",
        "lab/test_exporters",
        "lab/test_main_job",
        "lab/test_engine_lifecycle",
        "lab/test_exporters_standin",  # 2.8 min alone, 4.2 beside two other files
    )
)
DIRECTORIES = ("tests/lab/", "tests/engine/", "tests/local/")


def file_rank(path: str) -> tuple[int, int]:
    if path in LONGEST:
        return (0, LONGEST.index(path))
    ranked = [i for i, d in enumerate(DIRECTORIES) if path.startswith(d)]
    return (1 + (ranked[0] if ranked else len(DIRECTORIES)), 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: file_rank(item.nodeid.partition("::")[0]))  # stable: in-file order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    start = time.time()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    TIMES.mkdir(parents=True, exist_ok=True)
    with open(TIMES / f"{worker}.tsv", "a") as rows:
        rows.write(f"{item.nodeid}\t{start:.1f}\t{time.time():.1f}\n")
