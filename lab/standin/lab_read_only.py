"""Read-only nodes of managed database clusters on this machine (lab/standin/backend.py,
`DatabaseBackend.follow_primary`): made as a cluster's standby is (lab_databases.py: cloned with
pg_basebackup, streaming), and made to follow the cluster's new primary node after a takeover.
"""

from __future__ import annotations

import time

from lab.standin.lab_databases import PORT, LabDatabases, pg_version
from lab.system import LabError

FOLLOW_TIMEOUT = 20  # seconds a re-pointed node has to stream from its new primary
CLONE_TIMEOUT = 60  # seconds a node cloned again has to stream
PASSFILE = "/var/lib/postgresql/.pgpass"


class LabReadOnlyNodes(LabDatabases):
    """Standbys of a cluster outside it: they follow its primary node wherever it moves."""

    def query(self, node: dict, sql: str) -> str:
        """`sql`'s rows as the superuser on `node`, unaligned, `|` between fields."""
        psql = f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -p {PORT} -d postgres"
        return self.node_run(node, f"{psql} -f -", stdin=sql).strip()

    def follow_primary(self, cluster: dict, node: dict, primary: dict) -> str:
        """`primary_conninfo` pointed at `primary` and reloaded (PostgreSQL follows the new
        timeline when it forked after what the node has replayed); cloned again when it does
        not stream from there within FOLLOW_TIMEOUT (the node is ahead of the fork, or on a
        timeline the primary never had)."""
        conninfo = (
            f"host={primary['private']} port={PORT} user=standin_replication "
            f"sslmode=require passfile={PASSFILE}"
        )
        self.node_run(node, f"umask 077; cat > {PASSFILE}; chown postgres:postgres {PASSFILE}",
                      stdin=self.passfile_line(cluster, primary))  # fmt: skip
        self.query(node, f"ALTER SYSTEM SET primary_conninfo = '{conninfo}';\n"
                         "SELECT pg_reload_conf();")  # fmt: skip
        if self.streams_from(node, primary, FOLLOW_TIMEOUT):
            return "followed"
        stop = f"pg_ctlcluster {pg_version(node)} main"
        self.node_run(node, f"if {stop} status >/dev/null; then {stop} stop -m fast; fi")
        self.clone(cluster, node, primary)
        if not self.streams_from(node, primary, CLONE_TIMEOUT):
            raise LabError(f"node {node['id']} does not stream from {primary['id']}")
        return "cloned again"

    def streams_from(self, node: dict, primary: dict, timeout: float) -> bool:
        """Whether `node` receives `primary`'s current timeline from it within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            walfile = self.query(primary, "SELECT pg_walfile_name(pg_current_wal_lsn())")
            want = f"streaming|{primary['private']}|{int(walfile[:8], 16)}"
            seen = self.query(
                node, "SELECT status, sender_host, received_tli FROM pg_stat_wal_receiver"
            )
            if seen == want:
                return True
            time.sleep(0.5)
        return False
