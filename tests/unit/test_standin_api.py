"""The DigitalOcean API stand-in on its own (no lab hosts, no root): the API's shapes, refusals,
normalisations, waits and fault switches, over HTTP on loopback."""

from __future__ import annotations

import time

import pytest

from lab.standin.account import Account
from lab.standin.backend import Backend
from lab.standin.client import ApiFailed, Client, coverage
from lab.standin.firewall import compile_rules
from lab.standin.resources.base import Timings
from lab.standin.server import serve

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGMd9+t1y6Y0s9Z8eL8mQmGf0q6Oe3E3wG8gQ9JkPq7 op"


@pytest.fixture
def api(tmp_path):
    timings = Timings(boot=0.2, default_action=0.2)
    timings.actions = {k: 0.2 for k in timings.actions}
    account = Account(
        vpc_pool=("10.240.0.0/24", "10.240.1.0/24"),
        state_file=tmp_path / "state.json",
        timings=timings,
        log=lambda text: None,
    )
    server = serve(account)
    client = Client(server.url)
    client.account = account
    yield client
    server.shutdown()
    account.idle(10)


def wait_for(client: Client, path: str, key: str, field: str, value, limit: float = 10) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        document = client.call("GET", path)[key]
        if document[field] == value:
            return document
        time.sleep(0.05)
    raise AssertionError(f"{path}: {field} not {value} within {limit} s")


def refused(call, status: int, words: str) -> dict:
    with pytest.raises(ApiFailed) as caught:
        call()
    assert caught.value.status == status, caught.value.document
    assert words in caught.value.document["message"]
    assert set(caught.value.document) >= {"id", "message"}
    return caught.value.document


def vpc(client: Client, ip_range: str = "10.240.0.0/24", name: str = "v") -> dict:
    body = {"name": name, "region": "nyc3", "ip_range": ip_range}
    return client.call("POST", "/v2/vpcs", body)["vpc"]


def droplet(client: Client, vpc_id: str, name: str = "db-1", **extra) -> dict:
    key = client.register_key("op", KEY)
    body = {
        "name": name,
        "region": "nyc3",
        "size": "s-2vcpu-4gb",
        "image": "debian-12-x64",
        "vpc_uuid": vpc_id,
        "ssh_keys": [key["fingerprint"]],
        "monitoring": True,
        "ipv6": False,
        "tags": ["mastodon-data-dev-primary"],
        **extra,
    }
    return client.call("POST", "/v2/droplets", body)["droplet"]


def test_unimplemented_requests_get_the_api_error_and_are_logged(api):
    document = refused(lambda: api.call("GET", "/v2/droplets/1/neighbors"), 404, "could not be")
    assert document["id"] == "not_found"
    gaps = coverage(api.endpoints(), api.log())["unimplemented_requests"]
    assert gaps == {"GET /v2/droplets/1/neighbors": 1}


def test_no_token_is_refused_like_the_api():
    server = serve(Account(log=lambda text: None))
    try:
        refused(lambda: Client(server.url, token="").call("GET", "/v2/vpcs"), 401, "authenticate")
    finally:
        server.shutdown()


def test_a_droplet_is_new_then_active_with_its_two_addresses(api):
    made = droplet(api, vpc(api)["id"])
    assert made["status"] == "new" and made["networks"]["v4"] == []
    active = wait_for(api, f"/v2/droplets/{made['id']}", "droplet", "status", "active")
    networks = {n["type"]: n["ip_address"] for n in active["networks"]["v4"]}
    assert networks == {"public": "10.241.0.10", "private": "10.240.0.2"}
    assert {"monitoring", "private_networking"} <= set(active["features"])
    assert "ipv6" not in active["features"]
    assert active["size"]["slug"] == "s-2vcpu-4gb" and active["disk"] == 80


