"""Writes Mastodon's .env.production from the stack outputs.

    pulumi stack output --json --show-secrets | mastodon-data render-env \\
        [--output .env.production] [--key mastodon_env]

The stack owns the keys it emits (for `mastodon_env`: every key of each group mastodon_data/env.py
can emit, for the groups it emits: the database always, Redis and S3 when the stack has them);
every other line of an existing file is kept as it was, in order. A managed key the stack no
longer emits (REPLICA_DB_* after the replica is removed) is removed, and so are DATABASE_URL and
REPLICA_DATABASE_URL, which would silently win over DB_* / REPLICA_DB_*, and REDIS_NAMESPACE
(Mastodon 4.4+ refuses to start with it) when the stack emits REDIS_URL. The file is replaced
atomically with mode 0600 (owner and group kept when allowed). Values are never printed.

Quoting: the file is read by Ruby's dotenv (Rails, Sidekiq) and by Node's dotenv (the streaming
server). Single quotes are literal in both; double quotes are not read the same way (Ruby
unescapes backslashes and expands $VAR and $(cmd), Node does neither), so they are used only for a
value with a single quote and none of \\ " $, and anything else is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

from mastodon_data.env import SUPERSEDED_KEYS, SUPERSEDED_REASONS, owned_keys

PROG = "mastodon-data render-env"
PIPE = f"pulumi stack output --json --show-secrets | {PROG}"
DEFAULT_KEY = "mastodon_env"
MASKED = "[secret]"  # what `pulumi stack output --json` prints for a secret without --show-secrets
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@+-]*")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# An assignment as both dotenv parsers find it: optional export, key, then "=" or ": ".
ASSIGNMENT = re.compile(r"[ \t]*(?:export[ \t]+)?([\w.]+)(?:[ \t]*=|:[ \t])")
# A quoted value that ends on this line (or, for multi-line values, a later one).
CLOSED_VALUE = {
    "'": re.compile(r"\s*'(?:\\'|[^'])*'[ \t]*(?:#[^\n]*)?"),
    '"': re.compile(r'\s*"(?:\\"|[^"])*"[ \t]*(?:#[^\n]*)?'),
}
MAX_VALUE_LINES = 200


class RenderError(Exception):
    """A problem the user fixes; nothing has been written."""


def stack_env(stdin_text: str, key: str) -> dict[str, str]:
    """The variables under `key` in `pulumi stack output --json --show-secrets` output."""
    try:
        outputs = json.loads(stdin_text)
    except ValueError as error:  # the message has a position, never the text
        raise RenderError(
            f"stdin is not JSON ({error}). Pipe the stack outputs in: {PIPE}"
        ) from None
    if outputs == MASKED:
        raise RenderError(forgot_show_secrets())
    if not isinstance(outputs, dict):
        raise RenderError("stdin is JSON but not an object of stack outputs")
    if key not in outputs:
        present = ", ".join(sorted(outputs)) or "none"
        hint = ""
        if "DB_HOST" in outputs:
            hint = (
                " This looks like a single output: pipe all of them "
                "(pulumi stack output --json --show-secrets)."
            )
        raise RenderError(f'no output "{key}" in the stack outputs (present: {present}).{hint}')
    env = outputs[key]
    if env == MASKED:
        raise RenderError(forgot_show_secrets())
    if not isinstance(env, dict):
        raise RenderError(f'output "{key}" is not an object of variables')
    masked = sorted(name for name, value in env.items() if value == MASKED)
    if masked:
        raise RenderError(f"{', '.join(masked)}: {forgot_show_secrets()}")
    values = {}
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name):
            raise RenderError(f"{name!r} is not a valid environment variable name")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise RenderError(f"{name}: the value is a {type(value).__name__}, not a string")
        if any(char in "\n\r" or not char.isprintable() for char in value):
            raise RenderError(f"{name}: the value contains a newline or control character")
        values[name] = value
    return values


def forgot_show_secrets() -> str:
    return f"the stack outputs are masked as [secret]. Add --show-secrets: {PIPE}"


def dotenv_value(name: str, value: str) -> str:
    """`value` written so that Ruby's and Node's dotenv both read it back exactly."""
    if PLAIN_VALUE.fullmatch(value):
        return value
    if "'" not in value:
        return f"'{value}'"
    if not any(char in value for char in '\\"$'):
        return f'"{value}"'
    raise RenderError(
        f'{name}: the value has a single quote and one of \\ " $, which Rails and the streaming '
        "server would read differently. Fix: choose a value without single quotes"
    )


def split_entries(text: str) -> list[tuple[str | None, str]]:
    """(key or None for comments/blank/other lines, the entry's exact text incl. newlines)."""
    lines = text.splitlines(keepends=True)
    entries: list[tuple[str | None, str]] = []
    index = 0
    while index < len(lines):
        match = ASSIGNMENT.match(lines[index])
        if not match:
            entries.append((None, lines[index]))
            index += 1
            continue
        last = index
        value = lines[index][match.end() :]
        quote = value.lstrip()[:1]
        if quote in CLOSED_VALUE and not CLOSED_VALUE[quote].fullmatch(value.rstrip("\r\n")):
            # A quoted value spanning lines: the entry runs to the line that closes it.
            for end in range(index + 1, min(len(lines), index + MAX_VALUE_LINES)):
                joined = "".join(lines[index : end + 1])[match.end() :]
                if CLOSED_VALUE[quote].fullmatch(joined.rstrip("\r\n")):
                    last = end
                    break
        entries.append((match.group(1), "".join(lines[index : last + 1])))
        index = last + 1
    return entries


def render(existing: str, env: dict[str, str], managed: set[str]) -> tuple[str, int, list[str]]:
    """(new file text, unmanaged assignments kept, superseded keys removed)."""
    lines = {name: f"{name}={dotenv_value(name, value)}\n" for name, value in env.items()}
    out: list[str] = []
    written: set[str] = set()
    kept = 0
    removed: list[str] = []
    for key, text in split_entries(existing):
        if key is None:
            out.append(text)
        elif key in SUPERSEDED_KEYS and key in managed:
            removed.append(key)
        elif key in managed:
            if key in lines and key not in written:  # in place; stale or repeated ones dropped
                out.append(lines[key])
                written.add(key)
        else:
            out.append(text)
            kept += 1
    if out and not out[-1].endswith("\n"):
        out[-1] += "\n"
    out += [line for name, line in lines.items() if name not in written]
    return "".join(out), kept, removed


def write_atomically(target: Path, text: str) -> None:
    """Temp file (0600) beside the target, fsync, rename over it; the old owner kept if allowed."""
    try:
        old = target.stat()
    except FileNotFoundError:
        old = None
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        if old is not None and (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, old.st_uid, old.st_gid)  # e.g. root rendering the mastodon user's
            except PermissionError:
                print(
                    f"{PROG}: warning: {target} is now owned by you, not uid {old.st_uid}",
                    file=sys.stderr,
                )
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    directory = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=".env.production", help="file to write")
    parser.add_argument("--key", default=DEFAULT_KEY, help="stack output holding the variables")
    args = parser.parse_args(argv)
    try:
        if sys.stdin.isatty():
            raise RenderError(f"nothing on stdin. Run: {PIPE}")
        env = stack_env(sys.stdin.read(), args.key)
        target = Path(os.path.realpath(args.output))  # through a symlink, not over it
        if not target.parent.is_dir():
            raise RenderError(f"directory {target.parent} does not exist")
        try:
            existing = target.read_text(encoding="utf-8") if target.exists() else ""
        except (OSError, UnicodeDecodeError) as error:
            raise RenderError(f"cannot read {target}: {error}") from None
        # mastodon_env owns its groups of keys whole; another output only the keys it has.
        managed = set(env)
        if args.key == DEFAULT_KEY:
            managed |= owned_keys(env)
        text, kept, removed = render(existing, env, managed)
        write_atomically(target, text)
    except RenderError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{prog}: error: cannot write {args.output}: {error}", file=sys.stderr)
        return 2
    summary = f"wrote {args.output}: {len(env)} keys from the stack, {kept} kept"
    if removed:
        reasons: dict[str, list[str]] = {}
        for key in removed:
            reasons.setdefault(SUPERSEDED_REASONS[key], []).append(key)
        summary += ", removed " + ", ".join(
            f"{', '.join(keys)} ({reason})" for reason, keys in reasons.items()
        )
    print(summary)
    return 0
