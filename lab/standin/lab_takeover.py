"""What the control plane does on a managed cluster's nodes when its primary dies
(lab/standin/backend.py, `DatabaseBackend`; lab/standin/resources/database_takeover.py): the
primary's health check and the standby's promotion (another standby follows the new primary as a
read-only node does: lab_read_only.py).
"""

from __future__ import annotations

import subprocess

from lab.standin.lab_databases import PORT, pg_version
from lab.standin.lab_pools import LabPools
from lab.system import LabError

HEALTH_TIMEOUT = 5  # seconds a health check may take: longer is a failure


class LabTakeover(LabPools):
    """The standby's takeover on the nodes."""

    def node_healthy(self, node: dict) -> bool:
        """PostgreSQL answers on the node's own socket (a node powered off, or whose server
        was killed, does not)."""
        try:
            self.node_run(node, f"pg_isready -q -p {PORT}", timeout=HEALTH_TIMEOUT)
        except (LabError, subprocess.TimeoutExpired):
            return False
        return True

    def promote(self, node: dict) -> None:
        """`pg_ctl promote`, which waits until the server takes writes."""
        self.node_run(node, f"pg_ctlcluster {pg_version(node)} main promote", timeout=90)
