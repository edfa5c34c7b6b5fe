"""Pure parts of the host scripts, and the commands they would run for versions this machine
cannot install (PostgreSQL 16-18 come from PGDG where the distribution lacks them)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
from pathlib import Path

import common
import pytest


def test_scram_verifier_matches_rfc7677():
    # RFC 7677 section 3: user "user", password "pencil"; the server signature it lists must
    # follow from our verifier's ServerKey.
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = common.scram_verifier("pencil", salt, 4096)
    server_key = base64.b64decode(verifier.rsplit(":", 1)[1])
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = (
        f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
        f"c=biws,r={nonce}"
    )
    signature = hmac.new(server_key, auth.encode(), hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")


def test_verifier_matches_only_its_password():
    verifier = common.scram_verifier("correct horse battery")
    assert common.verifier_matches(verifier, "correct horse battery")
    assert not common.verifier_matches(verifier, "correct horse battery!")
    assert not common.verifier_matches("md5abcdef", "correct horse battery")
    assert not common.verifier_matches(None, "x")


def test_managed_block_goes_first_and_is_replaced_in_place():
    original = "# header\n# more\nlocal all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
    once = common.replace_managed_block(original, ["hostssl db app 10.0.0.0/24 scram-sha-256"])
    lines = once.splitlines()
    assert lines[:3] == ["# header", "# more", common.MARK_BEGIN]
    assert lines.index("local all all peer") > lines.index(common.MARK_END)
    again = common.replace_managed_block(once, ["hostssl db app 10.0.0.0/24 scram-sha-256"])
    assert again == once
    changed = common.replace_managed_block(once, [])
    assert "hostssl" not in changed and changed.count(common.MARK_BEGIN) == 1


def test_pgpass_escapes_colons_and_backslashes():
    line = common.pgpass_line("10.0.0.1", 5432, "replication", "rep", r"a:b\c")
    assert line == r"10.0.0.1:5432:replication:rep:a\:b\\c"


def test_slot_names_are_valid_identifiers():
    assert common.slot_name("mlab-h2") == "mdata_mlab_h2"
    assert common.slot_name("Replica-1.example") == "mdata_replica_1_example"


class FakeRun:
    def __init__(self, policy: str):
        self.calls: list[list[str]] = []
        self.policy = policy

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        out = self.policy if argv[:2] == ["apt-cache", "policy"] else ""
        return subprocess.CompletedProcess(argv, 0, out, "")


@pytest.mark.parametrize("version", [16, 17, 18])
def test_install_adds_pgdg_where_the_distribution_lacks_the_version(monkeypatch, version):
    fake = FakeRun(f"postgresql-{version}:\n  Installed: (none)\n  Candidate: (none)\n")
    monkeypatch.setattr(common, "run", fake)
    cluster = common.Cluster(version)
    monkeypatch.setattr(common.Cluster, "installed", lambda self: False)
    assert cluster.install() is True
    flat = [" ".join(c) for c in fake.calls]
    pgdg = [i for i, c in enumerate(flat) if "apt.postgresql.org.sh" in c]
    install = [i for i, c in enumerate(flat) if c.endswith(f"install postgresql-{version}")]
    assert pgdg and install and pgdg[0] < install[0]
    assert all("DPkg::Lock::Timeout=300" in c for c in flat if c.startswith("apt-get"))
    assert cluster.bindir == Path(f"/usr/lib/postgresql/{version}/bin")


def test_install_uses_the_distribution_package_when_it_has_the_version(monkeypatch):
    fake = FakeRun("postgresql-16:\n  Installed: (none)\n  Candidate: 16.10-0ubuntu0.24.04.1\n")
    monkeypatch.setattr(common, "run", fake)
    monkeypatch.setattr(common.Cluster, "installed", lambda self: False)
    assert common.Cluster(16).install() is True
    assert not any("apt.postgresql.org.sh" in " ".join(c) for c in fake.calls)


def test_install_is_skipped_when_present(monkeypatch):
    fake = FakeRun("")
    monkeypatch.setattr(common, "run", fake)
    monkeypatch.setattr(common.Cluster, "installed", lambda self: True)
    assert common.Cluster(18).install() is False
    assert fake.calls == []


def test_settings_size_senders_and_slots_from_the_plan():
    params = {
        "private_address": "10.0.0.5",
        "wal_keep_size": "1GB",
        "max_slot_wal_keep_size": "10GB",
        "replication_timeout": "10s",
        "wal_retrieve_retry_interval": "1s",
        "max_connections": 120,
    }
    small = common.server_settings(common.Cluster(18), {**params, "wal_senders": 10})
    large = common.server_settings(common.Cluster(18), {**params, "wal_senders": 13})
    assert small["max_wal_senders"] == "10" and large["max_wal_senders"] == "13"
    assert small["listen_addresses"] == "'localhost,10.0.0.5'"
    assert small["wal_level"] == "replica" and small["hot_standby"] == "on"
    assert small["wal_log_hints"] == "on" and small["ssl"] == "on"
    assert small["max_slot_wal_keep_size"] == "'10GB'"
    assert small["max_connections"] == "120"  # the same on the primary and every replica
    assert small["ssl_cert_file"] == "'/etc/postgresql/18/main/server.crt'"