def test_droplet_actions_lock_refuse_and_resize(api):
    made = droplet(api, vpc(api)["id"])
    path = f"/v2/droplets/{made['id']}"
    wait_for(api, path, "droplet", "status", "active")
    act = lambda body: api.call("POST", f"{path}/actions", body)  # noqa: E731
    refused(lambda: act({"type": "resize", "size": "s-4vcpu-8gb", "disk": True}), 422, "power")
    action = act({"type": "power_off"})["action"]
    assert api.call("GET", path)["droplet"]["locked"] is True
    refused(lambda: act({"type": "power_on"}), 422, "pending event")
    wait_for(api, f"/v2/actions/{action['id']}", "action", "status", "completed")
    assert api.call("GET", path)["droplet"]["status"] == "off"
    refused(lambda: act({"type": "power_off"}), 422, "already powered off")
    refused(lambda: act({"type": "resize", "size": "s-1vcpu-1gb", "disk": True}), 422, "smaller")
    resize = act({"type": "resize", "size": "s-4vcpu-8gb", "disk": False})["action"]
    wait_for(api, f"/v2/actions/{resize['id']}", "action", "status", "completed")
    resized = api.call("GET", path)["droplet"]
    assert resized["size_slug"] == "s-4vcpu-8gb" and resized["disk"] == 80  # disk kept
    refused(lambda: act({"type": "snapshot"}), 422, "not implemented by the stand-in")


def test_firewall_rules_come_back_normalised(api):
    made = droplet(api, vpc(api)["id"])
    body = {
        "name": "mastodon-db-dev",
        "droplet_ids": [made["id"]],
        "inbound_rules": [
            {"protocol": "tcp", "ports": "all", "sources": {"addresses": ["2001:DB8::/32"]}},
            {"protocol": "icmp", "sources": {"addresses": ["10.240.0.0/24"]}},
        ],
        "outbound_rules": [
            {"protocol": "udp", "ports": "53", "destinations": {"addresses": ["0.0.0.0/0"]}}
        ],
    }
    firewall = api.call("POST", "/v2/firewalls", body)["firewall"]
    read = api.call("GET", f"/v2/firewalls/{firewall['id']}")["firewall"]
    assert read["inbound_rules"] == [
        {"protocol": "tcp", "ports": "0", "sources": {"addresses": ["2001:db8::/32"]}},
        {"protocol": "icmp", "ports": "0", "sources": {"addresses": ["10.240.0.0/24"]}},
    ]
    assert read["droplet_ids"] == [made["id"]] and read["status"] == "succeeded"


def test_tags_compare_case_insensitively(api):
    api.call("POST", "/v2/tags", {"name": "Mastodon-App"})
    again = api.call("POST", "/v2/tags", {"name": "mastodon-app"})["tag"]
    assert again["name"] == "Mastodon-App"
    assert api.call("GET", "/v2/tags/MASTODON-APP")["tag"]["name"] == "Mastodon-App"
    assert len(api.call("GET", "/v2/tags")["tags"]) == 1


def test_vpc_ranges_are_private_distinct_and_the_stand_ins(api):
    vpc(api)
    refused(lambda: vpc(api, "10.240.0.0/24", "w"), 422, "overlaps")
    refused(lambda: vpc(api, "10.118.0.0/20", "w"), 422, "networks it owns")
    refused(lambda: vpc(api, "192.0.2.0/24", "w"), 422, "RFC 1918")
    assert vpc(api, "10.240.1.0/24", "w")["ip_range"] == "10.240.1.0/24"


def test_a_vpc_with_members_cannot_be_deleted(api):
    network = vpc(api)
    made = droplet(api, network["id"])
    refused(lambda: api.call("DELETE", f"/v2/vpcs/{network['id']}"), 403, "members")
    api.delete_droplet(made["id"], wait=10)
    api.call("DELETE", f"/v2/vpcs/{network['id']}")
    refused(lambda: api.call("GET", f"/v2/vpcs/{network['id']}"), 404, "could not be found")


def test_only_the_labs_image_makes_a_droplet(api):
    network = vpc(api)
    refused(lambda: droplet(api, network["id"], image="ubuntu-24-04-x64"), 422, "debian-12-x64")
    refused(lambda: droplet(api, network["id"], size="s-99vcpu"), 422, "size")
    refused(lambda: droplet(api, network["id"], ssh_keys=[999]), 422, "no SSH key 999")


def test_the_droplet_quota(api):
    network = vpc(api)
    for i in range(25):
        droplet(api, network["id"], name=f"d{i}")
    refused(lambda: droplet(api, network["id"], name="d25"), 422, "droplet limit")


