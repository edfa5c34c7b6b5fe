"""The mastodon-data policy pack: `pulumi preview --policy-pack policy`.

Constructing PolicyPack starts the analyzer's gRPC server and never returns, so this file does
nothing else; the rules are plain functions in rules.py, unit-tested in tests/unit/test_policy.py.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # rules.py beside this file

import rules  # noqa: E402
from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

PolicyPack(
    name="mastodon-data",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.policies(),
)
