"""The upstream exporters the program ships (mastodon_data/monitoring/builds.py): found in
exportersHome at preview or the preview stops with the setting and the fix; copied to each
server (CopyToRemote) into the staging directory before its exporters step, whose parameters
carry their checksums, so the same builds change nothing and a new build changes the copy and
the exporters steps only; on the server the step installs a build only when its checksum differs
(host/exporters.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import exporters
import pulumi
import pytest
from common import HostError

from mastodon_data.components.replication import staging_command
from mastodon_data.config import ConfigError, parse_settings
from mastodon_data.monitoring import builds
from tests.fixtures import DROPLETS, SECRETS, exporter_builds
from tests.unit.program_harness import run_program

MONITORED = {**DROPLETS, "monitoringSources": ["10.10.0.5/32"]}
MONITOR_SECRETS = {**SECRETS, "monitorPassword": "monitor-secret-0123456789"}
STAGED = "/var/lib/mastodon-data/staging"


def run(home: str, **changes):
    return run_program({**MONITORED, "exportersHome": home, **changes}, MONITOR_SECRETS)


def comparable(value):
    """Inputs with a FileAsset shown by its path (the engine hashes its content)."""
    if isinstance(value, pulumi.FileAsset):
        return f"FileAsset({value.path})"
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def inputs(result) -> dict[str, dict]:
    return {r.name: comparable(r.inputs) for r in result.resources}


def test_each_server_gets_the_builds_copied_into_staging_before_its_exporters_step(tmp_path):
    home = exporter_builds(tmp_path)
    result = run(home)
    copies = {r.name: r for r in result.of_type("CopyToRemote")}
    assert sorted(copies) == [f"replication-pg18-exporters-db-{n}-{name}" for n in (0, 1)
                              for name in ("pgbouncer_exporter", "ssl_exporter")]  # fmt: skip
    copy = copies["replication-pg18-exporters-db-1-ssl_exporter"]
    assert copy.inputs["source"].path == f"{home}/ssl_exporter-v2.4.1/ssl_exporter"
    assert copy.inputs["remotePath"] == f"{STAGED}/ssl_exporter"
    assert copy.inputs["connection"]["host"] == "203.0.113.2"
    assert copy.inputs["triggers"] == ["203.0.113.2"]  # a new droplet gets them again
    staging = result.one("remote:Command", "replication-pg18-exporters-db-1-staging")
    assert staging.inputs["create"] == f"install -d -m 0755 -o root {STAGED}"
    names = lambda opts: sorted(d._name for d in opts.depends_on)  # noqa: E731
    assert names(result.options["replication-pg18-exporters-db-1-ssl_exporter"]) == [
        "replication-pg18-exporters-db-1-staging"
    ]
    before_step = names(result.options["replication-pg18-exporters-db-1"])
    assert {"replication-pg18-exporters-db-1-pgbouncer_exporter",
            "replication-pg18-exporters-db-1-ssl_exporter"} <= set(before_step)  # fmt: skip


def test_the_exporters_step_gets_each_builds_version_checksum_and_staged_copy(tmp_path):
    result = run(exporter_builds(tmp_path, b"v1-"))
    step = result.one("remote:Command", "replication-pg18-exporters-db-0")
    params = json.loads(step.inputs["stdin"])["params"]
    assert params["exporter_builds"] == {
        "pgbouncer_exporter": {
            "version": "0.12.1",
            "sha256": builds.sha256_of(b"v1-pgbouncer_exporter"),
            "staged": f"{STAGED}/pgbouncer_exporter",
        },
        "ssl_exporter": {
            "version": "2.4.1",
            "sha256": builds.sha256_of(b"v1-ssl_exporter"),
            "staged": f"{STAGED}/ssl_exporter",
        },
    }


def test_without_the_pool_only_ssl_exporter_is_shipped(tmp_path):
    result = run(exporter_builds(tmp_path), pgbouncer=False)
    assert sorted(r.name for r in result.of_type("CopyToRemote")) == [
        "replication-pg18-exporters-db-0-ssl_exporter",
        "replication-pg18-exporters-db-1-ssl_exporter",
    ]


def test_nothing_is_shipped_without_monitoring_sources(tmp_path):
    result = run_program({**DROPLETS, "exportersHome": str(tmp_path / "none")})
    assert result.of_type("CopyToRemote") == []
    assert not [r for r in result.resources if r.name.endswith("-staging")]


def test_the_same_builds_change_nothing_a_new_one_the_copy_source_and_exporters_steps(tmp_path):
    home = exporter_builds(tmp_path)
    first, again = inputs(run(home)), inputs(run(home))
    assert again == first
    binary = builds.binary_path(tmp_path, "pgbouncer_exporter")
    binary.write_bytes(binary.read_bytes() + b"\0new")
    new = inputs(run(home))
    assert sorted(name for name in new if new[name] != first[name]) == [
        "replication-pg18-exporters-db-0", "replication-pg18-exporters-db-1",
    ]  # fmt: skip
    # Its trigger holds the checksum: the step runs again. The copies' inputs name the same
    # file; the engine sees its new content in the asset's hash (tests/lab/test_exporters_standin).
    step = "replication-pg18-exporters-db-0"
    assert new[step]["triggers"] != first[step]["triggers"]


def test_a_missing_build_stops_the_preview_naming_the_setting_and_the_fix(tmp_path):
    exporter_builds(tmp_path)
    builds.binary_path(tmp_path, "ssl_exporter").unlink()
    with pytest.raises(pulumi.RunError) as stopped:
        run(str(tmp_path))
    assert str(stopped.value) == (
        "invalid stack configuration:\n"
        f"mastodon-data:exportersHome = '{tmp_path}': no ssl_exporter v2.4.1 built there "
        "(<name>-v<version>/<name>). Fix: make exporters (from the project's clone; "
        "EXPORTERS_HOME=<directory> to build elsewhere), or pulumi config set "
        "mastodon-data:exportersHome <the directory make exporters built into>"
    )


def test_the_default_home_is_where_make_exporters_builds(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EXPORTERS_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert builds.home("") == tmp_path / ".cache/mastodon-data/exporters"
    monkeypatch.setenv("XDG_CACHE_HOME", "/cache")
    assert builds.home("") == Path("/cache/mastodon-data/exporters")
    monkeypatch.setenv("EXPORTERS_HOME", "/built")
    assert builds.home("") == Path("/built")
    assert builds.home("~/exporters") == tmp_path / "exporters"


def test_exporters_home_must_be_an_absolute_path():
    with pytest.raises(ConfigError) as refused:
        parse_settings({**MONITORED, "exportersHome": "exporters"},
                       {*SECRETS, "monitorPassword"})  # fmt: skip
    assert str(refused.value) == (
        "mastodon-data:exportersHome = 'exporters': not an absolute path. Fix: pulumi config "
        "set mastodon-data:exportersHome ~/.cache/mastodon-data/exporters"
    )


def test_a_login_other_than_root_makes_the_staging_directory_with_sudo():
    assert staging_command("deploy", [STAGED]) == (f"sudo -n install -d -m 0755 -o deploy {STAGED}")


# --- on the server (host/exporters.py) ------------------------------------------------------
@pytest.fixture
def server(tmp_path, monkeypatch):
    """BUILT_DIR and a staging directory in tmp_path; chown recorded (the step runs as root)."""
    monkeypatch.setattr(exporters, "BUILT_DIR", tmp_path / "bin")
    (tmp_path / "bin").mkdir()
    (tmp_path / "staging").mkdir()
    owners = []
    monkeypatch.setattr(exporters.os, "chown", lambda path, uid, gid: owners.append((uid, gid)))
    return tmp_path, owners


def shipped_params(tmp_path: Path, content: bytes) -> dict:
    staged = tmp_path / "staging" / "ssl_exporter"
    staged.write_bytes(content)
    build = {"version": "2.4.1", "sha256": builds.sha256_of(content), "staged": str(staged)}
    return {"exporter_builds": {"ssl_exporter": build}}


def test_the_step_installs_a_build_only_when_its_checksum_differs(server):
    tmp_path, owners = server
    params = shipped_params(tmp_path, b"build one")
    assert exporters.install_built(params, ["postgres", "node", "ssl"]) == ["ssl"]
    installed = tmp_path / "bin" / "ssl_exporter"
    assert installed.read_bytes() == b"build one"
    assert stat.S_IMODE(installed.stat().st_mode) == 0o755 and owners == [(0, 0)]
    assert exporters.install_built(params, ["ssl"]) == []  # the same build: nothing
    assert exporters.install_built(shipped_params(tmp_path, b"build two"), ["ssl"]) == ["ssl"]
    assert installed.read_bytes() == b"build two"
    assert sorted(p.name for p in (tmp_path / "bin").iterdir()) == ["ssl_exporter"]


def test_the_step_refuses_a_staged_copy_that_is_not_the_shipped_build(server):
    tmp_path, _ = server
    params = shipped_params(tmp_path, b"build one")
    Path(params["exporter_builds"]["ssl_exporter"]["staged"]).write_bytes(b"tampered")
    with pytest.raises(HostError, match="is not the build the program shipped"):
        exporters.install_built(params, ["ssl"])
    Path(params["exporter_builds"]["ssl_exporter"]["staged"]).unlink()
    with pytest.raises(HostError, match="the copy the program shipped, is unreadable"):
        exporters.install_built(params, ["ssl"])
    with pytest.raises(HostError, match="the program shipped no pgbouncer_exporter"):
        exporters.install_built(params, ["pgbouncer"])
    assert list((tmp_path / "bin").iterdir()) == []
