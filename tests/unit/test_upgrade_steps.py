"""The blue/green upgrade's host steps, their pure parts: what `publish` refuses and how it says
so, the subscription's state from its rows, the peer's connection string (no password in it),
catch_up's report. The steps against PostgreSQL: tests/lab/test_upgrade_bluegreen.py."""

from __future__ import annotations

import common
import pooler
import pytest
import upgrade
import upgrade_checks
import upgrade_verifier

H1 = "10.227.0.11"
WORKER = [{"pid": 4242, "received_lsn": "0/3000100", "latest_end_lsn": "0/3000100"}]


def test_a_table_without_a_primary_key_or_replica_identity_is_refused_by_name():
    tables = [
        {"name": "public.accounts_tags", "unlogged": False},
        {"name": 'public."Odd"', "unlogged": False},
    ]
    assert upgrade_checks.carry_refusals(tables, 0) == [
        'table(s) public.accounts_tags, public."Odd" have no primary key and no replica '
        "identity: logical replication cannot carry their updates and deletes (the old primary "
        "would refuse them); give each a primary key, or `ALTER TABLE <name> REPLICA IDENTITY "
        "USING INDEX <a unique index on NOT NULL columns>` (or REPLICA IDENTITY FULL)"
    ]


def test_unlogged_tables_and_large_objects_are_refused_with_their_fix():
    refusals = upgrade_checks.carry_refusals([{"name": "public.cache", "unlogged": True}], 3)
    assert refusals == [
        "unlogged table(s) public.cache are not replicated: `ALTER TABLE <name> SET LOGGED` "
        "first, or empty them",
        "3 large object(s) in pg_largeobject are not replicated: move them into bytea columns "
        "or remove them (lo_unlink) before the upgrade",
    ]


def test_a_database_logical_replication_carries_is_not_refused():
    assert upgrade_checks.carry_refusals([], 0) == []


class Catalog:
    """Cluster.sql and sql_json answering from fixed rows."""

    def __init__(self, tables: list[dict], large_objects: int):
        self.tables, self.large_objects = tables, large_objects

    def sql_json(self, query, database="postgres"):
        assert "relreplident" in query and database == "mastodon_production"
        return self.tables

    def sql(self, statement, database="postgres"):
        assert "pg_largeobject_metadata" in statement
        return str(self.large_objects)


def test_check_carried_raises_one_error_naming_the_database_and_every_cause():
    catalog = Catalog([{"name": "public.statuses_tags", "unlogged": False}], 1)
    with pytest.raises(common.HostError) as refused:
        upgrade_checks.check_carried(catalog, "mastodon_production")
    message = str(refused.value)
    assert message.startswith("database mastodon_production: table(s) public.statuses_tags ")
    assert message.endswith("remove them (lo_unlink) before the upgrade")


def test_in_sync_when_every_table_is_ready_and_the_slot_confirmed_the_peers_lsn():
    tables = [{"name": "statuses", "state": "r"}, {"name": "accounts", "state": "r"}]
    peer = {"current_lsn": "0/3000100", "confirmed_lsn": "0/3000100"}
    assert upgrade.sync_report(tables, WORKER, peer, 0) == {
        "tables": 2, "not_ready": [], "worker_running": True, "received_lsn": "0/3000100",
        "peer_lsn": "0/3000100", "confirmed_lsn": "0/3000100", "lag_bytes": 0, "in_sync": True,
    }  # fmt: skip


def test_not_in_sync_while_a_table_copies_or_the_slot_lags_past_the_limit():
    copying = [{"name": "statuses", "state": "d"}, {"name": "accounts", "state": "r"}]
    peer = {"current_lsn": "1/0", "confirmed_lsn": "0/FFFFFF00"}
    report = upgrade.sync_report(copying, WORKER, peer, 1 << 20)
    assert (report["not_ready"], report["lag_bytes"]) == (["statuses"], 256)
    assert report["in_sync"] is False
    ready = [{"name": "statuses", "state": "r"}]
    assert upgrade.sync_report(ready, WORKER, peer, 255)["in_sync"] is False
    assert upgrade.sync_report(ready, WORKER, peer, 256)["in_sync"] is True


