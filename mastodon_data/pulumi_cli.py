"""`pulumi` commands on one stack of this project, through the real CLI (operator tools and lab)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from mastodon_data import plan
from mastodon_data.config import PROJECT


class PulumiFailed(RuntimeError):
    """A pulumi command failed; the message carries its diagnostics."""


STEP_NAME = re.compile(r"replication-(?:pg(\d+)-)?(.+)")


def diagnostics(stdout: str) -> str:
    """The "Diagnostics:" part of pulumi's output (the errors), without the outputs after it."""
    _, found, rest = stdout.partition("\nDiagnostics:\n")
    if not found:
        return stdout[-4000:]
    return "Diagnostics:\n" + rest.partition("\nOutputs:\n")[0].partition("\nResources:\n")[0]


class Stack:
    """Stack `name` of the project in `cwd`; `env` adds to (or overrides) this process's."""

    def __init__(self, name: str, cwd: Path, env: dict[str, str] | None = None, timeout=1800):
        self.name, self.cwd, self.timeout = name, Path(cwd), timeout
        self.extra_env = dict(env or {})
        self.last: subprocess.CompletedProcess | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true", **self.extra_env}

    def pulumi(self, *args: str, stack: bool = True, stdin: str | None = None, check=True) -> str:
        argv = ["pulumi", *args, *(["--stack", self.name] if stack else []), "--non-interactive"]
        result = subprocess.run(
            argv,
            cwd=self.cwd,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=self.timeout,
        )
        self.last = result
        if check and result.returncode != 0:
            raise PulumiFailed(
                f"pulumi {args[0]} failed:\n{diagnostics(result.stdout)}{result.stderr}"
            )
        return result.stdout

    def up(self, *extra: str) -> str:
        return self.pulumi("up", "--yes", "--skip-preview", "--suppress-progress", *extra)

    def preview(self, *extra: str, check: bool = True) -> str:
        return self.pulumi("preview", "--suppress-progress", *extra, check=check)

    def destroy(self, *extra: str) -> str:
        return self.pulumi("destroy", "--yes", "--skip-preview", "--suppress-progress", *extra)

    def outputs(self) -> dict:
        """The stack outputs with secrets shown (what `render_env` reads)."""
        return json.loads(self.pulumi("stack", "output", "--json", "--show-secrets"))

    def config_listing(self) -> dict[str, dict]:
        """`pulumi config --json --show-secrets`: by full key, the value and whether it is a
        secret (what mastodon_data.stack_config.from_listing reads)."""
        return json.loads(self.pulumi("config", "--json", "--show-secrets"))

    def config(self) -> dict:
        """This project's configuration, keys without the prefix, secrets in clear."""
        return {
            key.partition(":")[2]: item.get("objectValue", item.get("value"))
            for key, item in self.config_listing().items()
            if key.startswith(f"{PROJECT}:")
        }

    def set_plain(self, values: dict) -> None:
        """Sets non-secret values (any JSON type) in one call."""
        document = {}
        for key, value in values.items():
            item = {"value": value if isinstance(value, str) else json.dumps(value)}
            if isinstance(value, list | dict):
                item["objectValue"] = value
            document[f"{PROJECT}:{key}"] = {**item, "secret": False}
        self.pulumi("config", "set-all", "--json", json.dumps(document))

    def remove(self, key: str) -> None:
        self.pulumi("config", "rm", f"{PROJECT}:{key}")

    def set_secret(self, key: str, value: str) -> None:
        """A secret value, read by pulumi from stdin: never on a command line."""
        self.pulumi("config", "set", "--secret", f"{PROJECT}:{key}", stdin=value)

    def step_reports(self) -> dict[str, dict]:
        """Each replication step's report (the last line of its last stdout), from the state,
        by step name (during a blue/green upgrade a name both generations have: the newer's)."""
        reports = {}
        for _, step, resource in sorted(self._steps(), key=lambda found: found[0]):
            reports[step] = plan.parse_report(resource.get("outputs", {}).get("stdout", ""))
        return reports

    def rerun(self, step: str) -> str:
        """`pulumi up --replace` of one replication step: it runs again with the same inputs
        (its delete keeps the data), e.g. for a replica whose slot the primary dropped."""
        urns = [resource["urn"] for _, name, resource in self._steps() if name == step]
        if len(urns) != 1:
            raise PulumiFailed(f"{len(urns)} steps {step} in stack {self.name}, not one")
        return self.up("--replace", urns[0])

    def _steps(self) -> list[tuple[int, str, dict]]:
        """(its generation's version, the step's name, the resource) of every replication step
        (named replication-pg<version>-<step>, or replication-<step> before generations)."""
        state = json.loads(self.pulumi("stack", "export"))
        found = []
        for resource in state["deployment"].get("resources", []):
            match = STEP_NAME.fullmatch(resource["urn"].rpartition("::")[2])
            if resource["type"] == "command:remote:Command" and match:
                found.append((int(match.group(1) or 0), match.group(2), resource))
        return found

    def last_changes(self) -> dict[str, int]:
        """What the last update did, e.g. {"same": 8} (from the stack's history)."""
        history = json.loads(self.pulumi("stack", "history", "--json", "--page-size", "1"))
        return history[0].get("resourceChanges", {}) if history else {}
