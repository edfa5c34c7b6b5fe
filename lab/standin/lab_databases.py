"""A managed database cluster's nodes on this machine (lab/standin/backend.py,
`DatabaseBackend`): lab hosts (lab_machines.py) running this machine's PostgreSQL 15 on port
25060, TLS with certificates of the account's CA (made once, in the state directory), a
standby cloned from its primary with pg_basebackup and streaming from it.

Host names: the stand-in writes the lab's own hosts file (`<state dir>/hosts`: localhost and
the clusters' names). The app side resolves them by running with that file mounted over
/etc/hosts in a mount namespace of its own (`app_command`), as `ip netns exec` does with
/etc/netns; this machine's /etc/hosts and resolver are never touched, and nothing outside the
lab sees the names.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.standin.lab_disks import LabDisks
from lab.system import LabError, pid_alive

PG_VERSION = "15"  # the lab's PostgreSQL, whatever version the cluster was asked for
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
# TLS only, passwords only; the superuser `postgres` only over the node's own socket.
HBA = """local all postgres peer
hostnossl all all 0.0.0.0/0 reject
hostssl replication standin_replication 0.0.0.0/0 scram-sha-256
hostssl all all 0.0.0.0/0 scram-sha-256
"""
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
LOCALHOST = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {result.stderr.strip()}")


class LabDatabases(LabDisks):
    """The nodes of managed database clusters, and the lab's host names."""

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "database-ca"

    @property
    def hosts_file(self) -> Path:
        return self.state_dir / "hosts"

    def database_ca(self) -> str:
        cert = self.ca_dir / "ca.crt"
        if not cert.exists():
            self.ca_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            openssl("req", "-x509", *EC, "-days", "3650", "-subj", "/CN=stand-in project CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout", str(self.ca_dir / "ca.key"), "-out", str(cert))  # fmt: skip
        return cert.read_text()

    def node_certificate(self, cluster: dict, node: dict) -> Path:
        """The node's key and certificate (every host name of its cluster, its addresses) in
        its state directory; returns that directory."""
        self.database_ca()
        tls = self.host_dir(node) / "tls"
        tls.mkdir(mode=0o700, exist_ok=True)
        names = cluster["host_names"]
        alt = ",".join([*(f"DNS:{n}" for n in names),
                        f"IP:{node['public']}", f"IP:{node['private']}"])  # fmt: skip
        (tls / "ext").write_text(f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n")
        openssl("req", "-new", *EC, "-subj", f"/CN={names[0]}", "-keyout", str(tls / "node.key"),
                "-out", str(tls / "node.csr"))  # fmt: skip
        openssl("x509", "-req", "-in", str(tls / "node.csr"), "-CA", str(self.ca_dir / "ca.crt"),
                "-CAkey", str(self.ca_dir / "ca.key"), "-CAcreateserial", "-days", "3650",
                "-extfile", str(tls / "ext"), "-out", str(tls / "node.crt"))  # fmt: skip
        return tls

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
        tls = self.node_certificate(cluster, node)
        conf = f"/etc/postgresql/{PG_VERSION}/main"
        data = f"/var/lib/postgresql/{PG_VERSION}/main"
        script = f"""
pg_createcluster {PG_VERSION} main -p {PORT} >/dev/null
install -d -o postgres -g postgres -m 0700 {TLS_DIR}
install -o postgres -g postgres -m 0600 {tls}/node.key {TLS_DIR}/node.key
install -o postgres -g postgres -m 0644 {tls}/node.crt {TLS_DIR}/node.crt
cat > {conf}/conf.d/standin.conf <<'EOF'
{SETTINGS}EOF
cat > {conf}/pg_hba.conf <<'EOF'
{HBA}EOF
"""
        if primary is None:
            self.node_run(node, script + f"pg_ctlcluster {PG_VERSION} main start\n")
            self.run_sql(node, self.bootstrap_sql(cluster))
            return
        # The standby: a copy of the primary, streaming from it (the password read from stdin
        # into the postgres user's passfile, never on a command line).
        source = f"host={primary['private']} port={PORT} user=standin_replication sslmode=require"
        script += f"""
find {data} -mindepth 1 -delete
umask 077
head -n1 > /var/lib/postgresql/.pgpass
chown postgres:postgres /var/lib/postgresql/.pgpass
runuser -u postgres -- pg_basebackup -d "{source}" -D {data} -R -X stream -c fast
pg_ctlcluster {PG_VERSION} main start
"""
        password = cluster["replication_password"]
        line = f"{primary['private']}:{PORT}:*:standin_replication:{password}\n"
        self.node_run(node, script, stdin=line, timeout=300)

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

    def publish_names(self, names: dict[str, str]) -> None:
        """Written in place: a bind mount of the file keeps seeing it."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = "".join(f"{address} {name}\n" for name, address in sorted(names.items()))
        with open(self.hosts_file, "a+") as out:
            out.seek(0)
            out.truncate()
            out.write(LOCALHOST + lines)
        os.chmod(self.hosts_file, 0o644)

    def app_command(self, *argv: str) -> list[str]:
        """`argv` run as on an app host: the lab's host names resolve."""
        if not self.hosts_file.exists():
            self.publish_names({})
        mount = 'mount --bind "$0" /etc/hosts && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
                str(self.hosts_file), *argv]  # fmt: skip
