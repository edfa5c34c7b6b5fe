"""The replication step plan: which host script runs where, with which parameters, in which order.

Pure: no Pulumi, no I/O beyond reading the host scripts' source (host/). A `Step` carries all
its `remote.Command` needs (the command line, the payload of scripts and parameters, what
triggers it), so the Pulumi program makes one command per step and nothing else
(components/replication.py); cli/host_ssh.py runs one step over ssh (the failover's promote,
tests of one script). Addresses may be Pulumi Outputs (droplets) or text.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any

from mastodon_data.config import BackupSettings, Host, ReplicationSettings
from mastodon_data.config.pooling import read_pool_name
from mastodon_data.host_params import (
    AuthorizedKeysParams,
    BackupParams,
    ClusterParams,
    ExportersParams,
    HostParams,
    MonitorParams,
    PoolerParams,
    PrimaryParams,
    PromoteParams,
    ReplicaHealthParams,
    ReplicaParams,
    RestoreParams,
    ServerParams,
    SlotsParams,
    StatusParams,
    SwitchoverParams,
    VolumeParams,
)
from mastodon_data.monitoring import targets

# The payload shipped to the hosts (stdlib only): package data, read the same way installed or not.
HOST_SCRIPTS = resources.files("mastodon_data") / "host"
# The steps that issue and renew their host's server certificate.
CERTIFICATE_SCRIPTS = ("primary", "replica")

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
KEEP_HEALTH = (
    "echo 'mastodon-data: the replica health endpoint is left running on this host; once no "
    "load balancer checks it: systemctl disable --now mastodon-data-replica-health'"
)
# What a step's delete says on a host that outlives the stack, by script (the others: nothing).
KEEP_NOTES = {
    "primary": KEEP_DATA,
    "replica": KEEP_DATA,
    "volume": KEEP_DATA,
    "pooler": KEEP_POOLER,
    "replica_health": KEEP_HEALTH,
}


@dataclass(frozen=True)
class Step:
    """One host script's run on one host, and everything its command needs: `command` (the
    remote command line), `stdin()` (the payload: scripts, parameters, secrets), `trigger()`
    (what runs it again), `keep_note` (what its delete says on a host that outlives the
    stack). It runs after the steps in `after`, and again whenever they run again; after the
    steps in `requires` only (a grown volume re-runs nothing else)."""

    name: str
    host: Host
    record: HostParams = field(hash=False)  # the script's parameters, secrets apart
    after: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    # Parameters filled when the step runs, from another step's report: (parameter, step, key).
    report_inputs: tuple[tuple[str, str, str], ...] = ()
    # Values that run the step again when they change, though its script does not read them.
    trigger_inputs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    uploads: tuple[tuple[str, str], ...] = ()  # copied to the host first: (here, there)

    @property
    def script(self) -> str:
        return self.record.SCRIPT

    @property
    def params(self) -> dict[str, Any]:
        """The non-secret parameters, as the script reads them (may hold Outputs)."""
        return self.record.values()

    @property
    def secret_params(self) -> dict[str, str]:
        """Secret parameter -> the stack secret that fills it."""
        return self.record.SECRETS

    @property
    def command(self) -> str:
        return command_line(self.host.ssh_user)

    @property
    def keep_note(self) -> str | None:
        return KEEP_NOTES.get(self.script)

    @property
    def report_sources(self) -> tuple[str, ...]:
        """The steps whose reports (stdout) fill_reports takes, in order."""
        return tuple(source for _, source, _ in self.report_inputs)

    @property
    def renewal_probe(self) -> tuple[int, int] | None:
        """(postgres_version, certificate_renew_days) of a step that owns its host's server
        certificate: the program reads the renewal count before each run (cert_renewal)."""
        if self.script not in CERTIFICATE_SCRIPTS:
            return None
        return self.record.postgres_version, self.record.certificate_renew_days

    def fill_reports(self, params: dict, stdouts: Sequence[str]) -> dict:
        """`params` with the report inputs taken from the reports of report_sources."""
        taken = {
            param: parse_report(stdout).get(key, "")
            for (param, _, key), stdout in zip(self.report_inputs, stdouts, strict=True)
        }
        return {**params, **taken}

    def stdin(self, params: dict, secret_values: Sequence[str]) -> str:
        """The payload as JSON; `secret_values` in the order of secret_params."""
        secrets = dict(zip(self.secret_params.values(), secret_values, strict=True))
        return json.dumps(payload(self, params, secrets))

    def trigger(self, params: dict, inputs: Mapping[str, Any], renewals: int = 0) -> str:
        """Changes when the step's scripts, non-secret parameters or trigger inputs change, or
        its host's server certificate is due for renewal (`renewals`: the count read on the
        host, plus one when due; see cert_renewal): it runs again then."""
        digest = hashlib.sha256()
        for name, source in script_files(self.script).items():
            digest.update(name.encode() + b"\0" + source.encode() + b"\0")
        digest.update(json.dumps({**params, **inputs}, sort_keys=True).encode())
        return digest.hexdigest() + (f"+renewal-{renewals}" if renewals else "")


def parse_report(stdout: str) -> dict:
    """The JSON summary a host script prints as its last stdout line."""
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else {}
    except ValueError:
        return {"unparsed": lines[-1][:200]}


def host_imports(source: str) -> list[str]:
    """The host modules (files beside the scripts) a script or module imports."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return [f"{name}.py" for name in names if (HOST_SCRIPTS / f"{name}.py").is_file()]


