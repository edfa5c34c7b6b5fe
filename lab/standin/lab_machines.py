"""A lab host: what the stand-in makes for a droplet (and can make for any resource that is a
host: lab/standin/backend.py, `HostBackend`).

A host is a network namespace `<prefix>-d<n>` with two interfaces, like a real droplet: eth0 on
the public network, eth1 in its VPC; no default route, so nothing it sends leaves the lab. Its
processes run in a private mount namespace where /etc/postgresql, /var/lib/postgresql,
/var/run/postgresql and /var/log/postgresql are its own directories (its "disk", which survives
power cycles and resizes) and its hostname is the host's name; its sshd listens on every
address and authorises the keys it was made with.

A droplet made with `debian-13-x64` runs the Debian 13 image of lab/rootfs.py as its root (an
overlay with its own writable layer, lab/host_files.py `enter_image`); `debian-12-x64`, this
machine's own. Power is modelled: off = every process killed (a pulled plug; PostgreSQL recovers
from its WAL at the next start) and the links down; on = a boot: the run directory emptied,
every cluster whose start.conf says `auto` started (as systemd's postgresql@ units do), Valkey
and HAProxy when configured, then sshd. A graceful shutdown stops the clusters first. Destroying
the host removes the namespace and its files.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from lab import rootfs
from lab.host_files import ensure_key, enter_image, make_private, sshd_config
from lab.standin.lab_network import LabNetwork
from lab.standin.resources.catalog import LAB_IMAGES
from lab.system import LabError, link_exists, netns_list, pid_alive, run

BOOT_TIMEOUT = 180  # seconds a boot (clusters started, sshd up) may take
# Run in the host's mount namespace at boot: the clusters (and PgBouncer) systemd would start.
START_CLUSTERS = r"""
import os, subprocess, sys
from pathlib import Path
out = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
for line in out.splitlines():
    fields = line.split()
    if len(fields) < 6:
        continue
    version, name, status, data = fields[0], fields[1], fields[3], fields[5]
    conf = Path(f"/etc/postgresql/{version}/{name}/start.conf")
    words = [w for l in (conf.read_text().splitlines() if conf.exists() else [])
             for w in [l.split("#")[0].strip()] if w]
    if (words[0] if words else "auto") != "auto" or status == "online":
        continue
    pid_file = Path(data) / "postmaster.pid"
    try:  # a pid left by the power cut that now belongs to another process: not a server
        pid = int(pid_file.read_text().split()[0])
        if "postgres" not in Path(f"/proc/{pid}/comm").read_text():
            pid_file.unlink()
    except (OSError, ValueError, IndexError):
        pass
    result = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True,
                            text=True, timeout=150)
    print(f"start {version}/{name}: {result.returncode} {result.stdout}{result.stderr}".strip())
# PgBouncer as its enabled unit would start (host/pooler.py wrote its configuration), with room
# for max_client_conn + default_pool_size descriptors as the unit's drop-in gives it.
ini = Path("/etc/pgbouncer/pgbouncer.ini")
text = ini.read_text() if ini.exists() else ""
if "mastodon-data" in text:
    values = dict(l.split(" = ", 1) for l in text.splitlines() if " = " in l)
    files = int(values.get("max_client_conn", 1000)) + int(values.get("default_pool_size", 20)) + 64
    result = subprocess.run(["sh", "-c", f'ulimit -n {files} && exec runuser -u postgres -- "$@"',
                             "sh", "/usr/sbin/pgbouncer", "-d", "-q", str(ini)],
                            capture_output=True, text=True, timeout=60)
    print(f"start pgbouncer: {result.returncode} {result.stderr}".strip())
# The replica health endpoint, as its unit would start it (host/replica_health.py).
health = Path("/opt/mastodon-data")
if (health / "replica-health.json").exists():
    script = ('echo $$ > /var/run/postgresql/mastodon-data-replica-health.pid && exec "$@" '
              '</dev/null >>/var/log/postgresql/mastodon-data-replica-health.log 2>&1')
    result = subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                             "--", "setsid", "-f", "sh", "-c", script, "sh", "/usr/bin/python3",
                             str(health / "health_server.py"), str(health / "replica-health.json")],
                            capture_output=True, text=True, timeout=60)
    print(f"start the replica health endpoint: {result.returncode} {result.stderr}".strip())
