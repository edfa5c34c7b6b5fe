"""PostgreSQL on the stack's own servers (droplets or existing hosts): the replication steps as
`remote.Command`s, the primary first, then every replica in parallel (beside them the slots
step, which drops stale slots on the primary), then a read-only status report per host; with
pools, PgBouncer set up on each host after its own step. Scripts and secrets travel on stdin; a
step's triggers are the hash of its scripts and non-secret parameters, so it runs again exactly
when one of them changes."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from mastodon_data import cert_renewal, outputs, plan
from mastodon_data.config import BackupSettings, Host, ReplicationSettings


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
        self.endpoints = pulumi.Output.all(
            next(h.private_address for h in used if h.role == "primary"),
            next((h.private_address for h in used if h.role == "replica"), None),
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
        self.register_outputs({})

    def _command(self, name: str, step: plan.Step, secrets: dict) -> remote.Command:
        host = step.host
        connection = remote.ConnectionArgsDict(
            host=host.public_address,
            port=host.ssh_port,
            user=host.ssh_user,
            private_key=secrets["sshPrivateKey"],
            dial_error_limit=10,
            per_dial_timeout=15,
        )
        if host.host_key:
            connection["host_key"] = host.host_key
        params = pulumi.Output.from_input(step.params)
        if step.script == "replica":  # the primary's CA, from its report
            params = pulumi.Output.all(params, self.commands["primary"].stdout).apply(
                lambda args: {**args[0], **plan.from_primary(plan.parse_report(args[1]))}
            )
        self._triggers[step.name] = self._trigger(step, params, secrets["sshPrivateKey"])
        stdin = pulumi.Output.all(params, *(secrets[k] for k in step.secret_params.values()))
        stdin = pulumi.Output.secret(stdin.apply(lambda args: _stdin(step, args[0], args[1:])))
        return remote.Command(
            name,
            connection=connection,
            create=plan.command_line(host.ssh_user),
            delete=self._delete_note(step.script),
            stdin=stdin,
            # A status report runs again whenever a setup step ran again.
            triggers=[self._triggers[s] for s in (step.name, *step.after)],
            add_previous_output_in_env=False,
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.commands[s] for s in (*step.after, *step.requires)],
                additional_secret_outputs=["stdin"],
            ),
        )

    @staticmethod
    def _trigger(step: plan.Step, params: pulumi.Output, key: pulumi.Output) -> pulumi.Output:
        """The hash of the step's scripts and parameters; for a step that owns a server
        certificate (primary, replica) also its renewal count, read on the host at every run
        (cert_renewal), so a certificate within its renewal window runs the step again."""
        if step.script not in plan.CERTIFICATE_SCRIPTS:
            return params.apply(lambda p: plan.trigger(step.script, p))
        count = cert_renewal.renewal_count_output(
            step.host, key, step.params["version"], step.params["certificate_renew_days"]
        )
        return pulumi.Output.all(params, count).apply(
            lambda a: plan.trigger(step.script, a[0], renewals=a[1])
        )

    def _delete_note(self, script: str) -> str | None:
        """What a step's delete says on a host that outlives the stack (nothing for reports and
        backup settings)."""
        if not self._keep_data_note:
            return None
        if script == "pooler":
            return plan.KEEP_POOLER
        return plan.KEEP_DATA if script in ("primary", "replica", "volume") else None


def _stdin(step: plan.Step, params: dict, secret_values: list[str]) -> str:
    secrets = dict(zip(step.secret_params.values(), secret_values, strict=True))
    return json.dumps(plan.payload(step, params, secrets))
