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
from importlib import resources

from mastodon_data.config import BackupSettings, Host, ReplicationSettings

# The payload shipped to the hosts (stdlib only): package data, read the same way installed or not.
HOST_SCRIPTS = resources.files("mastodon_data") / "host"
# The steps that issue and renew their host's server certificate.
CERTIFICATE_SCRIPTS = ("primary", "replica")
# Which stack secret feeds which script parameter (they travel on stdin only). The repository's
# key comes from the stack's own Spaces key (droplets) or from the settings (hosts).
BACKUP_SECRETS = {
    "repo_key": "backupAccessKeyId",
    "repo_key_secret": "backupSecretAccessKey",
    "cipher_pass": "backupCipherPassphrase",
}
SECRET_PARAMS = {
    "primary": {"replication_password": "replicationPassword", "db_password": "dbPassword"},
    "replica": {"replication_password": "replicationPassword"},
    "pooler": {"db_password": "dbPassword"},
    "slots": {},
    "status": {},
    "promote": {},
    "backup": BACKUP_SECRETS,
    "restore": BACKUP_SECRETS,
    "volume": {},
    "authorized_keys": {},
}
# Modules a script imports besides common.py (shipped with it).
SCRIPT_MODULES = {name: ("repository.py",) for name in ("backup", "restore", "status")}

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
    script: str  # primary | slots | replica | pooler | status | promote | volume | backup |
    # restore | authorized_keys
    host: Host
    params: dict = field(hash=False)  # non-secret parameters
    after: tuple[str, ...] = ()  # runs after these, and again whenever they run again
    requires: tuple[str, ...] = ()  # runs after these only (a grown volume re-runs nothing else)

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
    names = ("common.py", *SCRIPT_MODULES.get(script, ()), f"{script}.py")
    return {name: (HOST_SCRIPTS / name).read_text() for name in names}


# What `pulumi destroy` (or dropping a replica) runs: nothing that touches data. On existing hosts
# the databases stay where they are, and the message says so.
KEEP_DATA = (
    "echo 'mastodon-data: PostgreSQL and its data are left in place on this host; "
    "remove them yourself if that is what you want.'"
)


