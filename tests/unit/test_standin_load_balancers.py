"""The stand-in's load balancers on their own (no lab hosts, no root): the fields as the
DigitalOcean provider sends and reads them, the defaults, refusals and waits, the targets a tag
selects as droplets are tagged, untagged and deleted, and the HAProxy configuration and server
states the lab side writes for them."""

from __future__ import annotations

import pytest
from test_standin_api import KEY, refused, vpc, wait_for
from test_standin_databases import Recorder, served

from lab.standin.lab_load_balancers import haproxy_config, server_states

# The body the provider (buildLoadBalancerRequest) sends for the program's read endpoint.
PROGRAM_LB = {
    "name": "mastodon-db-dev-read",
    "algorithm": "round_robin",
    "region": "nyc3",
    "size_unit": 1,
    "forwarding_rules": [
        {"entry_protocol": "tcp", "entry_port": 6432, "target_protocol": "tcp", "target_port": 6432}
    ],  # fmt: skip
    "health_check": {
        "protocol": "http",
        "port": 8008,
        "path": "/replica",
        "check_interval_seconds": 3,
        "response_timeout_seconds": 3,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    },
    "tag": "mastodon-db-dev",
    "disable_lets_encrypt_dns_records": False,
    "network": "INTERNAL",
}


class LoadBalancerRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.proxies: list[tuple[str, list[int]]] = []  # (lb id, its targets' droplet ids)
        self.hosts: list[str] = []

    def create_host(self, host, vpc, public_keys):
        self.hosts.append(host["id"])

    def configure_load_balancer(self, lb, targets):
        self.proxies.append((lb["id"], [t["id"] for t in targets]))


@pytest.fixture
def api(tmp_path):
    with served(LoadBalancerRecorder(), tmp_path) as client:
        yield client


def tagged_droplet(client, vpc_id: str, name: str, tags: list[str]) -> dict:
    key = client.register_key("op", KEY)
    body = {"name": name, "region": "nyc3", "size": "s-1vcpu-1gb", "image": "debian-12-x64",
            "vpc_uuid": vpc_id, "ssh_keys": [key["fingerprint"]], "tags": tags}  # fmt: skip
    made = client.call("POST", "/v2/droplets", body)["droplet"]
    return wait_for(client, f"/v2/droplets/{made['id']}", "droplet", "status", "active")


def program_lb(client, vpc_id: str, **changes) -> dict:
    return client.call("POST", "/v2/load_balancers", {**PROGRAM_LB, "vpc_uuid": vpc_id, **changes})


def test_an_internal_load_balancer_is_new_then_active_on_its_vpc_address(api):
    network = vpc(api)
    made = program_lb(api, network["id"])["load_balancer"]
    assert (made["status"], made["ip"]) == ("new", "")
    lb = wait_for(api, f"/v2/load_balancers/{made['id']}", "load_balancer", "status", "active")
    record = api.account.load_balancers.items[made["id"]]
    assert lb["ip"] == record["private"] and lb["ip"].startswith("10.240.0.")
    assert api.backend.hosts == [made["id"]]
    assert lb == {
        "id": made["id"], "name": "mastodon-db-dev-read", "ip": record["private"],
        "size_unit": 1, "size": "lb-small", "type": "REGIONAL", "algorithm": "round_robin",
        "status": "active", "created_at": made["created_at"],
        "forwarding_rules": [{**PROGRAM_LB["forwarding_rules"][0], "certificate_id": "",
                              "tls_passthrough": False}],
        "health_check": PROGRAM_LB["health_check"], "sticky_sessions": {"type": "none"},
        "region": lb["region"], "tag": "mastodon-db-dev", "droplet_ids": [],
        "http_idle_timeout_seconds": 60, "vpc_uuid": network["id"],
        "project_id": "a1b2c3d4-0000-4000-8000-000000000001",
        "firewall": {"deny": [], "allow": []}, "network": "INTERNAL", "network_stack": "IPV4",
        "tls_cipher_policy": "DEFAULT", "redirect_http_to_https": False,
        "enable_proxy_protocol": False, "enable_backend_keepalive": False,
        "disable_lets_encrypt_dns_records": False,
    }  # fmt: skip
    assert lb["region"]["slug"] == "nyc3"
    assert api.call("GET", "/v2/load_balancers")["load_balancers"] == [lb]
    members = api.call("GET", f"/v2/vpcs/{network['id']}/members")["members"]
    assert [m["urn"] for m in members] == [f"do:loadbalancer:{made['id']}"]


