"""Droplets as lab hosts: what the stand-in's account is on this machine.

A switch namespace `<prefix>-sw` holds a bridge for the public network (`pub`) and one per VPC
(`vpc<n>`). The operator (this machine's root namespace) sits on both kinds: the first address
of the public network (what `adminCidrs` names) and the first address of each VPC (standing in
for a Mastodon app server in the VPC, so the stack's private endpoints and the replication check
work from here). A droplet is a network namespace `<prefix>-d<n>` with two interfaces, like a
real droplet: eth0 on the public network, eth1 in its VPC; no default route, so nothing it sends
leaves the lab. Its processes run in a private mount namespace where /etc/postgresql,
/var/lib/postgresql, /var/run/postgresql and /var/log/postgresql are its own directories (its
"disk", which survives power cycles and resizes) and its hostname is the droplet's name; its
sshd listens on every address and authorises the keys named in `ssh_keys`.

Power is modelled: off = every process killed (a pulled plug; PostgreSQL recovers from its WAL at
the next start) and the links down; on = a boot: the run directory emptied, every cluster whose
start.conf says `auto` started (as systemd's postgresql@ units do), then sshd. A graceful
shutdown stops the clusters first. Deleting the droplet removes the namespace and its files.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from lab.standin._lab import (
    DEVICE_LINKS,
    LabError,
    link_exists,
    make_private,
    netns_list,
    pid_alive,
    private_source,
    run,
)

BLACKHOLE_METRIC = "4242"  # behind a link's own route (metric 0), which wins while it exists
BOOT_TIMEOUT = 180  # seconds a boot (clusters started, sshd up) may take
# Run in the droplet's mount namespace at boot: the clusters (and PgBouncer) systemd would start.
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
"""


