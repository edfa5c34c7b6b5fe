#!/usr/bin/env python3
"""The lab: hosts that behave like droplets, made of network namespaces on this machine.

Each host is a network namespace on a bridge (in a "switch" namespace) with its own address,
a private mount namespace whose root is the machine's own (Debian 12) or, for the hosts
`Lab.images` names, an image (the Debian 13 root file system of lab/rootfs.py), in which
/etc/postgresql, /var/lib/postgresql, /var/run/postgresql, /var/log/postgresql (and PgBouncer's,
pgBackRest's and systemd's unit directories) are its own, and its own sshd. Everything the lab
makes carries the lab's prefix, so `down` can find and remove it even after a crash midway.

    python3 -m lab.namespaces up [--hosts N]  # idempotent; from the project directory
    python3 -m lab.namespaces down            # removes namespaces, processes, mounts, files
    python3 -m lab.namespaces status          # inventory as JSON
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab.host_files import ensure_key, enter_image, make_private, sshd_config
from lab.s3 import LabS3
from lab.system import (
    LabError,
    link_exists,
    netns_list,
    pid_alive,
    preflight,
    remove_netns,
    run,
    wait_for_port,
)

# What systemd starts when a droplet boots, for a lab host whose processes are gone (the
# machine restarted): its PostgreSQL clusters set to start automatically, and PgBouncer where
# the pooler step configured it, with the open-file limit of the drop-in that step writes
# (pgbouncerOpenFiles; the host's hard limit where there is none); and the exporters.
BOOT = """set -e
find /var/run/postgresql -mindepth 1 -delete  # a tmpfs on a droplet: empty after a reboot
pg_lsclusters -h | while read -r version name _; do
    if grep -qx auto "/etc/postgresql/$version/$name/start.conf"; then
        pg_ctlcluster "$version" "$name" start
    fi
done
ini=/etc/pgbouncer/pgbouncer.ini
dropin=/etc/systemd/system/pgbouncer.service.d/mastodon-data.conf
if [ -f "$ini" ]; then
    limit=$(sed -n 's/^LimitNOFILE=//p' "$dropin" 2>/dev/null || true)
    limit=${limit:-$(ulimit -Hn)}
    # setpriv keeps the limit (runuser's PAM session would lower the soft one), as pooler.py
    (ulimit -n "$limit" && exec setpriv --reuid=postgres --regid=postgres --init-groups -- \\
        /usr/sbin/pgbouncer -d -q "$ini")
fi
# The replica health endpoint, as its unit would start it (host/replica_health.py).
health=/opt/mastodon-data
if [ -f "$health/replica-health.json" ]; then
    setpriv --reuid=postgres --regid=postgres --init-groups -- setsid -f sh -c \
        'echo $$ > /var/run/postgresql/mastodon-data-replica-health.pid && exec "$@" \
        </dev/null >>/var/log/postgresql/mastodon-data-replica-health.log 2>&1' \
        sh /usr/bin/python3 "$health/health_server.py" "$health/replica-health.json"
