"""PostgreSQL on the stack's own servers (droplets or existing hosts): the replication steps as
`remote.Command`s, the primary first, then every replica in parallel (beside them the slots
step, which drops stale slots on the primary), then a read-only status report per host; with
pools, PgBouncer set up on each host after its own step; with replicas, the replica health
endpoint on each server (what the read endpoint checks). One command per step of the plan,
made from the step alone (mastodon_data/plan.py): scripts and secrets travel on stdin; a step's
trigger is the hash of its scripts, non-secret parameters and trigger inputs, so it runs again
exactly when one of them changes."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from mastodon_data import cert_renewal, outputs, plan
from mastodon_data.config import BackupSettings, Host, ReplicationSettings
from mastodon_data.monitoring import targets

# A step's delete gets the step's stdin too (a remote.Command has one stdin): it reads it to the
# end before its note. Exiting unread lets sshd close the channel while pulumi-command still
# writes it, and the delete fails with `EOF` though it exited 0 (issue 24, lab/ssh_stdin_race).
DRAIN_STDIN = "cat >/dev/null; "


class ReplicationSteps(pulumi.ComponentResource):
    """What others read, as ManagedPostgres has them: `endpoints` (an Output of the plain dict of
    mastodon_data.outputs), `password` (Mastodon's role's, secret) and `ca_cert` (the CA the
    primary made, from its step's report); and `status` (each host's last report, by name),
    `primary` and `replicas` (where each role lives).

    `hosts_outlive_stack`: existing hosts stay when a step goes (`pulumi destroy`, a replica
    dropped), so its delete says on the host that the data was left in place. Droplets go with
    the stack: there a step's delete runs nothing, so it never needs its host (a droplet deleted
    behind the program's back is gone, and the step it leaves must still go)."""

    def __init__(
        self,
        name: str,
        replication: ReplicationSettings,
        hosts: Sequence[Host],
        secrets: dict[str, pulumi.Output],
        reseed: frozenset[str] = frozenset(),
        opts: pulumi.ResourceOptions | None = None,
        *,
        hosts_outlive_stack: bool = True,
        backups: BackupSettings | None = None,
        read_address: pulumi.Input[str] | None = None,
    ):
        super().__init__("mastodon-data:index:ReplicationSteps", name, None, opts)
        self.commands: dict[str, remote.Command] = {}
        self._triggers: dict[str, pulumi.Output] = {}
        self._keep_data_note = hosts_outlive_stack
        for step in plan.steps(replication, hosts, reseed=reseed, backups=backups):
            self.commands[step.name] = self._command(f"{name}-{step.name}", step, secrets)
        report = self.commands["primary"].stdout.apply(plan.parse_report)
        self.ca_cert = report.apply(lambda r: r.get("ca_cert", ""))
        self.status = {
            step.removeprefix("status-"): command.stdout.apply(plan.parse_report)
            for step, command in self.commands.items()
            if step.startswith("status-")
        }
        used = [h for h in hosts if h.role != "spare"]
        servers = pulumi.Output.all(
            *[[h.name, h.role, h.public_address, h.private_address] for h in used]
        ).apply(outputs.servers_output)
        self.primary, self.replicas = servers["primary"], servers["replicas"]
        # Mastodon's reads: the read endpoint over the replicas, else the first replica.
        first_replica = next((h.private_address for h in used if h.role == "replica"), None)
        self.endpoints = pulumi.Output.all(
            next(h.private_address for h in used if h.role == "primary"),
            read_address if first_replica is not None and read_address else first_replica,
        ).apply(
            lambda a: outputs.server_endpoints(
                a[0],
                a[1],
                replication.port,
                replication.db_name,
                replication.db_user,
                replication.pool,
            )
        )
        self.password = secrets["dbPassword"]
        self.targets = pulumi.Output.all(*[h.private_address for h in used]).apply(
            lambda addresses: targets.file_sd(
                [targets.Server(h.name, h.role, a) for h, a in zip(used, addresses, strict=True)],
                replication.port,
                replication.pool.pgbouncer_port if replication.pool else None,
            )
        )
        self.register_outputs({})

    def _command(self, name: str, step: plan.Step, secrets: dict) -> remote.Command:
        """The step's command, from the step alone: its parameters (with what it takes from
        earlier steps' reports), its secrets on stdin, its trigger (with its host's certificate
        renewal count, for a step that owns one)."""
        key = secrets["sshPrivateKey"]
        reports = [self.commands[source].stdout for source in step.report_sources]
        params = pulumi.Output.all(pulumi.Output.from_input(step.params), *reports).apply(
            lambda a: step.fill_reports(a[0], a[1:])
        )
        probe = step.renewal_probe
        renewals = cert_renewal.renewal_count_output(step.host, key, *probe) if probe else 0
        self._triggers[step.name] = pulumi.Output.all(
            params, pulumi.Output.from_input(step.trigger_inputs), renewals
        ).apply(lambda a: step.trigger(*a))
        stdin = pulumi.Output.all(params, *(secrets[k] for k in step.secret_params.values()))
        uploads = self._uploads(name, step, key)
        note = step.keep_note if self._keep_data_note else None
        return remote.Command(
            name,
            connection=ssh_connection(step.host, key),
            create=step.command,
            delete=DRAIN_STDIN + note if note else None,
            stdin=pulumi.Output.secret(stdin.apply(lambda a: step.stdin(a[0], a[1:]))),
            # A status report runs again whenever a setup step ran again.
            triggers=[self._triggers[s] for s in (step.name, *step.after)],
            add_previous_output_in_env=False,
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.commands[s] for s in (*step.after, *step.requires)] + uploads,
                additional_secret_outputs=["stdin"],
            ),
        )

    def _uploads(self, name: str, step: plan.Step, key: pulumi.Output) -> list[pulumi.Resource]:
        """The files the step needs on its host, copied first (CopyToRemote, over SFTP as the
        login user) into directories made for that user; again on a new host (its address)."""
        if not step.uploads:
            return []
        connection = ssh_connection(step.host, key)
        directories = sorted({posixpath.dirname(there) for _, there in step.uploads})
        staging = remote.Command(
            f"{name}-staging",
            connection=connection,
            create=staging_command(step.host.ssh_user, directories),
            triggers=[step.host.public_address],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [
            remote.CopyToRemote(
                f"{name}-{posixpath.basename(there)}",
                connection=connection,
                source=pulumi.FileAsset(here),
                remote_path=there,
                triggers=[step.host.public_address],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[staging]),
            )
            for here, there in step.uploads
        ]


def staging_command(ssh_user: str, directories: Sequence[str]) -> str:
    """Makes `directories` the login user's (0755), with sudo for one that is not root."""
    make = shlex.join(["install", "-d", "-m", "0755", "-o", ssh_user, *directories])
    return make if ssh_user == "root" else f"sudo -n {make}"


def ssh_connection(host: Host, private_key: pulumi.Output) -> remote.ConnectionArgsDict:
    """How a step's command reaches its host: the stack's key, the host key when pinned."""
    connection = remote.ConnectionArgsDict(
        host=host.public_address,
        port=host.ssh_port,
        user=host.ssh_user,
        private_key=private_key,
        dial_error_limit=10,
        per_dial_timeout=15,
    )
    if host.host_key:
        connection["host_key"] = host.host_key
    return connection
