"""The replication step plan: which host script runs where, with which parameters, in which order.

Pure: no Pulumi, no I/O beyond reading the host scripts' source. The Pulumi program turns each
step into a `remote.Command`; `scripts/apply_hosts.py` runs the very same steps over ssh when the
engine cannot. Parameter values may be Pulumi Outputs (droplet addresses) or plain strings.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "host"
# Which stack secret feeds which script parameter (they travel on stdin only).
SECRET_PARAMS = {
    "primary": {"replication_password": "replicationPassword", "db_password": "dbPassword"},
    "replica": {"replication_password": "replicationPassword"},
    "status": {},
    "promote": {},
}

# Runs on the host: writes the shipped scripts into a private directory of its own (so runs
# never see each other's files) and feeds the parameters to the one asked for. Scripts and
# parameters come on stdin, so no secret is ever on a command line.
LAUNCHER = (
    "import json,os,subprocess,sys,tempfile\n"
    "os.umask(0o077)\n"
    "d=json.load(sys.stdin)\n"
    "with tempfile.TemporaryDirectory(prefix='mastodon-data-') as p:\n"
    "    for n,s in d['files'].items():\n"
    "        open(os.path.join(p,n),'w').write(s)\n"
    "    r=subprocess.run([sys.executable,os.path.join(p,d['run'])],"
    "input=json.dumps(d['params']),text=True)\n"
    "sys.exit(r.returncode)\n"
)


@dataclass(frozen=True)
class Node:
    """A database host as the plan sees it; addresses may be Pulumi Outputs."""

    name: str
    role: str  # primary | replica
    public_address: Any
    private_address: Any
    ssh_user: str = "root"
    ssh_port: int = 22
    host_key: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    script: str  # primary | replica | status
    node: Node
    params: dict = field(hash=False)  # non-secret parameters
    after: tuple[str, ...] = ()

    @property
    def secret_params(self) -> dict[str, str]:
        return SECRET_PARAMS[self.script]


def parse_report(stdout: str) -> dict:
    """The JSON summary a host script prints as its last stdout line."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"unparsed": lines[-1][:200]}


def from_primary(report: dict) -> dict:
    """What replica steps take from the primary step's report: the CA that signed its
    certificate, so replication runs with sslmode=verify-full."""
    return {"primary_ca_cert": report.get("ca_cert", "")}


def script_files(script: str) -> dict[str, str]:
    """The files a step ships: its own script and the shared helpers, so editing another
    role's script does not re-run (or even diff) this step."""
    return {name: (HOST_SCRIPTS / name).read_text() for name in ("common.py", f"{script}.py")}


# What `pulumi destroy` (or dropping a replica) runs: nothing that touches data. On existing hosts
# the databases stay where they are, and the message says so.
KEEP_DATA = (
    "echo 'mastodon-data: PostgreSQL and its data are left in place on this host; "
    "remove them yourself if that is what you want.'"
)


def command_line(ssh_user: str) -> str:
    """The remote command: no parameter or secret in it, sudo only for a non-root user."""
    run = f"python3 -c {shlex.quote(LAUNCHER)}"
    return run if ssh_user == "root" else f"sudo -n {run}"


def payload(step: Step, params: dict, secrets: dict[str, str]) -> dict:
    """What goes on the step's stdin: the scripts, and the parameters with secrets filled in."""
    filled = dict(params)
    for param, key in step.secret_params.items():
        filled[param] = secrets[key]
    return {"files": script_files(step.script), "run": f"{step.script}.py", "params": filled}


def trigger(script: str, params: dict) -> str:
    """Changes when the step's scripts or non-secret parameters change: it runs again then."""
    digest = hashlib.sha256()
    for name, source in script_files(script).items():
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest()


def nodes_from_hosts(settings) -> list[Node]:
    """Hosts mode: the first host is the primary, the next `replica_count` are replicas."""
    chosen = settings.hosts[: 1 + settings.replica_count]
    return [
        Node(
            h.name,
            "primary" if i == 0 else "replica",
            h.public_address,
            h.private_address,
            h.ssh_user,
            h.ssh_port,
            h.host_key,
        )
        for i, h in enumerate(chosen)
    ]


def steps(settings, nodes: list[Node], *, reseed: frozenset[str] = frozenset()) -> list[Step]:
    """Primary first; every replica after it (in parallel); a status report per host last."""
    primary = next(n for n in nodes if n.role == "primary")
    replicas = [n for n in nodes if n.role == "replica"]
    common = {
        "version": settings.postgres_version,
        "port": settings.port,
        "replication_user": settings.replication_user,
        "db_name": settings.db_name,
        "db_user": settings.db_user,
        "allowed_sources": list(settings.postgres_allowed_sources),
        "wal_keep_size": settings.wal_keep_size,
        "max_slot_wal_keep_size": settings.max_slot_wal_keep_size,
        "replication_timeout": settings.replication_timeout,
        "wal_retrieve_retry_interval": settings.wal_retrieve_retry_interval,
    }
    plan = [
        Step(
            "primary",
            "primary",
            primary,
            {
                **common,
                "private_address": primary.private_address,
                "replicas": [{"name": r.name, "address": r.private_address} for r in replicas],
            },
        )
    ]
    for replica in replicas:
        params = {
            **common,
            "name": replica.name,
            "private_address": replica.private_address,
            "primary_address": primary.private_address,
            "primary_port": settings.port,
            "replica_count": len(replicas),
        }
        if replica.name in reseed:
            params["reseed"] = True
        plan.append(Step(f"replica-{replica.name}", "replica", replica, params, ("primary",)))
    setup = tuple(s.name for s in plan)
    plan += [
        Step(
            f"status-{n.name}",
            "status",
            n,
            {"version": settings.postgres_version, "port": settings.port},
            setup,
        )
        for n in nodes
    ]
    return plan


def promote_step(settings, node: Node) -> Step:
    """Failover: turns a replica into the primary (scripts/failover.py)."""
    return Step(
        f"promote-{node.name}",
        "promote",
        node,
        {"version": settings.postgres_version, "port": settings.port},
    )
