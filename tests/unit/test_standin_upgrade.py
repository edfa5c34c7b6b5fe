"""The stand-in's major upgrade (`PUT /v2/databases/{id}/upgrade`) and fork (`POST
/v2/databases` with `backup_restore`) on their own (no lab hosts): the answers, the refusals, the
statuses, and what they ask of the machine, in order."""

from __future__ import annotations

import threading

import pytest

from lab.standin.lab_databases import restorable
from tests.unit.test_standin_databases import CLUSTER, Recorder, online_cluster, send, served


class UpgradeRecorder(Recorder):
    """Records the upgrade's and the fork's steps; `gate` holds a restore until set."""

    def __init__(self):
        super().__init__()
        self.steps: list[tuple] = []
        self.gate = threading.Event()
        self.gate.set()

    def create_host(self, host, vpc, public_keys):
        self.steps.append(("create", host["id"], host.get("image"), host.get("pg_version")))

    def freeze(self, node):
        self.steps.append(("freeze", node["id"]))

    def restore_postgres(self, cluster, node, source):
        self.gate.wait(10)
        self.steps.append(("restore", node["id"], source["id"]))

    def destroy_host(self, host):
        super().destroy_host(host)
        self.steps.append(("destroy", host["id"]))


@pytest.fixture
def api(tmp_path):
    with served(UpgradeRecorder(), tmp_path) as client:
        yield client


def upgrade(client, ident: str, version) -> tuple[int, dict | None]:
    return send(client, "PUT", f"/v2/databases/{ident}/upgrade", {"version": version})


def test_an_upgrade_answers_204_then_migrates_to_new_nodes_and_only_then_says_the_version(api):
    cluster = online_cluster(api, version="15")
    old = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
    api.backend.gate.clear()
    api.backend.steps.clear()
    assert upgrade(api, cluster["id"], "17") == (204, None)
    during = api.call("GET", f"/v2/databases/{cluster['id']}")["database"]
    assert (during["status"], during["version"]) == ("migrating", "15")
    api.backend.gate.set()
    assert api.account.idle(10)
    after = api.call("GET", f"/v2/databases/{cluster['id']}")["database"]
    assert (after["status"], after["version"]) == ("online", "17")
    new = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
    assert api.backend.steps == [
        ("create", new[0], "debian-13-x64", "17"),
        ("freeze", old[0]),
        ("restore", new[0], old[0]),
        ("create", new[1], "debian-13-x64", "17"),
        ("destroy", old[0]),
        ("destroy", old[1]),
    ]
    nodes = api.account.databases.items[cluster["id"]]["nodes"]
    host = "mastodon-data-t-pg-do-user-1-0.db.ondigitalocean.com"
    assert api.backend.names[host] == nodes[0]["public"]
    assert api.backend.names[f"replica-{host}"] == nodes[1]["public"]
    # Everything else the provider compares stays as it was.
    unchanged = {k: v for k, v in cluster.items() if k not in ("version",)}
    assert {k: v for k, v in after.items() if k not in ("version",)} == unchanged


@pytest.mark.parametrize(
    ("version", "status", "words"),
    [
        ("15", 422, "a cluster on 15 upgrades only to a newer major version"),
        ("14", 422, "a cluster on 15 upgrades only to a newer major version"),
        ("", 422, "a cluster on 15 upgrades only to a newer major version"),
        ("16", 422, "the stand-in runs PostgreSQL 15, 17"),
    ],
)
def test_an_upgrade_to_the_same_an_older_or_an_unrun_version_is_refused(
    api, version, status, words
):
    cluster = online_cluster(api, version="15")
    code, document = upgrade(api, cluster["id"], version)
    assert (code, document["id"]) == (status, "unprocessable_entity")
    assert words in document["message"]
    assert api.call("GET", f"/v2/databases/{cluster['id']}")["database"]["status"] == "online"


def test_an_upgrade_of_an_unknown_or_busy_cluster_is_refused(api):
    code, document = upgrade(api, "00000000-0000-4000-8000-000000000000", "17")
    assert (code, document["id"]) == (404, "not_found")
    cluster = online_cluster(api, version="15")
    api.backend.gate.clear()
    assert upgrade(api, cluster["id"], "17") == (204, None)
    code, document = upgrade(api, cluster["id"], "17")
    assert (code, document["id"]) == (412, "precondition_failed")
    assert document["message"] == f"cluster {cluster['id']} is migrating"
    api.backend.gate.set()
    assert api.account.idle(10)


def fork_body(client, source: dict, **restore) -> dict:
    return {**CLUSTER, "name": "mastodon-data-t-fork", "version": source["version"],
            "private_network_uuid": source["private_network_uuid"],
            "backup_restore": {"database_name": source["name"], **restore}}  # fmt: skip


