"""Spaces and the CDN on this machine (lab/standin/backend.py, `SpacesBackend`): the stand-in
serves them over TLS on a loopback address of the lab's own, `127.<b>.<c>.1` for the public
network `10.<b>.<c>.0/24` (labs never share a public network, so never an address either), with
a certificate of the lab's public CA (lab_pki.py) for every region's names."""

from __future__ import annotations

from pathlib import Path

from lab.standin.lab_pki import LabPki
from lab.standin.resources.buckets import CDN_DOMAIN, REGIONS, region_host


class LabSpaces(LabPki):
    def spaces_address(self) -> str:
        octets = self.public.network_address.packed
        return f"127.{octets[1]}.{octets[2]}.1"

    def spaces_certificate(self) -> Path:
        """The directory of its key and certificate (made once): each region's endpoint, its
        buckets' virtual hosts and its CDN endpoints (wildcards, as DigitalOcean's)."""
        target = self.state_dir / "spaces-tls"
        if not (target / "node.crt").exists():
            names = []
            for region in REGIONS:
                names += [region_host(region), f"*.{region_host(region)}",
                          f"*.{region}{CDN_DOMAIN}"]  # fmt: skip
            self.public_certificate(target, names, [self.spaces_address()])
        return target