def test_fault_switches_404_after_create_429_and_slow_actions(api):
    api.set_faults({"*": {"not_found_after_create": {"droplets": 2}}})
    made = droplet(api, vpc(api)["id"])
    for _ in range(2):
        refused(lambda: api.call("GET", f"/v2/droplets/{made['id']}"), 404, "fault")
    api.call("GET", f"/v2/droplets/{made['id']}")
    api.set_faults({"*": {"rate_limit_every": 3, "retry_after": 7}})
    answers = []
    for _ in range(3):
        try:
            api.call("GET", "/v2/vpcs")
            answers.append(200)
        except ApiFailed as err:
            answers.append(err.status)
    assert answers == [200, 200, 429]
    faulted = [e for e in api.log() if e.get("fault")]
    assert [e["status"] for e in faulted] == [404, 404, 429]
    api.set_faults({"*": {"slow_actions": 1.0}})
    wait_for(api, f"/v2/droplets/{made['id']}", "droplet", "status", "active")
    started = time.monotonic()
    action = api.call("POST", f"/v2/droplets/{made['id']}/actions", {"type": "power_off"})
    wait_for(api, f"/v2/actions/{action['action']['id']}", "action", "status", "completed")
    assert time.monotonic() - started >= 1.0
    refused(lambda: api.set_faults({"*": {"flaky": 1}}), 400, "unknown fault")


def test_the_state_survives_a_restart(api, tmp_path):
    network = vpc(api)
    api.account.idle(10)
    again = Account(state_file=tmp_path / "state.json", log=lambda text: None)
    assert network["id"] in again.state["vpcs"]


def test_firewall_tags_and_droplets_resolve_to_both_addresses(api):
    made = droplet(api, vpc(api)["id"])
    wait_for(api, f"/v2/droplets/{made['id']}", "droplet", "status", "active")
    rules = {
        "id": "f",
        "name": "fw",
        "inbound_rules": [
            {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["198.51.100.7/32"]}},
            {
                "protocol": "tcp",
                "ports": "5432",
                "sources": {"tags": ["MASTODON-data-dev-PRIMARY"]},
            },
        ],
        "outbound_rules": [
            {"protocol": "udp", "ports": "53", "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}}
        ],
    }
    script = compile_rules([rules], api.account.firewalls.resolve)
    assert "ip saddr { 198.51.100.7/32 } tcp dport 22 accept" in script
    assert "ip saddr { 10.241.0.10/32, 10.240.0.2/32 } tcp dport 5432 accept" in script
    assert "meta nfproto ipv4 meta l4proto udp udp dport 53 accept" in script  # 0.0.0.0/0
    assert "meta nfproto ipv6 meta l4proto udp udp dport 53 accept" in script
    assert "policy drop" in script and "ct state established,related accept" in script
    no_firewall = compile_rules([], api.account.firewalls.resolve)
    assert no_firewall.strip().endswith("delete table inet do-cloud-firewall")


def s3(api: Client, method: str, url: str, body: bytes = b"", headers: dict | None = None):
    """An S3 request through the stand-in as the HTTP proxy (as the provider sends it), signed
    with a full-access Spaces key of the account (made on first use)."""
    import hashlib
    import urllib.error
    import urllib.request

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    if not hasattr(api, "full_key"):
        grants = [{"bucket": "", "permission": "fullaccess"}]
        made = api.call("POST", "/v2/spaces/keys", {"name": "full", "grants": grants})["key"]
        api.full_key = Credentials(made["access_key"], made["secret_key"])
    signed = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    signed.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(api.full_key, "s3", "us-east-1").add_auth(signed)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": api.url}))
    request = urllib.request.Request(
        url, data=body or None, method=method, headers=dict(signed.headers.items())
    )
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


CORS = (
    b'<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CORSRule>'
    b"<AllowedOrigin>*</AllowedOrigin><AllowedMethod>GET</AllowedMethod>"
    b"<AllowedMethod>HEAD</AllowedMethod><MaxAgeSeconds>3000</MaxAgeSeconds>"
    b"</CORSRule></CORSConfiguration>"
)


