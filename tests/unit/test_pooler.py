"""host/pooler.py's pure parts (the PgBouncer configuration it writes, when it restarts rather
than reloads), app_hba_lines of common.py, and Mastodon's view of the emitted variables
(config/database.yml, tests/mastodon_database.py) for a pooled and an unpooled stack."""

from __future__ import annotations

import subprocess

import common
import pooler
import pytest

from mastodon_data import outputs
from mastodon_data.config import PoolSettings
from tests.mastodon_database import database_config, erb_value, migration_environment

PARAMS = {
    "postgres_version": 15,
    "port": 5432,
    "private_address": "10.0.0.2",
    "primary_address": "10.0.0.1",
    "db_name": "mastodon_production",
    "read_db_name": "mastodon_production_replica",
    "db_user": "mastodon",
    "pgbouncer_port": 6432,
    "pool_size": 45,
    "pgbouncer_max_client_conn": 1000,
    "pgbouncer_open_files": 4096,
    "monitor_user": "",
}


def test_ini_is_a_transaction_pool_with_tls_both_sides_and_scram():
    text = pooler.ini_text(PARAMS, common.Cluster(15))
    # DB_NAME writes on the primary; the read pool reads this host's own PostgreSQL.
    assert (
        "[databases]\n"
        "mastodon_production = host=10.0.0.1 port=5432 dbname=mastodon_production\n"
        "mastodon_production_replica = host=10.0.0.2 port=5432 dbname=mastodon_production\n\n"
        in text
    )
    # A switchover points DB_NAME at the new primary, nothing else.
    moved = pooler.ini_text(PARAMS, common.Cluster(15), write_host="10.0.0.3")
    assert moved == text.replace("host=10.0.0.1", "host=10.0.0.3")
    values = pooler.ini_settings(text)
    assert {key: values[key] for key in (
        "listen_addr", "listen_port", "pool_mode", "default_pool_size", "max_db_connections",
        "max_user_connections", "reserve_pool_size", "max_client_conn", "auth_type", "auth_file",
        "client_tls_sslmode", "client_tls_cert_file", "client_tls_key_file", "server_tls_sslmode",
        "server_tls_ca_file",
    )} == {
        "listen_addr": "10.0.0.2",
        "listen_port": "6432",
        "pool_mode": "transaction",
        "default_pool_size": "45",
        "max_db_connections": "45",  # never more backends than the pool, whatever the users
        "max_user_connections": "45",  # nor both pools together
        "reserve_pool_size": "0",
        "max_client_conn": "1000",
        "auth_type": "scram-sha-256",
        "auth_file": "/etc/pgbouncer/userlist.txt",
        "client_tls_sslmode": "require",
        "client_tls_cert_file": "/etc/postgresql/15/main/server.crt",
        "client_tls_key_file": "/etc/postgresql/15/main/server.key",
        "server_tls_sslmode": "verify-full",
        "server_tls_ca_file": "/etc/pgbouncer/server-ca.crt",
    }  # fmt: skip
    assert "password" not in text.lower()


def test_userlist_holds_the_verifier_not_a_password():
    verifier = common.scram_verifier("a-password-of-twenty-chars")
    line = pooler.userlist_text({"mastodon": verifier})
    assert line == f'"mastodon" "{verifier}"\n' and "a-password" not in line


def test_the_unit_gets_the_checked_open_file_limit():
    assert pooler.limit_text(PARAMS) == "[Service]\nLimitNOFILE=4096\n"


@pytest.mark.parametrize(
    ("change", "restart"),
    [({"pool_size": 60}, False), ({"pgbouncer_max_client_conn": 2000}, False),
     ({"pgbouncer_port": 6433}, True), ({"private_address": "10.0.0.9"}, True)],
)  # fmt: skip
def test_only_listening_changes_need_a_restart(change, restart):
    before = pooler.ini_settings(pooler.ini_text(PARAMS, common.Cluster(15)))
    after = pooler.ini_settings(pooler.ini_text({**PARAMS, **change}, common.Cluster(15)))
    assert any(before[k] != after[k] for k in pooler.RESTART_KEYS) is restart


def test_pg_hba_lets_every_servers_pool_in_only_when_pooled():
    params = {
        "db_name": "mastodon_production",
        "db_user": "mastodon",
        "pool_peers": [],
        "private_address": "10.0.0.2",
        "postgres_allowed_sources": ["10.0.1.0/24"],
        "monitor_user": "",
    }
    assert common.app_hba_lines(params) == [
        "hostssl mastodon_production mastodon 10.0.1.0/24 scram-sha-256"
    ]
    pooled = {**params, "pool_peers": ["10.0.0.1", "10.0.0.2"]}
    assert common.app_hba_lines(pooled) == [
        "hostssl mastodon_production mastodon 10.0.1.0/24 scram-sha-256",
        "hostssl mastodon_production mastodon 10.0.0.1/32 scram-sha-256",
        "hostssl mastodon_production mastodon 10.0.0.2/32 scram-sha-256",
    ]
    inside = {**pooled, "postgres_allowed_sources": ["10.0.0.0/24", "10.0.0.2/32"]}
    assert len(common.app_hba_lines(inside)) == 3  # already listed: not twice


def test_erb_chains_fall_through_nil_only():
    assert erb_value("ENV['A'] || ENV['B'] || 'x'", {"B": "b"}) == "b"
    assert erb_value("ENV['A'] || 5432", {}) == "5432"
    assert erb_value("ENV['A'] || 'x'", {"A": ""}) == ""  # '' is truthy in Ruby
    assert erb_value("(ENV['A'] || '').to_json", {"A": 'p"w'}) == '"p\\"w"'


