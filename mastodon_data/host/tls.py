"""TLS of the host scripts: the cluster's own certificate authority (made on the primary, rotated
in stages), the servers' certificates it signs (self-signed on replicas), their renewal at the
end of their life. openssl does the cryptography; stdlib only otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path

from common import Cluster, HostError, log, run, write_if_changed

CA_DIR = Path("/etc/postgresql/mastodon-data-ca")  # root only; the CA key never leaves it
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
# Beside the server certificate: how many times it was renewed at the end of its life. The
# program reads it (with the window check) before every run: the count, plus one when a renewal
# is due, is part of the step's trigger, so a renewed certificate leaves the trigger as it was.
RENEWALS_FILE = "mastodon-data-renewals"


def self_signed(
    key: Path, crt: Path, subject: str, extensions: list[str], days: int = 3650
) -> None:
    """A new EC key and a self-signed certificate for it, valid `days` (the CA: ten years)."""
    addext = [arg for extension in extensions for arg in ("-addext", extension)]
    run(
        ["openssl", "req", "-x509", *EC_KEY, "-days", str(days), "-subj", subject, *addext]
        + ["-keyout", str(key), "-out", str(crt)]
    )


CA_EXTENSIONS = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
CA_ROTATIONS = ("none", "prepare", "switch")  # the stack's caRotation


def ca_files(name: str) -> tuple[Path, Path]:
    """(certificate, key) of one of the CAs in CA_DIR: ca (signs), next, previous."""
    return CA_DIR / f"{name}.crt", CA_DIR / f"{name}.key"


def make_ca(name: str) -> None:
    """A new CA (ten years), its subject dated so two CAs of the cluster never look alike."""
    crt, key = ca_files(name)
    CA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    self_signed(key, crt, f"/CN=mastodon-data CA {stamp}", CA_EXTENSIONS)
    os.chmod(key, 0o600)
    os.chmod(crt, 0o644)


def ensure_ca() -> tuple[Path, Path, bool]:
    """This cluster's own certificate authority, made once on the primary with openssl."""
    crt, key = ca_files("ca")
    if crt.exists() and key.exists():
        return crt, key, False
    log("making the cluster's certificate authority")
    make_ca("ca")
    return crt, key, True


def rotate_ca(stage: str) -> list[str]:
    """One stage of a CA rotation (the stack's caRotation), idempotent; returns what changed.
    prepare: a next CA beside the signing one; both are trusted (trusted_cas), nothing else
    changes. switch: the next CA signs from now on and the old one, still trusted, becomes
    `previous`; the server certificate, no longer of the signing CA, is issued again. none:
    only the signing CA is left (the previous one dropped; an unused next one removed)."""
    if stage not in CA_ROTATIONS:
        raise HostError(f"ca_rotation {stage!r} is not one of {', '.join(CA_ROTATIONS)}")
    nxt, previous = ca_files("next"), ca_files("previous")
    changed = []
    if stage == "prepare" and not nxt[0].exists():
        log("making the next certificate authority (both are trusted from now on)")
        make_ca("next")
        changed.append("next certificate authority made")
    elif stage == "switch" and nxt[0].exists():
        log("switching to the next certificate authority (the previous one is still trusted)")
        for current, older in zip(ca_files("ca"), previous, strict=True):
            os.replace(current, older)
        for newer, current in zip(nxt, ca_files("ca"), strict=True):
            os.replace(newer, current)
        changed.append("switched to the next certificate authority")
    elif stage == "switch" and not previous[0].exists():
        raise HostError(
            "caRotation switch needs a next CA that clients already trust: run with "
            "caRotation prepare first and give its postgres_ca_cert to the streaming servers"
        )
    elif stage == "none":
        for name, what in (("previous", "previous certificate authority dropped"),
                           ("next", "unused next certificate authority removed")):  # fmt: skip
            files = [path for path in ca_files(name) if path.exists()]
            for path in files:
                path.unlink()
            if files:
                changed.append(what)
    return changed