def test_an_external_load_balancer_answers_on_its_public_address_with_defaults(api):
    network = vpc(api)
    body = {**PROGRAM_LB, "vpc_uuid": network["id"], "network": None, "health_check": None}
    made = api.call("POST", "/v2/load_balancers", body)["load_balancer"]
    lb = wait_for(api, f"/v2/load_balancers/{made['id']}", "load_balancer", "status", "active")
    assert lb["ip"] == api.account.load_balancers.items[made["id"]]["public"]
    assert lb["network"] == "EXTERNAL"
    assert lb["health_check"] == {
        "protocol": "http", "port": 80, "path": "/", "check_interval_seconds": 10,
        "response_timeout_seconds": 5, "unhealthy_threshold": 3, "healthy_threshold": 5,
    }  # fmt: skip


def test_a_tag_selects_the_targets_as_droplets_are_tagged_untagged_and_deleted(api):
    network = vpc(api)
    first = tagged_droplet(api, network["id"], "db-0", ["mastodon-db-dev"])
    made = program_lb(api, network["id"])["load_balancer"]
    path = f"/v2/load_balancers/{made['id']}"
    wait_for(api, path, "load_balancer", "status", "active")
    assert api.backend.proxies == [(made["id"], [first["id"]])]
    second = tagged_droplet(api, network["id"], "db-1", ["mastodon-db-dev"])
    wait_for(api, path, "load_balancer", "droplet_ids", [first["id"], second["id"]])
    assert api.backend.proxies[-1] == (made["id"], [first["id"], second["id"]])
    resources = {"resources": [{"resource_id": str(first["id"]), "resource_type": "droplet"}]}
    api.call("DELETE", "/v2/tags/mastodon-db-dev/resources", resources)
    assert api.call("GET", path)["load_balancer"]["droplet_ids"] == [second["id"]]
    assert api.backend.proxies[-1] == (made["id"], [second["id"]])
    api.delete_droplet(second["id"])
    assert api.call("GET", path)["load_balancer"]["droplet_ids"] == []
    assert api.backend.proxies[-1] == (made["id"], [])


def test_droplet_ids_and_tag_exclude_each_other_and_ids_must_exist(api):
    network = vpc(api)
    one = tagged_droplet(api, network["id"], "db-0", [])
    refused(lambda: program_lb(api, network["id"], droplet_ids=[one["id"]]), 422, "exclusive")
    refused(lambda: program_lb(api, network["id"], tag=None, droplet_ids=[999]), 422, "999")
    made = program_lb(api, network["id"], tag=None, droplet_ids=[one["id"]])["load_balancer"]
    lb = wait_for(api, f"/v2/load_balancers/{made['id']}", "load_balancer", "status", "active")
    assert (lb["tag"], lb["droplet_ids"]) == ("", [one["id"]])


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"forwarding_rules": []}, "at least one"),
        ({"forwarding_rules": [{"entry_protocol": "https", "entry_port": 443,
                                "target_protocol": "http", "target_port": 80}]}, "tcp to tcp"),
        ({"forwarding_rules": [{"entry_protocol": "tcp", "entry_port": 0,
                                "target_protocol": "tcp", "target_port": 80}]}, "1 to 65535"),
        ({"forwarding_rules": [{"entry_protocol": "udp", "entry_port": 53,
                                "target_protocol": "tcp", "target_port": 53}]}, "udp on both"),
        ({"health_check": {**PROGRAM_LB["health_check"], "check_interval_seconds": 2}}, "3 to"),
        ({"health_check": {**PROGRAM_LB["health_check"], "healthy_threshold": 11}}, "2 to 10"),
        ({"health_check": {**PROGRAM_LB["health_check"], "protocol": "udp"}}, "http, https"),
        ({"network": "PRIVATE"}, "EXTERNAL or INTERNAL"),
        ({"type": "GLOBAL"}, "REGIONAL"),
        ({"size_unit": 101}, "1 to 100"),
        ({"region": "xyz1"}, "not available"),
        ({"vpc_uuid": "nope"}, "VPC it has"),
        ({"http_idle_timeout_seconds": 10}, "30 to 600"),
        ({"firewall": {"allow": ["1.2.3.4"]}}, "ip:<address>"),
        ({"name": ""}, "name"),
    ],
)  # fmt: skip
def test_refusals(api, changes, words):
    network = vpc(api)
    refused(lambda: program_lb(api, network["id"], **changes), 422, words)


