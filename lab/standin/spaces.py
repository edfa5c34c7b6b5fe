"""Spaces over S3: buckets, objects and the CDN, as three kinds of host reach them.

- `<region>.digitaloceanspaces.com` (path style, as Mastodon's Paperclip sends with
  S3_ENDPOINT) and `<bucket>.<region>.digitaloceanspaces.com` (virtual host): the stand-in
  serves these over TLS on its Spaces address (lab/standin/lab_spaces.py);
- `<bucket>.<region>.spaces.test`: the provider's S3 calls in the lab
  (`SPACES_ENDPOINT_URL=http://{{.Region}}.spaces.test`), in proxy form over plain HTTP;
- `<bucket>.<region>.cdn.digitaloceanspaces.com`: a CDN endpoint's name (what S3_ALIAS_HOST
  holds): anonymous reads of public-read objects only.

Every S3 request is checked as Spaces does (lab/standin/s3_signature.py): signed with a Spaces
key of the account, whose grants allow it (`fullaccess`: everything; `readwrite` on the bucket:
its objects and listings; `read`: reading them), or anonymous, which may only read a public-read
object (or list a public-read bucket). Objects are kept on disk (lab/standin/s3_objects.py).
"""

from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from xml.sax.saxutils import escape

from lab.standin.account import Account
from lab.standin.resources.base import now_iso
from lab.standin.resources.buckets import CDN_DOMAIN, PROXY_DOMAIN, PUBLIC_DOMAIN, REGIONS
from lab.standin.s3_common import NS, S3Error, access_denied, lower_headers, xml
from lab.standin.s3_objects import ObjectStore, listing, object_headers, versions_listing
from lab.standin.s3_signature import Signed, authenticate, check_crc32, query_pairs

BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
ACLS = ("private", "public-read")
CORS_FIELDS = ("AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader")
# Query keys that name an S3 subresource (the rest, like list-type or prefix, are parameters).
SUBRESOURCES = {"acl", "cors", "delete", "lifecycle", "location", "policy", "tagging", "uploadId",
                "uploads", "versioning", "versions", "website", "encryption", "logging",
                "partNumber", "object-lock", "retention", "legal-hold", "restore"}  # fmt: skip
BUCKET_OPERATIONS = (
    ("PUT", ""), ("HEAD", ""), ("DELETE", ""), ("GET", ""), ("GET", "location"),
    ("GET", "versioning"), ("GET", "lifecycle"), ("GET", "acl"), ("PUT", "acl"), ("GET", "cors"),
    ("PUT", "cors"), ("DELETE", "cors"), ("GET", "versions"), ("POST", "delete"),
)  # fmt: skip
OBJECT_OPERATIONS = (
    ("PUT", ""), ("GET", ""), ("HEAD", ""), ("DELETE", ""), ("GET", "acl"), ("PUT", "acl"),
)  # fmt: skip
CDN_OPERATIONS = (("GET", ""), ("HEAD", ""))
PERMISSION_ALLOWS = {"read": {"read"}, "readwrite": {"read", "write"}}


def is_spaces_host(host: str) -> bool:
    name = host.split(":")[0]
    return name.endswith(PUBLIC_DOMAIN) or name.endswith(PROXY_DOMAIN)


@dataclass
class Route:
    cdn: bool
    region: str
    bucket: str
    key: str
    sub: str
    template: str | None  # None: not implemented


@dataclass
class S3Request:
    method: str
    key: str
    headers: dict  # by lower-case name
    query: dict
    body: bytes
    signed: Signed | None


def route(method: str, host: str, path: str, query: str) -> Route:
    name = host.split(":")[0]
    cdn = name.endswith(CDN_DOMAIN)
    for domain in (CDN_DOMAIN, PUBLIC_DOMAIN, PROXY_DOMAIN):
        name = name.removesuffix(domain)
    bucket, _, region = name.rpartition(".")
    key = unquote(path.lstrip("/"))
    if not bucket and not cdn:  # path style: /bucket[/key]
        bucket, _, key = key.partition("/")
    sub = next((k for k, _ in query_pairs(query) if k in SUBRESOURCES), "")
    operations = OBJECT_OPERATIONS if key else BUCKET_OPERATIONS
    if cdn:
        operations = CDN_OPERATIONS if key else ()
    template = None
    if (method, sub) in operations:
        template = "S3 " + ("CDN " if cdn else "") + f"{method} /{{bucket}}"
        template += ("/{key}" if key else "") + (f"?{sub}" if sub else "")
    return Route(cdn, region, bucket, key, sub, template)


