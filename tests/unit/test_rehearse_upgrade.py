"""`python -m mastodon_data.cli.rehearse_upgrade` against the stand-in's API (no lab hosts: its
databases are read through a stand-in of read_database): the calls it makes and in what order,
what it says, and a failed check stopping it with the fork removed and the cluster untouched."""

from __future__ import annotations

import pytest

from mastodon_data.cli import rehearse_upgrade
from mastodon_data.cli.rehearse_upgrade import Reading
from tests.unit.test_standin_databases import online_cluster, served
from tests.unit.test_standin_upgrade import UpgradeRecorder

SOURCE = "mastodon-data-t-pg"
FORK = "mastodon-data-t-pg-rehearsal"
TABLES = ("accounts", "statuses", "users")


@pytest.fixture
def api(tmp_path, monkeypatch):
    with served(UpgradeRecorder(), tmp_path) as client:
        monkeypatch.setenv("DIGITALOCEAN_API_URL", client.url)
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_test")
        yield client


def readings(api, after_counts=(("statuses", 20), ("accounts", 3))):
    """read_database's stand-in: the fork's server as its cluster's version says, 15 then 17."""
    seen = []

    def read(connection, ca_file, database):
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        fork = next(c for c in api.account.databases.items.values() if c["name"] == FORK)
        seen.append((connection["host"], database, fork["version"]))
        counts = after_counts if fork["version"] == "17" else (("statuses", 20), ("accounts", 3))
        return Reading(int(fork["version"]), TABLES, counts)

    return read, seen


def rehearse(*extra: str) -> int:
    return rehearse_upgrade.main(["--cluster", SOURCE, "--version", "17", "--database",
                                  "mastodon_production", "--poll", "0.05", "--timeout", "10",
                                  *extra])  # fmt: skip


def database_calls(api) -> list[tuple[str, str, int]]:
    ids = {c["id"]: c["name"] for c in api.account.databases.items.values()}
    calls = []
    for entry in api.log():
        if entry["method"] == "GET" or not entry["path"].startswith("/v2/databases"):
            continue
        parts = entry["path"].split("/")
        calls.append((entry["method"], "/".join(ids.get(p, p) for p in parts), entry["status"]))
    return calls


def test_the_fork_is_made_upgraded_checked_and_removed_and_the_cluster_untouched(
    api, monkeypatch, capsys
):
    source = online_cluster(api, version="15")
    read, seen = readings(api)
    monkeypatch.setattr(rehearse_upgrade, "read_database", read)
    before = database_calls(api)
    assert rehearse() == 0
    fork_id = next(e["path"].split("/")[3] for e in api.log() if e["method"] == "DELETE")
    assert database_calls(api)[len(before) :] == [
        ("POST", "/v2/databases", 201),
        ("PUT", f"/v2/databases/{fork_id}/upgrade", 204),
        ("DELETE", f"/v2/databases/{fork_id}", 204),
    ]
    host = f"{FORK}-do-user-1-0.db.ondigitalocean.com"
    assert seen == [(host, "mastodon_production", "15"), (host, "mastodon_production", "17")]
    said = capsys.readouterr().out.splitlines()
    assert said[0].startswith(f"fork {FORK} of {SOURCE} (PostgreSQL 15) online in ")
    assert said[1].startswith("fork upgraded to PostgreSQL 17 in ")
    assert said[2:] == [
        "checked: PostgreSQL 17, mastodon_production with 3 tables, the same rows in the largest "
        "(statuses 20, accounts 3)",
        f"fork {FORK} removed",
    ]
    assert [c["name"] for c in api.call("GET", "/v2/databases")["databases"]] == [SOURCE]
    assert api.call("GET", f"/v2/databases/{source['id']}")["database"]["version"] == "15"


def test_rows_missing_after_the_forks_upgrade_stop_the_run_naming_them_and_the_fix(
    api, monkeypatch, capsys
):
    online_cluster(api, version="15")
    read, _ = readings(api, after_counts=(("statuses", 19), ("accounts", 3)))
    monkeypatch.setattr(rehearse_upgrade, "read_database", read)
    assert rehearse() == 1
    said = capsys.readouterr()
    assert said.err == (
        "upgrade rehearsal failed, the cluster untouched: row counts of mastodon_production "
        "differ after the fork's upgrade: {'statuses': 20, 'accounts': 3} before, "
        "{'statuses': 19, 'accounts': 3} after. Fix: keep the cluster on its version (pulumi "
        "config rm mastodon-data:postgresUpgradeTo and set postgresVersion back); ask "
        "DigitalOcean's support why\n"
    )
    assert said.out.splitlines()[-1] == f"fork {FORK} removed"
    assert [c["name"] for c in api.call("GET", "/v2/databases")["databases"]] == [SOURCE]


@pytest.mark.parametrize("version", [None, "17"])
def test_nothing_is_rehearsed_without_a_cluster_or_when_it_runs_the_version(api, capsys, version):
    if version:
        online_cluster(api, version=version)
    assert rehearse() == 0
    state = "does not exist yet" if version is None else "runs 17"
    assert capsys.readouterr().out == f"nothing to rehearse: {SOURCE} {state}\n"
    assert [e["method"] for e in api.log() if e["path"].startswith("/v2/databases")][-1:] == ["GET"]


def test_without_a_token_it_stops_naming_the_variable(monkeypatch, capsys):
    for variable in ("DIGITALOCEAN_TOKEN", "DIGITALOCEAN_ACCESS_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    assert rehearse() == 1
    assert "no API token: set DIGITALOCEAN_TOKEN" in capsys.readouterr().err
