"""Quiet previews, the program's half: the same configuration must give the same resource inputs
on every run, or `pulumi preview` on an unchanged stack shows changes (and a changed
remote.Command trigger re-runs a replication step). Two runs in separate processes, with
different hash seeds (set and dict-of-set ordering) and working directories, must register the
same resources with byte-identical inputs. The provider's half (what DigitalOcean or
pulumi-command report back and diff) needs the engine: see tests/engine/test_policy_engine.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_policy import DROPLETS, HOSTS, MANAGED

ROOT = Path(__file__).resolve().parents[2]
MODES = {
    "droplets": (DROPLETS, None),
    "hosts": (HOSTS, None),
    "managed": (MANAGED, {}),
    "managed-with-cache": ({**MANAGED, "redisCache": True}, {}),  # two Valkey clusters
}

DUMP = """
import json, sys
from program_harness import run_program
modes = json.loads(sys.argv[1])
result = {}
for mode, (config, secrets) in modes.items():
    run = run_program(config, secrets)
    result[mode] = sorted(
        [r.typ, r.name, r.inputs, sorted(r.secret_inputs)] for r in run.resources
    )
print(json.dumps(result, sort_keys=True))
"""


def registered(seed: str, cwd: Path) -> dict:
    # The project directory (tests.fixtures) and the harness, as pytest's pythonpath has them.
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests" / "unit")])
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": path}
    result = subprocess.run(
        [sys.executable, "-c", DUMP, json.dumps(MODES)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    return registered("1", ROOT), registered("2", tmp_path_factory.mktemp("elsewhere"))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_same_config_gives_identical_resource_inputs(two_runs, mode):
    first, second = (run[mode] for run in two_runs)
    assert [r[:2] for r in first] == [r[:2] for r in second]  # same resources
    for a, b in zip(first, second, strict=True):
        assert a == b, f"{a[0]} {a[1]}: inputs differ between two runs"


def test_every_mode_registers_resources(two_runs):
    first, _ = two_runs
    for mode in MODES:
        assert any(typ.startswith(("digitalocean:", "command:")) for typ, *_ in first[mode])
