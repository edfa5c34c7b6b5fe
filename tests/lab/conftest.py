"""The test lab, made once per session and removed at the end (see labkit.py)."""

from __future__ import annotations

import pytest
from labkit import TEST_LAB, LabSession, own_lab


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory):
    with own_lab(TEST_LAB, 4):
        yield LabSession(TEST_LAB, tmp_path_factory.mktemp("lab"))
