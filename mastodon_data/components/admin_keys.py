"""The admins' SSH keys on every database host (setting authorizedKeys): one step per host that
writes them into the login user's authorized_keys, in a block of its own. A droplet's `ssh_keys`
count only when it is made (they are ignored afterwards, a change would make a new droplet), so
this is how admin keys are added and retired without replacing a droplet."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from mastodon_data import plan
from mastodon_data.config import Host


class AuthorizedKeys(pulumi.ComponentResource):
    """One `remote.Command` per host, run again when the keys change. Its delete runs nothing: a
    host keeps the last keys written (the program makes this component only when keys are
    listed)."""

    def __init__(
        self,
        name: str,
        keys: Sequence[str],
        hosts: Sequence[Host],
        secrets: dict[str, pulumi.Output],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:AuthorizedKeys", name, None, opts)
        self.commands = [
            self._command(f"{name}-{step.host.name}", step, secrets["sshPrivateKey"])
            for step in plan.authorized_keys_steps(keys, hosts)
        ]
        self.register_outputs({})

    def _command(self, name: str, step: plan.Step, private_key: pulumi.Output) -> remote.Command:
        host = step.host
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
        stdin = json.dumps(plan.payload(step, step.params, {}))
        return remote.Command(
            name,
            connection=connection,
            create=plan.command_line(host.ssh_user),
            stdin=stdin,
            triggers=[plan.trigger(step.script, step.params)],
            add_previous_output_in_env=False,
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdin"]),
        )
