"""Debian 13 hosts running PostgreSQL 17 (issue 24, step 1), through the engine on a lab of its
own whose two hosts run the Debian 13 image (lab/rootfs.py): `pulumi up` of a hosts-mode stack
with postgresVersion 17, backups into the lab's S3 store and the exporters makes the primary and
a replica with trixie's packages (PostgreSQL 17, PgBouncer 1.24, pgBackRest 2.55, Debian's
exporters); the replica streams, both pools answer with TLS, a full backup is in the repository,
every exporter target answers, a second `up` changes nothing, a certificate near its end is
renewed by a plain `up` (trixie's OpenSSL 3.5), and a switchover under a write load loses no row
and fails no client."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import backup_metrics
import psycopg
import pytest
import yaml
from labkit import applied, new_secrets, own_lab, wait_until
from promlab import built_exporters, monitored_with_backups

from lab import namespaces as lab_hosts
from lab import rootfs
from lab.bench_switchover import switchover_under_load
from lab.s3 import LabS3
from lab.stack import LabStack
from lab.write_load import TABLE
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
S3_DIR, S3_PORTS = Path("/var/lib/mastodon-lab-deb13-s3"), (19060, 19061)
BUCKET = "ml13-pg-backups"
RESOURCES = 23  # with the exporters' builds the program copies to each host (3 per host)
REPLAY_WAIT = 30  # seconds for a row to reach the replica (at rest: under a second)


@pytest.fixture(scope="module")
def deb13(tmp_path_factory):
    if not rootfs.built(IMAGE):
        pytest.fail(f"the Debian 13 image {IMAGE} is not built: run `make rootfs`")
    store = LabS3(DEB13_LAB.operator_address, S3_DIR, *S3_PORTS)
    with built_exporters(), own_lab(DEB13_LAB, 2):
        try:
            store.start()
            store.make_bucket(BUCKET)
            workdir = tmp_path_factory.mktemp("deb13")
            settings, added_secrets = monitored_with_backups(DEB13_LAB, store, BUCKET)
            stack_secrets = new_secrets(DEB13_LAB) | added_secrets
            stack = LabStack("deb13test", workdir / "stack")
            stack.prepare()
            config = lab_hosts.stack_config(DEB13_LAB, 1, 2) | settings
            config["postgresVersion"] = VERSION
            outputs = applied(stack, config, stack_secrets)
            yield {"stack": stack, "outputs": outputs, "dir": workdir}
        finally:
            store.stop()


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


def tool(stack: LabStack, *args: str) -> dict:
    """`mastodon-data <args>` as an operator runs it on the stack: its JSON report."""
    result = subprocess.run(
        [COMMAND, *args[:1], "--stack", stack.name, "--cwd", str(stack.workdir), *args[1:]],
        capture_output=True, text=True, timeout=900, env=stack.env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_pgbackrest_archives_and_backs_up_to_the_bucket(deb13):
    primary = deb13["outputs"]["steps"]["backup-ml13-h1"]
    assert (primary["stanza"], primary["restarted"]) == ("checked", True)
    report = tool(deb13["stack"], "backups", "now", "--type", "full")
    assert (report["last_backup"]["type"], report["status"]) == ("full", "ok")
    report = tool(deb13["stack"], "backups", "check")  # switches and archives the WAL
    assert report["healthy"] is True and report["archive"]["failed_count"] == 0


def rule_metrics(rules: str) -> dict[str, set[str]]:
    """The metric names the stack's alert rules read, by the job that exports them."""
    exprs = [rule["expr"] for group in yaml.safe_load(rules)["groups"] for rule in group["rules"]]
    names = set(re.findall(r"\b(?:pg|pgbouncer|node|pgbackrest|ssl)_[a-z_]+\b", " ".join(exprs)))
    jobs = {"pgbouncer_": "pgbouncer", "pg_": "postgres", "ssl_": "ssl"}
    by_job: dict[str, set[str]] = {}
    for name in names:
        job = next((j for prefix, j in jobs.items() if name.startswith(prefix)), "node")
        by_job.setdefault(job, set()).add(name)
    return by_job


