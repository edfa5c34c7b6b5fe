"""A droplets-mode stack of this project run by the real Pulumi engine and the real DigitalOcean
provider against a stand-in: its configuration (the dev stack's, with what the lab needs), the
provider's environment, its secrets."""

from __future__ import annotations

import fcntl
import json
import secrets as random
from pathlib import Path

import yaml

from lab.standin._lab import ROOT, LabStack, write_private
from lab.standin.client import ApiFailed, Client
from lab.standin.service import StandInLab
from mastodon_data.config import PROJECT


def example_settings(stack: str = "dev") -> dict:
    """Pulumi.<stack>.yaml's settings (keys without the project prefix)."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    return {
        key.partition(":")[2]: value
        for key, value in document["config"].items()
        if key.startswith(f"{PROJECT}:")
    }


def droplets_config(
    lab: StandInLab, key_id: int, vpc_cidr: str, replica_count: int = 2, **changes
) -> dict:
    """The dev stack as the lab can run it: this machine's Debian 12 and PostgreSQL 15, a VPC
    range the stand-in owns, the operator's key and address, small WAL limits and data volumes
    (sparse files here)."""
    return {
        **example_settings("dev"),
        "image": "debian-12-x64",
        "postgresVersion": 15,
        "vpcCidr": vpc_cidr,
        "replicaCount": replica_count,
        "sshKeyIds": [str(key_id)],
        "adminCidrs": [f"{lab.operator_address}/32"],
        "walKeepSize": "64MB",
        "maxSlotWalKeepSize": "256MB",
        "dataVolumeSize": 1,
        **changes,
    }


def managed_config(vpc_cidr: str, bucket: str, **changes) -> dict:
    """The prod stack as the lab can run it: the lab's PostgreSQL version, a VPC range and a
    bucket name the stand-in owns, the CDN on its own endpoint name (the stand-in makes no
    certificates for a custom domain)."""
    settings = example_settings("prod")
    for unmodelled in ("cdnCustomDomain", "cdnDnsDomain"):
        settings.pop(unmodelled)
    return {**settings, "postgresVersion": 15, "vpcCidr": vpc_cidr, "spacesBucket": bucket,
            **changes}  # fmt: skip


PROVIDER_KEY = "lab-provider"  # the Spaces key the lab's stacks give the provider


def provider_spaces_key(lab: StandInLab, client: Client) -> dict:
    """The account's full-access Spaces key for the provider, as an operator makes one in the
    control panel: made once per stand-in, kept 0600 in its directory (its secret is shown
    only on creation); {"access_key", "secret_key"}."""
    path = lab.state_dir / "provider-spaces-key.json"
    with open(lab.state_dir / "provider-spaces-key.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # stacks of one stand-in start side by side
        if path.exists():
            key = json.loads(path.read_text())
            try:
                client.call("GET", f"/v2/spaces/keys/{key['access_key']}")
                return key
            except ApiFailed as err:
                if err.status != 404:
                    raise
        grants = [{"bucket": "", "permission": "fullaccess"}]
        made = client.call("POST", "/v2/spaces/keys", {"name": PROVIDER_KEY, "grants": grants})
        key = {k: made["key"][k] for k in ("access_key", "secret_key")}
        path.unlink(missing_ok=True)
        write_private(path, json.dumps(key))
        return key


def provider_env(lab: StandInLab, client: Client) -> dict[str, str]:
    """The real DigitalOcean provider pointed at the stand-in; its token names the stack in the
    stand-in's log and fault switches. Spaces (S3) goes to `<bucket>.<region>.spaces.test`
    through the stand-in as an HTTP proxy, which answers it and forwards nothing; loopback is
    never proxied (the API, the engine's own gRPC). It signs its S3 calls with the account's
    full-access key, which the stand-in checks as Spaces does."""
    key = provider_spaces_key(lab, client)
    return {
        "DIGITALOCEAN_TOKEN": client.token,
        "DIGITALOCEAN_API_URL": client.url,
        "DIGITALOCEAN_HTTP_RETRY_WAIT_MAX": "5",
        "SPACES_ENDPOINT_URL": "http://{{.Region}}.spaces.test",
        "HTTP_PROXY": client.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "SPACES_ACCESS_KEY_ID": key["access_key"],
        "SPACES_SECRET_ACCESS_KEY": key["secret_key"],
    }


def stack_secrets(lab: StandInLab, path: Path) -> dict[str, str]:
    """The operator's key and two random passwords, made once (0600 in `path`)."""
    if not path.exists():
        values = {
            "sshPrivateKey": lab.hosts.operator_key.read_text(),
            "replicationPassword": random.token_urlsafe(24),
            "dbPassword": random.token_urlsafe(24),
        }
        write_private(path, json.dumps(values))
    return json.loads(path.read_text())


def standin_stack(
    lab: StandInLab, client: Client, name: str, workdir: Path, config: dict, secrets: dict
) -> LabStack:
    """Stack `name` in `workdir`, configured, its provider on the stand-in."""
    stack = LabStack(name, workdir)
    stack.extra_env.update(provider_env(lab, client))
    stack.prepare()
    stack.configure(config, secrets)
    return stack
