"""A managed cluster's major upgrade, 15 -> 17, through the real engine and provider on the
DigitalOcean stand-in: the project's managed stack (no read-only node: the stand-in does not
upgrade one) on 15 with rows written through Mastodon's env; postgresVersion 17 without
postgresUpgradeTo stops the preview; with it, `pulumi up` forks the cluster, upgrades, checks and
removes the fork, and only then asks for the cluster's upgrade; the cluster then answers on 17
(Debian 13's server on new nodes) with every row, while a client wrote once a second (its
longest pause measured); the env is unchanged, and a second `up` without postgresUpgradeTo
changes nothing.

`pulumi up` runs where the lab's host names resolve (the operator reaches the fork on its public
name, as from a workstation on the internet). Lab `mlmu`: public 10.241.160.0/24, VPC
10.240.160.0/24."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest
from standinkit import standin_account

from lab.stack import ROOT
from lab.standin._lab import OPERATOR_COMMAND
from lab.standin.client import Client
from lab.standin.service import StandInLab
from lab.standin.stack import managed_config, standin_stack

LAB = StandInLab(
    prefix="mlmu",
    public_network="10.241.160.0/24",
    vpc_pool=("10.240.160.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-managed-upgrade-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "mmu"
WRITER = Path(__file__).parent / "upgrade_writer.py"
ROWS = 500  # written before the upgrade
# Measured at load 7-8 (docs/developers/benchmarks.md): online on 17 82 s after `pulumi up`
# started, longest write pause 11.0 s; the bounds allow about seven times that.
ONLINE_BOUND = 600  # seconds from `pulumi up` to the cluster online on 17
PAUSE_BOUND = 90  # seconds: the longest write pause allowed


def resolving_pulumi(directory: Path, path: str) -> Path:
    """A `pulumi` (before the engine's on `path`) that runs the engine's with the lab's host
    names in /etc/hosts."""
    directory.mkdir(parents=True, exist_ok=True)
    shim, real = directory / "pulumi", shutil.which("pulumi", path=path)
    shim.write_text(
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c "
        f'\'mount --bind "$0" /etc/hosts && exec "$@"\' {LAB.hosts.hosts_file} {real} "$@"\n'
    )
    shim.chmod(0o700)
    return directory


class Upgrade:
    def __init__(self, client: Client, key_id: int, workdir: Path):
        self.client = Client(client.url, token=f"dop_v1_standin-{STACK}")
        self.config = managed_config(LAB.vpc_pool[0], "mlmu-media", appTag="mlmu-app",
                                     managedReplica=False)  # fmt: skip
        self.stack = standin_stack(LAB, self.client, STACK, workdir, self.config, {})
        self.stack.timeout = 900
        self.stack.up()
        path = self.stack.extra_env["PATH"]
        self.stack.extra_env["PATH"] = f"{resolving_pulumi(workdir.parent / 'bin', path)}:{path}"
        self.outputs = self.stack.outputs()
        self.app = self.client.ensure_droplet({
            "name": "mlmu-app-1", "region": self.config["region"], "size": "s-1vcpu-1gb",
            "image": "debian-12-x64", "vpc_uuid": self.outputs["vpc_id"],
            "tags": [self.config["appTag"]], "ssh_keys": [key_id],
        })  # fmt: skip
        self.app_host = self.client.state()["droplets"][str(self.app["id"])]

    def on_app(self, *argv: str, stdin: str = "", **run) -> subprocess.Popen | str:
        result = subprocess.run(
            LAB.hosts.on_host_command(self.app_host, *argv),
            input=stdin, capture_output=True, text=True, timeout=180, cwd=ROOT, **run,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    def sql(self, query: str, env_key: str = "mastodon_env") -> str:
        """`query` as Mastodon's role through the env's host (the pool, or `migration_env`)."""
        env = {**self.outputs["mastodon_env"], **self.outputs[env_key]}
        code = (
            "import json,sys,tempfile,psycopg\n"
            "d=json.load(sys.stdin);e=d['env']\n"
            "f=tempfile.NamedTemporaryFile('w');f.write(d['ca']);f.flush()\n"
            "c=psycopg.connect(host=e['DB_HOST'],port=int(e['DB_PORT']),dbname=e['DB_NAME'],"
            "user=e['DB_USER'],password=e['DB_PASS'],sslmode='verify-full',sslrootcert=f.name,"
            "autocommit=True,prepare_threshold=None)\n"
            "r=c.execute(d['q']);print(json.dumps(r.fetchall() if r.description else []))\n"
        )
        data = {"env": env, "ca": self.outputs["postgres_ca_cert"], "q": query}
        return json.loads(self.on_app(sys.executable, "-c", code, stdin=json.dumps(data)))

    def cluster(self) -> dict:
        (pg,) = [c for c in self.client.call("GET", "/v2/databases")["databases"]
                 if c["engine"] == "pg"]  # fmt: skip
        return pg


@pytest.fixture(scope="module")
def upgrade(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        yield Upgrade(client, key_id, tmp_path_factory.mktemp("upgrade") / STACK)


def test_rows_are_written_through_mastodons_env_on_15(upgrade):
    granted = upgrade.on_app(str(OPERATOR_COMMAND), "grant", stdin=json.dumps(upgrade.outputs))
    assert "mastodon may now create its tables" in granted
    upgrade.sql("CREATE TABLE upgrade_writes (id bigserial PRIMARY KEY, at timestamptz "
                "DEFAULT now())", "migration_env")  # fmt: skip
    upgrade.sql(f"INSERT INTO upgrade_writes SELECT FROM generate_series(1, {ROWS})")
    assert upgrade.sql("SELECT count(*), current_setting('server_version_num')::int / 10000 "
                       "FROM upgrade_writes") == [[ROWS, 15]]  # fmt: skip
    assert upgrade.cluster()["version"] == "15"


def test_postgres_17_without_the_guard_stops_the_preview(upgrade):
    upgrade.stack.configure({**upgrade.config, "postgresVersion": 17}, {})
    said = upgrade.stack.preview(check=False) + upgrade.stack.last.stderr
    assert upgrade.stack.last.returncode != 0
    assert "mastodon-data:postgresVersion = 17: the managed cluster runs PostgreSQL 15" in said
    assert "pulumi config set mastodon-data:postgresUpgradeTo 17 for this run" in said


def pauses(attempts: list) -> tuple[float, int]:
    """(the longest time between two successful writes, the failed attempts)."""
    ok = [at for at, outcome in attempts if outcome == "ok"]
    return max(b - a for a, b in pairwise(ok)), sum(o != "ok" for _, o in attempts)


def upgraded_under_writes(upgrade: Upgrade, stop: Path) -> dict:
    """`pulumi up` with postgresUpgradeTo while the writer writes; until the cluster is online
    on 17: what was said, the times, the writer's answer."""
    data = {"env": upgrade.outputs["mastodon_env"], "ca": upgrade.outputs["postgres_ca_cert"]}
    writer = subprocess.Popen(
        LAB.hosts.on_host_command(upgrade.app_host, sys.executable, str(WRITER), str(stop)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        writer.stdin.write(json.dumps(data))
        writer.stdin.close()
        time.sleep(5)
        config = {**upgrade.config, "postgresVersion": 17, "postgresUpgradeTo": 17}
        upgrade.stack.configure(config, {})
        started = time.monotonic()
        said = upgrade.stack.up()
        run_seconds = time.monotonic() - started
        while (cluster := upgrade.cluster())["version"] != "17" or cluster["status"] != "online":
            assert time.monotonic() - started < ONLINE_BOUND, cluster["status"]
            time.sleep(2)
        online_seconds = time.monotonic() - started
        time.sleep(5)
    finally:
        stop.touch()
        writer.wait(timeout=60)  # it stops within a second of STOP
        out = writer.stdout.read()
    return {"said": said, "run": run_seconds, "online": online_seconds, **json.loads(out)}


def test_up_rehearses_on_a_fork_then_upgrades_with_every_row(upgrade, tmp_path):
    env_before, source = upgrade.outputs["mastodon_env"], upgrade.cluster()
    log_start = len(upgrade.client.log())
    done = upgraded_under_writes(upgrade, tmp_path / "stop")
    longest, failed = pauses(done["attempts"])
    print(f"up {done['run']:.0f} s, online on 17 {done['online']:.0f} s after it started; "
          f"longest write pause {longest:.1f} s, {failed} failed attempts of "
          f"{len(done['attempts'])}")  # fmt: skip
    assert "checked: PostgreSQL 17, mastodon_production with 1 tables" in done["said"]
    calls = [(e["method"], e["path"]) for e in upgrade.client.log()[log_start:]
             if e["method"] in ("POST", "PUT", "DELETE")]  # fmt: skip
    (fork_post,) = [i for i, c in enumerate(calls) if c == ("POST", "/v2/databases")]
    (fork_delete,) = [i for i, (m, _) in enumerate(calls) if m == "DELETE"]
    (upgrade_put,) = [i for i, c in enumerate(calls)
                      if c == ("PUT", f"/v2/databases/{source['id']}/upgrade")]  # fmt: skip
    assert fork_post < fork_delete < upgrade_put, calls
    assert [c["name"] for c in upgrade.client.call("GET", "/v2/databases")["databases"]
            if c["engine"] == "pg"] == [source["name"]]  # fmt: skip
    rows = upgrade.sql("SELECT count(*), current_setting('server_version_num')::int / 10000 "
                       f"FROM upgrade_writes WHERE id <= {ROWS}")  # fmt: skip
    assert rows == [[ROWS, 17]]
    ids = {i for [i] in upgrade.sql(f"SELECT id FROM upgrade_writes WHERE id > {ROWS}")}
    assert set(done["committed"]) <= ids  # every committed write is there
    assert longest <= PAUSE_BOUND
    assert upgrade.stack.outputs()["mastodon_env"] == env_before


def test_a_second_up_without_the_guard_changes_nothing(upgrade):
    upgrade.stack.configure({**upgrade.config, "postgresVersion": 17}, {})
    upgrade.stack.up()
    changes = upgrade.stack.last_changes()
    assert set(changes) == {"same"}, changes
    assert upgrade.cluster()["version"] == "17"
