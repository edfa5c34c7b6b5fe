"""Where the stand-in takes the stack run by the real CLI from (lab.stack), and what its
processes need: their import path, the operator's command. (Namespaces and processes:
lab.system; a lab host's own files: lab.host_files.)"""

from __future__ import annotations

import sys
from pathlib import Path

from lab.stack import ROOT, EngineMissing, LabStack, PulumiFailed, write_private  # noqa: F401

# What a process needs on its import path to import the stand-in (run from ROOT).
IMPORT_PATHS = (ROOT,)
# The operator's command (render-env, check-replication), installed in the venv.
OPERATOR_COMMAND = Path(sys.executable).parent / "mastodon-data"
