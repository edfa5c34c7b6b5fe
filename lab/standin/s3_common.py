"""What the stand-in's S3 modules share: S3's error answer, its XML and its dates."""

from __future__ import annotations

import uuid
from datetime import datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, bucket: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.bucket = status, code, message, bucket

    def xml(self) -> bytes:
        bucket = f"<BucketName>{escape(self.bucket)}</BucketName>" if self.bucket else ""
        return xml(
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>{bucket}"
            f"<RequestId>{uuid.uuid4()}</RequestId></Error>"
        )


def access_denied(message: str = "Access Denied") -> S3Error:
    return S3Error(403, "AccessDenied", message)


def xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode()


def lower_headers(headers) -> dict[str, str]:
    """A request's headers by lower-case name; repeated ones joined with "," as SigV4 does."""
    found: dict[str, list[str]] = {}
    for name, value in headers.items():
        found.setdefault(name.lower(), []).append(value)
    return {name: ",".join(values) for name, values in found.items()}


def http_date(iso: str) -> str:
    """RFC 7231's date (Last-Modified) of an ISO 8601 UTC time."""
    return format_datetime(datetime.fromisoformat(iso.replace("Z", "+00:00")), usegmt=True)
