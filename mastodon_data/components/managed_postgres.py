"""Managed mode: a DigitalOcean PostgreSQL cluster with a hot standby, Mastodon's database and
role, a pgBouncer pool in transaction mode, an optional read-only node, and firewalls that let
only the app's droplets/tag/addresses in."""

from __future__ import annotations

import os
import shlex
import sys

import pulumi
import pulumi_digitalocean as do
from pulumi_command import local

from mastodon_data.components.lifecycle import POOL_OPTIONS, keep_data
from mastodon_data.config import PROJECT, AppSources, LifecycleSettings, ManagedPostgresSettings
from mastodon_data.do_api import DEFAULT_URL, ApiError, DigitalOcean
from mastodon_data.monitoring.targets import managed_file_sd
from mastodon_data.naming import do_name
from mastodon_data.outputs import POOL_MODE


def version_check(running: str | None, wanted: str) -> None:
    """Stops the run when postgresVersion differs from the cluster's: that change is a major
    upgrade in place, done only in a run that asks for it (postgresUpgradeTo)."""
    if running is None or str(running) == wanted:
        return
    raise pulumi.RunError(
        f"{PROJECT}:postgresVersion = {wanted}: the managed cluster runs PostgreSQL {running}; "
        f"the change is a major upgrade in place (minutes of downtime, no way back). Fix: to "
        f"upgrade, pulumi config set {PROJECT}:postgresUpgradeTo {wanted} for this run "
        f"(then pulumi config rm {PROJECT}:postgresUpgradeTo); to keep {running}, pulumi config "
        f"set {PROJECT}:postgresVersion {running}"
    )


def live_version(cluster_name: str) -> str | None:
    """The cluster's version as DigitalOcean's API says now, with the provider's token and
    endpoint; None when it cannot be read (the state's then counts)."""
    token = os.environ.get("DIGITALOCEAN_TOKEN") or pulumi.runtime.get_config("digitalocean:token")
    url = os.environ.get("DIGITALOCEAN_API_URL") or pulumi.runtime.get_config(
        "digitalocean:apiEndpoint"
    )
    if not token:
        return None
    try:
        clusters = DigitalOcean(token, url or DEFAULT_URL).call("GET", "/v2/databases")
    except (ApiError, OSError):
        return None
    found = [c["version"] for c in clusters["databases"] if c["name"] == cluster_name]
    return found[0] if found else None


