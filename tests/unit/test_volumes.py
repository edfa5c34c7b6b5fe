"""Data on volumes, on mocks: each database droplet's DigitalOcean Volume and its attachment,
the volume step before PostgreSQL's on every host, hosts mode's dataDevice, and the settings."""

from __future__ import annotations

import json

import pulumi
import pulumi_digitalocean as do
import pytest
from program_harness import run_program
from pulumi_command import remote

from mastodon_data import plan
from mastodon_data.config import ConfigError, parse_settings
from mastodon_data.naming import data_volume_name, volume_device
from tests.fixtures import DROPLETS, SECRETS, hosts_stack


class Recorder:
    """The options each resource of a type was registered with (mocks do not see them)."""

    def __init__(self, monkeypatch, cls):
        self.options: dict[str, pulumi.ResourceOptions] = {}
        original = cls.__init__

        def init(resource, name, *args, opts=None, **kwargs):
            self.options[name] = opts
            original(resource, name, *args, opts=opts, **kwargs)

        monkeypatch.setattr(cls, "__init__", init)


@pytest.fixture()
def recorded(monkeypatch):
    attachments = Recorder(monkeypatch, do.VolumeAttachment)
    commands = Recorder(monkeypatch, remote.Command)
    run = run_program({**DROPLETS, "replicaCount": 2, "dataVolumeSize": 50})
    return run, attachments.options, commands.options


def test_every_database_droplet_gets_an_unformatted_volume_named_after_it(recorded):
    run, _, _ = recorded
    droplets = {d.name: d for d in run.of_type("/droplet:Droplet")}
    volumes = {v.name: v for v in run.of_type("/volume:Volume")}
    assert sorted(volumes) == ["db-pg18-0-data", "db-pg18-1-data", "db-pg18-2-data"]
    for label in ("0", "1", "2"):
        droplet, volume = droplets[f"db-pg18-{label}"], volumes[f"db-pg18-{label}-data"]
        assert droplet.inputs["name"] == f"mastodon-db-unit-{label}"
        assert volume.inputs["name"] == f"mastodon-db-unit-{label}-data"
        assert volume.inputs["size"] == 50
        assert volume.inputs["region"] == "nyc3"
        # DigitalOcean would format it; the volume step formats only a blank device. And no
        # field whose change replaces a volume but its name, region and size.
        assert set(volume.inputs) == {"name", "region", "size"}


def test_attachments_join_each_volume_to_its_droplet_detaching_first(recorded):
    run, options, _ = recorded
    attachments = {a.name: a for a in run.of_type("/volumeAttachment:VolumeAttachment")}
    assert attachments["db-pg18-0-data-attachment"].inputs == {
        "dropletId": 1001,
        "volumeId": "db-pg18-0-data-id",
    }
    assert attachments["db-pg18-2-data-attachment"].inputs["dropletId"] == 1003
    # A volume has one droplet at a time: a replaced droplet's attachment goes first.
    assert all(options[name].delete_before_replace for name in attachments)


def test_volume_step_runs_first_on_every_host_with_the_stable_device(recorded):
    run, _, options = recorded
    commands = {c.name.removeprefix("replication-pg18-"): c for c in run.of_type("remote:Command")}
    for label in ("0", "1", "2"):
        step = commands[f"volume-db-{label}"]
        stdin = json.loads(step.inputs["stdin"])
        assert stdin["run"] == "volume.py"
        assert sorted(stdin["files"]) == ["common.py", "volume.py"]
        assert stdin["params"] == {
            "data_device": f"/dev/disk/by-id/scsi-0DO_Volume_mastodon-db-unit-{label}-data"
        }  # its size (50) only in the trigger: the script reads the device's own
        assert step.inputs.get("delete") is None  # droplets' steps delete nothing
    after = {n: [d._name for d in options[n].depends_on] for n in options}
    assert after["replication-pg18-primary"] == ["replication-pg18-volume-db-0"]
    assert after["replication-pg18-replica-db-1"] == [
        "replication-pg18-primary",
        "replication-pg18-volume-db-1",
    ]
    assert after["replication-pg18-volume-db-0"] == []


def test_a_grown_volume_reruns_only_its_volume_step_and_reports():
    hosts = [
        plan.Host(
            "primary", "primary", "p", "10.0.0.2", data_device="/dev/x", data_volume_size=size
        )
        for size in (20, 40)
    ]
    replication = parse_settings({**DROPLETS}, set(SECRETS)).replication
    small, big = (plan.steps(replication, [h]) for h in hosts)

    def trigger(step: plan.Step) -> str:
        return step.trigger(step.params, step.trigger_inputs)

    changed = [a.name for a, b in zip(small, big, strict=True) if trigger(a) != trigger(b)]
    assert changed == ["volume-primary"]
    primary = next(s for s in big if s.name == "primary")
    # Ordered after the volume step, but not re-run by it (its triggers do not include it).
    assert primary.requires == ("volume-primary",) and primary.after == ()
    status = next(s for s in big if s.name == "status-primary")
    assert status.after == ("volume-primary", "primary", "slots")