def needed(method: str, route: Route) -> str:
    """What a key's grants must allow: read, write, or full (bucket settings, create, delete)."""
    if method in ("GET", "HEAD"):
        return "read"
    if route.key or (method, route.sub) == ("POST", "delete"):
        return "write"
    return "full"


class Spaces:
    """The account's buckets (its state's `buckets`) and their objects (in `root`)."""

    def __init__(self, account: Account, root: Path):
        self.account = account
        self.store = ObjectStore(root)

    def endpoints(self) -> list[str]:
        kinds = ((PUBLIC_DOMAIN, "/", BUCKET_OPERATIONS), (PUBLIC_DOMAIN, "/k", OBJECT_OPERATIONS),
                 (CDN_DOMAIN, "/k", CDN_OPERATIONS))  # fmt: skip
        return [
            route(method, f"b.nyc3{domain}", path, sub).template
            for domain, path, operations in kinds
            for method, sub in operations
        ]

    def secret_of(self, access_key: str) -> str | None:
        key = self.account.state["spaces_keys"].get(access_key)
        return key["secret_key"] if key else None

    def handle(self, method: str, host: str, path: str, query: str, headers, body: bytes):
        """(status, body, headers); S3Error for the API's refusals."""
        found = route(method, host, path, query)
        if found.template is None:
            raise S3Error(501, "NotImplemented", f"{method} {path}?{query}: not in the stand-in")
        headers = lower_headers(headers)
        params = dict(query_pairs(query))
        if found.cdn:
            return self.through_cdn(method, found, headers)
        if found.region not in REGIONS:
            raise S3Error(400, "InvalidRegion", f"{found.region} has no Spaces")
        with self.account.lock:
            signed = authenticate(method, path, query, headers, body, self.secret_of)
            request = S3Request(method, found.key, headers, params, body, signed)
            buckets = self.account.state["buckets"]
            if method == "PUT" and not found.key and not found.sub:
                self.authorize(signed, None, "full")
                return self.create(buckets, found.bucket, found.region, headers)
            bucket = buckets.get(found.bucket)
            if bucket is None or bucket["region"] != found.region:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist.",
                              found.bucket)  # fmt: skip
            if signed is None:
                self.anonymous(bucket, request, found)
            else:
                self.authorize(signed, bucket["name"], needed(method, found))
            kind = "object" if found.key else "bucket"
            operation = f"{method.lower()}_{kind}" + (f"_{found.sub}" if found.sub else "")
            result = getattr(self, operation)(bucket, request)
            if kind == "bucket" and method not in ("GET", "HEAD"):
                self.account.save()
            return result

    # -- who may ---------------------------------------------------------------------------
    def authorize(self, signed: Signed | None, bucket: str | None, need: str) -> None:
        if signed is None:
            raise access_denied()
        grants = self.account.state["spaces_keys"][signed.access_key]["grants"]
        if any(g["permission"] == "fullaccess" for g in grants):
            return
        if need != "full" and any(
            g["bucket"] == bucket and need in PERMISSION_ALLOWS.get(g["permission"], ())
            for g in grants
        ):
            return
        raise access_denied()

    def anonymous(self, bucket: dict, request: S3Request, found: Route) -> None:
        """Anyone may read a public-read object, and list a public-read bucket."""
        if request.method not in ("GET", "HEAD") or found.sub:
            raise access_denied()
        if not found.key:
            if bucket["acl"] != "public-read":
                raise access_denied()
            return
        meta = self.store.meta(bucket["name"], found.key)
        if meta is None and bucket["acl"] != "public-read":
            raise access_denied()  # S3 does not say whether it exists
        if meta is not None and meta["acl"] != "public-read":
            raise access_denied()

    def through_cdn(self, method: str, found: Route, headers: dict):
        """A CDN endpoint: anonymous reads from its origin; the object's Cache-Control, or the
        endpoint's TTL when the object sets none."""
        name = f"{found.bucket}.{found.region}{CDN_DOMAIN}"
        with self.account.lock:
            cdn = next((c for c in self.account.state["cdns"].values() if c["endpoint"] == name),
                       None)  # fmt: skip
            if cdn is None:
                raise S3Error(404, "NoSuchBucket", f"no CDN endpoint {name}")
            origin, _, rest = cdn["origin"].partition(".")
            bucket = self.account.state["buckets"].get(origin)
            if bucket is None or not rest.startswith(bucket["region"] + "."):
                raise S3Error(404, "NoSuchBucket", "the CDN's origin does not exist", origin)
            request = S3Request(method, found.key, headers, {}, b"", None)
            self.anonymous(bucket, request, found)
            status, body, answer = getattr(self, f"{method.lower()}_object")(bucket, request)
        answer.setdefault("Cache-Control", f"max-age={cdn['ttl']}")
        return status, body, answer

    # -- buckets ---------------------------------------------------------------------------
    def create(self, buckets: dict, name: str, region: str, headers: dict):
        if not BUCKET_NAME.fullmatch(name) or "--" in name:
            raise S3Error(400, "InvalidBucketName", "The specified bucket is not valid.", name)
        if name in buckets:
            raise S3Error(409, "BucketAlreadyExists", "The requested bucket name is taken.", name)
        acl = headers.get("x-amz-acl") or "private"
        if acl not in ACLS:
            raise S3Error(400, "InvalidArgument", f"x-amz-acl {acl}: private or public-read")
        buckets[name] = {"name": name, "region": region, "acl": acl, "cors": None,
                         "created_at": now_iso()}  # fmt: skip
        self.account.save()
        self.account.publish_names()
        return 200, b"", {"Location": f"/{name}"}

    def head_bucket(self, bucket, request):
        return 200, b"", {"x-amz-bucket-region": bucket["region"]}

    def delete_bucket(self, bucket, request):
        if self.store.objects(bucket["name"]):
            raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.",
                          bucket["name"])  # fmt: skip
        del self.account.state["buckets"][bucket["name"]]
        self.store.remove_bucket(bucket["name"])
        self.account.publish_names()
        return 204, b"", {}

    def get_bucket(self, bucket, request):
        return 200, listing(bucket, self.store.objects(bucket["name"]), request.query), {}

    def get_bucket_versions(self, bucket, request):
        objects = self.store.objects(bucket["name"])
        return 200, versions_listing(bucket, objects, request.query), {}

    def post_bucket_delete(self, bucket, request):
        """DeleteObjects: Mastodon's batch removal, and the provider's force_destroy."""
        check_md5(request)
        try:
            root = ET.fromstring(request.body)
        except ET.ParseError as exc:
            raise S3Error(400, "MalformedXML", f"Delete: {exc}") from exc
        quiet = (root.findtext(f"{{{NS}}}Quiet") or root.findtext("Quiet") or "") == "true"
        deleted = ""
        for element in root:
            if element.tag.rpartition("}")[2] != "Object":
                continue
            key = next((c.text or "" for c in element if c.tag.rpartition("}")[2] == "Key"), "")
            self.store.delete(bucket["name"], key)
            deleted += "" if quiet else f"<Deleted><Key>{escape(key)}</Key></Deleted>"
        return 200, xml(f'<DeleteResult xmlns="{NS}">{deleted}</DeleteResult>'), {}

    def get_bucket_location(self, bucket, request):
        return (
            200,
            xml(f'<LocationConstraint xmlns="{NS}">{bucket["region"]}</LocationConstraint>'),
            {},
        )

    def get_bucket_versioning(self, bucket, request):
        return 200, xml(f'<VersioningConfiguration xmlns="{NS}"/>'), {}

    def get_bucket_lifecycle(self, bucket, request):
        raise S3Error(404, "NoSuchLifecycleConfiguration", "The lifecycle configuration does "
                      "not exist.", bucket["name"])  # fmt: skip

    def get_bucket_acl(self, bucket, request):
        return 200, acl_policy(bucket["acl"]), {}

    def put_bucket_acl(self, bucket, request):
        bucket["acl"] = canned_acl(request.headers)
        return 200, b"", {}

    def get_bucket_cors(self, bucket, request):
        if not bucket["cors"]:
            raise S3Error(404, "NoSuchCORSConfiguration", "The CORS configuration does not "
                          "exist", bucket["name"])  # fmt: skip
        rules = ""
        for rule in bucket["cors"]:
            inner = f"<ID>{rule['ID']}</ID>" if rule.get("ID") else ""
            for field in CORS_FIELDS:
                inner += "".join(f"<{field}>{v}</{field}>" for v in rule.get(field, []))
            if rule.get("MaxAgeSeconds") is not None:
                inner += f"<MaxAgeSeconds>{rule['MaxAgeSeconds']}</MaxAgeSeconds>"
            rules += f"<CORSRule>{inner}</CORSRule>"
        return 200, xml(f'<CORSConfiguration xmlns="{NS}">{rules}</CORSConfiguration>'), {}

    def put_bucket_cors(self, bucket, request):
        bucket["cors"] = cors_rules(request.body)
        return 200, b"", {}

    def delete_bucket_cors(self, bucket, request):
        bucket["cors"] = None
        return 204, b"", {}

    # -- objects ---------------------------------------------------------------------------
    def put_object(self, bucket, request):
        if "x-amz-copy-source" in request.headers:
            raise S3Error(501, "NotImplemented", "CopyObject is not in the stand-in")
        acl = request.headers.get("x-amz-acl") or "private"
        if acl not in ACLS:
            raise S3Error(400, "InvalidArgument", f"x-amz-acl {acl}: private or public-read")
        check_md5(request)
        data = request.signed.payload
        check_crc32(data, request.headers.get("x-amz-checksum-crc32"))
        meta = self.store.put(bucket["name"], request.key, data, acl, request.headers)
        return 200, b"", {"ETag": meta["etag"]}

    def existing(self, bucket, request) -> dict:
        meta = self.store.meta(bucket["name"], request.key)
        if meta is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", bucket["name"])
        return meta

    def get_object(self, bucket, request):
        meta = self.existing(bucket, request)
        return 200, self.store.data(bucket["name"], request.key), object_headers(meta)

    def head_object(self, bucket, request):
        meta = self.existing(bucket, request)
        return 200, b"", {**object_headers(meta), "Content-Length": str(meta["size"])}

    def delete_object(self, bucket, request):
        self.store.delete(bucket["name"], request.key)  # a missing key too, as S3
        return 204, b"", {}

    def get_object_acl(self, bucket, request):
        return 200, acl_policy(self.existing(bucket, request)["acl"]), {}

    def put_object_acl(self, bucket, request):
        self.existing(bucket, request)
        self.store.set_acl(bucket["name"], request.key, canned_acl(request.headers))
        return 200, b"", {}