def script_files(script: str) -> dict[str, str]:
    """The files a step ships: its own script and the host modules it imports (common.py and
    the others, found in its imports), so editing another role's script does not re-run (or
    even diff) this step."""
    files: dict[str, str] = {}
    wanted = [f"{script}.py"]
    while wanted:
        name = wanted.pop()
        if name not in files:
            files[name] = (HOST_SCRIPTS / name).read_text()
            wanted += host_imports(files[name])
    return dict(sorted(files.items()))


def command_line(ssh_user: str, launcher: str = LAUNCHER) -> str:
    """The remote command: no parameter or secret in it, sudo only for a non-root user."""
    run = f"python3 -c {shlex.quote(launcher)}"
    return run if ssh_user == "root" else f"sudo -n {run}"


def payload(step: Step, params: dict, secrets: Mapping[str, str]) -> dict:
    """What goes on the step's stdin: the scripts, and the parameters with secrets filled in
    (`secrets` by the stack's names)."""
    filled = {**params, **{param: secrets[key] for param, key in step.secret_params.items()}}
    return {"files": script_files(step.script), "run": f"{step.script}.py", "params": filled}


def steps(
    replication: ReplicationSettings,
    hosts: Sequence[Host],
    *,
    reseed: frozenset[str] = frozenset(),
    backups: BackupSettings | None = None,
) -> list[Step]:
    """Each host's data device mounted first (where it has one); the primary; every replica
    after it (in parallel), and beside them the pruning of stale slots on the primary; with
    backups, a backup step per host after the replication steps; a status report per host;
    with pools, a pooler step after each host's own step; with monitoringSources, the monitor
    role on the primary (before the pooler steps) and an exporters step per host after all of
    its own; with replicas, a health endpoint step on every server after its own step
    (host/replica_health.py). Spare hosts get no step."""
    primary = next(h for h in hosts if h.role == "primary")
    replicas = [h for h in hosts if h.role == "replica"]
    servers = (primary, *replicas)
    plan = [volume_step(h) for h in servers if h.data_device is not None]
    volume = {s.host.name: (s.name,) for s in plan}
    peers = [h for h in hosts if h is not primary]
    # Every server's PgBouncer sends DB_NAME to the primary, whichever server that is.
    pool_peers = tuple(h.private_address for h in hosts) if replication.pool else ()
    shared = {"replicas": len(replicas), "pool_peers": pool_peers}
    plan.append(primary_step(replication, primary, peers, shared, volume))
    plan += [
        replica_step(replication, r, primary, shared, r.name in reseed, volume) for r in replicas
    ]
    plan.append(slots_step(replication, primary, replicas))
    monitor = ("monitor",) if replication.monitoring_sources else ()
    if monitor:
        params = MonitorParams(**cluster(replication), monitor_user=targets.MONITOR_USER)
        plan.append(Step("monitor", primary, params, requires=("primary",)))
    if backups:
        # After every replication step: the primary's restart (archive_mode) must not cut a
        # replica's base backup short.
        replication_steps = tuple(s.name for s in plan if s.script in CERTIFICATE_SCRIPTS)
        for host in servers:
            params = backup_params(replication, backups, host.role)
            plan.append(Step(f"backup-{host.name}", host, params, replication_steps))
    setup = tuple(s.name for s in plan)
    report = StatusParams(**cluster(replication), stanza=backups.stanza if backups else "")
    plan += [Step(f"status-{h.name}", h, report, setup) for h in servers]
    servers_steps = [s for s in plan if s.script in CERTIFICATE_SCRIPTS]
    if replication.pool:
        # A backup step may restart its host's PostgreSQL (archive_mode): the pooler step's
        # probe through the pools waits for it (ordered only: it re-runs nothing).
        restarts = {s.host.name: (s.name,) for s in plan if s.script == "backup"}
        plan += [
            pooler_step(replication, s, primary, monitor, restarts.get(s.host.name, ()))
            for s in servers_steps
        ]
    if replicas:  # the read endpoint's health checks; the primary answers 503
        plan += [
            Step(f"health-{s.host.name}", s.host, health_params(replication, s.host), (s.name,))
            for s in servers_steps
        ]
    if monitor:
        plan += [exporters_step(replication, s, plan, backups) for s in servers_steps]
    return plan