def test_not_in_sync_without_a_slot_a_worker_or_any_table():
    ready = [{"name": "statuses", "state": "r"}]
    no_slot = {"current_lsn": "0/10", "confirmed_lsn": ""}
    assert upgrade.sync_report(ready, WORKER, no_slot, 1 << 20)["lag_bytes"] is None
    assert upgrade.sync_report(ready, WORKER, no_slot, 1 << 20)["in_sync"] is False
    peer = {"current_lsn": "0/10", "confirmed_lsn": "0/10"}
    stopped = [{"pid": None, "received_lsn": None, "latest_end_lsn": None}]
    assert upgrade.sync_report(ready, stopped, peer, 0)["in_sync"] is False
    assert upgrade.sync_report([], WORKER, peer, 0)["in_sync"] is False


def test_the_peer_connection_verifies_tls_and_reads_the_password_from_a_file():
    params = {
        "peer_address": H1, "peer_port": 5432, "db_name": "mastodon_production",
        "replication_user": "replicator", "replication_password": "secret-0123456789abc",
    }  # fmt: skip
    conninfo = upgrade.peer_conninfo(params)
    assert conninfo == (
        f"host={H1} port=5432 dbname=mastodon_production user=replicator sslmode=verify-full "
        f"sslrootcert=/etc/postgresql/mastodon-data-upgrade/{H1}.crt "
        "passfile=/var/lib/postgresql/.mdata-upgrade.pgpass"
    )
    assert params["replication_password"] not in conninfo


def test_a_subscription_is_named_after_its_publisher():
    assert upgrade.subscription_name(H1) == "mdata_from_10_227_0_11"
    assert common.NAME_RE.match(upgrade.subscription_name("fd00::a:1"))


def test_catch_up_reads_the_peers_notice():
    notice = "NOTICE:  caught up to 0/5A3B2C8 in 0.012 s\n"
    assert upgrade.CAUGHT_UP.search(notice).groups() == ("0/5A3B2C8", "0.012")


def test_an_unknown_action_names_the_known_ones():
    known = r"\(one of \['catch_up', 'detach', 'pool_verifier', 'prepare_logical', 'publish', "
    with pytest.raises(common.HostError, match=r"unknown upgrade action 'flip' " + known):
        upgrade.step({"action": "flip", "postgres_version": 17, "port": 5432})


class Roles:
    """pg_authid's rolpassword of one role, and the statements sent."""

    def __init__(self, verifier: str | None):
        self.verifier, self.statements = verifier, []

    def sql_json(self, query, database="postgres"):
        return [{"rolpassword": self.verifier}]

    def sql(self, statement, quiet_errors=False, database="postgres"):
        assert quiet_errors  # the statement holds a verifier
        self.statements.append(statement)
        return ""


def test_the_new_primary_gets_the_old_primarys_verifier_from_its_public_part():
    password = "db-password-0123456789"
    old = common.scram_verifier(password)
    public = upgrade_verifier.scram_public_part(Roles(old), "mastodon")
    assert old.startswith(f"SCRAM-SHA-256${public}$")
    params = {"db_user": "mastodon", "db_password": password, "db_user_scram": public}
    other = Roles(common.scram_verifier(password))  # the same password, another salt
    assert upgrade_verifier.ensure_same_verifier(other, params) is True
    assert other.statements == [f"ALTER ROLE \"mastodon\" PASSWORD '{old}';"]
    assert upgrade_verifier.ensure_same_verifier(Roles(old), params) is False


def test_a_role_without_a_scram_verifier_is_a_clear_error():
    with pytest.raises(common.HostError, match="role mastodon has no SCRAM verifier here"):
        upgrade_verifier.scram_public_part(Roles(None), "mastodon")


