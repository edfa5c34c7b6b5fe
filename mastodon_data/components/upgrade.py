"""A blue/green major upgrade (config/upgrade.py): one command, run by `pulumi up`
on the operator's machine after both generations' steps, that drives the servers over ssh
(mastodon_data/cli/bluegreen.py) until Mastodon writes to the side `upgradeFrom.serve` names.
Its input changes (serve, a certificate, a password) run it again; it reads where the servers
stand first, so a run with nothing to do changes nothing. Its delete, when `upgradeFrom` is
removed, retires the old side: the old primary's subscription to the new one and its slot go."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys

import pulumi
from pulumi_command import local

from mastodon_data import plan
from mastodon_data.cli.bluegreen import Generation, generation_payload
from mastodon_data.config import Host, ReplicationSettings, UpgradeSettings

# Seconds the new side may take to copy every table and be in sync (a large database takes
# hours; the run waits for it, its writes flowing to the old side meanwhile).
SYNC_WAIT = 6 * 3600


class BlueGreenUpgrade(pulumi.ComponentResource):
    """`report`: the last run's summary (which side serves, the cut-over's timings)."""

    def __init__(
        self,
        name: str,
        upgrade: UpgradeSettings,
        sides: dict[str, tuple[ReplicationSettings, tuple[Host, ...], pulumi.Resource]],
        secrets: dict[str, pulumi.Output],
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mastodon-data:index:BlueGreenUpgrade", name, None, opts)
        passwords = (secrets["dbPassword"], secrets["replicationPassword"])
        run = pulumi.Output.all(
            resolved_hosts(sides["old"][1]), resolved_hosts(sides["new"][1]),
            sides["old"][2].ca_cert, sides["new"][2].ca_cert, *passwords, secrets["sshPrivateKey"],
        ).apply(lambda a: run_input(upgrade, sides, *a))  # fmt: skip
        python = [sys.executable, "-m", "mastodon_data.cli.bluegreen"]
        self.command = local.Command(
            f"{name}-run",
            create=shlex.join([*python, "serve"]),
            delete=shlex.join([*python, "retire"]),
            stdin=pulumi.Output.secret(run),
            add_previous_output_in_env=False,
            logging=local.Logging.STDERR,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[side[2] for side in sides.values()],
                additional_secret_outputs=["stdin"],
            ),
        )
        self.report = self.command.stdout.apply(plan.parse_report)
        self.register_outputs({})


def resolved_hosts(hosts: tuple[Host, ...]) -> pulumi.Output:
    """`hosts` with their addresses known (a droplet's are Outputs until it exists)."""
    addresses = [
        pulumi.Output.all(h.public_address, h.private_address, h.data_device, h.data_volume_size)
        for h in hosts
    ]
    return pulumi.Output.all(*addresses).apply(
        lambda known: tuple(
            dataclasses.replace(h, public_address=a[0], private_address=a[1], data_device=a[2],
                                data_volume_size=a[3])
            for h, a in zip(hosts, known, strict=True)
        )
    )  # fmt: skip


def run_input(
    upgrade: UpgradeSettings, sides: dict, old_hosts, new_hosts, old_ca, new_ca, db_pw, repl_pw,
    key,
) -> str:  # fmt: skip
    """The command's stdin: both generations, the side to serve, the ssh key."""
    hosts = {"old": old_hosts, "new": new_hosts}
    if {h.name for h in old_hosts} & {h.name for h in new_hosts}:  # droplets: db-0 on each side
        hosts = {
            side: tuple(dataclasses.replace(h, name=f"{h.name}-pg{replication.postgres_version}")
                        for h in hosts[side])
            for side, (replication, _, _) in sides.items()
        }  # fmt: skip
    certificates = {"old": old_ca, "new": new_ca}
    generations = {
        side: generation_payload(
            Generation(replication, hosts[side], certificates[side], db_pw, repl_pw)
        )
        for side, (replication, _, _) in sides.items()
    }
    return json.dumps({
        "serve": upgrade.serve, "sync_wait": SYNC_WAIT, "ssh_private_key": key,
        "generations": generations,
    })  # fmt: skip
