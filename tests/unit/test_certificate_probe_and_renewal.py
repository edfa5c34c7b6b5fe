"""Certificate renewal without the lab: the settings and their checks, the host side (real
openssl on files in a temporary directory), the program's check of each host (its probe run
by a real shell against those files; ssh replaced by a stand-in), and the program on Pulumi
mocks: a due certificate changes its step's trigger, a renewed one gives it back."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import tls
from program_harness import CertificateProbes, run_program

from mastodon_data import cert_renewal, plan
from mastodon_data.config import ConfigError, Host, parse_settings
from tests.fixtures import DROPLETS, HOSTS, SECRETS, hosts_stack

ADDRESS = "10.0.0.1"
DEFAULTS = {"certificate_days": 825, "certificate_renew_days": 30}  # the program's
DAY = 86400


# --- settings --------------------------------------------------------------------------------
def test_defaults_reach_every_certificate_step():
    settings = parse_settings(hosts_stack(count=2, replicas=1), set(SECRETS))
    assert (settings.replication.certificate_days, settings.replication.certificate_renew_days) == (
        825,
        30,
    )
    for step in plan.steps(settings.replication, settings.hosts):
        if step.script in plan.CERTIFICATE_SCRIPTS:
            assert (step.params["certificate_days"], step.params["certificate_renew_days"]) == (
                825,
                30,
            )


def test_settings_are_taken():
    config = {**hosts_stack(count=2, replicas=1), "certificateDays": 90, "certificateRenewDays": 20}
    replication = parse_settings(config, set(SECRETS)).replication
    assert (replication.certificate_days, replication.certificate_renew_days) == (90, 20)


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {"certificateDays": 6},
            "mastodon-data:certificateDays = 6: not an integer from 7 to 3650. "
            "Fix: pulumi config set mastodon-data:certificateDays 825",
        ),
        (
            {"certificateRenewDays": 0},
            "mastodon-data:certificateRenewDays = 0: not an integer from 1 to 365. "
            "Fix: pulumi config set mastodon-data:certificateRenewDays 30",
        ),
        (
            {"certificateDays": 30, "certificateRenewDays": 30},
            "mastodon-data:certificateRenewDays = 30: not less than certificateDays 30: every "
            "run would renew the certificates. "
            "Fix: pulumi config set mastodon-data:certificateRenewDays 7",
        ),
    ],
)
def test_bad_values_name_the_setting_and_the_fix(changes, line):
    with pytest.raises(ConfigError) as error:
        parse_settings({**hosts_stack(count=2, replicas=1), **changes}, set(SECRETS))
    assert str(error.value).splitlines() == [line]


def test_not_for_managed_mode():
    managed = {"postgresMode": "managed", "appCidrs": ["10.0.0.0/24"], "certificateDays": 90}
    with pytest.raises(ConfigError) as error:
        parse_settings(managed, set())
    assert str(error.value) == (
        "mastodon-data:certificateDays = 90: not used in managed mode (there: DigitalOcean's "
        "own certificates). Fix: pulumi config rm mastodon-data:certificateDays"
    )


# --- the host side ---------------------------------------------------------------------------
class Confdir:
    """A cluster whose configuration directory is a temporary one (openssl is real)."""

    def __init__(self, path: Path):
        self.confdir = path


@pytest.fixture
def host_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tls.shutil, "chown", lambda *args, **kwargs: None)
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    monkeypatch.setattr(tls, "CA_DIR", ca_dir)
    ca_crt, ca_key, made = tls.ensure_ca()
    assert made
    confdir = tmp_path / "conf"
    confdir.mkdir()
    return Confdir(confdir), (ca_crt, ca_key)


def lasts(crt: Path, days: float) -> bool:
    """Whether the certificate is still valid `days` from now (openssl's own date math)."""
    seconds = str(int(days * DAY))
    argv = ["openssl", "x509", "-in", str(crt), "-noout", "-checkend", seconds]
    return subprocess.run(argv, capture_output=True).returncode == 0


def valid_for(crt: Path, days: int) -> bool:
    """Valid for `days` days from about now: still valid a day less, no longer a day more."""
    return lasts(crt, days - 1) and not lasts(crt, days + 1)


def probe(cluster: Confdir, renew_days: int = 30) -> str:
    command = cert_renewal.probe_command(15, renew_days, str(cluster.confdir))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True).stdout.strip()


