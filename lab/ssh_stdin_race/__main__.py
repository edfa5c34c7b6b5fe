"""Why a step's delete failed with `EOF` on Debian 13 (issue 24), measured: a command run as
pulumi-command runs it (its Go ssh client, main.go), with a step's payload on stdin, on a lab of
its own (mlsr, 10.243.77.0/24): host 1 on this machine's Debian 12 (OpenSSH 9.2), host 2 on the
Debian 13 image (OpenSSH 10.0, `make rootfs`). For each host, `echo` alone (the delete notes
before the fix: they exit without reading stdin) and `cat >/dev/null; echo` (DRAIN_STDIN of
mastodon_data/components/replication.py): the outcome of every run, counted, into
results/ssh_stdin_race.json. The lab is removed at the end, also on failure. Root; the engine's
Go module cache (`make engine`); about a minute at rest.

    venv/bin/python -m lab.ssh_stdin_race [--runs 400] [--stdin 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lab import namespaces as lab_hosts
from lab import rootfs
from lab.bench_run import write_figures
from lab.stack import ROOT

HERE = Path(__file__).resolve().parent
LAB = lab_hosts.Lab(
    prefix="mlsr",
    subnet="10.243.77.0/24",
    state_dir=Path("/var/lib/mastodon-lab-ssh-race"),
    images={2: rootfs.image_dir()},
)
ENGINE_HOME = Path(os.environ.get("ENGINE_HOME", Path.home() / ".cache/mastodon-data/engine"))
STDIN = 50_000  # bytes: a pooler step's payload (its scripts) is about 49 KB, a replica's 57
COMMANDS = {"echo": "echo note", "drained": "cat >/dev/null; echo note"}


def build(out: Path) -> Path:
    """The client, built offline from the engine's module cache (pulumi-command's x/crypto)."""
    env = {
        **os.environ,
        "GOMODCACHE": str(ENGINE_HOME / "go/mod"),
        "GOCACHE": str(ENGINE_HOME / "go/build"),
        "GOPROXY": "off",
        "GOFLAGS": "-buildvcs=false",
        "GOTOOLCHAIN": "local",
    }
    binary = out / "ssh-stdin-race"
    subprocess.run(["go", "build", "-o", str(binary), "."], cwd=HERE, env=env, check=True)
    return binary


def outcomes(binary: Path, address: str, command: str, runs: int, size: int) -> dict[str, int]:
    argv = [str(binary), "-host", address, "-key", str(LAB.private_key), "-stdin", str(size)]
    argv += ["-runs", str(runs), "-command", command]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs of each command on each host")
    parser.add_argument("--stdin", type=int, default=STDIN, help="bytes on each run's stdin")
    args = parser.parse_args()
    runs = args.runs
    figures: dict[str, object] = {"runs": runs, "stdin_bytes": args.stdin}
    lab_hosts.down(LAB)
    try:
        with tempfile.TemporaryDirectory(prefix="mlsr-") as workdir:
            binary = build(Path(workdir))
            lab_hosts.up(LAB, 2)
            for index, system in ((1, "debian12"), (2, "debian13")):
                for name, command in COMMANDS.items():
                    found = outcomes(binary, LAB.host(index).address, command, runs, args.stdin)
                    figures[f"{system}_{name}"] = found
        figures["load_average_1m"] = round(os.getloadavg()[0], 1)
    finally:
        lab_hosts.down(LAB)
    write_figures(ROOT / "results" / "ssh_stdin_race.json", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