def test_an_update_is_a_full_representation_and_the_proxy_follows(api):
    network = vpc(api)
    made = program_lb(api, network["id"])["load_balancer"]
    path = f"/v2/load_balancers/{made['id']}"
    wait_for(api, path, "load_balancer", "status", "active")
    calls = len(api.backend.proxies)
    rule = {"entry_protocol": "tcp", "entry_port": 5432, "target_protocol": "tcp",
            "target_port": 5432}  # fmt: skip
    body = {**PROGRAM_LB, "vpc_uuid": network["id"], "forwarding_rules": [rule]}
    del body["health_check"]
    updated = api.call("PUT", path, body)["load_balancer"]
    assert [r["entry_port"] for r in updated["forwarding_rules"]] == [5432]
    assert updated["health_check"]["path"] == "/"  # left out: back to its default
    assert len(api.backend.proxies) == calls + 1
    changed = {**PROGRAM_LB, "vpc_uuid": network["id"], "network": "EXTERNAL"}
    refused(lambda: api.call("PUT", path, changed), 422, "network cannot be changed")


def test_delete_removes_the_host_at_once_and_then_404(api):
    network = vpc(api)
    made = program_lb(api, network["id"])["load_balancer"]
    path = f"/v2/load_balancers/{made['id']}"
    wait_for(api, path, "load_balancer", "status", "active")
    api.call("DELETE", path)
    assert api.backend.destroyed == [made["id"]]
    refused(lambda: api.call("GET", path), 404, "could not be found")
    refused(lambda: api.call("DELETE", path), 404, "could not be found")
    api.call("DELETE", f"/v2/vpcs/{network['id']}")


def test_a_firewall_rule_naming_the_load_balancer_lets_its_vpc_address_in(api):
    network = vpc(api)
    made = program_lb(api, network["id"])["load_balancer"]
    lb = wait_for(api, f"/v2/load_balancers/{made['id']}", "load_balancer", "status", "active")
    target = {"load_balancer_uids": [made["id"]]}
    assert api.account.firewalls.resolve(target) == [f"{lb['ip']}/32"]


LB = {
    "id": "lb-1",
    "name": "read",
    "network": "INTERNAL",
    "private": "10.240.0.9",
    "public": "10.241.0.9",
    "forwarding_rules": [{"entry_port": 6432, "target_port": 6432}],
    "health_check": PROGRAM_LB["health_check"],
    "firewall": {"deny": ["ip:10.240.0.66"], "allow": []},
    "enable_proxy_protocol": False,
}
TARGETS = [{"id": 11, "address": "10.240.0.11"}, {"id": 12, "address": "10.240.0.12"}]


def test_haproxy_listens_on_the_vpc_address_and_checks_every_target():
    config = haproxy_config(LB, TARGETS)
    listener = config[config.index("listen rule-6432") :]
    assert listener.splitlines() == [
        "listen rule-6432",
        "    id 6432",
        "    bind 10.240.0.9:6432",
        "    balance roundrobin",
        "    acl deny_source src 10.240.0.66",
        "    tcp-request connection reject if deny_source",
        "    timeout check 3s",
        "    option httpchk GET /replica",
        "    http-check expect status 200-399",
        "    default-server check port 8008 inter 3s rise 2 fall 2",
        "    server droplet-11 10.240.0.11:6432 id 11",
        "    server droplet-12 10.240.0.12:6432 id 12",
    ]
    assert "load-server-state-from-file global" in config


def test_a_target_new_to_the_proxy_starts_down_and_a_known_one_keeps_its_state():
    dump = (
        "1\n# be_id be_name srv_id srv_name srv_addr ...\n"
        "6432 rule-6432 11 droplet-11 10.240.0.11 2 0 1 1 55 15 3 3 6 0 1 1 - 6432 - 0 8008 - - "
        "8008\n"
    )
    lines = server_states(dump, LB, TARGETS).splitlines()
    assert lines[2].startswith("6432 rule-6432 11 droplet-11 10.240.0.11 2 ")
    assert lines[3] == (
        "6432 rule-6432 12 droplet-12 10.240.0.12 0 0 1 1 0 17 2 0 6 0 1 1 - 6432 - 0 8008 - - 8008"
    )
    assert len(lines) == 4
    fresh = server_states("", LB, TARGETS[:1]).splitlines()
    assert fresh[0] == "1" and fresh[2].split()[3:6] == ["droplet-11", "10.240.0.11", "0"]