def check_md5(request: S3Request) -> None:
    given = request.headers.get("content-md5")
    body = request.signed.payload if request.signed else request.body
    if given and base64.b64encode(hashlib.md5(body).digest()).decode() != given:  # noqa: S324
        raise S3Error(400, "BadDigest", "The Content-MD5 you specified did not match what we "
                      "received.")  # fmt: skip


def canned_acl(headers: dict) -> str:
    acl = headers.get("x-amz-acl")
    if acl not in ACLS:
        raise S3Error(400, "InvalidArgument", "give x-amz-acl: private or public-read")
    return acl


def acl_policy(acl: str) -> bytes:
    owner = "<Owner><ID>standin</ID><DisplayName>standin</DisplayName></Owner>"
    grantee = '<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type='
    grants = f'<Grant>{grantee}"CanonicalUser"><ID>standin</ID></Grantee>'
    grants += "<Permission>FULL_CONTROL</Permission></Grant>"
    if acl == "public-read":
        grants += (
            f'<Grant>{grantee}"Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers'
            "</URI></Grantee><Permission>READ</Permission></Grant>"
        )
    return xml(
        f'<AccessControlPolicy xmlns="{NS}">{owner}<AccessControlList>{grants}'
        "</AccessControlList></AccessControlPolicy>"
    )


def cors_rules(body: bytes) -> list[dict]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise S3Error(400, "MalformedXML", f"CORS configuration: {exc}") from exc
    rules = []
    for element in root:
        if not element.tag.endswith("CORSRule"):
            continue
        rule: dict = {}
        for child in element:
            tag = child.tag.rpartition("}")[2]
            if tag in CORS_FIELDS:
                rule.setdefault(tag, []).append(child.text or "")
            elif tag == "MaxAgeSeconds":
                rule[tag] = int(child.text or 0)
            elif tag == "ID":
                rule[tag] = child.text or ""
        bad = set(rule.get("AllowedMethod", [])) - {"GET", "PUT", "HEAD", "POST", "DELETE"}
        if bad or not rule.get("AllowedOrigin") or not rule.get("AllowedMethod"):
            raise S3Error(400, "MalformedXML", "each CORS rule needs origins and methods")
        rules.append(rule)
    return rules