class LabHosts:
    """The stand-in's backend (lab/standin/backend.py) on this machine."""

    def __init__(self, prefix: str, public_network: str, state_dir: Path, vpc_pool=(), log=print):
        self.prefix, self.state_dir, self.log = prefix, Path(state_dir), log
        self.public = ipaddress.ip_network(public_network)
        self.vpc_pool = tuple(ipaddress.ip_network(n) for n in vpc_pool)
        self.switch = f"{prefix}-sw"
        self.known: dict[str, str] = {}  # droplet id -> known_hosts lines
        self.known_lock = threading.Lock()
        self.network_lock = threading.RLock()

    # -- names --------------------------------------------------------------------------------
    def netns(self, droplet: dict) -> str:
        return f"{self.prefix}-d{droplet['host']}"

    def host_dir(self, droplet: dict) -> Path:
        return self.state_dir / "droplets" / str(droplet["id"])

    @property
    def operator_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def operator_address(self) -> str:
        return str(self.public[1])

    # -- networks -----------------------------------------------------------------------------
    def ensure_switch(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.switch not in netns_list():
            run(["ip", "netns", "add", self.switch])
        sw = ["ip", "-n", self.switch]
        self.no_ipv6(self.switch)
        run(sw + ["link", "set", "lo", "up"])
        self._operator_port("pub", f"{self.prefix}0", f"{self.prefix}-op", self.public)
        for network in self.owned():
            if not run(["ip", "route", "show", "type", "blackhole", str(network)]).stdout.strip():
                run(["ip", "route", "add", "blackhole", str(network), "metric", BLACKHOLE_METRIC])

    def owned(self) -> list:
        """The ranges this lab owns. Each has a blackhole route behind its link's own route, so
        a packet for one of them never leaves this machine, also when its network is gone (a
        VPC deleted) or not made yet."""
        return [self.public, *self.vpc_pool]

    @staticmethod
    def no_ipv6(ns: str) -> None:
        """No IPv6 in the lab's namespaces (the stand-in's droplets have none)."""
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
             "net.ipv6.conf.default.disable_ipv6=1"])  # fmt: skip

    def _operator_port(self, bridge: str, root_link: str, sw_link: str, network) -> None:
        sw = ["ip", "-n", self.switch]
        if not link_exists(bridge, self.switch):
            run(sw + ["link", "add", bridge, "type", "bridge"])
        run(sw + ["link", "set", bridge, "up"])
        if not link_exists(root_link):
            if link_exists(sw_link, self.switch):
                run(sw + ["link", "del", sw_link])
            run(["ip", "link", "add", root_link, "type", "veth", "peer", "name", sw_link,
                 "netns", self.switch])  # fmt: skip
        run(sw + ["link", "set", sw_link, "master", bridge, "up"])
        address = f"{network[1]}/{network.prefixlen}"
        if address not in run(["ip", "-o", "addr", "show", "dev", root_link]).stdout:
            run(["ip", "addr", "add", address, "dev", root_link])
        run(["ip", "link", "set", root_link, "up"])

    def ensure_network(self, vpc: dict) -> None:
        with self.network_lock:  # droplets are made in parallel; each makes sure of its network
            self._ensure_network(vpc)

    def _ensure_network(self, vpc: dict) -> None:
        self.ensure_switch()
        n = vpc["index"]
        network = ipaddress.ip_network(vpc["ip_range"])
        self._operator_port(f"vpc{n}", f"{self.prefix}v{n}", f"{self.prefix}-ov{n}", network)

    def remove_network(self, vpc: dict) -> None:
        n = vpc["index"]
        if link_exists(f"{self.prefix}v{n}"):
            run(["ip", "link", "del", f"{self.prefix}v{n}"])
        if link_exists(f"vpc{n}", self.switch):
            run(["ip", "-n", self.switch, "link", "del", f"vpc{n}"])

    # -- hosts --------------------------------------------------------------------------------
    def ns_run(self, droplet: dict, *argv: str, timeout: float = 30, check=True, input=None):
        return run(["ip", "netns", "exec", self.netns(droplet), *argv], check=check,
                   timeout=timeout, input=input)  # fmt: skip

    def create_host(self, droplet: dict, vpc: dict, public_keys: list[str]) -> None:
        self.ensure_network(vpc)
        self.write_files(droplet, public_keys)
        self.plug(droplet, vpc)
        self.boot(droplet)
        self.remember_host_key(droplet)

    def write_files(self, droplet: dict, public_keys: list[str]) -> None:
        home = self.host_dir(droplet)
        make_private(home)
        host_key = home / "ssh_host_ed25519_key"
        if not host_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", droplet["name"],
                 "-f", str(host_key)])  # fmt: skip
        authorized = home / "authorized_keys"
        authorized.write_text("".join(f"{k.strip()}\n" for k in public_keys))
        os.chmod(authorized, 0o600)
        (home / "sshd_config").write_text(
            "\n".join(
                [
                    "ListenAddress 0.0.0.0",
                    "Port 22",
                    f"HostKey {host_key}",
                    f"PidFile {home / 'sshd.pid'}",
                    # The keys the droplet was made with, then the login user's own file.
                    f"AuthorizedKeysFile {authorized} .ssh/authorized_keys",
                    "PermitRootLogin prohibit-password",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "UseDNS no",
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 50:30:100",
                    "MaxSessions 50",
                    "",
                ]
            )
        )

    def plug(self, droplet: dict, vpc: dict) -> None:
        """The namespace and its two interfaces (idempotent)."""
        ns, n = self.netns(droplet), droplet["host"]
        if ns not in netns_list():
            run(["ip", "netns", "add", ns])
        self.no_ipv6(ns)
        network = ipaddress.ip_network(vpc["ip_range"])
        for port, inner, bridge, address, prefixlen in (
            (f"{self.prefix}-p{n}", "eth0", "pub", droplet["public"], self.public.prefixlen),
            (f"{self.prefix}-q{n}", "eth1", f"vpc{vpc['index']}", droplet["private"],
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
        self.links(droplet, "up")

    def links(self, droplet: dict, state: str) -> None:
        ns = self.netns(droplet)
        for name in ("lo", "eth0", "eth1"):
            run(["ip", "-n", ns, "link", "set", name, state if name != "lo" else "up"])

    def boot(self, droplet: dict) -> None:
        """Power on: a fresh mount namespace, its fstab mounted (the data volume, `nofail`),
        the clusters started, then sshd."""
        home, ns = self.host_dir(droplet), self.netns(droplet)
        # root's home of its own (over /root): what a step writes there, such as the admins'
        # keys in ~/.ssh/authorized_keys, stays on this droplet.
        (home / "root-home").mkdir(mode=0o700, exist_ok=True)
        mounts = make_private(home) + f" && mount --bind {home / 'root-home'} /root"
        starter = home / "start_clusters.py"
        starter.write_text(START_CLUSTERS)
        script = (
            f"hostname {droplet['name']} && {mounts} && "
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
            listening = self.ns_run(droplet, "ss", "-Hltn", "sport = :22", check=False).stdout
            if listening.strip() and pid_alive(home / "sshd.pid"):
                return
            time.sleep(0.1)
        raise LabError(f"droplet {droplet['id']}: sshd did not start (see {home / 'sshd.log'})")

    def pids(self, droplet: dict) -> list[int]:
        out = run(["ip", "netns", "pids", self.netns(droplet)], check=False).stdout
        return [int(p) for p in out.split()]

    def kill_all(self, droplet: dict, sig: int, grace: float) -> None:
        deadline = time.monotonic() + grace
        while True:
            pids = self.pids(droplet)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    raise LabError(f"droplet {droplet['id']}: processes {pids} do not end")
                return
            time.sleep(0.1)

    def power_off(self, droplet: dict) -> None:
        """A pulled plug."""
        self.kill_all(droplet, signal.SIGKILL, 10)
        self.links(droplet, "down")

    def shutdown(self, droplet: dict) -> None:
        """An orderly shutdown: the clusters stopped (fast), then everything else."""
        sshd = pid_alive(self.host_dir(droplet) / "sshd.pid")
        if sshd:
            run(["nsenter", "-t", str(sshd), "-m", "-u", "-n", "--", "sh", "-c",
                 "pg_lsclusters -h | while read v n p s rest; do "
                 "[ \"$s\" = online ] && pg_ctlcluster $v $n stop -m fast; done; true"],
                check=False, timeout=90)  # fmt: skip
        self.kill_all(droplet, signal.SIGTERM, 5)
        self.kill_all(droplet, signal.SIGKILL, 10)
        self.links(droplet, "down")

    def power_on(self, droplet: dict) -> None:
        self.links(droplet, "up")
        self.boot(droplet)

    def destroy_host(self, droplet: dict) -> None:
        ns = self.netns(droplet)
        if ns in netns_list():
            self.kill_all(droplet, signal.SIGKILL, 10)
            run(["ip", "netns", "del", ns])
        for port in (f"{self.prefix}-p{droplet['host']}", f"{self.prefix}-q{droplet['host']}"):
            if link_exists(port, self.switch):
                run(["ip", "-n", self.switch, "link", "del", port], check=False)
        shutil.rmtree(self.host_dir(droplet), ignore_errors=True)
        self.known.pop(str(droplet["id"]), None)
        self.write_known_hosts()

    def apply_firewall(self, droplet: dict, script: str) -> None:
        if self.netns(droplet) in netns_list():
            self.ns_run(droplet, "nft", "-f", "-", input=script)

    def recover(self, droplet: dict, vpc: dict, public_keys: list[str]) -> None:
        """After a restart of the stand-in: the host as the API shows it."""
        self.ensure_network(vpc)
        self.write_files(droplet, public_keys)
        self.plug(droplet, vpc)
        running = pid_alive(self.host_dir(droplet) / "sshd.pid")
        if droplet["status"] == "off":
            self.power_off(droplet)
        elif not running:
            self.boot(droplet)
        self.remember_host_key(droplet)

    def remember_host_key(self, droplet: dict) -> None:
        key = (self.host_dir(droplet) / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        self.known[str(droplet["id"])] = "".join(
            f"{address} {key[0]} {key[1]}\n" for address in (droplet["public"], droplet["private"])
        )
        self.write_known_hosts()

    def write_known_hosts(self) -> None:
        with self.known_lock:  # droplets are made in parallel
            text = "".join(self.known[k] for k in sorted(self.known))
            tmp = self.known_hosts.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.known_hosts)

    # -- volumes: a sparse file each, behind a loop device --------------------------------------
    def volume_file(self, volume: dict) -> Path:
        return self.state_dir / "volumes" / f"{volume['id']}.img"

    def loop_of(self, volume: dict) -> str | None:
        """The loop device backed by the volume's file (None when there is none)."""
        found = run(["losetup", "-n", "-O", "NAME", "-j", str(self.volume_file(volume))],
                    check=False).stdout.split()  # fmt: skip
        return found[0] if found else None

    def create_volume(self, volume: dict) -> None:
        """A blank disk of the volume's size (sparse: it takes no space until written)."""
        path = self.volume_file(volume)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
        if path.stat().st_size < volume["size_gigabytes"] << 30:
            os.truncate(path, volume["size_gigabytes"] << 30)
        if not self.loop_of(volume):
            run(["losetup", "-f", str(path)])

    def resize_volume(self, volume: dict) -> None:
        """Grown (the API refuses to shrink): the file first, then the device's capacity."""
        os.truncate(self.volume_file(volume), volume["size_gigabytes"] << 30)
        run(["losetup", "-c", self.loop_of(volume)])

    def volume_link(self, droplet: dict, volume: dict) -> Path:
        """Where the droplet sees the volume: /dev/disk/by-id/scsi-0DO_Volume_<name>."""
        links = private_source(self.host_dir(droplet), DEVICE_LINKS)
        return links / f"scsi-0DO_Volume_{volume['name']}"

    def attach_volume(self, volume: dict, droplet: dict) -> None:
        link = self.volume_link(droplet, volume)
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(self.loop_of(volume))

    def detach_volume(self, volume: dict, droplet: dict) -> None:
        """The disk pulled from the server: its link goes, and on a running droplet the
        processes with files on it die and its mounts go (as a real kernel fails them)."""
        self.volume_link(droplet, volume).unlink(missing_ok=True)
        loop = self.loop_of(volume)
        if loop and self.netns(droplet) in netns_list():
            self.unplug(droplet, os.stat(loop).st_rdev)

    def unplug(self, droplet: dict, rdev: int) -> None:
        for pid in self.pids(droplet):
            if uses_device(pid, rdev):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        sshd = pid_alive(self.host_dir(droplet) / "sshd.pid")
        if not sshd:
            return
        number = f"{os.major(rdev)}:{os.minor(rdev)}"
        points = [
            line.split()[4]
            for line in Path(f"/proc/{sshd}/mountinfo").read_text().splitlines()
            if line.split()[2] == number
        ]
        for point in reversed(points):  # binds of it first, the device's own mount last
            run(["nsenter", "-t", str(sshd), "-m", "--", "umount", "-l", point], check=False)

    def delete_volume(self, volume: dict) -> None:
        loop = self.loop_of(volume)
        if loop:
            run(["losetup", "-d", loop], check=False)
        self.volume_file(volume).unlink(missing_ok=True)

    def recover_volume(self, volume: dict, droplets: list[dict]) -> None:
        """After a restart of the stand-in (or of this machine): the loop device, and the link
        on the droplet it is attached to."""
        self.create_volume(volume)
        for droplet in droplets:
            self.attach_volume(volume, droplet)

    def volume_loops(self) -> list[str]:
        """Loop devices backed by this lab's volume files."""
        marker = f"{self.state_dir / 'volumes'}/"
        listing = run(["losetup", "-n", "-O", "NAME,BACK-FILE", "-l"], check=False).stdout
        return [line.split()[0] for line in listing.splitlines() if marker in line]

    # -- the operator's view ------------------------------------------------------------------
    def ssh_command(self, address: str, *remote: str) -> list[str]:
        return [
            "ssh", "-i", str(self.operator_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", f"root@{address}", *remote,
        ]  # fmt: skip

    def ensure_operator_key(self) -> str:
        """The operator's key pair (made once); returns the public key."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.operator_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}-operator",
                 "-f", str(self.operator_key)])  # fmt: skip
        return Path(f"{self.operator_key}.pub").read_text().strip()

    # -- hosts that are not droplets (tests: someone outside the allowed sources) -------------
    def add_probe(self, index: int, bridge: str, address: str, prefixlen: int) -> str:
        """A bare namespace `<prefix>-x<index>` at `address` on `bridge` ("pub" or "vpc<n>")."""
        ns, port = f"{self.prefix}-x{index}", f"{self.prefix}-x{index}"
        if ns not in netns_list():
            run(["ip", "netns", "add", ns])
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])
        if not link_exists(port, self.switch):
            run(["ip", "link", "add", port, "netns", self.switch, "type", "veth", "peer", "name",
                 "eth0", "netns", ns])  # fmt: skip
        run(["ip", "-n", self.switch, "link", "set", port, "master", bridge, "up"])
        if f" {address}/" not in run(["ip", "-n", ns, "-o", "addr", "show", "dev", "eth0"]).stdout:
            run(["ip", "-n", ns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    # -- teardown -----------------------------------------------------------------------------
    def down(self) -> None:
        """Everything of this prefix: namespaces (their processes first), links, files."""
        from lab.standin._lab import remove_netns

        for ns in sorted(netns_list()):
            if ns.startswith(f"{self.prefix}-") and ns != self.switch:
                remove_netns(ns)
        if self.switch in netns_list():
            remove_netns(self.switch)
        for loop in self.volume_loops():  # the droplets' mounts of them went with their hosts
            run(["losetup", "-d", loop], check=False)
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name == f"{self.prefix}0" or (
                name.startswith(f"{self.prefix}v") and name[len(self.prefix) + 1 :].isdigit()
            ):
                run(["ip", "link", "del", name], check=False)
        for network in self.owned():
            run(["ip", "route", "del", "blackhole", str(network), "metric", BLACKHOLE_METRIC],
                check=False)  # fmt: skip
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = [f"netns {ns}" for ns in netns_list() if ns.startswith(f"{self.prefix}-")]
        for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name == f"{self.prefix}0" or (
                name.startswith(f"{self.prefix}v") and name[len(self.prefix) + 1 :].isdigit()
            ):
                found.append(f"link {name}")
        for network in self.owned():
            if run(["ip", "route", "show", "type", "blackhole", str(network)]).stdout.strip():
                found.append(f"route blackhole {network}")
        if self.state_dir.exists():
            found.append(f"dir {self.state_dir}")
        found += [f"loop device {loop}" for loop in self.volume_loops()]
        marker = f"{self.state_dir}/"
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != os.getpid():
                try:
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                if marker in cmdline:
                    found.append(f"process {proc.name}: {cmdline.strip()[:120]}")
        with open("/proc/self/mountinfo") as mounts:
            found += [f"mount {line.split()[4]}" for line in mounts if marker in line]
        return found


def uses_device(pid: int, rdev: int) -> bool:
    """Whether process `pid` has a file, or its working directory, on device `rdev`."""
    proc = Path(f"/proc/{pid}")
    try:
        entries = [proc / "cwd", *(proc / "fd").iterdir()]
    except OSError:
        return False
    for entry in entries:
        try:
            if os.stat(entry).st_dev == rdev:
                return True
        except OSError:
            continue
    return False
