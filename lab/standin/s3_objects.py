"""Spaces objects on disk, and the S3 listings of them. Each object of bucket B is two files in
`<root>/B/`, named by the SHA-256 of its key: `.data` (its bytes) and `.json` (what S3 keeps
about it: key, size, ETag, time, content type, ACL, the headers it serves back, user metadata).
Directories 0700, files 0600 (they are the account's data)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

from lab.standin.resources.base import now_iso
from lab.standin.s3_common import NS, S3Error, http_date, xml

# Headers an object keeps from its PUT and serves back on GET and HEAD.
KEPT_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language",
                "expires")  # fmt: skip
MAX_KEYS = 1000


def private_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)
    tmp.replace(path)


class ObjectStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, bucket: str, key: str, suffix: str) -> Path:
        return self.root / bucket / (hashlib.sha256(key.encode()).hexdigest() + suffix)

    def put(self, bucket: str, key: str, data: bytes, acl: str, headers: dict) -> dict:
        """Stores the object (replacing any); its record."""
        meta = {
            "key": key,
            "size": len(data),
            "etag": f'"{hashlib.md5(data).hexdigest()}"',  # noqa: S324 - S3's ETag is MD5
            "last_modified": now_iso(),
            "content_type": headers.get("content-type") or "binary/octet-stream",
            "acl": acl,
            "headers": {h: headers[h] for h in KEPT_HEADERS if h in headers},
            "metadata": {h: v for h, v in headers.items() if h.startswith("x-amz-meta-")},
        }
        directory = self.root / bucket
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        private_write(self._path(bucket, key, ".data"), data)
        private_write(self._path(bucket, key, ".json"), json.dumps(meta).encode())
        return meta

    def meta(self, bucket: str, key: str) -> dict | None:
        path = self._path(bucket, key, ".json")
        return json.loads(path.read_text()) if path.exists() else None

    def data(self, bucket: str, key: str) -> bytes:
        return self._path(bucket, key, ".data").read_bytes()

    def set_acl(self, bucket: str, key: str, acl: str) -> None:
        meta = self.meta(bucket, key)
        meta["acl"] = acl
        private_write(self._path(bucket, key, ".json"), json.dumps(meta).encode())

    def delete(self, bucket: str, key: str) -> None:
        self._path(bucket, key, ".json").unlink(missing_ok=True)
        self._path(bucket, key, ".data").unlink(missing_ok=True)

    def objects(self, bucket: str) -> list[dict]:
        """Every object's record, by key."""
        directory = self.root / bucket
        if not directory.exists():
            return []
        found = [json.loads(p.read_text()) for p in directory.glob("*.json")]
        return sorted(found, key=lambda meta: meta["key"])

    def remove_bucket(self, bucket: str) -> None:
        shutil.rmtree(self.root / bucket, ignore_errors=True)


def object_headers(meta: dict) -> dict:
    """What GET and HEAD of an object answer with (besides its body)."""
    return {
        "Content-Type": meta["content_type"],
        "ETag": meta["etag"],
        "Last-Modified": http_date(meta["last_modified"]),
        "Accept-Ranges": "bytes",
        **{name.title(): value for name, value in meta["headers"].items()},
        **meta["metadata"],
    }


def listing(bucket: dict, objects: list[dict], query: dict) -> bytes:
    """ListObjects (v1) or, with `list-type=2`, ListObjectsV2: prefix, delimiter, paging."""
    v2 = query.get("list-type") == "2"
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    max_keys = max(0, min(MAX_KEYS, int(query.get("max-keys") or MAX_KEYS)))
    if v2:
        token = query.get("continuation-token")
        after = decode_token(token) if token else query.get("start-after", "")
    else:
        after = query.get("marker", "")
    encode = (lambda text: quote(text, safe="/")) if query.get("encoding-type") == "url" else str
    contents, prefixes, truncated, last = [], [], False, ""
    for meta in objects:
        key = meta["key"]
        if not key.startswith(prefix) or key <= after:
            continue
        rest = key[len(prefix) :]
        group = (
            prefix + rest.split(delimiter)[0] + delimiter if delimiter in rest and delimiter else ""
        )
        if group and group in prefixes:
            continue
        if len(contents) + len(prefixes) == max_keys:
            truncated = True
            break
        if group:
            prefixes.append(group)
            last = group
        else:
            contents.append(meta)
            last = key
    entries = "".join(
        f"<Contents><Key>{escape(encode(m['key']))}</Key><LastModified>"
        f"{m['last_modified'].replace('Z', '.000Z')}</LastModified><ETag>{escape(m['etag'])}"
        f"</ETag><Size>{m['size']}</Size><StorageClass>STANDARD</StorageClass></Contents>"
        for m in contents
    )
    entries += "".join(
        f"<CommonPrefixes><Prefix>{escape(encode(p))}</Prefix></CommonPrefixes>" for p in prefixes
    )
    head = f"<Name>{bucket['name']}</Name><Prefix>{escape(encode(prefix))}</Prefix>"
    head += f"<MaxKeys>{max_keys}</MaxKeys><IsTruncated>{str(truncated).lower()}</IsTruncated>"
    if delimiter:
        head += f"<Delimiter>{escape(encode(delimiter))}</Delimiter>"
    if query.get("encoding-type") == "url":
        head += "<EncodingType>url</EncodingType>"
    if v2:
        head += f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount>"
        if truncated:
            head += f"<NextContinuationToken>{encode_token(last)}</NextContinuationToken>"
        if "continuation-token" in query:
            head += f"<ContinuationToken>{escape(query['continuation-token'])}</ContinuationToken>"
        if "start-after" in query:
            head += f"<StartAfter>{escape(encode(query['start-after']))}</StartAfter>"
    else:
        head += f"<Marker>{escape(encode(after))}</Marker>"
        if truncated and delimiter:
            head += f"<NextMarker>{escape(encode(last))}</NextMarker>"
    return xml(f'<ListBucketResult xmlns="{NS}">{head}{entries}</ListBucketResult>')


def versions_listing(bucket: dict, objects: list[dict], query: dict) -> bytes:
    """ListObjectVersions of an unversioned bucket (each object once, version "null"): what the
    provider's force_destroy reads before DeleteObjects."""
    prefix = query.get("prefix", "")
    chosen = [m for m in objects if m["key"].startswith(prefix)][:MAX_KEYS]
    entries = "".join(
        f"<Version><Key>{escape(m['key'])}</Key><VersionId>null</VersionId>"
        f"<IsLatest>true</IsLatest><LastModified>{m['last_modified'].replace('Z', '.000Z')}"
        f"</LastModified><ETag>{escape(m['etag'])}</ETag><Size>{m['size']}</Size>"
        "<StorageClass>STANDARD</StorageClass></Version>"
        for m in chosen
    )
    truncated = str(len(chosen) < len([m for m in objects if m["key"].startswith(prefix)]))
    return xml(
        f'<ListVersionsResult xmlns="{NS}"><Name>{bucket["name"]}</Name>'
        f"<Prefix>{escape(prefix)}</Prefix><MaxKeys>{MAX_KEYS}</MaxKeys>"
        f"<IsTruncated>{truncated.lower()}</IsTruncated>{entries}</ListVersionsResult>"
    )


def encode_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode()


def decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        raise S3Error(400, "InvalidArgument", "The continuation token is incorrect") from None