def test_issued_certificate_chains_to_the_ca_and_is_not_renewed_while_valid(host_files):
    cluster, ca = host_files
    assert probe(cluster) == "none 0"
    params = {"certificate_days": 400, "certificate_renew_days": 30}
    assert tls.ensure_certificate(cluster, ADDRESS, ca, params) is True
    crt = cluster.confdir / "server.crt"
    assert valid_for(crt, 400)
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) is None
    assert stat.S_IMODE(os.stat(cluster.confdir / "server.key").st_mode) == 0o600
    assert tls.ensure_certificate(cluster, ADDRESS, ca, params) is False
    assert probe(cluster) == "ok 0"
    assert not (cluster.confdir / tls.RENEWALS_FILE).exists()


def test_a_certificate_within_its_window_is_renewed_and_counted(host_files):
    cluster, ca = host_files
    tls.issue_certificate(cluster, ADDRESS, ca, 5)  # five days left
    crt = cluster.confdir / "server.crt"
    assert tls.certificate_problem(crt, ADDRESS, ca[0], renew_days=4) is None
    assert tls.certificate_problem(crt, ADDRESS, ca[0], renew_days=30) == "due"
    assert probe(cluster, 4) == "ok 0"
    assert probe(cluster, 30) == "due 0"  # the program's trigger takes 0 + 1
    before = crt.read_text()
    params = {"certificate_days": 825, "certificate_renew_days": 30}
    assert tls.ensure_certificate(cluster, ADDRESS, ca, params) is True
    assert crt.read_text() != before
    assert valid_for(crt, 825)
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) is None  # same CA
    assert (cluster.confdir / tls.RENEWALS_FILE).read_text() == "1\n"
    assert probe(cluster, 30) == "ok 1"  # the same count as the run that renewed it
    # A second renewal counts on.
    tls.issue_certificate(cluster, ADDRESS, ca, 5)
    assert probe(cluster, 30) == "due 1"
    assert tls.ensure_certificate(cluster, ADDRESS, ca, params) is True
    assert probe(cluster, 30) == "ok 2"


def test_a_replica_self_signed_certificate_is_renewed_too(host_files):
    cluster, _ = host_files
    tls.issue_certificate(cluster, ADDRESS, None, 2)
    assert tls.ensure_certificate(cluster, ADDRESS, None, {**DEFAULTS, "certificate_renew_days": 3})
    assert probe(cluster, 3) == "ok 1"
    assert valid_for(cluster.confdir / "server.crt", 825)


def test_a_certificate_for_another_address_is_issued_again_but_not_counted(host_files):
    cluster, ca = host_files
    tls.issue_certificate(cluster, "10.0.0.9", ca, 825)
    crt = cluster.confdir / "server.crt"
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) == "address"
    assert tls.ensure_certificate(cluster, ADDRESS, ca, DEFAULTS) is True
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) is None
    assert probe(cluster) == "ok 0"


def test_a_certificate_of_another_ca_is_issued_again(host_files, tmp_path):
    cluster, ca = host_files
    other = (tmp_path / "other.crt", tmp_path / "other.key")
    tls.self_signed(other[1], other[0], "/CN=other CA", ["basicConstraints=critical,CA:TRUE"])
    tls.issue_certificate(cluster, ADDRESS, other, 825)
    assert tls.certificate_problem(cluster.confdir / "server.crt", ADDRESS, ca[0], 30) == "issuer"


# --- the program's check of a host -----------------------------------------------------------
@pytest.mark.parametrize(
    ("answer", "count"),
    [("ok 0", (0, False)), ("ok 3", (3, False)), ("due 3", (4, True)), ("none 0", (0, False))],
)
def test_the_trigger_takes_the_count_plus_one_when_due(answer, count):
    assert cert_renewal.renewal_count(answer) == count


@pytest.mark.parametrize("answer", ["", "ok", "due x", "maybe 1", "ok 1 2"])
def test_an_unexpected_answer_is_no_count(answer):
    assert cert_renewal.renewal_count(answer) is None


