"""The lab refuses clearly where it cannot run, naming what to do (no root needed)."""

from __future__ import annotations

import pytest

from lab import namespaces as lab_hosts


def test_refuses_without_root(monkeypatch):
    monkeypatch.setattr(lab_hosts.os, "geteuid", lambda: 1000)
    with pytest.raises(lab_hosts.LabError, match="needs root"):
        lab_hosts.preflight()


@pytest.mark.parametrize(
    ("tool", "package"),
    [
        ("/usr/sbin/sshd", "openssh-server"),
        ("ip", "iproute2"),
        ("pg_createcluster", "postgresql-common"),
    ],
)
def test_names_the_package_of_a_missing_tool(monkeypatch, tool, package):
    monkeypatch.setattr(lab_hosts.os, "geteuid", lambda: 0)
    real_which = lab_hosts.shutil.which
    monkeypatch.setattr(lab_hosts.shutil, "which", lambda t: None if t == tool else real_which(t))
    with pytest.raises(lab_hosts.LabError, match=f"apt-get install -y .*{package}"):
        lab_hosts.preflight()
