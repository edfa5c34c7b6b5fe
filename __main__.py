"""The Pulumi program: configuration -> database hosts -> replication steps -> outputs."""

import pulumi

from components import plan, stack_config
from components.config import ConfigError
from components.outputs import env_output, host_outputs
from components.replication import ReplicationSteps

try:
    settings, secrets, reseed = stack_config.load()
except ConfigError as problems:
    # A RunError is shown without a traceback: only the problems and their fixes.
    raise pulumi.RunError(f"invalid stack configuration:\n{problems}") from None

if settings.mode == "droplets":
    from components.droplets import DropletTier

    nodes = DropletTier("db", settings).nodes
else:
    nodes = plan.nodes_from_hosts(settings)

replication = ReplicationSteps("replication", plan.steps(settings, nodes, reseed=reseed), secrets)

# Addresses may be Outputs (droplets): resolve them, then map with the pure functions.
resolved_nodes = pulumi.Output.all(
    *[[n.name, n.role, n.public_address, n.private_address] for n in nodes]
).apply(lambda rows: [plan.Node(*row) for row in rows])
status = replication.status_stdout()
ca_cert = replication.commands["primary"].stdout.apply(
    lambda out: plan.parse_report(out).get("ca_cert", "")
)
hosts = pulumi.Output.all(resolved_nodes, ca_cert, *status.values()).apply(
    lambda args: host_outputs(args[0], dict(zip(status, args[2:], strict=True)), args[1])
)
for key in ("primary", "replicas", "replication", "postgres_ca_cert"):
    pulumi.export(key, hosts[key])
pulumi.export(
    "mastodon_env",
    pulumi.Output.secret(
        pulumi.Output.all(resolved_nodes, secrets["dbPassword"]).apply(
            lambda args: env_output(settings, *args)
        )
    ),
)
