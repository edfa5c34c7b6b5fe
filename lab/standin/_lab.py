"""The one place the stand-in takes the lab's helpers from: namespaces and processes
(lab.system), a host's own files (lab.host_files), and the stack run by the real CLI in a
private working directory (lab.stack)."""

from __future__ import annotations

import sys
from pathlib import Path

from lab.host_files import (  # noqa: F401 - re-exported
    DEVICE_LINKS,
    PRIVATE_DIRS,
    ensure_key,
    make_private,
    private_source,
    sshd_config,
)
from lab.stack import ROOT, EngineMissing, LabStack, PulumiFailed, write_private  # noqa: F401
from lab.system import (  # noqa: F401 - re-exported
    REQUIRED_TOOLS,
    LabError,
    link_exists,
    netns_list,
    pid_alive,
    preflight,
    remove_netns,
    run,
)

# What a process needs on its import path to import the stand-in (run from ROOT).
IMPORT_PATHS = (ROOT,)
# The operator's command (render-env, check-replication), installed in the venv.
OPERATOR_COMMAND = Path(sys.executable).parent / "mastodon-data"
