"""Debian 13 hosts running PostgreSQL 17 (issue 24, step 1), through the engine on a lab of its
own whose two hosts run the Debian 13 image (lab/rootfs.py): `pulumi up` of a hosts-mode stack
with postgresVersion 17 makes the primary and a replica with trixie's packages; the replica
streams, both pools answer with TLS and SCRAM, and a second `up` changes nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from labkit import applied, new_secrets, own_lab

from lab import namespaces as lab_hosts
from lab import rootfs
from lab.stack import LabStack
from tests.fixtures import COMMAND
from tests.mastodon_database import read_dotenv

pytestmark = [pytest.mark.lab, pytest.mark.engine]
IMAGE = rootfs.image_dir()
DEB13_LAB = lab_hosts.Lab(
    prefix="ml13",
    subnet="10.244.0.0/24",
    state_dir=Path("/var/lib/mastodon-lab-deb13"),
    images={1: IMAGE, 2: IMAGE},
)
PRIMARY, REPLICA = "10.244.0.11", "10.244.0.12"
VERSION = 17
# The stack, the component, the primary, the replica, the slots step, 2 status reports,
# 2 pooler steps, 2 health endpoint steps.
RESOURCES = 11
REPLAY_WAIT = 30  # seconds for a row to reach the replica (at rest: under a second)


@pytest.fixture(scope="module")
def deb13(tmp_path_factory):
    if not rootfs.built(IMAGE):
        pytest.fail(f"the Debian 13 image {IMAGE} is not built: run `make rootfs`")
    with own_lab(DEB13_LAB, 2):
        workdir = tmp_path_factory.mktemp("deb13")
        secrets = new_secrets(DEB13_LAB)
        stack = LabStack("deb13test", workdir / "stack")
        stack.prepare()
        config = lab_hosts.stack_config(DEB13_LAB, 1, 2) | {"postgresVersion": VERSION}
        outputs = applied(stack, config, secrets)
        yield {"stack": stack, "outputs": outputs, "secrets": secrets, "dir": workdir}


def ssh(index: int, command: str) -> subprocess.CompletedProcess:
    argv = DEB13_LAB.ssh_command(DEB13_LAB.host(index).address, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def env_production(deb13) -> dict[str, str]:
    path = deb13["dir"] / ".env.production"
    result = subprocess.run(
        [COMMAND, "render-env", "--key", "mastodon_env", "--output", str(path)],
        input=json.dumps(deb13["outputs"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return read_dotenv(path.read_text())


def connect(env: dict[str, str], prefix: str = "") -> psycopg.Connection:
    return psycopg.connect(
        host=env[f"{prefix}DB_HOST"],
        port=env[f"{prefix}DB_PORT"],
        dbname=env[f"{prefix}DB_NAME"],
        user=env[f"{prefix}DB_USER"],
        password=env[f"{prefix}DB_PASS"],
        sslmode="require",
        connect_timeout=10,
        prepare_threshold=None,
        autocommit=True,
    )


def test_the_hosts_run_debian_13_with_its_postgresql_17(deb13):
    for index in (1, 2):
        shown = ssh(index, "cut -d. -f1 /etc/debian_version; pg_lsclusters -h | cut -d' ' -f1-4")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            "13",
            f"{VERSION} main 5432 online" + ("" if index == 1 else ",recovery"),
        ]


def test_the_replica_streams_from_the_primary(deb13):
    query = "SELECT application_name, state, sync_state FROM pg_stat_replication"
    primary = ssh(1, f"runuser -u postgres -- psql -AtX -c {json.dumps(query)}")
    assert primary.stdout.split() == ["ml13-h2|streaming|async"], primary.stderr
    stamp = str(time.time_ns())
    write = f"CREATE TABLE IF NOT EXISTS marks (mark text); INSERT INTO marks VALUES ('{stamp}')"
    done = ssh(1, f'runuser -u postgres -- psql -AtX -d postgres -c "{write}"')
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + REPLAY_WAIT
    while time.monotonic() < deadline:
        seen = ssh(2, "runuser -u postgres -- psql -AtX -d postgres -c 'SELECT mark FROM marks'")
        if stamp in seen.stdout.split():
            return
        time.sleep(0.5)
    raise AssertionError(f"the row did not reach the replica within {REPLAY_WAIT} s")


def test_both_pools_answer_with_tls_on_17(deb13):
    env = env_production(deb13)
    assert (env["DB_HOST"], env["DB_PORT"]) == (PRIMARY, "6432")
    assert (env["REPLICA_DB_HOST"], env["REPLICA_DB_PORT"]) == (REPLICA, "6432")
    for prefix, in_recovery in (("", False), ("REPLICA_", True)):
        with connect(env, prefix) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), current_setting('server_version_num')::int / 10000"
            ).fetchone()
            assert row == (in_recovery, VERSION)
            assert conn.pgconn.ssl_in_use


def test_a_second_up_changes_nothing(deb13):
    assert deb13["stack"].last_changes() == {"create": RESOURCES}
    deb13["stack"].up()
    assert deb13["stack"].last_changes() == {"same": RESOURCES}
