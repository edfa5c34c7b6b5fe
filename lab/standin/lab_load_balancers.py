"""A load balancer on this machine (lab/standin/backend.py, `LoadBalancerBackend`): a lab host
(lab_machines.py) at the load balancer's addresses running Debian's HAProxy 2.6: a TCP listener
per forwarding rule, on the VPC address (network INTERNAL) or the public one (EXTERNAL),
`balance roundrobin` (DigitalOcean's algorithm) over the targets' private addresses, each
checked as the health check says (protocol, port, path, interval, response timeout, healthy and
unhealthy thresholds); the load balancer's firewall as connection rules, PROXY protocol when
asked.

A change of rules or targets rewrites the configuration and reloads HAProxy without dropping a
connection: the new process takes the listening sockets from the old one (`-x` over the admin
socket) and the servers' health from a state file dumped just before, so a healthy target stays
in and a failing one out. A target new to the proxy starts down (its state line written here)
and joins after `healthy_threshold` passing checks, as on DigitalOcean. The host's boot starts
HAProxy when its configuration exists (lab_machines.py).
"""

from __future__ import annotations

import socket
import time

from lab.host_files import private_source
from lab.standin.lab_databases import LabDatabases
from lab.system import LabError, pid_alive

HAPROXY_DIR = "/etc/haproxy"  # the host's own (lab/host_files.py)
CONFIG = f"{HAPROXY_DIR}/standin.cfg"
STATE = f"{HAPROXY_DIR}/standin.state"
SOCKET = f"{HAPROXY_DIR}/standin.sock"
PID = f"{HAPROXY_DIR}/standin.pid"
ADMIN_TIMEOUT = 5  # seconds for an answer on the admin socket
READY_TIMEOUT = 10  # seconds for a started HAProxy to answer there
# The columns of HAProxy 2.6's server state file (version 1) after the backend's and server's
# ids and names and the address: down (op_state 0), last check failed (status 17, result 2,
# health 0), checks configured and enabled (6), ids forced (1 1).
DOWN_STATE = "0 0 1 1 0 17 2 0 6 0 1 1 - {port} - 0 {check_port} - - {check_port}"
GLOBAL = f"""\
# the stand-in's load balancer {{name}} ({{ident}}): lab/standin/lab_load_balancers.py
global
    maxconn 4096
    pidfile {PID}
    stats socket {SOCKET} mode 600 level admin expose-fd listeners
    server-state-file {STATE}

defaults
    mode tcp
    load-server-state-from-file global
    timeout connect 5s
    timeout client 1h
    timeout server 1h
"""


def firewall_lines(firewall: dict) -> list[str]:
    """The load balancer's firewall (`ip:` and `cidr:` sources) as connection rules."""
    lines = []
    for verdict in ("deny", "allow"):
        sources = [s.split(":", 1)[1] for s in firewall[verdict]]
        if sources:
            lines.append(f"    acl {verdict}_source src {' '.join(sources)}")
    if firewall["deny"]:
        lines.append("    tcp-request connection reject if deny_source")
    if firewall["allow"]:
        lines.append("    tcp-request connection reject unless allow_source")
    return lines


def check_lines(check: dict, proxy_protocol: bool) -> list[str]:
    """The health check as HAProxy's: `check` on every server with its port and counts."""
    lines = [f"    timeout check {check['response_timeout_seconds']}s"]
    if check["protocol"] in ("http", "https"):
        lines.append(f"    option httpchk GET {check['path']}")
        lines.append("    http-check expect status 200-399")
    server = (
        f"    default-server check port {check['port']} inter {check['check_interval_seconds']}s"
        f" rise {check['healthy_threshold']} fall {check['unhealthy_threshold']}"
    )
    if check["protocol"] == "https":
        server += " check-ssl verify none"
    if proxy_protocol:
        server += " send-proxy"
    return [*lines, server]


def haproxy_config(lb: dict, targets: list[dict]) -> str:
    """HAProxy's configuration of load balancer `lb` over `targets` (id, address)."""
    address = lb["private"] if lb["network"] == "INTERNAL" else lb["public"]
    parts = [GLOBAL.format(name=lb["name"], ident=lb["id"])]
    for rule in lb["forwarding_rules"]:
        port = rule["entry_port"]
        lines = [f"listen rule-{port}", f"    id {port}", f"    bind {address}:{port}",
                 "    balance roundrobin"]  # fmt: skip
        lines += firewall_lines(lb["firewall"])
        lines += check_lines(lb["health_check"], lb["enable_proxy_protocol"])
        lines += [
            f"    server droplet-{t['id']} {t['address']}:{rule['target_port']} id {t['id']}"
            for t in targets
        ]
        parts.append("\n" + "\n".join(lines) + "\n")
    return "".join(parts)


def server_states(dump: str, lb: dict, targets: list[dict]) -> str:
    """The state file for the new configuration: the running servers' states (`show servers
    state`), and a down line for every server new to it."""
    lines = dump.strip().splitlines() or ["1", "# be_id be_name srv_id srv_name ..."]
    known = {tuple(line.split()[1:4:2]) for line in lines[2:] if line.strip()}
    check_port = lb["health_check"]["port"]
    for rule in lb["forwarding_rules"]:
        backend, port = f"rule-{rule['entry_port']}", rule["target_port"]
        for target in targets:
            server = f"droplet-{target['id']}"
            if (backend, server) not in known:
                head = f"{rule['entry_port']} {backend} {target['id']} {server} {target['address']}"
                lines.append(f"{head} {DOWN_STATE.format(port=port, check_port=check_port)}")
    return "\n".join(lines) + "\n"


class LabLoadBalancers(LabDatabases):
    """HAProxy on the hosts of load balancers."""

    def admin_command(self, lb: dict, command: str) -> str:
        """`command` on the running HAProxy's admin socket ("" when none runs): reached through
        the host's mount namespace (a short path within the 108-byte limit)."""
        sshd = pid_alive(self.host_dir(lb) / "sshd.pid")
        own_dir = private_source(self.host_dir(lb), HAPROXY_DIR)
        if not sshd or not pid_alive(own_dir / "standin.pid"):
            return ""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.settimeout(ADMIN_TIMEOUT)
            admin.connect(f"/proc/{sshd}/root{SOCKET}")
            admin.sendall(f"{command}\n".encode())
            return admin.makefile().read()

    def configure_load_balancer(self, lb: dict, targets: list[dict]) -> None:
        running = self.admin_command(lb, "show servers state")
        files = {"standin.cfg": haproxy_config(lb, targets),
                 "standin.state": server_states(running, lb, targets)}  # fmt: skip
        directory = private_source(self.host_dir(lb), HAPROXY_DIR)
        for name, text in files.items():
            (directory / name).write_text(text)
        takeover = f"-sf $(cat {PID}) -x {SOCKET}" if running else ""
        self.node_run(lb, f"haproxy -c -q -f {CONFIG}\nhaproxy -D -f {CONFIG} {takeover}")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.admin_command(lb, "show info"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise LabError(f"load balancer {lb['id']}: HAProxy does not answer on {SOCKET}")
