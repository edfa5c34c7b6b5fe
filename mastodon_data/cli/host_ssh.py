"""Runs ONE host script over ssh, as its `remote.Command` would: the script and its parameters
(secrets included) on stdin, the host key checked. For the operator's failover (the promote
script) and for tests of a single script; the order of the steps is the Pulumi program's alone.
`Serving` keeps one script running for many steps (the switchover's pause).
"""

from __future__ import annotations

import argparse
import json
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mastodon_data import plan
from mastodon_data.config import Host

STEP_TIMEOUT = 1800  # seconds; a base backup of a large primary takes a while
SERVE_START = 60  # seconds for a serving script to start (ssh, sudo, Python)
# plan.script_files reads the scripts' imports with ast.parse, which CPython 3.11 does not make
# thread-safe ("AST constructor recursion depth mismatch", seen once starting Servings at once).
PARSING = threading.Lock()
SHORT_TMP = "/tmp" if Path("/tmp").is_dir() else None  # else TMPDIR
# The operator's long-running host script (`mastodon-data switchover`): the scripts on the first
# line of stdin; the rest of stdin, line by line, is the script's (`--serve`). The command waits
# for the script's first answer before it sends more, so the launcher's read takes one line only.
SERVE_LAUNCHER = (
    "import json,os,subprocess,sys,tempfile\n"
    "os.umask(0o077)\n"
    "d=json.loads(sys.stdin.readline())\n"
    "with tempfile.TemporaryDirectory(prefix='mastodon-data-') as p:\n"
    "    for n,s in d['files'].items():\n"
    "        open(os.path.join(p,n),'w').write(s)\n"
    "    r=subprocess.run([sys.executable,os.path.join(p,d['run']),'--serve'])\n"
    "sys.exit(r.returncode)\n"
)


class StepFailed(RuntimeError):
    pass


# known_hosts for a run of the program's (`pulumi up`): hosts without a pinned hostKey are
# trusted on first use in a throw-away file, as the steps' own connections trust them.
FIRST_USE = Path("first-use")


@contextmanager
def private_key(secret: str) -> Iterator[Path]:
    """The stack's ssh key in a 0600 file of a private directory, removed afterwards with the
    shared connections made beside it (`shared`). The directory is under /tmp, not TMPDIR: a
    Unix socket's path holds 104-108 bytes, and a long TMPDIR (macOS's) leaves no room for
    ssh's control socket (cm-<40 hex>, and a 17-character suffix while it binds)."""
    with tempfile.TemporaryDirectory(prefix="mdata-", dir=SHORT_TMP) as private:
        key = Path(private) / "key"
        key.touch(mode=0o600)
        key.write_text(secret.rstrip("\n") + "\n")
        try:
            yield key
        finally:
            for socket in Path(private).glob("cm-*"):
                close = ["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "mastodon-data"]
                subprocess.run(close, capture_output=True, timeout=30, check=False)


def add_known_hosts_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--known-hosts",
        type=Path,
        help="known_hosts file the hosts' keys are checked against (default: the stack's "
        "hostKey, else trust on first use in ~/.ssh/known_hosts)",
    )


def connect(host: Host, key_file: Path, known_hosts: Path | None) -> None:
    """Opens the shared connection to `host` ahead of the steps that are timed."""
    argv = ssh_argv(host, key_file, known_hosts, shared=True)[:-1] + ["true"]
    subprocess.run(argv, capture_output=True, timeout=60, check=False)


