"""`mastodon-data render-env`, run as the pipeline runs it: stack outputs JSON on stdin, a real
file; through the command installed into the venv."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import COMMAND

PASSWORD = "Pw0rd-for-tests-0123456789"
ENV = {
    "DB_HOST": "10.118.0.2",
    "DB_PORT": "5432",
    "DB_NAME": "mastodon_production",
    "DB_USER": "mastodon",
    "DB_PASS": PASSWORD,
    "DB_SSLMODE": "require",
}
REPLICA = {
    "REPLICA_DB_HOST": "10.118.0.3",
    "REPLICA_DB_PORT": "5432",
    "REPLICA_DB_NAME": "mastodon_production",
    "REPLICA_DB_USER": "mastodon",
    "REPLICA_DB_PASS": PASSWORD,
}


def run(
    directory: Path, outputs: object, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    text = stdin if stdin is not None else json.dumps(outputs)
    return subprocess.run(
        [COMMAND, "render-env", "--output", str(directory / ".env.production"), *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def no_secret_printed(result: subprocess.CompletedProcess[str]) -> None:
    assert PASSWORD not in result.stdout + result.stderr


def test_fresh_file(tmp_path: Path) -> None:
    result = run(tmp_path, {"mastodon_env": {**ENV, **REPLICA}, "primary": {"name": "p"}})
    assert result.returncode == 0, result.stderr
    target = tmp_path / ".env.production"
    assert result.stdout == f"wrote {target}: 11 keys from the stack, 0 kept\n"
    assert mode(target) == 0o600
    assert target.read_text() == (
        "DB_HOST=10.118.0.2\n"
        "DB_PORT=5432\n"
        "DB_NAME=mastodon_production\n"
        "DB_USER=mastodon\n"
        f"DB_PASS={PASSWORD}\n"
        "DB_SSLMODE=require\n"
        "REPLICA_DB_HOST=10.118.0.3\n"
        "REPLICA_DB_PORT=5432\n"
        "REPLICA_DB_NAME=mastodon_production\n"
        "REPLICA_DB_USER=mastodon\n"
        f"REPLICA_DB_PASS={PASSWORD}\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == [".env.production"]  # no temp file left
    no_secret_printed(result)


EXISTING = """\
# Mastodon, edited by hand
LOCAL_DOMAIN=example.social

