"""Managed mode, once after the first `pulumi up`: lets Mastodon's role create its tables.

    pulumi stack output --json --show-secrets | mastodon-data grant

DigitalOcean creates the database owned by its admin user (doadmin) and gives a new user
"minimal permissions"; since PostgreSQL 15 the public schema belongs to the database owner and
nobody else may CREATE in it, so `rails db:setup` / `db:migrate` as Mastodon's role would fail.
This grants that role CONNECT, CREATE, TEMPORARY on the database and USAGE, CREATE on schema
public, as the admin user over TLS, the server's certificate verified against the cluster's CA
(outputs `postgres_admin`, `postgres_ca_cert`). Idempotent. Run it where the
database firewall lets you in (a Mastodon droplet). Never prints a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile


class GrantError(Exception):
    pass


def grant(outputs: dict, connect_timeout: int = 10) -> str:

    try:
        admin, postgres = outputs["postgres_admin"], outputs["postgres"]
        database, role = postgres["database"], postgres["user"]
    except (KeyError, TypeError):
        raise GrantError(
            "no postgres_admin/postgres outputs: a managed-mode stack, piped with "
            "pulumi stack output --json --show-secrets"
        ) from None
    if admin == "[secret]" or admin.get("password") == "[secret]":
        raise GrantError("the outputs are masked: add --show-secrets")
    ca = outputs.get("postgres_ca_cert")
    if not ca:
        raise GrantError("no postgres_ca_cert output: the cluster's CA verifies its certificate")
    with tempfile.NamedTemporaryFile("w", suffix=".crt") as ca_file:  # mode 0600
        ca_file.write(ca)
        ca_file.flush()
        return grant_as_admin(admin, database, role, ca_file.name, connect_timeout)


def grant_as_admin(admin: dict, database: str, role: str, ca: str, connect_timeout: int) -> str:
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(
            host=admin["host"],
            port=int(admin["port"]),
            user=admin["user"],
            password=admin["password"],
            dbname=database,
            sslmode="verify-full",
            sslrootcert=ca,
            connect_timeout=connect_timeout,
            autocommit=True,
        ) as conn:
            conn.execute(
                sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
            conn.execute(
                sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(sql.Identifier(role))
            )
    except psycopg.Error as error:
        # The server's message names no password; the connection string is not shown.
        raise GrantError(f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    return f"{role} may now create its tables in {database} (schema public)"


def main(argv: list[str] | None = None, prog: str = "mastodon-data grant") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    try:
        outputs = json.loads(sys.stdin.read())
        print(grant(outputs))
    except ValueError:
        print(f"{prog}: error: stdin is not the stack outputs JSON", file=sys.stderr)
        return 2
    except GrantError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    return 0
