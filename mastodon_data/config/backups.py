"""Backups with pgBackRest (droplets and hosts mode): the repository in object storage (a Spaces
bucket the stack makes, or an existing S3-compatible bucket), retention, schedules."""

from __future__ import annotations

import re
from collections.abc import Collection

from mastodon_data.config.checks import Field, Validation, is_dns_name, set_command
from mastodon_data.config.media import BUCKET_NAME, SPACES_REGIONS
from mastodon_data.config.project import PROJECT
from mastodon_data.config.records import BackupSettings
from mastodon_data.config.secrets import BACKUP_SECRET_KEY

RETENTION = range(1, 101)
# OnCalendar expressions: systemd checks them; here only what could break the unit file.
CALENDAR = re.compile(r"[A-Za-z0-9 ,.:*/~+-]{1,100}")
DURATION = re.compile(r"(\d+)(s|min)")
CA_PEM = re.compile(r"\s*-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----\s*")


def endpoint_problem(text: str) -> str | None:
    host, _, port = text.partition(":")
    if "/" in text or not is_dns_name(host) and not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}", host):
        return "not host[:port] (e.g. nyc3.digitaloceanspaces.com)"
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        return "the port is not 1 to 65535"
    return None


def timeout_problem(text: str) -> str | None:
    match = DURATION.fullmatch(text)
    if not match:
        return "not a duration like 60s or 5min"
    seconds = int(match.group(1)) * (60 if match.group(2) == "min" else 1)
    return None if 10 <= seconds <= 3600 else "not from 10s to 60min"


FIELDS = (
    Field("backups", example="true"),
    Field(
        "backupBucket",
        example="mastodon-backups-example",
        pattern=BUCKET_NAME,
        what="not a DNS-compatible bucket name (3 to 63 of a-z, 0-9 and -)",
    ),  # fmt: skip
    Field("backupRegion", example="nyc3", choices=SPACES_REGIONS, what="not a Spaces region"),
    Field("backupEndpoint", example="nyc3.digitaloceanspaces.com", check=endpoint_problem),
    Field(
        "backupAccessKeyId",
        example="<access key id>",
        pattern=re.compile(r"[!-~]{1,128}"),
        what="not a key id (printable, no spaces)",
    ),  # fmt: skip
    Field(
        "backupCaCert",
        example='"$(cat ca.crt)"',
        pattern=CA_PEM,
        what="not a PEM certificate (-----BEGIN CERTIFICATE----- ...)",
    ),  # fmt: skip
    Field("backupRetentionFull", example=2, allowed=RETENTION),
    Field("backupRetentionDiff", example=6, allowed=RETENTION),
    Field(
        "backupFullSchedule",
        example="'Sun *-*-* 02:30:00'",
        pattern=CALENDAR,
        what="not a systemd OnCalendar expression",
    ),  # fmt: skip
    Field(
        "backupDiffSchedule",
        example="'Mon..Sat *-*-* 02:30:00'",
        pattern=CALENDAR,
        what="not a systemd OnCalendar expression",
    ),  # fmt: skip
    Field("backupArchiveTimeout", example="60s", check=timeout_problem),
)


def parse_backups(
    v: Validation, mode: str | None, region: str | None, secrets_present: Collection[str]
) -> BackupSettings | None:
    values = v.read(FIELDS)
    if not values["backups"]:
        return None
    if mode == "managed":
        v.bad("backups", True, "managed PostgreSQL is backed up by DigitalOcean itself",
              f"pulumi config rm {PROJECT}:backups")  # fmt: skip
        return None
    if not values["backupBucket"]:
        v.bad("backupBucket", "", "backups need a bucket for the repository",
              set_command("backupBucket", "<stack>-pg-backups"))  # fmt: skip
    check_key(v, mode, values["backupAccessKeyId"], secrets_present)
    if not v.ok(*values):
        return None
    bucket_region = values["backupRegion"] or region or "nyc3"
    return BackupSettings(
        backup_bucket=values["backupBucket"],
        backup_region=bucket_region,
        backup_endpoint=values["backupEndpoint"] or f"{bucket_region}.digitaloceanspaces.com",
        make_bucket=mode == "droplets",
        backup_access_key_id=values["backupAccessKeyId"],
        backup_ca_cert=values["backupCaCert"],
        backup_retention_full=values["backupRetentionFull"],
        backup_retention_diff=values["backupRetentionDiff"],
        backup_full_schedule=values["backupFullSchedule"],
        backup_diff_schedule=values["backupDiffSchedule"],
        backup_archive_timeout=values["backupArchiveTimeout"],
    )


def wanted(v: Validation, mode: str | None) -> tuple[bool, bool]:
    """(backups asked for, the repository's key secret needed): decides the required secrets
    even while other backup settings are wrong, so every problem is reported at once."""
    on = str(v.value("backups")).lower() == "true" and mode in ("droplets", "hosts")
    return on, on and mode == "hosts"


def check_key(v: Validation, mode: str | None, key_id: str, secrets: Collection[str]) -> None:
    """Droplets mode makes the bucket's own key; hosts mode is given one."""
    if mode == "droplets":
        for key in ("backupAccessKeyId", BACKUP_SECRET_KEY):
            if key in v.raw or key in secrets:
                v.add(key, "[set]", "droplets mode makes the backup bucket's own key",
                      f"pulumi config rm {PROJECT}:{key}")  # fmt: skip
    elif mode == "hosts" and not key_id:
        v.bad("backupAccessKeyId", "", "hosts mode needs the repository's access key",
              set_command("backupAccessKeyId", "<access key id>"))  # fmt: skip