DB_HOST=192.168.1.10
export DB_PASS="old
password"
SECRET_KEY_BASE=abc123 # keep me
DATABASE_URL=postgres://old@192.168.1.10/mastodon
VAPID_PRIVATE_KEY='multi
line value'
REPLICA_DB_HOST=192.168.1.20
REPLICA_DB_NAME=mastodon_production
DB_HOST=duplicate
S3_ENABLED=false"""


def test_existing_file_keeps_unmanaged_lines(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    target.write_text(EXISTING)
    target.chmod(0o644)
    result = run(tmp_path, {"mastodon_env": ENV})
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"wrote {target}: 6 keys from the stack, 4 kept, "
        "removed DATABASE_URL (would override DB_* / REPLICA_DB_*)\n"
    )
    assert target.read_text() == (
        "# Mastodon, edited by hand\n"
        "LOCAL_DOMAIN=example.social\n"
        "\n"
        "DB_HOST=10.118.0.2\n"  # replaced where it was
        f"DB_PASS={PASSWORD}\n"  # the old multi-line value is gone with it
        "SECRET_KEY_BASE=abc123 # keep me\n"
        "VAPID_PRIVATE_KEY='multi\n"
        "line value'\n"
        "S3_ENABLED=false\n"  # the replica is gone: REPLICA_DB_* removed
        "DB_PORT=5432\n"  # new keys appended in the stack's order
        "DB_NAME=mastodon_production\n"
        "DB_USER=mastodon\n"
        "DB_SSLMODE=require\n"
    )
    assert mode(target) == 0o600
    no_secret_printed(result)


def test_second_run_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    target.write_text(EXISTING)
    assert run(tmp_path, {"mastodon_env": ENV}).returncode == 0
    first = target.read_text()
    result = run(tmp_path, {"mastodon_env": ENV})
    assert result.returncode == 0
    assert target.read_text() == first
    assert "removed" not in result.stdout


def test_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "shared" / "env"
    real.parent.mkdir()
    real.write_text("LOCAL_DOMAIN=example.social\n")
    (tmp_path / ".env.production").symlink_to(real)
    assert run(tmp_path, {"mastodon_env": ENV}).returncode == 0
    assert (tmp_path / ".env.production").is_symlink()
    assert real.read_text().startswith("LOCAL_DOMAIN=example.social\nDB_HOST=10.118.0.2\n")


def refused(tmp_path: Path, outputs: object, stdin: str | None = None) -> str:
    """Runs against an existing file; asserts exit 2 and the file untouched; returns stderr."""
    target = tmp_path / ".env.production"
    target.write_text(EXISTING)
    target.chmod(0o644)
    before = target.stat()
    result = run(tmp_path, outputs, stdin=stdin)
    assert result.returncode == 2
    assert result.stdout == ""
    assert target.read_text() == EXISTING
    assert (mode(target), target.stat().st_mtime_ns) == (0o644, before.st_mtime_ns)
    assert [p.name for p in tmp_path.iterdir()] == [".env.production"]
    no_secret_printed(result)
    return result.stderr


def test_masked_value_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mastodon_env": {**ENV, "DB_PASS": "[secret]"}})
    assert "DB_PASS" in error and "--show-secrets" in error


def test_masked_output_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mastodon_env": "[secret]", "primary": {}})
    assert "[secret]" in error and "--show-secrets" in error


def test_missing_key_lists_the_outputs(tmp_path: Path) -> None:
    error = refused(tmp_path, {"primary": {}, "replicas": []})
    assert 'no output "mastodon_env"' in error and "present: primary, replicas" in error


def test_single_output_piped_gets_a_hint(tmp_path: Path) -> None:
    error = refused(tmp_path, ENV)
    assert "pipe all of them" in error


def test_not_json_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, None, stdin="Current stack is dev:\n")
    assert "stdin is not JSON" in error


def test_newline_in_value_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mastodon_env": {**ENV, "DB_HOST": "a\nDB_PASS=evil"}})
    assert "DB_HOST" in error and "newline" in error


def test_unreadable_mix_of_quotes_refused(tmp_path: Path) -> None:
    error = refused(tmp_path, {"mastodon_env": {**ENV, "DB_PASS": PASSWORD + "'$x"}})
    assert "DB_PASS" in error and "single quote" in error


def test_other_output_key(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    target.write_text("DB_PASS=kept\n")
    result = run(tmp_path, {"migration_env": {"DB_HOST": "10.0.0.9"}}, "--key", "migration_env")
    assert result.returncode == 0, result.stderr
    # Only the keys that output has are owned: DB_PASS stays.
    assert target.read_text() == "DB_PASS=kept\nDB_HOST=10.0.0.9\n"


TRICKY = {
    "SPACES": "two words  and  more",
    "DOUBLE": 'say "hi"',
    "DOLLAR": "pa$$word$(id)${HOME}",
    "HASH": "before#after",
    "EQUALS": "a=b==",
    "BACKSLASH": "back\\slash\\",
    "SINGLE": "it's",
    "EMPTY": "",
    "URLISH": "postgres://u@h:5432/db+x-y_z.",
    "UNICODE": "pässwörd",
}
TRICKY_TEXT = (
    "SPACES='two words  and  more'\n"
    "DOUBLE='say \"hi\"'\n"
    "DOLLAR='pa$$word$(id)${HOME}'\n"
    "HASH='before#after'\n"
    "EQUALS='a=b=='\n"
    "BACKSLASH='back\\slash\\'\n"
    'SINGLE="it\'s"\n'
    "EMPTY=\n"
    "URLISH=postgres://u@h:5432/db+x-y_z.\n"
    "UNICODE='pässwörd'\n"
)


def read_back(text: str, reader: str) -> dict[str, str]:
    """How the two dotenv readers see single-line entries: "ruby" (Rails: unescapes backslashes
    and expands $ outside single quotes) or "node" (streaming: only \\n in double quotes)."""
    values = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(?:export\s+)?([\w.]+)\s*=\s*(.*)", line)
        if not match or line.lstrip().startswith("#"):
            continue
        key, raw = match.groups()
        if raw[:1] == "'" and raw.endswith("'") and len(raw) > 1:
            values[key] = raw[1:-1]  # literal in both readers
            continue
        if raw[:1] == '"' and raw.endswith('"') and len(raw) > 1:
            value = raw[1:-1]
        else:
            value = raw.split("#")[0].strip()
        transformed = "\\" in value or (reader == "ruby" and "$" in value)
        assert not transformed, f"{key} would not read back as written in {reader} dotenv"
        values[key] = value
    return values


def test_quoting_reads_back_exactly(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    result = run(tmp_path, {"mastodon_env": TRICKY}, "--key", "mastodon_env")
    assert result.returncode == 0, result.stderr
    text = target.read_text(encoding="utf-8")
    assert text == TRICKY_TEXT
    assert read_back(text, "ruby") == TRICKY
    assert read_back(text, "node") == TRICKY


@pytest.mark.parametrize("value", list(TRICKY.values()))
def test_each_value_round_trips_through_an_existing_file(tmp_path: Path, value: str) -> None:
    target = tmp_path / ".env.production"
    target.write_text("# top\nDB_PASS=old\nOTHER=1\n")
    assert run(tmp_path, {"mastodon_env": {**ENV, "DB_PASS": value}}).returncode == 0
    for reader in ("ruby", "node"):
        assert read_back(target.read_text(encoding="utf-8"), reader)["DB_PASS"] == value


def test_fresh_file_mode_ignores_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        assert run(tmp_path, {"mastodon_env": ENV}).returncode == 0
    finally:
        os.umask(old)
    assert mode(tmp_path / ".env.production") == 0o600


def test_redis_and_s3_groups_owned_only_when_the_stack_emits_them(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    target.write_text(
        "REDIS_URL=redis://localhost:6379\nREDIS_NAMESPACE=mastodon\nS3_ENABLED=true\n"
        "S3_BUCKET=hand-made\nS3_PERMISSION=private\n"
    )
    # No Redis or Spaces in the stack: the operator's lines stay as they are.
    result = run(tmp_path, {"mastodon_env": ENV})
    assert result.returncode == 0, result.stderr
    assert target.read_text().startswith(
        "REDIS_URL=redis://localhost:6379\nREDIS_NAMESPACE=mastodon\nS3_ENABLED=true\n"
        "S3_BUCKET=hand-made\nS3_PERMISSION=private\n"
    )
    # With Redis from the stack: REDIS_* are the stack's, REDIS_NAMESPACE goes; S3 stays.
    redis = {"REDIS_URL": "rediss://default:p@h:25061", "REDIS_DRIVER": "ruby"}
    result = run(tmp_path, {"mastodon_env": {**ENV, **redis}})
    assert result.returncode == 0, result.stderr
    assert "removed REDIS_NAMESPACE (Mastodon 4.4+ refuses to start with it)" in result.stdout
    text = target.read_text()
    assert text.startswith("REDIS_URL=rediss://default:p@h:25061\nS3_ENABLED=true\n")
    assert "REDIS_DRIVER=ruby\n" in text and "REDIS_NAMESPACE" not in text
    assert "S3_PERMISSION=private\n" in text


def test_a_cache_redis_url_the_stack_no_longer_emits_is_removed(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    redis = {"REDIS_URL": "rediss://default:p@h:25061", "REDIS_DRIVER": "ruby"}
    cache = {"CACHE_REDIS_URL": "rediss://default:c@c:25061"}
    assert run(tmp_path, {"mastodon_env": {**ENV, **redis, **cache}}).returncode == 0
    assert "CACHE_REDIS_URL=rediss://default:c@c:25061\n" in target.read_text()
    # redisCache turned off: Mastodon's cache goes back to REDIS_URL, not to a gone cluster.
    assert run(tmp_path, {"mastodon_env": {**ENV, **redis}}).returncode == 0
    assert "CACHE_REDIS_URL" not in target.read_text()


def test_stale_service_keys_within_an_owned_group_are_removed(tmp_path: Path) -> None:
    target = tmp_path / ".env.production"
    target.write_text("S3_ENABLED=true\nS3_ALIAS_HOST=old.example\nS3_CLOUDFRONT_HOST=x\n")
    s3 = {"S3_ENABLED": "true", "S3_BUCKET": "media"}
    assert run(tmp_path, {"mastodon_env": {**ENV, **s3}}).returncode == 0
    text = target.read_text()
    assert "S3_ALIAS_HOST" not in text  # the stack no longer emits it
    assert "S3_CLOUDFRONT_HOST=x\n" in text  # not a key this stack emits: the operator's


def test_migration_env_rendered_into_its_own_file(tmp_path: Path) -> None:
    migration = {
        "DB_HOST": "private-db.example",
        "DB_PORT": "25060",
        "DB_NAME": "mastodon_production",
        "PREPARED_STATEMENTS": "true",
    }
    result = subprocess.run(
        [COMMAND, "render-env", "--key", "migration_env", "--output", ".env.migration"],
        input=json.dumps({"mastodon_env": ENV, "migration_env": migration}),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / ".env.migration").read_text() == (
        "DB_HOST=private-db.example\nDB_PORT=25060\nDB_NAME=mastodon_production\n"
        "PREPARED_STATEMENTS=true\n"
    )
    assert mode(tmp_path / ".env.migration") == 0o600
