"""Mastodon's role across a blue/green upgrade (host/upgrade.py): the new side's role gets the
old primary's SCRAM verifier exactly, since the pools log in with the verifier they hold
(SCRAM pass-through), and so do the new side's pools, the replicas' once they replay it."""

from __future__ import annotations

import base64
import re
import time

from common import Cluster, HostError, scram_verifier
from pooler import VERIFIER_WAIT, refresh_user

SCRAM_PUBLIC = re.compile(r"SCRAM-SHA-256\$(\d+):([^$]+)\$")


def scram_public_part(cluster: Cluster, role: str) -> str:
    """`iterations:salt` of the role's SCRAM verifier: what the server sends to every client
    that logs in as the role, so not a secret; with the password it makes the same verifier."""
    rows = cluster.sql_json(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")
    match = SCRAM_PUBLIC.match((rows[0]["rolpassword"] or "") if rows else "")
    if not match:
        raise HostError(f"role {role} has no SCRAM verifier here: run `pulumi up` first")
    return f"{match.group(1)}:{match.group(2)}"


def old_verifier(params: dict) -> str:
    iterations, salt = params["db_user_scram"].split(":")
    return scram_verifier(params["db_password"], base64.b64decode(salt), int(iterations))


def ensure_same_verifier(cluster: Cluster, params: dict) -> bool:
    """Mastodon's role gets the old primary's verifier exactly: the pools log in to the server
    with the verifier they hold (SCRAM pass-through), so after the cut-over they must find the
    same one here. It is made from the password and the old one's public part (publish)."""
    verifier, role = old_verifier(params), params["db_user"]
    rows = cluster.sql_json(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")
    if rows[0]["rolpassword"] == verifier:
        return False
    cluster.sql(f"ALTER ROLE \"{role}\" PASSWORD '{verifier}';", quiet_errors=True)
    return True


def pool_verifier(cluster: Cluster, params: dict) -> dict:
    """A replica of the new primary: once it replays the verifier seed gave Mastodon's role,
    its own pool's auth file gets it too (the pool logs in with the verifier it holds)."""
    verifier, role = old_verifier(params), params["db_user"]
    deadline = time.monotonic() + VERIFIER_WAIT
    query = f"SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"
    while (rows := cluster.sql_json(query)) and rows[0]["rolpassword"] != verifier:
        if time.monotonic() > deadline:
            raise HostError(
                f"role {role} on this replica has not replayed the old primary's verifier "
                f"after {VERIFIER_WAIT} s: check that it streams from the new primary"
            )
        time.sleep(0.5)
    refreshed = refresh_user(role, verifier)
    return {"changed": ["pool's auth file the old primary's verifier"] if refreshed else []}
