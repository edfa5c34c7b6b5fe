"""The lab refuses clearly where it cannot run, naming what to do (no root needed)."""

from __future__ import annotations

import pytest

from lab import system


def test_refuses_without_root(monkeypatch):
    monkeypatch.setattr(system.os, "geteuid", lambda: 1000)
    with pytest.raises(system.LabError, match="needs root"):
        system.preflight()


@pytest.mark.parametrize(
    ("tool", "package"),
    [
        ("/usr/sbin/sshd", "openssh-server"),
        ("ip", "iproute2"),
        ("pg_createcluster", "postgresql-common"),
    ],
)
def test_names_the_package_of_a_missing_tool(monkeypatch, tool, package):
    monkeypatch.setattr(system.os, "geteuid", lambda: 0)
    real_which = system.shutil.which
    monkeypatch.setattr(system.shutil, "which", lambda t: None if t == tool else real_which(t))
    with pytest.raises(system.LabError, match=f"apt-get install -y .*{package}"):
        system.preflight()
