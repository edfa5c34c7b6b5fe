"""Spaces' S3 side of the stand-in alone (no lab, no root): objects through boto3 as Mastodon
stores them, every request's Signature V4 (checked against AWS's own streaming example and
botocore's signer), the Spaces keys' grants, anonymous reads, BucketNotEmpty and the provider's
force_destroy path, and the CDN endpoint's answers."""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.error
import urllib.request
from datetime import UTC, datetime
from unittest import mock

import boto3
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from lab.standin.account import Account
from lab.standin.client import Client
from lab.standin.s3_common import S3Error
from lab.standin.s3_signature import authenticate
from lab.standin.server import serve

ENDPOINT = "http://nyc3.spaces.test"  # reached through the stand-in as a proxy, as the provider


@pytest.fixture
def spaces(tmp_path):
    account = Account(state_file=tmp_path / "state.json", log=lambda text: None)
    server = serve(account)
    api = Client(server.url)
    api.server = server

    def key(*grants):
        body = {"name": "k", "grants": [{"bucket": b, "permission": p} for b, p in grants]}
        made = api.call("POST", "/v2/spaces/keys", body)["key"]
        return made["access_key"], made["secret_key"]

    api.key = key
    api.s3 = lambda k, **kw: s3_client(server.url, k, **kw)
    yield api
    server.shutdown()
    server.server_close()


def s3_client(proxy: str, key: tuple[str, str], region: str = "nyc3"):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(proxies={"http": proxy}, s3={"addressing_style": "path"},
                      retries={"max_attempts": 1}),
    )  # fmt: skip


