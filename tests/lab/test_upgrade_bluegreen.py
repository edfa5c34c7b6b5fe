"""A blue/green major upgrade by logical replication (issue 24, item 2: its host steps,
mastodon_data/host/upgrade.py, driven here as a later command will drive them) on a lab of its
own (mlbg): a hosts-mode stack through the engine with a PostgreSQL 15 primary and a replica on
Debian 12 hosts (mlbg-h1, mlbg-h2, pools on), and a second stack whose one host (mlbg-h3) runs
the Debian 13 image: the same host scripts with postgresVersion 17 installed PostgreSQL 17 and
its pool there. Under 8 writing clients through Mastodon's env (lab/write_load.py) and one that
inserts into a table with a sequence: publish (wal_level=logical, a restart inside a pause),
seed, wait in sync, cut over inside the switchover's pause (its pause, repoint and resume
steps); then the old primary follows the new one and refuses Mastodon's writes, and a rollback
(the same steps the other way) fails no client. Figures go to results/upgrade_bluegreen.json.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from labkit import new_secrets, own_lab, wait_until, write_figures

from lab import bluegreen, rootfs
from lab import namespaces as lab_hosts
from lab.bluegreen import StatusWriter
from lab.write_load import TABLE, WriteLoad, connect
from mastodon_data.cli import host_ssh

pytestmark = [pytest.mark.lab, pytest.mark.engine]
IMAGE = rootfs.image_dir()
LAB = lab_hosts.Lab(
    prefix="mlbg",
    subnet="10.227.0.0/24",
    state_dir=Path("/var/lib/mastodon-lab-bluegreen"),
    images={3: IMAGE},
)
H1, H2, H3 = (LAB.host(i) for i in (1, 2, 3))
DB = bluegreen.DB
SYNC_WAIT = 120  # seconds for the initial copy to be in sync (at rest: about 2 s)
REVERSE_WAIT = 60  # seconds for a row on the new primary to reach the old one (at rest: < 1 s)
# The goal is a longest write pause of 5 s: measured (make bench-upgrade, and recorded
# here). Under the suite's load (3 files on 2 cores) the wal_level restart alone took up to
# 4.9 s, so a test allows 3 times the goal: it catches an outage, not a busy machine.
PAUSE_BOUND = 15.0  # seconds
FIGURES: dict[str, object] = {}
SCHEMA = (  # a sequence, and a table without a primary key (as Rails' `id: false` tables)
    "CREATE TABLE statuses (id bigserial PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO statuses (body) SELECT 'seeded' FROM generate_series(1, 5000)",
    "CREATE TABLE accounts_tags (account_id bigint NOT NULL, tag_id bigint NOT NULL)",
    "CREATE UNIQUE INDEX accounts_tags_pair ON accounts_tags (tag_id, account_id)",
    "INSERT INTO accounts_tags SELECT g, g % 7 FROM generate_series(1, 500) g",
    "CREATE MATERIALIZED VIEW tag_counts AS SELECT tag_id, count(*) FROM accounts_tags "
    "GROUP BY tag_id",
)


def psql(host: lab_hosts.LabHost, version: int, statement: str) -> str:
    return bluegreen.psql(LAB, host, version, statement)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not rootfs.built(IMAGE):
        pytest.fail(f"the Debian 13 image {IMAGE} is not built: run `make rootfs`")
    workdir = tmp_path_factory.mktemp("bluegreen")
    with own_lab(LAB, 3):
        stacks, key = bluegreen.both_stacks(LAB, new_secrets(LAB), workdir)
        env = stacks["old"]["outputs"]["mastodon_env"]
        with connect(env) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        upgrade = bluegreen.BlueGreen(stacks, key)
        try:
            yield {"stacks": stacks, "env": env, "upgrade": upgrade}
        finally:
            upgrade.close()
            write_figures("upgrade_bluegreen", FIGURES)


def test_publish_refuses_what_logical_replication_cannot_carry(lab):
    upgrade = lab["upgrade"]
    psql(H1, 15, "SELECT lo_from_bytea(0, 'x')")
    with pytest.raises(host_ssh.StepFailed) as refused:
        upgrade.upgrade(H1.name, "publish", peer=H3.name)
    message = str(refused.value)
    assert "table(s) public.accounts_tags have no primary key and no replica identity" in message
    assert "REPLICA IDENTITY USING INDEX" in message
    assert "1 large object(s) in pg_largeobject are not replicated" in message
    assert psql(H1, 15, "SHOW wal_level") == "replica"  # refused before changing anything
    psql(H1, 15, "SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
    psql(H1, 15, "ALTER TABLE accounts_tags REPLICA IDENTITY USING INDEX accounts_tags_pair")


ROWS_MD5 = "coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"


def checksums(host: lab_hosts.LabHost, version: int) -> dict[str, str]:
    tables = ("statuses", "accounts_tags", TABLE)
    return {
        table: psql(host, version, f"SELECT count(*) || ' ' || {ROWS_MD5} FROM {table} t")
        for table in tables
    }


def in_pool(env: dict) -> tuple:
    with connect(env) as conn:
        return conn.execute(
            "SELECT host(inet_server_addr()), current_setting('server_version_num')::int / 10000"
        ).fetchone()


def test_seed_sync_and_cut_over_under_load(lab):
    upgrade, env = lab["upgrade"], lab["env"]
    via_replica = {**env, "DB_HOST": H2.address}  # h2's pool sends DB_NAME to h1 too
    with WriteLoad(env) as load, WriteLoad(via_replica, first_client=100) as other:
        time.sleep(1)  # wal_level=logical: a restart inside a pause of both servers' pools
        published = upgrade.publish(H1.name, H3.name)
        time.sleep(1)
    assert load.errors == [] and other.errors == [] and published["restart_s"] is not None
    FIGURES.update(publish_restart_s=published["restart_s"],
                   publish_longest_write_pause_s=load.longest_pause_s,
                   publish_longest_write_pause_via_replica_s=other.longest_pause_s)  # fmt: skip
    assert max(load.longest_pause_s, other.longest_pause_s) <= PAUSE_BOUND
    upgrade.publish(H3.name, H1.name)  # for the way back, before clients
    psql(H1, 15, f"TRUNCATE {TABLE}")
    with WriteLoad(env) as load, StatusWriter(env) as statuses:
        scram = published["db_user_scram"]
        seeded = upgrade.upgrade(H3.name, "seed", peer=H1.name, db_user_scram=scram)
        assert seeded["changed"][-4:] == [
            "role's verifier the old primary's", "pool's auth file the old primary's verifier",
            "schema copied", "subscribed",
        ]  # fmt: skip
        assert in_pool({**env, "DB_HOST": H3.address}) == (H3.address, 17)  # its own pool
        FIGURES["sync_s"] = round(upgrade.in_sync(H3.name, H1.name, SYNC_WAIT), 2)
        views = upgrade.upgrade(H3.name, "refresh_views")
        assert views == {"refreshed": ["public.tag_counts"]}
        undone_cut_over(upgrade, env)
        time.sleep(1)
        cut = upgrade.cut_over(H1.name, H3.name, (H1.name, H2.name))
        FIGURES.update({f"cutover_{k}": v for k, v in cut.items()})
        time.sleep(2)
    FIGURES["cutover_longest_write_pause_s"] = load.longest_pause_s
    assert load.errors == [] and statuses.errors == []
    assert all(load.committed.values()) and len(statuses.ids) > 10
    rows = psql(H3, 17, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    assert {tuple(map(int, row.split(","))) for row in rows} == load.rows  # 0 lost
    assert psql(H3, 17, "SELECT count(*) FROM statuses WHERE body = 'x'") == str(len(statuses.ids))
    assert in_pool(env) == (H3.address, 17)  # the old env's pool: DB_NAME on the 17 primary
    with connect(env) as conn:  # the view, filled on the new primary
        assert conn.execute("SELECT sum(count) FROM tag_counts").fetchone() == (500,)
    assert load.longest_pause_s <= PAUSE_BOUND
    last, highest = psql(H3, 17, "SELECT last_value FROM statuses_id_seq"), max(statuses.ids)
    assert int(last) >= highest == int(psql(H3, 17, "SELECT max(id) FROM statuses"))


def undone_cut_over(upgrade, env: dict) -> None:
    """A cut-over whose new side cannot catch up (its subscription disabled) undoes itself:
    the old primary takes Mastodon's writes again through the same pools."""
    subscription = f"mdata_from_{H1.address.replace('.', '_')}"
    psql(H3, 17, f"ALTER SUBSCRIPTION {subscription} DISABLE")
    with pytest.raises(host_ssh.StepFailed, match=r"cut-over from mlbg-h1 to mlbg-h3 was undone"):
        upgrade.cut_over(H1.name, H3.name, (H1.name, H2.name), catch_up_wait=2)
    assert in_pool(env) == (H1.address, 15)
    with connect(env) as conn:
        conn.execute("INSERT INTO statuses (body) VALUES ('after the undo')")  # writable
    psql(H3, 17, f"ALTER SUBSCRIPTION {subscription} ENABLE")
    upgrade.in_sync(H3.name, H1.name, SYNC_WAIT)


