"""Every case of the docs' bad-input table is refused with the key named and a fix."""

from __future__ import annotations

import pytest

from lab.bad_inputs_table import CASES, message


@pytest.mark.parametrize(("what", "raw", "secrets"), CASES, ids=[c[0] for c in CASES])
def test_case_is_refused_with_key_and_fix(what, raw, secrets):
    text = message(raw, secrets)
    assert text, f"{what}: accepted"
    for line in text.splitlines():
        assert line.startswith("mastodon-data:") and "Fix:" in line, line


def test_the_table_has_at_least_25_cases():
    assert len(CASES) >= 25