class ManagedPostgres(pulumi.ComponentResource):
    """`endpoints`: an Output of the plain dict of mastodon_data.outputs (no secret in it, so
    outputs made from it stay readable); `password`: Mastodon's role's, a secret Output;
    `ca_cert`: DigitalOcean's CA of the cluster; `admin`: the admin user's endpoint, secret."""

    def __init__(
        self,
        name: str,
        managed: ManagedPostgresSettings,
        app_sources: AppSources,
        vpc_id: pulumi.Input[str],
        lifecycle: LifecycleSettings,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:ManagedPostgres", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        self._keep_data = lifecycle.protect_data
        self._base = do_name("mastodon-data", pulumi.get_stack())
        wanted = str(managed.postgres_version)
        upgrading = lifecycle.postgres_upgrade_to == managed.postgres_version
        self.rehearsal = self._rehearsal(name, managed, upgrading)
        self.cluster = do.DatabaseCluster(
            f"{name}-cluster",
            name=f"{self._base}-pg",
            engine="pg",
            version=wanted,
            size=managed.size,
            region=managed.region,
            node_count=managed.node_count,  # 2+: a standby takes over automatically
            private_network_uuid=vpc_id,
            # A changed version is a major upgrade in place: applied only in the run that asks
            # for it; otherwise the cluster keeps its version and version_check stops the run.
            opts=keep_data(
                self._keep_data,
                pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[self.rehearsal],  # a failed rehearsal stops the run here
                    ignore_changes=None if upgrading else ["version"],
                ),
            ),
        )
        if not upgrading:
            self.cluster.version.apply(lambda running: self._version_check(running, wanted))
        self._database_and_pool(name, managed)
        rules = [do.DatabaseFirewallRuleArgs(**rule) for rule in app_sources.firewall_rules()]
        self.firewall = do.DatabaseFirewall(
            f"{name}-firewall", cluster_id=self.cluster.id, rules=rules, opts=self._child
        )
        self.replica = self.replica_firewall = None
        if managed.replica:
            self._read_only_node(name, managed, vpc_id, rules)
        self._expose()
        self._metrics()
        self.register_outputs(
            {
                "cluster_id": self.cluster.id,
                "pool_host": self.pool.private_host,
                "direct_host": self.cluster.private_host,
            }
        )

    def _rehearsal(self, name: str, managed: ManagedPostgresSettings, upgrading: bool):
        """The upgrade's rehearsal on a fork (mastodon_data/cli/rehearse_upgrade.py). It runs
        when made (nothing to rehearse then: no cluster yet) and again in the run that upgrades
        (its command names the version); other runs leave it as it is."""
        argv = [sys.executable, "-m", "mastodon_data.cli.rehearse_upgrade",
                "--cluster", f"{self._base}-pg", "--version", str(managed.postgres_version),
                "--database", managed.db_name, "--poll", "5"]  # fmt: skip
        provider = pulumi.Config("digitalocean")
        environment = {}  # else the provider's own environment (DIGITALOCEAN_TOKEN) is inherited
        if provider.get_secret("token") is not None:
            environment["DIGITALOCEAN_TOKEN"] = provider.require_secret("token")
        if provider.get("apiEndpoint"):
            environment["DIGITALOCEAN_API_URL"] = provider.get("apiEndpoint")
        return local.Command(
            f"{name}-upgrade-rehearsal",
            create=shlex.join(argv),
            environment=environment,
            opts=pulumi.ResourceOptions(
                parent=self, ignore_changes=None if upgrading else ["create"]
            ),
        )

    def _version_check(self, running: str | None, wanted: str) -> None:
        """version_check on the state's version; when that differs, the API's answer counts:
        the provider records the version it reads right after asking for the upgrade, before
        DigitalOcean has done it (`pulumi refresh` brings the state up to date)."""
        if running is not None and str(running) != wanted:
            running = live_version(f"{self._base}-pg") or running
        version_check(running, wanted)

    def _database_and_pool(self, name: str, managed: ManagedPostgresSettings) -> None:
        self.database = do.DatabaseDb(
            f"{name}-db", cluster_id=self.cluster.id, name=managed.db_name, opts=self._child
        )
        # DigitalOcean generates the password (a secret output of the SDK).
        self.user = do.DatabaseUser(
            f"{name}-user", cluster_id=self.cluster.id, name=managed.db_user, opts=self._child
        )
        # Mastodon through pgBouncer needs transaction mode (and PREPARED_STATEMENTS=false).
        self.pool = do.DatabaseConnectionPool(
            f"{name}-pool",
            cluster_id=self.cluster.id,
            name=managed.pool_name,
            mode=POOL_MODE,
            size=managed.pool_size,
            db_name=self.database.name,
            user=self.user.name,
            opts=pulumi.ResourceOptions.merge(self._child, POOL_OPTIONS),
        )

    def _read_only_node(
        self, name: str, managed: ManagedPostgresSettings, vpc_id: pulumi.Input[str], rules: list
    ) -> None:
        self.replica = do.DatabaseReplica(
            f"{name}-replica",
            cluster_id=self.cluster.id,
            name=f"{self._base}-pg-replica",
            size=managed.size,  # DigitalOcean: at least the primary's size
            region=managed.region,
            private_network_uuid=vpc_id,
            # One change at a time on a fresh cluster: after the database, role and pool.
            opts=keep_data(
                self._keep_data, pulumi.ResourceOptions(parent=self, depends_on=[self.pool])
            ),
        )
        # A read-only node has its own trusted sources, addressed by its uuid.
        self.replica_firewall = do.DatabaseFirewall(
            f"{name}-replica-firewall",
            cluster_id=self.replica.uuid,
            rules=rules,
            opts=self._child,
        )

    def _metrics(self) -> None:
        """The cluster's metrics endpoints (DigitalOcean's, on public host names) as Prometheus
        targets. Their credentials are the account's (GET /v2/databases/metrics/credentials):
        read here, they would make every preview call the API."""
        self.targets = pulumi.Output.all(self.cluster.name, self.cluster.metrics_endpoints).apply(
            lambda found: managed_file_sd(found[0], found[1] or [])
        )

    def _expose(self) -> None:
        """What others read: endpoints, the role's password, the CA, the admin's endpoint."""
        # DigitalOcean's CA: the streaming server verifies the certificate (NODE_EXTRA_CA_CERTS).
        self.ca_cert = do.get_database_ca_output(
            cluster_id=self.cluster.id, opts=pulumi.InvokeOutputOptions(parent=self)
        ).certificate
        self.endpoints = pulumi.Output.all(
            pool_host=self.pool.private_host,
            pool_port=self.pool.port,
            pool_name=self.pool.name,
            pool_size=self.pool.size,
            direct_host=self.cluster.private_host,
            direct_port=self.cluster.port,
            db_name=self.database.name,
            user=self.user.name,
            replica_host=self.replica.private_host if self.replica else None,
            replica_port=self.replica.port if self.replica else None,
        )
        self.password = pulumi.Output.secret(self.user.password)
        # For `mastodon-data grant`: DigitalOcean's admin user (doadmin), private endpoint.
        self.admin = pulumi.Output.secret(
            pulumi.Output.all(
                host=self.cluster.private_host,
                port=self.cluster.port,
                user=self.cluster.user,
                password=self.cluster.password,
            )
        )
