"""The replication steps as `remote.Command`s: primary, then every replica in parallel, then a
read-only status report per host. Scripts and secrets travel on stdin; triggers are the hash of
the scripts and the non-secret parameters, so a step runs again exactly when one of them changes."""

from __future__ import annotations

import pulumi
from pulumi_command import remote

from components import plan


class ReplicationSteps(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        steps: list[plan.Step],
        secrets: dict[str, pulumi.Output],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:ReplicationSteps", name, None, opts)
        self.commands: dict[str, remote.Command] = {}
        triggers: dict[str, pulumi.Output] = {}
        for step in steps:
            node = step.node
            connection = remote.ConnectionArgsDict(
                host=node.public_address,
                port=node.ssh_port,
                user=node.ssh_user,
                private_key=secrets["sshPrivateKey"],
                dial_error_limit=10,
                per_dial_timeout=15,
            )
            if node.host_key:
                connection["host_key"] = node.host_key
            params = pulumi.Output.from_input(step.params)
            if step.script == "replica":  # the primary's CA, from its report
                params = pulumi.Output.all(params, self.commands["primary"].stdout).apply(
                    lambda args: {**args[0], **plan.from_primary(plan.parse_report(args[1]))}
                )
            triggers[step.name] = params.apply(
                lambda p, script=step.script: plan.trigger(script, p)
            )
            stdin = pulumi.Output.all(params, *(secrets[k] for k in step.secret_params.values()))
            stdin = pulumi.Output.secret(
                stdin.apply(lambda args, step=step: _stdin(step, args[0], args[1:]))
            )
            # A status report runs again whenever a setup step ran again.
            step_triggers = [triggers[step.name], *(triggers[name] for name in step.after)]
            self.commands[step.name] = remote.Command(
                f"{name}-{step.name}",
                connection=connection,
                create=plan.command_line(node.ssh_user),
                delete=plan.KEEP_DATA if step.script != "status" else None,
                stdin=stdin,
                triggers=step_triggers,
                add_previous_output_in_env=False,
                logging=remote.Logging.STDOUT_AND_STDERR,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[self.commands[name] for name in step.after],
                    additional_secret_outputs=["stdin"],
                ),
            )
        self.register_outputs({})

    def status_stdout(self) -> dict[str, pulumi.Output]:
        return {
            name.removeprefix("status-"): command.stdout
            for name, command in self.commands.items()
            if name.startswith("status-")
        }


def _stdin(step: plan.Step, params: dict, secret_values: list[str]) -> str:
    import json

    secrets = dict(zip(step.secret_params.values(), secret_values, strict=True))
    return json.dumps(plan.payload(step, params, secrets))
