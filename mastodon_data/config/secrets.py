"""Secrets: which ones a stack needs, that they are set as secrets, and what is wrong with a
decrypted one. A message names the key and never shows the value."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from mastodon_data.config.checks import Validation
from mastodon_data.config.project import PROJECT

# The secrets droplets and hosts mode need (replication over SSH); see required_secrets().
SECRET_KEYS = ("sshPrivateKey", "replicationPassword", "dbPassword")
REDIS_URL_KEY = "redisUrl"  # redisMode external: the existing Redis, as a secret
BACKUP_PASSPHRASE_KEY = "backupCipherPassphrase"  # encrypts the backup repository
BACKUP_SECRET_KEY = "backupSecretAccessKey"  # hosts mode: the repository key's secret
MONITOR_PASSWORD_KEY = "monitorPassword"  # monitoringSources: the exporters' role
SLACK_URL_KEY = "alertSlackUrl"  # alertSlackChannel: its incoming webhook
ALL_SECRET_KEYS = (
    *SECRET_KEYS,
    REDIS_URL_KEY,
    BACKUP_PASSPHRASE_KEY,
    BACKUP_SECRET_KEY,
    MONITOR_PASSWORD_KEY,
    SLACK_URL_KEY,
)
MIN_PASSPHRASE_LENGTH = 20
MIN_PASSWORD_LENGTH = 16
SHOWN = "[secret]"

NEW_PASSWORD = '"$(openssl rand -base64 32)"'
SECRET_FIXES = {
    "sshPrivateKey": f"cat ~/.ssh/id_ed25519 | pulumi config set --secret {PROJECT}:sshPrivateKey",
    "replicationPassword": (
        f"pulumi config set --secret {PROJECT}:replicationPassword {NEW_PASSWORD}"
    ),
    "dbPassword": f"pulumi config set --secret {PROJECT}:dbPassword {NEW_PASSWORD}",
    MONITOR_PASSWORD_KEY: (
        f"pulumi config set --secret {PROJECT}:{MONITOR_PASSWORD_KEY} {NEW_PASSWORD}"
    ),
    REDIS_URL_KEY: (
        f"pulumi config set --secret {PROJECT}:{REDIS_URL_KEY} "
        "'rediss://default:<password>@<host>:<port>'"
    ),
    BACKUP_PASSPHRASE_KEY: (
        f"pulumi config set --secret {PROJECT}:{BACKUP_PASSPHRASE_KEY} {NEW_PASSWORD} "
        "(and keep a copy outside the stack: without it no backup can be read)"
    ),
    BACKUP_SECRET_KEY: (
        f"pulumi config set --secret {PROJECT}:{BACKUP_SECRET_KEY} <secret access key>"
    ),
    SLACK_URL_KEY: (
        f"pulumi config set --secret {PROJECT}:{SLACK_URL_KEY} "
        "'https://hooks.slack.com/services/<...>' (the channel's incoming webhook)"
    ),
}
NO_PASSPHRASE_FIX = (
    "use a key without a passphrase for this stack: ssh-keygen -t ed25519 "
    "-N '' -f ~/.ssh/mastodon-data && cat ~/.ssh/mastodon-data | "
    f"pulumi config set --secret {PROJECT}:sshPrivateKey"
)


def required_secrets(
    mode: str | None,
    redis_mode: str | None,
    *,
    backups: bool = False,
    backup_key: bool = False,
    exporters: bool = False,
    alert_slack: bool = False,
) -> tuple[str, ...]:
    """Managed PostgreSQL makes its own password; droplets and hosts need the replication trio;
    backups the repository's passphrase (and, on existing hosts, the repository key's secret);
    the exporters (monitoringSources) their role's password; alertSlackChannel its webhook."""
    needed = () if mode == "managed" else SECRET_KEYS
    needed = (*needed, REDIS_URL_KEY) if redis_mode == "external" else needed
    needed = (*needed, BACKUP_PASSPHRASE_KEY) if backups else needed
    needed = (*needed, MONITOR_PASSWORD_KEY) if exporters else needed
    needed = (*needed, SLACK_URL_KEY) if alert_slack else needed
    return (*needed, BACKUP_SECRET_KEY) if backup_key else needed


def check_secrets_present(
    v: Validation,
    raw: Mapping[str, Any],
    secrets_present: Collection[str],
    needed: Collection[str] = SECRET_KEYS,
) -> None:
    for key in ALL_SECRET_KEYS:
        if key not in needed and key not in raw:
            continue
        if key in raw and key not in secrets_present:
            # Set without --secret: the value sits in clear text in Pulumi.<stack>.yaml.
            v.add(
                key,
                "[plain text]",
                "stored in clear text in Pulumi.<stack>.yaml; it must be a secret "
                "(and, once seen in clear, a new one)",
                SECRET_FIXES[key],
            )
        elif key not in secrets_present:
            v.add(key, "(not set)", "missing secret", SECRET_FIXES[key])