def test_seed_gives_this_servers_pool_the_new_verifier_and_keeps_its_other_roles(
    monkeypatch, tmp_path
):
    userlist = tmp_path / "userlist.txt"
    userlist.write_text('"mastodon" "SCRAM-SHA-256$4096:own$a:b"\n"mdata_monitor" "SCRAM-m"\n')
    monkeypatch.setattr(pooler, "USERLIST", userlist)
    monkeypatch.setattr(pooler, "write_if_changed", write_as_is)
    reloads = []
    monkeypatch.setattr(pooler, "running", lambda: True)
    monkeypatch.setattr(pooler, "reload", lambda: reloads.append(1))
    assert pooler.refresh_user("mastodon", "SCRAM-SHA-256$4096:old$c:d") is True
    assert userlist.read_text() == (
        '"mastodon" "SCRAM-SHA-256$4096:old$c:d"\n"mdata_monitor" "SCRAM-m"\n'
    )
    assert reloads == [1]
    assert pooler.refresh_user("mastodon", "SCRAM-SHA-256$4096:old$c:d") is False  # again
    assert reloads == [1]


def test_a_new_replicas_pool_gets_the_verifier_once_it_replays_it(monkeypatch):
    password = "db-password-0123456789"
    old = common.scram_verifier(password)
    public = upgrade_verifier.scram_public_part(Roles(old), "mastodon")
    params = {"db_user": "mastodon", "db_password": password, "db_user_scram": public}
    written = []
    monkeypatch.setattr(upgrade_verifier, "refresh_user", lambda *a: written.append(a) or True)
    assert upgrade_verifier.pool_verifier(Roles(old), params) == {
        "changed": ["pool's auth file the old primary's verifier"]
    }
    assert written == [("mastodon", old)]
    monkeypatch.setattr(upgrade_verifier, "VERIFIER_WAIT", 0)
    behind = Roles(common.scram_verifier(password))  # its own verifier: not replayed yet
    with pytest.raises(common.HostError, match="has not replayed the old primary's verifier"):
        upgrade_verifier.pool_verifier(behind, params)
    assert written == [("mastodon", old)]


def test_no_pool_on_the_server_no_auth_file_written(monkeypatch, tmp_path):
    monkeypatch.setattr(pooler, "USERLIST", tmp_path / "absent.txt")
    assert pooler.refresh_user("mastodon", "SCRAM-SHA-256$4096:old$c:d") is False
    assert not (tmp_path / "absent.txt").exists()


def write_as_is(path, text, mode=0o644, owner=None):
    """common.write_if_changed without the chown (the test runs as any user)."""
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


CERT = "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----"


class Asked:
    """What the pooler step asks this server's catalogs: rows of its query, the query seen."""

    def __init__(self, rows: list[dict]):
        self.rows, self.queries = rows, []

    def sql_json(self, query, database="postgres"):
        self.queries.append(query)
        return self.rows


def test_a_pool_of_the_generation_left_keeps_sending_writes_to_the_upgrades_publisher():
    # After the cut-over the old primary subscribes to the new one and Mastodon's role is
    # read-only there (catalogs its replicas share): a pooler run keeps DB_NAME on the new one.
    catalog = Asked([{"host": "10.0.0.21"}])
    assert pooler.upgrade_publisher(catalog, {"db_user": "mastodon"}) == "10.0.0.21"
    (query,) = catalog.queries
    assert "pg_subscription" in query and "r.rolname = 'mastodon'" in query
    assert "'default_transaction_read_only=on' = ANY (d.setconfig)" in query
    assert pooler.upgrade_publisher(Asked([]), {"db_user": "mastodon"}) is None
    params = {"db_name": "mastodon_production", "read_db_name": "mastodon_production_replica",
              "private_address": "10.0.0.2", "port": 5432}  # fmt: skip
    assert pooler.databases(params, "10.0.0.21") == {
        "mastodon_production": "host=10.0.0.21 port=5432 dbname=mastodon_production",
        "mastodon_production_replica": "host=10.0.0.2 port=5432 dbname=mastodon_production",
    }


def test_trusted_servers_keeps_each_certificate_once(monkeypatch):
    own, primary, new = CERT.format("own"), CERT.format("primary"), CERT.format("new")
    monkeypatch.setattr(pooler, "trust_anchor", lambda cluster: own + "\n")
    # A pooler run after the cut-over keeps what the file trusts (the new primary's, which
    # the cut-over added); run again, it writes the same text.
    kept = f"{own}\n{primary}\n{new}\n"
    text = pooler.trusted_servers({"primary_ca_cert": primary}, None, kept)
    assert text == kept
    assert pooler.trusted_servers({"primary_ca_cert": primary}, None, text) == kept