def ssh_argv(
    host: Host, key_file: Path, known_hosts: Path | None, shared: bool = False
) -> list[str]:
    """ssh with the host key checked: the stack's `hostKey` when set, else `known_hosts`,
    else trust on first use (recorded in ~/.ssh/known_hosts; with `known_hosts` FIRST_USE, in a
    throw-away file beside the key, as the steps' own connections without a hostKey).
    `shared`: one connection per host, kept beside the key file (a switchover's steps skip the
    handshake and the login)."""
    if host.host_key:
        pinned = key_file.with_name(f"known_hosts.{host.name}")
        address = (
            host.public_address
            if host.ssh_port == 22
            else f"[{host.public_address}]:{host.ssh_port}"
        )
        pinned.write_text(f"{address} {host.host_key}\n")
        known_hosts = pinned
    if known_hosts == FIRST_USE:
        throwaway = key_file.with_name("known_hosts")
        checking = [
            "-o",
            f"UserKnownHostsFile={throwaway}",
            "-o",
            "StrictHostKeyChecking=accept-new",
        ]
    elif known_hosts:
        checking = ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    else:
        checking = ["-o", "StrictHostKeyChecking=accept-new"]
    sharing = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60"]
    sharing += ["-o", f"ControlPath={key_file.parent}/cm-%C"]
    return [
        "ssh",
        "-i",
        str(key_file),
        "-p",
        str(host.ssh_port),
        *checking,
        *(sharing if shared else []),
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        f"{host.ssh_user}@{host.public_address}",
        plan.command_line(host.ssh_user),
    ]


def run_step(
    step: plan.Step,
    secrets: dict,
    key_file: Path,
    known_hosts: Path | None,
    extra_params: dict | None = None,
    *,
    shared: bool = False,
) -> str:
    params = {**step.params, **(extra_params or {})}
    stdin = json.dumps(plan.payload(step, params, secrets))
    try:
        result = subprocess.run(
            ssh_argv(step.host, key_file, known_hosts, shared),
            input=stdin,
            text=True,
            capture_output=True,
            timeout=STEP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{step.name}: no answer within {STEP_TIMEOUT} s") from None
    for line in result.stderr.splitlines():
        print(f"[{step.name}] {line}", file=sys.stderr)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(no output)"]
        # A host script's failure is its "error: ..." line and what follows it.
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        last = " ".join(lines[errors[0] :]).removeprefix("error: ") if errors else lines[-1]
        if result.returncode == 255:
            last = (
                f"ssh to {step.host.ssh_user}@{step.host.public_address}:{step.host.ssh_port}"
                f" failed: {last}"
            )
        raise StepFailed(f"{step.name} failed: {last}")
    return result.stdout


class Serving:
    """A host script kept running on `host` (its --serve mode) over the host's shared ssh
    connection: `ask` sends one step's parameters as a line and returns its report, so a step
    costs its own work only. Its log lines go to stderr, as run_step's do."""

    def __init__(self, host: Host, script: str, key_file: Path, known_hosts: Path | None):
        self.host, self.name = host, f"{script}-{host.name}"
        argv = ssh_argv(host, key_file, known_hosts, shared=True)[:-1]
        argv.append(plan.command_line(host.ssh_user, SERVE_LAUNCHER))
        self.process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1,
        )  # fmt: skip
        self.answers: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._relay_log, daemon=True).start()
        with PARSING:  # Servings start in threads
            files = plan.script_files(script)
        self._send({"files": files, "run": f"{script}.py"})
        self._answer(SERVE_START)  # {"ready": true}

    def ask(self, params: dict, timeout: float = STEP_TIMEOUT) -> dict:
        self._send(params)
        report = self._answer(timeout)
        if "error" in report:
            raise StepFailed(f"{self.name} ({params.get('action')}) failed: {report['error']}")
        return report

    def close(self) -> None:
        """Ends the script (its stdin closed) and the session."""
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def _send(self, message: dict) -> None:
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise StepFailed(f"{self.name} ended: {self._last_error()}") from None

    def _answer(self, timeout: float) -> dict:
        try:
            line = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise StepFailed(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise StepFailed(f"{self.name} ended: {self._last_error()}")
        return json.loads(line)

    def _read_answers(self) -> None:
        for line in self.process.stdout:
            if line.strip():
                self.answers.put(line)
        self.answers.put(None)

    def _relay_log(self) -> None:
        for line in self.process.stderr:
            self.errors.append(line.rstrip())
            print(f"[{self.name}] {line.rstrip()}", file=sys.stderr)

    def _last_error(self) -> str:
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        return (self.errors or ["(no output)"])[-1]
