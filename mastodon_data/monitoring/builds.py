"""The pinned upstream exporters the program ships to each server (docs/operators/monitoring.md):
where `make exporters` (lab/build_exporters.sh) leaves them, `exportersHome`, and the binaries a
stack's exporters need with their checksums. The program reads them at preview; a missing one
stops it with the setting and the fix. The copy lands in STAGING_DIR on the server; the
exporters step (host/exporters.py) installs it into /usr/local/bin when its checksum differs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mastodon_data.config import PROJECT, ConfigError, ReplicationSettings
from mastodon_data.monitoring.targets import exporter_jobs

HOME_KEY = "exportersHome"
# Binary -> the version lab/build_exporters.sh pins (and the binary reports), by job.
PINNED = {"pgbouncer_exporter": "0.12.1", "ssl_exporter": "2.4.1"}
JOB_BINARY = {"pgbouncer": "pgbouncer_exporter", "ssl": "ssl_exporter"}
# On the server: root's, outside /usr/local/bin (a lab host has its own, lab/host_files.py).
STAGING_DIR = "/var/lib/mastodon-data/staging"


@dataclass(frozen=True)
class Build:
    """One binary to ship: `path` on the operator's machine, its checksum, where it lands."""

    name: str
    version: str
    path: str
    sha256: str

    @property
    def staged(self) -> str:
        return f"{STAGING_DIR}/{self.name}"

    def host_params(self) -> dict[str, str]:
        """What the exporters step checks and installs (ExportersParams.exporter_builds)."""
        return {"version": self.version, "sha256": self.sha256, "staged": self.staged}


def home(setting: str) -> Path:
    """The directory the setting names, else where `make exporters` builds: $EXPORTERS_HOME,
    else $XDG_CACHE_HOME/mastodon-data/exporters (~/.cache when unset)."""
    if setting:
        return Path(setting).expanduser()
    if os.environ.get("EXPORTERS_HOME"):
        return Path(os.environ["EXPORTERS_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / PROJECT / "exporters"


def binary_path(directory: Path, name: str) -> Path:
    """Where build_exporters.sh leaves a binary: <name>-v<version>/<name>."""
    return directory / f"{name}-v{PINNED[name]}" / name


def locate(replication: ReplicationSettings) -> tuple[Build, ...]:
    """The builds the stack's exporters need (none without monitoringSources), read from
    exportersHome; a ConfigError naming the setting and the fix when one is missing."""
    if not replication.monitoring_sources:
        return ()
    directory = home(replication.exporters_home)
    names = [JOB_BINARY[job] for job in exporter_jobs(replication.pool is not None)
             if job in JOB_BINARY]  # fmt: skip
    missing = [f"{name} v{PINNED[name]}" for name in names
               if not binary_path(directory, name).is_file()]  # fmt: skip
    if missing:
        shown = repr(replication.exporters_home) + ("" if replication.exporters_home
                                                     else f" ({directory})")  # fmt: skip
        raise ConfigError(
            f"{PROJECT}:{HOME_KEY} = {shown}: no {' nor '.join(missing)} built there "
            f"(<name>-v<version>/<name>). Fix: make exporters (from the project's clone; "
            f"EXPORTERS_HOME=<directory> to build elsewhere), or pulumi config set "
            f"{PROJECT}:{HOME_KEY} <the directory make exporters built into>"
        )
    return tuple(build(directory, name) for name in names)


def build(directory: Path, name: str) -> Build:
    path = binary_path(directory, name)
    return Build(name, PINNED[name], str(path), sha256_of(path.read_bytes()))


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()