def scraped(targets: list[dict]) -> dict[str, dict[str, list[str]]]:
    """job -> metric name -> its sample lines, over every target of the job."""
    found: dict[str, dict[str, list[str]]] = {}
    for group in targets:
        labels = group["labels"]
        path = labels.get("__metrics_path__", "/metrics")
        query = "&".join(f"{k[8:]}={v}" for k, v in labels.items() if k.startswith("__param_"))
        url = f"http://{group['targets'][0]}{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:
            for line in response.read().decode().splitlines():
                if line[:1].isalpha():
                    name = line.split("{")[0].split()[0]
                    found.setdefault(labels["job"], {}).setdefault(name, []).append(line)
    return found


def test_every_exporter_target_answers_with_the_metrics_the_rules_read(deb13):
    """After the backup above: its completion time appears with the backup metrics' next run."""
    wanted = rule_metrics(deb13["outputs"]["alert_rules"])
    assert sorted(wanted) == ["node", "pgbouncer", "postgres", "ssl"]
    found = {}

    def complete() -> bool:
        found.update(scraped(deb13["outputs"]["prometheus_targets"]))
        return all(names <= set(found[job]) for job, names in wanted.items())

    wait_until(complete, backup_metrics.REPEAT + 30, "every metric the rules read")
    for job, up in (("postgres", "pg_up"), ("pgbouncer", "pgbouncer_up")):
        assert [line.split()[-1] for line in found[job][up]] == ["1", "1"], job
    assert [line.split()[-1] for line in found["ssl"]["ssl_probe_success"]] == ["1"] * 4


def test_a_second_up_changes_nothing(deb13):
    assert deb13["stack"].last_changes() == {"create": RESOURCES}
    deb13["stack"].up()
    assert deb13["stack"].last_changes() == {"same": RESOURCES}


CONF, CA = f"/etc/postgresql/{VERSION}/main", "/etc/postgresql/mastodon-data-ca"
STARTED = "runuser -u postgres -- psql -AtX -c 'SELECT pg_postmaster_start_time()'"


def days_left(index: int) -> float:
    """Days until the end of the host's server certificate, as its OpenSSL reads it."""
    read_end = f"openssl x509 -in {CONF}/server.crt -noout -enddate | cut -d= -f2"
    end = ssh(index, f'date -d "$({read_end})" +%s').stdout
    return (int(end) - time.time()) / 86400


def test_a_certificate_near_its_end_is_renewed_by_a_plain_up(deb13):
    """Trixie's OpenSSL 3.5 issues and reads the certificates: the primary's, issued again
    valid 5 days (test only), is renewed for certificateDays by the next up, with no restart."""
    started = ssh(1, STARTED).stdout
    extensions = f"subjectAltName=IP:{PRIMARY}\\nextendedKeyUsage=serverAuth\\n"
    short = ssh(1, (
        f"cd /tmp && openssl req -new -key {CONF}/server.key -subj /CN={PRIMARY} -out t.csr"
        f" && printf '{extensions}' > t.ext && openssl x509 -req -in t.csr -CA {CA}/ca.crt"
        f" -CAkey {CA}/ca.key -days 5 -extfile t.ext -out {CONF}/server.crt && rm t.csr t.ext"
    ))  # fmt: skip
    assert short.returncode == 0 and 4 < days_left(1) <= 5, short.stderr
    deb13["stack"].up()
    assert 824 < days_left(1) <= 825  # certificateDays
    assert ssh(1, f"cat {CONF}/mastodon-data-renewals").stdout.strip() == "1"
    assert ssh(1, f"openssl verify -CAfile {CA}/ca.crt {CONF}/server.crt").returncode == 0
    assert ssh(1, STARTED).stdout == started


def test_a_switchover_under_load_loses_no_row_and_fails_no_client(deb13):
    env = deb13["stack"].outputs()["mastodon_env"]
    switched = switchover_under_load(deb13["stack"], env, "ml13-h2", clients=4)
    load, summary, outputs = switched["load"], switched["summary"], switched["outputs"]
    assert load.errors == [] and len(load.rows) > 20
    select = f"SELECT client || ',' || n FROM {TABLE}"
    shown = ssh(2, f'runuser -u postgres -- psql -AtX -d mastodon_production -c "{select}"')
    assert {tuple(map(int, row.split(","))) for row in shown.stdout.split()} == load.rows
    assert (summary["old_primary"], summary["switched_to"]) == ("ml13-h1", "ml13-h2")
    assert outputs["mastodon_env"]["DB_HOST"] == REPLICA
    receiver = outputs["replication"]["ml13-h1"]["receiver"][0]
    assert (receiver["status"], receiver["sender_host"]) == ("streaming", REPLICA)
    deb13["stack"].preview("--refresh", "--expect-no-changes")
