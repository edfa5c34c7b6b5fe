"""The unit tests' own exportersHome: the program on mocks reads stand-in builds, never the
machine's `make exporters` cache (tests/unit/test_exporter_shipping.py sets its own)."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from tests.fixtures import exporter_builds


@pytest.fixture(autouse=True, scope="session")
def exporters_home(tmp_path_factory):
    home = exporter_builds(tmp_path_factory.mktemp("exporters"))
    with mock.patch.dict(os.environ, {"EXPORTERS_HOME": home}):
        yield home
