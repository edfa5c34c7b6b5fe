"""Spaces and the CDN on the DigitalOcean stand-in, through the real engine and provider: the
project's media component (tests/lab/spaces_program) goes up; on the app side, Mastodon's way
(boto3 with the rendered S3_* variables: path style on S3_ENDPOINT, S3_REGION, the stack's key,
S3_PERMISSION) uploads over TLS, and the upload is read anonymously through
https://<S3_ALIAS_HOST>/ with verification on; a second bucket's key is refused on the first; a
refreshed preview shows no change; `destroy` stops at the non-empty bucket (the program sets no
force_destroy, as on DigitalOcean) and, once the operator has emptied it with the account's
full-access key, leaves nothing.

Lab `mlsp`: public network 10.241.60.0/24 (so Spaces on 10.241.60.1:443), VPC 10.240.60.0/24."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from standinkit import program_stack, standin_account

from lab.stack import ROOT
from lab.standin.service import StandInLab
from lab.standin.stack import PROVIDER_KEY, provider_spaces_key

LAB = StandInLab(
    prefix="mlsp",
    public_network="10.241.60.0/24",
    vpc_pool=("10.240.60.0/24",),
    state_dir=Path("/var/lib/mastodon-lab-spaces-test"),
)
pytestmark = [pytest.mark.engine, pytest.mark.lab]
STACK = "spt"
PROGRAM = Path(__file__).parent / "spaces_program" / "__main__.py"
BUCKETS = {"mediaBucket": "mlsp-media", "otherBucket": "mlsp-other"}
IMAGE = "media_attachments/files/110/original/cat.png"
# Run on the app side; the env (JSON) on stdin. Uploads as Mastodon's Paperclip does (path style
# on S3_ENDPOINT, its headers), then tries `action` and prints what S3 answered.
APP = """
import io, json, sys, urllib.request, urllib.error
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
env = json.load(sys.stdin)
action, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=env["S3_ENDPOINT"], region_name=env["S3_REGION"],
                  aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
try:
    if action == "put":
        s3.put_object(Bucket=bucket, Key=key, Body=b"PNG cat", ACL=env["S3_PERMISSION"],
                      ContentType="image/png",
                      CacheControl="public, max-age=315576000, immutable")
    elif action == "stream":  # a stream: sent aws-chunked with a checksum trailer
        s3.upload_fileobj(io.BytesIO(b"streamed"), bucket, key, ExtraArgs={"ACL": "private"})
    elif action == "get":
        print(json.dumps(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()))
    elif action == "list":
        print(json.dumps([o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]))
    elif action == "empty":
        keys = [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    elif action == "cdn":
        url = f"https://{env['S3_ALIAS_HOST']}/{key}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                print(json.dumps([r.status, r.read().decode(errors="replace"),
                                  r.headers["Content-Type"], r.headers["Cache-Control"]]))
        except urllib.error.HTTPError as err:
            print(json.dumps([err.code]))
    print(json.dumps("ok"))
except ClientError as err:
    print(json.dumps(err.response["Error"]["Code"]))
"""


def app(env: dict, action: str, bucket: str, key: str = "-") -> list:
    """The app side's answers (the lab's names resolve, its public CA is trusted)."""
    argv = LAB.hosts.app_command(sys.executable, "-c", APP, action, bucket, key)
    result = subprocess.run(argv, input=json.dumps(env), capture_output=True, text=True,
                            timeout=60, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_mastodon_uploads_to_spaces_and_media_is_served_by_the_cdn(tmp_path):
    with standin_account(LAB) as (client, _key):
        client.token = f"dop_v1_standin-{STACK}"
        stack = program_stack(LAB, client, STACK, tmp_path / "stack", PROGRAM, BUCKETS)
        stack.up()
        out = stack.outputs()
        media, other = out["media_env"], out["other_env"]
        assert (media["S3_ENDPOINT"], media["S3_HOSTNAME"], media["S3_ALIAS_HOST"]) == (
            "https://nyc3.digitaloceanspaces.com",
            "nyc3.digitaloceanspaces.com",
            "mlsp-media.nyc3.cdn.digitaloceanspaces.com",
        )
        assert (media["S3_BUCKET"], media["S3_REGION"], media["S3_PERMISSION"]) == (
            "mlsp-media", "nyc3", "public-read")  # fmt: skip

        # Mastodon's upload over TLS, then anyone's read through the CDN, verified.
        assert app(media, "put", "mlsp-media", IMAGE) == ["ok"]
        assert app(media, "stream", "mlsp-media", "private/streamed.txt") == ["ok"]
        assert app(media, "get", "mlsp-media", "private/streamed.txt") == ["streamed", "ok"]
        assert app(media, "cdn", "-", IMAGE) == [
            [200, "PNG cat", "image/png", "public, max-age=315576000, immutable"],
            "ok",
        ]
        assert app(media, "cdn", "-", "private/streamed.txt") == [[403], "ok"]
        # The other bucket's key: nothing on this bucket; its own bucket, yes.
        assert app(other, "put", "mlsp-media", "x.png") == ["AccessDenied"]
        assert app(other, "get", "mlsp-media", IMAGE) == ["AccessDenied"]
        assert app(other, "list", "mlsp-media") == ["AccessDenied"]
        assert app(other, "put", "mlsp-other", "x.png") == ["ok"]
        assert app(media, "list", "mlsp-media") == [[IMAGE, "private/streamed.txt"], "ok"]

        stack.preview("--refresh", "--expect-no-changes")

        # No force_destroy in the program: the bucket with media stops the destroy, as on DO.
        stack.pulumi("destroy", "--yes", "--skip-preview", "--suppress-progress", check=False)
        failed = stack.last.stdout + stack.last.stderr
        assert stack.last.returncode != 0 and "BucketNotEmpty" in failed, failed[-3000:]
        state = client.state()
        assert sorted(state["buckets"]) == ["mlsp-media", "mlsp-other"]
        # The destroy took the stack's keys first; the operator empties with the account's own.
        assert app(media, "list", "mlsp-media") == ["InvalidAccessKeyId"]
        key = provider_spaces_key(LAB, client)
        operator = {**media, "AWS_ACCESS_KEY_ID": key["access_key"],
                    "AWS_SECRET_ACCESS_KEY": key["secret_key"]}  # fmt: skip
        for bucket in ("mlsp-media", "mlsp-other"):
            assert app(operator, "empty", bucket) == ["ok"]
        stack.destroy()
        state = client.state()
        assert (state["buckets"], state["cdns"]) == ({}, {})
        assert [k["name"] for k in state["spaces_keys"].values()] == [PROVIDER_KEY]
        assert list((LAB.state_dir / "spaces").iterdir()) == []
        names = LAB.hosts.hosts_file.read_text()
        assert "10.241.60.1 nyc3.digitaloceanspaces.com" in names
        assert "mlsp-media" not in names and "mlsp-other" not in names