def test_both_sides_hold_the_same_rows_and_the_old_refuses_mastodons_writes(lab):
    upgrade, env = lab["upgrade"], lab["env"]
    with connect(env) as conn:
        conn.execute(f"INSERT INTO {TABLE} VALUES (99, 0)")
    FIGURES["reverse_row_s"] = round(wait_until(
        lambda: psql(H1, 15, f"SELECT count(*) FROM {TABLE} WHERE client = 99") == "1",
        REVERSE_WAIT, "the new primary's row on the old one"), 2)  # fmt: skip
    upgrade.in_sync(H1.name, H3.name, REVERSE_WAIT)
    new, old = checksums(H3, 17), checksums(H1, 15)
    assert new == old and all(int(v.split()[0]) > 0 for v in new.values())
    direct = {**env, "DB_HOST": H1.address, "DB_PORT": "5432"}
    with connect(direct) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute(f"INSERT INTO {TABLE} VALUES (98, 0)")
    assert psql(H1, 15, "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL") == "1"


def test_the_steps_run_again_change_nothing_and_seed_refuses_after_the_cut_over(lab):
    upgrade = lab["upgrade"]
    again = upgrade.upgrade(H1.name, "publish", peer=H3.name)
    assert (again["created"], again["restart_s"], again["hba"]) == (False, None, False)
    with pytest.raises(
        host_ssh.StepFailed,
        match=r"this server was cut over to \(the old "
        r"primary follows it through slot mdata_from_10_227_0_13\): no seed",
    ):
        upgrade.upgrade(H3.name, "seed", peer=H1.name, db_user_scram=again["db_user_scram"])
    assert upgrade.upgrade(H1.name, "reverse", peer=H3.name)["changed"] == []
    assert upgrade.upgrade(H3.name, "detach", peer=H1.name) == {"detached": False}


def test_a_rollback_fails_no_client_and_loses_nothing(lab):
    upgrade, env = lab["upgrade"], lab["env"]
    psql(H3, 17, f"TRUNCATE {TABLE}")  # reaches the old primary too
    with WriteLoad(env) as load, StatusWriter(env) as statuses:
        time.sleep(2)
        back = upgrade.cut_over(H3.name, H1.name, (H1.name, H2.name))
        FIGURES.update({f"rollback_{k}": v for k, v in back.items()})
        time.sleep(2)
    FIGURES["rollback_longest_write_pause_s"] = load.longest_pause_s
    assert load.errors == [] and statuses.errors == [] and all(load.committed.values())
    rows = psql(H1, 15, f"SELECT client || ',' || n FROM {TABLE}").splitlines()
    assert {tuple(map(int, row.split(","))) for row in rows} == load.rows
    assert in_pool(env) == (H1.address, 15)
    assert load.longest_pause_s <= PAUSE_BOUND
    assert int(psql(H1, 15, "SELECT last_value FROM statuses_id_seq")) >= max(statuses.ids)
    upgrade.in_sync(H3.name, H1.name, REVERSE_WAIT)  # the 17 side follows again
    assert checksums(H3, 17) == checksums(H1, 15)
