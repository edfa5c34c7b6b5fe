"""The rules of the mastodon-data policy pack as plain validate functions.

Each `validate_*` function takes the argument bag pulumi-policy hands a policy and a
`report(message, urn=None)` callback; nothing here starts the analyzer server (only
`PolicyPack(...)` does, in __main__.py), so the unit tests call these functions directly.
The rules live by concern (exposure.py, secret_rules.py, data_rules.py, on what reading.py
reads); this module is the list the pack registers.
"""

from __future__ import annotations

import data_rules
import exposure
import secret_rules


def policies() -> list:
    """The pack's policies (building them starts nothing)."""
    return [*exposure.policies(), *secret_rules.policies(), *data_rules.policies()]
