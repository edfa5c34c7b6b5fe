#!/usr/bin/env python3
"""Makes this host the streaming-replication primary. Idempotent: a second run changes nothing.

stdin (JSON): PrimaryParams (mastodon_data/host_params.py) and the secrets replication_password,
db_password.
"""

from __future__ import annotations

import ipaddress

from common import (
    Cluster,
    HostError,
    app_hba_lines,
    apply_settings,
    log,
    main_wrapper,
    read_params,
    replace_managed_block,
    scram_verifier,
    server_settings,
    verifier_matches,
    write_if_changed,
    write_settings,
)
from tls import ensure_ca, ensure_certificate, rotate_ca, trusted_cas


def host_network(address: str) -> str:
    return str(ipaddress.ip_network(address))  # a bare address becomes /32 or /128


def hba_lines(params: dict) -> list[str]:
    lines = []
    for peer in params["replication_peers"]:
        network = host_network(peer)
        lines.append(f"hostssl replication {params['replication_user']} {network} scram-sha-256")
        # pg_rewind of a former primary reads files through an ordinary connection.
        lines.append(f"hostssl postgres {params['replication_user']} {network} scram-sha-256")
    return lines + app_hba_lines(params)


def write_hba(cluster: Cluster, lines: list[str]) -> bool:
    path = cluster.confdir / "pg_hba.conf"
    return write_if_changed(
        path, replace_managed_block(path.read_text(), lines), mode=0o640, owner="postgres"
    )


def ensure_role(cluster: Cluster, name: str, password: str, attributes: str) -> str:
    """Creates the role or corrects its attributes; sets the password only when it differs."""
    rows = cluster.sql_json(
        f"SELECT rolpassword, rolcanlogin, rolreplication FROM pg_authid WHERE rolname = '{name}'"
    )
    if rows and verifier_matches(rows[0]["rolpassword"], password):
        wants_replication = "REPLICATION" in attributes.split()
        if rows[0]["rolcanlogin"] and rows[0]["rolreplication"] == wants_replication:
            return "unchanged"
    verb = "ALTER" if rows else "CREATE"
    # Only the SCRAM verifier is sent; errors are withheld since psql would echo the statement.
    cluster.sql(
        f"{verb} ROLE \"{name}\" WITH {attributes} PASSWORD '{scram_verifier(password)}';",
        quiet_errors=True,
    )
    return "created" if verb == "CREATE" else "updated"


def ensure_monitoring(cluster: Cluster, role: str) -> bool:
    """pg_monitor lets the app role read replication statistics (the replication check)."""
    if cluster.sql(f"SELECT pg_has_role('{role}', 'pg_monitor', 'MEMBER');") == "t":
        return False
    cluster.sql(f'GRANT pg_monitor TO "{role}";')
    return True


# What pg_rewind needs from a non-superuser source role (PostgreSQL docs, pg_rewind).
REWIND_FUNCTIONS = (
    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
    "pg_catalog.pg_stat_file(text, boolean)",
    "pg_catalog.pg_read_binary_file(text)",
    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
)


def ensure_rewind_grants(cluster: Cluster, role: str) -> bool:
    """Lets the replication role serve pg_rewind, so a failed primary can rejoin cheaply (one
    query to find what is missing)."""
    checks = ", ".join(
        f"has_function_privilege('{role}', '{f}', 'EXECUTE') AS f{i}"
        for i, f in enumerate(REWIND_FUNCTIONS)
    )
    granted = cluster.sql_json(f"SELECT {checks}")[0]
    missing = [f for i, f in enumerate(REWIND_FUNCTIONS) if not granted[f"f{i}"]]
    if missing:
        cluster.sql(f'GRANT EXECUTE ON FUNCTION {", ".join(missing)} TO "{role}";')
    return bool(missing)


def ensure_database(cluster: Cluster, name: str, owner: str) -> str:
    rows = cluster.sql_json(
        f"SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = '{name}'"
    )
    if not rows:
        cluster.sql(
            f'CREATE DATABASE "{name}" OWNER "{owner}" ENCODING \'UTF8\' TEMPLATE template0;'
        )
        return "created"
    if rows[0]["owner"] != owner:
        cluster.sql(f'ALTER DATABASE "{name}" OWNER TO "{owner}";')
        return "owner fixed"
    return "unchanged"


def main() -> dict:
    params = read_params()
    cluster = Cluster(params["postgres_version"], params["port"])
    changed = []
    if cluster.install():
        changed.append("installed")
    if not cluster.exists():
        cluster.create()
        changed.append("cluster created")
    if cluster.system_identifier() is None:
        raise HostError(
            f"{cluster.datadir} holds no cluster; remove {cluster.confdir} to let "
            "this script create one"
        )
    standby_signal = cluster.datadir / "standby.signal"
    if standby_signal.exists():
        raise HostError(
            "this host is a standby (standby.signal exists); promote it first or "
            "point the primary setting at the current primary"
        )
    ca_crt, ca_key, ca_made = ensure_ca()
    changed += rotate_ca(params["ca_rotation"])
    touched = ensure_certificate(cluster, params["private_address"], (ca_crt, ca_key), params)
    touched |= write_settings(cluster, server_settings(cluster, params))
    touched |= write_hba(cluster, hba_lines(params))
    action = apply_settings(cluster, touched)
    if action != "unchanged":
        changed.append(f"server {action}")
    for name, password, attributes in (
        (params["replication_user"], params["replication_password"], "LOGIN REPLICATION"),
        (params["db_user"], params["db_password"], "LOGIN NOREPLICATION"),
    ):
        state = ensure_role(cluster, name, password, attributes)
        if state != "unchanged":
            changed.append(f"role {name} {state}")
    if ensure_rewind_grants(cluster, params["replication_user"]):
        changed.append(f"role {params['replication_user']} may serve pg_rewind")
    if ensure_monitoring(cluster, params["db_user"]):
        changed.append(f"role {params['db_user']} granted pg_monitor")
    state = ensure_database(cluster, params["db_name"], params["db_user"])
    if state != "unchanged":
        changed.append(f"database {params['db_name']} {state}")
    for line in changed:
        log(line)
    if ca_made:
        changed.insert(0, "certificate authority created")
    return {
        "role": "primary",
        "changed": changed,
        "ca_cert": trusted_cas(),
        "system_identifier": cluster.system_identifier(),
    }


if __name__ == "__main__":
    main_wrapper(main)
