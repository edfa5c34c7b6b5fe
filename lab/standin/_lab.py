"""The one place the stand-in takes the lab's helpers from: namespaces and processes
(lab.namespaces), and the stack run by the real CLI in a private working directory (lab.stack)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.namespaces import (  # noqa: F401 - re-exported
    DEVICE_LINKS,
    PRIVATE_DIRS,
    REQUIRED_TOOLS,
    LabError,
    link_exists,
    make_private,
    netns_list,
    pid_alive,
    preflight,
    private_source,
    remove_netns,
    run,
)
from lab.stack import ROOT, EngineMissing, LabStack, PulumiFailed, write_private  # noqa: F401

# What a process needs on its import path to import the stand-in (run from ROOT).
IMPORT_PATHS = (ROOT,)
# The operator's command (render-env, check-replication), installed in the venv.
OPERATOR_COMMAND = Path(sys.executable).parent / "mastodon-data"