# The exporters the exporters step configured (host/exporters.py): each launcher, detached.
for launcher in sorted(Path("/etc/mastodon-data/exporters").glob("*.sh")):
    unit = f"mastodon-data-{launcher.stem}-exporter"
    with open(f"/var/log/postgresql/{unit}.log", "ab") as log:
        process = subprocess.Popen(["sh", str(launcher)], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=log, start_new_session=True, cwd="/")
    Path(f"/var/run/postgresql/{unit}.pid").write_text(f"{process.pid}\n")
    print(f"start {unit}: pid {process.pid}")
# A managed Valkey node's server (lab/standin/lab_valkey.py wrote its configuration).
valkey = Path("/var/lib/valkey/valkey.conf")
if valkey.exists():
    result = subprocess.run(["runuser", "-u", "valkey", "--", "valkey-server", str(valkey)],
                            capture_output=True, text=True, timeout=60)
    print(f"start valkey: {result.returncode} {result.stdout}{result.stderr}".strip())
# A load balancer's HAProxy (lab/standin/lab_load_balancers.py wrote its configuration).
haproxy = Path("/etc/haproxy/standin.cfg")
if haproxy.exists():
    result = subprocess.run(["haproxy", "-D", "-f", str(haproxy)], capture_output=True, text=True,
                            timeout=60)
    print(f"start haproxy: {result.returncode} {result.stderr}".strip())
