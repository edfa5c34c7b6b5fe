"""The test lab, made once per session and removed at the end (see labkit.py)."""

from __future__ import annotations

import pytest
from labkit import TEST_LAB, LabSession, lab_unavailable

from lab import namespaces as lab_hosts


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory):
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_hosts.down(TEST_LAB)
    try:
        lab_hosts.up(TEST_LAB, 4)
        yield LabSession(TEST_LAB, tmp_path_factory.mktemp("lab"))
    finally:
        lab_hosts.down(TEST_LAB)
