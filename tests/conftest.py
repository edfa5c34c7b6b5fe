"""Writes when each test ran, per worker, to build/test-times/ (ignored): the schedule of the
suite's files across workers, to see what sets `make test`'s length."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

TIMES = Path(__file__).resolve().parent.parent / "build" / "test-times"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item):
    start = time.time()
    yield
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    TIMES.mkdir(parents=True, exist_ok=True)
    with open(TIMES / f"{worker}.tsv", "a") as rows:
        rows.write(f"{item.nodeid}\t{start:.1f}\t{time.time():.1f}\n")
