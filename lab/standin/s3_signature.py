"""AWS Signature Version 4 as S3 (and so Spaces) checks it: the `Authorization` header or a
presigned URL's query, the payload's hash, and `aws-chunked` bodies (streaming uploads, signed
chunk by chunk or unsigned with a checksum trailer). Version 2 signatures are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

from lab.standin.s3_common import S3Error, access_denied

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60  # seconds between the request's time and the server's, as S3 allows
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
AUTHORIZATION = re.compile(
    ALGORITHM + r"\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})"
)


@dataclass
class Credential:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @classmethod
    def parse(cls, text: str) -> Credential:
        parts = text.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request" or parts[3] != "s3":
            raise S3Error(400, "AuthorizationHeaderMalformed", f"bad credential scope {text!r}")
        return cls(*parts[:4])


@dataclass
class Signed:
    """A request whose signature checked out: whose key, its secret, and its body (decoded)."""

    access_key: str
    payload: bytes


def signing_key(secret: str, credential: Credential) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (credential.date, credential.region, credential.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The query's pairs, decoded as S3 does ("+" is a plus sign, not a space)."""
    pairs = []
    for part in query.split("&") if query else []:
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def canonical_request(method, path, pairs, headers, signed_headers, payload_hash) -> str:
    uri = quote(unquote(path), safe="/~")
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    query = "&".join(f"{k}={v}" for k, v in encoded)
    names = signed_headers.split(";")
    lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in names)
    return "\n".join([method, uri, query, lines, signed_headers, payload_hash])


def string_to_sign(amz_date: str, credential: Credential, request: str) -> str:
    digest = hashlib.sha256(request.encode()).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{credential.scope}\n{digest}"


def request_time(amz_date: str) -> datetime:
    try:
        return datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise access_denied(f"bad X-Amz-Date {amz_date!r}") from None


def authenticate(method, path, query, headers, body, secret_of, now=None) -> Signed | None:
    """`headers` by lower-case name; `secret_of(access_key)` -> secret or None. None for an
    anonymous request; S3Error for one S3 refuses."""
    now = now or datetime.now(UTC)
    pairs = query_pairs(query)
    fields = dict(pairs)
    if "X-Amz-Signature" in fields:
        return presigned(method, path, pairs, headers, body, secret_of, now)
    authorization = headers.get("authorization")
    if not authorization:
        return None
    found = AUTHORIZATION.fullmatch(authorization.strip())
    if authorization.startswith("AWS "):
        raise S3Error(400, "InvalidRequest", "only AWS Signature Version 4 is accepted")
    if not found:
        raise S3Error(400, "AuthorizationHeaderMalformed", "the Authorization header is malformed")
    credential = Credential.parse(found.group(1))
    amz_date = headers.get("x-amz-date", "")
    payload_hash = headers.get("x-amz-content-sha256")
    if not payload_hash:
        raise S3Error(400, "InvalidRequest", "Missing required header for this request: "
                      "x-amz-content-sha256")  # fmt: skip
    check_time(request_time(amz_date), now, credential)
    secret = known_secret(secret_of, credential)
    request = canonical_request(method, path, pairs, headers, found.group(2), payload_hash)
    signature = check_signature(secret, credential, amz_date, request, found.group(3))
    payload = checked_payload(
        body, headers, payload_hash, (secret, credential, amz_date, signature)
    )
    return Signed(credential.access_key, payload)


def presigned(method, path, pairs, headers, body, secret_of, now) -> Signed:
    fields = dict(pairs)
    if fields.get("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error(400, "AuthorizationQueryParametersError", "X-Amz-Algorithm must be "
                      + ALGORITHM)  # fmt: skip
    credential = Credential.parse(fields.get("X-Amz-Credential", ""))
    amz_date = fields.get("X-Amz-Date", "")
    signed_at = request_time(amz_date)
    if (now - signed_at).total_seconds() > int(fields.get("X-Amz-Expires") or 0):
        raise access_denied("Request has expired")
    secret = known_secret(secret_of, credential)
    unsigned = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    signed_headers = fields.get("X-Amz-SignedHeaders", "host")
    request = canonical_request(method, path, unsigned, headers, signed_headers, UNSIGNED)
    check_signature(secret, credential, amz_date, request, fields["X-Amz-Signature"])
    return Signed(credential.access_key, body)