HOST = Host("db1", "primary", "203.0.113.1", "10.0.0.1", host_key="ssh-ed25519 AAAAC3host")


def test_an_unreachable_host_counts_as_never_renewed(monkeypatch):
    monkeypatch.setattr(cert_renewal, "READER", [CertificateProbes({"203.0.113.1": OSError("x")})])
    assert cert_renewal.check_host(HOST, "203.0.113.1", "key", 15, 30) == 0


def test_ssh_gets_the_key_as_a_private_file_and_no_secret_on_its_command_line(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen"
    (fake / "ssh").write_text(
        "#!/bin/sh\n"
        'key=$2; echo "$@" > ' + str(seen) + "\n"
        'stat -c %a "$key" >> ' + str(seen) + "\n"
        'stat -c %a "$(dirname "$key")" >> ' + str(seen) + "\n"
        'cat "$(dirname "$key")/known_hosts" >> ' + str(seen) + "\n"
        "echo 'due 2'\n"
    )
    (fake / "ssh").chmod(0o755)
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{fake}:{path}"
    try:
        answer = cert_renewal.read_over_ssh(HOST, "203.0.113.1", "PRIVATE-KEY-TEXT", "probe")
    finally:
        os.environ["PATH"] = path
    assert answer == "due 2"
    argv, key_mode, dir_mode, known = seen.read_text().splitlines()
    assert "PRIVATE-KEY-TEXT" not in argv
    assert argv.endswith("root@203.0.113.1 probe")
    assert "StrictHostKeyChecking=yes" in argv
    assert (key_mode, dir_mode) == ("600", "700")
    assert known == "203.0.113.1 ssh-ed25519 AAAAC3host"
    assert not Path(argv.split()[1]).parent.exists()  # removed with the key


def test_without_a_pinned_key_the_host_key_is_accepted_into_a_throwaway_file(tmp_path):
    argv = cert_renewal.ssh_argv(Host("d", "replica", "a", "b"), "198.51.100.2", tmp_path, "c")
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in argv
    assert "StrictHostKeyChecking=accept-new" in argv


# --- the program on Pulumi mocks -------------------------------------------------------------
def triggers(run) -> dict[str, list[str]]:
    return {r.name: r.inputs["triggers"] for r in run.of_type("command:remote:Command")}


def test_hosts_mode_reads_every_used_host_with_the_stack_key():
    probes = CertificateProbes()
    run_program(hosts_stack(count=3, replicas=1), probes=probes)  # db3: a spare
    asked = sorted((name, address) for name, address, _, _ in probes.asked)
    assert asked == [("db1", "192.0.2.1"), ("db2", "192.0.2.2")]  # public addresses
    assert {key for _, _, key, _ in probes.asked} == {SECRETS["sshPrivateKey"]}
    command = probes.asked[0][3]
    assert "/etc/postgresql/18/main/server.crt" in command
    assert "-checkend 2592000" in command


def test_a_due_certificate_changes_its_steps_triggers_and_a_renewed_one_restores_them():
    quiet = triggers(run_program(HOSTS))
    due = triggers(run_program(HOSTS, probes=CertificateProbes({"192.0.2.1": "due 0"})))
    assert due["replication-pg18-primary"][0] == quiet["replication-pg18-primary"][0] + "+renewal-1"
    # The replica and the status reports run after the primary: they run again too.
    assert due["replication-pg18-replica-db2"] != quiet["replication-pg18-replica-db2"]
    assert due["replication-pg18-status-db1"] != quiet["replication-pg18-status-db1"]
    renewed = triggers(run_program(HOSTS, probes=CertificateProbes({"192.0.2.1": "ok 1"})))
    assert renewed == due
    only_replica = triggers(run_program(HOSTS, probes=CertificateProbes({"192.0.2.2": "due 0"})))
    assert only_replica["replication-pg18-primary"] == quiet["replication-pg18-primary"]
    assert only_replica["replication-pg18-replica-db2"][0].endswith("+renewal-1")


def test_droplets_mode_reads_the_droplets_public_addresses():
    probes = CertificateProbes()
    run_program(DROPLETS, probes=probes)
    assert sorted(address for _, address, _, _ in probes.asked) == ["203.0.113.1", "203.0.113.2"]


# --- CA rotation -----------------------------------------------------------------------------
def certificates_in(pem: str) -> int:
    return pem.count("-----BEGIN CERTIFICATE-----")


def test_ca_rotation_hands_over_with_both_cas_trusted(host_files):
    cluster, ca = host_files
    tls.ensure_certificate(cluster, ADDRESS, ca, DEFAULTS)
    crt = cluster.confdir / "server.crt"
    first_ca = ca[0].read_text()
    assert tls.rotate_ca("none") == []
    assert tls.trusted_cas() == first_ca
    # prepare: a next CA beside the signing one, both trusted; the server certificate stays.
    assert tls.rotate_ca("prepare") == ["next certificate authority made"]
    assert tls.rotate_ca("prepare") == []
    next_ca = tls.ca_files("next")[0].read_text()
    assert tls.trusted_cas() == first_ca + next_ca
    assert tls.ensure_certificate(cluster, ADDRESS, ca, DEFAULTS) is False
    # switch: the next CA signs; the server certificate is issued again by it (not counted).
    assert tls.rotate_ca("switch") == ["switched to the next certificate authority"]
    assert tls.rotate_ca("switch") == []
    assert ca[0].read_text() == next_ca
    assert tls.trusted_cas() == next_ca + first_ca
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) == "issuer"
    assert tls.ensure_certificate(cluster, ADDRESS, ca, DEFAULTS) is True
    assert tls.certificate_problem(crt, ADDRESS, ca[0], 30) is None
    assert not (cluster.confdir / tls.RENEWALS_FILE).exists()
    # none: the old CA dropped.
    assert tls.rotate_ca("none") == ["previous certificate authority dropped"]
    assert tls.trusted_cas() == next_ca and certificates_in(next_ca) == 1
    assert stat.S_IMODE(os.stat(ca[1]).st_mode) == 0o600