def test_hosts_mode_mounts_only_the_hosts_that_name_a_data_device():
    config = hosts_stack(count=3, replicas=2)
    config["hosts"][1]["dataDevice"] = "/dev/disk/by-id/scsi-0QEMU_disk-db2"
    run = run_program(config)
    commands = {c.name for c in run.of_type("remote:Command")}
    assert "replication-pg18-volume-db2" in commands
    assert {"replication-pg18-volume-db1", "replication-pg18-volume-db3"}.isdisjoint(commands)
    step = run.one("remote:Command", "replication-pg18-volume-db2")
    assert json.loads(step.inputs["stdin"])["params"] == {
        "data_device": "/dev/disk/by-id/scsi-0QEMU_disk-db2"
    }
    assert "left in place" in step.inputs["delete"]  # an existing host keeps its data
    assert not run.of_type("/volume:Volume")


def test_volume_names_follow_the_droplet_name_through_one_function():
    assert data_volume_name("mastodon-db-prod-db-0") == "mastodon-db-prod-db-0-data"
    assert data_volume_name("Mastodon_DB--x" + "y" * 80)[-1] != "-"
    assert len(data_volume_name("a" * 100)) <= 63
    assert volume_device("v-data") == "/dev/disk/by-id/scsi-0DO_Volume_v-data"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"dataVolumeSize": 0},
            "mastodon-data:dataVolumeSize = 0: not an integer from 1 to 16384. "
            "Fix: pulumi config set mastodon-data:dataVolumeSize 20",
        ),
        (
            {"dataVolumeSize": "big"},
            "mastodon-data:dataVolumeSize = 'big': not an integer from 1 to 16384. "
            "Fix: pulumi config set mastodon-data:dataVolumeSize 20",
        ),
    ],
)
def test_volume_size_is_checked(change, message):
    with pytest.raises(ConfigError) as caught:
        parse_settings({**DROPLETS, **change}, set(SECRETS))
    assert str(caught.value) == message


def test_volume_size_is_refused_outside_droplets_mode():
    with pytest.raises(ConfigError) as caught:
        parse_settings({**hosts_stack(), "dataVolumeSize": 40}, set(SECRETS))
    assert str(caught.value) == (
        "mastodon-data:dataVolumeSize = 40: droplets mode only (hosts mode: name each host's "
        "disk as its dataDevice). Fix: pulumi config rm mastodon-data:dataVolumeSize && "
        "pulumi config set --path 'mastodon-data:hosts[0].dataDevice' /dev/disk/by-id/<id>"
    )


@pytest.mark.parametrize("device", ["sdb", "/dev/../etc/passwd", "/dev/sd b", 7])
def test_a_bad_data_device_is_refused(device):
    config = hosts_stack()
    config["hosts"][0]["dataDevice"] = device
    with pytest.raises(ConfigError) as caught:
        parse_settings(config, set(SECRETS))
    assert str(caught.value) == (
        f"mastodon-data:hosts[0].dataDevice = {device!r}: not a block device path under /dev "
        "(a stable one: /dev/disk/by-id/...). Fix: pulumi config set --path "
        "'mastodon-data:hosts[0].dataDevice' /dev/disk/by-id/<id> (names: ls -l /dev/disk/by-id), "
        "or pulumi config rm --path 'mastodon-data:hosts[0].dataDevice'"
    )


def test_data_device_is_read_per_host():
    config = hosts_stack()
    config["hosts"][1]["dataDevice"] = "/dev/disk/by-id/nvme-disk_1"
    settings = parse_settings(config, set(SECRETS))
    assert [h.data_device for h in settings.hosts] == [None, "/dev/disk/by-id/nvme-disk_1"]
    assert settings.hosts[1].data_volume_size is None


def test_the_boot_unit_starts_the_clusters_after_the_volume_is_mounted():
    import volume

    unit = volume.BOOT_UNIT_TEXT.splitlines()
    assert "RequiresMountsFor=/etc/postgresql /var/lib/postgresql" in unit
    assert "WantedBy=multi-user.target" in unit
    # systemd expands $name in ExecStart itself: the shell's variables must come as $$name.
    escaped = volume.START_AUTO_CLUSTERS.replace("$", "$$")
    assert f"ExecStart=/bin/sh -c '{escaped}'" in unit
    assert '"postgresql@$$v-$$c.service"' in escaped
    assert "'" not in volume.START_AUTO_CLUSTERS  # it sits inside the single quotes
