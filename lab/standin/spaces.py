"""Spaces as the provider reaches it: the S3 API at `https://<bucket>.<region>.digitaloceanspaces.com`
(virtual-host style). The stand-in answers it when the provider is given
`SPACES_ENDPOINT_URL=http://{{.Region}}.spaces.test` and `HTTP_PROXY` pointing at the stand-in:
requests then arrive in proxy form (`PUT http://media.nyc3.spaces.test/?cors`) and are routed on
their host. Bucket-level calls only (create, head, delete, ACL, CORS, location, versioning,
lifecycle, an empty listing); objects are not modelled, nor are signatures checked.
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from urllib.parse import parse_qsl

from lab.standin.account import Account
from lab.standin.resources.base import now_iso

DOMAIN = ".spaces.test"
REGIONS = ("ams3", "atl1", "blr1", "fra1", "lon1", "nyc3", "sfo2", "sfo3", "sgp1", "syd1", "tor1")
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
ACLS = ("private", "public-read")
CORS_FIELDS = ("AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader")


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, bucket: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.bucket = status, code, message, bucket

    def xml(self) -> bytes:
        bucket = f"<BucketName>{self.bucket}</BucketName>" if self.bucket else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{self.code}</Code><Message>{self.message}</Message>{bucket}"
            f"<RequestId>{uuid.uuid4()}</RequestId></Error>"
        ).encode()


def is_spaces_host(host: str) -> bool:
    return host.split(":")[0].endswith(DOMAIN)


def xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode()


class Spaces:
    """Buckets of the account, in its state (`buckets`)."""

    OPERATIONS = (
        ("PUT", ""),
        ("HEAD", ""),
        ("DELETE", ""),
        ("GET", ""),
        ("GET", "location"),
        ("GET", "versioning"),
        ("GET", "lifecycle"),
        ("GET", "acl"),
        ("PUT", "acl"),
        ("GET", "cors"),
        ("PUT", "cors"),
        ("DELETE", "cors"),
    )

    def __init__(self, account: Account):
        self.account = account
        account.state.setdefault("buckets", {})

    def endpoints(self) -> list[str]:
        return [f"S3 {m} /{{bucket}}" + (f"?{q}" if q else "") for m, q in self.OPERATIONS]

    @staticmethod
    def route(method: str, host: str, path: str, query: str) -> tuple[str, str, str, str | None]:
        """(region, bucket, subresource, route template or None)."""
        host = host.split(":")[0].removesuffix(DOMAIN)
        bucket, _, region = host.rpartition(".")
        key = path.strip("/")
        if not bucket:  # path style: /bucket[/key]
            bucket, _, key = key.partition("/")
        keys = [k for k, _ in parse_qsl(query, keep_blank_values=True)]
        sub = keys[0] if keys else ""
        if key or (method, sub) not in Spaces.OPERATIONS:
            return region, bucket, sub, None  # objects and the rest: not modelled
        return region, bucket, sub, f"S3 {method} /{{bucket}}" + (f"?{sub}" if sub else "")

    def handle(self, method: str, host: str, path: str, query: str, headers, body: bytes):
        """(status, body, headers); S3Error for the API's refusals."""
        region, name, sub, template = self.route(method, host, path, query)
        if template is None:
            raise S3Error(501, "NotImplemented", f"{method} {path}?{query}: not in the stand-in")
        if region not in REGIONS:
            raise S3Error(400, "InvalidRegion", f"{region} has no Spaces")
        with self.account.lock:
            buckets = self.account.state["buckets"]
            bucket = buckets.get(name)
            if method == "PUT" and sub == "":
                return self.create(buckets, name, region, headers)
            if bucket is None or bucket["region"] != region:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist.", name)
            result = getattr(self, f"{method.lower()}_{sub or 'bucket'}")(bucket, headers, body)
            if method != "GET" and method != "HEAD":
                self.account.save()
            return result

    def create(self, buckets: dict, name: str, region: str, headers):
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
        return 200, b"", {"Location": f"/{name}"}

    def head_bucket(self, bucket, headers, body):
        return 200, b"", {"x-amz-bucket-region": bucket["region"]}

    def delete_bucket(self, bucket, headers, body):
        del self.account.state["buckets"][bucket["name"]]
        return 204, b"", {}

    def get_bucket(self, bucket, headers, body):
        return (
            200,
            xml(
                f'<ListBucketResult xmlns="{NS}"><Name>{bucket["name"]}</Name><Prefix></Prefix>'
                "<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"
            ),
            {},
        )

    def get_location(self, bucket, headers, body):
        return (
            200,
            xml(f'<LocationConstraint xmlns="{NS}">{bucket["region"]}</LocationConstraint>'),
            {},
        )

    def get_versioning(self, bucket, headers, body):
        return 200, xml(f'<VersioningConfiguration xmlns="{NS}"/>'), {}

    def get_lifecycle(self, bucket, headers, body):
        raise S3Error(404, "NoSuchLifecycleConfiguration", "The lifecycle configuration does "
                      "not exist.", bucket["name"])  # fmt: skip

    def get_acl(self, bucket, headers, body):
        owner = "<Owner><ID>standin</ID><DisplayName>standin</DisplayName></Owner>"
        grants = (
            '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:type="CanonicalUser"><ID>standin</ID></Grantee>'
            "<Permission>FULL_CONTROL</Permission></Grant>"
        )
        if bucket["acl"] == "public-read":
            grants += (
                '<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                'xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>'
                "</Grantee><Permission>READ</Permission></Grant>"
            )
        return (
            200,
            xml(
                f'<AccessControlPolicy xmlns="{NS}">{owner}<AccessControlList>{grants}'
                "</AccessControlList></AccessControlPolicy>"
            ),
            {},
        )

    def put_acl(self, bucket, headers, body):
        acl = headers.get("x-amz-acl")
        if acl not in ACLS:
            raise S3Error(400, "InvalidArgument", "give x-amz-acl: private or public-read")
        bucket["acl"] = acl
        return 200, b"", {}

    def get_cors(self, bucket, headers, body):
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

    def put_cors(self, bucket, headers, body):
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
        bucket["cors"] = rules
        return 200, b"", {}

    def delete_cors(self, bucket, headers, body):
        bucket["cors"] = None
        return 204, b"", {}