def test_spaces_bucket_acl_and_cors_over_s3(api):
    bucket = "http://media-test.nyc3.spaces.test/"
    assert s3(api, "HEAD", bucket)[0] == 404
    assert s3(api, "PUT", bucket, headers={"x-amz-acl": "private"})[0] == 200
    assert s3(api, "PUT", bucket)[0] == 409  # BucketAlreadyExists
    assert s3(api, "HEAD", bucket)[0] == 200
    assert "<LocationConstraint" in s3(api, "GET", bucket + "?location")[1]
    code, text = s3(api, "GET", bucket + "?lifecycle")
    assert code == 404 and "NoSuchLifecycleConfiguration" in text
    assert "AllUsers" not in s3(api, "GET", bucket + "?acl")[1]
    assert s3(api, "GET", bucket + "?cors")[0] == 404
    assert s3(api, "PUT", bucket + "?cors", CORS)[0] == 200
    text = s3(api, "GET", bucket + "?cors")[1]
    assert "<AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod>" in text
    multipart = "http://media-test.nyc3.spaces.test/a.png?uploads"
    assert s3(api, "POST", multipart)[0] == 501  # multipart uploads: not modelled
    assert s3(api, "GET", "http://example.com/")[0] == 404  # never forwarded
    assert s3(api, "DELETE", bucket)[0] == 204
    log = api.log()
    assert [e["route"] for e in log if e.get("host") == "media-test.nyc3.spaces.test"][:3] == [
        "S3 HEAD /{bucket}",
        "S3 PUT /{bucket}",
        "S3 PUT /{bucket}",
    ]
    gaps = coverage(api.endpoints(), log)["unimplemented_requests"]
    assert gaps == {"POST /a.png": 1, "GET /": 1}


def test_spaces_key_secret_only_on_create_and_cdn_endpoint(api):
    grants = [{"bucket": "media-test", "permission": "readwrite"}]
    made = api.call("POST", "/v2/spaces/keys", {"name": "k", "grants": grants})["key"]
    assert made["secret_key"] and made["access_key"].startswith("DO")
    read = api.call("GET", f"/v2/spaces/keys/{made['access_key']}")["key"]
    assert read["secret_key"] == "" and read["grants"] == grants
    origin = "media-test.nyc3.digitaloceanspaces.com"
    cdn = api.call("POST", "/v2/cdn/endpoints", {"origin": origin})["endpoint"]
    assert cdn["endpoint"] == "media-test.nyc3.cdn.digitaloceanspaces.com" and cdn["ttl"] == 3600
    refused(lambda: api.call("POST", "/v2/cdn/endpoints", {"origin": origin}), 409, "exists")


class RecordingBackend(Backend):
    """What the account asked of its machine, in order."""

    def __init__(self):
        self.calls: list[tuple] = []

    def create_volume(self, volume):
        self.calls.append(("create", volume["name"], volume["size_gigabytes"]))

    def resize_volume(self, volume):
        self.calls.append(("resize", volume["name"], volume["size_gigabytes"]))

    def attach_volume(self, volume, droplet):
        self.calls.append(("attach", volume["name"], droplet["name"]))

    def detach_volume(self, volume, droplet):
        self.calls.append(("detach", volume["name"], droplet["name"]))

    def delete_volume(self, volume):
        self.calls.append(("delete", volume["name"]))


def test_volume_actions_reach_the_machine_and_answer_like_the_api(tmp_path):
    backend = RecordingBackend()
    timings = Timings(boot=0.1, default_action=0.1)
    timings.actions = {k: 0.1 for k in timings.actions}
    account = Account(backend, state_file=tmp_path / "s.json", timings=timings, log=lambda t: None)
    server = serve(account)
    api = Client(server.url)
    try:
        made = droplet(api, vpc(api)["id"])
        wait_for(api, f"/v2/droplets/{made['id']}", "droplet", "status", "active")
        body = {"name": "db-1-data", "region": "nyc3", "size_gigabytes": 1}
        volume = api.call("POST", "/v2/volumes", body)["volume"]
        path = f"/v2/volumes/{volume['id']}/actions"
        for request in (
            {"type": "attach", "droplet_id": made["id"]},
            {"type": "resize", "size_gigabytes": 2, "region": "nyc3"},
            {"type": "detach", "droplet_id": made["id"]},
        ):
            action = api.call("POST", path, request)["action"]
            # godo reads resource_id as an integer: a volume's action has none.
            assert action["resource_id"] is None and action["resource_type"] == "volume"
            assert action["type"] == {"attach": "attach_volume", "detach": "detach_volume"}.get(
                request["type"], request["type"]
            )
            wait_for(api, f"/v2/actions/{action['id']}", "action", "status", "completed")
        refused(
            lambda: api.call("POST", path, {"type": "resize", "size_gigabytes": 1}), 422, "grow"
        )
        api.call("DELETE", f"/v2/volumes/{volume['id']}")
        assert backend.calls == [
            ("create", "db-1-data", 1),
            ("attach", "db-1-data", "db-1"),
            ("resize", "db-1-data", 2),
            ("detach", "db-1-data", "db-1"),
            ("delete", "db-1-data"),
        ]
    finally:
        server.shutdown()
        account.idle(10)
