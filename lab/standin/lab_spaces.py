"""Spaces and the CDN on this machine (lab/standin/backend.py, `SpacesBackend`): the stand-in
serves them over TLS on the operator's address in the lab's public network (`10.<b>.<c>.1`:
this machine's own end of the lab's switch, so droplets reach it as they reach DigitalOcean's
Spaces over the internet, and labs never share it), with a certificate of the lab's public CA
(lab_pki.py) for every region's names."""

from __future__ import annotations

from pathlib import Path

from lab.standin.lab_pki import LabPki
from lab.standin.resources.buckets import CDN_DOMAIN, REGIONS, region_host


class LabSpaces(LabPki):
    def spaces_address(self) -> str:
        return self.operator_address

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
