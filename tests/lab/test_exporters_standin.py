"""The program ships the upstream exporters to a droplet, through the real engine and provider on
a DigitalOcean stand-in of this test's own (mlsx), one droplet with monitoringSources: a preview
with exportersHome on a directory without the builds stops, naming the setting and the fix;
`up` copies the builds `make exporters` made (CopyToRemote) into the droplet's staging directory
and the exporters step installs them into its /usr/local/bin (0755 root, the same checksum),
where the exporters run and answer, to monitoringSources only (the stand-in's cloud firewall drops
another address of the VPC); this machine's own /usr/local/bin is untouched (a lab
host's is its own, lab/host_files.py); a second preview is quiet; a build with new content
re-runs its copy and the exporters step only (no droplet, volume or other step), and lands.

Lab `mlsx`: public network 10.241.140.0/24, VPC 10.240.140.0/24."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from pathlib import Path

import pytest
from standinkit import Droplets, standin_account, tcp

from lab.standin.service import StandInLab
from mastodon_data.monitoring import builds
from mastodon_data.monitoring.targets import EXPORTER_PORTS

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlsx",
    public_network="10.241.140.0/24",
    vpc_pool=("10.240.140.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-exporters-do"),
)
BUILT = ("pgbouncer_exporter", "ssl_exporter")
NEW_CONTENT = b"\0mlsx: a new build"  # appended: a Go binary still runs, its checksum differs
# The exporters' /metrics on the droplet's private address, read on the droplet.
SCRAPE = "curl -sS --max-time 10 http://{}:{}/metrics"
PROMETHEUS = "10.240.140.1/32"  # the operator's address in the VPC: monitoringSources
OUTSIDER_VPC = "10.240.140.200"  # in the stack's VPC, outside monitoringSources


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def changes(preview: str) -> dict[str, str]:
    """The preview's operations other than `same`, by resource name."""
    steps = json.loads(preview)["steps"]
    return {s["urn"].rpartition("::")[2]: s["op"] for s in steps if s["op"] != "same"}


def on_droplet(s: Droplets, address: str) -> dict[str, str]:
    """Each build's checksum, mode and owner in the droplet's /usr/local/bin, and its staged
    copy's checksum."""
    found = {}
    for name in BUILT:
        installed, staged = f"/usr/local/bin/{name}", f"{builds.STAGING_DIR}/{name}"
        found[name] = s.ssh(
            address, f"sha256sum {installed} {staged} | cut -d' ' -f1 | tr '\\n' ' '; "
            f"stat -c %a:%U {installed}"
        )  # fmt: skip
    return found


def exporter_reach(s: Droplets, vpc_id: str, private: str) -> dict[str, str]:
    """Each exporter port of the droplet's private address from the operator (the one
    monitoringSources address) and from another address in the same VPC."""
    vpc = s.client.state()["vpcs"][vpc_id]
    outsider = LAB.hosts.add_probe(1, f"vpc{vpc['index']}", OUTSIDER_VPC, 24)
    return {
        f"{who} -> {job}": tcp(private, port, netns)
        for job, port in EXPORTER_PORTS.items()
        for who, netns in (("operator", None), ("vpc outsider", outsider))
    }


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("shipexp")
    home = workdir / "exporters"  # this test's exportersHome: a copy of `make exporters`'s
    for name in BUILT:
        source = builds.binary_path(builds.home(""), name)
        if not source.is_file():
            pytest.fail(f"{source} is missing: run `make exporters` (make test does)")
        builds.binary_path(home, name).parent.mkdir(parents=True)
        shutil.copy2(source, builds.binary_path(home, name))
    with standin_account(LAB) as (client, key_id):
        s = Droplets(LAB, client.url, key_id, workdir, "shipexp", "10.240.140.0/24", 0,
                     protectData=False, monitoringSources=[PROMETHEUS],
                     exportersHome=str(workdir / "empty"))  # fmt: skip
        s.secrets["monitorPassword"] = secrets.token_urlsafe(24)
        s.stack.configure(s.config, s.secrets)
        refused = s.stack.preview(check=False)
        seen = {"refused": (s.stack.last.returncode, refused + s.stack.last.stderr)}
        first = s.apply(exportersHome=str(home))
        primary = first["outputs"]["primary"]
        address, private = primary["public_address"], primary["private_address"]
        seen["first"] = {"seconds": first["seconds"], "droplet": on_droplet(s, address)}
        seen["metrics"] = {
            job: s.ssh(address, SCRAPE.format(private, port))
            for job, port in (("pgbouncer", 9127), ("ssl", 9219))
        }
        seen["reach"] = exporter_reach(s, first["outputs"]["vpc_id"], private)
        quiet = s.stack.preview("--expect-no-changes", check=False)
        seen["quiet"] = (s.stack.last.returncode, quiet + s.stack.last.stderr)
        with open(builds.binary_path(home, "pgbouncer_exporter"), "ab") as binary:
            binary.write(NEW_CONTENT)
        seen["new_preview"] = changes(s.stack.preview("--json"))
        s.stack.up()
        seen["new"] = on_droplet(s, address)
        seen["new_metrics"] = s.ssh(address, SCRAPE.format(private, 9127))
        seen["expected"] = {name: sha256(builds.binary_path(home, name)) for name in BUILT}
        # This machine's own (another test may have put a build there): never the new one.
        seen["machine"] = {name: sha256(Path("/usr/local/bin", name)) for name in BUILT
                           if Path("/usr/local/bin", name).is_file()}  # fmt: skip
        yield seen


def test_a_missing_build_stops_the_preview_with_the_setting_and_the_fix(shipped):
    code, out = shipped["refused"]
    assert code != 0
    assert "mastodon-data:exportersHome = '" in out, out[-3000:]
    assert "no pgbouncer_exporter v0.12.1 nor ssl_exporter v2.4.1 built there" in out
    assert "Fix: make exporters" in out


def test_the_droplet_runs_the_builds_the_program_shipped(shipped):
    first, expected = shipped["first"]["droplet"], shipped["expected"]
    original = sha256(builds.binary_path(builds.home(""), "pgbouncer_exporter"))
    assert first["pgbouncer_exporter"] == f"{original} {original} 755:root"
    ssl = expected["ssl_exporter"]
    assert first["ssl_exporter"] == f"{ssl} {ssl} 755:root"
    assert "\npgbouncer_up 1\n" in shipped["metrics"]["pgbouncer"]
    assert 'version="2.4.1"} 1' in shipped["metrics"]["ssl"]


def test_the_exporters_answer_only_monitoring_sources(shipped):
    assert shipped["reach"] == {
        **{f"operator -> {job}": "open" for job in EXPORTER_PORTS},
        **{f"vpc outsider -> {job}": "timeout" for job in EXPORTER_PORTS},  # dropped
    }


def test_this_machines_own_usr_local_bin_is_untouched(shipped):
    assert shipped["expected"]["pgbouncer_exporter"] not in shipped["machine"].values()


def test_a_second_preview_changes_nothing(shipped):
    code, out = shipped["quiet"]
    assert code == 0, out[-3000:]


def test_a_new_build_reruns_its_copy_and_the_exporters_step_only(shipped):
    assert shipped["new_preview"] == {
        "replication-pg15-exporters-db-0-pgbouncer_exporter": "update",  # copied again
        "replication-pg15-exporters-db-0": "replace",  # its trigger: run again
    }
    new = shipped["expected"]["pgbouncer_exporter"]
    assert shipped["new"]["pgbouncer_exporter"] == f"{new} {new} 755:root"
    assert "\npgbouncer_up 1\n" in shipped["new_metrics"]