def trusted_cas() -> str:
    """What clients must trust (the primary's report, so replicas and postgres_ca_cert): the
    signing CA, and during a rotation the next or the previous one too."""
    names = ("ca", "next", "previous")
    return "".join(ca_files(n)[0].read_text() for n in names if ca_files(n)[0].exists())


def certificate_problem(
    crt: Path, address: str, ca_crt: Path | None, renew_days: int
) -> str | None:
    """Why the certificate must be issued (again): "missing", "address" (does not name
    `address`), "issuer" (does not chain to `ca_crt`), "due" (a good one within `renew_days` of
    its end); None when it is fine."""
    if not crt.exists():
        return "missing"
    sans = run(
        ["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"], check=False
    ).stdout
    if f"IP Address:{address}" not in sans:
        return "address"
    verify = ["openssl", "verify", "-CAfile", str(ca_crt), str(crt)]
    if ca_crt and run(verify, check=False).returncode:
        return "issuer"
    seconds = str(int(renew_days) * 86400)
    checkend = ["openssl", "x509", "-in", str(crt), "-noout", "-checkend", seconds]
    return "due" if run(checkend, check=False).returncode else None


def certificate_end(crt: Path) -> str:
    """The certificate's notAfter as openssl prints it (for the log)."""
    out = run(["openssl", "x509", "-in", str(crt), "-noout", "-enddate"], check=False).stdout
    return out.strip().removeprefix("notAfter=")


def renewals(cluster: Cluster) -> int:
    """How many times this cluster's certificate was renewed at the end of its life."""
    path = cluster.confdir / RENEWALS_FILE
    text = path.read_text().strip() if path.exists() else "0"
    return int(text) if text.isdigit() else 0


def ensure_certificate(
    cluster: Cluster, address: str, ca: tuple[Path, Path] | None, params: dict
) -> bool:
    """The server certificate for the private address: signed by the cluster's CA on the
    primary (so clients can verify it), self-signed elsewhere. Issued again when missing,
    wrong, or within certificate_renew_days of its end (a renewal: counted in RENEWALS_FILE);
    valid certificate_days. The caller reloads the server, which takes the new files."""
    days, renew_days = int(params["certificate_days"]), int(params["certificate_renew_days"])
    crt, key = cluster.confdir / "server.crt", cluster.confdir / "server.key"
    problem = "missing" if not key.exists() else None
    problem = problem or certificate_problem(crt, address, ca[0] if ca else None, renew_days)
    if problem is None:
        return False
    if problem == "due":
        log(f"renewing the server certificate (it ends {certificate_end(crt)})")
        count = renewals(cluster) + 1
    else:
        log("issuing the server certificate")
        count = None
    issue_certificate(cluster, address, ca, days)
    if count is not None:
        write_if_changed(cluster.confdir / RENEWALS_FILE, f"{count}\n", owner="postgres")
    return True


def issue_certificate(
    cluster: Cluster, address: str, ca: tuple[Path, Path] | None, days: int
) -> None:
    """A new key and certificate for `address`, written in place of the old ones (0600/0644)."""
    crt, key = cluster.confdir / "server.crt", cluster.confdir / "server.key"
    subject = f"/CN={address}"
    if ca is None:
        self_signed(key, crt, subject, [f"subjectAltName=IP:{address}"], days)
    else:
        csr, ext = cluster.confdir / "server.csr", cluster.confdir / "server.ext"
        ext.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
        run(
            ["openssl", "req", "-new", *EC_KEY, "-subj", subject]
            + ["-keyout", str(key), "-out", str(csr)]
        )
        run(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1])]
            + ["-set_serial", str(int.from_bytes(secrets.token_bytes(8), "big"))]
            + ["-days", str(days), "-extfile", str(ext), "-out", str(crt)]
        )
        csr.unlink()
        ext.unlink()
    for path, mode in ((key, 0o600), (crt, 0o644)):
        shutil.chown(path, "postgres", "postgres")
        os.chmod(path, mode)
