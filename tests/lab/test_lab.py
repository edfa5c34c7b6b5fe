"""The lab itself: hosts with their own address, hostname, sshd and PostgreSQL directories;
idempotent creation; removal that leaves nothing, also after a crash midway."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from labkit import lab_unavailable, process_marks

from lab import namespaces as lab_hosts

pytestmark = pytest.mark.lab
INFRA_LAB = lab_hosts.Lab(
    prefix="mlabi", subnet="10.253.0.0/24", state_dir=Path("/var/lib/mastodon-lab-infra")
)


def ssh(lab: lab_hosts.Lab, index: int, command: str) -> str:
    argv = lab.ssh_command(lab.host(index).address, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def namespace_pids(lab: lab_hosts.Lab) -> set[int]:
    pids = set()
    for ns in lab_hosts.netns_list():
        if ns.startswith(f"{lab.prefix}-"):
            out = lab_hosts.run(["ip", "netns", "pids", ns], check=False).stdout
            pids |= {int(p) for p in out.split()}
    return pids


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie is dead, only not yet reaped by its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture
def infra_lab():
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    lab_hosts.down(INFRA_LAB)
    yield INFRA_LAB
    lab_hosts.down(INFRA_LAB)
    assert lab_hosts.leftovers(INFRA_LAB) == []


def test_hosts_are_isolated_and_answer_on_their_own_address(infra_lab):
    inventory = lab_hosts.up(infra_lab, 3)
    assert [h["address"] for h in inventory["hosts"]] == [
        "10.253.0.11",
        "10.253.0.12",
        "10.253.0.13",
    ]
    for i in (1, 2, 3):
        out = ssh(infra_lab, i, "hostname; ip -o -4 addr show dev eth0")
        assert out.splitlines()[0] == f"mlabi-h{i}"
        assert f"10.253.0.{10 + i}/24" in out
    ssh(infra_lab, 1, "echo only-here > /var/lib/postgresql/isolation-probe")
    for path in (
        "/var/lib/postgresql",
        "/etc/postgresql",
        "/var/run/postgresql",
        "/var/log/postgresql",
    ):
        ssh(infra_lab, 1, f"touch {path}/probe-h1")
        listing = ssh(infra_lab, 2, f"ls -A {path}")
        assert "probe-h1" not in listing, f"{path} is shared between hosts"
    assert not Path("/var/lib/postgresql/isolation-probe").exists()  # nor on the machine


def sshd_pids(lab: lab_hosts.Lab, count: int) -> list[int]:
    return [int((lab.host(i).state_dir / "sshd.pid").read_text()) for i in range(1, count + 1)]


def test_creation_is_idempotent(infra_lab):
    first = lab_hosts.up(infra_lab, 2)
    daemons = sshd_pids(infra_lab, 2)
    second = lab_hosts.up(infra_lab, 2)
    assert first == second
    # The same sshd daemons: nothing restarted (short-lived per-connection children may come
    # and go, so only the daemons are compared).
    assert sshd_pids(infra_lab, 2) == daemons
    assert all(running(pid) for pid in daemons)


POOLER_INI = """[databases]
* = host=127.0.0.1 port=5432
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = trust
auth_file = /etc/pgbouncer/userlist.txt
pidfile = /var/run/postgresql/pgbouncer.pid
logfile = /var/log/postgresql/pgbouncer.log
"""


def test_a_host_whose_processes_are_gone_boots_its_server_again(infra_lab):
    """The machine restarted: `up` starts sshd and, as systemd on a droplet, the clusters set to
    start automatically (a manual one stays down) and PgBouncer where it is configured."""
    lab_hosts.up(infra_lab, 2)
    ssh(infra_lab, 1, "pg_createcluster 15 main --start >/dev/null")
    ssh(infra_lab, 1, f"printf '%s' '{POOLER_INI}' > /etc/pgbouncer/pgbouncer.ini && "
        "touch /etc/pgbouncer/userlist.txt")  # fmt: skip
    ssh(infra_lab, 2, "pg_createcluster 15 main --start >/dev/null && "
        "echo manual > /etc/postgresql/15/main/start.conf")  # fmt: skip
    for pid in namespace_pids(infra_lab):
        with contextlib.suppress(ProcessLookupError):  # a short-lived one may be gone already
            os.kill(pid, 9)  # a power cut: nothing shuts down cleanly
    lab_hosts.up(infra_lab, 2)
    assert ssh(infra_lab, 1, "pg_lsclusters -h").split()[3] == "online"
    assert ssh(infra_lab, 2, "pg_lsclusters -h").split()[3] == "down"
    assert "127.0.0.1:6432" in ssh(infra_lab, 1, "ss -ltn")
    assert "6432" not in ssh(infra_lab, 2, "ss -ltn")  # no PgBouncer configured there


def test_removal_leaves_nothing_and_stops_every_process(infra_lab):
    lab_hosts.up(infra_lab, 2)
    ssh(infra_lab, 1, "pg_createcluster 15 main --start >/dev/null")  # a server to stop
    marks = process_marks(namespace_pids(infra_lab))
    assert len(marks) >= 2
    lab_hosts.down(infra_lab)
    assert lab_hosts.leftovers(infra_lab) == []
    assert process_marks([pid for pid, _ in marks]) & marks == set()


def test_removal_after_a_crash_midway(infra_lab):
    # What a crash during `up` can leave: a namespace, a half-made veth, the state directory.
    lab_hosts.run(["ip", "netns", "add", "mlabi-h7"])
    lab_hosts.run(["ip", "link", "add", "mlabi-v7", "type", "veth", "peer", "name", "mlabi-p7"])
    infra_lab.state_dir.mkdir(parents=True, exist_ok=True)
    assert len(lab_hosts.leftovers(infra_lab)) >= 2
    lab_hosts.down(infra_lab)
    assert lab_hosts.leftovers(infra_lab) == []
    links = lab_hosts.run(["ip", "-o", "link", "show"]).stdout
    assert "mlabi-" not in links
    assert os.path.exists("/proc")  # sanity: the machine is still here