def endpoints(replica: bool, pool: PoolSettings | None) -> dict:
    return outputs.server_endpoints(
        "10.0.0.1", "10.0.0.2" if replica else None, 5432, "mastodon_production", "mastodon", pool
    )


def test_mastodon_reads_pooled_primary_and_replica_and_direct_migrations():
    ends = endpoints(True, PoolSettings(6432, 45, 1000, 4096))
    env = outputs.env_output(ends, "pw-0123456789abcdef")
    app = database_config(env)
    assert [(c["host"], c["port"], c["prepared_statements"]) for c in app.values()] == [
        ("10.0.0.1", 6432, False),
        ("10.0.0.2", 6432, False),
    ]
    assert app["replica"]["replica"] is True and app["replica"]["sslmode"] == "require"
    # The primary's pool is DB_NAME; every server's read pool is the second name.
    assert (app["primary"]["database"], app["replica"]["database"]) == (
        "mastodon_production", "mastodon_production_replica",
    )  # fmt: skip
    migrate = database_config(migration_environment(env, outputs.migration_output(ends)))
    primary = migrate["primary"]
    assert (primary["host"], primary["port"], primary["prepared_statements"]) == (
        "10.0.0.1", 5432, True,
    )  # fmt: skip


def test_mastodon_reads_direct_servers_without_pgbouncer():
    app = database_config(outputs.env_output(endpoints(True, None), "pw-0123456789abcdef"))
    assert [(c["host"], c["port"], c["prepared_statements"]) for c in app.values()] == [
        ("10.0.0.1", 5432, True),
        ("10.0.0.2", 5432, True),
    ]
    alone = database_config(outputs.env_output(endpoints(False, None), "pw-0123456789abcdef"))
    assert set(alone) == {"primary"}  # no REPLICA_DB_NAME: Mastodon reads the primary only


def test_the_replication_check_goes_past_the_pools():
    from mastodon_data.cli.check_replication import direct_env

    ends = endpoints(True, PoolSettings(6432, 45, 1000, 4096))
    stack = {
        "mastodon_env": outputs.env_output(ends, "pw-0123456789abcdef"),
        "postgres": outputs.postgres_output(ends),
    }
    env = direct_env(stack)
    assert (env["DB_PORT"], env["DB_NAME"]) == (5432, "mastodon_production")
    assert stack["mastodon_env"]["DB_PORT"] == "6432"  # the stack's own env is left as it is


class SystemdHost:
    """A host where systemd owns PgBouncer: records the commands, writes the drop-in nowhere
    real (it goes to `dropin`)."""

    def __init__(self, monkeypatch, tmp_path, active: bool):
        self.calls: list[str] = []
        self.active = active
        monkeypatch.setattr(pooler, "systemd_running", lambda: True)
        monkeypatch.setattr(pooler, "run", self)
        monkeypatch.setattr(pooler, "SYSTEMD_DROPIN", tmp_path / "pgbouncer.service.d" / "x.conf")
        monkeypatch.setattr(pooler, "wait_listening", lambda params: None)

    def __call__(self, argv, **kwargs):
        self.calls.append(" ".join(argv))
        code = 0 if self.active or "is-active" not in argv else 3
        return subprocess.CompletedProcess(argv, code, "", "")


def test_with_systemd_the_unit_gets_its_file_limit_then_is_enabled_and_started(
    monkeypatch, tmp_path
):
    host = SystemdHost(monkeypatch, tmp_path, active=False)
    assert pooler.apply(PARAMS, changed=True, restart=False) == "started"
    assert host.calls == [
        "systemctl daemon-reload",
        "systemctl is-active --quiet pgbouncer",
        "systemctl enable --now pgbouncer",
    ]
    assert pooler.SYSTEMD_DROPIN.read_text() == "[Service]\nLimitNOFILE=4096\n"


def test_with_systemd_a_change_is_a_reload_and_the_limit_a_restart(monkeypatch, tmp_path):
    host = SystemdHost(monkeypatch, tmp_path, active=True)
    pooler.SYSTEMD_DROPIN.parent.mkdir()
    pooler.SYSTEMD_DROPIN.write_text("[Service]\nLimitNOFILE=4096\n")
    assert pooler.apply(PARAMS, changed=True, restart=False) == "reloaded"
    assert host.calls == ["systemctl is-active --quiet pgbouncer", "systemctl reload pgbouncer"]
    host.calls.clear()
    assert pooler.apply({**PARAMS, "pgbouncer_open_files": 8192}, changed=True, restart=False) == (
        "restarted"
    )  # a new LimitNOFILE needs a new process
    assert host.calls == [
        "systemctl daemon-reload",
        "systemctl is-active --quiet pgbouncer",
        "systemctl stop pgbouncer",
        "systemctl enable --now pgbouncer",
    ]
    host.calls.clear()
    assert pooler.apply({**PARAMS, "pgbouncer_open_files": 8192}, changed=False, restart=False) == (
        "unchanged"
    )


def test_pgbouncer_trusts_its_own_server_the_primarys_cas_and_a_new_primary(monkeypatch, tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----".format
    own, promoted = pem("own"), pem("promoted")
    primary_ca = f"{pem('primary CA')}\n{pem('next CA')}"  # a CA being rotated: both
    monkeypatch.setattr(pooler, "trust_anchor", lambda cluster: own)
    params = {**PARAMS, "primary_ca_cert": primary_ca + "\n"}
    cluster = common.Cluster(15)
    assert pooler.trusted_servers(params, cluster) == f"{own}\n{primary_ca}\n"
    assert pooler.trusted_servers(params, cluster, promoted) == (
        f"{own}\n{primary_ca}\n{promoted}\n"
    )
    # On the primary its own anchor is the CA it reports: once only.
    same = {**PARAMS, "primary_ca_cert": own}
    assert pooler.trusted_servers(same, cluster) == f"{own}\n"
