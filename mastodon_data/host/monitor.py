#!/usr/bin/env python3
"""The exporters' role on the primary: LOGIN, a member of pg_monitor (read-only statistics, no
data), its password the stack's monitorPassword (only the SCRAM verifier reaches the server).
The replicas replay it. Runs after the primary step, before the pooler steps (PgBouncer's
stats_users reads its verifier) and the exporters steps. Idempotent.

stdin (JSON): MonitorParams (mastodon_data/host_params.py) and the secret monitor_password.
"""

from __future__ import annotations

from common import Cluster, HostError, main_wrapper, read_params
from primary import ensure_monitoring, ensure_role


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    if not cluster.running():
        raise HostError(
            f"PostgreSQL {cluster.version}/{cluster.name} is not running: run the primary step "
            "first"
        )
    user = params["monitor_user"]
    changed = []
    role = ensure_role(cluster, user, params["monitor_password"], "LOGIN NOREPLICATION")
    if role != "unchanged":
        changed.append(f"role {user} {role}")
    if ensure_monitoring(cluster, user):
        changed.append(f"{user} granted pg_monitor")
    return {"role": "monitor", "changed": changed, "monitor_user": user}


if __name__ == "__main__":
    main_wrapper(main)