"""


class LabMachines(LabNetwork):
    """Lab hosts on the stand-in's networks. A host's record: lab/standin/backend.py."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.known: dict[str, str] = {}  # host id -> known_hosts lines
        self.known_lock = threading.Lock()

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    def netns(self, host: dict) -> str:
        return f"{self.prefix}-d{host['host']}"

    def host_dir(self, host: dict) -> Path:
        return self.state_dir / "droplets" / str(host["id"])

    def ns_run(self, host: dict, *argv: str, timeout: float = 30, check=True, input=None):
        return run(["ip", "netns", "exec", self.netns(host), *argv], check=check,
                   timeout=timeout, input=input)  # fmt: skip

    def create_host(self, host: dict, vpc: dict, public_keys: list[str]) -> None:
        self.ensure_network(vpc)
        self.write_files(host, public_keys)
        self.plug(host, vpc)
        self.boot(host)
        self.remember_host_key(host)

    def write_files(self, host: dict, public_keys: list[str]) -> None:
        home = self.host_dir(host)
        make_private(home)
        host_key = ensure_key(home / "ssh_host_ed25519_key", host["name"])
        authorized = home / "authorized_keys"
        authorized.write_text("".join(f"{k.strip()}\n" for k in public_keys))
        os.chmod(authorized, 0o600)
        # The keys the host was made with, then the login user's own file.
        keys = f"{authorized} .ssh/authorized_keys"
        config = sshd_config("0.0.0.0", host_key, home / "sshd.pid", keys, "UseDNS no")
        (home / "sshd_config").write_text(config)

    def plug(self, host: dict, vpc: dict) -> None:
        """The namespace and its two interfaces (idempotent)."""
        ns, n = self.netns(host), host["host"]
        if ns not in netns_list():
            run(["ip", "netns", "add", ns])
        self.no_ipv6(ns)
        network = ipaddress.ip_network(vpc["ip_range"])
        for port, inner, bridge, address, prefixlen in (
            (f"{self.prefix}-p{n}", "eth0", "pub", host["public"], self.public.prefixlen),
            (f"{self.prefix}-q{n}", "eth1", f"vpc{vpc['index']}", host["private"],
             network.prefixlen),
        ):  # fmt: skip
            if not link_exists(port, self.switch):
                if link_exists(inner, ns):
                    run(["ip", "-n", ns, "link", "del", inner])
                run(["ip", "link", "add", port, "netns", self.switch, "type", "veth", "peer",
                     "name", inner, "netns", ns])  # fmt: skip
            run(["ip", "-n", self.switch, "link", "set", port, "master", bridge, "up"])
            if (
                f" {address}/"
                not in run(["ip", "-n", ns, "-o", "addr", "show", "dev", inner]).stdout
            ):
                run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", inner])
        self.links(host, "up")

    def links(self, host: dict, state: str) -> None:
        ns = self.netns(host)
        for name in ("lo", "eth0", "eth1"):
            run(["ip", "-n", ns, "link", "set", name, state if name != "lo" else "up"])

    def boot(self, host: dict) -> None:
        """Power on: a fresh mount namespace, its fstab mounted (the data volume, `nofail`),
        the clusters started, then sshd."""
        home, ns = self.host_dir(host), self.netns(host)
        # root's home of its own (over /root): what a step writes there, such as the admins'
        # keys in ~/.ssh/authorized_keys, stays on this host.
        (home / "root-home").mkdir(mode=0o700, exist_ok=True)
        mounts = make_private(home) + f" && mount --bind {home / 'root-home'} /root"
        suite = LAB_IMAGES.get(host.get("image", ""))
        if suite:  # the Debian 13 image as its root, its own layer over it
            image = rootfs.image_dir(suite)
            if not rootfs.built(image):
                raise LabError(f"host {host['id']}: {image} is not built: run `make rootfs`")
            mounts = f"{enter_image(home, image)} && {mounts}"
        starter = home / "start_clusters.py"
        starter.write_text(START_CLUSTERS)
        script = (
            f"hostname {host['name']} && {mounts} && "
            f"{{ mount -a >> {home / 'boot.log'} 2>&1 || true; }} && "
            "find /var/run/postgresql -mindepth 1 -delete && "
            f"{{ python3 {starter} >> {home / 'boot.log'} 2>&1 || true; }} && "
            f"mkdir -p /run/sshd && exec /usr/sbin/sshd -f {home / 'sshd_config'} "
            f"-E {home / 'sshd.log'}"
        )
        run(["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation",
             "private", "sh", "-c", script], timeout=BOOT_TIMEOUT)  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            listening = self.ns_run(host, "ss", "-Hltn", "sport = :22", check=False).stdout
            if listening.strip() and pid_alive(home / "sshd.pid"):
                return
            time.sleep(0.1)
        raise LabError(f"host {host['id']}: sshd did not start (see {home / 'sshd.log'})")

    def pids(self, host: dict) -> list[int]:
        out = run(["ip", "netns", "pids", self.netns(host)], check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, host: dict, sig: int, grace: float) -> None:
        deadline = time.monotonic() + grace
        while True:
            pids = self.pids(host)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    raise LabError(f"host {host['id']}: processes {pids} do not end")
                return
            time.sleep(0.1)

    def power_off(self, host: dict) -> None:
        """A pulled plug."""
        self.kill_all(host, signal.SIGKILL, 10)
        self.links(host, "down")

    def shutdown(self, host: dict) -> None:
        """An orderly shutdown: the clusters stopped (fast), then everything else."""
        sshd = pid_alive(self.host_dir(host) / "sshd.pid")
        if sshd:
            run(["nsenter", "-t", str(sshd), "-m", "-u", "-n", "--", "sh", "-c",
                 "pg_lsclusters -h | while read v n p s rest; do "
                 "[ \"$s\" = online ] && pg_ctlcluster $v $n stop -m fast; done; true"],
                check=False, timeout=90)  # fmt: skip
        self.kill_all(host, signal.SIGTERM, 5)
        self.kill_all(host, signal.SIGKILL, 10)
        self.links(host, "down")

    def power_on(self, host: dict) -> None:
        self.links(host, "up")
        self.boot(host)

    def destroy_host(self, host: dict) -> None:
        ns = self.netns(host)
        if ns in netns_list():
            self.kill_all(host, signal.SIGKILL, 10)
            run(["ip", "netns", "del", ns])
        for port in (f"{self.prefix}-p{host['host']}", f"{self.prefix}-q{host['host']}"):
            if link_exists(port, self.switch):
                run(["ip", "-n", self.switch, "link", "del", port], check=False)
        shutil.rmtree(self.host_dir(host), ignore_errors=True)
        self.known.pop(str(host["id"]), None)
        self.write_known_hosts()

    def apply_firewall(self, host: dict, script: str) -> None:
        if self.netns(host) in netns_list():
            self.ns_run(host, "nft", "-f", "-", input=script)

    def recover(self, host: dict, vpc: dict, public_keys: list[str]) -> None:
        """After a restart of the stand-in: the host as the API shows it."""
        self.ensure_network(vpc)
        self.write_files(host, public_keys)
        self.plug(host, vpc)
        running = pid_alive(self.host_dir(host) / "sshd.pid")
        if host["status"] == "off":
            self.power_off(host)
        elif not running:
            self.boot(host)
        self.remember_host_key(host)

    def remember_host_key(self, host: dict) -> None:
        key = (self.host_dir(host) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known[str(host["id"])] = "".join(
            f"{address} {key[0]} {key[1]}\n" for address in (host["public"], host["private"])
        )
        self.write_known_hosts()

    def write_known_hosts(self) -> None:
        with self.known_lock:  # droplets are made in parallel
            text = "".join(self.known[k] for k in sorted(self.known))
            tmp = self.known_hosts.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.known_hosts)
