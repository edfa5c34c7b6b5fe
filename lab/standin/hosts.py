"""The stand-in's backend on this machine (lab/standin/backend.py): its networks
(lab_network.py), its hosts (lab_machines.py), their volumes (lab_disks.py), managed databases'
nodes (lab_databases.py, lab_valkey.py), their read-only nodes (lab_read_only.py), pools
(lab_pools.py) and standby takeover (lab_takeover.py), load balancers (lab_load_balancers.py),
Spaces' address (lab_spaces.py), the operator's key and ssh, and the removal of everything of
a lab's prefix.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab.host_files import ensure_key
from lab.standin.lab_load_balancers import LabLoadBalancers
from lab.standin.lab_network import BLACKHOLE_METRIC
from lab.standin.lab_read_only import LabReadOnlyNodes
from lab.standin.lab_spaces import LabSpaces
from lab.standin.lab_takeover import LabTakeover
from lab.standin.lab_valkey import LabValkey
from lab.system import netns_list, remove_netns, run


class LabHosts(LabTakeover, LabReadOnlyNodes, LabValkey, LabLoadBalancers, LabSpaces):
    """Networks, hosts, volumes, database nodes and Spaces of the stand-in's account, and the
    operator's view of them."""

    @property
    def operator_key(self) -> Path:
        return self.state_dir / "id_ed25519"

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
        ensure_key(self.operator_key, f"{self.prefix}-operator")
        return Path(f"{self.operator_key}.pub").read_text().strip()

    # -- teardown -----------------------------------------------------------------------------
    def down(self) -> None:
        """Everything of this prefix: namespaces (their processes first), links, files."""
        for ns in sorted(netns_list()):
            if ns.startswith(f"{self.prefix}-") and ns != self.switch:
                remove_netns(ns)
        if self.switch in netns_list():
            remove_netns(self.switch)
        for loop in self.volume_loops():  # the hosts' mounts of them went with the hosts
            run(["losetup", "-d", loop], check=False)
        for name in self.operator_links():
            run(["ip", "link", "del", name], check=False)
        for network in self.owned():
            run(["ip", "route", "del", "blackhole", str(network), "metric", BLACKHOLE_METRIC],
                check=False)  # fmt: skip
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        found = [f"netns {ns}" for ns in netns_list() if ns.startswith(f"{self.prefix}-")]
        found += [f"link {name}" for name in self.operator_links()]
        found += [f"route blackhole {network}" for network in self.blackholes()]
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
