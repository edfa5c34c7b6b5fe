"""Settings the existing droplets ignore, through the real engine and provider on a DigitalOcean
stand-in of this test's own (mlwd), one droplet: a preview of a new stack and one of an
unchanged stack say nothing; once sshKeyIds gains a key and the image changes, the preview
still changes nothing (the droplet ignores both, as making it anew would lose its data) but
warns, naming what happens and the setting that does apply (authorizedKeys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from standinkit import Droplets, standin_account

from lab.standin.service import StandInLab

pytestmark = [pytest.mark.engine, pytest.mark.lab]
LAB = StandInLab(
    prefix="mlwd",
    public_network="10.241.40.0/24",
    vpc_pool=("10.240.40.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-warn-do"),
)
LATER = "made later"  # in each such warning


def warnings(s: Droplets) -> tuple[int, list[str]]:
    """`pulumi preview --expect-no-changes`: its exit code and this program's warnings."""
    out = s.stack.preview("--json", "--expect-no-changes", check=False)
    diagnostics = json.loads(out)["diagnostics"] if out.strip() else []
    found = [d["message"].strip() for d in diagnostics if LATER in d["message"]]
    return s.stack.last.returncode, found


@pytest.fixture(scope="module")
def previews(tmp_path_factory):
    with standin_account(LAB) as (client, key_id):
        s = Droplets(LAB, client.url, key_id, tmp_path_factory.mktemp("warn"), "warn",
                     "10.240.40.0/24", 0, protectData=False)  # fmt: skip
        seen = {"key": str(key_id), "new": len(json.loads(s.stack.preview("--json"))["steps"])}
        seen["new warnings"] = warnings(s)[1]  # a new stack: every step a create
        s.apply()
        seen["same"] = warnings(s)
        # A preview calls no API: the new key id need not exist in the account.
        s.config.update(sshKeyIds=[seen["key"], "424242"], image="ubuntu-24-04-x64")
        s.stack.configure(s.config, s.secrets)
        seen["changed"] = warnings(s)
        yield seen


def test_no_warning_for_a_new_stack_nor_an_unchanged_one(previews):
    assert previews["new"] > 10  # the preview did run the program
    assert previews["new warnings"] == []
    assert previews["same"] == (0, [])


def test_a_key_and_an_image_the_droplet_ignores_are_named_with_what_applies(previews):
    code, found = previews["changed"]
    assert code == 0  # nothing changes
    assert [line.removeprefix("warning: ") for line in found] == [
        "sshKeyIds (added 424242) reach only droplets made later, as other keys would mean a "
        "new droplet without its data; these keep the keys they were made with: "
        "mastodon-db-warn-0. To let a key in on them, add its public key (the .pub line) to "
        "authorizedKeys.",
        "image ubuntu-24-04-x64 reaches only droplets made later, as another image would mean a "
        "new droplet without its data; these keep the system they were made from: "
        "mastodon-db-warn-0 (debian-12-x64). Upgrade their system on the droplets themselves.",
    ]