# A pooler step that goes (the pool turned off, `pulumi destroy`) leaves PgBouncer as it is:
# Mastodon may still use it until its .env.production changes.
KEEP_POOLER = (
    "echo 'mastodon-data: PgBouncer is left running on this host; once Mastodon no longer uses "
    "it: systemctl disable --now pgbouncer'"
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


def trigger(script: str, params: dict, renewals: int = 0) -> str:
    """Changes when the step's scripts or non-secret parameters change, or its host's server
    certificate is due for renewal (`renewals`: the count read on the host, plus one when
    due; see cert_renewal): it runs again then."""
    digest = hashlib.sha256()
    for name, source in script_files(script).items():
        digest.update(name.encode() + b"\0" + source.encode() + b"\0")
    digest.update(json.dumps(params, sort_keys=True).encode())
    return digest.hexdigest() + (f"+renewal-{renewals}" if renewals else "")


def steps(
    replication: ReplicationSettings,
    hosts: Sequence[Host],
    *,
    reseed: frozenset[str] = frozenset(),
    backups: BackupSettings | None = None,
) -> list[Step]:
    """Each host's data device mounted first (where it has one); the primary; every replica
    after it (in parallel), and beside them the pruning of stale slots on the primary; with
    pools, a pooler step after each host's own step; with backups, a backup step per host after
    the replication steps; a status report per host last. Spare hosts get no step."""
    primary = next(h for h in hosts if h.role == "primary")
    replicas = [h for h in hosts if h.role == "replica"]
    common = server_params(replication)
    common["wal_senders"] = wal_senders(len(replicas))
    plan = [volume_step(h) for h in (primary, *replicas) if h.data_device is not None]
    volume = {s.host.name: (s.name,) for s in plan}
    plan.append(
        Step(
            "primary",
            "primary",
            primary,
            {
                **common,
                "private_address": primary.private_address,
                # Every server of the stack may replicate (spares too, so turning one into a
                # replica leaves the primary's step as it is; the slot is the replica's own).
                "replication_peers": [h.private_address for h in hosts if h is not primary],
                "ca_rotation": replication.ca_rotation,
            },
            requires=volume.get(primary.name, ()),
        )
    )
    for replica in replicas:
        params = {
            **common,
            "name": replica.name,
            "private_address": replica.private_address,
            "primary_address": primary.private_address,
            "primary_port": replication.port,
        }
        if replica.name in reseed:
            params["reseed"] = True
        plan.append(
            Step(
                f"replica-{replica.name}",
                "replica",
                replica,
                params,
                ("primary",),
                volume.get(replica.name, ()),
            )
        )
    plan.append(slots_step(replication, primary, replicas))
    if backups:
        # After every replication step: the primary's restart (archive_mode) must not cut a
        # replica's base backup short.
        replication_steps = tuple(s.name for s in plan if s.script in ("primary", "replica"))
        for host in (primary, *replicas):
            params = backup_params(replication, backups, host.role)
            plan.append(Step(f"backup-{host.name}", "backup", host, params, replication_steps))
    setup = tuple(s.name for s in plan)
    report = {"version": replication.postgres_version, "port": replication.port}
    if backups:
        report["stanza"] = backups.stanza
    plan += [Step(f"status-{h.name}", "status", h, report, setup) for h in (primary, *replicas)]
    if replication.pool:
        plan += [
            Step(
                f"pooler-{step.host.name}",
                "pooler",
                step.host,
                pooler_params(replication, step.host),
                (step.name,),
            )
            for step in plan
            if step.script in ("primary", "replica")
        ]
    return plan


def slots_step(replication: ReplicationSettings, primary: Host, replicas: list[Host]) -> Step:
    """Drops the slots of replicas no longer configured (host/slots.py), beside the replicas'
    steps, not before them: each replica step makes its own slot."""
    params = {
        "version": replication.postgres_version,
        "port": replication.port,
        "replicas": [r.name for r in replicas],
    }
    return Step("slots", "slots", primary, params, requires=("primary",))


def wal_senders(replicas: int) -> int:
    """max_wal_senders and max_replication_slots on every server: headroom for base backups and a
    re-seed, and the same value from one to six replicas (adding one changes no other step)."""
    return max(10, replicas + 4)


def volume_step(host: Host) -> Step:
    """PostgreSQL's directories on the host's data device (host/volume.py)."""
    params = {"device": host.data_device}
    if host.data_size is not None:
        params["size_gib"] = host.data_size
    return Step(f"volume-{host.name}", "volume", host, params)


def pooler_params(replication: ReplicationSettings, host: Host) -> dict:
    """A pooler step's parameters (the password is a secret one)."""
    pool = replication.pool
    return {
        "version": replication.postgres_version,
        "port": replication.port,
        "private_address": host.private_address,
        "db_name": replication.db_name,
        "db_user": replication.db_user,
        "pool_port": pool.port,
        "pool_size": pool.size,
        "max_clients": pool.max_clients,
    }


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
        "certificate_days": replication.certificate_days,
        "certificate_renew_days": replication.certificate_renew_days,
        "max_connections": replication.max_connections,
        # PgBouncer on each host logs in to its own PostgreSQL at the private address.
        "pooled": replication.pool is not None,
    }


def repository_params(replication: ReplicationSettings, backups: BackupSettings) -> dict:
    """What every pgBackRest script needs: the cluster, the stanza, the repository, retention."""
    return {
        "version": replication.postgres_version,
        "port": replication.port,
        "stanza": backups.stanza,
        "repository": backups.repository(),
        "retention_full": backups.retention_full,
        "retention_diff": backups.retention_diff,
    }


def backup_params(
    replication: ReplicationSettings, backups: BackupSettings, role: str, action: str = "configure"
) -> dict:
    return {
        **repository_params(replication, backups),
        "action": action,
        "role": role,
        "schedule_full": backups.schedule_full,
        "schedule_diff": backups.schedule_diff,
        "archive_timeout": backups.archive_timeout,
    }


def backup_now_step(
    replication: ReplicationSettings, backups: BackupSettings, host: Host, kind: str
) -> Step:
    """One backup on the primary, now (`mastodon-data backup`)."""
    params = {**backup_params(replication, backups, host.role, "backup"), "type": kind}
    return Step(f"backup-now-{host.name}", "backup", host, params)


def backup_check_step(
    replication: ReplicationSettings, backups: BackupSettings, host: Host
) -> Step:
    """`pgbackrest check` and `info` on the primary (`mastodon-data backups check`)."""
    return Step(f"backup-check-{host.name}", "backup", host,
                backup_params(replication, backups, host.role, "check"))  # fmt: skip


def restore_step(
    replication: ReplicationSettings,
    backups: BackupSettings,
    host: Host,
    target_time: str = "",
    overwrite: bool = False,
) -> Step:
    """A restore of the repository onto `host` (`mastodon-data restore`)."""
    params = {
        **repository_params(replication, backups),
        "db_name": replication.db_name,
        "target_time": target_time,
        "overwrite": overwrite,
    }
    return Step(f"restore-{host.name}", "restore", host, params)


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