def test_a_fork_is_forking_then_online_with_the_sources_data_users_and_version(api):
    source = online_cluster(api, version="15")
    api.backend.gate.clear()
    api.backend.steps.clear()
    code, created = send(api, "POST", "/v2/databases", fork_body(api, source))
    assert code == 201
    fork = created["database"]
    assert (fork["status"], fork["version"], fork["name"]) == (
        "forking",
        "15",
        "mastodon-data-t-fork",
    )
    assert fork["connection"]["password"] == source["connection"]["password"]
    assert fork["users"] == source["users"] and fork["db_names"] == source["db_names"]
    api.backend.gate.set()
    assert api.account.idle(10)
    assert api.call("GET", f"/v2/databases/{fork['id']}")["database"]["status"] == "online"
    nodes = api.account.databases.items[fork["id"]]["nodes"]
    source_primary = api.account.databases.items[source["id"]]["nodes"][0]["id"]
    assert [s for s in api.backend.steps if s[0] == "restore"] == [
        ("restore", nodes[0]["id"], source_primary)
    ]
    assert api.backend.started == [(n["id"], p) for n, p in [
        (api.account.databases.items[source["id"]]["nodes"][0], None),
        (api.account.databases.items[source["id"]]["nodes"][1], source_primary),
        (nodes[1], nodes[0]["id"]),
    ]]  # fmt: skip


@pytest.mark.parametrize(
    ("restore", "status", "error", "message"),
    [
        ({"database_name": "no-such-cluster"}, 404, "not_found",
         "The resource you were accessing could not be found. (database cluster no-such-cluster)"),
        ({"backup_created_at": "2001-01-01T00:00:00Z"}, 404, "not_found",
         "The resource you were accessing could not be found. "
         "(backup of mastodon-data-t-pg at 2001-01-01T00:00:00Z)"),
        ({"backup_created_at": "yesterday"}, 422, "unprocessable_entity",
         "backup_created_at 'yesterday' is not an ISO 8601 time"),
    ],
)  # fmt: skip
def test_a_fork_of_an_unknown_cluster_or_backup_is_refused(api, restore, status, error, message):
    source = online_cluster(api, version="15")
    body = fork_body(api, source)
    body["backup_restore"] |= restore
    code, document = send(api, "POST", "/v2/databases", body)
    assert (code, document["id"], document["message"]) == (status, error, message)
    assert [c["name"] for c in api.call("GET", "/v2/databases")["databases"]] == [source["name"]]


def test_a_fork_in_another_version_than_the_backups_is_refused(api):
    source = online_cluster(api, version="15")
    code, document = send(api, "POST", "/v2/databases", {**fork_body(api, source), "version": "17"})
    assert (code, document["id"]) == (422, "unprocessable_entity")
    assert document["message"] == "version 17: the backup of mastodon-data-t-pg is PostgreSQL 15"


class FailingRestore(UpgradeRecorder):
    def restore_postgres(self, cluster, node, source):
        raise RuntimeError("restore failed")

    def thaw(self, node):
        self.steps.append(("thaw", node["id"]))


def test_an_upgrade_failing_before_its_cut_over_leaves_the_cluster_online_on_its_version(tmp_path):
    with served(FailingRestore(), tmp_path) as api:
        cluster = online_cluster(api, version="15")
        old = [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]]
        api.backend.steps.clear()
        assert upgrade(api, cluster["id"], "17") == (204, None)
        assert api.account.idle(10)
        after = api.call("GET", f"/v2/databases/{cluster['id']}")["database"]
        assert (after["status"], after["version"]) == ("online", "15")
        new = f"pg-{cluster['id'][:8]}-0-g1"
        assert api.backend.steps == [
            ("create", new, "debian-13-x64", "17"),
            ("freeze", old[0]),
            ("destroy", new),
            ("thaw", old[0]),
        ]
        assert [n["id"] for n in api.account.databases.items[cluster["id"]]["nodes"]] == old


def test_a_dump_restores_as_the_new_servers_superuser():
    dump = (
        "CREATE ROLE doadmin;\nCREATE ROLE postgres;\nALTER ROLE postgres WITH SUPERUSER;\n"
        "GRANT mastodon TO doadmin WITH INHERIT TRUE GRANTED BY doadmin;\n"
        "GRANT pg_monitor TO doadmin GRANTED BY postgres;\nCREATE TABLE t (note text);\n"
    )
    assert restorable(dump) == (
        "CREATE ROLE doadmin;\nGRANT mastodon TO doadmin WITH INHERIT TRUE;\n"
        "GRANT pg_monitor TO doadmin;\nCREATE TABLE t (note text);\n"
    )


class CloneSeesFilter(UpgradeRecorder):
    """Records, when a standby is cloned, whether its primary's packet filter lets it in."""

    def start_postgres(self, cluster, node, primary):
        super().start_postgres(cluster, node, primary)
        if primary:
            script = self.filters.get(primary["id"], "")
            self.steps.append(("clone", node["id"], f"{node['private']}/32" in script))


def test_a_new_standby_is_let_in_by_its_primary_past_the_trusted_sources(tmp_path):
    with served(CloneSeesFilter(), tmp_path) as api:
        cluster = online_cluster(api, version="15")
        rules = {"rules": [{"type": "ip_addr", "value": "192.0.2.7"}]}
        assert send(api, "PUT", f"/v2/databases/{cluster['id']}/firewall", rules) == (204, None)
        api.backend.steps.clear()
        assert upgrade(api, cluster["id"], "17") == (204, None)
        assert api.account.idle(10)
        primary, standby = api.account.databases.items[cluster["id"]]["nodes"]
        assert ("clone", standby["id"], True) in api.backend.steps
        assert "192.0.2.7/32" in api.backend.filters[primary["id"]]
