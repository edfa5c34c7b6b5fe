"""Certificate renewal on a stable stack: a step runs only when its trigger changes, so before
every `pulumi up` (and preview) the program asks each database server, over SSH and read-only,
whether its certificate is within the renewal window, and how many times it was renewed
(host/tls.py RENEWALS_FILE). That count, plus one when a renewal is due, is part of the host
step's trigger: a due certificate re-runs the step, which renews it (and counts it, so the next
run finds the same number and nothing due: the trigger is back where it was).

The SSH key goes to ssh as a 0600 file in a private temporary directory, removed at once; ssh
gets no secret on its command line. A host that cannot be read (a droplet not up yet, a host
down) counts as never renewed, with a warning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pulumi

from mastodon_data.config import PROJECT, Host, Settings

SSH_KEY = "sshPrivateKey"  # the stack secret the steps connect with
READ_TIMEOUT = 30  # seconds for one host's answer, connection included
CONNECT_TIMEOUT = 10
RENEWALS_FILE = "mastodon-data-renewals"  # host/tls.py's, beside server.crt
# The probe carries nothing secret (an end date and a count): it takes the cheapest of the
# key exchanges every OpenSSH since 6.5 has, not the post-quantum hybrid (a third of the
# probe's time here), which protects recorded traffic that this probe does not have.
PROBE_KEX = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256"


def probe_command(version: int, renew_days: int, confdir: str | None = None) -> str:
    """Prints `<ok|due|none> <renewals>` for the cluster's server certificate (read-only;
    the certificate and the count are world-readable, so no sudo)."""
    confdir = confdir or f"/etc/postgresql/{int(version)}/main"
    seconds = int(renew_days) * 86400
    crt = shlex.quote(f"{confdir}/server.crt")
    count = shlex.quote(f"{confdir}/{RENEWALS_FILE}")
    return (
        f"n=$(cat {count} 2>/dev/null || echo 0); "
        f"if [ ! -f {crt} ]; then s=none; "
        f"elif openssl x509 -in {crt} -noout -checkend {seconds} >/dev/null; then s=ok; "
        'else s=due; fi; echo "$s $n"'
    )


def renewal_count(answer: str) -> tuple[int, bool] | None:
    """(the count the step's trigger takes, whether a renewal is due) from the probe's
    answer, or None when it is not one."""
    parts = answer.split()
    if len(parts) != 2 or parts[0] not in ("ok", "due", "none") or not parts[1].isdigit():
        return None
    due = parts[0] == "due"
    return int(parts[1]) + due, due


def ssh_argv(host: Host, address: str, workdir: Path, command: str) -> list[str]:
    """ssh to `host` with the key in `workdir`; the host key pinned when the stack has it, else
    accepted into a throw-away known_hosts (as the steps' own connections do without one)."""
    known = workdir / "known_hosts"
    if host.host_key:
        name = address if host.ssh_port == 22 else f"[{address}]:{host.ssh_port}"
        known.write_text(f"{name} {host.host_key}\n")
    checking = "yes" if host.host_key else "accept-new"
    return [
        "ssh",
        "-i",
        str(workdir / "key"),
        "-p",
        str(host.ssh_port),
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        f"StrictHostKeyChecking={checking}",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"KexAlgorithms={PROBE_KEX}",
        f"{host.ssh_user}@{address}",
        command,
    ]


def read_over_ssh(host: Host, address: str, private_key: str, command: str) -> str:
    """The probe's answer from the host, or raises OSError/subprocess errors with the reason."""
    with tempfile.TemporaryDirectory(prefix="mastodon-data-cert-") as tmp:
        workdir = Path(tmp)  # 0700
        key = workdir / "key"
        key.touch(mode=0o600)
        key.write_text(private_key if private_key.endswith("\n") else private_key + "\n")
        result = subprocess.run(
            ssh_argv(host, address, workdir, command),
            capture_output=True,
            text=True,
            timeout=READ_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    if result.returncode != 0:
        raise OSError(result.stderr.strip() or f"ssh exit code {result.returncode}")
    return result.stdout.strip()


# What reads a host (tests on Pulumi mocks put a stand-in here): (host, address, key, command).
Reader = Callable[[Host, str, str, str], str]
READER: list[Reader] = [read_over_ssh]


def ask(host: Host, address: str, private_key: str, version: int, renew_days: int):
    """The probe's answer, or the error that kept it from the host (run in a thread; nothing
    is logged here)."""
    try:
        return READER[0](host, address, private_key, probe_command(version, renew_days))
    except (OSError, subprocess.SubprocessError) as error:
        return error


def count_from(host: Host, reply: str | Exception, renew_days: int) -> int:
    """The renewal count for `host`'s step trigger (see the module's docstring), from what
    `ask` returned; what the operator should know is logged."""
    if isinstance(reply, Exception):
        reason = str(reply).splitlines()[-1] if str(reply) else type(reply).__name__
        pulumi.log.warn(f"{host.name}: server certificate not checked for renewal ({reason})")
        return 0
    found = renewal_count(reply)
    if found is None:
        pulumi.log.warn(f"{host.name}: unexpected certificate check answer {reply[:80]!r}")
        return 0
    count, due = found
    if due:
        pulumi.log.info(
            f"{host.name}: server certificate within {renew_days} days of its end: "
            "its step runs again to renew it"
        )
    return count


def check_host(host: Host, address: str, private_key: str, version: int, renew_days: int) -> int:
    return count_from(host, ask(host, address, private_key, version, renew_days), renew_days)


# Checks started before the program's components exist: (host name, address) -> its answer.
_EARLY: dict[tuple[str, str], concurrent.futures.Future] = {}
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=12, thread_name_prefix="cert-check")


def start_early(settings: Settings) -> None:
    """Hosts mode: every address is known from the configuration, so each used host is asked
    now, in threads, and the SSH round trips overlap the rest of the program's start (its
    imports take longer than a probe); the steps' triggers then take these answers."""
    if settings.mode != "hosts" or settings.replication is None:
        return
    key = pulumi.Config(PROJECT).get(SSH_KEY) or ""
    replication = settings.replication
    for host in settings.hosts:
        if host.role in ("primary", "replica"):
            args = (host, host.public_address, key, replication.postgres_version)
            job = _POOL.submit(ask, *args, replication.certificate_renew_days)
            _EARLY[(host.name, host.public_address)] = job


def renewal_count_output(
    host: Host, private_key: pulumi.Input[str], version: int, renew_days: int
) -> pulumi.Output[int]:
    """The count as an Output, once the host's address is known (during the first preview of
    new droplets it stays unknown): from the check started early, else read now in a thread
    (hosts are read in parallel)."""

    def read(args: list) -> pulumi.Output[int]:
        address, key = args
        early = _EARLY.pop((host.name, address), None)
        if early is not None:
            reply = asyncio.wrap_future(early)
        else:
            reply = asyncio.to_thread(ask, host, address, key, version, renew_days)
        return pulumi.Output.from_input(reply).apply(lambda r: count_from(host, r, renew_days))

    # The count is no secret, though read with the key: plain, so the trigger stays plain.
    return pulumi.Output.unsecret(pulumi.Output.all(host.public_address, private_key).apply(read))
