"""The rehearsal of a managed cluster's major upgrade, run by `pulumi up` (a command of
mastodon_data/components/managed_postgres.py) before the cluster's own upgrade:

    python -m mastodon_data.cli.rehearse_upgrade --cluster NAME --version 17 --database DB

A fork of the cluster (a new one-node cluster restored from its latest backup, DigitalOcean's
`backup_restore`) is made, its Mastodon database read (its tables; the exact row counts of the
largest), upgraded to the version, read again (the server answers on that version, the same
tables, the same counts), and removed, whatever happened. Nothing to rehearse (exit 0) when the
cluster does not exist yet or already runs the version. Exit 1 with what failed and the fix: the
cluster itself is not touched. The API token comes from the environment (never an argument).
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from mastodon_data.do_api import ApiError, DigitalOcean, MissingToken

FORK_SUFFIX = "-rehearsal"
LARGEST_TABLES = 5  # the tables whose rows are counted exactly


class RehearsalFailed(Exception):
    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")


@dataclass(frozen=True)
class Reading:
    """What a server holds of Mastodon's database: its major version, its tables, the row
    counts of the largest ones."""

    major: int
    tables: tuple[str, ...]
    counts: tuple[tuple[str, int], ...]


def fork_name(cluster: str) -> str:
    return cluster[: 63 - len(FORK_SUFFIX)] + FORK_SUFFIX


def read_database(connection: dict, ca_file: Path, database: str) -> Reading:
    """Mastodon's database on the server of `connection` (the API's, doadmin), TLS verified.
    To count the rows of tables Mastodon's role owns, doadmin joins that role (on the fork
    only: a copy that is deleted next)."""
    with psycopg.connect(
        host=connection["host"], port=connection["port"], user=connection["user"],
        password=connection["password"], dbname=database, sslmode="verify-full",
        sslrootcert=str(ca_file), connect_timeout=10, autocommit=True,
    ) as conn:  # fmt: skip
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
        rows = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
            "ORDER BY pg_total_relation_size(c.oid) DESC, c.relname"
        ).fetchall()
        largest = rows[:LARGEST_TABLES]
        for owner in sorted({owner for _, owner in largest} - {connection["user"]}):
            if not conn.execute("SELECT pg_has_role(%s, 'USAGE')", (owner,)).fetchone()[0]:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(owner)))
        count = sql.SQL("SELECT count(*) FROM {}")
        counts = tuple(
            (name, conn.execute(count.format(sql.Identifier(name))).fetchone()[0])
            for name, _ in largest
        )
    return Reading(major, tuple(sorted(name for name, _ in rows)), counts)


class Rehearsal:
    def __init__(self, api: DigitalOcean, args: argparse.Namespace):
        self.api, self.args = api, args

    def say(self, text: str) -> None:
        print(text, flush=True)

    def cluster(self, name: str) -> dict | None:
        found = self.api.call("GET", "/v2/databases")["databases"]
        return next((c for c in found if c["name"] == name), None)

    def wait(self, ident: str, done, what: str) -> dict:
        """The cluster once `done(cluster)`, polled; RehearsalFailed after the timeout."""
        deadline = time.monotonic() + self.args.timeout
        while True:
            cluster = self.api.call("GET", f"/v2/databases/{ident}")["database"]
            if done(cluster):
                return cluster
            if time.monotonic() > deadline:
                raise RehearsalFailed(
                    f"the fork is still {cluster['status']} (version {cluster['version']}) after "
                    f"{self.args.timeout:.0f} s waiting for {what}",
                    "look at the fork in the control panel; run pulumi up again later",
                )
            time.sleep(self.args.poll)

    def make_fork(self, source: dict) -> dict:
        name = fork_name(source["name"])
        leftover = self.cluster(name)
        if leftover:  # an earlier rehearsal's, cut short
            self.remove_fork(leftover)
        body = {
            "name": name, "engine": "pg", "version": source["version"], "size": source["size"],
            "region": source["region"], "num_nodes": 1,
            "private_network_uuid": source["private_network_uuid"],
            "backup_restore": {"database_name": source["name"]},
        }  # fmt: skip
        started = time.monotonic()
        fork = self.api.call("POST", "/v2/databases", body)["database"]
        fork = self.wait(fork["id"], lambda c: c["status"] == "online", "the fork to be online")
        self.say(f"fork {name} of {source['name']} (PostgreSQL {source['version']}) online "
                 f"in {time.monotonic() - started:.0f} s")  # fmt: skip
        return fork

    def remove_fork(self, fork: dict) -> None:
        self.api.call("DELETE", f"/v2/databases/{fork['id']}")
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            try:
                self.api.call("GET", f"/v2/databases/{fork['id']}")
            except ApiError as err:
                if err.status == 404:
                    self.say(f"fork {fork['name']} removed")
                    return
                raise
            time.sleep(self.args.poll)
        raise RehearsalFailed(
            f"fork {fork['name']} still exists {self.args.timeout:.0f} s after its deletion",
            f"delete database cluster {fork['name']} in the control panel (it costs by the hour)",
        )

    def upgrade_fork(self, fork: dict) -> None:
        target, started = str(self.args.version), time.monotonic()
        self.api.call("PUT", f"/v2/databases/{fork['id']}/upgrade", {"version": target})
        self.wait(fork["id"], lambda c: c["version"] == target and c["status"] == "online",
                  f"its upgrade to {target}")  # fmt: skip
        self.say(f"fork upgraded to PostgreSQL {target} in {time.monotonic() - started:.0f} s")

    def check(self, before: Reading, after: Reading) -> None:
        database, target = self.args.database, self.args.version
        keep = (
            "keep the cluster on its version (pulumi config rm mastodon-data:postgresUpgradeTo "
            "and set postgresVersion back); ask DigitalOcean's support why"
        )
        if after.major != target:
            raise RehearsalFailed(
                f"the upgraded fork answers on PostgreSQL {after.major}, not {target}", keep
            )
        if after.tables != before.tables:
            lost = sorted(set(before.tables) - set(after.tables))
            raise RehearsalFailed(
                f"tables of {database} missing after the fork's upgrade: {', '.join(lost)}", keep
            )
        if after.counts != before.counts:
            raise RehearsalFailed(
                f"row counts of {database} differ after the fork's upgrade: "
                f"{dict(before.counts)} before, {dict(after.counts)} after",
                keep,
            )
        rows = ", ".join(f"{name} {count}" for name, count in after.counts)
        self.say(f"checked: PostgreSQL {after.major}, {database} with {len(after.tables)} tables, "
                 f"the same rows in the largest ({rows or 'none'})")  # fmt: skip

    def run(self) -> int:
        source = self.cluster(self.args.cluster)
        if source is None or int(source["version"]) >= self.args.version:
            state = "does not exist yet" if source is None else f"runs {source['version']}"
            self.say(f"nothing to rehearse: {self.args.cluster} {state}")
            return 0
        fork = self.make_fork(source)
        try:
            with self.ca_file(fork) as ca:
                before = self.read(fork, ca)
                self.upgrade_fork(fork)
                self.check(
                    before,
                    self.read(self.api.call("GET", f"/v2/databases/{fork['id']}")["database"], ca),
                )
        finally:
            self.remove_fork(fork)
        return 0

    def read(self, fork: dict, ca: Path) -> Reading:
        try:
            return read_database(fork["connection"], ca, self.args.database)
        except psycopg.errors.InsufficientPrivilege as err:
            raise RehearsalFailed(
                f"doadmin cannot read {self.args.database} on the fork: {str(err).strip()}",
                "let doadmin read Mastodon's tables (as Mastodon's role: GRANT SELECT ON ALL "
                "TABLES IN SCHEMA public TO doadmin), then pulumi up again",
            ) from None
        except psycopg.OperationalError as err:
            if f'database "{self.args.database}" does not exist' in str(err):
                raise RehearsalFailed(
                    f"the cluster has no database {self.args.database} to rehearse with",
                    "check mastodon-data:dbName; run pulumi up once without postgresUpgradeTo",
                ) from None
            raise RehearsalFailed(
                f"the fork's database {self.args.database} does not answer: {str(err).strip()}",
                "the fork must be reachable from where pulumi runs (its public host, port "
                f"{fork['connection']['port']}); run pulumi up from there",
            ) from None

    @contextmanager
    def ca_file(self, fork: dict):
        pem = base64.b64decode(
            self.api.call("GET", f"/v2/databases/{fork['id']}/ca")["ca"]["certificate"]
        )
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "ca.crt"
            path.write_bytes(pem)
            yield path


def parse(argv: list[str] | None, prog: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", required=True, help="the managed cluster's name")
    parser.add_argument("--version", required=True, type=int, help="the major version to rehearse")
    parser.add_argument("--database", required=True, help="Mastodon's database")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per wait")
    parser.add_argument("--poll", type=float, default=10, help="seconds between the API's reads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse(argv, prog)
    try:
        return Rehearsal(DigitalOcean.from_environment(), args).run()
    except (RehearsalFailed, MissingToken) as exc:
        print(f"upgrade rehearsal failed, the cluster untouched: {exc}", file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"upgrade rehearsal failed, the cluster untouched: {exc}. Fix: the cause above "
              "(the token's scopes, the account's cluster limit), then pulumi up again",
              file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
