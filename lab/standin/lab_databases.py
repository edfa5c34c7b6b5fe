"""A managed database cluster's nodes on this machine (lab/standin/backend.py,
`DatabaseBackend`): lab hosts (lab_machines.py) running this machine's PostgreSQL 15 on port
25060, TLS with certificates of the account's CA (lab_pki.py), a standby cloned from its primary
with pg_basebackup and streaming from it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lab.standin.lab_pki import LabPki
from lab.standin.resources.databases import DB_SIZES
from lab.system import LabError, pid_alive

PG_VERSION = "15"  # a node's PostgreSQL unless its record says (`pg_version`: an upgrade's)
PORT = 25060
TLS_DIR = "/var/lib/postgresql/tls"
SETTINGS = f"""listen_addresses = '*'
port = {PORT}
ssl = on
ssl_cert_file = '{TLS_DIR}/node.crt'
ssl_key_file = '{TLS_DIR}/node.key'
password_encryption = scram-sha-256
wal_level = replica
hot_standby = on
max_wal_senders = 10
"""
# An upgrade's cut-over on the old primary: nothing is written after its dump.
FREEZE = """ALTER SYSTEM SET default_transaction_read_only = on;
SELECT pg_reload_conf();
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();
"""
# TLS only, passwords only; the superuser `postgres` only over the node's own socket.
HBA = """local all postgres peer
hostnossl all all 0.0.0.0/0 reject
hostssl replication standin_replication 0.0.0.0/0 scram-sha-256
hostssl all all 0.0.0.0/0 scram-sha-256
"""


def pg_version(node: dict) -> str:
    """The major version `node` runs: 15 (this machine's), or 17 on the Debian 13 image."""
    return node.get("pg_version", PG_VERSION)


def data_dir(node: dict) -> str:
    return f"/var/lib/postgresql/{pg_version(node)}/main"


def max_connections(size: str) -> int:
    """DigitalOcean's: 25 per GiB of the node size (3 of them reserved; pools share the rest)."""
    return 25 * DB_SIZES[size]


OWN_ROLE = re.compile(r"(CREATE|ALTER) ROLE postgres( |;)")
GRANTOR = re.compile(r"^(GRANT .*) GRANTED BY \S+;$")


def restorable(dump: str) -> str:
    """pg_dumpall's script as the new server's superuser runs it: without the bootstrap
    superuser's own lines, and a role membership granted by the superuser rather than by its
    grantor (PostgreSQL 16 on refuses a grantor without ADMIN on the role, which 15's CREATEROLE
    did not need)."""
    lines = (GRANTOR.sub(r"\1;", line) for line in dump.splitlines() if not OWN_ROLE.match(line))
    return "\n".join(lines) + "\n"


class LabDatabases(LabPki):
    """The nodes of managed database clusters."""

    def node_certificate(self, cluster: dict, node: dict) -> Path:
        """The node's key and certificate (every host name of its cluster, its addresses) in
        its state directory; returns that directory."""
        addresses = [node["public"], node["private"]]
        return self.database_certificate(
            self.host_dir(node) / "tls", cluster["host_names"], addresses
        )

    def node_run(self, node: dict, script: str, stdin: str = "", timeout: float = 120) -> str:
        """`script` (sh) in the node's namespaces (its mounts: its own PostgreSQL files)."""
        sshd = pid_alive(self.host_dir(node) / "sshd.pid")
        if not sshd:
            raise LabError(f"node {node['id']} is not running")
        result = subprocess.run(
            ["nsenter", "-t", str(sshd), "-m", "-u", "-n", "--", "sh", "-ec", script],
            input=stdin, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if result.returncode != 0:
            raise LabError(f"node {node['id']}: {script.splitlines()[0]}...: {result.stderr}")
        return result.stdout

    def start_postgres(self, cluster: dict, node: dict, primary: dict | None) -> None:
        script, version = self.create_script(cluster, node), pg_version(node)
        if primary is None:
            self.node_run(node, script + f"pg_ctlcluster {version} main start\n")
            self.run_sql(node, self.bootstrap_sql(cluster))
            return
        self.node_run(node, script)
        self.clone(cluster, node, primary)

    def create_script(self, cluster: dict, node: dict) -> str:
        """The node's cluster made (stopped): TLS, the settings, the rules."""
        tls, version = self.node_certificate(cluster, node), pg_version(node)
        conf = f"/etc/postgresql/{version}/main"
        return f"""
pg_createcluster {version} main -p {PORT} >/dev/null
install -d -o postgres -g postgres -m 0700 {TLS_DIR}
install -o postgres -g postgres -m 0600 {tls}/node.key {TLS_DIR}/node.key
install -o postgres -g postgres -m 0644 {tls}/node.crt {TLS_DIR}/node.crt
cat > {conf}/conf.d/standin.conf <<'EOF'
{SETTINGS}max_connections = {max_connections(cluster["size"])}
EOF
cat > {conf}/pg_hba.conf <<'EOF'
{HBA}EOF
"""

    def clone(self, cluster: dict, node: dict, primary: dict) -> None:
        """The node's (stopped) cluster made a copy of `primary`'s, streaming from it (the
        password read from stdin into the postgres user's passfile, never on a command line)."""
        source = f"host={primary['private']} port={PORT} user=standin_replication sslmode=require"
        data, version = data_dir(node), pg_version(node)
        script = f"""
find {data} -mindepth 1 -delete
umask 077
head -n1 > /var/lib/postgresql/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass
runuser -u postgres -- pg_basebackup -d "{source}" -D {data} -R -X stream -c fast
pg_ctlcluster {version} main start
"""
        self.node_run(node, script, stdin=self.passfile_line(cluster, primary), timeout=300)

    @staticmethod
    def passfile_line(cluster: dict, primary: dict) -> str:
        password = cluster["replication_password"]
        return f"{primary['private']}:{PORT}:*:standin_replication:{password}\n"

    @staticmethod
    def bootstrap_sql(cluster: dict) -> str:
        """doadmin, `defaultdb` and the standbys' role, as a new cluster has them."""
        return (
            f"CREATE ROLE doadmin LOGIN CREATEDB CREATEROLE REPLICATION "
            f"PASSWORD '{cluster['password']}';\n"
            f"CREATE ROLE standin_replication LOGIN REPLICATION "
            f"PASSWORD '{cluster['replication_password']}';\n"
            "CREATE DATABASE defaultdb OWNER doadmin;\n"
        )

    def run_sql(self, node: dict, sql: str, database: str = "postgres") -> None:
        psql = f"runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p {PORT} -d {database}"
        self.node_run(node, f"{psql} -f -", stdin=sql)

    def restore_postgres(self, cluster: dict, node: dict, source: dict) -> None:
        """PostgreSQL on `node` (a primary, the version of its record) holding what `source`'s
        server holds now, roles and passwords included: its pg_dumpall restored (an older
        server's dump restores on a newer one). The bootstrap superuser is the new server's."""
        version = pg_version(node)
        self.node_run(
            node, self.create_script(cluster, node) + f"pg_ctlcluster {version} main start\n"
        )
        dump = self.node_run(source, f"runuser -u postgres -- pg_dumpall -p {PORT}", timeout=600)
        self.run_sql(node, restorable(dump))

    def thaw(self, node: dict) -> None:
        self.run_sql(node, "ALTER SYSTEM RESET default_transaction_read_only;\n"
                           "SELECT pg_reload_conf();\n")  # fmt: skip

    def freeze(self, node: dict) -> None:
        """`node`'s server made read-only and its clients disconnected (an upgrade's cut-over:
        nothing written after its dump is lost)."""
        self.run_sql(node, FREEZE)
