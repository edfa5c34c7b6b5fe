"""The connection budget at preview (mastodon_data/config/pooling.py, managed.py): Mastodon's
clients against max_client_conn, PgBouncer's open files, max_connections and DigitalOcean's pool
limit; the failing link named with its fix, and the limits written on the hosts the checked ones."""

from __future__ import annotations

import re

import common  # mastodon_data/host/, imported by its own name as on a host
import pooler
import pytest

from mastodon_data import plan
from mastodon_data.config import SECRET_KEYS, ConfigError, parse_settings
from tests.fixtures import DROPLETS, MANAGED, hosts_stack

ALL_SECRETS = frozenset(SECRET_KEYS)

HOSTS = hosts_stack(count=3, replicas=2)
HOSTS_SECRETS = {"sshPrivateKey", "replicationPassword", "dbPassword"}
FIX = re.compile(r"pulumi config set mastodon-data:(\w+) (\S+)")


def problems(raw: dict, secrets=ALL_SECRETS) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_settings(raw, secrets)
    return str(error.value).splitlines()


def test_hachyderm_shape_is_refused_with_its_fix():
    """PgBouncer allowed 2,000 clients with 1,024 open files (hachyderm, 2025-01-24)."""
    shape = {**DROPLETS, "pgbouncerMaxClientConn": 2000, "pgbouncerOpenFiles": 1024}
    assert problems(shape) == [
        "mastodon-data:pgbouncerOpenFiles = 1024: too small for PgBouncer's connections, a "
        "descriptor each: pgbouncerMaxClientConn 2000 + the pool's 45 server connections + 64 "
        "of its own = 2109; past its limit PgBouncer refuses clients. Fix: pulumi config set "
        "mastodon-data:pgbouncerOpenFiles 2109 (or lower pgbouncerMaxClientConn)"
    ]
    pool = parse_settings({**shape, "pgbouncerOpenFiles": 2109}, ALL_SECRETS).replication.pool
    assert (pool.pgbouncer_max_client_conn, pool.pgbouncer_open_files) == (2000, 2109)


def test_two_thousand_clients_name_every_link_and_its_fixes_converge():
    """Mastodon's own 2,000 clients (40 x 25 + 900 + 100) against the defaults: each failing
    link is named; setting what each fix says, round after round, ends in a valid budget."""
    raw = {**DROPLETS, "pumaProcesses": 40, "pumaThreads": 25, "sidekiqThreads": 900,
           "streamingDbPool": 100}  # fmt: skip
    first = problems(raw)
    assert [line.split(" = ")[0] for line in first] == [
        "mastodon-data:maxConnections",
        "mastodon-data:pgbouncerMaxClientConn",
    ]
    assert "= 40 x 25 + 900 + 100 = 2000, twice during a rolling restart" in first[1]
    for _ in range(3):
        try:
            settings = parse_settings(raw, ALL_SECRETS)
            break
        except ConfigError as error:
            for key, value in FIX.findall(str(error)):
                raw[key] = int(value)
    else:
        pytest.fail(f"the fixes did not converge: {raw}")
    assert (raw["maxConnections"], raw["pgbouncerMaxClientConn"], raw["pgbouncerOpenFiles"]) == (
        2013,
        4000,
        4000 + 2000 + 64,
    )
    assert settings.replication.max_connections == 2013


def test_managed_pool_limit_refused_with_a_larger_cluster():
    raw = {**MANAGED, "dbClusterSize": "db-s-1vcpu-2gb", "poolSize": 47, "sidekiqThreads": 100}
    assert problems(raw) == [
        "mastodon-data:dbClusterSize = 'db-s-1vcpu-2gb': too small for Mastodon's clients: "
        "pumaProcesses x pumaThreads + sidekiqThreads + streamingDbPool = 2 x 5 + 100 + 10 = "
        "120, more than db-s-1vcpu-2gb allows: 47 backend connections across its pools (25 per "
        "GiB of RAM, 3 reserved by DigitalOcean). Fix: pulumi config set "
        "mastodon-data:dbClusterSize db-s-4vcpu-8gb (197 connections) and pulumi config set "
        "mastodon-data:poolSize 120 (or lower pumaProcesses, pumaThreads, sidekiqThreads, "
        "streamingDbPool)"
    ]
    fixed = {**raw, "dbClusterSize": "db-s-4vcpu-8gb", "poolSize": 120}
    assert parse_settings(fixed, ALL_SECRETS).managed.pool_size == 120


def test_managed_pool_smaller_than_the_clients_is_raised_within_the_limit():
    assert problems({**MANAGED, "poolSize": 40}) == [
        "mastodon-data:poolSize = 40: smaller than Mastodon's clients: pumaProcesses x "
        "pumaThreads + sidekiqThreads + streamingDbPool = 2 x 5 + 25 + 10 = 45; the others wait "
        "for a connection. Fix: pulumi config set mastodon-data:poolSize 45"
    ]


def test_a_valid_budget_passes_with_the_values_it_was_checked_with():
    settings = parse_settings(DROPLETS, ALL_SECRETS)
    pool = settings.replication.pool
    assert (pool.size, pool.pgbouncer_max_client_conn, pool.pgbouncer_open_files) == (
        45,
        1000,
        4096,
    )
    assert settings.replication.max_connections == 100
    assert parse_settings(MANAGED, ALL_SECRETS).managed.pool_size == 50


def test_the_hosts_get_exactly_the_checked_limits():
    """Setting -> PoolSettings -> the pooler step's parameters -> pgbouncer.ini and the unit's
    LimitNOFILE; maxConnections -> the server step -> postgresql.conf's max_connections."""
    raw = {**HOSTS, "sidekiqThreads": 100, "maxConnections": 200,
           "pgbouncerMaxClientConn": 3000, "pgbouncerOpenFiles": 3500}  # fmt: skip
    settings = parse_settings(raw, HOSTS_SECRETS)
    checked = settings.replication
    steps = {s.name: s for s in plan.steps(checked, settings.hosts)}
    cluster = common.Cluster(checked.postgres_version)
    for name in ("pooler-db1", "pooler-db2", "pooler-db3"):
        params = steps[name].params
        ini = pooler.ini_settings(pooler.ini_text(params, cluster))
        assert int(ini["max_client_conn"]) == checked.pool.pgbouncer_max_client_conn == 3000
        assert int(ini["default_pool_size"]) == int(ini["max_db_connections"]) == 120
        assert pooler.limit_text(params) == "[Service]\nLimitNOFILE=3500\n"
    for name in ("primary", "replica-db2", "replica-db3"):
        params = {**steps[name].params, "private_address": "10.0.0.1"}
        assert common.server_settings(cluster, params)["max_connections"] == "200"
