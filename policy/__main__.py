"""The mastodon-data policy pack: `pulumi preview --policy-pack policy`.

Constructing PolicyPack starts the analyzer's gRPC server and never returns, so this file does
nothing else; the rules are plain functions (exposure.py, secret_rules.py, data_rules.py, listed
by rules.py), unit-tested in tests/unit/test_policy.py. They are found beside this file with no
change to the import path: the engine runs the pack with
`python -m pulumi.policy <pack directory>` from the pack directory (runpy puts that directory
first on the path), and `python policy/__main__.py` puts the script's directory there too.
"""

import rules
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="mastodon-data",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=rules.policies(),
)