def check_time(signed_at: datetime, now: datetime, credential: Credential) -> None:
    if abs((now - signed_at).total_seconds()) > MAX_SKEW:
        raise S3Error(403, "RequestTimeTooSkewed", "The difference between the request time "
                      "and the server's time is too large.")  # fmt: skip
    if signed_at.strftime("%Y%m%d") != credential.date:
        raise S3Error(403, "SignatureDoesNotMatch", "the credential's date is not the request's")


def known_secret(secret_of, credential: Credential) -> str:
    secret = secret_of(credential.access_key)
    if secret is None:
        raise S3Error(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not "
                      "exist in our records.")  # fmt: skip
    return secret


def check_signature(secret, credential, amz_date, request: str, given: str) -> str:
    expected = sign(signing_key(secret, credential), string_to_sign(amz_date, credential, request))
    if not hmac.compare_digest(expected, given):
        raise S3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                      "not match the signature you provided.")  # fmt: skip
    return expected


def checked_payload(body: bytes, headers: dict, payload_hash: str, seed) -> bytes:
    """The body as stored: its hash checked, or decoded from aws-chunked."""
    if payload_hash == UNSIGNED:
        return body
    if payload_hash == STREAMING_SIGNED:
        return dechunk(body, headers, seed)
    if payload_hash == STREAMING_TRAILER:
        return dechunk(body, headers, None)
    if hashlib.sha256(body).hexdigest() != payload_hash:
        raise S3Error(400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' "
                      "header does not match what was computed.")  # fmt: skip
    return body


def dechunk(body: bytes, headers: dict, seed) -> bytes:
    """aws-chunked: `<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n`..., a 0-size chunk,
    then trailers. Each chunk's signature chains from the request's (`seed`: secret, scope,
    date, seed signature) when signed."""
    data, trailers, position = [], {}, 0
    previous = seed[3] if seed else ""
    while True:
        line_end = body.find(b"\r\n", position)
        if line_end < 0:
            raise S3Error(400, "IncompleteBody", "the aws-chunked body ends early")
        size_text, _, extension = body[position:line_end].decode().partition(";")
        size = int(size_text, 16)
        chunk = body[line_end + 2 : line_end + 2 + size]
        if seed:
            previous = check_chunk(seed, previous, extension, chunk)
        position = line_end + 2 + size
        if size == 0:
            break
        data.append(chunk)
        position += 2  # the chunk's CRLF
    for line in body[position:].decode().split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            trailers[name.strip().lower()] = value.strip()
    payload = b"".join(data)
    decoded = headers.get("x-amz-decoded-content-length")
    if decoded is not None and int(decoded) != len(payload):
        raise S3Error(400, "IncompleteBody", "x-amz-decoded-content-length is not the body's")
    check_crc32(payload, trailers.get("x-amz-checksum-crc32"))
    return payload


def check_chunk(seed, previous: str, extension: str, chunk: bytes) -> str:
    secret, credential, amz_date, _ = seed
    given = extension.partition("chunk-signature=")[2]
    text = "\n".join([f"{ALGORITHM}-PAYLOAD", amz_date, credential.scope, previous,
                      EMPTY_SHA256, hashlib.sha256(chunk).hexdigest()])  # fmt: skip
    expected = sign(signing_key(secret, credential), text)
    if not hmac.compare_digest(expected, given):
        raise S3Error(403, "SignatureDoesNotMatch", "a chunk's signature does not match")
    return expected


def check_crc32(payload: bytes, given: str | None) -> None:
    """x-amz-checksum-crc32 (base64 of the big-endian CRC32), sent by default by newer SDKs."""
    if given is None:
        return
    actual = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    if actual != given:
        raise S3Error(400, "BadDigest", "The CRC32 you specified did not match the calculated "
                      "checksum.")  # fmt: skip