def test_switch_without_a_prepared_ca_is_refused(host_files):
    with pytest.raises(tls.HostError, match="run with caRotation prepare first"):
        tls.rotate_ca("switch")


def test_the_program_and_the_host_know_the_same_stages():
    from mastodon_data.config import topology

    assert topology.CA_ROTATIONS == tls.CA_ROTATIONS


def test_an_unused_next_ca_is_removed_by_none(host_files):
    tls.rotate_ca("prepare")
    assert tls.rotate_ca("none") == ["unused next certificate authority removed"]
    assert not tls.ca_files("next")[0].exists() and not tls.ca_files("next")[1].exists()


def test_ca_rotation_setting_reaches_only_the_primary_step():
    config = {**hosts_stack(count=2, replicas=1), "caRotation": "prepare"}
    steps = plan.steps(parse_settings(config, set(SECRETS)).replication, parse_settings(
        config, set(SECRETS)).hosts)  # fmt: skip
    assert steps[0].params["ca_rotation"] == "prepare"
    assert "ca_rotation" not in steps[1].params


def test_a_bad_ca_rotation_names_the_stages():
    with pytest.raises(ConfigError) as error:
        parse_settings({**hosts_stack(count=2, replicas=1), "caRotation": "rotate"}, set(SECRETS))
    assert str(error.value) == (
        "mastodon-data:caRotation = 'rotate': not one of none, prepare, switch. "
        "Fix: pulumi config set mastodon-data:caRotation prepare"
    )


def test_hosts_mode_asks_each_host_once_before_the_components_exist(monkeypatch):
    started = []
    monkeypatch.setattr(
        cert_renewal, "start_early", lambda settings, real=cert_renewal.start_early: (
            real(settings), started.append(sorted(cert_renewal._EARLY)))
    )  # fmt: skip
    probes = CertificateProbes({"192.0.2.2": "due 4"})
    run = run_program(HOSTS, probes=probes)
    assert started == [[("db1", "192.0.2.1"), ("db2", "192.0.2.2")]]  # asked at once
    assert sorted(name for name, *_ in probes.asked) == ["db1", "db2"]  # once each
    assert cert_renewal._EARLY == {}  # every early answer went to its step
    assert triggers(run)["replication-pg18-replica-db2"][0].endswith("+renewal-5")
