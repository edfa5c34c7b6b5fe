"""A managed Valkey cluster's nodes on this machine (lab/standin/backend.py, `DatabaseBackend`):
lab hosts (lab_machines.py) running Debian's valkey-server 8 (bookworm-backports) as the user
valkey: TLS only on 25061 with a certificate of the lab's public CA (lab_pki.py), user `default`
with the cluster's password, a replica replicating from its primary over TLS.

Its files are the host's own /var/lib/valkey (lab/host_files.py): valkey.conf (0600: the password
is in it, never on a command line), the data, tls/, and the admin socket through which the
stand-in applies settings (CONFIG SET, then CONFIG REWRITE, so a restart keeps them). The host's
boot starts valkey-server when valkey.conf exists (lab_machines.py), as its enabled unit would.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import redis

from lab.host_files import private_source
from lab.standin.lab_databases import LabDatabases
from lab.standin.resources.valkey import RESTART_SETTINGS, TLS_PORT, USER
from lab.system import LabError, pid_alive

VALKEY_DIR = "/var/lib/valkey"
READY_TIMEOUT = 60  # seconds for a server to answer (a replica: to be in sync)
STOP_TIMEOUT = 30


def config_value(value: str) -> str:
    """A directive's value as valkey.conf reads it (an empty one quoted)."""
    return value if value else '""'


class LabValkey(LabDatabases):
    """The nodes of managed Valkey clusters."""

    def valkey_dir(self, node: dict) -> Path:
        """The node's /var/lib/valkey, as this machine sees it."""
        return private_source(self.host_dir(node), VALKEY_DIR)

    def valkey_config(self, cluster: dict, node: dict, primary: dict | None, settings) -> str:
        lines = [
            "# the stand-in's managed Valkey node (lab/standin/lab_valkey.py)",
            "bind 0.0.0.0",
            f"tls-port {TLS_PORT}",
            f"tls-cert-file {VALKEY_DIR}/tls/node.crt",
            f"tls-key-file {VALKEY_DIR}/tls/node.key",
            f"tls-ca-cert-file {VALKEY_DIR}/tls/ca.crt",
            "tls-auth-clients no",  # clients authenticate with the password
            "tls-replication yes",
            f"unixsocket {VALKEY_DIR}/valkey.sock",
            "unixsocketperm 700",
            f"dir {VALKEY_DIR}",
            f"pidfile {VALKEY_DIR}/valkey.pid",
            f"logfile {VALKEY_DIR}/valkey.log",
            "daemonize yes",
            f'requirepass "{cluster["password"]}"',
            f"masteruser {USER}",
            f'masterauth "{cluster["password"]}"',
            *(f"{name} {config_value(value)}" for name, value in settings.items()),
        ]
        if primary is not None:
            lines.append(f"replicaof {primary['private']} {TLS_PORT}")
        return "\n".join(lines) + "\n"

    def start_valkey(self, cluster: dict, node: dict, primary: dict | None, settings) -> None:
        directory = self.valkey_dir(node)
        addresses = [node["public"], node["private"]]
        tls = self.public_certificate(directory / "tls", cluster["host_names"], addresses)
        (tls / "ca.crt").write_text(self.public_ca())
        conf = directory / "valkey.conf"
        conf.unlink(missing_ok=True)
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            out.write(self.valkey_config(cluster, node, primary, settings))
        for path in (directory, tls, *tls.iterdir(), conf):
            shutil.chown(path, "valkey", "valkey")
        self.run_valkey(cluster, node, replica=primary is not None)

    def run_valkey(self, cluster: dict, node: dict, replica: bool) -> None:
        self.node_run(node, f"runuser -u valkey -- valkey-server {VALKEY_DIR}/valkey.conf")
        self.wait_valkey(cluster, node, replica)

    def admin(self, cluster: dict, node: dict) -> redis.Redis:
        """A client on the node's admin socket (seen through its mount namespace: a short
        path, where the socket's own path on this machine may pass the 108-byte limit)."""
        sshd = pid_alive(self.host_dir(node) / "sshd.pid")
        if not sshd:
            raise LabError(f"node {node['id']} is not running")
        return redis.Redis(
            unix_socket_path=f"/proc/{sshd}/root{VALKEY_DIR}/valkey.sock",
            username=USER,
            password=cluster["password"],
            socket_timeout=10,
            decode_responses=True,
        )

    def wait_valkey(self, cluster: dict, node: dict, replica: bool) -> None:
        """Until the server answers (a replica: until its link to the primary is up)."""
        deadline, last = time.monotonic() + READY_TIMEOUT, "no answer"
        while time.monotonic() < deadline:
            try:
                with self.admin(cluster, node) as client:
                    info = client.info("replication")
                if not replica or info.get("master_link_status") == "up":
                    return
                last = f"replication link {info.get('master_link_status')}"
            except (redis.RedisError, OSError) as err:
                last = str(err)
            time.sleep(0.2)
        raise LabError(f"valkey on node {node['id']}: {last} after {READY_TIMEOUT} s")

    def configure_valkey(self, cluster: dict, node: dict, settings: dict[str, str]) -> None:
        live = [item for name, value in settings.items() if name not in RESTART_SETTINGS
                for item in (name, value)]  # fmt: skip
        with self.admin(cluster, node) as client:
            if live:
                client.execute_command("CONFIG", "SET", *live)
            client.execute_command("CONFIG", "REWRITE")
            replica = client.info("replication").get("role") == "slave"
        at_start = {k: v for k, v in settings.items() if k in RESTART_SETTINGS}
        if at_start:  # a restart, as DigitalOcean's for these
            conf = self.valkey_dir(node) / "valkey.conf"
            text = conf.read_text()
            for name, value in at_start.items():
                text = re.sub(rf"(?m)^{name} .*\n", "", text) + f"{name} {value}\n"
            conf.write_text(text)
            self.stop_valkey(cluster, node)
            self.run_valkey(cluster, node, replica)

    def stop_valkey(self, cluster: dict, node: dict) -> None:
        pid_file = self.valkey_dir(node) / "valkey.pid"
        with self.admin(cluster, node) as client:
            client.shutdown()  # saves first when persistence is on
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(pid_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid_file):
            raise LabError(f"valkey on node {node['id']} did not stop in {STOP_TIMEOUT} s")
