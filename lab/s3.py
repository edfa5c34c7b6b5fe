"""The lab's object store: moto's S3 server (PyPI `moto[server]`, in memory, on loopback) behind
stunnel4 (Debian) with a certificate from a lab CA, on an address the lab hosts reach. pgBackRest
speaks S3 over HTTPS only and verifies the certificate against the CA (repo1-storage-ca-file).

pgBackRest 2.45 matches the endpoint against the certificate's DNS names only (not IP SANs), so
the certificate carries the listening address as a DNS name too: the hosts use it as the
endpoint and no name needs to resolve. Everything lives in `directory` (0700) and goes with
`stop()`; moto forgets every object when it stops.

    python -m lab.s3 up --address 10.234.0.1 --dir /var/lib/x/s3   # prints the endpoint as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lab.system import wait_for_port

VENV_BIN = Path(sys.executable).parent
START_WAIT = 30  # seconds for moto and stunnel to listen
STOP_WAIT = 10  # seconds for a process to end on SIGTERM


class S3Error(RuntimeError):
    pass


@dataclass(frozen=True)
class LabS3:
    """moto on 127.0.0.1:`moto_port`, TLS on `address`:`tls_port`."""

    address: str
    directory: Path
    moto_port: int = 19000
    tls_port: int = 19001
    region: str = "nyc3"

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.tls_port}"

    def start(self) -> None:
        self.stop()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._certificates()
        self._spawn(
            "moto",
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)],
        )
        if not wait_for_port("127.0.0.1", self.moto_port, START_WAIT):
            raise S3Error(
                f"moto did not listen on 127.0.0.1:{self.moto_port}; see {self.log('moto')}"
            )
        conf = self.directory / "stunnel.conf"
        conf.write_text(
            "\n".join(
                [
                    "foreground = yes",
                    f"pid = {self.directory / 'stunnel.pid'}",
                    "[s3]",
                    f"accept = {self.address}:{self.tls_port}",
                    f"connect = 127.0.0.1:{self.moto_port}",
                    f"cert = {self.directory / 'server.crt'}",
                    f"key = {self.directory / 'server.key'}",
                    "",
                ]
            )
        )
        self._spawn("stunnel", ["stunnel4", str(conf)])
        if not wait_for_port(self.address, self.tls_port, START_WAIT):
            self.stop()
            raise S3Error(f"stunnel did not listen on {self.endpoint}; see {self.log('stunnel')}")

    def make_bucket(self, bucket: str) -> None:
        """The bucket, as the stack's SpacesBucket makes it on Spaces (moto: plain PUT)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.moto_port}/{bucket}", method="PUT", data=b""
        )
        urllib.request.urlopen(request, timeout=10).close()

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> None:
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
            )
        (self.directory / f"{name}.pid").write_text(f"{process.pid}\n")

    def _certificates(self) -> None:
        ca_key, key = self.directory / "ca.key", self.directory / "server.key"
        csr, ext = self.directory / "server.csr", self.directory / "server.ext"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl(["req", "-x509", *ec, "-days", "30", "-subj", "/CN=mastodon-data lab S3 CA",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-keyout", str(ca_key), "-out", str(self.ca_cert)])  # fmt: skip
        openssl(["req", "-new", *ec, "-subj", f"/CN={self.address}",
                 "-keyout", str(key), "-out", str(csr)])  # fmt: skip
        ext.write_text(
            f"subjectAltName=DNS:{self.address},IP:{self.address}\nextendedKeyUsage=serverAuth\n"
        )
        openssl(["x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "30", "-extfile", str(ext),
                 "-out", str(self.directory / "server.crt")])  # fmt: skip

    def stop(self) -> None:
        """Ends moto and stunnel (by their pid files) and removes the directory."""
        for name in ("stunnel", "moto"):
            pid_file = self.directory / f"{name}.pid"
            if pid_file.exists():
                stop_pid(int(pid_file.read_text().split()[0]))
        shutil.rmtree(self.directory, ignore_errors=True)


def openssl(args: list[str]) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise S3Error(f"openssl {args[0]} failed: {result.stderr.strip()}")


def stop_pid(pid: int) -> None:
    """SIGTERM to the process group `pid` leads, SIGKILL after STOP_WAIT."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:  # our child: reaped
                return
        except ChildProcessError:  # not ours (another run started it): look it up
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--bucket")
    args = parser.parse_args(argv)
    store = LabS3(args.address, args.dir)
    if args.action == "down":
        store.stop()
        return 0
    store.start()
    if args.bucket:
        store.make_bucket(args.bucket)
    print(json.dumps({"endpoint": store.endpoint, "ca_cert": str(store.ca_cert)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