def exporters_step(
    replication: ReplicationSettings,
    server_step: Step,
    plan: Sequence[Step],
    backups: BackupSettings | None = None,
) -> Step:
    """The exporters of `server_step`'s host, after every step of that host and the monitor
    role (host/exporters.py); with backups, pgBackRest's state as metrics too. The upstream
    builds (monitoring/builds.py) are copied to the host first."""
    host = server_step.host
    pool = replication.pool
    jobs = targets.exporter_jobs(pool is not None)
    params = ExportersParams(
        port=replication.port,
        private_address=host.private_address,
        monitor_user=targets.MONITOR_USER,
        exporter_ports={job: targets.EXPORTER_PORTS[job] for job in jobs},
        pgbouncer_port=pool.pgbouncer_port if pool else 0,
        postgres_queries=targets.postgres_queries(),
        stanza=backups.stanza if backups else "",
        exporter_builds={b.name: b.host_params() for b in replication.exporter_builds},
    )
    own = [s.name for s in plan if s.host.name == host.name and s.script != "status"]
    uploads = tuple((b.path, b.staged) for b in replication.exporter_builds)  # checksums: params
    after = tuple(dict.fromkeys((*own, "monitor")))
    return Step(f"exporters-{host.name}", host, params, after, uploads=uploads)


def named(record: type[HostParams], *settings: Any) -> dict[str, Any]:
    """The fields of `record` that the settings records hold: a setting has one name from
    Pulumi.yaml to the host, so it is taken by that name."""
    names = [f.name for f in fields(record)]
    return {name: getattr(s, name) for s in settings for name in names if hasattr(s, name)}


def cluster(replication: ReplicationSettings) -> dict[str, int]:
    """The fields every script of a cluster has (ClusterParams)."""
    return named(ClusterParams, replication)


def primary_step(
    replication: ReplicationSettings,
    primary: Host,
    peers: Sequence[Host],
    shared: Mapping[str, Any],
    volume: Mapping[str, tuple[str, ...]],
) -> Step:
    """Every other server of the stack may replicate (spares too, so turning one into a replica
    leaves the primary's step as it is; the slot is the replica's own)."""
    params = PrimaryParams(
        **server_params(replication, primary, shared),
        replication_peers=tuple(h.private_address for h in peers),
        ca_rotation=replication.ca_rotation,
    )
    return Step("primary", primary, params, requires=volume.get(primary.name, ()))


def replica_step(
    replication: ReplicationSettings,
    replica: Host,
    primary: Host,
    shared: Mapping[str, Any],
    reseed: bool,
    volume: Mapping[str, tuple[str, ...]],
) -> Step:
    """A replica after the primary, with the CA of the primary's report (verify-full)."""
    params = ReplicaParams(
        **server_params(replication, replica, shared),
        name=replica.name,
        primary_address=primary.private_address,
        primary_port=replication.port,
        reseed=reseed,
    )
    return Step(
        f"replica-{replica.name}",
        replica,
        params,
        after=("primary",),
        requires=volume.get(replica.name, ()),
        report_inputs=(("primary_ca_cert", "primary", "ca_cert"),),
    )


def server_params(replication: ReplicationSettings, host: Host, shared: Mapping[str, Any]) -> dict:
    """The parameters the primary and the replicas share (ServerParams); `shared`: the number
    of replicas and the pool peers."""
    return {
        **named(ServerParams, replication),
        "private_address": host.private_address,
        "wal_senders": wal_senders(shared["replicas"]),
        "pool_peers": shared["pool_peers"],
        "monitor_user": monitor_user(replication),
    }


def slots_step(replication: ReplicationSettings, primary: Host, replicas: list[Host]) -> Step:
    """Drops the slots of replicas no longer configured (host/slots.py), beside the replicas'
    steps, not before them: each replica step makes its own slot."""
    params = SlotsParams(**cluster(replication), replicas=tuple(r.name for r in replicas))
    return Step("slots", primary, params, requires=("primary",))


def wal_senders(replicas: int) -> int:
    """max_wal_senders and max_replication_slots on every server: headroom for base backups and a
    re-seed, and the same value from one to six replicas (adding one changes no other step)."""
    return max(10, replicas + 4)