fi
# The exporters the exporters step configured (host/exporters.py): each launcher, detached.
for launcher in /etc/mastodon-data/exporters/*.sh; do
    [ -f "$launcher" ] || continue
    unit="mastodon-data-$(basename "$launcher" .sh)-exporter"
    setsid sh "$launcher" >>"/var/log/postgresql/$unit.log" 2>&1 </dev/null &
    echo $! >"/var/run/postgresql/$unit.pid"
done
"""


@dataclass(frozen=True)
class LabHost:
    name: str
    address: str
    netns: str
    switch_port: str
    state_dir: Path
    image: Path | None = None  # the root file system it runs (None: the machine's own)


@dataclass(frozen=True)
class Lab:
    prefix: str = "mlab"
    subnet: str = "10.251.0.0/24"
    state_dir: Path = Path("/var/lib/mastodon-lab")
    # Host number -> the root file system it runs (lab/rootfs.py's image); others: the machine's.
    images: dict[int, Path] = field(default_factory=dict, hash=False)

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    @property
    def operator_link(self) -> str:
        return f"{self.prefix}0"

    @property
    def operator_address(self) -> str:
        return str(ipaddress.ip_network(self.subnet)[1])

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def store_dir(self) -> Path:
        """The lab's S3 store (lab/s3.py) when `make lab` runs one, its backup repository."""
        return self.state_dir / "s3"

    @property
    def private_key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory_file(self) -> Path:
        return self.state_dir / "hosts.json"

    def host(self, index: int) -> LabHost:
        """Host number `index` (1-based); addresses start at .11."""
        net = ipaddress.ip_network(self.subnet)
        if not 1 <= index <= min(net.num_addresses - 12, 200):
            raise LabError(f"lab host index {index} does not fit in {self.subnet}")
        return LabHost(
            name=f"{self.prefix}-h{index}",
            address=str(net[10 + index]),
            netns=f"{self.prefix}-h{index}",
            switch_port=f"{self.prefix}-v{index}",
            state_dir=self.state_dir / f"h{index}",
            image=self.images.get(index),
        )

    def ssh_command(self, address: str, *remote: str) -> list[str]:
        """The ssh argv that reaches a lab host as root, host key checked."""
        return [
            "ssh",
            "-i",
            str(self.private_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
            f"root@{address}",
            *remote,
        ]


def ensure_keys(lab: Lab) -> None:
    lab.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(lab.state_dir, 0o700)
    ensure_key(lab.private_key, f"{lab.prefix}-operator")
    os.chmod(lab.private_key, 0o600)


def ensure_switch(lab: Lab) -> None:
    if lab.switch_ns not in netns_list():
        run(["ip", "netns", "add", lab.switch_ns])
    sw = ["ip", "-n", lab.switch_ns]
    if not link_exists("br0", lab.switch_ns):
        run(sw + ["link", "add", "br0", "type", "bridge"])
    run(sw + ["link", "set", "br0", "up"])
    run(sw + ["link", "set", "lo", "up"])
    if not link_exists(lab.operator_link):
        run(
            [
                "ip",
                "link",
                "add",
                lab.operator_link,
                "type",
                "veth",
                "peer",
                "name",
                f"{lab.prefix}-op",
                "netns",
                lab.switch_ns,
            ]
        )
    run(sw + ["link", "set", f"{lab.prefix}-op", "master", "br0", "up"])
    addr = f"{lab.operator_address}/{lab.prefix_len}"
    if addr not in run(["ip", "-o", "addr", "show", "dev", lab.operator_link]).stdout:
        run(["ip", "addr", "add", addr, "dev", lab.operator_link])
    run(["ip", "link", "set", lab.operator_link, "up"])


def write_host_files(lab: Lab, host: LabHost) -> Path:
    """The host's private directories, its host key and its sshd_config."""
    make_private(host.state_dir)
    host_key = ensure_key(host.state_dir / "ssh_host_ed25519_key", host.name)
    authorized = host.state_dir / "authorized_keys"
    authorized.write_text(Path(f"{lab.private_key}.pub").read_text())
    os.chmod(authorized, 0o600)
    config = host.state_dir / "sshd_config"
    pid_file = host.state_dir / "sshd.pid"
    config.write_text(sshd_config(host.address, host_key, pid_file, str(authorized)))
    return config


def ensure_host(lab: Lab, index: int) -> LabHost:
    host = lab.host(index)
    config = write_host_files(lab, host)
    if host.netns not in netns_list():
        run(["ip", "netns", "add", host.netns])
    if not link_exists(host.switch_port, lab.switch_ns):
        if link_exists(host.switch_port):  # left in the root namespace by a crash midway
            run(["ip", "link", "del", host.switch_port])
        run(
            [
                "ip",
                "link",
                "add",
                host.switch_port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            ]
        )
        run(["ip", "link", "set", host.switch_port, "netns", lab.switch_ns])
    run(["ip", "-n", lab.switch_ns, "link", "set", host.switch_port, "master", "br0", "up"])
    hn = ["ip", "-n", host.netns]
    addr = f"{host.address}/{lab.prefix_len}"
    if addr not in run(hn + ["-o", "addr", "show", "dev", "eth0"]).stdout:
        run(hn + ["addr", "add", addr, "dev", "eth0"])
    run(hn + ["link", "set", "eth0", "up"])
    run(hn + ["link", "set", "lo", "up"])
    if not pid_alive(host.state_dir / "sshd.pid"):
        mounts = make_private(host.state_dir)
        if host.image:
            mounts = f"{image_root(host)} && {mounts}"
        run(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                f"hostname {host.name} && {mounts} && mkdir -p /run/sshd && "
                f"exec /usr/sbin/sshd -f {config} "
                f"-E {host.state_dir / 'sshd.log'}",
            ]
        )
    if not wait_for_port(host.address, 22, 10):
        raise LabError(
            f"sshd of {host.name} does not answer on {host.address}:22 "
            f"(see {host.state_dir / 'sshd.log'})"
        )
    return host


def image_root(host: LabHost) -> str:
    """The commands that make the host's image its root (a clear error when it is not built)."""
    if not (host.image / "usr/sbin/sshd").exists():
        raise LabError(f"{host.name}'s image {host.image} is not built: run `make rootfs`")
    return enter_image(host.state_dir, host.image)


def rebooted(host: LabHost) -> bool:
    """The host was set up before and its processes are gone (the machine restarted)."""
    return (host.state_dir / "sshd_config").exists() and not pid_alive(host.state_dir / "sshd.pid")


def boot(lab: Lab, host: LabHost) -> None:
    """Starts what a droplet's systemd would at boot (BOOT)."""
    argv = lab.ssh_command(host.address, "bash -s")
    result = subprocess.run(argv, input=BOOT, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise LabError(f"starting the services of {host.name} failed: {result.stderr.strip()}")


def write_inventory(lab: Lab, hosts: list[LabHost]) -> dict:
    known = []
    inventory = {
        "operator_address": lab.operator_address,
        "private_key_file": str(lab.private_key),
        "known_hosts_file": str(lab.known_hosts),
        "hosts": [],
    }
    for host in hosts:
        pub = (host.state_dir / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{host.address} {pub[0]} {pub[1]}")
        inventory["hosts"].append(
            {"name": host.name, "address": host.address, "host_key": f"{pub[0]} {pub[1]}"}
        )
    lab.known_hosts.write_text("\n".join(known) + "\n")
    lab.inventory_file.write_text(json.dumps(inventory, indent=2) + "\n")
    return inventory


def up(lab: Lab, count: int) -> dict:
    preflight()
    ensure_keys(lab)
    ensure_switch(lab)
    booting = [lab.host(i) for i in range(1, count + 1) if rebooted(lab.host(i))]
    hosts = [ensure_host(lab, i) for i in range(1, count + 1)]
    # Hosts beyond `count` from an earlier, larger lab are removed.
    for ns in netns_list():
        if ns.startswith(f"{lab.prefix}-h") and ns not in {h.netns for h in hosts}:
            remove_netns(ns)
    inventory = write_inventory(lab, hosts)
    for host in booting:
        boot(lab, host)
    return inventory


def down(lab: Lab) -> None:
    preflight()
    for ns in sorted(netns_list()):
        if ns.startswith(f"{lab.prefix}-"):
            remove_netns(ns)
    if link_exists(lab.operator_link):  # may go by itself meanwhile, with its switch-side peer
        run(["ip", "link", "del", lab.operator_link], check=False)
    for leftover in run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = leftover.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{lab.prefix}-v"):
            run(["ip", "link", "del", name], check=False)
    LabS3(lab.operator_address, lab.store_dir).stop()
    shutil.rmtree(lab.state_dir, ignore_errors=True)


def leftovers(lab: Lab) -> list[str]:
    """Anything of this lab still on the machine (empty after a clean `down`)."""
    found = [f"netns {ns}" for ns in netns_list() if ns.startswith(f"{lab.prefix}-")]
    if link_exists(lab.operator_link):
        found.append(f"link {lab.operator_link}")
    if lab.state_dir.exists():
        found.append(f"dir {lab.state_dir}")
    marker = str(lab.state_dir)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker + "/" in cmdline:
                found.append(f"process {proc.name}: {cmdline.strip()}")
    with open("/proc/self/mountinfo") as mounts:
        found += [f"mount {line.split()[4]}" for line in mounts if marker in line]
    return found


def host_key(host: LabHost) -> str:
    """The host's public key as `type base64`, for the stack's `hostKey` (pinned)."""
    return " ".join((host.state_dir / "ssh_host_ed25519_key.pub").read_text().split()[:2])


def stack_config(lab: Lab, replica_count: int, hosts: int, sources_for: int | None = None) -> dict:
    """A hosts-mode stack configuration (keys without the project prefix) for this lab's first
    `hosts` hosts, host keys pinned. On 5432: the operator and the first `sources_for` hosts
    (default: those in use; spare hosts are deliberately outside)."""
    sources_for = 1 + replica_count if sources_for is None else sources_for
    return {
        "postgresMode": "hosts",
        "postgresVersion": 15,  # what this machine (Debian 12) can install
        "replicaCount": replica_count,
        "postgresAllowedSources": [f"{lab.operator_address}/32"]
        + [f"{lab.host(i).address}/32" for i in range(1, 1 + sources_for)],
        "walKeepSize": "64MB",
        "maxSlotWalKeepSize": "256MB",
        "hosts": [
            {
                "name": lab.host(i).name,
                "publicAddress": lab.host(i).address,
                "privateAddress": lab.host(i).address,
                "hostKey": host_key(lab.host(i)),
            }
            for i in range(1, hosts + 1)
        ],
    }


def lab_from_env() -> Lab:
    return Lab(
        prefix=os.environ.get("LAB_PREFIX", "mlab"),
        subnet=os.environ.get("LAB_SUBNET", "10.251.0.0/24"),
        state_dir=Path(os.environ.get("LAB_DIR", "/var/lib/mastodon-lab")),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    p_up = sub.add_parser("up", help="create (or complete) the lab")
    p_up.add_argument("--hosts", type=int, default=int(os.environ.get("LAB_HOSTS", "3")))
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="print the inventory")
    args = parser.parse_args(argv)
    lab = lab_from_env()
    try:
        if args.action == "up":
            if not 1 <= args.hosts <= 20:
                raise LabError(f"--hosts {args.hosts}: choose between 1 and 20 hosts")
            print(json.dumps(up(lab, args.hosts), indent=2))
        elif args.action == "down":
            down(lab)
            rest = leftovers(lab)
            if rest:
                raise LabError("lab removal left: " + "; ".join(rest))
            print(f"lab {lab.prefix} removed")
        else:
            if not lab.inventory_file.exists():
                raise LabError("no lab here: run `make lab` first")
            print(lab.inventory_file.read_text(), end="")
    except LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
