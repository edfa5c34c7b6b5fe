"""A blue/green major upgrade on a lab (issue 24), as tests/lab/test_upgrade_bluegreen.py and
`make bench-upgrade` drive it: a hosts-mode stack with a PostgreSQL 15 primary and a replica on
Debian 12 hosts (h1, h2, pools on), a second stack whose one host (h3, the Debian 13 image)
runs PostgreSQL 17, and `BlueGreen`, which drives the host steps of
mastodon_data/host/upgrade.py and of the switchover on them (mastodon_data/cli/bluegreen.py)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import psycopg

from lab import namespaces as lab_hosts
from lab.stack import LabStack
from lab.write_load import connect
from mastodon_data.cli import bluegreen
from mastodon_data.cli.bluegreen import Generation
from mastodon_data.config import parse_settings

DB = "mastodon_production"


def psql(lab: lab_hosts.Lab, host: lab_hosts.LabHost, version: int, statement: str,
         timeout: float = 120) -> str:  # fmt: skip
    """`statement` run as postgres on `host`'s PostgreSQL `version`; its output, unaligned."""
    command = f"runuser -u postgres -- /usr/lib/postgresql/{version}/bin/psql -XAt -d {DB}"
    argv = lab.ssh_command(host.address, command)
    result = subprocess.run(argv, input=statement, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{statement!r} on {host.name}: {result.stderr}")
    return result.stdout.strip()


def stack_up(name: str, config: dict, secrets: dict, workdir: Path) -> dict:
    """`pulumi up` of a new lab stack `name`: the stack, its outputs, secrets and settings."""
    stack = LabStack(name, workdir / name)
    stack.prepare()
    stack.configure(config, secrets)
    stack.up()
    return {
        "stack": stack, "outputs": stack.outputs(), "secrets": secrets,
        "settings": parse_settings(config, set(secrets)),
    }  # fmt: skip


def both_stacks(lab: lab_hosts.Lab, secrets: dict, workdir: Path) -> tuple[dict, Path]:
    """On `lab`'s three hosts (up): the old stack (15: h1 primary, h2 replica) and the new one
    (17 on h3), with one set of secrets, so Mastodon's role logs in on both sides alike; and
    the operator's key in a 0600 file under `workdir`."""
    old_config = lab_hosts.stack_config(lab, 1, 2)
    new_config = lab_hosts.stack_config(lab, 0, 3, sources_for=3)
    new_config |= {"hosts": new_config["hosts"][2:], "postgresVersion": 17}
    stacks = {
        "old": stack_up("bgold", old_config, secrets, workdir),
        "new": stack_up("bgnew", new_config, secrets, workdir),
    }
    key = workdir / "key"
    key.touch(mode=0o600)
    key.write_text(secrets["sshPrivateKey"])
    return stacks, key


def generations(stacks: dict) -> dict[str, Generation]:
    """Each stack's side of the upgrade, as the product's driver takes it."""
    return {
        name: Generation(
            stack["settings"].replication,
            tuple(h for h in stack["settings"].hosts if h.role != "spare"),
            stack["outputs"]["postgres_ca_cert"],
            stack["secrets"]["dbPassword"],
            stack["secrets"]["replicationPassword"],
        )
        for name, stack in stacks.items()
    }


class BlueGreen(bluegreen.BlueGreen):
    """The product's driver over both stacks' servers."""

    def __init__(self, stacks: dict, key: Path):
        super().__init__(generations(stacks), key.read_text())
        self.stacks = stacks


class StatusWriter:
    """A client that inserts into `statuses` (its id from a sequence) through `env`'s pool,
    recording its errors: the sequence is what logical replication does not carry."""

    def __init__(self, env: dict[str, str]):
        self.env, self.errors, self.ids = dict(env), [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> StatusWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=180)

    def _write(self) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                conn = conn or connect(self.env)
                row = conn.execute("INSERT INTO statuses (body) VALUES ('x') RETURNING id")
                self.ids.append(row.fetchone()[0])
            except psycopg.Error as exc:
                self.errors.append(str(exc).strip())
                conn = None
                time.sleep(0.05)
            time.sleep(0.01)
