"""What the app side of the lab trusts and resolves (lab/standin/backend.py, `DatabaseBackend`).

Two certificate authorities, made once in the stand-in's state directory:
- the account's database CA (`GET /v2/databases/{id}/ca`): PostgreSQL nodes' certificates, which
  a client verifies with that CA only, as on DigitalOcean;
- the lab's public CA, standing in for the web's public authorities (DigitalOcean's Valkey, Spaces
  and CDN certificates are publicly trusted): the app side trusts it through its system bundle.

The app side runs `app_command(argv)`: a mount namespace of its own where the stand-in's hosts
file (`<state dir>/hosts`: localhost and the lab's names) is mounted over /etc/hosts and the
system CA bundle plus the lab's public CA over /etc/ssl/certs/ca-certificates.crt, as `ip netns
exec` does with /etc/netns. This machine's own files and resolver are never touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lab.standin.lab_disks import LabDisks
from lab.system import LabError

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
LOCALHOST = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Clients that carry their own bundle (Python's botocore, requests) read the system one here.
BUNDLE_VARIABLES = ("SSL_CERT_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE")


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def make_ca(directory: Path, subject: str) -> str:
    """A CA's key and certificate in `directory` (made once); returns the certificate (PEM)."""
    cert = directory / "ca.crt"
    if not cert.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        openssl("req", "-x509", *EC, "-days", "3650", "-subj", f"/CN={subject}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", str(directory / "ca.key"), "-out", str(cert))  # fmt: skip
    return cert.read_text()


def issue(ca: Path, target: Path, names: list[str], addresses: list[str]) -> Path:
    """A server key and certificate (`target`/node.key, node.crt) for `names` and `addresses`,
    signed by the CA in `ca`; returns `target`."""
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    alt = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{a}" for a in addresses)])
    (target / "ext").write_text(f"subjectAltName={alt}\nextendedKeyUsage=serverAuth\n")
    common_name = names[0][:64]  # X.509's limit; clients check the subjectAltName
    openssl("req", "-new", *EC, "-subj", f"/CN={common_name}", "-keyout", str(target / "node.key"),
            "-out", str(target / "node.csr"))  # fmt: skip
    openssl("x509", "-req", "-in", str(target / "node.csr"), "-CA", str(ca / "ca.crt"),
            "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "3650",
            "-extfile", str(target / "ext"), "-out", str(target / "node.crt"))  # fmt: skip
    return target


class LabPki(LabDisks):
    """The lab's CAs, certificates, host names and the app side's view of them."""

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "database-ca"

    @property
    def public_ca_dir(self) -> Path:
        return self.state_dir / "public-ca"

    @property
    def hosts_file(self) -> Path:
        return self.state_dir / "hosts"

    @property
    def trust_bundle(self) -> Path:
        return self.state_dir / "ca-certificates.crt"

    def database_ca(self) -> str:
        return make_ca(self.ca_dir, "stand-in project CA")

    def public_ca(self) -> str:
        """The lab's public CA (PEM); the app side's bundle holds it from its first use."""
        pem = make_ca(self.public_ca_dir, "stand-in public CA")
        if not self.trust_bundle.exists():
            system = SYSTEM_BUNDLE.read_text() if SYSTEM_BUNDLE.exists() else ""
            self.trust_bundle.write_text(system + pem)
            os.chmod(self.trust_bundle, 0o644)
        return pem

    def database_certificate(self, target: Path, names: list[str], addresses: list[str]) -> Path:
        self.database_ca()
        return issue(self.ca_dir, target, names, addresses)

    def public_certificate(self, target: Path, names: list[str], addresses: list[str]) -> Path:
        self.public_ca()
        return issue(self.public_ca_dir, target, names, addresses)

    def publish_names(self, names: dict[str, str]) -> None:
        """Written in place: a bind mount of the file keeps seeing it."""
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        lines = "".join(f"{address} {name}\n" for name, address in sorted(names.items()))
        with open(self.hosts_file, "a+") as out:
            out.seek(0)
            out.truncate()
            out.write(LOCALHOST + lines)
        os.chmod(self.hosts_file, 0o644)

    def app_command(self, *argv: str) -> list[str]:
        """`argv` run as on an app host: the lab's host names resolve and its public CA is
        trusted."""
        if not self.hosts_file.exists():
            self.publish_names({})
        self.public_ca()
        bundle = str(SYSTEM_BUNDLE)
        mount = 'mount --bind "$0" /etc/hosts && mount --bind "$1" "$2" && shift 2 && exec "$@"'
        variables = [f"{name}={bundle}" for name in BUNDLE_VARIABLES]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount,
                str(self.hosts_file), str(self.trust_bundle), bundle,
                "env", *variables, *argv]  # fmt: skip

    def on_host_command(self, host: dict, *argv: str) -> list[str]:
        """`argv` run as an app on lab host `host` (a droplet): in its network, with the app
        side's names and trust."""
        return ["ip", "netns", "exec", self.netns(host), *self.app_command(*argv)]
