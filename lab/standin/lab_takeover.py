"""What the control plane does on a managed cluster's nodes when its primary dies
(lab/standin/backend.py, `DatabaseBackend`; lab/standin/resources/database_takeover.py): the
primary's health check, the standby's promotion, another standby re-pointed at the new primary.
"""

from __future__ import annotations

import subprocess

from lab.standin.lab_databases import PG_VERSION, PORT
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
        self.node_run(node, f"pg_ctlcluster {PG_VERSION} main promote", timeout=90)

    def follow(self, cluster: dict, node: dict, primary: dict) -> None:
        """The standby's `primary_conninfo` (reloaded: PostgreSQL 15 needs no restart) and its
        passfile now name `primary`; it follows the new timeline (`recovery_target_timeline`
        is `latest`)."""
        source = f"host={primary['private']} port={PORT} user=standin_replication sslmode=require"
        psql = f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p {PORT}"
        script = f"""
umask 077
head -n1 > /var/lib/postgresql/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass
{psql} -c "ALTER SYSTEM SET primary_conninfo = '{source}'" -c "SELECT pg_reload_conf()"
"""
        password = cluster["replication_password"]
        line = f"{primary['private']}:{PORT}:*:standin_replication:{password}\n"
        self.node_run(node, script, stdin=line)
