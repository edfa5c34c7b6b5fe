"""The replication step plan: which host script runs where, with which parameters, in which order.

Pure: no Pulumi, no I/O beyond reading the host scripts' source (host/). The Pulumi program
turns each step into a `remote.Command` (components/replication.py); cli/host_ssh.py runs one
step over ssh (the failover's promote, tests of one script). Addresses may be Pulumi Outputs
(droplets) or text.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mastodon_data.config import Host, ReplicationSettings

# The payload shipped to the hosts (stdlib only), beside this package in the project directory.
HOST_SCRIPTS = Path(__file__).resolve().parent.parent / "host"
# Which stack secret feeds which script parameter (they travel on stdin only).
SECRET_PARAMS = {
    "primary": {"replication_password": "replicationPassword", "db_password": "dbPassword"},
    "replica": {"replication_password": "replicationPassword"},
    "status": {},
    "promote": {},
    "authorized_keys": {},
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
class Step:
    name: str
    script: str  # primary | replica | status | promote | authorized_keys
    host: Host
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


def steps(
    replication: ReplicationSettings,
    hosts: Sequence[Host],
    *,
    reseed: frozenset[str] = frozenset(),
) -> list[Step]:
    """Primary first; every replica after it (in parallel); a status report per host last.
    Spare hosts get no step."""
    primary = next(h for h in hosts if h.role == "primary")
    replicas = [h for h in hosts if h.role == "replica"]
    common = server_params(replication)
    replica_list = [{"name": r.name, "address": r.private_address} for r in replicas]
    plan = [
        Step(
            "primary",
            "primary",
            primary,
            {**common, "private_address": primary.private_address, "replicas": replica_list},
        )
    ]
    for replica in replicas:
        params = {
            **common,
            "name": replica.name,
            "private_address": replica.private_address,
            "primary_address": primary.private_address,
            "primary_port": replication.port,
            "replica_count": len(replicas),
        }
        if replica.name in reseed:
            params["reseed"] = True
        plan.append(Step(f"replica-{replica.name}", "replica", replica, params, ("primary",)))
    setup = tuple(s.name for s in plan)
    report = {"version": replication.postgres_version, "port": replication.port}
    plan += [Step(f"status-{h.name}", "status", h, report, setup) for h in (primary, *replicas)]
    return plan


def server_params(replication: ReplicationSettings) -> dict:
    """The parameters the primary and the replicas share."""
    return {
        "version": replication.postgres_version,
        "port": replication.port,
        "replication_user": replication.replication_user,
        "db_name": replication.db_name,
        "db_user": replication.db_user,
        "allowed_sources": list(replication.postgres_allowed_sources),
        "wal_keep_size": replication.wal_keep_size,
        "max_slot_wal_keep_size": replication.max_slot_wal_keep_size,
        "replication_timeout": replication.replication_timeout,
        "wal_retrieve_retry_interval": replication.wal_retrieve_retry_interval,
    }


def promote_step(replication: ReplicationSettings, host: Host) -> Step:
    """Failover: turns a replica into the primary (`mastodon-data failover promote`)."""
    return Step(
        f"promote-{host.name}",
        "promote",
        host,
        {"version": replication.postgres_version, "port": replication.port},
    )


def authorized_keys_steps(keys: Sequence[str], hosts: Sequence[Host]) -> list[Step]:
    """The admins' keys into each host's login user's authorized_keys (spares too: an admin
    may need to reach every server the stack knows)."""
    return [
        Step(f"keys-{h.name}", "authorized_keys", h, {"user": h.ssh_user, "keys": list(keys)})
        for h in hosts
    ]