def code(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"]


def plain(api, method: str, url: str, headers: dict | None = None, body: bytes | None = None):
    """An unsigned request through the stand-in as proxy: (status, headers, body)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": api.url}))
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def media_bucket(api) -> tuple:
    full = api.key(("", "fullaccess"))
    api.s3(full).create_bucket(Bucket="media", ACL="private")
    return full


def test_objects_as_mastodon_stores_them(spaces, tmp_path):
    media_bucket(spaces)
    s3 = spaces.s3(spaces.key(("media", "readwrite")))
    put = s3.put_object(Bucket="media", Key="media_attachments/files/1/original/a.png",
                        Body=b"\x89PNG-1", ACL="public-read", ContentType="image/png",
                        CacheControl="public, max-age=315576000, immutable")  # fmt: skip
    assert put["ETag"] == '"' + hashlib.md5(b"\x89PNG-1").hexdigest() + '"'  # noqa: S324
    got = s3.get_object(Bucket="media", Key="media_attachments/files/1/original/a.png")
    assert got["Body"].read() == b"\x89PNG-1" and got["ContentType"] == "image/png"
    assert got["CacheControl"] == "public, max-age=315576000, immutable"
    assert got["ETag"] == put["ETag"] and got["ContentLength"] == 6
    head = s3.head_object(Bucket="media", Key="media_attachments/files/1/original/a.png")
    assert head["ContentLength"] == 6 and head["ETag"] == put["ETag"]
    acl = s3.get_object_acl(Bucket="media", Key="media_attachments/files/1/original/a.png")
    assert [g["Permission"] for g in acl["Grants"]] == ["FULL_CONTROL", "READ"]
    for n in range(2, 6):
        s3.put_object(Bucket="media", Key=f"media_attachments/files/{n}/x y+z.txt", Body=b"t")
    s3.put_object(Bucket="media", Key="accounts/avatars/1.png", Body=b"p")
    top = s3.list_objects_v2(Bucket="media", Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["accounts/", "media_attachments/"]
    assert top["KeyCount"] == 2 and "Contents" not in top
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket="media", Prefix="media_", PaginationConfig={"PageSize": 2})
    keys = [[o["Key"] for o in page.get("Contents", [])] for page in pages]
    assert keys == [
        ["media_attachments/files/1/original/a.png", "media_attachments/files/2/x y+z.txt"],
        ["media_attachments/files/3/x y+z.txt", "media_attachments/files/4/x y+z.txt"],
        ["media_attachments/files/5/x y+z.txt"],
    ]
    v1 = s3.list_objects(Bucket="media", Prefix="accounts/")
    assert [o["Key"] for o in v1["Contents"]] == ["accounts/avatars/1.png"]
    assert s3.delete_object(Bucket="media", Key="accounts/avatars/1.png")
    gone = s3.delete_objects(Bucket="media", Delete={"Objects": [
        {"Key": f"media_attachments/files/{n}/x y+z.txt"} for n in (2, 3)]})  # fmt: skip
    assert sorted(d["Key"] for d in gone["Deleted"]) == [
        "media_attachments/files/2/x y+z.txt", "media_attachments/files/3/x y+z.txt"]  # fmt: skip
    assert s3.list_objects_v2(Bucket="media")["KeyCount"] == 3
    assert code(lambda: s3.get_object(Bucket="media", Key="accounts/avatars/1.png")) == "NoSuchKey"
    stored = tmp_path / "spaces" / "media"
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o700
    assert {stat.S_IMODE(os.stat(f).st_mode) for f in stored.iterdir()} == {0o600}
    assert stat.S_IMODE(os.stat(tmp_path / "spaces").st_mode) == 0o700


def test_grants_decide_what_a_key_may_do(spaces):
    full = media_bucket(spaces)
    spaces.s3(full).create_bucket(Bucket="other")
    writer = spaces.s3(spaces.key(("media", "readwrite")))
    reader = spaces.s3(spaces.key(("media", "read")))
    stranger = spaces.s3(spaces.key(("other", "readwrite")))
    nothing = spaces.s3(spaces.key())
    writer.put_object(Bucket="media", Key="a", Body=b"1")
    assert reader.get_object(Bucket="media", Key="a")["Body"].read() == b"1"
    assert reader.list_objects_v2(Bucket="media")["KeyCount"] == 1
    assert code(lambda: reader.put_object(Bucket="media", Key="b", Body=b"2")) == "AccessDenied"
    assert code(lambda: reader.delete_object(Bucket="media", Key="a")) == "AccessDenied"
    for client in (stranger, nothing):
        assert code(lambda c=client: c.get_object(Bucket="media", Key="a")) == "AccessDenied"
        assert code(lambda c=client: c.put_object(Bucket="media", Key="a", Body=b"")) == (
            "AccessDenied"
        )
        assert code(lambda c=client: c.list_objects_v2(Bucket="media")) == "AccessDenied"
    # bucket settings and buckets themselves: full access only
    assert code(lambda: writer.create_bucket(Bucket="mine")) == "AccessDenied"
    assert code(lambda: writer.delete_bucket(Bucket="media")) == "AccessDenied"
    assert code(lambda: writer.put_bucket_acl(Bucket="media", ACL="public-read")) == (
        "AccessDenied"
    )
    assert stranger.put_object(Bucket="other", Key="a", Body=b"1")["ETag"]


def test_signatures_are_checked(spaces):
    media_bucket(spaces)
    access, secret = spaces.key(("media", "readwrite"))
    spaces.s3((access, secret)).put_object(Bucket="media", Key="a", Body=b"1")
    assert code(lambda: spaces.s3((access, secret + "x")).get_object(Bucket="media", Key="a")) == (
        "SignatureDoesNotMatch"
    )
    assert code(lambda: spaces.s3(("DOUNKNOWN", secret)).get_object(Bucket="media", Key="a")) == (
        "InvalidAccessKeyId"
    )
    signed = sign("PUT", f"{ENDPOINT}/media/b", b"signed body", (access, secret))
    assert plain(spaces, "PUT", f"{ENDPOINT}/media/b", signed, b"signed body")[0] == 200
    status, _, text = plain(spaces, "PUT", f"{ENDPOINT}/media/b", signed, b"other body")
    assert status == 400 and b"XAmzContentSHA256Mismatch" in text
    moved = sign("PUT", f"{ENDPOINT}/media/c", b"x", (access, secret))
    status, _, text = plain(spaces, "PUT", f"{ENDPOINT}/media/d", moved, b"x")
    assert status == 403 and b"SignatureDoesNotMatch" in text
    old = sign("GET", f"{ENDPOINT}/media/a", b"", (access, secret), when="20200101T000000Z")
    status, _, text = plain(spaces, "GET", f"{ENDPOINT}/media/a", old)
    assert status == 403 and b"RequestTimeTooSkewed" in text
    url = spaces.s3((access, secret)).generate_presigned_url(
        "get_object", Params={"Bucket": "media", "Key": "a"}, ExpiresIn=60
    )
    assert plain(spaces, "GET", url)[2] == b"1"
    assert plain(spaces, "GET", url.replace("media/a", "media/b"))[0] == 403


def sign(method, url, body, key, when: str | None = None) -> dict:
    """botocore's own S3 signature of a request (at `when`, else now), as a dict of headers."""
    request = AWSRequest(method=method, url=url, data=body)
    request.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    signer = S3SigV4Auth(Credentials(*key), "s3", "nyc3")
    if when:
        moment = datetime.strptime(when, "%Y%m%dT%H%M%SZ")
        with mock.patch("botocore.auth.datetime.datetime") as clock:
            clock.utcnow.return_value = moment
            clock.now.return_value = moment
            signer.add_auth(request)
    else:
        signer.add_auth(request)
    assert request.headers["X-Amz-Date"] == (when or request.headers["X-Amz-Date"])
    return dict(request.headers.items())


def test_aws_streaming_example_verifies_chunk_by_chunk():
    """AWS's documented example of a signed aws-chunked upload (66560 bytes in 3 chunks)."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    signatures = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                  "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                  "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]  # fmt: skip
    chunks = [b"a" * 65536, b"a" * 1024, b""]
    body = b"".join(f"{len(c):x};chunk-signature={s}\r\n".encode() + c + b"\r\n"
                    for c, s in zip(chunks, signatures, strict=True))  # fmt: skip
    headers = {
        "content-encoding": "aws-chunked", "content-length": "66824", "host": "s3.amazonaws.com",
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "x-amz-date": "20130524T000000Z", "x-amz-decoded-content-length": "66560",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/"
        "s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;"
        "x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature="
        "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
    }  # fmt: skip
    now = datetime(2013, 5, 24, 0, 5, tzinfo=UTC)
    path = "/examplebucket/chunkObject.txt"
    signed = authenticate("PUT", path, "", headers, body, lambda key: secret, now=now)
    assert (signed.access_key, signed.payload) == ("AKIAIOSFODNN7EXAMPLE", b"a" * 66560)
    tampered = body.replace(b"a" * 1024, b"b" * 1024)
    with pytest.raises(S3Error) as caught:
        authenticate("PUT", path, "", headers, tampered, lambda key: secret, now=now)
    assert caught.value.code == "SignatureDoesNotMatch"


def test_anonymous_reads_only_public_read(spaces):
    full = media_bucket(spaces)
    s3 = spaces.s3(full)
    s3.put_object(Bucket="media", Key="public.png", Body=b"pub", ACL="public-read",
                  ContentType="image/png")  # fmt: skip
    s3.put_object(Bucket="media", Key="private.png", Body=b"priv")
    status, headers, body = plain(spaces, "GET", f"{ENDPOINT}/media/public.png")
    assert (status, headers["Content-Type"], body) == (200, "image/png", b"pub")
    assert plain(spaces, "GET", f"{ENDPOINT}/media/private.png")[0] == 403
    assert plain(spaces, "GET", f"{ENDPOINT}/media/missing.png")[0] == 403  # existence hidden
    assert plain(spaces, "PUT", f"{ENDPOINT}/media/new.png", body=b"x")[0] == 403
    assert plain(spaces, "DELETE", f"{ENDPOINT}/media/public.png")[0] == 403
    assert plain(spaces, "GET", f"{ENDPOINT}/media")[0] == 403  # the listing is private
    s3.put_bucket_acl(Bucket="media", ACL="public-read")
    status, _, listing = plain(spaces, "GET", f"{ENDPOINT}/media")
    assert status == 200 and b"<Key>private.png</Key>" in listing
    assert plain(spaces, "GET", f"{ENDPOINT}/media/private.png")[0] == 403
    s3.put_object_acl(Bucket="media", Key="private.png", ACL="public-read")
    assert plain(spaces, "GET", f"{ENDPOINT}/media/private.png")[2] == b"priv"


def test_a_bucket_with_objects_is_not_deleted_unless_emptied_as_force_destroy_does(spaces):
    s3 = spaces.s3(media_bucket(spaces))
    for key in ("a", "b/c"):
        s3.put_object(Bucket="media", Key=key, Body=b"1")
    assert code(lambda: s3.delete_bucket(Bucket="media")) == "BucketNotEmpty"
    assert s3.head_bucket(Bucket="media")["ResponseMetadata"]["HTTPStatusCode"] == 200
    # the provider's force_destroy: ListObjectVersions, DeleteObjects, DeleteBucket again
    versions = s3.list_object_versions(Bucket="media")["Versions"]
    assert [(v["Key"], v["VersionId"]) for v in versions] == [("a", "null"), ("b/c", "null")]
    s3.delete_objects(Bucket="media", Delete={"Objects": [
        {"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]})  # fmt: skip
    s3.delete_bucket(Bucket="media")
    assert code(lambda: s3.head_bucket(Bucket="media")) == "404"
    assert spaces.server.account.state["buckets"] == {}


def test_cdn_serves_public_read_objects_with_cache_control(spaces):
    s3 = spaces.s3(media_bucket(spaces))
    origin = "media.nyc3.digitaloceanspaces.com"
    cdn = spaces.call("POST", "/v2/cdn/endpoints", {"origin": origin, "ttl": 600})["endpoint"]
    base = f"http://{cdn['endpoint']}"
    assert cdn["endpoint"] == "media.nyc3.cdn.digitaloceanspaces.com"
    s3.put_object(
        Bucket="media",
        Key="a.png",
        Body=b"A",
        ACL="public-read",
        ContentType="image/png",
        CacheControl="public, max-age=315576000, immutable",
    )
    s3.put_object(Bucket="media", Key="b.txt", Body=b"B", ACL="public-read")
    s3.put_object(Bucket="media", Key="c.txt", Body=b"C")
    status, headers, body = plain(spaces, "GET", f"{base}/a.png")
    assert (status, body, headers["Cache-Control"]) == (
        200, b"A", "public, max-age=315576000, immutable")  # fmt: skip
    status, headers, body = plain(spaces, "GET", f"{base}/b.txt")
    assert (status, body, headers["Cache-Control"]) == (200, b"B", "max-age=600")
    assert plain(spaces, "HEAD", f"{base}/b.txt")[1]["Content-Length"] == "1"
    status, _, body = plain(spaces, "GET", f"{base}/c.txt")
    assert status == 403 and b"AccessDenied" in body
    assert plain(spaces, "PUT", f"{base}/d.txt", body=b"x")[0] == 501
    assert plain(spaces, "GET", "http://other.nyc3.cdn.digitaloceanspaces.com/a.png")[0] == 404
