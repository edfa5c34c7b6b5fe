"""The admins' SSH keys on every database host (setting authorizedKeys): one step per host that
writes them into the login user's authorized_keys, in a block of its own. A droplet's `ssh_keys`
count only when it is made (they are ignored afterwards, a change would make a new droplet), so
this is how admin keys are added and retired without replacing a droplet."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
from pulumi_command import remote

from mastodon_data import plan
from mastodon_data.components.replication import ssh_connection
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
        return remote.Command(
            name,
            connection=ssh_connection(step.host, private_key),
            create=step.command,
            stdin=step.stdin(step.params, []),
            triggers=[step.trigger(step.params, step.trigger_inputs)],
            add_previous_output_in_env=False,
            logging=remote.Logging.STDOUT_AND_STDERR,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stdin"]),
        )