def secret_problems(name: str, value: str) -> list[str]:
    """Problems of a decrypted secret; the lines name the key and never contain the value."""
    v = Validation({})
    check = {
        "replicationPassword": _check_password,
        "dbPassword": _check_password,
        MONITOR_PASSWORD_KEY: _check_password,
        REDIS_URL_KEY: _check_redis_url,
        BACKUP_PASSPHRASE_KEY: _check_passphrase,
        BACKUP_SECRET_KEY: _check_key_secret,
        "sshPrivateKey": _check_private_key,
        SLACK_URL_KEY: _check_webhook_url,
    }.get(name)
    if check:
        check(v, name, value)
    return v.lines


def _has_space_or_control(value: str) -> bool:
    return any(char.isspace() or not char.isprintable() for char in value)


def _check_password(v: Validation, name: str, value: str) -> None:
    if len(value) < MIN_PASSWORD_LENGTH:
        v.add(name, SHOWN, f"shorter than {MIN_PASSWORD_LENGTH} characters", SECRET_FIXES[name])
    if _has_space_or_control(value):
        v.add(name, SHOWN, "contains whitespace or control characters", SECRET_FIXES[name])


def _check_passphrase(v: Validation, name: str, value: str) -> None:
    if len(value) < MIN_PASSPHRASE_LENGTH:
        what = f"shorter than {MIN_PASSPHRASE_LENGTH} characters"
        v.add(name, SHOWN, what, SECRET_FIXES[name])
    if _has_space_or_control(value):
        v.add(name, SHOWN, "contains whitespace or control characters", SECRET_FIXES[name])


def _check_key_secret(v: Validation, name: str, value: str) -> None:
    if not value or _has_space_or_control(value):
        v.add(name, SHOWN, "empty, or contains whitespace or control characters",
              SECRET_FIXES[name])  # fmt: skip


def _check_webhook_url(v: Validation, name: str, value: str) -> None:
    try:
        url = urlsplit(value)
        https = url.scheme == "https" and bool(url.hostname) and not _has_space_or_control(value)
    except ValueError:
        https = False
    if not https:
        v.add(name, SHOWN, "not an https:// URL", SECRET_FIXES[name])


def _check_redis_url(v: Validation, name: str, value: str) -> None:
    """rediss:// only: Mastodon sends the Redis password and every job over this connection."""
    fix = SECRET_FIXES[name]
    if _has_space_or_control(value):
        v.add(name, SHOWN, "contains whitespace or control characters", fix)
        return
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        v.add(name, SHOWN, "not a URL", fix)
        return
    if url.scheme == "redis":
        what = (
            "redis:// sends the password and all data in clear; this stack emits TLS only "
            "(rediss://, with REDIS_DRIVER=ruby)"
        )
        v.add(name, SHOWN, what, fix)
    elif url.scheme != "rediss" or not url.hostname:
        v.add(name, SHOWN, "not a rediss://<host>:<port> URL", fix)
    elif port is None:
        v.add(name, SHOWN, "has no port (DigitalOcean: 25061)", fix)


def _check_private_key(v: Validation, name: str, value: str) -> None:
    if "-----BEGIN" not in value or "PRIVATE KEY-----" not in value:
        hint = (
            " (this looks like a public key: use the file without .pub)"
            if value.lstrip().startswith(("ssh-", "ecdsa-", "sk-"))
            else ""
        )
        what = f"not a private key (no -----BEGIN ... PRIVATE KEY----- block){hint}"
        v.add(name, SHOWN, what, SECRET_FIXES[name])
    elif "ENCRYPTED" in value or _openssh_cipher(value) not in (None, "none"):
        # The remote commands get no passphrase, so an encrypted key cannot log in.
        v.add(name, SHOWN, "the key is protected by a passphrase", NO_PASSPHRASE_FIX)


def _openssh_cipher(key_text: str) -> str | None:
    """The cipher of an "OPENSSH PRIVATE KEY" block ("none" when it has no passphrase)."""
    match = re.search(
        r"-----BEGIN OPENSSH PRIVATE KEY-----(.*?)-----END OPENSSH PRIVATE KEY-----",
        key_text,
        re.S,
    )
    if not match:
        return None
    try:
        blob = base64.b64decode("".join(match.group(1).split()))
    except (binascii.Error, ValueError):
        return None
    magic = b"openssh-key-v1\0"
    if not blob.startswith(magic):
        return None
    length = int.from_bytes(blob[len(magic) : len(magic) + 4], "big")
    return blob[len(magic) + 4 : len(magic) + 4 + length].decode("ascii", "replace")
