"""Volumes on this machine: a sparse file each, behind a loop device, linked into the host it
is attached to at /dev/disk/by-id/scsi-0DO_Volume_<name> (lab/standin/backend.py,
`DiskBackend`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lab.host_files import DEVICE_LINKS, private_source
from lab.standin.lab_machines import LabMachines
from lab.system import netns_list, pid_alive, run


class LabDisks(LabMachines):
    """Volumes, attached to lab hosts."""

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

    def volume_link(self, host: dict, volume: dict) -> Path:
        """Where the host sees the volume: /dev/disk/by-id/scsi-0DO_Volume_<name>."""
        links = private_source(self.host_dir(host), DEVICE_LINKS)
        return links / f"scsi-0DO_Volume_{volume['name']}"

    def attach_volume(self, volume: dict, host: dict) -> None:
        link = self.volume_link(host, volume)
        link.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(self.loop_of(volume))

    def detach_volume(self, volume: dict, host: dict) -> None:
        """The disk pulled from the server: its link goes, and on a running host the
        processes with files on it die and its mounts go (as a real kernel fails them)."""
        self.volume_link(host, volume).unlink(missing_ok=True)
        loop = self.loop_of(volume)
        if loop and self.netns(host) in netns_list():
            self.unplug(host, os.stat(loop).st_rdev)

    def unplug(self, host: dict, rdev: int) -> None:
        for pid in self.pids(host):
            if uses_device(pid, rdev):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        sshd = pid_alive(self.host_dir(host) / "sshd.pid")
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

    def recover_volume(self, volume: dict, hosts: list[dict]) -> None:
        """After a restart of the stand-in (or of this machine): the loop device, and the link
        on the host it is attached to."""
        self.create_volume(volume)
        for host in hosts:
            self.attach_volume(volume, host)

    def volume_loops(self) -> list[str]:
        """Loop devices backed by this lab's volume files."""
        marker = f"{self.state_dir / 'volumes'}/"
        listing = run(["losetup", "-n", "-O", "NAME,BACK-FILE", "-l"], check=False).stdout
        return [line.split()[0] for line in listing.splitlines() if marker in line]


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
