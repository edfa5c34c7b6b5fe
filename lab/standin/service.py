"""A stand-in instance on this machine: its lab prefix, networks and directory, its server as a
background process (state kept in its directory, so it survives its own restart), and its
complete removal.

    python -m lab.standin serve --prefix mlabd --state-dir /var/lib/mastodon-lab-do ...
    python -m lab.standin down  --prefix mlabd --state-dir /var/lib/mastodon-lab-do
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
from dataclasses import dataclass, field
from pathlib import Path

from lab.standin._lab import IMPORT_PATHS, ROOT
from lab.standin.client import Client
from lab.standin.hosts import LabHosts
from lab.system import LabError, pid_alive, preflight

START_TIMEOUT = 30  # seconds for the server to answer
STOP_TIMEOUT = 60  # seconds for it to finish its background work and exit


@dataclass(frozen=True)
class StandInLab:
    prefix: str = "mlabd"
    public_network: str = "10.241.0.0/24"
    vpc_pool: tuple[str, ...] = ("10.240.0.0/24",)
    state_dir: Path = Path("/var/lib/mastodon-lab-do")
    timings: dict = field(default_factory=dict, hash=False)  # resources.base.Timings overrides

    @property
    def hosts(self) -> LabHosts:
        return LabHosts(self.prefix, self.public_network, self.state_dir, self.vpc_pool)

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "standin.pid"

    @property
    def url_file(self) -> Path:
        return self.state_dir / "standin.url"

    @property
    def request_log(self) -> Path:
        return self.state_dir / "requests.jsonl"

    @property
    def operator_address(self) -> str:
        return self.hosts.operator_address

    def argv(self) -> list[str]:
        return [
            sys.executable, "-m", "lab.standin", "serve", "--prefix", self.prefix,
            "--public-network", self.public_network, "--vpc-pool", ",".join(self.vpc_pool),
            "--state-dir", str(self.state_dir), "--timings", json.dumps(self.timings),
        ]  # fmt: skip

    def running(self) -> Client | None:
        if pid_alive(self.pid_file) and self.url_file.exists():
            return Client(self.url_file.read_text().strip())
        return None

    def start(self) -> Client:
        """The server (started when not running); its client."""
        preflight()
        if not shutil.which("nft"):
            raise LabError("the stand-in's firewalls need nft: apt-get install -y nftables")
        client = self.running()
        if client:
            return client
        self.hosts.ensure_switch()
        self.url_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in IMPORT_PATHS)}
        with (self.state_dir / "standin.log").open("a") as log:
            process = subprocess.Popen(
                self.argv(),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LabError(f"the stand-in exited ({process.returncode}); see {log.name}")
            client = self.running()
            if client:
                return client
            time.sleep(0.1)
        process.kill()
        raise LabError(f"the stand-in did not start within {START_TIMEOUT} s")

    def stop(self) -> None:
        pid = pid_alive(self.pid_file)
        if not pid:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and pid_alive(self.pid_file):
            time.sleep(0.1)
        if pid_alive(self.pid_file):
            os.kill(pid, signal.SIGKILL)

    def down(self) -> list[str]:
        """Everything removed; what is left (nothing, normally)."""
        preflight()
        self.stop()
        self.hosts.down()
        return self.hosts.leftovers()

    def remove(self, what: str) -> int:
        """`down` for an operator's command: says what went, or raises what is left."""
        rest = self.down()
        if rest:
            raise LabError("removal left: " + "; ".join(rest))
        print(f"stand-in lab {self.prefix} removed ({what})")
        return 0


def serve(args: argparse.Namespace) -> int:
    """The server process: the account on the lab hosts, on a loopback port, until SIGTERM."""
    from lab.standin.account import Account
    from lab.standin.resources.base import Timings
    from lab.standin.server import serve as start_server
    from lab.standin.server import serve_spaces

    state_dir = Path(args.state_dir)
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    hosts = LabHosts(args.prefix, args.public_network, state_dir, args.vpc_pool.split(","))
    hosts.ensure_switch()
    timings = Timings()
    for key, value in json.loads(args.timings or "{}").items():
        setattr(timings, key, value)
    account = Account(
        hosts,
        public_network=args.public_network,
        vpc_pool=tuple(args.vpc_pool.split(",")),
        state_file=state_dir / "state.json",
        timings=timings,
        log=lambda text: print(text, flush=True),
    )
    for vpc in account.state["vpcs"].values():
        hosts.ensure_network(vpc)
    account.recover()
    watching = account.start_watching(timings.health_check)
    server = start_server(account, args.port, state_dir / "requests.jsonl")
    spaces = serve_spaces(server, hosts.spaces_address(), hosts.spaces_certificate(), hosts.public)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    (state_dir / "standin.pid").write_text(f"{os.getpid()}\n")
    (state_dir / "standin.url").write_text(server.url + "\n")
    print(f"stand-in of the DigitalOcean API at {server.url} (lab {args.prefix})", flush=True)
    while not stopping:
        time.sleep(0.2)
    watching.set()
    spaces.shutdown()
    server.shutdown()
    account.idle(STOP_TIMEOUT - 5)
    account.save()
    (state_dir / "standin.url").unlink(missing_ok=True)
    (state_dir / "standin.pid").unlink(missing_ok=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.standin", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="action", required=True)
    for name in ("serve", "down"):
        p = sub.add_parser(name)
        p.add_argument("--prefix", default="mlabd")
        p.add_argument("--public-network", default="10.241.0.0/24")
        p.add_argument("--vpc-pool", default="10.240.0.0/24")
        p.add_argument("--state-dir", default="/var/lib/mastodon-lab-do")
        p.add_argument("--port", type=int, default=0)
        p.add_argument("--timings", default="{}")
    args = parser.parse_args(argv)
    try:
        if args.action == "serve":
            return serve(args)
        lab = StandInLab(args.prefix, args.public_network, tuple(args.vpc_pool.split(",")),
                         Path(args.state_dir))  # fmt: skip
        rest = lab.down()
        if rest:
            raise LabError("removal left: " + "; ".join(rest))
        print(f"stand-in lab {args.prefix} removed")
        return 0
    except LabError as err:
        print(f"standin: {err}", file=sys.stderr)
        return 2