def volume_step(host: Host) -> Step:
    """PostgreSQL's directories on the host's data device (host/volume.py). The device's size,
    when known, runs the step again when it grows (the script reads the size on the host)."""
    known = host.data_volume_size is not None
    size = {"data_volume_size": host.data_volume_size} if known else {}
    params = VolumeParams(data_device=host.data_device)
    return Step(f"volume-{host.name}", host, params, trigger_inputs=size)


def pooler_params(replication: ReplicationSettings, host: Host, primary: Host) -> PoolerParams:
    """A pooler step's parameters (the password is a secret one): DB_NAME goes to the primary,
    the read pool to this host's own PostgreSQL."""
    return PoolerParams(
        **named(PoolerParams, replication, replication.pool),
        private_address=host.private_address,
        primary_address=primary.private_address,
        read_db_name=read_pool_name(replication.db_name),
        pool_size=replication.pool.size,
        monitor_user=monitor_user(replication),
    )


def pooler_step(
    replication: ReplicationSettings,
    server_step: Step,
    primary: Host,
    monitor: tuple[str, ...],
    requires: tuple[str, ...] = (),
) -> Step:
    """PgBouncer on `server_step`'s host, after that step, with the primary's CA (its
    connections to the primary verify it); after `requires` too, not re-run by them."""
    host = server_step.host
    return Step(
        f"pooler-{host.name}",
        host,
        pooler_params(replication, host, primary),
        (server_step.name, *monitor),
        requires,
        report_inputs=(("primary_ca_cert", "primary", "ca_cert"),),
    )


def health_params(replication: ReplicationSettings, host: Host) -> ReplicaHealthParams:
    """A health endpoint step's parameters: the cluster, where it listens, the lag bounds."""
    return ReplicaHealthParams(
        **named(ReplicaHealthParams, replication), private_address=host.private_address
    )


def monitor_user(replication: ReplicationSettings) -> str:
    """The exporters' role, "" without exporters."""
    return targets.MONITOR_USER if replication.monitoring_sources else ""


def backup_params(replication: ReplicationSettings, backups: BackupSettings, role: str,
                  action: str = "configure", kind: str = "full") -> BackupParams:  # fmt: skip
    """A backup step's parameters: the cluster, the repository, retention and schedules, and
    the server's pools (paused around a restart for archive_mode)."""
    pool, db = replication.pool, replication.db_name
    return BackupParams(
        **named(BackupParams, replication, backups), action=action, role=role, type=kind,
        databases=(db, read_pool_name(db)) if pool else (),
        pgbouncer_port=pool.pgbouncer_port if pool else 0,
    )  # fmt: skip


def backup_now_step(
    replication: ReplicationSettings, backups: BackupSettings, host: Host, kind: str
) -> Step:
    """One backup on the primary, now (`mastodon-data backup`)."""
    params = backup_params(replication, backups, host.role, "backup", kind)
    return Step(f"backup-now-{host.name}", host, params)


def backup_check_step(
    replication: ReplicationSettings, backups: BackupSettings, host: Host
) -> Step:
    """`pgbackrest check` and `info` on the primary (`mastodon-data backups check`)."""
    params = backup_params(replication, backups, host.role, "check")
    return Step(f"backup-check-{host.name}", host, params)


def restore_step(
    replication: ReplicationSettings,
    backups: BackupSettings,
    host: Host,
    target_time: str = "",
    overwrite: bool = False,
) -> Step:
    """A restore of the repository onto `host` (`mastodon-data restore`)."""
    settings = named(RestoreParams, replication, backups)
    params = RestoreParams(**settings, target_time=target_time, overwrite=overwrite)
    return Step(f"restore-{host.name}", host, params)


def promote_step(replication: ReplicationSettings, host: Host) -> Step:
    """Failover: turns a replica into the primary (`mastodon-data failover promote`)."""
    return Step(f"promote-{host.name}", host, PromoteParams(**cluster(replication)))


def switchover_step(
    replication: ReplicationSettings, host: Host, action: str, **values: Any
) -> Step:
    """One action of `mastodon-data switchover` on `host` (host/switchover.py)."""
    params = SwitchoverParams(**cluster(replication), action=action, db_name=replication.db_name,
                              pgbouncer_port=replication.pool.pgbouncer_port, **values)  # fmt: skip
    return Step(f"switchover-{action}-{host.name}", host, params)


def authorized_keys_steps(keys: Sequence[str], hosts: Sequence[Host]) -> list[Step]:
    """The admins' keys into each host's login user's authorized_keys (spares too: an admin
    may need to reach every server the stack knows)."""
    steps = []
    for host in hosts:
        params = AuthorizedKeysParams(ssh_user=host.ssh_user, authorized_keys=tuple(keys))
        steps.append(Step(f"keys-{host.name}", host, params))
    return steps
